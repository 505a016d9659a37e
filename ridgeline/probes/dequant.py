"""Weight-only quantized decode GEMV: what dequantizing int8/int4 weights costs per batch.

The planner prices a weight-only int8/int4 GEMV as the same GEMV with fewer weight
bytes. This probe measures what it really takes: y = x @ dequant(W).T with bf16
activations, against decode batch size, for an engine that dequantizes with torch
before a bf16 matmul and for a fused dequantizing Triton kernel.

    int8 (per output channel):   W[n, k] = Q[n, k] * s[n]
        Q (N, K) int8, s (N,) fp16                          (group_size G = K)
    int4 (groups of G = 128 along K, symmetric, GPTQ/AWQ-style):
        W[n, k] = (q[n, k] - 8) * s[n, k // G],  q in 0..15, packed two per byte, low
        nibble first: P (N, K/2) uint8, s (N, K/G) fp16
    y[b, n] = sum_k x[b, k] * W[n, k]         x (B, K) bf16, y (B, N) bf16

Work per call (pure functions below, tested to the byte; G and the fp16 scale width
are the planner's, ridgeline.sizing.precision INT4_GROUP_SIZE and SCALE_BYTES):
    weight_bytes  = N*K*w_bytes                (int8 1, int4 0.5)
    scale_bytes   = N*ceil(K/G)*SCALE_BYTES    (int8: N*2)
    bytes_read    = weight_bytes + scale_bytes + B*K*2
    bytes_written = B*N*2
    flops         = 2*B*N*K
The counts are what a kernel must move at minimum (the quantized weight once), so
an unfused provider's extra traffic (its bf16 copy of W) shows as lower efficiency.

Providers:
- "torch_dequant": dequantize with torch ops to a bf16 (N, K) weight, then
  torch.matmul: what an engine without a fused kernel pays, every step.
- "triton" (CUDA/ROCm): ridgeline.kernels.dequant_gemv, the fused kernel (the
  quantized weight is read once and dequantized in registers); its config is
  chosen before timing under the budget `tune` and recorded as `config`.

Honest timing, as the decode GEMV probe (ridgeline.probes.gemv, whose rotation
helpers this uses; call counts and budgets as ridgeline.probes.moe): each case
rotates through `copies` quantized weights (with their scales) totalling >=
`rotate_factor` (4 on GPUs, 2 on the CPU) x the last-level cache; on a GPU every
sample cycles through all of them in a CUDA graph of >= 16 launches, on the CPU a
sample is one call and consecutive calls take the copies in turn
(ridgeline.probes.moe.launches_for). Before timing, the output is checked against
an fp64 reference from the same quantized operands (|y - ref| <= 2^-6 (|ref| +
rms(ref))); `validated` records it. On a GPU a case takes 10 ms warm-up + 40 ms of
samples (--quick 5 + 15); the default sweep (3 shapes x 7 batches x 2 dtypes x 2
providers = 84 cases) should take 10-30 s on an H100/H200 with Triton compiles and
tuning (an estimate: not yet run on a GPU). CPU: one small shape, a few seconds.

Options (ctx.options, or ctx.options["dequant"]):
    shapes: [[K, N], ...]   batches: [1, 2, ...]   dtypes: ["int8", "int4"]
    providers: [...]        rotate_factor, max_copies, tune, warmup_ms, rep_ms, min_reps,
                            max_reps

Run: `ridgeline profile --probes dequant [--quick]`; tests: tests/test_probes_dequant.py.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections import Counter
from typing import Any

from ridgeline.dtypes import bytes_per_element
from ridgeline.errors import Waived
from ridgeline.probes.base import Case, Probe, ProbeContext
from ridgeline.probes.gemv import (
    RTOL, TRITON_ON_CPU, check_output, gemv_fp64_reference, cache_bytes_for, rotation_copies,
)
from ridgeline.probes.moe import BUDGET_KEYS, launches_for, timing_budget
from ridgeline.records import make_record
from ridgeline.sizing.precision import INT4_GROUP_SIZE, SCALE_BYTES
from ridgeline.timing import Work

DTYPES = ("int8", "int4")             # weight dtypes; activations and outputs are bf16
PROVIDERS = ("torch_dequant", "triton")
ACT_DTYPE = "bf16"

# (K, N): Llama-3-8B attention, MLP up and MLP down
LLM_SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096)]
QUICK_SHAPES = [(4096, 14336)]
BATCHES = [1, 2, 4, 8, 16, 32, 64]
QUICK_BATCHES = [1, 4, 16, 64]
# the CPU: one small shape, the curve over batch (torch's int4 unpack alone is ~20 ms)
CPU_SHAPES = [(1024, 1024)]
CPU_QUICK_SHAPES = [(1024, 1024)]
CPU_BATCHES = [1, 4, 16, 64]
CPU_QUICK_BATCHES = [1, 8]


# --- work counts (pure) -------------------------------------------------------------

def group_size_for(dtype: str, k: int) -> int:
    """int4: the planner's group (128 along K); int8: one scale per output channel (G = K)."""
    return INT4_GROUP_SIZE if dtype == "int4" else k


