"""Tensor-parallel validation: decoder layers sharded over N ranks as serving engines shard them,
and the rank-side measurement of `ridgeline validate --tp N`.

Sharding (Megatron-style, as vLLM runs dense models; field guide §5.1), rank r of N:

    QKV      column-parallel: the rank's H/N query heads and its KV heads (G/N of them, or,
             when G < N, KV head r // (N/G), replicated on N/G ranks as vLLM does)
    O        row-parallel: the input columns of the rank's query heads      -> all-reduce
    gate+up  column-parallel: the rank's I/N gate rows and I/N up rows
    down     row-parallel: the rank's I/N input columns                     -> all-reduce
    norms, residual adds, embedding: replicated; LM head vocab-parallel (V/N rows, the
    rank's logits only: the planner prices V/tp and no gather)

so a layer is one all-reduce of (tokens x hidden) activations after each row-parallel
GEMM, two per layer: what ridgeline.sizing.latency prices with
roofline.interconnect.tp_allreduce_time. The shards are slices of the unsharded
layer's weights: the same seed draws the same full weights on every rank (the order
of DecoderModel), each rank keeps its slice. Before anything is timed, layer 0's
shard runs a prefill and a decode step against the unsharded layer it was cut from
(with the real all-reduces); the worst relative error over the ranks of the layer's
contribution (output - input) must be within `check_tolerance(weights)`.

Measured per point and mode (all ranks in lockstep, counts agreed across ranks):

    t_step    the step with its all-reduces                      -> measured_s
    t_local   the same step with the all-reduces as no-ops        -> no_allreduce_s
    allreduce_s     = max(t_step - t_local, 0)   what the all-reduces cost the step,
                      rank skew and synchronisation included
    allreduce_share = allreduce_s / t_step
    t_alone   the step's 2 x layers all-reduces of (tokens x hidden), back to back,
              alone (what the planner's collective model prices)  -> allreduce_alone_s

Every sample starts with the cache flush and a barrier (all ranks start together) and
is the slowest rank's time (an all-reduce-bound step ends when its last rank does).
Timing goes through ridgeline.timing.sample_ms with warm-up and repeat counts agreed
across ranks (from the slowest rank's estimate; unequal counts would deadlock): device
events on GPUs, the host clock on the CPU. Graph mode captures the step, NCCL
all-reduces included, into one CUDA graph; a capture that fails on any rank waives graph
mode for that point. A point that fails otherwise ends the run (a rank that raises
mid-step would leave its peers waiting in a collective): the parent reports the rank.

Run as one process per rank:

    python -m ridgeline.validation.tp WORKDIR/job.json     # started by ridgeline.ranks

or in-process under torchrun (`torchrun --nproc-per-node N -m ridgeline validate --tp N`,
ridgeline.validation.run.validate_tp_torchrun). Rank 0 appends every finished point to
WORKDIR/points.jsonl and writes WORKDIR/report.json at the end.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ridgeline.errors import RidgelineError
from ridgeline.ranks import apply_test_fault
from ridgeline.roofline.trust import scatters
from ridgeline.validation.footprint import (LayerDims, dims_from_spec, normalize_weights,
                                            weight_bytes_per_layer)
from ridgeline.validation.measure import (NOISY_NOTE, Measured, Point, Skipped, release_memory,
                                          relative_spread, scale_to_depth)
from ridgeline.validation.transformer import DecoderLayer, DecoderModel, Linear, sdpa_has_gqa

# |shard - unsharded| / |unsharded| of a layer's contribution. The shards sum partial
# products in the activation dtype; fp8 quantizes each rank's slice with its own scale.
CHECK_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 4e-2, "fp8": 0.15}
CHECK_TOKENS = 5          # the check's prefill length (then one decode step), batch 2
TOKEN_SEED = 1234         # tokens of a point: the same on every rank (the embedding is replicated)

Reduce = Callable[[torch.Tensor], torch.Tensor]   # sums a tensor over the ranks, in place


# ----------------------------------------------------------------- shapes (pure)

def tp_problem(d: LayerDims, tp: int, weights: str = "bf16") -> str | None:
    """None when `tp` ranks can shard these layers as engines do, else why not (one phrase)."""
    if tp < 1:
        return "the TP degree must be at least 1"
    if d.heads % tp:
        return f"{d.heads} attention heads do not split over {tp} ranks"
    if not (d.kv_heads % tp == 0 or tp % d.kv_heads == 0):
        return (f"{d.kv_heads} KV heads neither split over {tp} ranks nor replicate evenly "
                "across them")
    if d.intermediate % tp:
        return f"the MLP's {d.intermediate} intermediate features do not split over {tp} ranks"
    if weights == "fp8":
        bad = sorted({x for shape in local_dims(d, tp).linear_shapes() for x in shape if x % 16})
        if bad:
            return f"fp8 shards need GEMM dimensions that are multiples of 16; {bad} are not"
    return None


def local_dims(d: LayerDims, tp: int) -> LayerDims:
    """One rank's layer shapes (hidden, vocab and depth as the model's: the embedding is
    replicated, and counting the full vocabulary for the LM head over-counts, never under)."""
    return LayerDims(hidden=d.hidden, heads=d.heads // tp, kv_heads=max(d.kv_heads // tp, 1),
                     head_dim=d.head_dim, intermediate=d.intermediate // tp, vocab=d.vocab,
                     num_layers=d.num_layers, tied=d.tied)


def kv_heads_of(d: LayerDims, tp: int, rank: int) -> tuple[int, int]:
    """(first KV head, count) held by `rank`: G/N heads, or one replicated head when G < N."""
    if d.kv_heads >= tp:
        per = d.kv_heads // tp
        return rank * per, per
    return rank // (tp // d.kv_heads), 1


def check_tolerance(weights: str) -> float:
    return CHECK_TOLERANCE[weights]


# ----------------------------------------------------------------- the sharded layer

def _rows(w: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
    """The rows [a, b) of each span, concatenated into a new tensor (never a view: the
    full weight must be freed)."""
    if w.element_size() == 1:  # fp8: cat through a byte view (not every torch cats fp8)
        return torch.cat([w.view(torch.uint8)[a:b] for a, b in spans]).view(w.dtype)
    return torch.cat([w[a:b] for a, b in spans])


def _cols(w: torch.Tensor, a: int, b: int) -> torch.Tensor:
    if w.element_size() == 1:
        return w.view(torch.uint8)[:, a:b].clone(memory_format=torch.contiguous_format) \
            .view(w.dtype)
    return w[:, a:b].clone(memory_format=torch.contiguous_format)


def shard_linear(full: Linear, *, rows: list[tuple[int, int]] | None = None,
                 cols: tuple[int, int] | None = None) -> Linear:
    """A Linear holding rows (column-parallel) or columns (row-parallel) of `full`'s weight.

    fp8 keeps the full weight's per-tensor scale (the same quantized values as unsharded).
    """
    lin = copy.copy(full)
    w = full.weight
    lin.weight = _rows(w, rows) if rows else _cols(w, *cols)
    lin.out_features, lin.in_features = lin.weight.shape
    return lin


class TPDecoderLayer(DecoderLayer):
    """One rank's shard of a DecoderLayer: DecoderLayer.__call__ on the rank's heads and
    features (`self.d`: the rank's shapes; x replicated, the caches the rank's KV heads),
    with `reduce` the all-reduce (sum over ranks) after O and down."""

    def __init__(self, full: DecoderLayer, tp: int, rank: int, reduce: Reduce):
        d = full.d
        self.d = local_dims(d, tp)
        self.eps, self.gqa_native, self.ops = full.eps, full.gqa_native, full.ops
        self.reduce = reduce  # in place of DecoderLayer.reduce (the identity)
        self.attn_norm, self.mlp_norm = full.attn_norm, full.mlp_norm
        hd, hq = d.head_dim, d.heads // tp
        q = (rank * hq * hd, (rank + 1) * hq * hd)
        g0, gn = kv_heads_of(d, tp, rank)
        k0, v0 = d.q_size, d.q_size + d.kv_size
        self.qkv = shard_linear(full.qkv, rows=[q, (k0 + g0 * hd, k0 + (g0 + gn) * hd),
                                                (v0 + g0 * hd, v0 + (g0 + gn) * hd)])
        self.o = shard_linear(full.o, cols=q)
        i = d.intermediate // tp
        self.gate_up = shard_linear(full.gate_up, rows=[(rank * i, (rank + 1) * i),
                                                        (d.intermediate + rank * i,
                                                         d.intermediate + (rank + 1) * i)])
        self.down = shard_linear(full.down, cols=(rank * i, (rank + 1) * i))


class TPModel(DecoderModel):
    """One rank's shard of DecoderModel(spec, weights, layers, seed): the same weights, cut.

        model = TPModel(spec, "bf16", tp=2, rank=r, reduce=group.all_reduce_, device=dev)
        logits = model.forward(tokens, cache)     # (B, V/N): this rank's slice of the logits
        with model.allreduce(False): ...          # the all-reduces as no-ops (timed apart)

    DecoderModel's forward, head and caches run unchanged on the shards (`self.d` is the
    rank's shapes); only the construction differs. With keep_reference, the unsharded
    layer 0 stays in `self.reference` until `drop_reference()` (for `shard_error`).
    """

    def __init__(self, spec: Any, weights: str = "bf16", *, tp: int, rank: int, reduce: Reduce,
                 layers: int | None = None, device: torch.device | str = "cpu", seed: int = 0,
                 gfx_arch: str | None = None, gqa_native: bool | None = None,
                 fused: bool | None = None, keep_reference: bool = False,
                 on_layer: Callable[[int, int], None] | None = None):
        self.weights = normalize_weights(weights)
        full = dims_from_spec(spec, self.weights)
        why = tp_problem(full, tp, self.weights)
        if why:
            raise RidgelineError(f"--tp {tp}: {spec.name}: {why}")
        self.full_d, self.d = full, local_dims(full, tp)
        self.tp, self.rank = tp, rank
        self._reduce, self.comm = reduce, True
        self.num_layers = min(int(layers or full.num_layers), full.num_layers)
        gen = self._setup(spec, device, seed, gfx_arch, gqa_native, fused)
        # the draws of DecoderModel, in its order: embedding, layers, LM head
        self.embed = (torch.randn(full.vocab, full.hidden, generator=gen, device=self.device)
                      .to(self.act_dtype))
        self.layers, self.reference = [], None
        for i in range(self.num_layers):
            if on_layer:
                on_layer(i, self.num_layers)
            layer = DecoderLayer(full, self.weights, self.act_dtype, self.device, gen, self.eps,
                                 self.fp8, self.gqa_native, self.ops)
            self.layers.append(TPDecoderLayer(layer, tp, rank, self.reduce))
            if i == 0 and keep_reference:
                self.reference = layer
            del layer  # one unsharded layer at a time: the rank holds its shards only
        self.final_norm = torch.ones(full.hidden, device=self.device, dtype=self.act_dtype)
        head = self.embed if full.tied else (
            torch.randn(full.vocab, full.hidden, generator=gen, device=self.device)
            .mul_(full.hidden ** -0.5).to(self.act_dtype))
        part = torch.tensor_split(head, tp, dim=0)[rank]             # (~V/N, hidden)
        self.lm_head = part if full.tied else part.clone()           # a view of embed; or own
        del head
        self._cos = self._sin = None
        self._gen = gen

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        return self._reduce(t) if self.comm else t

    @contextmanager
    def allreduce(self, enabled: bool):
        """Run (or capture) the step with the all-reduces on, or as no-ops."""
        before, self.comm = self.comm, enabled
        try:
            yield self
        finally:
            self.comm = before

    def drop_reference(self) -> None:
        self.reference = None


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(b.float().norm())
    return float((a.float() - b.float()).norm()) / max(den, 1e-30)


def shard_error(model: TPModel) -> float:
    """Relative error of layer 0's shard against the unsharded layer (this rank's view).

    A prefill of CHECK_TOKENS tokens, then one decode step on the cache it filled, batch 2,
    through both; compared: the layer's contribution (output - input) of both steps and
    the rank's KV heads of the cache. Inputs are drawn alike on every rank (fixed seed).
    """
    full, shard = model.reference, model.layers[0]
    if full is None:
        raise ValueError("shard_error needs TPModel(..., keep_reference=True)")
    d, dev, T = model.full_d, model.device, CHECK_TOKENS
    gen = torch.Generator(device=dev)
    gen.manual_seed(11)
    x = torch.randn(2, T + 1, d.hidden, generator=gen, device=dev).to(model.act_dtype)
    cos, sin = model._rotary(T + 1)
    g0, gn = kv_heads_of(d, model.tp, model.rank)
    caches = {}
    for name, heads in (("full", d.kv_heads), ("shard", model.d.kv_heads)):
        caches[name] = [torch.zeros(2, heads, T + 1, d.head_dim, device=dev,
                                    dtype=model.act_dtype) for _ in range(2)]
    errors = []
    for xs, start in ((x[:, :T], 0), (x[:, T:], T)):
        ref = full(xs, cos, sin, *caches["full"], start)
        out = shard(xs, cos, sin, *caches["shard"], start)
        errors.append(_rel(out - xs, ref - xs))
    for mine, theirs in zip(caches["shard"], caches["full"]):
        errors.append(_rel(mine, theirs[:, g0:g0 + gn]))
    return max(errors)


# ----------------------------------------------------------------- rank-side timing

@dataclass
class TPMeasured(Measured):
    """A measured point of a TP run: Measured's fields (measured_s: the step with its
    all-reduces, slowest rank, full depth) and the all-reduce's part of it."""

    tp: int = 1
    no_allreduce_s: float = 0.0           # the same step with the all-reduces as no-ops
    allreduce_s: float = 0.0              # max(measured_s - no_allreduce_s, 0)
    allreduce_share: float = 0.0          # allreduce_s / measured_s
    allreduce_alone_s: float | None = None   # the step's 2 x layers all-reduces alone
    timing_no_allreduce: dict[str, Any] | None = None
    timing_allreduce_alone: dict[str, Any] | None = None


