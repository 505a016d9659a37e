"""Memory, the capacity axis: weights, KV cache, activations, LoRA adapters, GPU count.

Equations (bytes; GB = 1e9):

    weights        = quantized params x weight bytes (+ int4 scales) + other params x base bytes
                     (field guide §2.1), resident = weights x (1 + allocator allowance) (§2.1's
                     alignment tax, 3-8%)
    KV per token   = 2 x layers x kv_heads x head_dim x kv bytes            (§2.2)
                     MLA: (kv_lora_rank + qk_rope_head_dim) x layers x kv bytes
    KV             = concurrency x context tokens x KV per token            (§2.2)
                     (context rounded up to whole KV blocks, capped by a sliding window)
    activations    = tokens per forward x per-token live bytes of the widest layer
                     + sampled logits (fp32), or the rule of thumb fraction x weights (§2.3)
    LoRA           = adapters resident x rank x (K + N) x bytes, over the adapted matrices (§2.5)
    usable per GPU = engine memory fraction x GPU memory (the rest: framework overhead, §2.4)
    min GPUs       = ceil(total / usable per GPU)                           (§2.6)
    recommended    = ceil(total x (1 + headroom) / usable per GPU)         (§2.6, on headroom)

Per GPU under TP x PP (`replica_memory`): column-parallel matrices split their
outputs, row-parallel their inputs, KV heads split until each rank holds one
(then replicate), the embedding and LM head are vocab-parallel, MLA's latent KV
and its replicated down-projections are held whole on every TP rank, and PP
stages hold contiguous blocks of layers (the worst stage is reported).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from ridgeline.errors import RidgelineError
from ridgeline.sizing.models import Matrix, ModelSpec
from ridgeline.sizing.options import check, option
from ridgeline.sizing.precision import Precision, dtype_bytes

LOGIT_BYTES = 4  # logits are sampled in fp32


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Engine (vLLM-like defaults)."""

    memory_fraction: float = option(0.90, "usable share of GPU memory for the engine (vLLM "
                                          "gpu_memory_utilization)")
    allocator_allowance: float = option(0.05, "resident weights above the count (field guide "
                                              "§2.1: 0.03-0.08)")
    max_batched_tokens: int = option(8192, "tokens per forward pass, the chunked-prefill budget "
                                           "(vLLM max_num_batched_tokens)")
    max_num_seqs: int = option(256, "most sequences a replica runs at once: caps its "
                                    "concurrency and sizes the sampled logits (vLLM "
                                    "max_num_seqs)")
    kv_block_tokens: int = option(16, "paged KV block size in tokens")
    activation_fraction: float | None = option(None, "activations as a fraction of weights "
                                                     "(field guide §2.3 rule of thumb: 0.2) "
                                                     "instead of the estimate")
    lora_adapters: int = option(0, "LoRA adapters resident at once")
    lora_rank: int = option(16, "LoRA rank")
    lora_targets: str = option("all", "LoRA-adapted matrices: attention, or all (attention + "
                                      "MLP)")

    def __post_init__(self) -> None:
        check(self, "in (0, 1]", "memory_fraction")
        check(self, ">= 0", "allocator_allowance", "activation_fraction")
        check(self, "a positive whole number", "max_batched_tokens", "max_num_seqs",
              "kv_block_tokens", "lora_rank")
        check(self, "a whole number >= 0", "lora_adapters")
        if self.lora_targets not in ("attention", "all"):
            raise RidgelineError(f"--lora-targets must be attention or all, got "
                                 f"{self.lora_targets!r}")


# the defaults under their old names, for importers (the field above is their one home)
DEFAULT_MAX_BATCHED_TOKENS = EngineConfig.max_batched_tokens
DEFAULT_MAX_NUM_SEQS = EngineConfig.max_num_seqs
DEFAULT_KV_BLOCK_TOKENS = EngineConfig.kv_block_tokens


# -- per-matrix sharding -----------------------------------------------------------------------

def _rank_shape(m: Matrix, spec: ModelSpec, tp: int) -> tuple[float, float]:
    """(K, N) of one rank's shard of `m` under TP degree `tp`."""
    if m.split == "column":
        return m.k, m.n / tp
    if m.split == "row":
        return m.k / tp, m.n
    if m.split == "kv_heads":  # KV heads split until one per rank, then replicated
        return m.k, m.n / min(tp, spec.num_kv_heads)
    if m.split == "vocab":
        return m.k / tp, m.n
    return m.k, m.n  # replicated


def rank_params(m: Matrix, spec: ModelSpec, tp: int) -> float:
    k, n = _rank_shape(m, spec, tp)
    bias = n if m.bias else 0.0
    return m.copies * (k * n + bias)


def matrix_bytes(m: Matrix, precision: Precision, params: float) -> float:
    return params * (precision.weight_bytes if m.quantized else precision.base_bytes)


