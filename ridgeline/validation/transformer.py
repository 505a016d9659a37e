"""A dense decoder-only transformer in PyTorch with random weights, for `ridgeline validate`.

Shapes come from a ModelSpec (ridgeline.sizing.models): nothing is downloaded.
One decoder layer, as Llama-family models and serving engines run it:

    h   = x + O( attn( rope(Q(n1(x))), rope(K(n1(x))) ++ Kcache, V(n1(x)) ++ Vcache ) )
    out = h + Down( silu(Gate(n2(h))) * Up(n2(h)) )

- n1, n2: RMSNorm, x * rsqrt(mean(x^2) + eps) * w.
- Q, K, V one fused GEMM (QKV), gate and up one fused GEMM, as vLLM/TRT-LLM do.
- rope: rotary embedding, rotate-half convention, theta from the spec (500000 default).
- attn: torch's scaled_dot_product_attention with grouped-query attention
  (`enable_gqa` where torch has it, KV heads repeated otherwise). Decode: a query
  of length 1 per sequence against the pre-filled cache; prefill: causal.
- fp8 weights: e4m3 with a per-tensor fp32 scale; activations are quantized
  per tensor to e4m3 at run time (part of the measured cost) and the GEMM is
  `torch._scaled_mm(x_fp8, W.t(), scale_x, scale_w)` (W row-major, so W.t()
  is the column-major operand it wants).
- The model adds the embedding lookup before the layers and the final norm,
  LM head (on the last token of each sequence only), fp32 logits and a greedy
  sample after them: the step ridgeline.sizing.latency prices.
- Elementwise work (norms, residual adds, rope + KV write, silu * up, fp8
  activation quantization) runs as fused Triton kernels on a GPU
  (ridgeline.validation.kernels, checked against the PyTorch ops first), so a
  layer is ten kernels as in a serving engine; on the CPU the PyTorch ops run.

`reference_layer` is a plain float32 version of one layer (explicit softmax,
repeated KV heads, pairwise rotation) that the tests compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ridgeline.dtypes import torch_dtype
from ridgeline.validation.footprint import LayerDims, act_dtype, dims_from_spec, normalize_weights

DEFAULT_ROPE_THETA = 500000.0
DEFAULT_RMS_EPS = 1e-5


def torch_version_at_least(major: int, minor: int) -> bool:
    parts = torch.__version__.split("+")[0].split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= (major, minor)
    except (ValueError, IndexError):
        return True


def sdpa_has_gqa() -> bool:
    """scaled_dot_product_attention(enable_gqa=...) arrived in torch 2.5."""
    return torch_version_at_least(2, 5)


def act_dtype_for(weights: str) -> torch.dtype:
    return torch_dtype(act_dtype(weights))


def fp8_dtype_for(device: torch.device, gfx_arch: str | None = None) -> torch.dtype:
    """OCP e4m3 everywhere except MI300-class AMD GPUs (gfx94x), which use the fnuz variant."""
    fnuz = device.type == "cuda" and gfx_arch and gfx_arch.startswith("gfx94")
    return torch_dtype("fp8_e4m3fnuz" if fnuz else "fp8_e4m3")


def quantize_per_tensor(x: torch.Tensor, fp8_dtype: torch.dtype):
    """x -> (x_fp8, scale) with x ~= x_fp8 * scale; scale = amax / fp8_max, fp32, on device."""
    fmax = torch.finfo(fp8_dtype).max
    amax = x.abs().amax().float().clamp(min=1e-12)  # a device tensor: no host sync, graph-safe
    scale = amax / fmax
    xq = (x.float() / scale).clamp(-fmax, fmax).to(fp8_dtype)
    return xq, scale


class Linear:
    """y = x W^T with W (out, in) row-major: F.linear, or torch._scaled_mm for fp8 weights."""

    def __init__(self, out_features: int, in_features: int, weights: str, act_dtype: torch.dtype,
                 device: torch.device, generator: torch.Generator,
                 fp8_dtype: torch.dtype | None = None, quant=quantize_per_tensor):
        self.out_features, self.in_features = out_features, in_features
        self.act_dtype = act_dtype
        self.quant = quant  # run-time activation quantization (TorchOps.quant or FusedOps.quant)
        # random, not zeros: tensor cores run zeros faster; 1/sqrt(fan_in) keeps activations O(1)
        w = torch.randn(out_features, in_features, generator=generator, device=device,
                        dtype=torch.float32).mul_(in_features ** -0.5)
        if weights == "fp8":
            self.fp8_dtype = fp8_dtype or torch_dtype("fp8_e4m3")
            self.weight, self.scale = quantize_per_tensor(w, self.fp8_dtype)  # (N, K) e4m3, fp32
        else:
            self.fp8_dtype = None
            self.weight, self.scale = w.to(torch_dtype(weights)), None
        del w

    def dequantized(self) -> torch.Tensor:
        """The weight as float32 (what the reference multiplies by)."""
        w = self.weight.float()
        return w * self.scale if self.scale is not None else w

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (M, K) -> (M, N)
        if self.fp8_dtype is None:
            return F.linear(x, self.weight)
        xq, sx = self.quant(x, self.fp8_dtype)
        out = torch._scaled_mm(xq, self.weight.t(), scale_a=sx, scale_b=self.scale,
                               out_dtype=self.act_dtype)
        return out[0] if isinstance(out, tuple) else out  # torch < 2.5 returned (out, amax)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if hasattr(F, "rms_norm"):  # fused where torch has it
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


def rotary_tables(positions: int, head_dim: int, theta: float, dtype: torch.dtype,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (positions, head_dim), rotate-half layout, computed in float64."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(device=device, dtype=dtype), angles.sin().to(device=device, dtype=dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, T, d) rotated by position; cos/sin (T, d) broadcast over batch and heads."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
              gqa_native: bool) -> torch.Tensor:
    """q (B, H, T, d), k/v (B, G, S, d) -> (B, H, T, d)."""
    if q.shape[1] == k.shape[1]:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if gqa_native:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    rep = q.shape[1] // k.shape[1]  # older torch: every query head gets its own K/V copy
    return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, dim=1),
                                          v.repeat_interleave(rep, dim=1), is_causal=causal)


class TorchOps:
    """The elementwise parts of a layer in plain PyTorch (the CPU path, and the reference of
    the fused Triton kernels in ridgeline.validation.kernels)."""

    name = "torch"

    @staticmethod
    def norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        return rms_norm(x, w, eps)

    @staticmethod
    def add_norm(x: torch.Tensor, residual: torch.Tensor, w: torch.Tensor, eps: float):
        s = x + residual
        return rms_norm(s, w, eps), s

    @staticmethod
    def rope_kv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, d: LayerDims, B: int, T: int, start: int) -> torch.Tensor:
        q, k, v = qkv.split([d.q_size, d.kv_size, d.kv_size], dim=-1)
        q = q.view(B, T, d.heads, d.head_dim).transpose(1, 2)       # (B, H, T, d)
        k = k.view(B, T, d.kv_heads, d.head_dim).transpose(1, 2)    # (B, G, T, d)
        v = v.view(B, T, d.kv_heads, d.head_dim).transpose(1, 2)
        c, s = cos[start:start + T], sin[start:start + T]           # (T, d), static slices
        k_cache[:, :, start:start + T].copy_(apply_rotary(k, c, s))  # static slot every replay
        v_cache[:, :, start:start + T].copy_(v)
        return apply_rotary(q, c, s)

    @staticmethod
    def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    @staticmethod
    def quant(x: torch.Tensor, fp8_dtype: torch.dtype):
        return quantize_per_tensor(x, fp8_dtype)


class FusedOps:
    """The same parts as single Triton kernels (ridgeline.validation.kernels), as engines do."""

    name = "triton"

    def __init__(self):
        from ridgeline.validation import kernels

        self.k = kernels

    def norm(self, x, w, eps):
        return self.k.rms_norm(x.contiguous(), w, eps)

    def add_norm(self, x, residual, w, eps):
        return self.k.add_rms_norm(x.contiguous(), residual.contiguous(), w, eps)

    def rope_kv(self, qkv, cos, sin, k_cache, v_cache, d, B, T, start):
        q = self.k.rope_kv_write(qkv, cos, sin, k_cache, v_cache, B, T, start, d.heads,
                                 d.kv_heads, d.head_dim)                 # (B, T, H, d)
        return q.transpose(1, 2)                                         # (B, H, T, d) view

    def silu_mul(self, gate_up):
        return self.k.silu_mul(gate_up)

    def quant(self, x, fp8_dtype):
        amax = torch.linalg.vector_norm(x, float("inf"))  # one reduction kernel
        return self.k.quant_fp8(x.contiguous(), amax, fp8_dtype)


def check_fused_ops(device: torch.device, act_dtype: torch.dtype,
                    fp8_dtype: torch.dtype | None = None) -> str | None:
    """Run each fused kernel once against TorchOps on small odd inputs: None, or why not."""
    try:
        fused, ref = FusedOps(), TorchOps()
        gen = torch.Generator(device=device)
        gen.manual_seed(1)

        def rnd(*shape):
            return torch.randn(*shape, generator=gen, device=device).to(act_dtype)

        d = LayerDims(hidden=72, heads=6, kv_heads=2, head_dim=16, intermediate=40, vocab=8,
                      num_layers=1)
        x, r, w = rnd(3, 72), rnd(3, 72), rnd(72)
        tol = dict(atol=3e-2, rtol=3e-2)
        torch.testing.assert_close(fused.norm(x, w, 1e-5), ref.norm(x, w, 1e-5), **tol)
        for a, b in zip(fused.add_norm(x, r, w, 1e-5), ref.add_norm(x, r, w, 1e-5)):
            torch.testing.assert_close(a, b, **tol)
        cos, sin = rotary_tables(9, 16, 10000.0, act_dtype, device)
        qkv = rnd(3 * 2, d.qkv_size)
        caches = [torch.zeros(3, 2, 9, 16, device=device, dtype=act_dtype) for _ in range(4)]
        qa = fused.rope_kv(qkv, cos, sin, caches[0], caches[1], d, 3, 2, 5)
        qb = ref.rope_kv(qkv, cos, sin, caches[2], caches[3], d, 3, 2, 5)
        torch.testing.assert_close(qa, qb, **tol)
        torch.testing.assert_close(caches[0], caches[2], **tol)
        torch.testing.assert_close(caches[1], caches[3], **tol)
        gu = rnd(5, 2 * 40)
        torch.testing.assert_close(fused.silu_mul(gu), ref.silu_mul(gu), **tol)
        if fp8_dtype is not None:
            # inputs on the e4m3 grid (times a scale): the check is of the kernel's scale,
            # saturation and indexing, not of rounding (the Triton CPU interpreter rounds some
            # values at a binade edge differently from the hardware and torch)
            grid = torch.randn(5, 33, generator=gen, device=device).mul(60).to(fp8_dtype).float()
            grid[0, 0] = torch.finfo(fp8_dtype).max
            xg = (grid * 0.015625).to(act_dtype)
            (qa, sa), (qb, sb) = fused.quant(xg, fp8_dtype), ref.quant(xg, fp8_dtype)
            torch.testing.assert_close(sa, sb, atol=0, rtol=1e-6)
            torch.testing.assert_close(qa.float(), qb.float(), atol=0, rtol=0)
    except Exception as exc:  # a Triton that cannot compile here, or a wrong result
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"fused Triton kernels unusable here ({type(exc).__name__}: {first[:160]})"
    return None


@dataclass
class KVCache:
    """Static per-layer K and V of shape (B, G, capacity, d); `length` tokens are filled."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    length: int
    capacity: int


