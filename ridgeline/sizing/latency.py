"""Step times, the performance axis: one decode step and one prefill on a profile's roofline.

    decode_step_time(spec, precision, hw, batch=32, context_tokens=8704, tp=4)  -> StepTime
    prefill_time(spec, precision, hw, batch=1, input_tokens=8192, tp=4)         -> StepTime

Every kernel of a forward pass is priced on the measured roofline (ridgeline.roofline.
model; at its simplest t = max(floor, bytes / bandwidth, FLOPs / throughput), and the
fitted model may add a per-kernel overhead, partial overlap and wave quantization),
never on datasheet peaks unless the hardware is a datasheet (field guide §3):

    GEMMs        model.predict_gemm(M, K, N/tp or K/tp, ...) with M = the step's tokens
                 (decode: the batch; prefill: the tokens of the pass). Fused as engines fuse
                 them (q/k/v, gate/up); weight bytes in the weight dtype      (§3.2, §3.3)
    attention    decode: KV bytes read (batch x context x KV per token per layer) over the
                 measured bandwidth (§3.3); prefill: causal FLOPs 4 x heads x head_dim x
                 s x (p + (s+1)/2) over the measured throughput (§3.2)
    MoE experts  expected distinct experts loaded by B tokens, N (1 - (1 - k/N)^B), each
                 read once; FLOPs of the B x k routed token-expert pairs          (§5.4)
    elementwise  norms, rope, activation, residual, KV writes, sampling: bytes / bandwidth
    measured     where the profile has a measured efficiency curve (roofline.efficiency):
    efficiency   decode attention (batch, KV bytes per sequence, query heads per KV head),
                 prefill attention (tokens), MoE
                 expert GEMMs (tokens per expert), weight-only int8/int4 GEMMs (batch) cost
                 t_roofline / efficiency(shape); without one they stay at the roofline
                 (optimistic), and hardware_from_profile's notes say so; a shape more than
                 2x beyond a curve's measured range is priced at its edge and named in
                 the step's notes
    floor        every kernel costs at least the measured latency floor: per-step floor
                 = latency floor x kernels per step
    TP           two all-reduces per layer of tokens x hidden activations from the
                 interconnect model, labelled by its source (measured / estimated /
                 datasheet)                                                    (§5.1, §5.6)
    PP           GPipe schedule (§5.2): step = (m + PP - 1) x (worst stage time + stage
                 transfer), bubble = (PP - 1) / (m + PP - 1)

The step time is the sum over kernels (kernels of one step run one after another).
Its `bound` is the class of ceiling that holds most of the time: "memory",
"compute", "latency" (launch floor) or "communication".
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Any

from ridgeline.counts.moe import expected_experts_loaded
from ridgeline.errors import RidgelineError
from ridgeline.roofline.efficiency import CURVES, Efficiency, kv_bytes_per_seq
from ridgeline.roofline.interconnect import tp_allreduce_time
from ridgeline.roofline.model import RooflineModel
from ridgeline.sizing.engine import EngineProfile
from ridgeline.sizing.hardware import Hardware
from ridgeline.sizing.memory import (DEFAULT_MAX_BATCHED_TOKENS, LOGIT_BYTES, _rank_shape,
                                     stage_layers)
from ridgeline.sizing.models import ModelSpec
from ridgeline.sizing.precision import Precision

WEIGHT_ONLY = ("int8", "int4")  # weight dtypes dequantized to 16-bit activations
DEFAULT_INTER_NODE_GBPS = 50.0   # assumed PP link without a measured one (IB NDR, one GPU)
BOUNDS = ("memory", "compute", "latency", "communication")


@dataclass
class Op:
    """One kernel (or fused group of kernels) of a step, priced on the roofline."""

    name: str
    group: str          # gemm | attention | moe | elementwise | lm_head | allreduce | pp
    time_s: float
    bound: str
    kernels: int = 1
    flops: float = 0.0
    bytes: float = 0.0
    count: int = 1      # how many times it runs in the step (layers)

    @property
    def total_s(self) -> float:
        return self.time_s * self.count


@dataclass
class StepTime:
    time_s: float
    bound: str
    breakdown: dict[str, float]
    notes: list[str]
    ops: list[Op] = field(default_factory=list)
    kernels: int = 0
    floor_s: float = 0.0             # latency floor x kernels per step
    by_bound: dict[str, float] = field(default_factory=dict)
    allreduce_s: float = 0.0
    allreduce_source: str = "none"   # "measured" | "estimated" | "datasheet" | "none" | "n/a"
    flops: float = 0.0
    bytes: float = 0.0
    tokens: int = 0
    experts_loaded: float | None = None
    pp_bubble: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"time_s": self.time_s, "bound": self.bound, "breakdown": dict(self.breakdown),
                "by_bound": dict(self.by_bound), "kernels": self.kernels, "floor_s": self.floor_s,
                "allreduce_s": self.allreduce_s, "allreduce_source": self.allreduce_source,
                "flops": self.flops, "bytes": self.bytes, "tokens": self.tokens,
                "experts_loaded": self.experts_loaded, "pp_bubble": self.pp_bubble,
                "notes": list(self.notes)}


def resolve_compute_dtype(model: RooflineModel, dtype: str) -> str:
    """The measured matmul dtype serving `dtype` ("fp8" -> fp8_e4m3, or fnuz on MI300)."""
    chains = {"fp8": ("fp8_e4m3", "fp8_e4m3fnuz"), "int8": ("int8", "fp8_e4m3", "fp8_e4m3fnuz")}
    for cand in chains.get(dtype, (dtype,)):
        if cand in model.peak_TFLOPS:
            return cand
    return model.compute_dtype(dtype)


def valid_tp(spec: ModelSpec, tp: int) -> str | None:
    """None when TP degree `tp` can shard this model, else why not."""
    if tp < 1:
        return "TP must be >= 1"
    if spec.num_attention_heads % tp:
        return f"{spec.num_attention_heads} attention heads do not split over {tp} GPUs"
    kv = spec.num_kv_heads
    if not spec.is_mla and not (kv % tp == 0 or tp % kv == 0):
        return f"{kv} KV heads do not split over {tp} GPUs"
    return None


class _Pricer:
    """Prices kernels on one hardware model for one precision and TP degree."""

    def __init__(self, spec: ModelSpec, precision: Precision, hw: Hardware, tp: int,
                 engine: EngineProfile | None = None):
        why = valid_tp(spec, tp)
        if why:
            raise RidgelineError(f"{spec.name}: {why}")
        # the engine layer's kernel-level terms (eager overheads, efficiencies) on the roofline
        hw = engine.hardware(hw) if engine is not None else hw
        self.spec, self.p, self.hw, self.tp, self.engine = spec, precision, hw, tp, engine
        # curve -> the axes a priced shape lay beyond its measured range on (held at the edge)
        self.extrapolated: dict[str, set[str]] = {}
        self.model = hw.model
        self.floor_s = self.model.latency_floor_us * 1e-6
        self.gemm_dtype = resolve_compute_dtype(self.model, precision.gemm_dtype)
        self.base_dtype = resolve_compute_dtype(self.model, precision.base)

    @functools.cached_property
    def efficiency(self) -> Efficiency:
        """The profile's measured kernel efficiencies (roofline.efficiency); empty: none."""
        return Efficiency.of(self.hw.profile)

    def measured(self, op: Op, curve: str, dtype: str, **shape: float) -> Op:
        """`op` at the measured efficiency of its kernel kind (t / efficiency(shape)), or as it
        is when the profile has no such curve (hardware notes say which are missing)."""
        factor = self.efficiency.factor(curve, dtype, **shape)
        if factor is None:
            return op
        beyond = self.efficiency.curve(curve, dtype).beyond(**shape)
        if beyond:
            self.extrapolated.setdefault(curve, set()).update(beyond)
        if factor >= 1.0:
            return op
        return replace(op, time_s=op.time_s / factor)

    def gemm(self, name: str, m: float, k: float, n: float, quantized: bool, count: int,
             group: str = "gemm") -> Op:
        dtype, wdt = ((self.gemm_dtype, self.p.weights) if quantized
                      else (self.base_dtype, self.p.base))
        rows = int(math.ceil(m))
        pred = self.model.predict_gemm(rows, int(math.ceil(k)), int(math.ceil(n)), dtype,
                                       weight_dtype=wdt, act_dtype=self.p.base,
                                       weight_bytes=self.p.weight_bytes if quantized else None)
        op = Op(name, group, pred.time_s, pred.bound, 1, pred.flops, pred.bytes, count)
        if quantized and self.p.weights in WEIGHT_ONLY:  # int8/int4 weights, 16-bit activations
            op = self.measured(op, "dequant", self.p.weights, batch=rows)
        return op

    def work(self, name: str, group: str, flops: float, moved: float, dtype: str, kernels: int,
             count: int) -> Op:
        """`kernels` kernels sharing the work evenly, each priced (floor, overhead) on its own."""
        pred = self.model.predict(flops / kernels, moved / kernels, dtype)
        return Op(name, group, pred.time_s * kernels, pred.bound, kernels, flops, moved, count)

    def elementwise(self, name: str, moved: float, kernels: int, count: int) -> Op:
        return self.work(name, "elementwise", 0.0, moved, self.base_dtype, kernels, count)


