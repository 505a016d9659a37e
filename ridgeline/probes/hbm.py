"""hbm: achieved memory bandwidth against working-set size (stream kernels).

    bw_GBps = (bytes_read + bytes_written) / time_ms_median / 1e6
    copy = 2 N e, read = N e, write = N e, triad = 3 N e   (BabelStream's counts)

Sizes run from below the reported last-level cache upwards, doubling, and the
sweep goes on (`more_cases`) until the rate stops changing: a verified plateau
(ridgeline.roofline.plateau: the largest sizes agree within a few percent over
two successive doublings), or until memory or MAX_SWEEP_BYTES runs out. Real
caches are often larger than the one the system reports (a VM host's L3,
MI300X's 256 MB Infinity Cache), so the reported size is only where the search
starts, never where the plateau is assumed to be. Plateau sizes whose samples
scatter by more than NOISY_SPREAD, and sizes that ran slower than a larger one
(no cache does that: they were disturbed), are measured again (MAX_ATTEMPTS in
all); the fit keeps each size's fastest attempt and flags the ceiling noisy if
the samples stay scattered.
Below the cache, samples time several back-to-back launches (a CUDA graph on a
GPU) and are labelled cache-resident by their size.

Providers: on a GPU the Triton kernels (ridgeline.kernels.stream) and the vendor
baseline (torch copy_/sum/fill_/add, i.e. the CUDA/HIP runtime's kernels); on the
CPU torch (multi-threaded) and numpy (full sweep only), with the host clock.

    ridgeline profile --probes hbm [--device cpu] [--quick]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ridgeline.errors import Waived
from ridgeline.kernels.stream_counts import ARRAYS_PER_KERNEL, stream_bytes
from ridgeline.probes.base import Case, Probe, ProbeContext
from ridgeline.records import fit_ready, make_record
from ridgeline.roofline.ceilings import bandwidth_plateau, fastest_per_size, plateau_floor_bytes
from ridgeline.roofline.trust import DEFAULT_CACHE_BYTES, sample_spread, scatters
from ridgeline.timing import Work

if TYPE_CHECKING:  # annotations only: importing a probe module loads no torch
    import torch

ELEMENT_BYTES = 4  # fp32 arrays, as BabelStream's float mode
# The sweep never grows past this working set: GPU, above any cache built so far; CPU,
# bounded by time (a 4 GiB case costs seconds on 2 cores); --quick stops sooner.
MAX_SWEEP_BYTES = {True: 32 * 2**30, False: 8 * 2**30}
MAX_QUICK_SWEEP_BYTES = {True: 8 * 2**30, False: 2 * 2**30}
# Share of free memory one working set may take (the rest: flush buffers, allocator slack).
FREE_MEMORY_SHARE = 0.4
# Measurements of one size in all, when its samples stay noisy.
MAX_ATTEMPTS = {True: 2, False: 3}  # quick: 2

# Python-level kernels of the CPU and vendor providers; numpy has no single-pass triad.
PROVIDER_KERNELS = {
    "triton": ("copy", "read", "write", "triad"),
    "torch": ("copy", "read", "write", "triad"),
    "numpy": ("copy", "read", "write"),
}


def bytes_moved(kernel: str, n_elements: int, element_bytes: int = ELEMENT_BYTES,
                provider: str = "torch") -> tuple[int, int]:
    """(bytes_read, bytes_written) per call; Triton's read also writes its partial sums."""
    if kernel == "read" and provider == "triton":
        from ridgeline.kernels.stream import bytes_moved as stream_bytes_with_partials

        return stream_bytes_with_partials(kernel, n_elements, element_bytes)
    return stream_bytes(kernel, n_elements, element_bytes)


PAGE_UNIT = 3 * 4096  # every kernel's arrays are whole pages