class DecoderLayer:
    def __init__(self, d: LayerDims, weights: str, act_dtype: torch.dtype, device: torch.device,
                 generator: torch.Generator, eps: float, fp8_dtype: torch.dtype | None,
                 gqa_native: bool, ops=None):
        self.d, self.eps, self.gqa_native = d, eps, gqa_native
        self.ops = ops or TorchOps()

        def lin(o: int, i: int) -> Linear:
            return Linear(o, i, weights, act_dtype, device, generator, fp8_dtype,
                          quant=self.ops.quant)

        def norm() -> torch.Tensor:  # around 1, not exactly 1, so a test can see it applied
            w = 1.0 + 0.1 * torch.randn(d.hidden, generator=generator, device=device)
            return w.to(act_dtype)

        self.attn_norm = norm()
        self.qkv = lin(d.qkv_size, d.hidden)
        self.o = lin(d.hidden, d.q_size)
        self.mlp_norm = norm()
        self.gate_up = lin(2 * d.intermediate, d.hidden)
        self.down = lin(d.hidden, d.intermediate)

    @staticmethod
    def reduce(t: torch.Tensor) -> torch.Tensor:
        """The sum over tensor-parallel ranks after each row-parallel GEMM (O, down): nothing
        on one device; a shard (ridgeline.validation.tp.TPDecoderLayer) sets its all-reduce."""
        return t

    def __call__(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 k_cache: torch.Tensor, v_cache: torch.Tensor, start: int) -> torch.Tensor:
        """x (B, T, hidden) at positions [start, start+T); appends K/V to the caches in place.

        cos/sin: the full rotary tables (positions, d). start == 0: prefill, causal over the
        T new tokens; start > 0: decode (T == 1) over the `start` cached tokens and the new one.
        Kernels (fused ops): norm, QKV, rope+KV write, attention, O, add+norm, gate+up,
        silu*mul, down, add.
        """
        d, ops = self.d, self.ops
        B, T, _ = x.shape
        if start > 0 and T != 1:
            raise ValueError("only prefill from an empty cache or one-token decode steps")
        M = B * T
        h = ops.norm(x, self.attn_norm, self.eps)
        qkv = self.qkv(h.reshape(M, d.hidden))                      # (M, (H+2G)*d)
        q = ops.rope_kv(qkv, cos, sin, k_cache, v_cache, d, B, T, start)  # (B, H, T, d)
        S = start + T
        a = attention(q, k_cache[:, :, :S], v_cache[:, :, :S], causal=start == 0 and T > 1,
                      gqa_native=self.gqa_native)                   # (B, H, T, d)
        a = a.transpose(1, 2).reshape(M, d.q_size)                  # (M, H*d)
        o = self.reduce(self.o(a))                                  # (M, hidden)
        h, x = ops.add_norm(o.view(B, T, d.hidden), x, self.mlp_norm, self.eps)
        up = ops.silu_mul(self.gate_up(h.reshape(M, d.hidden)))     # (M, I)
        return x + self.reduce(self.down(up)).view(B, T, d.hidden)