def _fused_gemms(pr: _Pricer, kind: str, m: float, count: int, groups: tuple[str, ...],
                 skip: tuple[str, ...] = ()) -> dict[str, Op]:
    """GEMMs of a layer's matrices in `groups`, one per fused kernel name, in layer order."""
    fused: dict[str, list] = {}
    for mat in pr.spec.layer_matrices(kind):
        if mat.group in groups and mat.name not in skip:
            fused.setdefault(mat.kernel, []).append(mat)
    out = {}
    for kernel, mats in fused.items():
        k, _ = _rank_shape(mats[0], pr.spec, pr.tp)
        n = sum(_rank_shape(mm, pr.spec, pr.tp)[1] for mm in mats)
        out[kernel] = pr.gemm(kernel, m, k, n, mats[0].quantized, count)
    return out


def _attention_standard(pr: _Pricer, phase: str, m: float, seqs: int, new: int, prior: int,
                        count: int) -> list[Op]:
    """Attention of `seqs` sequences, each adding `new` tokens after `prior` cached ones."""
    s, b = pr.spec, pr.p.base_bytes
    hq = s.num_attention_heads / pr.tp
    hkv = s.num_kv_heads / min(pr.tp, s.num_kv_heads)
    d = s.head_dim
    kvb = pr.p.kv_bytes
    window = s.sliding_window or None
    # rope reads and writes q and k; the new token's k and v go into the cache
    ops = [pr.elementwise("rope+kv_write", m * (hq + hkv) * d * 2 * b + m * 2 * hkv * d * kvb,
                          2, count)]
    if phase == "decode":
        ctx = min(prior + new, window) if window else prior + new
        flops = 4.0 * seqs * ctx * hq * d                      # QK^T and PV
        moved = seqs * ctx * 2 * hkv * d * kvb + m * 2 * hq * d * b  # K, V read; q in, out
        op = pr.work("attention", "attention", flops, moved, pr.base_dtype, 1, count)
        return ops + [pr.measured(op, "attention_decode", pr.base_dtype, batch=seqs,
                                  kv_bytes_per_seq=kv_bytes_per_seq(max(ctx, 1), hkv, d, kvb),
                                  q_per_kv=hq / hkv, head_dim=d)]
    span = prior + (new + 1) / 2.0
    if window:
        span = min(span, window)
    flops = 4.0 * seqs * hq * d * new * span              # causal: new x (prior + (new+1)/2)
    moved = seqs * (prior + new) * 2 * hkv * d * kvb + m * 2 * hq * d * b  # minimal bytes
    op = pr.work("attention", "attention", flops, moved, pr.base_dtype, 1, count)
    return ops + [pr.measured(op, "attention_prefill", pr.base_dtype, tokens=new, head_dim=d)]