class RankTimer:
    """Times a callable on every rank in lockstep; samples are the slowest rank's (ms).

    The clock and the cache flush are those of `timer` (make_timer(device): events and an
    L2-sized flush on a GPU, the host clock on the CPU); counts and barriers are the ranks'.
    """

    def __init__(self, group, timer, progress: Callable[[str], None], *,
                 warmup_ms: float = 25.0, rep_ms: float = 200.0, min_reps: int = 5,
                 max_reps: int = 500):
        self.group, self.progress = group, progress
        self.clock, self.flush = timer.clock, timer.flush
        self.name = f"{timer.name} + barrier, slowest rank"
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms
        self.min_reps, self.max_reps = min_reps, max_reps

    def time(self, fn: Callable[[], Any], label: str):
        from ridgeline.timing import Timing, budget_counts, sample_ms

        g = self.group
        fn()                       # untimed first call (heuristics, allocator)
        g.barrier()
        est = sample_ms(fn, self.clock, n_warmup=0, n_rep=1, launches=3)[0]
        est = g.reduce([est], "max")[0]  # every rank must loop the same number of times
        n_warmup, n_rep = budget_counts(est, self.warmup_ms, self.rep_ms, self.min_reps,
                                        self.max_reps, max_warmup=1000)
        self.progress(f"{label}: {n_warmup} warm-up + {n_rep} timed")

        def before() -> None:      # outside the timed region: flush, tell the watchdog, line up
            self.flush()
            self.progress(f"{label}: sample")
            g.barrier()

        samples = sample_ms(fn, self.clock, n_warmup=n_warmup, n_rep=n_rep, before_sample=before,
                            after_warmup=g.barrier)
        return Timing(g.reduce(samples, "max"), self.name)


