"""Bytes the validation model needs on the device, counted from a ModelSpec before allocating.

Pure Python (no torch): `ridgeline validate` decides from these counts how many
decoder layers fit beside the KV cache, and skips what cannot fit, before it
touches device memory.

Per decoder layer (H heads, G KV heads, d head_dim, h hidden, I intermediate):

    weight_bytes_per_layer = (h*(H+2G)*d + H*d*h + h*2I + I*h) * w + 2*h*a
                             (QKV, O, gate+up, down at weight width w; two norms at width a)
    kv_bytes_per_layer     = 2 * batch * G * tokens * d * a
    head_bytes             = vocab*h*a (embedding) + vocab*h*a (LM head, unless tied) + h*a

w = 1 byte for fp8 (plus two fp32 scales per linear), 2 for bf16/fp16, 4 for fp32;
a = 4 for fp32 weights, else 2 (the KV cache and activations stay 16-bit): the
widths of `act_dtype(weights)`, from ridgeline.dtypes.
`workspace_bytes` bounds the transient activations of one step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ridgeline.dtypes import bytes_per_element, find, planner_name
from ridgeline.errors import RidgelineError

WEIGHT_KINDS = ("bf16", "fp16", "fp8", "fp32")
# the formats the validation model runs: its fp8 weights are e4m3 (fnuz on MI300), never e5m2
_RUNS = WEIGHT_KINDS + ("fp8_e4m3", "fp8_e4m3fnuz")
LINEARS_PER_LAYER = 4  # QKV, O, gate+up, down (fused as serving engines do)


def normalize_weights(name: str) -> str:
    """"bf16" | "fp16" | "fp8" | "fp32" from a user's spelling; RidgelineError otherwise."""
    d = find(name)
    if d is None or d.name not in _RUNS:
        raise RidgelineError(f"unknown --weights {name!r}: use one of {', '.join(WEIGHT_KINDS)}")
    return planner_name(d.name)


def act_dtype(weights: str) -> str:
    """Activations, norms, embedding, LM head and the KV cache: fp16 or fp32 with such weights,
    else bf16."""
    return weights if weights in ("fp16", "fp32") else "bf16"


def weight_width_bytes(weights: str) -> int:
    return bytes_per_element(weights)


def act_width_bytes(weights: str) -> int:
    """Bytes of one element of act_dtype(weights): 4 only for fp32 weights, else 2."""
    return bytes_per_element(act_dtype(weights))


@dataclass(frozen=True)
class LayerDims:
    """The shapes of one dense decoder layer (and the model's head), from a ModelSpec."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    num_layers: int
    tied: bool = False

    @property
    def q_size(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def qkv_size(self) -> int:
        return self.q_size + 2 * self.kv_size

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(out_features, in_features) of QKV, O, gate+up, down."""
        return [(self.qkv_size, self.hidden), (self.hidden, self.q_size),
                (2 * self.intermediate, self.hidden), (self.hidden, self.intermediate)]

    def linear_params(self) -> int:
        return sum(o * i for o, i in self.linear_shapes())


def dims_from_spec(spec: Any, weights: str = "bf16") -> LayerDims:
    """LayerDims for a dense spec; RidgelineError (one line) for what validate cannot build."""
    if getattr(spec, "num_experts", 0):
        raise RidgelineError(f"{spec.name} is a mixture-of-experts model: `ridgeline validate` "
                             "supports dense models only (see docs/validation.md)")
    if getattr(spec, "kv_lora_rank", 0):
        raise RidgelineError(f"{spec.name} uses multi-head latent attention (MLA): "
                             "`ridgeline validate` supports dense GQA/MHA models only")
    d = LayerDims(hidden=int(spec.hidden_size), heads=int(spec.num_attention_heads),
                  kv_heads=int(spec.num_kv_heads), head_dim=int(spec.head_dim),
                  intermediate=int(spec.intermediate_size), vocab=int(spec.vocab_size),
                  num_layers=int(spec.num_layers),
                  tied=bool(getattr(spec, "tie_word_embeddings", False)))
    if min(d.hidden, d.heads, d.kv_heads, d.head_dim, d.intermediate, d.vocab, d.num_layers) < 1:
        raise RidgelineError(f"{spec.name}: every dimension must be positive")
    if d.heads % d.kv_heads:
        raise RidgelineError(f"{spec.name}: {d.heads} attention heads are not a multiple of "
                             f"{d.kv_heads} KV heads")
    if d.head_dim % 2:
        raise RidgelineError(f"{spec.name}: rotary embedding needs an even head_dim, "
                             f"got {d.head_dim}")
    if weights == "fp8":
        # torch._scaled_mm: K and N of every GEMM a multiple of 16
        bad = sorted({x for shape in d.linear_shapes() for x in shape if x % 16})
        if bad:
            raise RidgelineError(f"{spec.name}: fp8 weights need every GEMM dimension to be a "
                                 f"multiple of 16 (torch._scaled_mm); {bad} are not")
    return d