# -- weights -----------------------------------------------------------------------------------

@lru_cache(maxsize=1024)
def layer_weight_bytes(spec: ModelSpec, precision: Precision, kind: str, tp: int = 1) -> float:
    """Bytes of one layer's weights on one TP rank (norms replicated, in the base dtype)."""
    mats = spec.layer_matrices(kind)
    return sum(matrix_bytes(m, precision, rank_params(m, spec, tp)) for m in mats) + \
        spec.layer_norm_params() * precision.base_bytes


def weight_bytes(spec: ModelSpec, precision: Precision) -> float:
    """All weights of the model (field guide §2.1), before the allocator allowance."""
    return _exact(stage_weight_bytes(spec, precision, 0, 1, tp=1))


def weight_breakdown(spec: ModelSpec, precision: Precision) -> dict[str, float]:
    """Weight bytes by component (whole model): quantized linear layers vs base-dtype parts."""
    out = {"quantized_linear": 0.0, "base_dtype_linear": 0.0, "norms": 0.0,
           "embedding_and_head": 0.0}
    for kind, n in spec.layer_kinds():
        for m in spec.layer_matrices(kind):
            key = "quantized_linear" if m.quantized else "base_dtype_linear"
            out[key] += n * matrix_bytes(m, precision, m.params)
        out["norms"] += n * spec.layer_norm_params() * precision.base_bytes
    out["norms"] += spec.hidden_size * precision.base_bytes
    out["embedding_and_head"] = sum(m.params for m in spec.edge_matrices()) * precision.base_bytes
    return out


def stage_layers(spec: ModelSpec, stage: int, pp: int) -> dict[str, int]:
    """{"dense": n, "moe": n}: layers held by PP stage `stage` of `pp` (contiguous, near-equal)."""
    lo = round(stage * spec.num_layers / pp)
    hi = round((stage + 1) * spec.num_layers / pp)
    dense_end = spec.num_dense_layers if spec.is_moe else spec.num_layers
    dense = max(0, min(hi, dense_end) - lo)
    return {"dense": dense, "moe": (hi - lo) - dense}


def stage_weight_bytes(spec: ModelSpec, precision: Precision, stage: int, pp: int,
                       tp: int) -> float:
    """Weight bytes on one GPU of PP stage `stage` (TP rank shard; edges on the edge stages)."""
    layers = stage_layers(spec, stage, pp)
    total = sum(n * layer_weight_bytes(spec, precision, kind, tp)
                for kind, n in layers.items() if n)
    for m in spec.edge_matrices():
        on_stage = (stage == 0) if m.group == "embedding" else (stage == pp - 1)
        if on_stage:
            total += matrix_bytes(m, precision, rank_params(m, spec, tp))
    if stage == pp - 1:
        total += spec.hidden_size * precision.base_bytes  # final norm
    if spec.tie_word_embeddings and pp > 1 and stage == pp - 1:
        # a tied head still needs the (vocab-parallel) matrix on the last stage
        total += spec.vocab_size * spec.hidden_size / tp * precision.base_bytes
    return total


# -- KV cache ----------------------------------------------------------------------------------

def kv_bytes_per_token(spec: ModelSpec, kv_dtype: str | Precision) -> float:
    """KV cache bytes per token of context for the whole model (field guide §2.2).

    Standard/GQA: 2 (K and V) x layers x kv_heads x head_dim x bytes.
    MLA: (kv_lora_rank + qk_rope_head_dim) x layers x bytes (one latent vector per layer).
    """
    b = kv_dtype.kv_bytes if isinstance(kv_dtype, Precision) else dtype_bytes(kv_dtype)
    return _exact(kv_elements_per_token_layer(spec, 1) * spec.num_layers * b)


def _exact(x: float) -> float:
    """Whole byte counts as ints (they print and compare exactly)."""
    return int(x) if float(x).is_integer() else x


def kv_elements_per_token_layer(spec: ModelSpec, tp: int = 1) -> float:
    """KV elements one TP rank stores per token per layer."""
    if spec.is_mla:
        return spec.kv_lora_rank + spec.qk_rope_head_dim  # latent, held whole on every rank
    return 2 * spec.head_dim * spec.num_kv_heads / min(tp, spec.num_kv_heads)


def kv_tokens_per_request(spec: ModelSpec, context_tokens: int, block_tokens: int = 1) -> int:
    """Tokens of KV one request holds: context capped by a sliding window, in whole blocks."""
    tokens = min(context_tokens, spec.sliding_window) if spec.sliding_window else context_tokens
    block = max(1, int(block_tokens))
    return int(math.ceil(tokens / block) * block)