class TPBench:
    """Runs points on one rank's TPModel: the step, the step without all-reduces, the
    all-reduces alone (and the head alone when scaled), in every mode."""

    def __init__(self, model: TPModel, device, group, timer: RankTimer,
                 progress: Callable[[str], None]):
        self.model, self.device, self.group, self.timer = model, device, group, timer
        self.progress = progress
        self.layers_total = model.d.num_layers

    def _time(self, fn: Callable[[], Any], mode: str, label: str):
        """(Timing, output, graph or None) of fn in this mode; a graph is captured and
        replayed (the caller drops it when done)."""
        if mode == "graph":
            from ridgeline.validation.measure import capture_graph

            graph, out = capture_graph(fn, self.device.index)
            timing = self.timer.time(graph.replay, label)
            return timing, out, graph
        timing = self.timer.time(fn, label)
        return timing, fn(), None

    def _graph_waiver(self, step: Callable[[], Any], mode: str, label: str) -> str | None:
        """Capture a graph of the step once; the reason (agreed by all ranks) when it fails."""
        if mode != "graph":
            return None
        reason = None
        try:
            from ridgeline.validation.measure import capture_graph

            self.progress(f"{label}: graph capture check")
            graph, _ = capture_graph(step, self.device.index)
            del graph
        except Exception as exc:  # noqa: BLE001 - a capture NCCL or the driver refuses
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            reason = f"graph capture with all-reduces failed ({type(exc).__name__}): {first}"
        failed = self.group.reduce([1.0 if reason else 0.0], "max")[0]
        if failed and reason is None:
            reason = "graph capture with all-reduces failed on another rank"
        return reason

    def run_point(self, point: Point, layers: int, modes: list[str]) -> list[Any]:
        model = self.model
        cache = model.new_cache(point.batch, point.kv_tokens,
                                filled=point.context if point.phase == "decode" else 0,
                                layers=layers)
        gen = torch.Generator(device=model.device)
        gen.manual_seed(TOKEN_SEED + point.batch * 7919 + point.context)
        tokens = torch.randint(0, model.d.vocab, (point.batch, point.q_tokens), generator=gen,
                               device=model.device)
        # the all-reduces alone: 2 per layer of the step's (tokens x hidden) activations
        # (zeros: a sum of zeros stays zero however often it runs)
        buf = torch.zeros(point.batch * point.q_tokens, model.d.hidden, dtype=model.act_dtype,
                          device=model.device)
        step = functools.partial(model.forward, tokens, cache)
        head = functools.partial(model.head_only, tokens)
        alone = functools.partial(_reduce_n, model._reduce, buf, 2 * layers)
        try:
            return [self._mode(point, layers, mode, step, head, alone) for mode in modes]
        finally:
            del step, head, alone, cache, tokens, buf
            release_memory(self.device)

    def _mode(self, point: Point, layers: int, mode: str, step_fn: Callable[[], Any],
              head_fn: Callable[[], Any], alone_fn: Callable[[], Any]) -> Any:
        """One point in one mode: TPMeasured, or Skipped when graph capture is waived."""
        model, label = self.model, f"{point.label()} {mode}"
        waiver = self._graph_waiver(step_fn, mode, label)
        if waiver:
            return Skipped(point.phase, mode, point.batch, point.context, waiver)
        self.progress(f"{label}: step")
        with model.allreduce(True):
            step, out, graph = self._time(step_fn, mode, f"{label}: step")
        finite = self.group.reduce([0.0 if bool(torch.isfinite(out).all()) else 1.0])[0] == 0.0
        del out, graph
        with model.allreduce(False):
            local, _, graph = self._time(step_fn, mode, f"{label}: step without all-reduces")
        del graph
        comm, _, graph = self._time(alone_fn, mode, f"{label}: all-reduces alone")
        del graph
        scaled = layers < self.layers_total
        head_stats, head_s = None, 0.0
        if scaled:
            head, _, graph = self._time(head_fn, mode, f"{label}: head")
            del graph
            head_stats, head_s = head.stats(), head.median_ms * 1e-3
        step_s = scale_to_depth(step.median_ms * 1e-3, head_s, layers, self.layers_total)
        local_s = scale_to_depth(local.median_ms * 1e-3, head_s, layers, self.layers_total)
        ar_s = max(step_s - local_s, 0.0)
        notes = []
        if scaled:
            notes.append(f"{layers} of {self.layers_total} layers measured, scaled to the "
                         "full depth")
        if not finite:
            notes.append("non-finite logits: point excluded from the error summary")
        # marked, not re-measured: every rank would have to agree to measure again
        spread = relative_spread(step.samples_ms)
        noisy = scatters(spread)
        if noisy:
            notes.append(f"{NOISY_NOTE}samples spread {spread:.0%} (p20..p80 of the median)")
        return TPMeasured(
            point.phase, mode, point.batch, point.context, step_s, layers, self.layers_total,
            scaled, finite, step.stats(), head_stats, notes, spread, noisy, tp=model.tp,
            no_allreduce_s=local_s, allreduce_s=ar_s,
            allreduce_share=ar_s / step_s if step_s > 0 else 0.0,
            allreduce_alone_s=comm.median_ms * 1e-3 * self.layers_total / layers,
            timing_no_allreduce=local.stats(), timing_allreduce_alone=comm.stats())