def weight_bytes_per_layer(d: LayerDims, weights: str) -> int:
    scales = 2 * 4 * LINEARS_PER_LAYER if weights == "fp8" else 0
    return (d.linear_params() * weight_width_bytes(weights)
            + 2 * d.hidden * act_width_bytes(weights) + scales)


def head_bytes(d: LayerDims, weights: str) -> int:
    """Embedding table, final norm and LM head (the same table when tied), at activation width."""
    a = act_width_bytes(weights)
    tables = 1 if d.tied else 2
    return tables * d.vocab * d.hidden * a + d.hidden * a


def kv_bytes_per_layer(d: LayerDims, weights: str, batch: int, tokens: int) -> int:
    return 2 * batch * d.kv_heads * tokens * d.head_dim * act_width_bytes(weights)


def workspace_bytes(d: LayerDims, weights: str, batch: int, q_tokens: int, kv_tokens: int, *,
                    gqa_native: bool = True, graph: bool = False) -> int:
    """Upper bound of the transient activations of one step (a CUDA graph keeps its own pool)."""
    a = act_width_bytes(weights)
    m = batch * q_tokens
    per_token = (d.hidden * (3 * a + 8)            # residual, normed copy, out; fp32 norm temps
                 + d.qkv_size * a + 2 * d.q_size * a  # QKV out, rotated q, attention out
                 + 2 * d.intermediate * a + 2 * d.intermediate * a)  # gate+up out, silu*up
    if weights == "fp8":
        per_token += max(d.hidden, d.intermediate, d.q_size) * (4 + 1)  # fp32 temp + e4m3 copy
    ws = m * per_token + batch * d.vocab * 4 * 2  # logits (and an fp32 copy)
    if not gqa_native and d.heads != d.kv_heads:
        ws += 2 * batch * d.heads * kv_tokens * d.head_dim * a  # K and V expanded to all heads
    if graph:
        ws *= 2  # the graph's private pool beside the eager warm-up's blocks
    return int(ws)


def step_bytes(d: LayerDims, weights: str, layers: int, batch: int, q_tokens: int, kv_tokens: int,
               *, gqa_native: bool = True, graph: bool = False) -> int:
    """Everything one measured point holds: `layers` layers' weights and KV, head, workspace."""
    return (layers * (weight_bytes_per_layer(d, weights)
                      + kv_bytes_per_layer(d, weights, batch, kv_tokens))
            + head_bytes(d, weights)
            + workspace_bytes(d, weights, batch, q_tokens, kv_tokens, gqa_native=gqa_native,
                              graph=graph))


def layers_that_fit(d: LayerDims, weights: str, budget_bytes: float, batch: int, q_tokens: int,
                    kv_tokens: int, *, max_layers: int, resident_layers: int | None = None,
                    gqa_native: bool = True, graph: bool = False) -> int:
    """The most layers (<= max_layers) whose KV cache fits beside the weights; 0 if none.

    With `resident_layers`, that many layers' weights are already allocated and
    only the KV cache and workspace of the measured layers come on top.
    """
    ws = workspace_bytes(d, weights, batch, q_tokens, kv_tokens, gqa_native=gqa_native, graph=graph)
    fixed = head_bytes(d, weights) + ws
    w = weight_bytes_per_layer(d, weights)
    kv = kv_bytes_per_layer(d, weights, batch, kv_tokens)
    if resident_layers is not None:
        fixed += resident_layers * w
        per_layer = kv
    else:
        per_layer = w + kv
    room = budget_bytes - fixed
    if room < per_layer:
        return 0
    return int(min(max_layers, room // per_layer))