def _attention_mla(pr: _Pricer, phase: str, m: float, seqs: int, new: int, prior: int,
                   count: int) -> list[Op]:
    """MLA: decode absorbs W_UK/W_UV into per-head products over the latent cache (MQA-like);
    prefill expands the latent to per-head K/V with kv_b_proj and runs causal MHA."""
    s, b, kvb = pr.spec, pr.p.base_bytes, pr.p.kv_bytes
    hq = s.num_attention_heads / pr.tp
    r, rope, nope, dv = s.kv_lora_rank, s.qk_rope_head_dim, s.qk_nope_head_dim, s.v_head_dim
    ops = [pr.elementwise("mla_norms+rope+kv_write",
                          m * 2 * (s.q_lora_rank + r) * b + m * (hq + 1) * rope * 2 * b
                          + m * (r + rope) * kvb, 4, count)]
    if phase == "decode":
        ctx = prior + new
        # W_UK and W_UV run in the base dtype (engines dequantize kv_b_proj to absorb it)
        ops.append(pr.work("mla_absorb_uk", "attention", 2.0 * m * hq * nope * r,
                           hq * nope * r * b + m * hq * (nope + r) * b, pr.base_dtype, 1, count))
        flops = 2.0 * seqs * ctx * hq * (r + rope) + 2.0 * seqs * ctx * hq * r
        moved = seqs * ctx * (r + rope) * kvb + m * hq * (2 * r + rope) * b
        ops.append(pr.work("attention", "attention", flops, moved, pr.base_dtype, 1, count))
        ops.append(pr.work("mla_absorb_uv", "attention", 2.0 * m * hq * r * dv,
                           hq * r * dv * b + m * hq * (r + dv) * b, pr.base_dtype, 1, count))
    else:
        span = prior + (new + 1) / 2.0
        ops.append(pr.gemm("kv_b_proj", m + seqs * prior, r, hq * (nope + dv), True, count))
        dq = nope + rope
        flops = 2.0 * seqs * hq * (dq + dv) * new * span
        moved = seqs * (prior + new) * hq * (dq + dv) * b + m * hq * (dq + dv) * b
        ops.append(pr.work("attention", "attention", flops, moved, pr.base_dtype, 1, count))
    return ops


