"""Model specs: the shapes an LLM's serving cost is computed from, read from a HF config.json.

    spec = load_model("llama-3.1-70b")          # bundled (ridgeline/data/models/<name>.json)
    spec = load_model("path/to/config.json")    # or a Hugging Face config (file or its folder)
    spec.param_count(), spec.active_param_count(), spec.layer_matrices("moe")

Every parameter is counted from the weight matrices the config implies (field
guide §2.1: weight memory = parameters x bytes per parameter), so the count and
the per-matrix GEMM shapes the latency model uses can never disagree:

    embedding V*h; lm_head V*h (none when tied); final norm h
    per layer, standard attention: q h*(Hq*d) + k, v h*(Hkv*d) + o (Hq*d)*h (+ q/k/v biases)
    per layer, MLA (DeepSeek):     q_a h*r_q + q_b r_q*Hq*(d_nope+d_rope)  (q h*Hq*(d_nope+d_rope)
                                   when r_q = 0) + kv_a h*(r_kv+d_rope) + kv_b r_kv*Hq*(d_nope+d_v)
                                   + o (Hq*d_v)*h + norms r_q + r_kv
    dense MLP 3*h*I (gate, up, down);  MoE: router h*E + E*3*h*I_e + shared S*3*h*I_e
    norms 2*h per layer

Active parameters per token (MoE) = total - (E - k) * 3*h*I_e per MoE layer: the
routed experts a token does not use (field guide §5.4: stored 671B, computed ~37B).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ridgeline.errors import RidgelineError
from ridgeline.sizing.options import option


@dataclass(frozen=True)
class Matrix:
    """One weight matrix of a layer: (K, N) = (in_features, out_features)."""

    name: str              # "q_proj", "gate_proj", "experts.gate_proj", ...
    k: int
    n: int
    group: str             # attention | mlp | expert | shared_expert | router | embedding | lm_head
    split: str             # TP: column (N split), row (K split), kv_heads, vocab, replicated
    kernel: str            # matrices with the same kernel name run as one fused GEMM (qkv, gate_up)
    quantized: bool = True  # held in the weight dtype (False: kept in the base dtype)
    bias: bool = False
    copies: int = 1        # routed experts: E copies of the same shape

    @property
    def params(self) -> int:
        return self.copies * (self.k * self.n + (self.n if self.bias else 0))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    # MoE (0 when dense): routed experts, experts per token, shared experts, expert FFN width,
    # leading dense layers (DeepSeek-V3: 3)
    num_experts: int = 0
    experts_per_token: int = 0
    num_shared_experts: int = 0
    moe_intermediate_size: int = 0
    first_dense_layers: int = 0
    # MLA (DeepSeek): latent KV size and decoupled rope dim; 0 when not MLA
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    q_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    # Additive fields (defaults keep the contract's constructor valid)
    attention_bias: bool = False       # biases on q, k, v (Qwen2)
    router_bias: bool = False          # DeepSeek-V3's e_score_correction_bias (E per MoE layer)
    sliding_window: int = 0            # KV kept per request is capped at this many tokens (0: none)
    max_position_embeddings: int = 0   # the context window (0: unknown)
    model_type: str = ""
    source: str = ""

    # -- structure ---------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.first_dense_layers if self.is_moe else 0

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    def layer_kinds(self) -> list[tuple[str, int]]:
        """[(kind, number of layers)]: "dense" and/or "moe" (DeepSeek-V3: 3 dense, 58 MoE)."""
        kinds = [("dense", self.num_dense_layers), ("moe", self.num_moe_layers)]
        return [(k, n) for k, n in kinds if n > 0]

    def attention_matrices(self) -> list[Matrix]:
        h, hq, hkv, d = self.hidden_size, self.num_attention_heads, self.num_kv_heads, self.head_dim
        if not self.is_mla:
            b = self.attention_bias
            return [Matrix("q_proj", h, hq * d, "attention", "column", "qkv_proj", bias=b),
                    Matrix("k_proj", h, hkv * d, "attention", "kv_heads", "qkv_proj", bias=b),
                    Matrix("v_proj", h, hkv * d, "attention", "kv_heads", "qkv_proj", bias=b),
                    Matrix("o_proj", hq * d, h, "attention", "row", "o_proj")]
        dq = self.qk_nope_head_dim + self.qk_rope_head_dim
        out = []
        if self.q_lora_rank:
            # vLLM fuses q_a and kv_a into one replicated GEMM (fused_qkv_a_proj)
            out += [Matrix("q_a_proj", h, self.q_lora_rank, "attention", "replicated",
                           "qkv_a_proj"),
                    Matrix("q_b_proj", self.q_lora_rank, hq * dq, "attention", "column",
                           "q_b_proj")]
        else:
            out += [Matrix("q_proj", h, hq * dq, "attention", "column", "q_proj")]
        out += [Matrix("kv_a_proj_with_mqa", h, self.kv_lora_rank + self.qk_rope_head_dim,
                       "attention", "replicated",
                       "qkv_a_proj" if self.q_lora_rank else "kv_a_proj"),
                Matrix("kv_b_proj", self.kv_lora_rank,
                       hq * (self.qk_nope_head_dim + self.v_head_dim),
                       "attention", "column", "kv_b_proj"),
                Matrix("o_proj", hq * self.v_head_dim, h, "attention", "row", "o_proj")]
        return out

    def mlp_matrices(self, kind: str) -> list[Matrix]:
        h = self.hidden_size
        if kind == "dense":
            i = self.intermediate_size
            return [Matrix("gate_proj", h, i, "mlp", "column", "gate_up_proj"),
                    Matrix("up_proj", h, i, "mlp", "column", "gate_up_proj"),
                    Matrix("down_proj", i, h, "mlp", "row", "down_proj")]
        e, ie = self.num_experts, self.moe_intermediate_size
        out = [Matrix("router", h, e, "router", "replicated", "router", quantized=False,
                      bias=self.router_bias),
               Matrix("experts.gate_proj", h, ie, "expert", "column", "experts.gate_up", copies=e),
               Matrix("experts.up_proj", h, ie, "expert", "column", "experts.gate_up", copies=e),
               Matrix("experts.down_proj", ie, h, "expert", "row", "experts.down", copies=e)]
        if self.num_shared_experts:
            s = self.num_shared_experts * ie
            out += [Matrix("shared.gate_proj", h, s, "shared_expert", "column", "shared.gate_up"),
                    Matrix("shared.up_proj", h, s, "shared_expert", "column", "shared.gate_up"),
                    Matrix("shared.down_proj", s, h, "shared_expert", "row", "shared.down")]
        return out

    def layer_matrices(self, kind: str = "dense") -> list[Matrix]:
        """Weight matrices of one transformer layer of `kind` ("dense" or "moe")."""
        return list(_layer_matrices(self, kind))

    def edge_matrices(self) -> list[Matrix]:
        """Embedding and LM head (vocab-parallel under TP; kept in the base dtype)."""
        h, v = self.hidden_size, self.vocab_size
        out = [Matrix("embed_tokens", v, h, "embedding", "vocab", "embedding", quantized=False)]
        if not self.tie_word_embeddings:
            out.append(Matrix("lm_head", h, v, "lm_head", "column", "lm_head", quantized=False))
        return out

    def layer_norm_params(self) -> int:
        """RMSNorm weights of one layer (two per layer; MLA adds the q_a and kv_a norms)."""
        extra = (self.q_lora_rank + self.kv_lora_rank) if self.is_mla else 0
        return 2 * self.hidden_size + extra

    # -- counts --------------------------------------------------------------------------------
    def param_count(self) -> int:
        """Total parameters (every expert counted)."""
        total = sum(m.params for m in self.edge_matrices()) + self.hidden_size  # + final norm
        for kind, n in self.layer_kinds():
            layer = sum(m.params for m in self.layer_matrices(kind)) + self.layer_norm_params()
            total += n * layer
        return total

    def inactive_expert_params_per_layer(self) -> int:
        """Routed-expert parameters one token does not touch in one MoE layer: (E - k)*3*h*I_e."""
        if not self.is_moe:
            return 0
        return (self.num_experts - self.experts_per_token) * 3 * self.hidden_size * \
            self.moe_intermediate_size

    def active_param_count(self, include_embedding: bool = True) -> int:
        """Parameters used per token: total minus the routed experts not selected.

        `include_embedding=False` leaves out the input embedding table (a row gather,
        not a GEMM): DeepSeek quotes activated parameters that way, Mistral with it.
        """
        active = self.param_count() - self.num_moe_layers * self.inactive_expert_params_per_layer()
        if not include_embedding:
            active -= self.vocab_size * self.hidden_size
        return active

    def summary(self) -> dict[str, Any]:
        out = {"name": self.name, "params": self.param_count(),
               "active_params": self.active_param_count(),
               "layers": self.num_layers, "hidden_size": self.hidden_size,
               "attention_heads": self.num_attention_heads, "kv_heads": self.num_kv_heads,
               "head_dim": self.head_dim, "attention": "MLA" if self.is_mla else (
                   "MHA" if self.num_kv_heads == self.num_attention_heads else "GQA"),
               "vocab_size": self.vocab_size,
               "context_window": self.max_position_embeddings or None}
        if self.is_moe:
            out["moe"] = {"experts": self.num_experts, "experts_per_token": self.experts_per_token,
                          "shared_experts": self.num_shared_experts,
                          "expert_intermediate_size": self.moe_intermediate_size,
                          "dense_layers": self.num_dense_layers}
        if self.is_mla:
            out["mla"] = {"kv_lora_rank": self.kv_lora_rank,
                          "qk_rope_head_dim": self.qk_rope_head_dim,
                          "q_lora_rank": self.q_lora_rank}
        if self.sliding_window:
            out["sliding_window"] = self.sliding_window
        return out


@lru_cache(maxsize=256)
def _layer_matrices(spec: ModelSpec, kind: str) -> tuple[Matrix, ...]:
    # cached: the latency model asks for the same layer many times per plan
    return tuple(spec.attention_matrices() + spec.mlp_matrices(kind))


# -- loading -----------------------------------------------------------------------------------

# Names that are not a bundled file: (bundled shapes, context window when it differs).
# Fine-tunes and re-releases of one architecture share its shapes exactly; Llama 3 and
# 3.1 differ only in the context window (8,192 vs 131,072 tokens).
_ALIASES: dict[str, tuple[str, int | None]] = {
    "llama-3-8b": ("llama-3.1-8b", 8192), "meta-llama-3-8b": ("llama-3.1-8b", 8192),
    "llama-3-70b": ("llama-3.1-70b", 8192), "meta-llama-3-70b": ("llama-3.1-70b", 8192),
    "meta-llama-3.1-8b": ("llama-3.1-8b", None), "meta-llama-3.1-70b": ("llama-3.1-70b", None),
    "meta-llama-3.1-405b": ("llama-3.1-405b", None), "llama-3-405b": ("llama-3.1-405b", None),
    "llama-3.3-70b": ("llama-3.1-70b", None),
    "mistral-7b-v0.1": ("mistral-7b", None), "mistral-7b-v0.2": ("mistral-7b", None),
    "mixtral-8x7b-v0.1": ("mixtral-8x7b", None), "deepseek-v3-base": ("deepseek-v3", None),
}
_SUFFIXES = re.compile(r"-(hf|instruct|chat|it|base)$")


def bundled_models() -> list[str]:
    folder = resources.files("ridgeline").joinpath("data/models")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def _normalize(name: str) -> str:
    """'meta-llama/Llama-2-7b-chat-hf' -> 'llama-2-7b': the repo name, without release suffixes."""
    n = name.strip().lower().split("/")[-1]
    while n not in _ALIASES and _SUFFIXES.search(n):
        n = _SUFFIXES.sub("", n)
    return n


def _get(cfg: dict[str, Any], key: str, where: str, *alts: str, default: Any = ...) -> Any:
    for k in (key, *alts):
        if cfg.get(k) is not None:
            return cfg[k]
    if default is ...:
        raise RidgelineError(f"{where}: config has no '{key}' (is this a decoder-only LLM "
                             "config.json?)")
    return default


def spec_from_config(cfg: dict[str, Any], name: str, where: str = "config") -> ModelSpec:
    """A ModelSpec from a HF config.json dict (Llama, Mistral, Mixtral, Qwen2, DeepSeek-V2/V3)."""
    if isinstance(cfg.get("text_config"), dict):  # multimodal wrappers keep the LLM here
        cfg = {**cfg["text_config"], "model_type": cfg["text_config"].get("model_type", "")}
    model_type = str(cfg.get("model_type", ""))
    h = int(_get(cfg, "hidden_size", where, "n_embd", "d_model"))
    layers = int(_get(cfg, "num_hidden_layers", where, "n_layer", "num_layers"))
    heads = int(_get(cfg, "num_attention_heads", where, "n_head"))
    kv_heads = int(_get(cfg, "num_key_value_heads", where, default=heads))
    kv_lora = int(cfg.get("kv_lora_rank") or 0)
    if kv_lora:
        head_dim = int(cfg.get("qk_nope_head_dim", 0)) + int(cfg.get("qk_rope_head_dim", 0))
    else:
        head_dim = int(cfg.get("head_dim") or h // heads)
    num_experts = int(cfg.get("num_local_experts") or cfg.get("n_routed_experts")
                      or cfg.get("num_experts") or 0)
    moe_inter = int(cfg.get("moe_intermediate_size") or 0)
    shared = int(cfg.get("n_shared_experts") or 0)
    if num_experts and not moe_inter:           # Mixtral: experts are full-width MLPs
        moe_inter = int(_get(cfg, "intermediate_size", where))
    if num_experts and cfg.get("shared_expert_intermediate_size") and moe_inter:
        shared = round(int(cfg["shared_expert_intermediate_size"]) / moe_inter)  # Qwen-MoE
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window", True) is not False else None
    values = dict(
        name=name, hidden_size=h, num_layers=layers, num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim, intermediate_size=int(_get(cfg, "intermediate_size", where, "ffn_dim",
                                                      default=4 * h)),
        vocab_size=int(_get(cfg, "vocab_size", where)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        num_experts=num_experts,
        experts_per_token=int(cfg.get("num_experts_per_tok") or (2 if num_experts else 0)),
        num_shared_experts=shared, moe_intermediate_size=moe_inter,
        first_dense_layers=int(cfg.get("first_k_dense_replace") or 0) if num_experts else 0,
        kv_lora_rank=kv_lora,
        qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 0) if kv_lora else 0,
        q_lora_rank=int(cfg.get("q_lora_rank") or 0) if kv_lora else 0,
        qk_nope_head_dim=int(cfg.get("qk_nope_head_dim") or 0) if kv_lora else 0,
        v_head_dim=int(cfg.get("v_head_dim") or 0) if kv_lora else 0,
        attention_bias=bool(cfg.get("attention_bias", model_type in ("qwen2", "qwen2_moe"))),
        router_bias=cfg.get("topk_method") == "noaux_tc",
        sliding_window=int(window or 0),
        max_position_embeddings=int(cfg.get("max_position_embeddings") or 0),
        model_type=model_type, source=str(cfg.get("_source", where)),
    )
    spec = ModelSpec(**values)
    _check(spec, where)
    return spec


def _check(spec: ModelSpec, where: str) -> None:
    for f in fields(spec):
        v = getattr(spec, f.name)
        if isinstance(v, int) and not isinstance(v, bool) and v < 0:
            raise RidgelineError(f"{where}: {f.name} is negative ({v})")
    for key in ("hidden_size", "num_layers", "num_attention_heads", "num_kv_heads", "head_dim",
                "vocab_size"):
        if getattr(spec, key) <= 0:
            raise RidgelineError(f"{where}: {key} must be positive")
    if spec.num_attention_heads % spec.num_kv_heads:
        raise RidgelineError(f"{where}: {spec.num_attention_heads} attention heads are not a "
                             f"multiple of {spec.num_kv_heads} KV heads")
    if spec.is_moe and not (0 < spec.experts_per_token <= spec.num_experts):
        raise RidgelineError(f"{where}: experts per token must be in 1..{spec.num_experts}")
    if spec.first_dense_layers > spec.num_layers:
        raise RidgelineError(f"{where}: more leading dense layers than layers")


@lru_cache(maxsize=64)
def _load_bundled(name: str) -> ModelSpec:
    text = resources.files("ridgeline").joinpath(f"data/models/{name}.json").read_text()
    return spec_from_config(json.loads(text), name, where=f"bundled model {name}")


def load_model(name_or_path: str) -> ModelSpec:
    """A bundled model by name ("llama-3.1-70b", "tiny"), a Hugging Face id of one
    ("meta-llama/Llama-2-7b-chat-hf"), or a HF config.json (file or folder)."""
    return find_model(name_or_path)[0]


def find_model(name_or_path: str) -> tuple[ModelSpec, list[str]]:
    """(spec, notes): load_model, with a note when a name maps to bundled shapes."""
    if not name_or_path or not str(name_or_path).strip():
        raise RidgelineError("no model given: pass --model NAME or a config.json path")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            cfg = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RidgelineError(f"cannot read model config {path}: {exc}") from None
        if not isinstance(cfg, dict):
            raise RidgelineError(f"{path}: not a JSON object")
        stem = path.parent.name if path.name == "config.json" else path.stem
        return spec_from_config(cfg, stem or str(path), where=str(path)), []
    name = _normalize(str(name_or_path))
    bundled = bundled_models()
    if name in bundled:
        same = name == str(name_or_path).strip().lower()
        return _load_bundled(name), [] if same else [_alias_note(name_or_path, name, None)]
    if name in _ALIASES:
        target, window = _ALIASES[name]
        spec = _load_bundled(target)
        if window:
            spec = replace(spec, name=name, max_position_embeddings=window)
        else:
            spec = replace(spec, name=name)
        return spec, [_alias_note(name_or_path, target, window)]
    if str(name_or_path).endswith(".json") or "/" in str(name_or_path) and Path(
            str(name_or_path)).suffix:
        raise RidgelineError(f"model config not found: {name_or_path}")
    raise RidgelineError(f"unknown model {name_or_path!r}: use a config.json path, a folder with "
                         f"one, or one of {', '.join(bundled)}")


def _alias_note(given: str, bundled: str, window: int | None) -> str:
    window_note = f", context window {window:,} tokens" if window else ""
    return f"{given}: planned on the bundled {bundled} shapes (the same architecture{window_note})"


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Model."""

    model: str = option(help="a bundled model name (llama-3.1-70b), a Hugging Face config.json "
                             "(file or folder), or the HF id of a bundled model "
                             "(meta-llama/Llama-3.3-70B-Instruct)", metavar="NAME")

    def load(self) -> tuple[ModelSpec, list[str]]:
        return find_model(self.model)