def weight_bytes(n: int, k: int, dtype: str) -> int:
    return int(n * k * bytes_per_element(dtype))   # int4: K is even (two weights a byte)


def scale_bytes(n: int, k: int, group_size: int) -> int:
    """One fp16 scale per output channel and group of `group_size` along K."""
    return int(n * math.ceil(k / group_size) * SCALE_BYTES)


def bytes_read(batch: int, n: int, k: int, dtype: str, group_size: int | None = None) -> int:
    """Quantized weights once + their scales + bf16 activations."""
    g = group_size or group_size_for(dtype, k)
    return (weight_bytes(n, k, dtype) + scale_bytes(n, k, g)
            + batch * k * bytes_per_element(ACT_DTYPE))


def bytes_written(batch: int, n: int) -> int:
    return batch * n * bytes_per_element(ACT_DTYPE)


def flops(batch: int, n: int, k: int) -> int:
    return 2 * batch * n * k


# --- the formats (torch, imported on use) ---------------------------------------------

def pack_int4(q):
    """(N, K) integers in -8..7 -> (N, K/2) uint8, value + 8, low nibble = even k."""
    import torch

    u = (q.to(torch.int16) + 8).to(torch.uint8)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).contiguous()


def unpack_int4(p):
    """(N, K/2) uint8 -> (N, K) uint8 in 0..15, in k order."""
    import torch

    return torch.stack((p & 0xF, p >> 4), dim=-1).view(p.shape[0], -1)


def dequantize(q, scale, group_size: int | None, dtype):
    """The (N, K) weight in `dtype` from int8 (per channel) or packed int4 (per group).

    In bf16 this is the unfused engine's path (a few elementwise kernels writing a
    bf16 W); in float64 it is exact, the reference."""
    import torch

    s = scale.to(dtype)
    if q.dtype == torch.int8:
        return q.to(dtype) * s[:, None]
    w = unpack_int4(q).to(dtype) - 8                                  # (N, K), exact
    n, k = w.shape
    if k % group_size == 0:
        return (w.view(n, -1, group_size) * s[:, :, None]).view(n, k)
    return w * s.repeat_interleave(group_size, dim=1)[:, :k]