def kv_cache_bytes(spec: ModelSpec, precision: Precision, concurrency: int, context_tokens: int,
                   block_tokens: int = 1) -> float:
    """KV of `concurrency` requests at `context_tokens` each (field guide §2.2)."""
    return concurrency * kv_tokens_per_request(spec, context_tokens, block_tokens) * \
        kv_bytes_per_token(spec, precision)


# -- activations and LoRA ----------------------------------------------------------------------

@lru_cache(maxsize=256)
def activation_bytes_per_token(spec: ModelSpec, precision: Precision, tp: int = 1) -> float:
    """Live activation bytes per token at the widest point of one layer (inference: no autograd).

    residual + normed input (2h), plus the larger of
      attention: q/k/v outputs + attention output (MLA prefill: q, latent, expanded K/V, output)
      MLP: gate/up output (2 I/tp) + activated product (I/tp);  MoE: k routed copies of the
           token (h) with their expert gate/up/activation (3 I_e/tp), + shared experts, + router
    """
    h, b = spec.hidden_size, precision.base_bytes
    hq = spec.num_attention_heads / tp
    if spec.is_mla:
        dq = spec.qk_nope_head_dim + spec.qk_rope_head_dim
        attn = (hq * dq + spec.kv_lora_rank + spec.qk_rope_head_dim
                + hq * (spec.qk_nope_head_dim + spec.v_head_dim) + hq * dq + hq * spec.v_head_dim)
    else:
        hkv = spec.num_kv_heads / min(tp, spec.num_kv_heads)
        attn = (hq + 2 * hkv) * spec.head_dim + hq * spec.head_dim
    mlp = 3 * spec.intermediate_size / tp if spec.num_dense_layers else 0.0
    if spec.is_moe:
        moe = spec.experts_per_token * (h + 3 * spec.moe_intermediate_size / tp) + \
            3 * spec.num_shared_experts * spec.moe_intermediate_size / tp + spec.num_experts
        mlp = max(mlp, moe)
    return b * (2 * h + max(attn, mlp))


def activation_bytes(spec: ModelSpec, precision: Precision, engine: EngineConfig, tp: int = 1,
                     weights_on_gpu: float | None = None) -> float:
    """Peak activations of one forward pass on one GPU (field guide §2.3).

    Estimate: max_batched_tokens x activation_bytes_per_token + sampled logits
    (min(max_num_seqs, tokens) x vocab/tp x 4 bytes). With `activation_fraction`
    set, the §2.3 rule of thumb instead: fraction x the weights on that GPU.
    """
    if engine.activation_fraction is not None:
        w = weights_on_gpu if weights_on_gpu is not None else weight_bytes(spec, precision) / tp
        return engine.activation_fraction * w
    tokens = engine.max_batched_tokens
    logits = min(engine.max_num_seqs, tokens) * spec.vocab_size / tp * LOGIT_BYTES
    return tokens * activation_bytes_per_token(spec, precision, tp) + logits


def lora_targets(spec: ModelSpec, targets: str) -> list[tuple[Matrix, int]]:
    """(matrix, layers) pairs a LoRA adapter adapts: attention, or attention + dense MLPs."""
    out: list[tuple[Matrix, int]] = []
    for kind, n in spec.layer_kinds():
        for m in spec.layer_matrices(kind):
            if m.group == "attention" or (targets == "all" and m.group in ("mlp", "shared_expert")):
                out.append((m, n))
    return out


@lru_cache(maxsize=256)
def lora_adapter_bytes(spec: ModelSpec, precision: Precision, rank: int, targets: str = "all",
                       tp: int = 1) -> float:
    """One adapter on one GPU: per adapted (K, N) matrix, A (K x r) and B (r x N) (§2.5).

    Under TP the side that follows the base matrix's split is sharded (column: B, row: A).
    """
    total = 0.0
    for m, layers in lora_targets(spec, targets):
        k, n = _rank_shape(m, spec, tp)
        if m.split == "column" or m.split == "kv_heads":
            params = rank * (m.k + n)
        elif m.split == "row":
            params = rank * (k + m.n)
        else:
            params = rank * (m.k + m.n)
        total += layers * params
    return total * precision.base_bytes


# -- capacity ----------------------------------------------------------------------------------

@dataclass
class ReplicaMemory:
    """Memory of the worst GPU of one replica at TP x PP (bytes)."""

    tp: int
    pp: int
    gpu_memory_bytes: float
    usable_bytes: float
    weights_bytes: float           # resident, allowance included
    activations_bytes: float
    lora_bytes: float
    kv_bytes_per_request: float    # on this GPU, at the p95 context
    concurrency: int
    kv_bytes: float
    max_concurrency: int           # requests at p95 context that fit

    @property
    def fixed_bytes(self) -> float:
        return self.weights_bytes + self.activations_bytes + self.lora_bytes

    @property
    def total_bytes(self) -> float:
        return self.fixed_bytes + self.kv_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.usable_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(total_bytes=self.total_bytes, fits=self.fits)
        return d


