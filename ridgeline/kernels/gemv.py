"""Decode GEMV (skinny GEMM): y = x @ W.T for a small batch of token vectors.

    y[b, n] = scale[n] * sum_k x[b, k] * W[n, k]        (scale = 1 when absent)

    x: (B, K) activations, bf16 (or fp16), row-major; B = decode batch, 1..512
    W: (N, K) weights, row-major like a torch Linear weight: bf16 / fp16, or fp8
       e4m3 (torch.float8_e4m3fn; torch.float8_e4m3fnuz on MI300) with a
       per-output-channel fp32 scale (N,)
    y: (B, N) in x's dtype; every product is accumulated in fp32

Work (minimal, what achieved rates are computed from):
    bytes read    = N*K*w_bytes + B*K*x_bytes (+ N*4 for the fp8 scales)
    bytes written = B*N*y_bytes
    FLOPs         = 2*B*N*K
At decode batch sizes the weight read dominates (B*K and B*N are tiny next to
N*K): the kernel's one job is to stream W from HBM at the bandwidth ceiling.

Kernel (`_gemv_kernel`), grid (cdiv(B, BLOCK_B), cdiv(N, BLOCK_N), split_k):
- Each program walks K in (BLOCK_N, BLOCK_K) weight tiles. K is the contiguous
  axis, so each thread issues wide (16-byte) loads and a warp reads whole
  rows: coalesced. Weights are read once (`evict_first`); the activations are
  re-read by every program (`evict_last`, they stay in L2).
- The batch tile is grid axis 0, so the programs that share a weight tile at
  B > BLOCK_B are launched next to each other and all but the first find it
  in L2.
- BLOCK_B == 1 (B = 1): CUDA-core path. fp32 FMAs into a (BLOCK_N, BLOCK_K)
  register accumulator, one reduction over K at the end. At one token a
  tensor-core MMA would be 15/16 padding, and this path has no layout shuffles.
- BLOCK_B >= 16: tensor-core path, "swap AB": acc(BLOCK_N, BLOCK_B) +=
  W_tile(BLOCK_N, BLOCK_K) @ x_tile(BLOCK_B, BLOCK_K).T. The weights are the
  MMA's M side, so a batch of 1..16 tokens pads only the small side to 16,
  and the weight operand may come straight from registers (Hopper wgmma takes
  A from registers), which is where the fp8 dequantization happens.
- fp8 weights are weight-only quantized: each tile is loaded as fp8 (half the
  bytes, which is the point at decode) and converted in registers to the
  activation dtype before the dot. The conversion is exact (every e4m3 value
  is a bf16 value), activations keep full bf16 precision, and the
  per-channel scale multiplies the fp32 accumulator once at the end (it
  factors out of the K sum). This is what weight-only-fp8 decode kernels do
  on GPUs, and it also runs under Triton's CPU interpreter.
- Split-K (B <= 16, when the N tiles alone would not fill the GPU): grid axis
  2 cuts K into split_k contiguous BLOCK_K-aligned ranges; each writes an fp32
  partial (split_k, B, N) and `splitk_reduce_kernel` sums them in a fixed
  order, applies the scale and casts. A second pass rather than fp32 atomics
  because: results are deterministic (bitwise repeatable); atomics would need
  a zeroed fp32 buffer and a separate cast to bf16 (memset + GEMV + cast =
  three launches against two); a config can be re-run any number of times
  while tuning with no reset hook; and the partial buffer is tiny at decode
  batch sizes (split_k*B*N*4 bytes, L2-resident).

Tuning: `select_config` times the candidates of a small shape-pruned list
(`candidate_configs`) as the *whole* launch (main kernel + reduction pass)
with triton.testing.do_bench, which clears L2 before every rep (configs are
compared streaming from HBM). Not `@triton.autotune`: it times only the kernel
it decorates, so a split-K config would win by hiding its reduction launch.
Tuning is shared across shapes: once per (device, dtypes, batch class = the
config-table row, shape class = narrow/wide N x short/long K); a later shape of
the class reuses the winning tile and its split decision, the split factor
re-derived for its own N and K (`split_for`). Budgets (`TUNE_BUDGETS`): "quick"
times nothing (the rule's pick), "default" the first configs of each row
(PRUNED_BASES) with their split-K variants, "full" the whole row. Every distinct
config is a Triton compile (~0.5 s cold, cached on disk after), which is why
the lists are short and B and the split count are not compile-time constants.
Under TRITON_INTERPRET=1 the first candidate is used, untimed. Set
RIDGELINE_GEMV_VERBOSE=1 to print every candidate's time when a class is tuned.

Shared with ridgeline.kernels.dequant_gemv, which has this kernel's layout: GemvConfig,
the split-K rule and reduction, the budgets' candidate lists (`budget_candidates`), the
timing of candidates (`time_configs`), the checks of a forced config
(`check_forced_config`) and the launch geometry (`plan_launch`, `reduce_partials`).

Interpreter note: Triton's CPU interpreter computes a bf16 `tl.dot` on the
raw 16-bit patterns (numpy has no bf16; triton 3.x stores it as uint16), so
under the interpreter the tensor-core path upcasts both operands to fp32
before the dot (`UPCAST_DOT`). On a GPU the dot takes bf16/fp16 operands.

Run:
    from ridgeline.kernels.gemv import gemv, gemv_reference
    y = gemv(x, w)              # bf16/fp16 weights
    y = gemv(x, w8, scale)      # fp8 weights, per-output-channel fp32 scale
Tests: `pytest tests/test_kernels_gemv.py` (interpreter on CPU; `-m gpu` on a GPU).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
import triton
import triton.language as tl

from ridgeline.dtypes import torch_dtype
from ridgeline.errors import RidgelineError

# e4m3 weights, OCP or fnuz (MI300), as far as this torch has them
FP8_DTYPES = tuple(d for d in map(torch_dtype, ("fp8_e4m3", "fp8_e4m3fnuz")) if d is not None)
HALF_DTYPES = (torch.bfloat16, torch.float16)
MAX_SPLIT_K = 8


class GemvInputError(RidgelineError, ValueError):
    """Shapes, dtypes, devices or layouts that the GEMV kernel does not take."""


@dataclass(frozen=True)
class GemvConfig:
    """One launch configuration. block_b == 1 selects the CUDA-core (FMA) path."""

    block_n: int
    block_k: int
    block_b: int = 16
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3

    def __str__(self) -> str:
        return (f"BN{self.block_n} BK{self.block_k} BB{self.block_b} SK{self.split_k} "
                f"w{self.num_warps} s{self.num_stages}")


# B is not specialized: Triton would otherwise compile one variant for B == 1, one for B a
# multiple of 16 and one for the rest, and B only bounds the masks (no speed at stake).
@triton.jit(do_not_specialize=["B"])
def _gemv_kernel(
    x_ptr, w_ptr, scale_ptr, out_ptr,
    B, N, K, K_SPLIT,
    stride_xb, stride_wn, stride_ob, stride_os,
    HAS_SCALE: tl.constexpr, IS_SPLIT: tl.constexpr, EVEN_K: tl.constexpr,
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
    # int64 row offsets: N*K passes 2**31 for the largest LLM weights (e.g. lm_head)
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn     # (BLOCK_N, 1)
    x_rows = x_ptr + offs_b.to(tl.int64)[:, None] * stride_xb     # (BLOCK_B, 1)
    k_begin = pid_k * K_SPLIT
    k_end = tl.minimum(k_begin + K_SPLIT, K)

    if BLOCK_B == 1:
        # CUDA-core path (B = 1): elementwise FMAs, one reduction over K at the end
        acc_nk = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for k0 in range(k_begin, k_end, BLOCK_K):
            offs_k = tl.max_contiguous(tl.multiple_of(k0 + tl.arange(0, BLOCK_K), BLOCK_K), BLOCK_K)
            if EVEN_K:
                w_mask = mask_n[:, None]
            else:
                w_mask = mask_n[:, None] & (offs_k[None, :] < k_end)
            w = tl.load(w_rows + offs_k[None, :], mask=w_mask, other=0.0,
                        eviction_policy="evict_first")                 # (BLOCK_N, BLOCK_K)
            # x is loaded straight into W's register layout (a broadcast pointer tile, L1
            # hits): no shared-memory layout conversion and no barrier inside the loop
            x_tile = tl.broadcast_to(x_rows + offs_k[None, :], (BLOCK_N, BLOCK_K))
            xv = tl.load(x_tile, mask=w_mask, other=0.0, eviction_policy="evict_last")
            acc_nk += w.to(tl.float32) * xv.to(tl.float32)
        acc = tl.sum(acc_nk, axis=1)[:, None]                           # (BLOCK_N, 1)
    else:
        # tensor-core path, swap AB: (BLOCK_N, BLOCK_K) @ (BLOCK_K, BLOCK_B)
        acc = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.float32)
        for k0 in range(k_begin, k_end, BLOCK_K):
            offs_k = tl.max_contiguous(tl.multiple_of(k0 + tl.arange(0, BLOCK_K), BLOCK_K), BLOCK_K)
            if EVEN_K:
                w_mask = mask_n[:, None]
                x_mask = mask_b[:, None]
            else:
                w_mask = mask_n[:, None] & (offs_k[None, :] < k_end)
                x_mask = mask_b[:, None] & (offs_k[None, :] < k_end)
            w = tl.load(w_rows + offs_k[None, :], mask=w_mask, other=0.0,
                        eviction_policy="evict_first")                 # (BLOCK_N, BLOCK_K)
            xv = tl.load(x_rows + offs_k[None, :], mask=x_mask, other=0.0,
                         eviction_policy="evict_last")                  # (BLOCK_B, BLOCK_K)
            if UPCAST_DOT:  # interpreter only: its bf16 dot is wrong (see module docstring)
                acc = tl.dot(w.to(tl.float32), tl.trans(xv.to(tl.float32)), acc)
            else:  # fp8 -> activation dtype is exact; 16-bit weights: a no-op
                acc = tl.dot(w.to(xv.dtype), tl.trans(xv), acc)

    out_mask = mask_n[:, None] & mask_b[None, :]
    out_offs = offs_b[None, :] * stride_ob + offs_n[:, None]            # (BLOCK_N, BLOCK_B)
    if not IS_SPLIT:
        if HAS_SCALE:
            acc = acc * tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0)[:, None]
        tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        # fp32 partial of this K range; splitk_reduce_kernel finishes the sum
        tl.store(out_ptr + pid_k * stride_os + out_offs, acc, mask=out_mask)


# the split count is a runtime loop bound: one compiled reduction serves every split-K
@triton.jit(do_not_specialize=["B", "n_splits"])
def splitk_reduce_kernel(
    part_ptr, scale_ptr, y_ptr, B, N, stride_yb, n_splits,
    HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < B * N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(n_splits):  # fixed order: deterministic sums
        acc += tl.load(part_ptr + s * B * N + offs, mask=mask, other=0.0)
    b = offs // N
    n = offs % N
    if HAS_SCALE:
        acc = acc * tl.load(scale_ptr + n, mask=mask, other=0.0)
    tl.store(y_ptr + b * stride_yb + n, acc.to(y_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------
# reference, validation, configuration


def gemv_reference(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor | None = None,
                   out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """fp32 reference: (x @ dequant(W).T) * scale, cast to x's dtype (or `out_dtype`)."""
    y = x.float() @ w.float().t()                 # (B, K) x (K, N) -> (B, N)
    if scale is not None:
        y = y * scale.float()[None, :]
    return y.to(out_dtype or x.dtype)


