"""matmul: tensor throughput (TFLOP/s) per dtype over square and LLM-shaped GEMMs.

    C (M, N) = A (M, K) @ B (K, N)       flops = 2 M N K
    bytes (minimal) = (M K + K N) e_in + M N e_out

Dtypes: fp32 (IEEE), tf32 (fp32 storage, tensor cores), fp16, bf16 (fp32
accumulate), fp8 e4m3 through `torch._scaled_mm` (fp32 per-tensor scales, B
column-major, bf16 output; `float8_e4m3fnuz` on MI300). fp8 runs with
use_fast_accum=True, as serving engines (vLLM, SGLang, TensorRT-LLM) run forward
passes: cuBLASLt then keeps the sum in the tensor cores' accumulator instead of
promoting it to fp32 every few K steps, 10-20% faster on Hopper; each record
says so (`fast_accum`). torch checks only K and N (multiples of 16), so the
decode point M=1 runs too. A dtype the device lacks is a waived record with
the reason. Inputs are random normals (zeros run faster on tensor cores); the
L2 is flushed before each sample.

Every case is validated before its time counts: relative Frobenius error of C
against an fp32 (IEEE) product of the same (dequantized) inputs, with a
tolerance fit for the dtype (RELATIVE_TOLERANCE; for fast-accumulated fp8 it
grows with K, see fast_accum_tolerance).

Shapes: squares 1024..8192 (16384 on large GPUs), and decode/prefill GEMMs:
tokens M in 1..16384 against K x N in {4096x4096, 4096x14336, 8192x28672}.

    ridgeline profile --probes matmul [--quick]
"""

from __future__ import annotations

import contextlib
from typing import Any

from ridgeline.dtypes import bytes_per_element, fp8_format, is_fp8, torch_dtype
from ridgeline.errors import Waived
from ridgeline.probes.base import Case, Probe, ProbeContext
from ridgeline.records import make_record
from ridgeline.timing import Work

DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8_e4m3")  # widths, names: ridgeline.dtypes
RELATIVE_TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "fp16": 1e-2, "bf16": 2e-2,
                      "fp8_e4m3": 2e-2, "fp8_e4m3fnuz": 2e-2}
# fp8 GEMMs are timed as engines run them (see the module docstring)
FAST_ACCUM = True
# Relative error of a fast-accumulated fp8 GEMM at K = 4096: DeepSeek-V3 (sec. 3.3.2)
# measured up to ~2% on H800 from the ~14-bit accumulator; a truncating accumulator's
# error grows at worst linearly in K.
FAST_ACCUM_ERROR_AT_4K = 2e-2
LLM_WEIGHTS_KN = ((4096, 4096), (4096, 14336), (8192, 28672))
LLM_TOKENS = (1, 16, 128, 1024, 4096, 16384)


def matmul_flops(m: int, n: int, k: int) -> int:
    return 2 * m * n * k


def matmul_bytes(m: int, n: int, k: int, dtype: str) -> tuple[int, int]:
    """(bytes_read, bytes_written): A and B once, C once (bf16 out for fp8)."""
    e_in = bytes_per_element(dtype)
    e_out = bytes_per_element("bf16") if is_fp8(dtype) else e_in
    return (m * k + k * n) * e_in, m * n * e_out


def fast_accum_tolerance(k: int) -> float:
    """Relative error a fast-accumulated fp8 GEMM over K may add (linear in K, >= the 4K figure)."""
    return FAST_ACCUM_ERROR_AT_4K * max(1.0, k / 4096)


def tolerance(dtype: str, k: int, fast_accum: bool) -> float:
    """Relative Frobenius error allowed for this case."""
    extra = fast_accum_tolerance(k) if fast_accum and is_fp8(dtype) else 0.0
    return RELATIVE_TOLERANCE[dtype] + extra


def shapes(quick: bool, is_gpu: bool, memory_bytes: int) -> list[tuple[str, int, int, int]]:
    """(shape_kind, m, n, k) of the sweep."""
    if not is_gpu:
        squares = (256, 512) if quick else (256, 512, 1024, 2048)
        llm = [("llm", m, 2048, 1024) for m in ((1, 16, 128) if quick else (1, 16, 128, 512))]
        return [("square", s, s, s) for s in squares] + llm
    if quick:
        return [("square", 4096, 4096, 4096), ("square", 8192, 8192, 8192),
                ("llm", 1, 4096, 4096), ("llm", 4096, 14336, 4096)]
    squares = [1024, 2048, 4096, 8192] + ([16384] if memory_bytes >= 40 * 2**30 else [])
    out = [("square", s, s, s) for s in squares]
    for k, n in LLM_WEIGHTS_KN:
        out += [("llm", m, n, k) for m in LLM_TOKENS]
    return out


def fp8_dtype_name(device) -> str | None:
    """fp8_e4m3, or fp8_e4m3fnuz on MI300; None when the device has no fp8 matmul."""
    return fp8_format(device.dtypes)


def unsupported_reason(dtype: str, device) -> str | None:
    """Why `dtype` cannot run on this device, or None."""
    if is_fp8(dtype):
        if device.kind == "cpu":
            return "FP8 GEMM needs a GPU with FP8 tensor cores (sm_89+, MI300)"
        if not fp8_dtype_name(device):
            cc = device.compute_capability or device.gfx_arch
            return f"FP8 needs sm_89+ (or gfx942+); this device is {cc}"
        return None
    if dtype == "tf32" and not device.supports("tf32"):
        return ("TF32 is a tensor-core mode of CUDA GPUs (sm_80+)" if device.kind != "rocm"
                else f"TF32 is not offered on {device.gfx_arch}")
    if not device.supports(dtype):
        return f"{dtype} matmul is not supported on {device.name}"
    return None