def _reduce_n(reduce: Reduce, buf: torch.Tensor, n: int) -> None:
    for _ in range(n):
        reduce(buf)


# ----------------------------------------------------------------- one rank's run

class Sink:
    """Rank 0's files in the work folder: points as they finish, progress, the report."""

    def __init__(self, workdir: str | Path | None):
        self.dir = Path(workdir) if workdir else None

    def point(self, results: list[Any]) -> None:
        if self.dir is None:
            return
        with open(self.dir / "points.jsonl", "a") as fh:
            for r in results:
                kind = "skipped" if isinstance(r, Skipped) else "measured"
                fh.write(json.dumps({"kind": kind, **r.to_dict()}) + "\n")

    def write(self, name: str, doc: dict[str, Any]) -> None:
        if self.dir is None:
            return
        tmp = self.dir / (name + ".tmp")
        tmp.write_text(json.dumps(doc, default=str))
        tmp.replace(self.dir / name)


def inject_fault(job: dict[str, Any], rank: int, where: str,
                 progress: Callable[[str], None]) -> None:
    """Test-only: job["fault"] = {"rank": R, "kind": "hang" | "raise" | "kill", "at": where}
    ("ready": after joining the process group; "measure": before the first point;
    "after_point": after each point)."""
    fault = job.get("fault") or {}
    if fault.get("rank") == rank and fault.get("at", "ready") == where:
        apply_test_fault(fault, rank, progress)