def _interpreting() -> bool:
    return type(_gemv_kernel).__name__ == "InterpretedFunction"


def _check_inputs(x: Any, w: Any, scale: Any) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(w, torch.Tensor):
        raise GemvInputError("gemv: x and w must be torch tensors")
    if x.dim() != 2 or w.dim() != 2:
        raise GemvInputError(f"gemv: x must be (B, K) and w (N, K); got x {tuple(x.shape)}, "
                             f"w {tuple(w.shape)}")
    (b, k), (n, kw) = x.shape, w.shape
    if k != kw:
        raise GemvInputError(f"gemv: x has K={k} but w has K={kw} (w is (N, K), row-major)")
    if b < 1 or n < 1 or k < 1:
        raise GemvInputError(f"gemv: empty problem B={b}, N={n}, K={k}")
    if x.dtype not in HALF_DTYPES:
        raise GemvInputError(f"gemv: activations must be bf16 or fp16, got {x.dtype}")
    if w.dtype in HALF_DTYPES:
        if w.dtype != x.dtype:
            raise GemvInputError(f"gemv: 16-bit weights must match the activations' dtype "
                                 f"(x {x.dtype}, w {w.dtype})")
    elif w.dtype in FP8_DTYPES:
        if scale is None:
            raise GemvInputError("gemv: fp8 weights need a per-output-channel fp32 scale (N,)")
    else:
        raise GemvInputError(f"gemv: weights must be bf16, fp16 or fp8 e4m3, got {w.dtype}")
    if x.device != w.device:
        raise GemvInputError(f"gemv: x on {x.device} but w on {w.device}")
    if x.stride(1) != 1 or w.stride(1) != 1:
        raise GemvInputError("gemv: x and w must be contiguous along K (row-major); "
                             "call .contiguous() outside the timed region")
    if scale is not None:
        if not isinstance(scale, torch.Tensor) or scale.dtype != torch.float32 \
                or tuple(scale.shape) != (n,) or scale.stride(0) != 1:
            got = (f"{scale.dtype} {tuple(scale.shape)}" if isinstance(scale, torch.Tensor)
                   else type(scale).__name__)
            raise GemvInputError(f"gemv: scale must be a contiguous fp32 tensor of shape ({n},), "
                                 f"got {got}")
        if scale.device != w.device:
            raise GemvInputError(f"gemv: scale on {scale.device} but w on {w.device}")
    if x.device.type == "cpu" and not _interpreting():
        raise GemvInputError("gemv: Triton kernels need a GPU; CPU tensors run only under "
                             "TRITON_INTERPRET=1 (correctness tests)")


