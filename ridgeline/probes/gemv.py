"""Decode GEMV probe: y = x @ W.T against batch size on LLM weight shapes.

Decode multiplies a small batch of token vectors by every weight matrix, so its
cost is reading W once per step. This probe measures how much of the bandwidth
ceiling that really gets, and where added batch stops being free.

    y[b, n] = scale[n] * sum_k x[b, k] * W[n, k]   x (B, K), W (N, K) row-major

Work per call (pure functions below, tested to the byte):
    weight_bytes  = N*K*w_bytes
    bytes_read    = N*K*w_bytes + B*K*x_bytes (+ N*4 per-channel fp8 weight scales)
                    (+ B*4 per-token fp8 activation scales, torch_scaled_mm)
    bytes_written = B*N*y_bytes
    flops         = 2*B*N*K
    bw_GBps = (bytes_read + bytes_written) / t;  weight_bw_GBps = weight_bytes / t

Providers:
- "torch": torch.matmul(x, w.t()) (cuBLAS / hipBLASLt; MKL/oneDNN on the CPU),
  activations in the weight dtype (bf16, fp16; fp32 on the CPU).
- "torch_scaled_mm" (fp8 weights): torch._scaled_mm(x8, w8.t(), ...), W8A8: the
  activations are quantized to fp8 per token *outside* the timed region, with
  rowwise scales (per token, per output channel) where this torch/GPU takes
  them, else one scale per tensor (recorded as `scale_kind`), with
  use_fast_accum=True as serving engines run forward passes (`fast_accum` in the
  record; the validation tolerance widens with K for its shorter accumulator).
- "triton": ridgeline.kernels.gemv, weight-only fp8 (bf16 activations). Its
  config is chosen once per case before timing (select_config): tuned once per
  tuning class (batch row x narrow/wide N x short/long K) under the budget
  `tune` ("quick" with --quick: no timing; "default": a pruned list), recorded
  as `config` and `tune_budget`.

Honest timing (the rules ridgeline.probes.rotation keeps for the four rotating probes):
- Caches: each case rotates through `copies` weight copies whose total is at
  least `rotate_factor` (4 on GPUs, 2 on the CPU) times the last-level cache
  (ctx.device.l2_cache_bytes; at least 256 MiB on ROCm, whose Infinity Cache
  torch does not report), bounded by half the free memory. The timer gets
  flush_cache=False and launches_per_sample = a multiple of `copies` (at least
  16 on a GPU), so every sample cycles through all copies inside one CUDA graph
  and no host launch gap is timed. On the CPU too a sample is one whole rotation
  (`launches_per_sample`).
- Validation: before timing, the output for copy 0 is compared with an fp64
  reference computed from the dequantized operands the provider actually saw
  (|y - ref| <= rtol * (|ref| + rms(ref)), rtol from the output dtype).
  `validated` records the result; an unvalidated record is never fitted.
- Budgets: on a GPU 10 ms warm-up + 40 ms of samples per case (--quick: 5 + 15),
  see `timing_budget`; the default sweep (5 shapes x 10 batches x 2 dtypes x 2
  providers = 200 cases) then takes ~15-30 s on an H100/H200, tuning included.

Options (ctx.options, or ctx.options["gemv"]), for tests and the CLI:
    shapes: [[K, N], ...]     batches: [1, 2, ...]     dtypes: ["bf16", ...]
    providers: ["torch", ...]  rotate_factor: float     max_copies: int
    warmup_ms, rep_ms, min_reps, max_reps: timer budgets    tune: "quick" | "default" | "full"

Run: `ridgeline profile --probes gemv [--quick]`; tests: tests/test_probes_gemv.py.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ridgeline.dtypes import bytes_per_element, fp8_format, from_torch, is_fp8, torch_dtype
from ridgeline.errors import Waived
from ridgeline.probes import rotation
from ridgeline.probes.base import Case, ProbeContext, probe_options
from ridgeline.probes.matmul import FAST_ACCUM, fast_accum_tolerance
from ridgeline.probes.rotation import Rotation, RotatingProbe
from ridgeline.records import make_record
from ridgeline.timing import Work

# what this probe runs (widths, aliases: ridgeline.dtypes); fp8 weights are e4m3, OCP or fnuz
DTYPES = ("fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e4m3fnuz")

# (K, N) of LLM weights: Llama-3-8B attention/MLP, 70B attention/MLP
LLM_SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 8192), (8192, 28672)]
QUICK_SHAPES = [(4096, 4096), (4096, 14336)]
BATCHES = [2**i for i in range(10)]  # 1 .. 512
QUICK_BATCHES = [1, 4, 16, 128]
CPU_SHAPES = [(1024, 1024), (2048, 4096), (4096, 4096), (4096, 14336)]
CPU_QUICK_SHAPES = [(1024, 1024), (2048, 4096)]
CPU_BATCHES = [2**i for i in range(7)]  # 1 .. 64
CPU_QUICK_BATCHES = [1, 4, 16]
# CPU timer budgets (not quick, quick); a GPU's are rotation.GPU_BUDGET
CPU_BUDGET = {False: {}, True: {"warmup_ms": 5.0, "rep_ms": 20.0, "min_reps": 3}}
WEIGHT_SEED = 1000   # copy i of a weight is drawn from seed WEIGHT_SEED + i

TRITON_ON_CPU = "Triton kernels need a GPU; the interpreter is for correctness tests only"

# relative tolerance by output dtype: bf16/fp16 rounding (cuBLAS may also reduce split-K
# partials in the 16-bit type) with margin; fp32 accumulation-order differences
RTOL = {"bf16": 2**-6, "fp16": 2**-8, "fp32": 1e-3}


# --- work counts (pure) -------------------------------------------------------------

def weight_bytes(n: int, k: int, dtype: str) -> int:
    return n * k * bytes_per_element(dtype)


def bytes_read(batch: int, n: int, k: int, dtype: str, act_dtype: str = "bf16",
               scales: str = "per_channel") -> int:
    """Weights + activations (+ fp32 scales: per channel/token, or one per tensor)."""
    total = weight_bytes(n, k, dtype) + batch * k * bytes_per_element(act_dtype)
    per_tensor = scales == "per_tensor"
    if is_fp8(dtype):
        total += 4 if per_tensor else n * 4
    if is_fp8(act_dtype):
        total += 4 if per_tensor else batch * 4
    return total


def bytes_written(batch: int, n: int, out_dtype: str = "bf16") -> int:
    return batch * n * bytes_per_element(out_dtype)


def flops(batch: int, n: int, k: int) -> int:
    return 2 * batch * n * k


def launches_per_sample(copies: int, device_kind: str) -> int:
    """A multiple of `copies`: each sample reads every copy, >= 16 launches on a GPU graph.
    On the CPU too a sample is a whole rotation: the CPU shapes' calls take about a
    millisecond, so a sample of every copy stays short (the other rotating probes' calls
    take up to 50 ms, and take one call a sample)."""
    return rotation.launches_per_sample(copies, device_kind, cpu_whole_rotation=True)


def fp8_name(device) -> str:
    """The fp8 e4m3 flavour this device takes (fnuz on MI300)."""
    return fp8_format(device.dtypes) or "fp8_e4m3"


def timing_budget(device_kind: str, quick: bool) -> dict[str, float]:
    """Timer budgets per case: rotation.GPU_BUDGET on a GPU; on the CPU, --quick's short
    one, else the timer's own defaults."""
    return rotation.timing_budget(device_kind, quick, CPU_BUDGET)


