"""Fused weight-only quantized decode GEMV: y = x @ dequant(Q).T, int8 or int4 weights.

    int8 (per output channel):  W[n, k] = Q[n, k] * s[n]
        Q (N, K) int8, s (N,) fp16
    int4 (per group of G along K, symmetric, GPTQ/AWQ-style storage):
        W[n, k] = (q[n, k] - 8) * s[n, k // G],   q in 0..15
        packed two per byte, low nibble first: P[n, j] = q[n, 2j] | q[n, 2j + 1] << 4
        P (N, K/2) uint8, s (N, ceil(K/G)) fp16; K even
    y[b, n] = sum_k x[b, k] * W[n, k]     x (B, K) bf16/fp16, y (B, N) in x's dtype,
                                          every product accumulated in fp32

Work (minimal; ridgeline.probes.dequant counts it):
    bytes read    = N*K*w_bytes (1 int8, 0.5 int4) + N*ceil(K/G)*2 (fp16 scales; int8: G = K)
                    + B*K*x_bytes
    bytes written = B*N*y_bytes;   FLOPs = 2*B*N*K
The weight is read once, in its quantized form, and dequantized in registers: the
point of a fused kernel (an unfused engine writes and re-reads a bf16 copy of W).

Kernel (`_dequant_gemv_kernel`), the layout of ridgeline.kernels.gemv: grid
(cdiv(B, BLOCK_B), cdiv(N, BLOCK_N), split_k); each program walks its K range in
(BLOCK_N, BLOCK_K) weight tiles, K the contiguous axis (coalesced, `evict_first`).
- BLOCK_B == 1 (B = 1): fp32 FMAs into a register tile, one reduction at the end.
- BLOCK_B >= 16: tensor cores, "swap AB": acc(BLOCK_N, BLOCK_B) += W_tile @ x_tile.T.
- int8: the tile is converted to the activation dtype (exact: |Q| <= 127) and the
  per-channel scale multiplies the fp32 accumulator once at the end (it factors
  out of the K sum).
- int4: a tile of BLOCK_K weights is BLOCK_K/2 contiguous bytes per row, loaded as
  they lie; the low and high nibbles are multiplied by the even and odd columns
  of x (x is tiny and L2-resident; a strided load of it costs nothing), so no
  interleave is needed. BLOCK_K divides G, so a tile lies in one group: its scale
  is one (BLOCK_N,) load, applied to the tile's fp32 partial sum (q - 8 is exact
  in bf16, so nothing is rounded before the accumulator). A ragged last group
  (K % G != 0) is masked like any ragged K.
- Split-K (B <= 16 when the N tiles alone would not fill the GPU): fp32 partials,
  summed in a fixed order by ridgeline.kernels.gemv's reduction pass (scales are
  applied before the partials are stored, so the reduction only sums and casts).

Configs: `candidate_configs` lists a few tiles per batch class (block_k clamped to
G for int4), expanded by budget with the split-K rule of ridgeline.kernels.gemv
(`budget_candidates`, `split_for`); `select_config` times them with
triton.testing.do_bench (gemv's `time_configs`) once per (device, dtypes, group, batch
class, N, K, budget) on a GPU ("quick": the first, untimed; under TRITON_INTERPRET=1
always the first). Launch geometry and the reduction pass are gemv's too.

Run:
    from ridgeline.kernels.dequant_gemv import dequant_gemv
    y = dequant_gemv(x, q8, s)                      # int8, s (N,) fp16
    y = dequant_gemv(x, p4, s, group_size=128)      # int4 packed (N, K/2) uint8, s (N, K/128)
Tests: `pytest tests/test_kernels_dequant_gemv.py` (interpreter on the CPU; `-m gpu` on a GPU).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import triton
import triton.language as tl

from ridgeline.errors import RidgelineError
from ridgeline.kernels.gemv import (
    HALF_DTYPES, TUNE_MS, GemvConfig, batch_class, budget_candidates,
    check_forced_config, plan_launch, reduce_partials, sm_count, time_configs,
)

MIN_DOT_K = 32  # an int4 tile of BLOCK_K weights feeds dots of BLOCK_K/2 >= 16


class DequantGemvInputError(RidgelineError, ValueError):
    """Shapes, dtypes, devices or layouts that the dequantizing GEMV does not take."""


@triton.jit(do_not_specialize=["B"])
def _dequant_gemv_kernel(
    x_ptr, q_ptr, s_ptr, out_ptr,
    B, N, K, K_SPLIT,
    stride_xb, stride_qn, stride_sn, stride_ob, stride_os,
    INT4: tl.constexpr, GROUP: tl.constexpr, IS_SPLIT: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_b = offs_b < B
    mask_n = offs_n < N
    q_rows = q_ptr + offs_n.to(tl.int64)[:, None] * stride_qn        # (BLOCK_N, 1)
    x_rows = x_ptr + offs_b.to(tl.int64)[:, None] * stride_xb        # (BLOCK_B, 1)
    s_rows = s_ptr + offs_n.to(tl.int64) * stride_sn                 # (BLOCK_N,)
    k_begin = pid_k * K_SPLIT
    k_end = tl.minimum(k_begin + K_SPLIT, K)

    if BLOCK_B == 1:
        # CUDA-core path (B = 1): fp32 FMAs, one reduction over K at the end
        if INT4:
            acc_nk = tl.zeros((BLOCK_N, BLOCK_K // 2), dtype=tl.float32)
        else:
            acc_nk = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for k0 in range(k_begin, k_end, BLOCK_K):
            if INT4:
                offs_j = k0 // 2 + tl.arange(0, BLOCK_K // 2)      # byte columns
                m = mask_n[:, None] & (offs_j[None, :] < k_end // 2)
                p = tl.load(q_rows + offs_j[None, :], mask=m, other=0,
                            eviction_policy="evict_first")             # (BLOCK_N, BLOCK_K/2) u8
                lo = (p & 0xF).to(tl.float32) - 8
                hi = (p >> 4).to(tl.float32) - 8
                # x read in W's register layout (broadcast pointers, L1 hits): no shuffles
                xe_ptr = tl.broadcast_to(x_rows + 2 * offs_j[None, :], (BLOCK_N, BLOCK_K // 2))
                xe = tl.load(xe_ptr, mask=m, other=0.0, eviction_policy="evict_last")
                xo = tl.load(xe_ptr + 1, mask=m, other=0.0, eviction_policy="evict_last")
                s = tl.load(s_rows + k0 // GROUP, mask=mask_n, other=0.0).to(tl.float32)
                acc_nk += (lo * xe.to(tl.float32) + hi * xo.to(tl.float32)) * s[:, None]
            else:
                offs_k = k0 + tl.arange(0, BLOCK_K)
                m = mask_n[:, None] & (offs_k[None, :] < k_end)
                q = tl.load(q_rows + offs_k[None, :], mask=m, other=0,
                            eviction_policy="evict_first")             # (BLOCK_N, BLOCK_K) i8
                x_ptrs = tl.broadcast_to(x_rows + offs_k[None, :], (BLOCK_N, BLOCK_K))
                xv = tl.load(x_ptrs, mask=m, other=0.0, eviction_policy="evict_last")
                acc_nk += q.to(tl.float32) * xv.to(tl.float32)
        acc = tl.sum(acc_nk, axis=1)[:, None]                           # (BLOCK_N, 1)
    else:
        # tensor-core path, swap AB: (BLOCK_N, BLOCK_K) @ (BLOCK_K, BLOCK_B)
        acc = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.float32)
        for k0 in range(k_begin, k_end, BLOCK_K):
            if INT4:
                offs_j = k0 // 2 + tl.arange(0, BLOCK_K // 2)
                kj = offs_j[None, :] < k_end // 2
                p = tl.load(q_rows + offs_j[None, :], mask=mask_n[:, None] & kj, other=0,
                            eviction_policy="evict_first")             # (BLOCK_N, BLOCK_K/2) u8
                xm = mask_b[:, None] & kj
                xe = tl.load(x_rows + 2 * offs_j[None, :], mask=xm, other=0.0,
                             eviction_policy="evict_last")              # (BLOCK_B, BLOCK_K/2)
                xo = tl.load(x_rows + 2 * offs_j[None, :] + 1, mask=xm, other=0.0,
                             eviction_policy="evict_last")
                lo = (p & 0xF).to(tl.int32) - 8          # -8..7: exact in bf16
                hi = (p >> 4).to(tl.int32) - 8
                if UPCAST_DOT:  # interpreter only: its bf16 dot is wrong (see kernels.gemv)
                    part = tl.dot(lo.to(tl.float32), tl.trans(xe.to(tl.float32)))
                    part = tl.dot(hi.to(tl.float32), tl.trans(xo.to(tl.float32)), part)
                else:
                    part = tl.dot(lo.to(xe.dtype), tl.trans(xe))
                    part = tl.dot(hi.to(xo.dtype), tl.trans(xo), part)
                s = tl.load(s_rows + k0 // GROUP, mask=mask_n, other=0.0).to(tl.float32)
                acc += part * s[:, None]
            else:
                offs_k = k0 + tl.arange(0, BLOCK_K)
                kk = offs_k[None, :] < k_end
                q = tl.load(q_rows + offs_k[None, :], mask=mask_n[:, None] & kk, other=0,
                            eviction_policy="evict_first")             # (BLOCK_N, BLOCK_K) i8
                xv = tl.load(x_rows + offs_k[None, :], mask=mask_b[:, None] & kk, other=0.0,
                             eviction_policy="evict_last")              # (BLOCK_B, BLOCK_K)
                if UPCAST_DOT:
                    acc = tl.dot(q.to(tl.float32), tl.trans(xv.to(tl.float32)), acc)
                else:  # int8 -> bf16/fp16 is exact
                    acc = tl.dot(q.to(xv.dtype), tl.trans(xv), acc)

    if not INT4:  # per-channel scale: once, on the accumulator (also on a split's partial)
        acc = acc * tl.load(s_rows, mask=mask_n, other=0.0).to(tl.float32)[:, None]
    out_mask = mask_n[:, None] & mask_b[None, :]
    out_offs = offs_b[None, :] * stride_ob + offs_n[:, None]            # (BLOCK_N, BLOCK_B)
    if not IS_SPLIT:
        tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        tl.store(out_ptr + pid_k * stride_os + out_offs, acc, mask=out_mask)


# ---------------------------------------------------------------------------
# checks, configs, launch


def _interpreting() -> bool:
    return type(_dequant_gemv_kernel).__name__ == "InterpretedFunction"


def weight_kind(q: torch.Tensor) -> str:
    """"int8" for an int8 (N, K) weight, "int4" for a packed uint8 (N, K/2) one."""
    return {torch.int8: "int8", torch.uint8: "int4"}.get(q.dtype, str(q.dtype))


def _check_inputs(x: Any, q: Any, scale: Any, group_size: int | None) -> None:
    for name, t in (("x", x), ("q", q), ("scale", scale)):
        if not isinstance(t, torch.Tensor):
            raise DequantGemvInputError(f"dequant_gemv: {name} must be a torch tensor")
    if x.dim() != 2 or q.dim() != 2:
        raise DequantGemvInputError(f"dequant_gemv: x must be (B, K) and q (N, K) or (N, K/2); "
                                    f"got x {tuple(x.shape)}, q {tuple(q.shape)}")
    (b, k), n = x.shape, q.shape[0]
    if b < 1 or n < 1 or k < 1:
        raise DequantGemvInputError(f"dequant_gemv: empty problem B={b}, N={n}, K={k}")
    if x.dtype not in HALF_DTYPES:
        raise DequantGemvInputError(f"dequant_gemv: activations must be bf16 or fp16, "
                                    f"got {x.dtype}")
    kind = weight_kind(q)
    if kind == "int8":
        want_q, want_s = (n, k), (n,)
    elif kind == "int4":
        if k % 2:
            raise DequantGemvInputError(f"dequant_gemv: int4 packs two weights per byte; K={k} "
                                        "must be even")
        if not group_size or group_size < MIN_DOT_K or group_size & (group_size - 1):
            raise DequantGemvInputError(f"dequant_gemv: int4 needs group_size, a power of two "
                                        f">= {MIN_DOT_K}; got {group_size}")
        want_q, want_s = (n, k // 2), (n, -(-k // group_size))
    else:
        raise DequantGemvInputError(f"dequant_gemv: weights must be int8 (per channel) or "
                                    f"uint8-packed int4, got {q.dtype}")
    if tuple(q.shape) != want_q:
        raise DequantGemvInputError(f"dequant_gemv: {kind} weights for x {tuple(x.shape)} must "
                                    f"be {want_q}, got {tuple(q.shape)}")
    if scale.dtype != torch.float16 or tuple(scale.shape) != want_s:
        raise DequantGemvInputError(f"dequant_gemv: {kind} scales must be fp16 of shape "
                                    f"{want_s}, got {scale.dtype} {tuple(scale.shape)}")
    if not (x.device == q.device == scale.device):
        raise DequantGemvInputError(f"dequant_gemv: x on {x.device}, q on {q.device}, scale on "
                                    f"{scale.device}: all must be on one device")
    if x.stride(1) != 1 or q.stride(1) != 1 or scale.stride(-1) != 1:
        raise DequantGemvInputError("dequant_gemv: x, q and scale must be contiguous along K "
                                    "(row-major); call .contiguous() outside the timed region")
    if x.device.type == "cpu" and not _interpreting():
        raise DequantGemvInputError("dequant_gemv: Triton kernels need a GPU; CPU tensors run "
                                    "only under TRITON_INTERPRET=1 (correctness tests)")


def _fit_group(cfg: GemvConfig, group_size: int | None) -> GemvConfig:
    """int4: BLOCK_K divides the group (one scale per tile); both are powers of two."""
    if group_size and cfg.block_k > group_size:
        return replace(cfg, block_k=group_size)
    return cfg


def candidate_configs(batch: int, n: int, k: int, group_size: int | None = None,
                      sm_count: int = 132, budget: str = "default") -> list[GemvConfig]:
    """Tiles for this batch class, presumed best first, each with its split-K variant."""
    def C(bn, bk, bb, warps, stages=3):  # noqa: N802 - a table row
        return GemvConfig(bn, bk, bb, num_warps=warps, num_stages=stages)

    rows = {
        1: [C(32, 256, 1, 4), C(16, 512, 1, 4), C(64, 128, 16, 4, 4)],
        16: [C(64, 128, 16, 4, 4), C(128, 128, 16, 4, 3), C(64, 256, 16, 4, 3)],
        32: [C(64, 128, 32, 4, 4), C(128, 64, 32, 4, 4)],
        64: [C(64, 128, 64, 4, 4), C(128, 64, 64, 4, 4)],
        512: [C(128, 64, 128, 8, 4), C(128, 128, 64, 8, 3)],
    }
    row = list(dict.fromkeys(_fit_group(c, group_size) for c in rows[batch_class(batch)]))
    return budget_candidates(row, batch, n, k, sm_count, budget, default_keep=2,
                             kernel="dequant_gemv")


_TUNED: dict[tuple, GemvConfig] = {}


def select_config(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
                  group_size: int | None = None, budget: str = "default") -> GemvConfig:
    """The config for this problem: candidates timed once per key on a GPU, else the first."""
    batch, k, n = x.shape[0], x.shape[1], q.shape[0]
    gs = group_size if weight_kind(q) == "int4" else None
    key = (str(x.device), x.dtype, q.dtype, gs, batch_class(batch), n, k, budget)
    if key not in _TUNED:
        cands = candidate_configs(batch, n, k, gs, sm_count(str(x.device)), budget)
        if budget == "quick" or len(cands) == 1 or x.device.type != "cuda" or _interpreting():
            _TUNED[key] = cands[0]
        else:
            _TUNED[key] = _time_candidates(cands, x, q, scale, gs, *TUNE_MS[budget])
    return _TUNED[key]


def _time_candidates(cands, x, q, scale, group_size, warmup_ms: float, rep_ms: float):
    return time_configs(cands, lambda cfg: _launch(x, q, scale, group_size, cfg), warmup_ms,
                        rep_ms, kernel="dequant_gemv")[0][1]


def _launch(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, group_size: int | None,
            cfg: GemvConfig) -> torch.Tensor:
    B, K = x.shape
    N = q.shape[0]
    int4 = weight_kind(q) == "int4"
    # BLOCK_K-aligned split ranges: only the very last block is ragged, and (int4) no tile
    # straddles a group
    plan = plan_launch(x, N, cfg)
    _dequant_gemv_kernel[plan.grid](
        x, q, scale, plan.out, B, N, K, plan.k_split,
        x.stride(0), q.stride(0), scale.stride(0), N, B * N,
        INT4=int4, GROUP=group_size if int4 else 1, IS_SPLIT=plan.split > 1,
        UPCAST_DOT=_interpreting(),
        BLOCK_B=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    # scales were applied before the partials were stored: the reduction only sums
    return reduce_partials(plan, plan.out, has_scale=False)


def dequant_gemv(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, *,
                 group_size: int | None = None, config: GemvConfig | None = None,
                 budget: str = "default") -> torch.Tensor:
    """y = x @ dequant(q, scale).T, shape (B, N), in x's dtype; see the module docstring."""
    _check_inputs(x, q, scale, group_size)
    gs = group_size if weight_kind(q) == "int4" else None
    if config is not None:
        check_forced_config(config, x.shape[0], DequantGemvInputError, "dequant_gemv")
        if gs and (gs % config.block_k or (config.block_b > 1 and config.block_k < MIN_DOT_K)):
            raise DequantGemvInputError(f"dequant_gemv: int4 block_k={config.block_k} must "
                                        f"divide group_size={gs} (and be >= {MIN_DOT_K} on the "
                                        "tensor-core path)")
    cfg = config or select_config(x, q, scale, gs, budget)
    return _launch(x, q, scale, gs, cfg)