def make_weight(n: int, k: int, dtype: str, gen, dev):
    """Random quantized operands: (int8 (N, K) | uint8 (N, K/2), fp16 scales)."""
    import torch

    g = group_size_for(dtype, k)
    scale = (torch.rand(n, math.ceil(k / g), generator=gen, device=dev) + 0.5) / 64
    if dtype == "int8":
        q = torch.randint(-127, 128, (n, k), generator=gen, device=dev, dtype=torch.int8)
        return q, scale.view(n).to(torch.float16)
    q = torch.randint(0, 256, (n, k // 2), generator=gen, device=dev, dtype=torch.uint8)
    return q, scale.to(torch.float16)


def _options(ctx: ProbeContext) -> dict[str, Any]:
    opts = ctx.options or {}
    nested = opts.get("dequant")
    return nested if isinstance(nested, dict) else opts


class DequantProbe(Probe):
    name = "dequant"
    description = "weight-only int8/int4 decode GEMV (dequantization cost) against batch size"

    def __init__(self) -> None:
        self._pools: dict[tuple, dict[str, Any]] = {}
        self._uses_left: Counter = Counter()

    def available(self, ctx: ProbeContext) -> str | None:
        if importlib.util.find_spec("torch") is None:
            return "torch is not installed"
        return None

    def waiver(self, params: dict[str, Any], ctx: ProbeContext) -> str | None:
        """Why this (provider, dtype, shape) cannot run on ctx.device, or None."""
        provider, dtype, k = params["provider"], params["dtype"], int(params["k"])
        if dtype not in DTYPES:
            return f"unknown weight dtype {dtype} (the dequant probe takes int8, int4)"
        if provider not in PROVIDERS:
            return f"unknown provider {provider}"
        if dtype == "int4" and k % INT4_GROUP_SIZE:
            return f"int4 groups of {INT4_GROUP_SIZE} need K a multiple of {INT4_GROUP_SIZE}"
        if provider == "triton":
            if ctx.device.kind == "cpu":
                return TRITON_ON_CPU
            if importlib.util.find_spec("triton") is None:
                return "triton is not installed"
        return None

    def cases(self, ctx: ProbeContext) -> list[Case]:
        opts = _options(ctx)
        if ctx.device.kind == "cpu":
            shapes = CPU_QUICK_SHAPES if ctx.quick else CPU_SHAPES
            batches = CPU_QUICK_BATCHES if ctx.quick else CPU_BATCHES
        else:
            shapes = QUICK_SHAPES if ctx.quick else LLM_SHAPES
            batches = QUICK_BATCHES if ctx.quick else BATCHES
        shapes = [tuple(int(v) for v in s) for s in opts.get("shapes", shapes)]
        batches = [int(b) for b in opts.get("batches", batches)]
        dtypes = list(opts.get("dtypes", DTYPES))
        only = set(opts.get("providers", [])) or None

        out: list[Case] = []
        waived_seen: set[tuple] = set()
        self._uses_left = Counter()
        for dtype, (k, n), batch, provider in itertools.product(dtypes, shapes, batches,
                                                                PROVIDERS):
            if only and provider not in only:
                continue
            params = {"provider": provider, "dtype": dtype, "k": k, "n": n, "batch": batch,
                      "group_size": group_size_for(dtype, k)}
            reason = self.waiver(params, ctx)
            if reason:  # one waived case per (dtype, provider, reason), not a wall of them
                if (dtype, provider, reason) in waived_seen:
                    continue
                waived_seen.add((dtype, provider, reason))
            else:
                self._uses_left[(dtype, k, n)] += 1
            out.append(Case(params))
        return out

    def run(self, case: Case, ctx: ProbeContext) -> list[dict[str, Any]]:
        reason = self.waiver(case.params, ctx)
        if reason:
            raise Waived(reason)
        dtype, k, n = case["dtype"], int(case["k"]), int(case["n"])
        try:
            pool = self._pool(ctx, dtype, k, n)
            rec = self._measure(ctx, pool, case["provider"], dtype, k, n, int(case["batch"]))
        finally:
            self._release_if_done(dtype, k, n)
        return [rec]

    def _measure(self, ctx, pool, provider, dtype, k, n, batch) -> dict[str, Any]:
        import torch

        opts = _options(ctx)
        dev = ctx.torch_device
        copies, weights, scales = pool["copies"], pool["weights"], pool["scales"]
        group = group_size_for(dtype, k)
        gen = torch.Generator(device=dev)
        gen.manual_seed(7 * batch + 3)
        x = torch.randn(batch, k, generator=gen, device=dev, dtype=torch.bfloat16)  # (B, K)
        config = tune = None
        if provider == "torch_dequant":
            def call(i):   # dequantize (elementwise kernels), then a bf16 GEMV
                w = dequantize(weights[i], scales[i], group, torch.bfloat16)      # (N, K)
                return torch.matmul(x, w.t())                      # (B, K) x (K, N) -> (B, N)
        else:
            from ridgeline.kernels.dequant_gemv import dequant_gemv, select_config

            tune = str(opts.get("tune") or ("quick" if ctx.quick else "default"))
            cfg = select_config(x, weights[0], scales[0], group, tune)  # once, before timing

            def call(i):
                return dequant_gemv(x, weights[i], scales[i], group_size=group, config=cfg)
            config = str(cfg)

        y = call(0)
        ref = gemv_fp64_reference(x, dequantize(weights[0], scales[0], group, torch.float64), None)
        rtol = RTOL[ACT_DTYPE]
        validated, max_err = check_output(y, ref, rtol)
        del y, ref

        counter = itertools.count()

        def fn():
            return call(next(counter) % copies)

        br, bw, fl = bytes_read(batch, n, k, dtype, group), bytes_written(batch, n), \
            flops(batch, n, k)
        budget = {**timing_budget(ctx.device.kind, ctx.quick),
                  **{key: opts[key] for key in BUDGET_KEYS if key in opts}}
        timing = ctx.timer.time(fn, work=Work(bytes=br + bw, flops=fl), flush_cache=False,
                                launches_per_sample=launches_for(copies, ctx.device.kind),
                                **budget)
        rec = make_record(
            probe="dequant", provider=provider, kernel="gemv", dtype=dtype, timing=timing,
            validated=validated, bytes_read=br, bytes_written=bw, flops=fl,
            telemetry=ctx.telemetry(), max_abs_error=max_err,
            compute_dtype=ACT_DTYPE, act_dtype=ACT_DTYPE, batch=batch, m=batch, k=k, n=n,
            group_size=group,
        )
        wb = weight_bytes(n, k, dtype)
        seconds = rec["time_ms_median"] * 1e-3
        rec.update({
            "out_dtype": ACT_DTYPE, "weight_bytes": wb, "scale_bytes": scale_bytes(n, k, group),
            "weight_bw_GBps": wb / seconds / 1e9 if seconds > 0 else None,
            "copies": copies, "rotation_bytes": copies * pool["copy_bytes"],
            "cache_bytes": pool["cache_bytes"], "config": config, "tune_budget": tune,
            "rtol": rtol,
        })
        return rec

    # --- rotated weights -------------------------------------------------------------

    def _pool(self, ctx: ProbeContext, dtype: str, k: int, n: int) -> dict[str, Any]:
        key = (dtype, k, n)
        if key in self._pools:
            return self._pools[key]
        self._drop_all()
        import torch

        opts = _options(ctx)
        copy_bytes = weight_bytes(n, k, dtype) + scale_bytes(n, k, group_size_for(dtype, k))
        cache = cache_bytes_for(ctx.device)
        factor = float(opts.get("rotate_factor", 2.0 if ctx.device.kind == "cpu" else 4.0))
        free = ctx.free_memory_bytes()
        copies = rotation_copies(copy_bytes, cache, free, factor, max_copies=opts.get("max_copies"))
        if copies < 1:
            raise Waived(f"one {k}x{n} {dtype} weight needs {copy_bytes / 1e9:.2f} GB; "
                         f"{free / 1e9:.2f} GB free")
        dev = ctx.torch_device
        gen = torch.Generator(device=dev)
        weights, scales = [], []
        for i in range(copies):
            gen.manual_seed(2000 + i)
            q, s = make_weight(n, k, dtype, gen, dev)
            weights.append(q)
            scales.append(s)
        pool = {"weights": weights, "scales": scales, "copies": copies,
                "copy_bytes": copy_bytes, "cache_bytes": cache}
        self._pools[key] = pool
        return pool

    def _release_if_done(self, dtype: str, k: int, n: int) -> None:
        key = (dtype, k, n)
        if key in self._uses_left:
            self._uses_left[key] -= 1
            if self._uses_left[key] <= 0:
                del self._uses_left[key]
                self._drop_all()

    def _drop_all(self) -> None:
        if not self._pools:
            return
        self._pools.clear()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