def tune_budget(ctx: ProbeContext, probe: str = "gemv") -> str:
    """A Triton tuner's budget: the probe's options["tune"], else quick under --quick, else
    default (the dequant probe's fused kernel takes it the same way)."""
    return str(probe_options(ctx, probe).get("tune") or ("quick" if ctx.quick else "default"))


def triton_waiver(device) -> str | None:
    """Why a Triton provider cannot run on `device` (the CPU, no triton), or None."""
    if device.kind == "cpu":
        return TRITON_ON_CPU
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    return None


def providers_for(dtype: str) -> list[str]:
    return ["torch_scaled_mm", "triton"] if is_fp8(dtype) else ["torch", "triton"]


class GemvProbe(RotatingProbe):
    name = "gemv"
    description = "decode GEMV y = x @ W.T against batch size on LLM weight shapes"

    # --- what runs here --------------------------------------------------------------

    def waiver(self, params: dict[str, Any], ctx: ProbeContext) -> str | None:
        """Why this (provider, dtype, shape) cannot run on ctx.device, or None."""
        dev, provider, dtype = ctx.device, params["provider"], params["dtype"]
        if provider == "triton":
            if reason := triton_waiver(dev):
                return reason
            if dtype == "fp32":
                return "the Triton GEMV takes bf16/fp16/fp8 weights"
        if dtype not in DTYPES:
            return f"unknown dtype {dtype}"
        if is_fp8(dtype) and not dev.supports(dtype):
            if dev.kind == "cuda":
                sm = (dev.compute_capability or "?").replace(".", "")
                return f"FP8 needs sm_89+ (this GPU is sm_{sm})"
            if dev.kind == "rocm":
                return f"{dtype} is not supported on {dev.gfx_arch or 'this GPU'}"
            return "FP8 needs a GPU (sm_89+, or MI300 for fp8_e4m3fnuz)"
        if torch_dtype(dtype) is None:
            return f"this torch has no {dtype} dtype"
        if provider == "torch_scaled_mm":
            import torch

            if not hasattr(torch, "_scaled_mm"):
                return "this torch has no torch._scaled_mm"
            if params["k"] % 16 or params["n"] % 16:
                return "torch._scaled_mm needs K and N multiples of 16"
        return None

    def cases(self, ctx: ProbeContext) -> list[Case]:
        opts = self.options(ctx)
        dev = ctx.device
        if dev.kind == "cpu":
            shapes = CPU_QUICK_SHAPES if ctx.quick else CPU_SHAPES
            batches = CPU_QUICK_BATCHES if ctx.quick else CPU_BATCHES
            dtypes = ["bf16", "fp32", "fp8_e4m3"]   # fp8: one waived record, a result
        else:
            shapes = QUICK_SHAPES if ctx.quick else LLM_SHAPES
            batches = QUICK_BATCHES if ctx.quick else BATCHES
            dtypes = ["bf16", fp8_name(dev)]
        shapes = [tuple(int(v) for v in s) for s in opts.get("shapes", shapes)]
        batches = [int(b) for b in opts.get("batches", batches)]
        dtypes = list(opts.get("dtypes", dtypes))
        only = set(opts.get("providers", [])) or None
        return self.plan(ctx, ({"provider": provider, "dtype": dtype, "k": k, "n": n,
                                "batch": batch}
                               for dtype in dtypes for k, n in shapes for batch in batches
                               for provider in providers_for(dtype)
                               if not only or provider in only))

    # --- one case --------------------------------------------------------------------

    def pool_key(self, params: dict[str, Any]) -> tuple:
        """The providers and batch sizes of one weight share its copies."""
        return (params["dtype"], int(params["k"]), int(params["n"]))

    def measure(self, ctx: ProbeContext, pool: Rotation, params: dict[str, Any]) -> dict[str, Any]:
        import torch

        provider, dtype = params["provider"], params["dtype"]
        k, n, batch = int(params["k"]), int(params["n"]), int(params["batch"])
        opts = self.options(ctx)
        dev = ctx.torch_device
        copies, weights, scales = pool.copies, pool["weights"], pool["scales"]
        gen = torch.Generator(device=dev)
        gen.manual_seed(7 * batch + 1)
        act = "bf16" if is_fp8(dtype) else dtype
        x = torch.randn(batch, k, generator=gen, device=dev, dtype=torch_dtype(act))
        scale_kind = "per_channel" if is_fp8(dtype) else None
        config = None

        fast_accum = tune = None
        if provider == "torch":
            def call(i):
                return torch.matmul(x, weights[i].t())          # (B, K) x (K, N) -> (B, N)
            x_ref, w_scale_ref = x, None
        elif provider == "triton":
            from ridgeline.kernels.gemv import gemv, select_config

            tune = tune_budget(ctx)
            cfg = select_config(x, weights[0], scales[0], tune)  # tuned once per class

            def call(i):
                return gemv(x, weights[i], scales[i], config=cfg)
            x_ref, w_scale_ref = x, scales[0]
            config = str(cfg)
        else:  # torch_scaled_mm, as serving engines call it for forward passes
            call, x_ref, w_scale_ref, scale_kind, act = _scaled_mm_call(x, weights, scales, dtype)
            fast_accum = FAST_ACCUM

        y = call(0)
        ref = gemv_fp64_reference(x_ref, weights[0], w_scale_ref)
        out_dtype = from_torch(y.dtype)
        rtol = RTOL[out_dtype] + (fast_accum_tolerance(k) if fast_accum else 0.0)
        validated, max_err = check_output(y, ref, rtol)
        del y, ref

        br = bytes_read(batch, n, k, dtype, act, scales="per_tensor" if scale_kind == "tensorwise"
                        else "per_channel")
        bw = bytes_written(batch, n, out_dtype)
        fl = flops(batch, n, k)
        timing = rotation.time_rotating(
            ctx, call, copies, Work(bytes=br + bw, flops=fl),
            launches=launches_per_sample(copies, ctx.device.kind),
            budget=rotation.with_overrides(timing_budget(ctx.device.kind, ctx.quick), opts))
        wb = weight_bytes(n, k, dtype)
        rec = make_record(
            probe="gemv", provider=provider, kernel="gemv", dtype=dtype, timing=timing,
            validated=validated, bytes_read=br, bytes_written=bw, flops=fl,
            telemetry=ctx.telemetry(), max_abs_error=max_err,
            m=batch, n=n, k=k, batch=batch,
        )
        rec.update({
            "act_dtype": act, "out_dtype": out_dtype, "scale_kind": scale_kind,
            "weight_bytes": wb, "weight_bw_GBps": rotation.rate_GBps(wb, rec),
            **pool.fields(), "config": config, "rtol": rtol,
            "fast_accum": fast_accum, "tune_budget": tune,
        })
        return rec

    # --- rotated weights -------------------------------------------------------------

    def build_pool(self, ctx: ProbeContext, params: dict[str, Any]) -> Rotation:
        dtype, k, n = self.pool_key(params)
        dev = ctx.torch_device
        return rotation.weight_rotation(
            ctx, self.options(ctx), weight_bytes(n, k, dtype) + (n * 4 if is_fp8(dtype) else 0),
            lambda need, free: (f"one {k}x{n} {dtype} weight needs {need / 1e9:.2f} GB; "
                                f"{free / 1e9:.2f} GB free"),
            WEIGHT_SEED, lambda gen: _make_weight(n, k, dtype, gen, dev))