def round_size(size_bytes: float) -> int:
    """Rounded up to PAGE_UNIT, so a size meant as k x cache is never just below it."""
    return max(PAGE_UNIT, -(-int(size_bytes) // PAGE_UNIT) * PAGE_UNIT)


def sweep_sizes(cache_bytes: int, free_bytes: int, quick: bool, is_gpu: bool) -> list[int]:
    """The first working-set sizes (bytes); `HbmProbe.more_cases` extends them to a plateau.

    Full: from cache/8 doubling up to max(2 GiB, 32 x cache) on a GPU (16 x cache,
    at least 256 MiB, on the CPU). Quick: one cache-resident size, then the
    plateau floor (ceilings.plateau_floor_bytes) and two doublings: the fewest
    sizes that can verify a plateau. Capped at 40% of free memory.
    """
    top = max(2 * 2**30, 32 * cache_bytes) if is_gpu else max(256 * 2**20, 16 * cache_bytes)
    room = int(FREE_MEMORY_SHARE * free_bytes)
    if quick:
        floor = plateau_floor_bytes(cache_bytes)
        return sorted({round_size(min(s, room)) for s in (cache_bytes // 2, floor, 2 * floor,
                                                          4 * floor)})
    top = min(top, room)
    sizes, s = [], max(cache_bytes // 8, 2**20)
    while s <= top:
        sizes.append(s)
        s *= 2
    if sizes and top > 1.25 * sizes[-1]:
        sizes.append(top)  # the largest working set memory allows
    return sorted({round_size(min(s, top)) for s in sizes})


class HbmProbe(Probe):
    name = "hbm"
    description = "memory bandwidth vs working-set size: copy, read, write, triad"

    def providers(self, ctx: ProbeContext) -> list[str]:
        if ctx.device.is_gpu:
            return ["triton", "torch"]
        return ["torch"] if ctx.quick else ["torch", "numpy"]

    def cases(self, ctx: ProbeContext) -> list[Case]:
        cache = ctx.device.l2_cache_bytes or DEFAULT_CACHE_BYTES
        sizes = ctx.options.get("sizes") or sweep_sizes(cache, ctx.free_memory_bytes(), ctx.quick,
                                                        ctx.device.is_gpu)
        kernels = ctx.options.get("kernels") or ("copy", "read", "write", "triad")
        out = []
        for provider in ctx.options.get("providers") or self.providers(ctx):
            for kernel in kernels:
                if kernel not in PROVIDER_KERNELS[provider]:
                    continue
                for size in sizes:
                    out.append(Case({"kernel": kernel, "provider": provider, "size_bytes": int(size)}))
        return out

    def more_cases(self, records: list[dict[str, Any]], ctx: ProbeContext) -> list[Case]:
        """Extend each sweep that has no verified plateau yet; re-measure noisy plateau sizes."""
        if ctx.options.get("sizes"):
            return []  # an explicit sweep is measured as given
        cache = ctx.device.l2_cache_bytes or DEFAULT_CACHE_BYTES
        ok = [r for r in fit_ready(records, "hbm") if r.get("bw_GBps")]
        tried = {(r.get("kernel"), r.get("provider"), r.get("size_bytes"), r.get("attempt", 1))
                 for r in records if r.get("probe") == "hbm"}
        cap = (MAX_QUICK_SWEEP_BYTES if ctx.quick else MAX_SWEEP_BYTES)[ctx.device.is_gpu]
        # sizes are rounded up to whole pages: a doubling of 1 GiB may sit a page above 2 GiB
        limit = min(round_size(cap) + 2 * PAGE_UNIT, int(FREE_MEMORY_SHARE * ctx.free_memory_bytes()))
        out = []
        for kernel, provider in sorted({(r["kernel"], r["provider"]) for r in ok}):
            rows = [r for r in ok if r["kernel"] == kernel and r["provider"] == provider]
            detail = bandwidth_plateau(rows, cache)
            sizes = set(detail["plateau_sizes_bytes"])
            suspect = {r["size_bytes"] for r in fastest_per_size(rows)
                       if r["size_bytes"] in sizes and scatters(sample_spread(r))}
            suspect |= set(detail["disturbed_sizes_bytes"])
            again = []
            for size in sorted(suspect):
                attempt = 1 + max(a for k, p, s, a in tried if (k, p, s) == (kernel, provider, size))
                if attempt <= MAX_ATTEMPTS[ctx.quick]:
                    again.append(Case({"kernel": kernel, "provider": provider,
                                       "size_bytes": size, "attempt": attempt}))
            out += again
            if again or detail["from_plateau"]:
                continue  # flat (maybe noisy: a larger size would not cure that)
            nxt = round_size(2 * detail["largest_size_bytes"])
            fits = nxt <= limit and nxt // (ARRAYS_PER_KERNEL[kernel] * ELEMENT_BYTES) < 2**31
            if fits and (kernel, provider, nxt, 1) not in tried:
                out.append(Case({"kernel": kernel, "provider": provider, "size_bytes": nxt}))
        return out

    def run(self, case: Case, ctx: ProbeContext) -> list[dict[str, Any]]:
        kernel, provider = case["kernel"], case["provider"]
        n = case["size_bytes"] // (ARRAYS_PER_KERNEL[kernel] * ELEMENT_BYTES)
        if provider == "triton" and not ctx.device.is_gpu:
            raise Waived("Triton kernels need a GPU; the interpreter is for correctness tests only")
        if n >= 2**31:
            raise Waived("more than 2^31 elements per array")
        dev = ctx.torch_device
        arrays = [random_array(n, dev) for _ in range(ARRAYS_PER_KERNEL[kernel])]
        fn, validate = self._kernel(kernel, provider, arrays)
        fn()
        ok, err = validate()  # checked before any time counts
        cache = ctx.device.l2_cache_bytes or DEFAULT_CACHE_BYTES
        ws = case["size_bytes"]
        # cache-resident sizes: several launches per sample so launch cost does not dominate
        launches = 1 if ws >= cache else max(1, min(64, cache // max(ws, 1)))
        bytes_read, bytes_written = bytes_moved(kernel, n, ELEMENT_BYTES, provider)
        budget = (10.0, 40.0) if ctx.quick else (25.0, 100.0)
        timing = ctx.timer.time(fn, work=Work(bytes=bytes_read + bytes_written),
                                warmup_ms=budget[0], rep_ms=budget[1], flush_cache=False,
                                launches_per_sample=launches)
        ok_after, _ = validate()  # the timed runs must leave the same result
        return [make_record(
            probe=self.name, provider=provider, kernel=kernel, dtype="fp32", timing=timing,
            validated=ok and ok_after, bytes_read=bytes_read, bytes_written=bytes_written,
            size_bytes=ws, n_elements=n, cache_resident=ws < cache, attempt=case.get("attempt", 1),
            max_abs_error=err, telemetry=ctx.telemetry())]

    def _kernel(self, kernel: str, provider: str, arrays: list):
        """(callable to time, validator returning (ok, max_abs_error)) for one kernel/provider."""
        import torch

        scalar = 0.4
        if provider == "numpy":
            import numpy as np

            np_arrays = [a.numpy() for a in arrays]
            if kernel == "copy":
                src, dst = np_arrays
                return (lambda: np.copyto(dst, src)), (lambda: (bool(np.array_equal(dst, src)), 0.0))
            if kernel == "read":
                src = np_arrays[0]
                expected = float(arrays[0].sum(dtype=torch.float64))
                box = {}

                def read_np():
                    box["s"] = src.sum(dtype=np.float32)
                return read_np, lambda: _close_sum(box.get("s", np.nan), expected, src.size)
            if kernel == "write":
                dst = np_arrays[0]
                return (lambda: dst.fill(scalar)), (lambda: (bool(np.all(dst == np.float32(scalar))), 0.0))
        if provider == "triton":
            from ridgeline.kernels import stream as impl
        else:
            impl = None
        if kernel == "copy":
            src, dst = arrays
            fn = (lambda: impl.copy(src, dst)) if impl else (lambda: dst.copy_(src))
            return fn, lambda: (bool(torch.equal(dst, src)), 0.0)
        if kernel == "read":
            src = arrays[0]
            expected = float(src.sum(dtype=torch.float64))
            box = {}
            if impl:
                partials = torch.empty(-(-src.numel() // impl.BLOCK), dtype=torch.float32,
                                       device=src.device)

                def fn():
                    impl.read_partials(src, partials)
                return fn, lambda: _close_sum(float(partials.double().sum()), expected, src.numel())

            def fn_torch():
                box["s"] = src.sum(dtype=torch.float32)
            return fn_torch, lambda: _close_sum(float(box["s"]) if "s" in box else float("nan"),
                                                expected, src.numel())
        if kernel == "write":
            dst = arrays[0]
            fn = (lambda: impl.write(dst, scalar)) if impl else (lambda: dst.fill_(scalar))
            return fn, lambda: (bool(torch.all(dst == torch.tensor(scalar, dtype=dst.dtype))), 0.0)
        if kernel == "triad":
            a, b, c = arrays
            expected = b + scalar * c
            fn = (lambda: impl.triad(a, b, c, scalar)) if impl else (
                lambda: torch.add(b, c, alpha=scalar, out=a))
            return fn, lambda: (bool(torch.allclose(a, expected, rtol=1e-6, atol=1e-6)),
                                float((a - expected).abs().max()))
        raise ValueError(kernel)


# Random values in blocks of this many elements, tiled: memory neither compresses nor
# caches them (the working set is what it is), and a tiled fill costs a fifth of a
# full torch.rand on the CPU (1.2 s per GiB on 2 cores), which the sweep pays per size.
RANDOM_BLOCK_ELEMENTS = 1 << 20


def random_array(n: int, device) -> "torch.Tensor":
    """n fp32 values in [0, 1): a random block tiled to length n (different per call)."""
    import torch

    block = torch.rand(min(n, RANDOM_BLOCK_ELEMENTS), device=device, dtype=torch.float32)
    reps = -(-n // block.numel())
    return block.repeat(reps)[:n].contiguous() if reps > 1 else block


def _close_sum(got: float, expected: float, n: int) -> tuple[bool, float]:
    # fp32 accumulation of n values in [0, 1): relative error well under 1e-3 for blocked sums
    err = abs(float(got) - expected)
    return err <= 1e-3 * max(abs(expected), 1.0) + 1e-6 * n, err
