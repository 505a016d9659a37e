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

Honest timing:
- Caches: each case rotates through `copies` weight copies whose total is at
  least `rotate_factor` (4 on GPUs, 2 on the CPU) times the last-level cache
  (ctx.device.l2_cache_bytes; at least 256 MiB on ROCm, whose Infinity Cache
  torch does not report), bounded by half the free memory. The timer gets
  flush_cache=False and launches_per_sample = a multiple of `copies` (at least
  16 on a GPU), so every sample cycles through all copies inside one CUDA graph
  and no host launch gap is timed.
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
    warmup_ms, rep_ms, min_reps: timer budgets    tune: "quick" | "default" | "full"

Run: `ridgeline profile --probes gemv [--quick]`; tests: tests/test_probes_gemv.py.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections import Counter
from typing import Any

from ridgeline.dtypes import bytes_per_element, fp8_format, from_torch, is_fp8, torch_dtype
from ridgeline.errors import Waived
from ridgeline.probes.base import Case, Probe, ProbeContext
from ridgeline.probes.matmul import FAST_ACCUM, fast_accum_tolerance
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

MIN_GPU_LAUNCHES = 16      # launches per graph-replayed sample, at least
ROCM_MIN_CACHE_BYTES = 256 * 2**20   # MI300X Infinity Cache; torch reports only the 4 MB L2
DEFAULT_CACHE_BYTES = 256 * 2**20
MEMORY_FRACTION = 0.5      # of the free memory the weight copies may take

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