def replica_memory(spec: ModelSpec, precision: Precision, engine: EngineConfig,
                   gpu_memory_bytes: float, tp: int, pp: int, concurrency: int,
                   context_tokens: int) -> ReplicaMemory:
    """Per-GPU memory of one replica (the worst PP stage) holding `concurrency` requests."""
    usable = engine.memory_fraction * gpu_memory_bytes
    tokens = kv_tokens_per_request(spec, context_tokens, engine.kv_block_tokens)
    worst: ReplicaMemory | None = None
    for stage in range(pp):
        w = stage_weight_bytes(spec, precision, stage, pp, tp)
        layers = sum(stage_layers(spec, stage, pp).values())
        act = activation_bytes(spec, precision, engine, tp, weights_on_gpu=w)
        lora = engine.lora_adapters * layers / spec.num_layers * lora_adapter_bytes(
            spec, precision, engine.lora_rank, engine.lora_targets, tp)
        kv_req = tokens * kv_elements_per_token_layer(spec, tp) * layers * precision.kv_bytes
        fixed = w * (1 + engine.allocator_allowance) + act + lora
        cap = int((usable - fixed) // kv_req) if kv_req > 0 and usable > fixed else 0
        rm = ReplicaMemory(tp, pp, gpu_memory_bytes, usable, w * (1 + engine.allocator_allowance),
                           act, lora, kv_req, concurrency, concurrency * kv_req, max(cap, 0))
        if worst is None or (rm.max_concurrency, -rm.total_bytes) < (worst.max_concurrency,
                                                                     -worst.total_bytes):
            worst = rm  # the stage that holds the fewest requests (then the fullest)
    assert worst is not None
    return worst


@dataclass
class MemoryPlan:
    """The pooled memory floor of field guide §2.6 (activations and overhead counted once)."""

    weights_bytes: float
    weights_resident_bytes: float
    weights_detail: dict[str, float]
    kv_bytes_per_token: float
    context_tokens: int
    kv_tokens_per_request: int
    concurrency: int
    kv_bytes: float
    activations_bytes: float
    activations_method: str
    lora_bytes: float
    total_bytes: float
    gpu_memory_bytes: float
    memory_fraction: float
    usable_bytes_per_gpu: float
    overhead_bytes_per_gpu: float
    min_gpus: int
    headroom: float
    recommended_gpus: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def memory_plan(spec: ModelSpec, precision: Precision, engine: EngineConfig,
                gpu_memory_bytes: float, concurrency: int, context_tokens: int,
                headroom: float) -> MemoryPlan:
    """Total memory for `concurrency` requests at `context_tokens` and the GPU counts (§2.6)."""
    w = weight_bytes(spec, precision)
    resident = w * (1 + engine.allocator_allowance)
    per_tok = kv_bytes_per_token(spec, precision)
    tokens = kv_tokens_per_request(spec, context_tokens, engine.kv_block_tokens)
    kv = _exact(concurrency * tokens * per_tok)
    act = activation_bytes(spec, precision, engine, tp=1, weights_on_gpu=w)
    lora = engine.lora_adapters * lora_adapter_bytes(spec, precision, engine.lora_rank,
                                                     engine.lora_targets, tp=1)
    total = resident + kv + act + lora
    usable = engine.memory_fraction * gpu_memory_bytes
    notes = []
    if spec.sliding_window and context_tokens > spec.sliding_window:
        notes.append(f"sliding window: KV holds the last {spec.sliding_window} tokens per request")
    if tokens != min(context_tokens, spec.sliding_window or context_tokens):
        notes.append(f"KV rounded up to whole {engine.kv_block_tokens}-token blocks")
    method = (f"rule of thumb: {engine.activation_fraction:g} x weights (field guide §2.3)"
              if engine.activation_fraction is not None else
              f"estimate: {engine.max_batched_tokens} tokens per forward pass x per-token live "
              "bytes + fp32 logits")
    return MemoryPlan(
        weights_bytes=w, weights_resident_bytes=resident,
        weights_detail=weight_breakdown(spec, precision),
        kv_bytes_per_token=per_tok, context_tokens=context_tokens, kv_tokens_per_request=tokens,
        concurrency=concurrency, kv_bytes=kv, activations_bytes=act, activations_method=method,
        lora_bytes=lora, total_bytes=total, gpu_memory_bytes=gpu_memory_bytes,
        memory_fraction=engine.memory_fraction, usable_bytes_per_gpu=usable,
        overhead_bytes_per_gpu=gpu_memory_bytes - usable,
        min_gpus=int(math.ceil(total / usable)),
        headroom=headroom, recommended_gpus=int(math.ceil(total * (1 + headroom) / usable)),
        notes=notes)
