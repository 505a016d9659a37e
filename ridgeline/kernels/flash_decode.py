"""Flash-decoding: one decode step of grouped-query attention over a contiguous KV cache.

    out[b, h, :] = sum_s softmax_s(q[b, h, :] . k[b, g, s, :] * sm_scale) * v[b, g, s, :]
    g = h // G, G = Hq / Hkv (query heads per KV head), sm_scale = 1 / sqrt(D) by default

    q:    (B, Hq, D)      one new token per sequence, bf16 or fp16
    k, v: (B, Hkv, S, D)  the cache, same dtype; any strides with D contiguous (so a
                          (B, S, Hkv, D) cache passes as its .transpose(1, 2) view)
    out:  (B, Hq, D)      in q's dtype; scores, softmax and sums in fp32

Work (minimal; what ridgeline.probes.attention records):
    bytes read    = B*S*2*Hkv*D*e + B*Hq*D*e       (the K and V cache once, q)
    bytes written = B*Hq*D*e
    FLOPs         = 4*B*S*Hq*D                     (q.k and p.v, 2 FLOPs per MAC)
At decode the cache read is everything: the kernel's one job is to stream K and V
at the bandwidth ceiling, and reading each KV head once for all G of its query heads.

Kernel (split-K over the context, then a reduction; Dao et al.'s flash-decoding):
- `_split_kernel`, grid (B*Hkv, n_splits): one program takes one (sequence, KV
  head) and one contiguous range of the context (`chunk` tokens, a multiple of
  BLOCK_N), and walks it in BLOCK_N-token tiles with an online softmax (running
  max m, running sum l, unnormalized accumulator, exp2 with log2(e) folded into
  the scale). The G query heads of the KV head form the M side of the MMAs
  (padded to BLOCK_G >= 16, the smallest tensor-core tile): each K/V tile is
  loaded from HBM once and serves all G heads, which is where GQA saves bytes.
  At decode the padding costs nothing: the MMAs are far from the bound.
- Splits: B*Hkv programs alone leave most SMs idle at small batch (Llama-3 8B
  at B = 1: 8 programs on 132 SMs), so the context is cut until there are about
  two programs per SM, each split keeping >= MIN_TILES_PER_SPLIT tiles so its
  loads still pipeline (`split_plan`). Each split writes fp32 (acc, m, l);
  `_reduce_kernel`, grid (B*Hq,), merges them in a fixed order (deterministic)
  and normalizes. With one split the first kernel writes the output itself.
  The ranges are planned on the host so that no split is empty: every split
  sees at least one key, and no -inf - -inf ever reaches an exp.
- int64 offsets for the sequence and head: B*Hkv*S*D passes 2**31 at
  B = 256, S = 32768.

Interpreter note: Triton's CPU interpreter computes a bf16 `tl.dot` on the raw
16-bit patterns (see ridgeline.kernels.gemv), so under TRITON_INTERPRET=1 both
MMAs take fp32 operands (`UPCAST_DOT`); on a GPU they take bf16/fp16 with fp32
accumulation, P cast to V's dtype as every flash kernel does.

Not covered: a paged cache (block tables) and per-sequence lengths; every
sequence attends to all S cached tokens.

Run:
    from ridgeline.kernels.flash_decode import flash_decode, flash_decode_reference
    out = flash_decode(q, k, v)                 # (B, Hq, D)
Tests: `pytest tests/test_kernels_flash_decode.py` (interpreter on CPU; `-m gpu` on a GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from ridgeline.errors import RidgelineError
from ridgeline.kernels.gemv import sm_count

HALF_DTYPES = (torch.bfloat16, torch.float16)
LOG2E = 1.4426950408889634
MIN_BLOCK_G = 16           # the smallest M of a tensor-core MMA
MIN_TILES_PER_SPLIT = 4    # BLOCK_N tiles per split, at least: enough loads in flight
PROGRAMS_PER_SM = 2        # splits are added until the grid has about this many per SM
MAX_SPLITS = 64


class FlashDecodeInputError(RidgelineError, ValueError):
    """Shapes, dtypes, devices or layouts that the flash-decoding kernel does not take."""


@dataclass(frozen=True)
class DecodeConfig:
    """One launch configuration; num_splits=None: chosen by `num_splits_for`."""

    block_n: int = 64
    num_splits: int | None = None
    num_warps: int = 4
    num_stages: int = 2

    def __str__(self) -> str:
        splits = "auto" if self.num_splits is None else self.num_splits
        return f"BN{self.block_n} SPLITS{splits} w{self.num_warps} s{self.num_stages}"


# S and the chunk are not specialized: every context length runs one compiled kernel
@triton.jit(do_not_specialize=["S", "CHUNK", "n_splits"])
def _split_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, m_ptr, l_ptr,
    S, CHUNK, n_splits, qk_scale,
    stride_qb, stride_qh,
    stride_kb, stride_kh, stride_ks,
    stride_vb, stride_vh, stride_vs,
    stride_ob, stride_oh,
    HQ: tl.constexpr, HKV: tl.constexpr, G: tl.constexpr, D: tl.constexpr,
    IS_SPLIT: tl.constexpr, UPCAST_DOT: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    b = (pid_bh // HKV).to(tl.int64)
    h = (pid_bh % HKV).to(tl.int64)
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    offs_nb = tl.arange(0, BLOCK_N)
    mask_g = offs_g < G
    mask_d = offs_d < D
    heads = h * G + offs_g                                                  # (BLOCK_G,)

    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=mask_g[:, None] & mask_d[None, :], other=0.0)         # (BLOCK_G, BLOCK_D)
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh

    m_i = tl.full((BLOCK_G,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_G,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_D), dtype=tl.float32)
    start = split * CHUNK
    end = tl.minimum(start + CHUNK, S)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + offs_nb
        mask_n = offs_n < end
        rows = offs_n.to(tl.int64)[:, None]
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_base + rows * stride_ks + offs_d[None, :], mask=kv_mask, other=0.0,
                    eviction_policy="evict_first")                          # (BLOCK_N, BLOCK_D)
        if UPCAST_DOT:  # interpreter only (module docstring)
            qk = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)))
        else:
            qk = tl.dot(q, tl.trans(k))                                     # (BLOCK_G, BLOCK_N)
        qk = tl.where(mask_n[None, :], qk * qk_scale, float("-inf"))
        # every tile holds >= 1 key (no empty split, tiles start inside the range): m_new finite
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + rows * stride_vs + offs_d[None, :], mask=kv_mask, other=0.0,
                    eviction_policy="evict_first")                          # (BLOCK_N, BLOCK_D)
        if UPCAST_DOT:
            pv = tl.dot(p, v.to(tl.float32))
        else:
            pv = tl.dot(p.to(v.dtype), v)                                   # (BLOCK_G, BLOCK_D)
        acc = acc * alpha[:, None] + pv
        m_i = m_new

    if IS_SPLIT:
        # fp32 partials of this range, row (b*HQ + head), column split; _reduce_kernel merges
        rows_out = (b * HQ + heads) * n_splits + split                       # (BLOCK_G,)
        tl.store(m_ptr + rows_out, m_i, mask=mask_g)
        tl.store(l_ptr + rows_out, l_i, mask=mask_g)
        tl.store(out_ptr + rows_out[:, None] * D + offs_d[None, :], acc,
                 mask=mask_g[:, None] & mask_d[None, :])
    else:
        o = acc / l_i[:, None]
        tl.store(out_ptr + b * stride_ob + heads[:, None] * stride_oh + offs_d[None, :],
                 o.to(out_ptr.dtype.element_ty), mask=mask_g[:, None] & mask_d[None, :])


# the split count is a runtime loop bound: one compiled reduction serves every split plan
@triton.jit(do_not_specialize=["n_splits"])
def _reduce_kernel(
    acc_ptr, m_ptr, l_ptr, out_ptr, n_splits,
    stride_ob, stride_oh,
    HQ: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)          # b*HQ + head
    b = row // HQ
    h = row % HQ
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    m = tl.load(m_ptr + row * n_splits)
    l_sum = tl.load(l_ptr + row * n_splits)
    acc = tl.load(acc_ptr + row * n_splits * D + offs_d, mask=mask_d, other=0.0)
    for s in range(1, n_splits):  # fixed order: deterministic sums
        m_s = tl.load(m_ptr + row * n_splits + s)
        l_s = tl.load(l_ptr + row * n_splits + s)
        a_s = tl.load(acc_ptr + (row * n_splits + s) * D + offs_d, mask=mask_d, other=0.0)
        m_new = tl.maximum(m, m_s)
        alpha = tl.exp2(m - m_new)
        beta = tl.exp2(m_s - m_new)
        l_sum = l_sum * alpha + l_s * beta
        acc = acc * alpha + a_s * beta
        m = m_new
    o = acc / l_sum
    tl.store(out_ptr + b * stride_ob + h * stride_oh + offs_d, o.to(out_ptr.dtype.element_ty),
             mask=mask_d)


# ---------------------------------------------------------------------------
# reference, planning, launch


def flash_decode_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           sm_scale: float | None = None) -> torch.Tensor:
    """fp32 reference (B, Hq, D): KV heads repeated to the query heads, explicit softmax."""
    g = q.shape[1] // k.shape[1]
    scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    kr = k.float().repeat_interleave(g, dim=1)                 # (B, Hq, S, D)
    vr = v.float().repeat_interleave(g, dim=1)
    scores = torch.einsum("bhd,bhsd->bhs", q.float(), kr) * scale
    return torch.einsum("bhs,bhsd->bhd", scores.softmax(dim=-1), vr)


def split_plan(context: int, num_splits: int, block_n: int) -> tuple[int, int]:
    """(chunk, splits): BLOCK_N-aligned ranges of `chunk` tokens, none empty, <= num_splits."""
    tiles = triton.cdiv(context, block_n)
    want = max(1, min(int(num_splits), tiles))
    chunk = triton.cdiv(tiles, want) * block_n
    return chunk, triton.cdiv(context, chunk)


def num_splits_for(batch: int, kv_heads: int, context: int, sm_count: int,
                   block_n: int = 64) -> int:
    """Splits of the context so the grid has ~PROGRAMS_PER_SM programs per SM, each split
    keeping >= MIN_TILES_PER_SPLIT tiles; 1 when the (sequence, KV head) programs suffice."""
    programs = batch * kv_heads
    want = triton.cdiv(PROGRAMS_PER_SM * sm_count, programs)
    most = max(1, triton.cdiv(context, block_n) // MIN_TILES_PER_SPLIT)
    return max(1, min(want, most, MAX_SPLITS))


def block_g(group: int) -> int:
    """Query heads per program, padded to a power of two >= the smallest MMA tile."""
    return max(MIN_BLOCK_G, triton.next_power_of_2(group))


def _interpreting() -> bool:
    return type(_split_kernel).__name__ == "InterpretedFunction"


def _check_inputs(q: Any, k: Any, v: Any) -> None:
    if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
        raise FlashDecodeInputError("flash_decode: q, k and v must be torch tensors")
    if q.dim() != 3 or k.dim() != 4 or v.dim() != 4:
        raise FlashDecodeInputError(
            f"flash_decode: q must be (B, Hq, D) and k, v (B, Hkv, S, D); got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape != v.shape:
        raise FlashDecodeInputError(f"flash_decode: k {tuple(k.shape)} and v {tuple(v.shape)} "
                                    "differ")
    (b, hq, d), (bk, hkv, s, dk) = q.shape, k.shape
    if b != bk or d != dk:
        raise FlashDecodeInputError(f"flash_decode: q (B={b}, D={d}) does not match the cache "
                                    f"(B={bk}, D={dk})")
    if min(b, hq, d, hkv, s) < 1:
        raise FlashDecodeInputError(f"flash_decode: empty problem B={b}, Hq={hq}, Hkv={hkv}, "
                                    f"S={s}, D={d}")
    if hq % hkv:
        raise FlashDecodeInputError(f"flash_decode: Hq={hq} query heads is not a multiple of "
                                    f"Hkv={hkv} KV heads")
    if q.dtype not in HALF_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise FlashDecodeInputError(f"flash_decode: q, k, v must all be bf16 or all fp16; got "
                                    f"{q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise FlashDecodeInputError(f"flash_decode: q on {q.device}, k on {k.device}, v on "
                                    f"{v.device}")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise FlashDecodeInputError("flash_decode: q, k and v must be contiguous along D; call "
                                    ".contiguous() outside the timed region")
    if q.device.type == "cpu" and not _interpreting():
        raise FlashDecodeInputError("flash_decode: Triton kernels need a GPU; CPU tensors run "
                                    "only under TRITON_INTERPRET=1 (correctness tests)")


def resolve_config(q: torch.Tensor, k: torch.Tensor,
                   config: DecodeConfig | None = None) -> DecodeConfig:
    """`config` with its split count fixed: the plan's actual count (no empty split)."""
    cfg = config or DecodeConfig()
    if cfg.block_n < 16 or cfg.block_n & (cfg.block_n - 1):
        raise FlashDecodeInputError(f"flash_decode: block_n must be a power of two >= 16, "
                                    f"got {cfg.block_n}")
    batch, kv_heads, context = k.shape[0], k.shape[1], k.shape[2]
    want = cfg.num_splits
    if want is None:
        want = num_splits_for(batch, kv_heads, context, sm_count(str(q.device)), cfg.block_n)
    if not 1 <= want <= MAX_SPLITS:
        raise FlashDecodeInputError(f"flash_decode: num_splits must be 1..{MAX_SPLITS}, "
                                    f"got {want}")
    _, splits = split_plan(context, want, cfg.block_n)
    return DecodeConfig(cfg.block_n, splits, cfg.num_warps, cfg.num_stages)


