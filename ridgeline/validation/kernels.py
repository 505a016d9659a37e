"""Fused elementwise kernels (Triton) of the validation transformer, as serving engines fuse them.

A decode step is mostly small kernels between the GEMMs; unfused PyTorch runs
each of rope, the KV write, silu, the multiply, the residual add and the norm
as several launches, which a serving engine does in one. These four kernels
make one decoder layer ten kernels (norm, QKV, rope+KV write, attention, O,
add+norm, gate+up, silu*mul, down, add), the structure the planner prices
(ridgeline.sizing.latency), so the measured step is an engine's step and not
PyTorch's eager overhead:

    rms_norm(x, w)                  out = x * rsqrt(mean(x^2) + eps) * w      (one row per program)
    add_rms_norm(x, r, w)           s = x + r; out = rms_norm(s, w); returns (out, s)
    rope_kv_write(qkv, ...)         rotate q and k (rotate-half), write k and v into the cache
                                    at their positions, q to a (B, T, H, d) buffer
    silu_mul(gu)                    silu(gu[:, :I]) * gu[:, I:]
    quant_fp8(x, amax)              x / (amax / fp8_max), saturated, cast to e4m3; writes the scale

Every kernel has a PyTorch twin in ridgeline.validation.transformer; the tests
check one against the other under the Triton interpreter (TRITON_INTERPRET=1,
CPU tensors), and DecoderModel checks them on the device before it uses them.
Arithmetic is in float32, results are rounded to the output dtype once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, n_cols, eps,
                     HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        r = tl.load(res_ptr + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
        s = (x + r).to(res_out_ptr.dtype.element_ty)  # the residual stream is kept 16-bit
        tl.store(res_out_ptr + row * n_cols + cols, s, mask=mask)
        x = s.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * n_cols + cols, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rope_kv_kernel(qkv_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, v_ptr, T, start, H, G, qkv_stride,
                    s_kb, s_kg, s_kt, s_vb, s_vg, s_vt, HALF: tl.constexpr, BLOCK: tl.constexpr):
    tok = tl.program_id(0).to(tl.int64)      # b * T + t
    head = tl.program_id(1)                  # q heads 0..H-1, then k heads H..H+G-1
    b = tok // T
    pos = start + tok % T
    offs = tl.arange(0, BLOCK)
    mask = offs < HALF
    D: tl.constexpr = 2 * HALF
    c = tl.load(cos_ptr + pos * D + offs, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + pos * D + offs, mask=mask, other=0.0).to(tl.float32)
    src = qkv_ptr + tok * qkv_stride + head * D  # q and k heads lie side by side in a QKV row
    x1 = tl.load(src + offs, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF + offs, mask=mask, other=0.0).to(tl.float32)
    o1 = x1 * c - x2 * s
    o2 = x2 * c + x1 * s
    if head < H:
        dst = q_ptr + (tok * H + head) * D
        tl.store(dst + offs, o1.to(q_ptr.dtype.element_ty), mask=mask)
        tl.store(dst + HALF + offs, o2.to(q_ptr.dtype.element_ty), mask=mask)
    else:
        g = head - H
        kdst = k_ptr + b * s_kb + g * s_kg + pos * s_kt
        tl.store(kdst + offs, o1.to(k_ptr.dtype.element_ty), mask=mask)
        tl.store(kdst + HALF + offs, o2.to(k_ptr.dtype.element_ty), mask=mask)
        vsrc = qkv_ptr + tok * qkv_stride + (H + G + g) * D
        vdst = v_ptr + b * s_vb + g * s_vg + pos * s_vt
        tl.store(vdst + offs, tl.load(vsrc + offs, mask=mask, other=0.0), mask=mask)
        tl.store(vdst + HALF + offs, tl.load(vsrc + HALF + offs, mask=mask, other=0.0), mask=mask)


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, inter, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inter
    g = tl.load(gu_ptr + row * 2 * inter + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * 2 * inter + inter + cols, mask=mask, other=0.0).to(tl.float32)
    out = g / (1.0 + tl.exp(-g)) * u
    tl.store(out_ptr + row * inter + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _quant_fp8_kernel(x_ptr, amax_ptr, out_ptr, scale_ptr, n, FMAX: tl.constexpr,
                      BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    amax = tl.maximum(tl.load(amax_ptr).to(tl.float32), 1e-12)
    scale = amax / FMAX
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    q = tl.minimum(tl.maximum(x / scale, -FMAX), FMAX)
    tl.store(out_ptr + offs, q.to(out_ptr.dtype.element_ty), mask=mask)
    if pid == 0:
        tl.store(scale_ptr, scale)


def _warps(block: int) -> int:
    return 8 if block >= 4096 else (4 if block >= 1024 else 2)


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """x (..., n) contiguous -> normalized, same dtype."""
    n = x.shape[-1]
    out = torch.empty_like(x)
    block = triton.next_power_of_2(n)
    _rms_norm_kernel[(x.numel() // n,)](x, x, w, out, out, n, eps, HAS_RES=False, BLOCK=block,
                                        num_warps=_warps(block))
    return out


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, w: torch.Tensor, eps: float):
    """(rms_norm(x + residual) * w, x + residual); inputs are not modified."""
    n = x.shape[-1]
    out = torch.empty_like(x)
    res_out = torch.empty_like(residual)
    block = triton.next_power_of_2(n)
    _rms_norm_kernel[(x.numel() // n,)](x, residual, w, out, res_out, n, eps, HAS_RES=True,
                                        BLOCK=block, num_warps=_warps(block))
    return out, res_out


def rope_kv_write(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                  v_cache: torch.Tensor, batch: int, tokens: int, start: int, heads: int,
                  kv_heads: int, head_dim: int) -> torch.Tensor:
    """qkv (B*T, (H+2G)*d) -> rotated q (B, T, H, d); rotated k and v written to the caches
    (B, G, capacity, d) at positions [start, start+T). cos/sin: full tables (positions, d)."""
    q = torch.empty(batch, tokens, heads, head_dim, device=qkv.device, dtype=qkv.dtype)
    half = head_dim // 2
    _rope_kv_kernel[(batch * tokens, heads + kv_heads)](
        qkv, cos, sin, q, k_cache, v_cache, tokens, start, heads, kv_heads, qkv.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        HALF=half, BLOCK=triton.next_power_of_2(half), num_warps=1)
    return q


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """(M, 2I) -> (M, I): silu(gate) * up."""
    m, two_i = gate_up.shape
    inter = two_i // 2
    out = torch.empty(m, inter, device=gate_up.device, dtype=gate_up.dtype)
    block = min(1024, triton.next_power_of_2(inter))
    _silu_mul_kernel[(m, triton.cdiv(inter, block))](gate_up, out, inter, BLOCK=block,
                                                       num_warps=_warps(block))
    return out


def quant_fp8(x: torch.Tensor, amax: torch.Tensor, fp8_dtype: torch.dtype):
    """(x_fp8, scale) from x and its absolute max (0-dim device tensor); scale = amax / fp8_max."""
    fmax = float(torch.finfo(fp8_dtype).max)
    out = torch.empty(x.shape, device=x.device, dtype=fp8_dtype)
    scale = torch.empty((), device=x.device, dtype=torch.float32)
    n = x.numel()
    block = 2048
    _quant_fp8_kernel[(triton.cdiv(n, block),)](x, amax, out, scale, n, FMAX=fmax, BLOCK=block,
                                                num_warps=4)
    return out, scale