def _moe_ops(pr: _Pricer, m: float, count: int) -> tuple[list[Op], float]:
    s, b = pr.spec, pr.p.base_bytes
    wb = pr.p.weight_bytes
    e, k = s.num_experts, s.experts_per_token
    ie = s.moe_intermediate_size / pr.tp
    h = s.hidden_size
    loaded = expected_experts_loaded(e, k, m)
    pairs = m * k
    per_expert = pairs / loaded if loaded > 0 else 1.0  # rows each loaded expert multiplies
    ops = [pr.gemm("router", m, h, e, False, count, group="moe"),
           pr.elementwise("topk+align", m * e * 4 + pairs * 8, 2, count),
           pr.measured(pr.work("experts.gate_up", "moe", 2.0 * pairs * h * 2 * ie,
                               loaded * h * 2 * ie * wb + pairs * (h + 2 * ie) * b,
                               pr.gemm_dtype, 1, count),
                       "moe", pr.gemm_dtype, tokens_per_expert=per_expert),
           pr.elementwise("experts.act", pairs * 3 * ie * b, 1, count),
           pr.measured(pr.work("experts.down", "moe", 2.0 * pairs * ie * h,
                               loaded * ie * h * wb + pairs * (ie + h) * b, pr.gemm_dtype, 1,
                               count),
                       "moe", pr.gemm_dtype, tokens_per_expert=per_expert),
           pr.elementwise("experts.combine", pairs * h * b + m * h * b, 1, count)]
    if s.num_shared_experts:
        si = s.num_shared_experts * s.moe_intermediate_size / pr.tp
        ops += [pr.gemm("shared.gate_up", m, h, 2 * si, True, count),
                pr.elementwise("shared.act", m * 3 * si * b, 1, count),
                pr.gemm("shared.down", m, si, h, True, count)]
    return ops, loaded