def _make_weight(n: int, k: int, dtype: str, gen, dev):
    """Random (N, K) weight in `dtype`; fp8 is quantized per output channel (amax / fp8 max)."""
    import torch

    tdtype = torch_dtype(dtype)
    if not is_fp8(dtype):
        return torch.randn(n, k, generator=gen, device=dev, dtype=tdtype), None
    fmax = float(torch.finfo(tdtype).max)
    w8 = torch.empty(n, k, device=dev, dtype=tdtype)
    scale = torch.empty(n, device=dev, dtype=torch.float32)
    rows = max(1, 2**25 // k)  # bound the fp32 temporary
    for r0 in range(0, n, rows):
        chunk = torch.randn(min(rows, n - r0), k, generator=gen, device=dev, dtype=torch.float32)
        s = chunk.abs().amax(dim=1).clamp(min=1e-12) / fmax
        w8[r0:r0 + chunk.shape[0]] = (chunk / s[:, None]).clamp(-fmax, fmax).to(tdtype)
        scale[r0:r0 + chunk.shape[0]] = s
    return w8, scale


def _scaled_mm_call(x, weights, scales, dtype):
    """W8A8 torch._scaled_mm: rowwise scales where supported, else one scale per tensor."""
    import torch

    tdtype = torch_dtype(dtype)
    fmax = float(torch.finfo(tdtype).max)
    xf = x.float()
    # activations quantized per token, outside the timed region
    sx = (xf.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / fmax).contiguous()   # (B, 1)
    x8 = (xf / sx).clamp(-fmax, fmax).to(tdtype)
    sw_rows = [s.view(1, -1) for s in scales]                                         # (1, N)

    def rowwise(i):
        return _first(torch._scaled_mm(x8, weights[i].t(), scale_a=sx, scale_b=sw_rows[i],
                                       out_dtype=torch.bfloat16, use_fast_accum=FAST_ACCUM))
    try:
        rowwise(0)
        return rowwise, x8.float() * sx, scales[0], "rowwise", dtype
    except (RuntimeError, NotImplementedError, ValueError):
        pass
    sa = sx.max().reshape(()).contiguous()
    xt8 = (xf / sa).clamp(-fmax, fmax).to(tdtype)
    one = torch.ones((), device=x.device, dtype=torch.float32)

    def tensorwise(i):
        return _first(torch._scaled_mm(xt8, weights[i].t(), scale_a=sa, scale_b=one,
                                       out_dtype=torch.bfloat16, use_fast_accum=FAST_ACCUM))
    try:
        tensorwise(0)
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise Waived(f"torch._scaled_mm refused this case: {first_line}") from exc
    return tensorwise, xt8.float() * sa, None, "tensorwise", dtype


def _first(out):
    return out[0] if isinstance(out, tuple) else out  # torch < 2.4 returned (out, amax)


def gemv_fp64_reference(x, w, w_scale):
    """fp64 (B, N) reference from dequantized operands, chunked over N to bound memory."""
    import torch

    n, k = w.shape
    xd = x.double()
    out = torch.empty(x.shape[0], n, dtype=torch.float64, device=x.device)
    rows = max(1, 2**24 // k)
    for r0 in range(0, n, rows):
        wc = w[r0:r0 + rows].double()
        if w_scale is not None:
            wc = wc * w_scale[r0:r0 + rows].double()[:, None]
        out[:, r0:r0 + rows] = xd @ wc.t()
    return out


def check_output(y, ref, rtol: float) -> tuple[bool, float]:
    """|y - ref| <= rtol * (|ref| + rms(ref)) everywhere; returns (ok, max |y - ref|)."""
    import torch

    err = (y.double() - ref).abs()
    rms = ref.pow(2).mean().sqrt()
    ok = bool(torch.isfinite(y).all()) and bool((err <= rtol * (ref.abs() + rms)).all())
    return ok, float(err.max())