def batch_bucket(batch: int) -> int:
    """Next power of two (B=3 and B=4 run the same tiles)."""
    return 1 << max(0, int(batch) - 1).bit_length()


# Tuning budgets: how many candidates `select_config` times for one tuning class.
#   quick:   none; the rule's pick (the first config of the table row, split-K by the rule)
#   default: the first few configs of the row (PRUNED_BASES), each with its split-K variant
#   full:    every config of the row with its split-K variant
TUNE_BUDGETS = ("quick", "default", "full")
PRUNED_BASES = {1: 3, 16: 2, 32: 2, 64: 2, 512: 2}   # batch class -> configs kept by "default"
LONG_K = 8192   # K at or above this is "long": more K steps per program, deeper pipelines pay


def batch_class(batch: int) -> int:
    """The row of the config table a batch size uses: 1, <=16, <=32, <=64, larger (as 512)."""
    for upper in (1, 16, 32, 64):
        if batch <= upper:
            return upper
    return 512


def _table_row(batch: int) -> list[GemvConfig]:
    """Every config of the row for this batch size, the presumed best first."""
    def C(bn, bk, bb, warps, stages=3):  # noqa: N802 - a table row
        return GemvConfig(bn, bk, bb, num_warps=warps, num_stages=stages)

    # Pipelined tiles (BN + BB) * BK * 2 B * stages stay <= 160 KB of shared memory
    # (A100: 164 KB, H100: 227 KB); the tuner skips any a smaller GPU cannot compile.
    rows = {
        # CUDA-core path first (block_b=1), then the tensor-core path
        1: [C(16, 512, 1, 4), C(32, 512, 1, 8), C(64, 256, 16, 4, 4), C(16, 1024, 1, 8),
            C(128, 128, 16, 4, 4)],
        16: [C(64, 256, 16, 4, 4), C(128, 128, 16, 4, 4), C(32, 256, 16, 4, 5),
             C(64, 128, 16, 4, 6)],
        32: [C(64, 128, 32, 4, 4), C(128, 128, 32, 4, 4), C(128, 64, 32, 4, 5)],
        64: [C(64, 128, 64, 4, 4), C(128, 64, 64, 4, 4), C(128, 128, 64, 8, 3)],
        512: [C(128, 64, 128, 8, 4), C(256, 64, 128, 8, 3), C(128, 64, 64, 4, 4)],
    }
    return rows[batch_class(batch)]