def _layer_ops(pr: _Pricer, kind: str, phase: str, m: float, seqs: int, new: int, prior: int,
               count: int) -> tuple[list[Op], float | None]:
    """Ops of `count` identical layers processing m tokens (seqs sequences x new tokens)."""
    s, b = pr.spec, pr.p.base_bytes
    attn = _fused_gemms(pr, kind, m, count, ("attention",), skip=("kv_b_proj",) if s.is_mla else ())
    # two fused residual-add + RMSNorm kernels: each reads x and the residual, writes both
    ops: list[Op] = [pr.elementwise("norms+residual", m * 8 * s.hidden_size * b, 2, count)]
    ops += [g for name, g in attn.items() if name != "o_proj"]
    attention = _attention_mla if s.is_mla else _attention_standard
    ops += attention(pr, phase, m, seqs, new, prior, count)
    ops.append(attn["o_proj"])
    loaded = None
    if kind == "moe":
        moe, loaded = _moe_ops(pr, m, count)
        ops += moe
    else:
        mlp = _fused_gemms(pr, kind, m, count, ("mlp",))
        i = s.intermediate_size / pr.tp
        ops += [mlp["gate_up_proj"], pr.elementwise("act", m * 3 * i * b, 1, count),  # silu(g)*u
                mlp["down_proj"]]
    return ops, loaded


def _edge_ops(pr: _Pricer, m: float, sampled: float) -> tuple[list[Op], list[Op]]:
    """(first-stage ops, last-stage ops): embedding; final norm, LM head and sampling."""
    s, b = pr.spec, pr.p.base_bytes
    h, v = s.hidden_size, s.vocab_size / pr.tp
    first = [pr.elementwise("embedding", 2 * m * h * b, 1, 1)]  # gather a row, write it
    if sampled <= 0:  # a prefill chunk that ends no prompt never reaches the LM head
        return first, []
    last = [pr.elementwise("final_norm", 2 * sampled * h * b, 1, 1),
            pr.gemm("lm_head", sampled, h, v, False, 1, group="lm_head"),
            # fp32 logits written, then read by softmax/top-k/sample
            pr.elementwise("sampling", 2 * sampled * v * LOGIT_BYTES, 2, 1)]
    return first, last


def _allreduce(pr: _Pricer, m: float, layers: int) -> tuple[Op | None, str, str]:
    if pr.tp <= 1 or layers <= 0:
        return None, "n/a", ""
    allreduce = pr.engine.tp_allreduce if pr.engine is not None else tp_allreduce_time
    est = allreduce(pr.spec.hidden_size, int(math.ceil(m)), pr.p.base, pr.tp, pr.hw.profile)
    if est.source == "none" or not math.isfinite(est.time_s):
        raise RidgelineError(f"TP={pr.tp} needs an all-reduce time, but the profile of "
                             f"{pr.hw.name} has no all-reduce or host-link measurement "
                             f"({est.detail})")
    op = Op("allreduce", "allreduce", est.time_s, "communication", 2, 0.0,
            2 * m * pr.spec.hidden_size * pr.p.base_bytes, layers)
    return op, est.source, est.detail


def _stage_ops(pr: _Pricer, phase: str, m: float, seqs: int, new: int, prior: int, sampled: float,
               stage: int, pp: int) -> tuple[list[Op], float | None, str, str]:
    layers = stage_layers(pr.spec, stage, pp)
    ops: list[Op] = []
    loaded = None
    for kind, n in layers.items():
        if n:
            lops, ld = _layer_ops(pr, kind, phase, m, seqs, new, prior, n)
            ops += lops
            loaded = ld if ld is not None else loaded
    first, last = _edge_ops(pr, m, sampled)
    if stage == 0:
        ops += first
    if stage == pp - 1:
        ops += last
    ar, source, detail = _allreduce(pr, m, sum(layers.values()))
    if ar:
        ops.append(ar)
    return ops, loaded, source, detail


def _summarize(ops: list[Op]) -> tuple[dict[str, float], dict[str, float], int]:
    breakdown: dict[str, float] = {}
    by_bound = {b: 0.0 for b in BOUNDS}
    kernels = 0
    for op in ops:
        breakdown[op.group] = breakdown.get(op.group, 0.0) + op.total_s
        by_bound[op.bound] = by_bound.get(op.bound, 0.0) + op.total_s
        kernels += op.kernels * op.count
    return breakdown, by_bound, kernels


