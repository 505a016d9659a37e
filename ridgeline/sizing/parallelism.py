"""Parallelism: which TP (and, beyond a node, PP) degree one replica uses.

For TP in {1, 2, 4, 8} (up to the GPUs of a node), and TP x PP when a node is
not enough, each configuration gets: per-GPU memory at the target concurrency
(sizing.memory.replica_memory), whether it fits, ITL and TTFT at the target
(sizing.serving), the all-reduce share of the decode step, tokens/s per GPU,
the capacity- and SLO-limited concurrencies.

Choice (field guide §5.1, §5.5, §9.1 step 6): the lowest TP that fits the target
and meets the SLO; PP only when TP across a whole node does not fit. When no
configuration meets the SLO at the target, the largest TP inside a node that
fits (the lowest latency) is taken and the plan says so.

    PP bubble = (PP - 1) / (m + PP - 1)       m micro-batches (field guide §5.2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ridgeline.errors import RidgelineError
from ridgeline.sizing.engine import EngineProfile
from ridgeline.sizing.hardware import Hardware
from ridgeline.sizing.latency import valid_tp
from ridgeline.sizing.memory import EngineConfig, ReplicaMemory, replica_memory
from ridgeline.sizing.models import ModelSpec
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.serving import ReplicaModel, ServingPoint, Shape
from ridgeline.sizing.workload import SLO, ParallelOptions

TP_DEGREES = (1, 2, 4, 8, 16, 32, 64)
MAX_SEARCH_CONCURRENCY = 4096


def pp_bubble(pp: int, microbatches: int) -> float:
    """Idle share of a GPipe pipeline of `pp` stages and m micro-batches (field guide §5.2)."""
    return (pp - 1) / (microbatches + pp - 1)


@dataclass
class ConfigEval:
    tp: int
    pp: int
    microbatches: int
    memory: ReplicaMemory
    target: int
    max_num_seqs: int                        # the engine runs at most this many sequences
    point: ServingPoint | None = None        # at min(target, capacity)
    max_concurrency_slo: int | None = None   # performance axis
    slo_limit: str = ""
    operating_concurrency: int | None = None
    operating_point: ServingPoint | None = None
    error: str | None = None
    replica: ReplicaModel | None = None

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def fits(self) -> bool:
        return self.memory.fits

    @property
    def capacity(self) -> int:
        """Requests one replica can hold: what fits in memory, capped by --max-num-seqs."""
        return min(self.memory.max_concurrency, self.max_num_seqs)

    @property
    def capacity_limit(self) -> str:
        if self.max_num_seqs < self.memory.max_concurrency:
            return f"engine: --max-num-seqs {self.max_num_seqs}"
        return "memory"

    @property
    def bubble(self) -> float:
        return pp_bubble(self.pp, self.microbatches) if self.pp > 1 else 0.0

    def meets(self, slo: SLO) -> bool:
        return self.point is not None and self.fits and self.target <= self.max_num_seqs and \
            self.point.concurrency >= self.target and self.point.meets(slo.ttft_s, slo.itl_s)

    def to_dict(self, slo: SLO) -> dict[str, Any]:
        p, op = self.point, self.operating_point
        return {
            "tp": self.tp, "pp": self.pp, "gpus": self.gpus,
            "pp_microbatches": self.microbatches if self.pp > 1 else None,
            "pp_bubble": self.bubble if self.pp > 1 else None,
            "memory_per_gpu_bytes": self.memory.total_bytes,
            "usable_per_gpu_bytes": self.memory.usable_bytes,
            "weights_per_gpu_bytes": self.memory.weights_bytes,
            "kv_per_gpu_bytes": self.memory.kv_bytes,
            "fits": self.fits, "target_concurrency": self.target,
            "max_concurrency_capacity": self.capacity,
            "max_concurrency_memory": self.memory.max_concurrency,
            "itl_s": p.itl_p95_s if p else None, "ttft_s": p.ttft_p95_s if p else None,
            "decode_step_s": p.decode_step_p95_s if p else None,
            "allreduce_share": p.allreduce_share if p else None,
            "tokens_per_s_per_gpu": p.output_tokens_per_s / self.gpus if p else None,
            "meets_slo": self.meets(slo),
            "max_concurrency_slo": self.max_concurrency_slo, "slo_limit": self.slo_limit,
            "operating_concurrency": self.operating_concurrency,
            "rps_per_gpu_at_operating_point": op.rps / self.gpus if op else None,
            "tokens_per_s_per_gpu_at_operating_point":
                op.output_tokens_per_s / self.gpus if op else None,
            "error": self.error,
        }


@dataclass
class ParallelPlan:
    rows: list[ConfigEval]
    chosen: ConfigEval
    reason: str
    warnings: list[str] = field(default_factory=list)
    most_efficient: ConfigEval | None = None   # highest RPS per GPU at its operating point


def _evaluate(cfg: ConfigEval, spec: ModelSpec, precision: Precision, hw: Hardware, shape: Shape,
              slo: SLO, engine: EngineConfig, engine_layer: EngineProfile | None = None) -> None:
    """Fill the performance columns of one configuration (no-op if nothing fits)."""
    if cfg.memory.max_concurrency < 1:
        cfg.error = "does not hold one p95 request"
        return
    cfg.replica = ReplicaModel(spec, precision, hw, shape, tp=cfg.tp, pp=cfg.pp,
                               microbatches=cfg.microbatches if cfg.pp > 1 else None,
                               max_batched_tokens=engine.max_batched_tokens, engine=engine_layer)
    try:
        at = min(cfg.target, cfg.capacity)
        cfg.point = cfg.replica.point(at)
        upper = min(cfg.capacity, MAX_SEARCH_CONCURRENCY)
        if slo.ttft_s is None and slo.itl_s is None:
            cfg.max_concurrency_slo, cfg.slo_limit = None, "no SLO"
            cfg.operating_concurrency = upper
        else:
            # search past capacity so the table shows both axes
            c, why = cfg.replica.max_concurrency(slo.ttft_s, slo.itl_s,
                                                 max(upper, min(2 * upper, MAX_SEARCH_CONCURRENCY)))
            cfg.max_concurrency_slo, cfg.slo_limit = c, why
            cfg.operating_concurrency = min(c, cfg.capacity)
        if cfg.operating_concurrency:
            cfg.operating_point = cfg.replica.point(cfg.operating_concurrency)
    except RidgelineError as exc:  # e.g. TP > 1 with no all-reduce data in the profile
        cfg.error = str(exc)
        cfg.point = None


def _config(spec, precision, engine, gpu_memory, tp, pp, target, shape, opts) -> ConfigEval:
    m = opts.pp_microbatches or pp
    mem = replica_memory(spec, precision, engine, gpu_memory, tp, pp, target, shape.context_p95)
    return ConfigEval(tp, pp, m, mem, target, engine.max_num_seqs)


def plan_parallelism(spec: ModelSpec, precision: Precision, hw: Hardware, engine: EngineConfig,
                     shape: Shape, slo: SLO, target: int, opts: ParallelOptions, *,
                     engine_layer: EngineProfile | None = None) -> ParallelPlan:
    """Evaluate TP 1..node (and PP beyond a node) and choose one (see module docstring);
    `engine_layer`: the serving engine on top of the hardware (sizing.engine)."""
    warnings: list[str] = []
    gpu_mem = hw.memory_bytes
    tps = [t for t in TP_DEGREES if t <= opts.gpus_per_node and valid_tp(spec, t) is None]
    if not tps:
        raise RidgelineError(f"{spec.name}: no TP degree up to {opts.gpus_per_node} shards its "
                             "heads")
    if opts.tp is not None or opts.pp is not None:
        tp, pp = opts.tp or 1, opts.pp or 1
        why = valid_tp(spec, tp)
        if why:
            raise RidgelineError(f"--tp {tp}: {why}")
        if pp > spec.num_layers:
            raise RidgelineError(f"--pp {pp} exceeds the model's {spec.num_layers} layers")
        cfg = _config(spec, precision, engine, gpu_mem, tp, pp, target, shape, opts)
        if cfg.memory.max_concurrency < 1:
            raise RidgelineError(_no_fit_message(spec, cfg, shape, "even one p95 request"))
        _evaluate(cfg, spec, precision, hw, shape, slo, engine, engine_layer)
        if cfg.error:
            raise RidgelineError(f"TP={tp} x PP={pp}: {cfg.error}")
        if not cfg.fits:
            warnings.append(f"TP={tp} x PP={pp} holds {cfg.memory.max_concurrency} p95 requests, "
                            f"not the target {target}")
        return ParallelPlan([cfg], cfg, f"TP={tp} x PP={pp} as requested", warnings, cfg)

    rows = [_config(spec, precision, engine, gpu_mem, t, 1, target, shape, opts) for t in tps]
    if not any(r.fits for r in rows):
        tp = tps[-1]
        for pp in range(2, spec.num_layers + 1):
            cfg = _config(spec, precision, engine, gpu_mem, tp, pp, target, shape, opts)
            if cfg.fits:
                rows.append(cfg)
                break
        else:
            raise RidgelineError(_no_fit_message(spec, rows[-1], shape, f"{target} p95 requests",
                                                 f"TP={tp} x PP up to {spec.num_layers}"))
    for r in rows:
        _evaluate(r, spec, precision, hw, shape, slo, engine, engine_layer)
    fitting = [r for r in rows if r.fits and r.error is None]
    if not fitting:
        priced = [r for r in rows if r.fits]
        if priced and all("all-reduce" in (r.error or "") for r in priced):
            raise RidgelineError(
                f"{spec.name} needs TP >= {priced[0].tp} on {hw.name}, but its profile has no "
                "all-reduce or host-link measurement to price TP with: profile the interconnect "
                "(`ridgeline profile --probes allreduce,host_link`) or plan with --gpu NAME for a "
                "datasheet estimate")
        errors = "; ".join(f"TP={r.tp}: {r.error}" for r in rows if r.error)
        raise RidgelineError(f"no configuration can be priced: {errors}")
    meeting = [r for r in fitting if r.meets(slo)]
    if meeting:
        chosen = meeting[0]
        reason = (f"the lowest TP{' x PP' if chosen.pp > 1 else ''} that fits {target} p95 "
                  f"request{'s' if target != 1 else ''} and meets the SLO (field guide §5.1)")
    else:
        in_node = [r for r in fitting if r.pp == 1]
        chosen = in_node[-1] if in_node else fitting[0]
        reason = ("no configuration meets the SLO at the target concurrency: the largest TP that "
                  "fits (lowest latency); the operating point lowers the concurrency")
        warnings.append(f"no TP/PP configuration meets the SLO with {target} requests in flight")
    return ParallelPlan(rows, chosen, reason, warnings, _most_efficient(fitting))


def _most_efficient(rows: list[ConfigEval]) -> ConfigEval | None:
    """The configuration with the most requests/s per GPU at its own operating point (§8.5)."""
    scored = [r for r in rows if r.operating_point is not None and r.operating_point.rps > 0]
    return max(scored, key=lambda r: r.operating_point.rps / r.gpus) if scored else None


def _no_fit_message(spec: ModelSpec, cfg: ConfigEval, shape: Shape, what: str,
                    tried: str | None = None) -> str:
    gb = cfg.memory.total_bytes / 1e9
    usable = cfg.memory.usable_bytes / 1e9
    where = tried or f"TP={cfg.tp} x PP={cfg.pp}"
    return (f"{spec.name} fits on no count of GPUs: {what} at {shape.context_p95} tokens need "
            f"{gb:.1f} GB on the fullest GPU at {where}, {usable:.1f} GB usable per GPU "
            "(lower the concurrency or context, quantize weights/KV, or use larger GPUs)")