def flash_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                 sm_scale: float | None = None,
                 config: DecodeConfig | None = None) -> torch.Tensor:
    """Attention of one query token per sequence over the cache: (B, Hq, D) in q's dtype.

    `config` sets the tile and the split count (num_splits=None: `num_splits_for`);
    the count actually launched is `resolve_config(q, k, config).num_splits`.
    """
    _check_inputs(q, k, v)
    cfg = resolve_config(q, k, config)
    B, HQ, D = q.shape
    HKV, S = k.shape[1], k.shape[2]
    scale = (sm_scale if sm_scale is not None else 1.0 / math.sqrt(D)) * LOG2E
    chunk, splits = split_plan(S, cfg.num_splits, cfg.block_n)
    out = torch.empty((B, HQ, D), dtype=q.dtype, device=q.device)
    if splits > 1:
        acc = torch.empty((B * HQ * splits, D), dtype=torch.float32, device=q.device)
        m = torch.empty((B * HQ * splits,), dtype=torch.float32, device=q.device)
        lsum = torch.empty_like(m)
    else:  # never touched: the split kernel writes the output
        acc, m, lsum = out, out, out
    block_d = triton.next_power_of_2(D)
    _split_kernel[(B * HKV, splits)](
        q, k, v, acc if splits > 1 else out, m, lsum,
        S, chunk, splits, scale,
        q.stride(0), q.stride(1),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1),
        HQ=HQ, HKV=HKV, G=HQ // HKV, D=D,
        IS_SPLIT=splits > 1, UPCAST_DOT=_interpreting(),
        BLOCK_G=block_g(HQ // HKV), BLOCK_N=cfg.block_n, BLOCK_D=block_d,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    if splits > 1:
        _reduce_kernel[(B * HQ,)](
            acc, m, lsum, out, splits, out.stride(0), out.stride(1),
            HQ=HQ, D=D, BLOCK_D=block_d, num_warps=4 if block_d >= 128 else 2,
        )
    return out