def _inter_node_GBps(hw: Hardware) -> tuple[float, str]:
    inter = hw.profile.get("interconnect") or {}
    v = inter.get("inter_node_GBps")
    if isinstance(v, (int, float)) and v > 0:
        return float(v), "measured"
    return DEFAULT_INTER_NODE_GBPS, "assumed"


def _step(spec: ModelSpec, precision: Precision, hw: Hardware, phase: str, m: float, seqs: int,
          new: int, prior: int, sampled: float, tp: int, pp: int, microbatches: int,
          engine: EngineProfile | None = None) -> StepTime:
    """One pass of m tokens through all PP stages, as a GPipe schedule of `microbatches`;
    an engine adds its per-step overhead once per pipeline slot (sizing.engine)."""
    pr = _Pricer(spec, precision, hw, tp, engine)
    mb = max(1, min(microbatches, int(math.ceil(m)))) if pp > 1 else 1
    um, useqs, usampled = m / mb, max(1, int(math.ceil(seqs / mb))), sampled / mb
    stage_times, all_ops, notes = [], [], []
    loaded, source, detail = None, "n/a", ""
    for stage in range(pp):
        ops, ld, src, det = _stage_ops(pr, phase, um, useqs, new, prior, usampled, stage, pp)
        loaded = ld if ld is not None else loaded
        if src != "n/a":
            source, detail = src, det
        stage_times.append(sum(op.total_s for op in ops))
        all_ops.append(ops)
    worst = max(range(pp), key=lambda i: stage_times[i])
    ops = all_ops[worst]
    if pp > 1:
        bw, how = _inter_node_GBps(hw)
        xfer = um * spec.hidden_size * precision.base_bytes / (bw * 1e9)
        ops = ops + [Op("pp_transfer", "pp", xfer, "communication", 0, 0.0,
                        um * spec.hidden_size * precision.base_bytes, 1)]
        notes.append(f"PP={pp}: {mb} micro-batches, stage transfer over a {how} "
                     f"{bw:g} GB/s link, bubble {(pp - 1) / (mb + pp - 1):.0%} (field guide §5.2)")
    if engine is not None and engine.step_overhead_us:
        # scheduler, sampling bookkeeping, Python between steps: no kernel, GPU idle
        ops = ops + [Op("engine_step", "engine", engine.step_overhead_s, "latency", 0, 0.0, 0.0,
                        1)]
    stage_s = sum(op.total_s for op in ops)
    slots = mb + pp - 1 if pp > 1 else 1
    breakdown, by_bound, kernels = _summarize(ops)
    if slots != 1:
        breakdown = {k: v * slots for k, v in breakdown.items()}
        by_bound = {k: v * slots for k, v in by_bound.items()}
    total = stage_s * slots
    bound = max(by_bound, key=lambda k: by_bound[k])
    if source in ("estimated", "datasheet"):
        notes.append(f"all-reduce {source}, not measured: {detail}")
    for curve, where in sorted(pr.extrapolated.items()):
        notes.append(f"{CURVES[curve].what} efficiency held at its measured edge beyond the "
                     f"shapes it was measured at: {'; '.join(sorted(where))}")
    if loaded is not None:
        notes.append(f"MoE: {loaded:.1f} of {spec.num_experts} experts loaded per layer "
                     f"(expected, uniform routing) for {um:.0f} token{'s' if um != 1 else ''}")
    flops = sum(op.flops * op.count for op in ops) * slots
    moved = sum(op.bytes * op.count for op in ops) * slots
    return StepTime(total, bound, breakdown, notes, ops, kernels * slots,
                    kernels * slots * pr.floor_s, by_bound,
                    breakdown.get("allreduce", 0.0), source, flops, moved, int(math.ceil(m)),
                    loaded, (pp - 1) / (mb + pp - 1) if pp > 1 else 0.0)


def decode_step_time(spec: ModelSpec, precision: Precision, hw: Hardware, batch: int,
                     context_tokens: int, tp: int = 1, pp: int = 1,
                     microbatches: int | None = None, *,
                     engine: EngineProfile | None = None) -> StepTime:
    """One decode step: `batch` sequences each add one token after `context_tokens` cached.

    ITL = this step's time (without prefill interference; see sizing.serving). `engine`:
    the serving engine's layer (sizing.engine), None for the hardware alone.
    """
    if batch < 1 or context_tokens < 0:
        raise RidgelineError("decode needs batch >= 1 and context >= 0 tokens")
    return _step(spec, precision, hw, "decode", float(batch), batch, 1, int(context_tokens),
                 float(batch), tp, pp, microbatches or pp, engine)