@contextlib.contextmanager
def _fp32_precision(mode: str):
    """'highest' = IEEE fp32, 'high' = TF32 tensor cores; restored afterwards."""
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(mode)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def relative_error(c, ref) -> float:
    import torch

    diff = torch.linalg.vector_norm((c.float() - ref).flatten())
    return float(diff / torch.linalg.vector_norm(ref.flatten()).clamp_min(1e-30))


class MatmulProbe(Probe):
    name = "matmul"
    description = "GEMM TFLOP/s per dtype over square and LLM shapes"

    def cases(self, ctx: ProbeContext) -> list[Case]:
        dtypes = ctx.options.get("dtypes") or DTYPES
        sweep = ctx.options.get("shapes") or shapes(ctx.quick, ctx.device.is_gpu,
                                                    ctx.device.memory_bytes)
        out = []
        for dtype in dtypes:
            if dtype == "fp8_e4m3" and fp8_dtype_name(ctx.device) == "fp8_e4m3fnuz":
                dtype = "fp8_e4m3fnuz"
            for kind, m, n, k in sweep:
                out.append(Case({"dtype": dtype, "shape_kind": kind, "m": m, "n": n, "k": k}))
        return out

    def run(self, case: Case, ctx: ProbeContext) -> list[dict[str, Any]]:
        import torch

        dtype, m, n, k = case["dtype"], case["m"], case["n"], case["k"]
        reason = unsupported_reason(dtype, ctx.device)
        if reason:
            raise Waived(reason)
        e_in = bytes_per_element(dtype)
        need = (m * k + k * n) * (e_in + 4) + m * n * 6  # inputs, fp32 copies, outputs
        if need > 0.6 * ctx.free_memory_bytes():
            raise Waived(f"needs {need / 2**30:.1f} GiB, more than free memory allows")
        dev = ctx.torch_device
        gen = torch.Generator(device=dev).manual_seed(m * 131 + n * 7 + k)
        a32 = torch.randn(m, k, device=dev, generator=gen)
        b32 = torch.randn(n, k, device=dev, generator=gen)  # weights stored (N, K), row-major
        provider = "torch"
        precision = "high" if dtype == "tf32" else "highest"
        fast_accum = None  # the setting exists for fp8 GEMMs only
        if is_fp8(dtype):
            fn, c_of, a_ref, b_ref = self._fp8(a32, b32, dtype, m, n, k)
            provider, fast_accum = "torch_scaled_mm", FAST_ACCUM
        else:
            tdtype = torch_dtype(dtype)  # tf32: fp32 storage, run under precision "high"
            a, bt = a32.to(tdtype), b32.to(tdtype).t()  # (K, N) view of the (N, K) weight
            out = torch.empty(m, n, device=dev, dtype=tdtype)

            def fn():
                torch.matmul(a, bt, out=out)
            c_of = lambda: out  # noqa: E731
            a_ref, b_ref = a.float(), bt.float()
        with _fp32_precision(precision):
            fn()
            with _fp32_precision("highest"):
                ref = a_ref @ b_ref
            err = relative_error(c_of(), ref)
            del ref
            tol = tolerance(dtype, k, bool(fast_accum))
            validated = err <= tol
            bytes_read, bytes_written = matmul_bytes(m, n, k, dtype)
            flops = matmul_flops(m, n, k)
            budget = (10.0, 30.0) if ctx.quick else (25.0, 100.0)
            timing = ctx.timer.time(fn, work=Work(bytes=bytes_read + bytes_written, flops=flops),
                                    warmup_ms=budget[0], rep_ms=budget[1], flush_cache=True)
        return [make_record(
            probe=self.name, provider=provider, kernel="gemm", dtype=dtype, timing=timing,
            validated=validated, bytes_read=bytes_read, bytes_written=bytes_written, flops=flops,
            m=m, n=n, k=k, shape_kind=case["shape_kind"], relative_error=err,
            relative_tolerance=tol, fast_accum=fast_accum, telemetry=ctx.telemetry())]

    def _fp8(self, a32, b32, dtype: str, m: int, n: int, k: int):
        import torch

        # torch checks K (A's columns) and B's two dimensions, K and N; M is free (M=1 decode)
        if n % 16 or k % 16:
            raise Waived("torch._scaled_mm needs K and N to be multiples of 16")
        if not hasattr(torch, "_scaled_mm"):
            raise Waived("this torch has no torch._scaled_mm")
        f8 = torch_dtype(dtype)
        fmax = torch.finfo(f8).max
        scale_a = (a32.abs().max() / fmax).float().reshape(())
        scale_b = (b32.abs().max() / fmax).float().reshape(())
        a8 = (a32 / scale_a).to(f8)
        b8 = (b32 / scale_b).to(f8)          # (N, K) row-major
        b8_t = b8.t()                        # (K, N) column-major, as _scaled_mm wants

        def fn():
            return torch._scaled_mm(a8, b8_t, scale_a=scale_a, scale_b=scale_b,
                                    out_dtype=torch.bfloat16, use_fast_accum=FAST_ACCUM)
        box = {}

        def run_and_keep():
            box["c"] = fn()
        # reference: the same quantized inputs, dequantized, multiplied in fp32
        a_ref = a8.float() * scale_a
        b_ref = (b8.float() * scale_b).t()
        try:
            run_and_keep()
        except RuntimeError as exc:
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise Waived(f"torch._scaled_mm failed here: {first_line}") from None
        return run_and_keep, (lambda: box["c"]), a_ref, b_ref