def rotation_copies(copy_bytes: int, cache_bytes: int, free_bytes: int,
                    factor: float = 4.0, mem_fraction: float = MEMORY_FRACTION,
                    max_copies: int | None = None) -> int:
    """Copies so their total is >= factor x cache, bounded by memory; 0 if one does not fit."""
    want = max(1, math.ceil(factor * cache_bytes / copy_bytes))
    if max_copies:
        want = min(want, int(max_copies))
    afford = int(mem_fraction * free_bytes // copy_bytes)
    return max(0, min(want, afford))


def launches_per_sample(copies: int, device_kind: str) -> int:
    """A multiple of `copies` (each sample reads every copy); >= 16 launches on a GPU graph."""
    if device_kind == "cpu":
        return copies
    return copies * math.ceil(MIN_GPU_LAUNCHES / copies)


def cache_bytes_for(device) -> int:
    """The last-level cache the rotated weights must exceed."""
    l2 = device.l2_cache_bytes or (32 * 2**20 if device.kind == "cpu" else DEFAULT_CACHE_BYTES)
    if device.kind == "rocm":
        l2 = max(l2, ROCM_MIN_CACHE_BYTES)
    return int(l2)


def fp8_name(device) -> str:
    """The fp8 e4m3 flavour this device takes (fnuz on MI300)."""
    return fp8_format(device.dtypes) or "fp8_e4m3"


def timing_budget(device_kind: str, quick: bool) -> dict[str, float]:
    """Timer budgets per case. A GPU sample is a graph of >= 16 launches (~0.2-3 ms), so
    15-40 ms of samples is 10-200 of them; with 200 cases in the default sweep, the
    timer's own 25 + 100 ms would make the GEMV probe alone take about half a minute."""
    if device_kind == "cpu":
        return {"warmup_ms": 5.0, "rep_ms": 20.0, "min_reps": 3} if quick else {}
    return {"warmup_ms": 5.0, "rep_ms": 15.0} if quick else {"warmup_ms": 10.0, "rep_ms": 40.0}


def tune_budget(ctx: ProbeContext) -> str:
    """The Triton tuner's budget: options["tune"], else quick under --quick, else default."""
    return str(_options(ctx).get("tune") or ("quick" if ctx.quick else "default"))


def providers_for(dtype: str) -> list[str]:
    return ["torch_scaled_mm", "triton"] if is_fp8(dtype) else ["torch", "triton"]


def _options(ctx: ProbeContext) -> dict[str, Any]:
    opts = ctx.options or {}
    nested = opts.get("gemv")
    return nested if isinstance(nested, dict) else opts


class GemvProbe(Probe):
    name = "gemv"
    description = "decode GEMV y = x @ W.T against batch size on LLM weight shapes"

    def __init__(self) -> None:
        self._pools: dict[tuple, dict[str, Any]] = {}
        self._uses_left: Counter = Counter()

    # --- what runs here --------------------------------------------------------------

    def available(self, ctx: ProbeContext) -> str | None:
        if importlib.util.find_spec("torch") is None:
            return "torch is not installed"
        return None

    def waiver(self, params: dict[str, Any], ctx: ProbeContext) -> str | None:
        """Why this (provider, dtype, shape) cannot run on ctx.device, or None."""
        dev, provider, dtype = ctx.device, params["provider"], params["dtype"]
        if provider == "triton":
            if dev.kind == "cpu":
                return TRITON_ON_CPU
            if importlib.util.find_spec("triton") is None:
                return "triton is not installed"
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
        opts = _options(ctx)
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

        out: list[Case] = []
        waived_seen: set[tuple] = set()
        self._uses_left = Counter()
        for dtype in dtypes:
            for k, n in shapes:
                for batch in batches:
                    for provider in providers_for(dtype):
                        if only and provider not in only:
                            continue
                        params = {"provider": provider, "dtype": dtype, "k": k, "n": n,
                                  "batch": batch}
                        reason = self.waiver(params, ctx)
                        if reason:  # one waived case per (dtype, provider, reason), not a wall
                            if (dtype, provider, reason) in waived_seen:
                                continue
                            waived_seen.add((dtype, provider, reason))
                        else:
                            self._uses_left[(dtype, k, n)] += 1
                        out.append(Case(params))
        return out

    # --- one case --------------------------------------------------------------------

    def run(self, case: Case, ctx: ProbeContext) -> list[dict[str, Any]]:
        reason = self.waiver(case.params, ctx)
        if reason:
            raise Waived(reason)
        provider, dtype = case["provider"], case["dtype"]
        k, n, batch = int(case["k"]), int(case["n"]), int(case["batch"])
        try:
            pool = self._pool(ctx, dtype, k, n)
            rec = self._measure(ctx, pool, provider, dtype, k, n, batch)
        finally:
            self._release_if_done(dtype, k, n)
        return [rec]

    def _measure(self, ctx, pool, provider, dtype, k, n, batch) -> dict[str, Any]:
        import torch

        opts = _options(ctx)
        dev = ctx.torch_device
        copies, weights, scales = pool["copies"], pool["weights"], pool["scales"]
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

        counter = itertools.count()

        def fn():
            return call(next(counter) % copies)

        br = bytes_read(batch, n, k, dtype, act, scales="per_tensor" if scale_kind == "tensorwise"
                        else "per_channel")
        bw = bytes_written(batch, n, out_dtype)
        fl = flops(batch, n, k)
        budget = {**timing_budget(ctx.device.kind, ctx.quick),
                  **{key: opts[key] for key in ("warmup_ms", "rep_ms", "min_reps") if key in opts}}
        launches = launches_per_sample(copies, ctx.device.kind)
        timing = ctx.timer.time(fn, work=Work(bytes=br + bw, flops=fl), flush_cache=False,
                                launches_per_sample=launches, **budget)
        wb = weight_bytes(n, k, dtype)
        rec = make_record(
            probe="gemv", provider=provider, kernel="gemv", dtype=dtype, timing=timing,
            validated=validated, bytes_read=br, bytes_written=bw, flops=fl,
            telemetry=ctx.telemetry(), max_abs_error=max_err,
            m=batch, n=n, k=k, batch=batch,
        )
        seconds = rec["time_ms_median"] * 1e-3
        rec.update({
            "act_dtype": act, "out_dtype": out_dtype, "scale_kind": scale_kind,
            "weight_bytes": wb, "weight_bw_GBps": wb / seconds / 1e9 if seconds > 0 else None,
            "copies": copies, "rotation_bytes": copies * pool["copy_bytes"],
            "cache_bytes": pool["cache_bytes"], "config": config, "rtol": rtol,
            "fast_accum": fast_accum, "tune_budget": tune,
        })
        return rec

    # --- rotated weights -------------------------------------------------------------

    def _pool(self, ctx: ProbeContext, dtype: str, k: int, n: int) -> dict[str, Any]:
        key = (dtype, k, n)
        if key in self._pools:
            return self._pools[key]
        self._drop_all()  # free the previous shape before sizing this one
        import torch

        opts = _options(ctx)
        copy_bytes = weight_bytes(n, k, dtype) + (n * 4 if is_fp8(dtype) else 0)
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
            gen.manual_seed(1000 + i)
            w, s = _make_weight(n, k, dtype, gen, dev)
            weights.append(w)
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
            torch.cuda.empty_cache()  # so free-memory sizing (here and in later probes) is true


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