def split_for(cfg: GemvConfig, batch: int, n: int, k: int, sm_count: int) -> int:
    """Split-K factor the rule gives `cfg` on this shape (1: no split).

    Only at decode batch sizes (<= 16) and only when the output tiles alone give
    fewer than two programs per SM: the power of two that reaches ~2 programs
    per SM, halved until every split keeps >= 4 K steps (so the loads still pipeline).
    """
    if batch > 16:
        return 1  # enough output tiles and MMA work: split-K would only add traffic
    tiles = triton.cdiv(n, cfg.block_n) * triton.cdiv(batch, cfg.block_b)
    if tiles >= 2 * sm_count:
        return 1
    split = min(MAX_SPLIT_K, batch_bucket(triton.cdiv(2 * sm_count, tiles)))
    while split > 1 and triton.cdiv(k, split) < 4 * cfg.block_k:
        split //= 2
    return split


def budget_candidates(row: list[GemvConfig], batch: int, n: int, k: int, sm_count: int,
                      budget: str, default_keep: int, kernel: str = "gemv") -> list[GemvConfig]:
    """The configs a tuning budget times, from a row of tiles (presumed best first).

    quick: the first tile, split by the rule (untimed); default: the first `default_keep`
    tiles; full: the whole row; each tile followed by its split-K variant where the rule
    splits it here.
    """
    if budget not in TUNE_BUDGETS:
        raise ValueError(f"{kernel}: tuning budget must be one of {TUNE_BUDGETS}, got {budget!r}")
    if budget == "quick":
        return [replace(row[0], split_k=split_for(row[0], batch, n, k, sm_count))]
    if budget == "default":
        row = row[:default_keep]
    configs: list[GemvConfig] = []
    for cfg in row:
        configs.append(cfg)
        split = split_for(cfg, batch, n, k, sm_count)
        if split > 1:
            configs.append(replace(cfg, split_k=split))
    return configs