class DecoderModel:
    """Embedding, `layers` decoder layers, final norm and LM head, with random weights.

        model = DecoderModel(spec, "bf16", layers=32, device=torch.device("cuda:0"))
        cache = model.new_cache(batch=8, capacity=4097, filled=4096)
        logits = model.forward(tokens, cache)        # tokens (8, 1): one decode step
        logits = model.forward(tokens, cache, layers=4)  # only the first 4 layers
    """

    def _setup(self, spec: Any, device: torch.device | str, seed: int, gfx_arch: str | None,
               gqa_native: bool | None, fused: bool | None) -> torch.Generator:
        """Device, dtypes (`fp8`: the fp8 format of fp8 weights, else None), rope and norm
        constants, the elementwise ops (fused: the Triton
        kernels, default on a GPU after a check against the PyTorch ops; `self.notes` says
        why not when the check fails); the seeded generator of the weights' draws."""
        self.device = torch.device(device)
        self.act_dtype = act_dtype_for(self.weights)
        self.theta = float(getattr(spec, "rope_theta", 0) or DEFAULT_ROPE_THETA)
        self.eps = float(getattr(spec, "rms_norm_eps", 0) or DEFAULT_RMS_EPS)
        self.gqa_native = sdpa_has_gqa() if gqa_native is None else gqa_native
        self.fp8 = fp8_dtype_for(self.device, gfx_arch) if self.weights == "fp8" else None
        self.notes: list[str] = []
        if fused is None:
            fused = self.device.type == "cuda"
            why = check_fused_ops(self.device, self.act_dtype, self.fp8) if fused else None
            if why:
                fused = False
                self.notes.append(why + ": the PyTorch ops run instead (more kernels per layer)")
        self.ops = FusedOps() if fused else TorchOps()
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        return gen

    def __init__(self, spec: Any, weights: str = "bf16", layers: int | None = None,
                 device: torch.device | str = "cpu", seed: int = 0,
                 gfx_arch: str | None = None, gqa_native: bool | None = None,
                 fused: bool | None = None):
        """fused: the Triton elementwise kernels (default: on a GPU, after a check against
        the PyTorch ops; `self.notes` says why not when the check fails)."""
        self.weights = normalize_weights(weights)
        self.d = dims_from_spec(spec, self.weights)
        self.num_layers = min(int(layers or self.d.num_layers), self.d.num_layers)
        gen = self._setup(spec, device, seed, gfx_arch, gqa_native, fused)
        d = self.d
        # embedding and LM head stay 16-bit (engines keep them out of fp8)
        self.embed = (torch.randn(d.vocab, d.hidden, generator=gen, device=self.device)
                      .to(self.act_dtype))
        self.layers = [DecoderLayer(d, self.weights, self.act_dtype, self.device, gen, self.eps,
                                    self.fp8, self.gqa_native, self.ops)
                       for _ in range(self.num_layers)]
        self.final_norm = torch.ones(d.hidden, device=self.device, dtype=self.act_dtype)
        self.lm_head = self.embed if d.tied else (
            torch.randn(d.vocab, d.hidden, generator=gen, device=self.device)
            .mul_(d.hidden ** -0.5).to(self.act_dtype))
        self._cos = self._sin = None
        self._gen = gen

    def prepare(self, positions: int) -> None:
        """Build the rotary tables up front (no host-to-device copy may run in a graph capture)."""
        self._rotary(positions)

    def _rotary(self, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos is None or self._cos.shape[0] < positions:
            n = max(positions, 2 * (self._cos.shape[0] if self._cos is not None else 0))
            self._cos, self._sin = rotary_tables(n, self.d.head_dim, self.theta, self.act_dtype,
                                                 self.device)
        return self._cos, self._sin

    def new_cache(self, batch: int, capacity: int, filled: int = 0,
                  layers: int | None = None) -> KVCache:
        """Per-layer K/V with `filled` tokens of random (not zero) content already in place."""
        n = self.num_layers if layers is None else min(layers, self.num_layers)
        shape = (batch, self.d.kv_heads, capacity, self.d.head_dim)
        ks, vs = [], []
        for _ in range(n):
            # drawn in the cache dtype: no float32 copy of a multi-GB cache, even transiently
            ks.append(torch.randn(shape, generator=self._gen, device=self.device,
                                  dtype=self.act_dtype))
            vs.append(torch.randn(shape, generator=self._gen, device=self.device,
                                  dtype=self.act_dtype))
        return KVCache(ks, vs, filled, capacity)

    def random_tokens(self, batch: int, tokens: int) -> torch.Tensor:
        return torch.randint(0, self.d.vocab, (batch, tokens), generator=self._gen,
                             device=self.device)

    def forward(self, tokens: torch.Tensor, cache: KVCache, layers: int | None = None,
                head: bool = True) -> torch.Tensor:
        """tokens (B, T) appended at position cache.length -> logits (B, vocab) of the last token.

        The cache length is not advanced, so a step can be replayed on the same
        static state (what CUDA-graph timing needs). With head=False, the hidden
        state of the last token (B, hidden) after the last layer is returned.
        """
        B, T = tokens.shape
        start = cache.length
        n = len(cache.k) if layers is None else min(layers, len(cache.k))
        if start + T > cache.capacity:
            raise ValueError(f"cache holds {cache.capacity} tokens, step needs {start + T}")
        cos, sin = self._rotary(start + T)                           # full tables (positions, d)
        x = F.embedding(tokens, self.embed)                          # (B, T, hidden)
        for i in range(n):
            x = self.layers[i](x, cos, sin, cache.k[i], cache.v[i], start)
        last = x[:, -1].contiguous()                                 # (B, hidden)
        return self._head(last) if head else last

    def _head(self, last: torch.Tensor) -> torch.Tensor:
        """Final norm, LM head, fp32 logits, a greedy sample: how the planner's step ends."""
        logits = F.linear(self.ops.norm(last, self.final_norm, self.eps), self.lm_head).float()
        self.sampled = logits.argmax(dim=-1)                         # (B,) next tokens
        return logits                                                # (B, vocab) fp32

    def head_only(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embedding lookup, final norm, LM head and sampling without layers (what scaled
        timing subtracts)."""
        return self._head(F.embedding(tokens, self.embed)[:, -1].contiguous())


def reference_layer(layer: DecoderLayer, x: torch.Tensor, k_past: torch.Tensor,
                    v_past: torch.Tensor, start: int, theta: float):
    """Float32 reference of one layer: returns (out, k_all, v_all) for positions [0, start+T).

    Written independently of the fast path: explicit attention with a mask,
    KV heads repeated per query group, rotary as a rotation of (x_i, x_{i+d/2}) pairs.
    """
    d = layer.d
    x = x.float()
    B, T, _ = x.shape

    def norm(t, w):
        return t / torch.sqrt((t * t).mean(-1, keepdim=True) + layer.eps) * w.float()

    def rot(t, pos0):  # t (B, n, T, d)
        half = d.head_dim // 2
        pos = torch.arange(pos0, pos0 + t.shape[2], dtype=torch.float64)
        freq = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / d.head_dim)
        ang = (pos[:, None] * freq[None, :]).float()                # (T, d/2)
        a, b = t[..., :half], t[..., half:]
        return torch.cat([a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()], dim=-1)

    h = norm(x, layer.attn_norm)
    qkv = h @ layer.qkv.dequantized().T
    q, k, v = qkv.split([d.q_size, d.kv_size, d.kv_size], dim=-1)
    q = rot(q.reshape(B, T, d.heads, d.head_dim).transpose(1, 2), start)
    k = rot(k.reshape(B, T, d.kv_heads, d.head_dim).transpose(1, 2), start)
    v = v.reshape(B, T, d.kv_heads, d.head_dim).transpose(1, 2)
    k_all = torch.cat([k_past[:, :, :start].float(), k], dim=2)     # (B, G, S, d)
    v_all = torch.cat([v_past[:, :, :start].float(), v], dim=2)
    S = start + T
    group = d.heads // d.kv_heads
    kr = k_all.repeat_interleave(group, dim=1)
    vr = v_all.repeat_interleave(group, dim=1)
    scores = q @ kr.transpose(-1, -2) / math.sqrt(d.head_dim)       # (B, H, T, S)
    qpos = torch.arange(start, S)[:, None]
    kpos = torch.arange(S)[None, :]
    scores = scores.masked_fill(kpos > qpos, float("-inf"))
    a = torch.softmax(scores, dim=-1) @ vr                            # (B, H, T, d)
    a = a.transpose(1, 2).reshape(B, T, d.q_size)
    x = x + a @ layer.o.dequantized().T
    h = norm(x, layer.mlp_norm)
    gu = h @ layer.gate_up.dequantized().T
    g, u = gu.split([d.intermediate, d.intermediate], dim=-1)
    out = x + (g * torch.sigmoid(g) * u) @ layer.down.dequantized().T
    return out, k_all, v_all
