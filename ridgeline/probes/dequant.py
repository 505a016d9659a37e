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

Honest timing, as the decode GEMV probe (ridgeline.probes.rotation; calls per sample and
budgets as ridgeline.probes.moe): each case rotates through `copies` quantized weights
(with their scales) totalling >= `rotate_factor` (4 on GPUs, 2 on the CPU) x the
last-level cache; on a GPU every sample cycles through all of them in a CUDA graph of
>= 16 launches, on the CPU a sample is one call and consecutive calls take the copies
in turn (`launches_per_sample`). Before timing, the output is checked against
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

import itertools
import math
from typing import Any

from ridgeline.dtypes import bytes_per_element
from ridgeline.probes import rotation
from ridgeline.probes.base import Case, ProbeContext
from ridgeline.probes.gemv import (
    RTOL, check_output, gemv_fp64_reference, triton_waiver, tune_budget,
)
from ridgeline.probes.rotation import Rotation, RotatingProbe
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
# CPU timer budgets (not quick, quick): a sample is one call of up to ~50 ms (the int4
# unpack alone is ~20 ms), as the moe probe's; a GPU's are rotation.GPU_BUDGET
CPU_BUDGET = {False: rotation.SLOW_CALL_CPU_BUDGET, True: rotation.SLOW_CALL_CPU_BUDGET}
WEIGHT_SEED = 2000   # copy i of a weight is drawn from seed WEIGHT_SEED + i


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


def timing_budget(device_kind: str, quick: bool) -> dict[str, float]:
    """Timer budgets per case (see CPU_BUDGET)."""
    return rotation.timing_budget(device_kind, quick, CPU_BUDGET)


def launches_per_sample(copies: int, device_kind: str) -> int:
    """Calls per sample. GPU: a graph cycling through every copy (>= 16 launches). CPU: one
    call, consecutive calls taking the copies in turn: a sample of `copies` torch_dequant
    calls (tens of ms each on a small CPU) would be slow, and no launch gap needs hiding."""
    return rotation.launches_per_sample(copies, device_kind, cpu_whole_rotation=False)


class DequantProbe(RotatingProbe):
    name = "dequant"
    description = "weight-only int8/int4 decode GEMV (dequantization cost) against batch size"

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
            return triton_waiver(ctx.device)
        return None

    def cases(self, ctx: ProbeContext) -> list[Case]:
        opts = self.options(ctx)
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
        return self.plan(ctx, ({"provider": provider, "dtype": dtype, "k": k, "n": n,
                                "batch": batch, "group_size": group_size_for(dtype, k)}
                               for dtype, (k, n), batch, provider
                               in itertools.product(dtypes, shapes, batches, PROVIDERS)
                               if not only or provider in only))

    # --- one case --------------------------------------------------------------------

    def pool_key(self, params: dict[str, Any]) -> tuple:
        """The providers and batch sizes of one weight share its copies."""
        return (params["dtype"], int(params["k"]), int(params["n"]))

    def measure(self, ctx: ProbeContext, pool: Rotation, params: dict[str, Any]) -> dict[str, Any]:
        import torch

        provider = params["provider"]
        dtype, k, n = self.pool_key(params)
        batch = int(params["batch"])
        dev = ctx.torch_device
        copies, weights, scales = pool.copies, pool["weights"], pool["scales"]
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

            tune = tune_budget(ctx, self.name)
            cfg = select_config(x, weights[0], scales[0], group, tune)  # once, before timing

            def call(i):
                return dequant_gemv(x, weights[i], scales[i], group_size=group, config=cfg)
            config = str(cfg)

        y = call(0)
        ref = gemv_fp64_reference(x, dequantize(weights[0], scales[0], group, torch.float64), None)
        rtol = RTOL[ACT_DTYPE]
        validated, max_err = check_output(y, ref, rtol)
        del y, ref

        br, bw, fl = bytes_read(batch, n, k, dtype, group), bytes_written(batch, n), \
            flops(batch, n, k)
        timing = rotation.time_rotating(
            ctx, call, copies, Work(bytes=br + bw, flops=fl),
            launches=launches_per_sample(copies, ctx.device.kind),
            budget=rotation.with_overrides(timing_budget(ctx.device.kind, ctx.quick),
                                           self.options(ctx)))
        rec = make_record(
            probe="dequant", provider=provider, kernel="gemv", dtype=dtype, timing=timing,
            validated=validated, bytes_read=br, bytes_written=bw, flops=fl,
            telemetry=ctx.telemetry(), max_abs_error=max_err,
            compute_dtype=ACT_DTYPE, act_dtype=ACT_DTYPE, batch=batch, m=batch, k=k, n=n,
            group_size=group,
        )
        wb = weight_bytes(n, k, dtype)
        rec.update({
            "out_dtype": ACT_DTYPE, "weight_bytes": wb, "scale_bytes": scale_bytes(n, k, group),
            "weight_bw_GBps": rotation.rate_GBps(wb, rec),
            **pool.fields(), "config": config, "tune_budget": tune,
            "rtol": rtol,
        })
        return rec

    # --- rotated weights -------------------------------------------------------------

    def build_pool(self, ctx: ProbeContext, params: dict[str, Any]) -> Rotation:
        dtype, k, n = self.pool_key(params)
        dev = ctx.torch_device
        return rotation.weight_rotation(   # int8/int4 weights and their fp16 scales
            ctx, self.options(ctx),
            weight_bytes(n, k, dtype) + scale_bytes(n, k, group_size_for(dtype, k)),
            lambda need, free: (f"one {k}x{n} {dtype} weight needs {need / 1e9:.2f} GB; "
                                f"{free / 1e9:.2f} GB free"),
            WEIGHT_SEED, lambda gen: make_weight(n, k, dtype, gen, dev))