def candidate_configs(batch: int, n: int, k: int, sm_count: int = 132,
                      budget: str = "full") -> list[GemvConfig]:
    """The shape-pruned list the tuner times under `budget`; the first is the default."""
    return budget_candidates(_table_row(batch), batch, n, k, sm_count, budget,
                             default_keep=PRUNED_BASES[batch_class(batch)])


def shape_class(batch: int, n: int, k: int, sm_count: int) -> tuple[str, str]:
    """(narrow | wide, short_k | long_k): shapes of one class share a tuning result.

    narrow: the row's first config wants split-K here (its output tiles alone leave
    SMs idle); long_k: K >= LONG_K. The split factor itself is re-derived per shape
    (split_for), so a shape inherits the tuned tile and whether to split, not a
    split count fitted to another N.
    """
    narrow = split_for(_table_row(batch)[0], batch, n, k, sm_count) > 1
    return ("narrow" if narrow else "wide", "long_k" if k >= LONG_K else "short_k")


@functools.lru_cache(maxsize=None)
def sm_count(device: str) -> int:
    """Multiprocessors of a GPU (SMs, CUs); 1 elsewhere (the CPU, the interpreter)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return 1
    return int(torch.cuda.get_device_properties(dev).multi_processor_count)


# tuning class -> (winning config with split_k=1, whether it splits); filled by select_config
_TUNED: dict[tuple, tuple[GemvConfig, bool]] = {}
TUNE_MS = {"default": (2.0, 10.0), "full": (5.0, 25.0)}   # do_bench (warmup, rep) per candidate


def tune_key(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor | None,
             budget: str = "default") -> tuple:
    """(device, dtypes, scale, batch class, shape class, budget): one tuning per key."""
    batch, (n, k) = x.shape[0], w.shape
    return (str(x.device), x.dtype, w.dtype, scale is not None, batch_class(batch),
            shape_class(batch, n, k, sm_count(str(x.device))), budget)


def select_config(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor | None = None,
                  budget: str = "default") -> GemvConfig:
    """The config for this problem; the candidates are timed once per tuning class.

    The first shape of a class (tune_key) is tuned; later shapes of the class
    reuse its tile and its split decision, with the split factor recomputed for
    their own N and K.
    """
    batch, (n, k) = x.shape[0], w.shape
    sm = sm_count(str(x.device))
    key = tune_key(x, w, scale, budget)
    if key not in _TUNED:
        cands = candidate_configs(batch, n, k, sm, budget)
        if budget == "quick" or len(cands) == 1 or not _can_time(x):
            best = cands[0]
        else:
            best = _time_candidates(cands, x, w, scale, *TUNE_MS[budget])
        _TUNED[key] = (replace(best, split_k=1), best.split_k > 1)
    base, splits = _TUNED[key]
    return replace(base, split_k=split_for(base, batch, n, k, sm) if splits else 1)


def _can_time(x: torch.Tensor) -> bool:
    """Candidates are timed on a GPU only (the interpreter takes the first, untimed)."""
    return x.device.type == "cuda" and not _interpreting()


PRECOMPILE_TIMEOUT_S = 120.0   # a stuck compile thread is left behind (daemon), not waited for


def precompile(cands: list[GemvConfig], x, w, scale, max_workers: int = 8) -> None:
    """Compile the candidates' kernels in parallel threads, without launching (best effort).

    Triton releases the GIL while it compiles (MLIR passes, ptxas), so N configs
    compile in about the time of one when the host has the cores; a cold compile
    costs ~0.5 s, more than timing a candidate. Anything that fails here is
    compiled again, and reported, when the candidate is timed. Daemon threads
    joined against a deadline: a compile that hangs cannot hang the profile.
    """
    workers = min(len(cands), os.cpu_count() or 1, max_workers)
    if workers < 2:
        return

    def one(cfg: GemvConfig) -> None:
        try:
            # a new thread starts on GPU 0: compile for (and cache under) x's device
            with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
                _launch(x, w, scale, cfg, warmup=True)
        except Exception:  # noqa: BLE001 - best effort: the timing loop retries and reports
            pass
    one(cands[0])  # first on this thread: Triton's per-device cache exists before the others
    deadline = time.monotonic() + PRECOMPILE_TIMEOUT_S
    rest = cands[1:]
    for start in range(0, len(rest), workers):
        threads = [threading.Thread(target=one, args=(cfg,), daemon=True)
                   for cfg in rest[start:start + workers]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


def time_configs(cands: list[GemvConfig], launch: Callable[[GemvConfig], Any],
                 warmup_ms: float, rep_ms: float,
                 kernel: str = "gemv") -> list[tuple[float, GemvConfig]]:
    """(median ms, config) of every candidate that runs here, fastest first (ties keep the
    list's order); `launch(cfg)` is one whole launch. None runs: one clear error."""
    timed: list[tuple[float, GemvConfig]] = []
    errors: list[str] = []
    for cfg in cands:
        try:
            ms = triton.testing.do_bench(functools.partial(launch, cfg), warmup=warmup_ms,
                                         rep=rep_ms, return_mode="median")
        except Exception as exc:  # e.g. OutOfResources (shared memory) on a smaller GPU
            errors.append(f"{cfg}: {type(exc).__name__}")
            continue
        timed.append((float(ms), cfg))
    if not timed:
        raise RidgelineError(f"{kernel}: no candidate config compiled and ran here: "
                             + "; ".join(errors))
    return sorted(timed, key=lambda p: p[0])


def _time_candidates(cands: list[GemvConfig], x, w, scale, warmup_ms: float = 2.0,
                     rep_ms: float = 10.0) -> GemvConfig:
    precompile(cands, x, w, scale)
    timed = time_configs(cands, lambda cfg: _launch(x, w, scale, cfg), warmup_ms, rep_ms)
    if os.environ.get("RIDGELINE_GEMV_VERBOSE"):
        print("gemv tune", tuple(x.shape), tuple(w.shape), w.dtype,
              ", ".join(f"{c}={t * 1e3:.1f}us" for t, c in timed))
    return timed[0][1]


@dataclass(frozen=True)
class LaunchPlan:
    """How one launch of a GEMV kernel (this one or dequant_gemv's) is cut and where it writes."""

    y: torch.Tensor           # (B, N) result, in x's dtype
    out: torch.Tensor         # what the main kernel writes: y, or fp32 partials (split, B, N)
    split: int
    k_split: int              # K per split
    grid: tuple[int, int, int]


def plan_launch(x: torch.Tensor, n: int, cfg: GemvConfig) -> LaunchPlan:
    """Grid (batch tiles, N tiles, splits) and outputs of a launch of `cfg` on x (B, K)."""
    batch, k = x.shape
    y = torch.empty((batch, n), dtype=x.dtype, device=x.device)
    split = max(1, cfg.split_k)
    # each split covers a BLOCK_K-aligned range, so only the very last block is ragged
    k_split = triton.cdiv(triton.cdiv(k, split), cfg.block_k) * cfg.block_k
    grid = (triton.cdiv(batch, cfg.block_b), triton.cdiv(n, cfg.block_n), split)
    out = y if split == 1 else torch.empty((split, batch, n), dtype=torch.float32,
                                           device=x.device)
    return LaunchPlan(y, out, split, k_split, grid)


def reduce_partials(plan: LaunchPlan, scale_arg: torch.Tensor, has_scale: bool,
                    warmup: bool = False) -> torch.Tensor:
    """plan.y: after a split launch, its partials summed (times the scale) by the reduction
    pass; warmup=True only compiles that pass."""
    if plan.split > 1:
        batch, n = plan.y.shape
        block = 1024
        grid = (triton.cdiv(batch * n, block),)
        reduce = (functools.partial(splitk_reduce_kernel.warmup, grid=grid) if warmup
                  else splitk_reduce_kernel[grid])
        reduce(plan.out, scale_arg, plan.y, batch, n, n, plan.split,
               HAS_SCALE=has_scale, BLOCK=block, num_warps=4)
    return plan.y


def _launch(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor | None,
            cfg: GemvConfig, warmup: bool = False) -> torch.Tensor:
    """Launch `cfg` (main kernel, then the split-K reduction); warmup=True only compiles."""
    B, K = x.shape
    N = w.shape[0]
    plan = plan_launch(x, N, cfg)
    has_scale = scale is not None
    scale_arg = scale if has_scale else w  # never read when HAS_SCALE is False
    main = (functools.partial(_gemv_kernel.warmup, grid=plan.grid) if warmup
            else _gemv_kernel[plan.grid])
    main(
        x, w, scale_arg, plan.out, B, N, K, plan.k_split,
        x.stride(0), w.stride(0), N, B * N,
        HAS_SCALE=has_scale, IS_SPLIT=plan.split > 1, EVEN_K=(K % cfg.block_k == 0),
        UPCAST_DOT=_interpreting(),
        BLOCK_B=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return reduce_partials(plan, scale_arg, has_scale, warmup)


def check_forced_config(config: GemvConfig, batch: int, error: type[Exception],
                        kernel: str = "gemv") -> None:
    """A config given by the caller fits this batch: `error` with the kernel's name if not."""
    if config.block_b == 1 and batch != 1:
        raise error(f"{kernel}: block_b=1 (the CUDA-core path) needs B=1")
    if not 1 <= config.split_k <= MAX_SPLIT_K:
        raise error(f"{kernel}: split_k must be 1..{MAX_SPLIT_K}")


def gemv(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor | None = None, *,
         config: GemvConfig | None = None, budget: str = "default") -> torch.Tensor:
    """y = (x @ W.T) * scale, shape (B, N), in x's dtype; see the module docstring.

    `config` forces a launch configuration (tests, experiments, or one chosen
    ahead with select_config); by default the tuned one for this shape's class
    is used (tuned under `budget` on the first call of the class).
    """
    _check_inputs(x, w, scale)
    if config is not None:
        check_forced_config(config, x.shape[0], GemvInputError)
    cfg = config or select_config(x, w, scale, budget)
    return _launch(x, w, scale, cfg)