def prefill_time(spec: ModelSpec, precision: Precision, hw: Hardware, batch: int, input_tokens: int,
                 tp: int = 1, pp: int = 1, max_batched_tokens: int | None = None, *,
                 engine: EngineProfile | None = None) -> StepTime:
    """Prefill of `batch` prompts of `input_tokens` each, in passes of <= max_batched_tokens.

    Prompts that fit are packed whole into passes; longer prompts are chunked, chunk i
    attending to the i x chunk tokens before it. Only the last token of each prompt
    reaches the LM head. Passes run one after another; under PP they are the
    pipeline's micro-batches: total = sum of stage times + (PP - 1) x the last one's.
    TTFT of a lone request = prefill_time(1, S) (the first token comes out of it).
    """
    if batch < 1 or input_tokens < 1:
        raise RidgelineError("prefill needs batch >= 1 and input >= 1 token")
    budget = int(max_batched_tokens or DEFAULT_MAX_BATCHED_TOKENS)
    parts: list[tuple[StepTime, int]] = []
    if input_tokens <= budget:
        per_pass = max(1, min(batch, budget // input_tokens))
        full, rem = divmod(batch, per_pass)
        for n, count in ((per_pass, full), (rem, 1 if rem else 0)):
            if count:
                parts.append((_step(spec, precision, hw, "prefill", float(n * input_tokens), n,
                                    input_tokens, 0, float(n), tp, pp, 1, engine), count))
    else:
        full, last = divmod(input_tokens, budget)
        sizes = [budget] * full + ([last] if last else [])
        prior = 0
        for i, size in enumerate(sizes):
            sampled = 1.0 if i == len(sizes) - 1 else 0.0
            parts.append((_step(spec, precision, hw, "prefill", float(size), 1, size, prior,
                                sampled, tp, pp, 1, engine), batch))
            prior += size
    passes = sum(c for _, c in parts)
    # a pass alone through PP stages takes pp x its stage time; pipelined passes overlap
    total = sum(p.time_s / pp * c for p, c in parts) + (pp - 1) * parts[-1][0].time_s / pp
    out = _combine(parts, total)
    if passes > 1:
        out.notes.append(f"prefill in {passes} passes of at most {budget} tokens")
    if pp > 1:
        out.pp_bubble = (pp - 1) * parts[-1][0].time_s / pp / total
        out.notes = [n for n in out.notes if not n.startswith(f"PP={pp}:")]
        out.notes.append(f"PP={pp}: {passes} passes pipelined over {pp} stages, bubble "
                         f"{out.pp_bubble:.0%} (field guide §5.2)")
    return out


def _combine(parts: list[tuple[StepTime, int]], total: float) -> StepTime:
    """Passes run in sequence (each `count` times), rescaled to `total` when pipelined."""
    t = sum(p.time_s * c for p, c in parts)
    scale = total / t if t > 0 else 1.0
    breakdown: dict[str, float] = {}
    by_bound: dict[str, float] = {}
    for p, c in parts:
        for k, v in p.breakdown.items():
            breakdown[k] = breakdown.get(k, 0.0) + v * c * scale
        for k, v in p.by_bound.items():
            by_bound[k] = by_bound.get(k, 0.0) + v * c * scale
    first = parts[0][0]
    notes: list[str] = []
    for p, _ in parts:
        notes += [n for n in p.notes if n not in notes]
    return StepTime(total, max(by_bound, key=lambda k: by_bound[k]), breakdown, notes,
                    first.ops, sum(p.kernels * c for p, c in parts),
                    sum(p.floor_s * c for p, c in parts), by_bound,
                    breakdown.get("allreduce", 0.0), first.allreduce_source,
                    sum(p.flops * c for p, c in parts), sum(p.bytes * c for p, c in parts),
                    sum(p.tokens * c for p, c in parts), first.experts_loaded, 0.0)