def run_rank(job: dict[str, Any], group, progress: Callable[[str], None],
             sink: Sink | None = None) -> dict[str, Any] | None:
    """Build this rank's shards, check them, measure every point; rank 0 returns the report.

    job: spec (ModelSpec fields), weights, batches, contexts, prefills, layers_cap,
    rep_ms; group: a joined ridgeline.ranks.RankGroup (or any object with its methods).
    The report: device, tp, backend, measured and skipped (dicts), notes, timer, resident,
    check_error, interrupted, waived.
    """
    from ridgeline.device import cpu_device, get_device
    from ridgeline.sizing.models import ModelSpec
    from ridgeline.timing import make_timer
    from ridgeline.validation import measure as ms
    from ridgeline.validation.run import depth_notes, fp8_waiver, ops_note

    sink = sink or Sink(None)
    rank, tp = group.rank, group.world
    inject_fault(job, rank, "ready", progress)
    spec = ModelSpec(**job["spec"])
    weights = normalize_weights(job["weights"])
    device = get_device(f"cuda:{group.local_rank}") if group.on_gpu else cpu_device()
    points = (ms.decode_points(list(job["batches"]), list(job["contexts"]))
              + ms.prefill_points(list(job["prefills"])))
    report: dict[str, Any] = {"device": device.to_dict(), "tp": tp, "backend": group.backend,
                              "measured": [], "skipped": [], "notes": [], "timer": None,
                              "resident": 0, "check_error": None, "interrupted": False,
                              "waived": None}
    notes = report["notes"]
    waiver = fp8_waiver(device) if weights == "fp8" else None
    waivers = [w for w in group.share(waiver) if w]
    if waivers:
        waiver = waivers[0]
        report["waived"] = waiver
        report["skipped"] = [Skipped(p.phase, "all", p.batch, p.context, waiver).to_dict()
                             for p in points]
        notes.append(f"fp8 waived: {waiver}")
        return report if rank == 0 else None
    tdev = group.device
    base_timer = make_timer(device)  # its clock and flush (allocated when first timed)
    full = dims_from_spec(spec, weights)
    budget = ms.memory_budget(device, base_timer.flush_bytes)
    if not group.on_gpu:
        budget //= tp                      # the ranks share the host's memory
    budget -= weight_bytes_per_layer(full, weights)  # the unsharded layer 0, until checked
    budget = group.reduce([float(budget)], "min")[0]
    gqa_native = sdpa_has_gqa()
    modes = ms.modes_for(device)
    cap = job.get("layers_cap")
    max_layers = min(full.num_layers, cap or full.num_layers)
    plan = ms.plan_depth(local_dims(full, tp), weights, points, budget, max_layers=max_layers,
                         graph="graph" in modes, gqa_native=gqa_native)
    notes += depth_notes(plan, cap, full.num_layers)
    if not group.on_gpu:
        notes.append(f"CPU: {tp} ranks on one host, {torch.get_num_threads()} thread(s) each; "
                     "the all-reduce runs over gloo on loopback")
    g0 = [kv_heads_of(full, tp, r)[0] for r in range(tp)]
    if full.kv_heads < tp:
        notes.append(f"{full.kv_heads} KV heads over {tp} ranks: each KV head replicated on "
                     f"{tp // full.kv_heads} ranks (as vLLM does; ranks' KV heads {g0})")
    timer = RankTimer(group, base_timer, progress, rep_ms=float(job.get("rep_ms", 200.0)))
    report["timer"] = timer.name
    report["resident"] = plan.resident
    total = len(points)
    sink.write("status.json", {"description": f"building {plan.resident} layer(s) of "
                               f"{spec.name} on {tp} ranks", "done": 0, "total": total})
    with torch.inference_mode():
        bench = None
        if plan.resident:
            model = TPModel(spec, weights, tp=tp, rank=rank, reduce=group.all_reduce_,
                            layers=plan.resident, device=tdev, gfx_arch=device.gfx_arch,
                            gqa_native=gqa_native, keep_reference=True,
                            on_layer=lambda i, n: progress(f"building layer {i + 1}/{n}"))
            model.prepare(max(p.kv_tokens for p in points))
            notes.extend(model.notes)
            notes.append(ops_note(model))
            progress("checking the sharded layer against the unsharded one")
            err = group.reduce([shard_error(model)], "max")[0]
            model.drop_reference()
            release_memory(device)
            tol = check_tolerance(weights)
            report["check_error"] = err
            if not err <= tol:
                raise RidgelineError(
                    f"the sharded layer 0 differs from the unsharded layer it was cut from: "
                    f"relative error {err:.3g} > {tol:g} (worst rank)")
            notes.append(f"sharded layer 0 checked against the unsharded layer (same weights; "
                         f"prefill and decode, worst rank): relative error {err:.2g} "
                         f"(tolerance {tol:g})")
            bench = TPBench(model, device, group, timer, progress)
        sink.write("meta.json", report)  # what a run stopped mid-way is reported with
        progress(f"measuring {total} point(s)")
        inject_fault(job, rank, "measure", progress)
        done = 0

        def on_result(p: Point, out: list) -> None:
            nonlocal done
            done += 1
            sink.point(out)
            sink.write("status.json", {"description": p.label(), "done": done, "total": total})
            inject_fault(job, rank, "after_point", progress)

        measured, skipped, interrupted = ms.run_points(
            points, plan, modes, bench.run_point if bench else None,
            cpu=device.kind == "cpu", on_result=on_result)
    report["measured"] = [m.to_dict() for m in measured]
    report["skipped"] = [s.to_dict() for s in skipped]
    report["interrupted"] = interrupted
    if rank != 0:
        return None
    sink.write("report.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    """One spawned rank: python -m ridgeline.validation.tp WORKDIR/job.json"""
    import warnings

    from ridgeline.ranks import Progress, RankGroup, exit_with_parent

    exit_with_parent()
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m ridgeline.validation.tp JOB.json", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", category=FutureWarning)  # once per rank is noise
    path = Path(argv[0])
    job = json.loads(path.read_text())
    group = RankGroup(job["device_kind"])
    progress = Progress(path.parent, group.rank)
    progress("init_process_group")
    group.init(float(job["pg_timeout_s"]))
    progress("ready")
    try:
        run_rank(job, group, progress, Sink(path.parent) if group.rank == 0 else None)
        progress("final barrier")
        group.barrier()
    except RidgelineError as exc:  # one line in the log: the parent quotes its last line
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        group.close()
    progress("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

