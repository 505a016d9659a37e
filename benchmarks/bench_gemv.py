"""Decode GEMV benchmarks: the Triton kernel against the vendor library, on a GPU.

    PYTHONPATH=. python -m pytest benchmarks/bench_gemv.py --benchmark-only

GPU only: skipped with a reason where torch sees no GPU, and (like every
pytest-benchmark test here) skipped unless --benchmark-only is given.

Each case runs the gemv probe's own case (ridgeline.probes.gemv: rotated weight
copies totalling 4x the L2, validation against an fp64 reference, device-event
timing of a CUDA graph that cycles through every copy; the Triton config tuned
once per tuning class under the default budget, torch._scaled_mm with
use_fast_accum=True), then hands the same graph to pytest-benchmark. It re-runs
no profile (scripts/gpu_run.sh runs it after the profile). The honest per-launch
numbers are the probe's (`extra_info`: time_us_median, weight_bw_GBps, TFLOPS);
pytest-benchmark's host-clock statistics are per graph replay + synchronize, for
its comparisons.
"""

from __future__ import annotations

import pytest
import torch

from ridgeline.timing import capture_graph

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.benchmark,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA/ROCm GPU; none is visible to torch"),
]

SHAPES = [(4096, 4096), (4096, 14336), (8192, 28672)]   # (K, N)
BATCHES = [1, 16, 128]


def _cases():
    for k, n in SHAPES:
        for batch in BATCHES:
            for dtype, providers in (("bf16", ("torch", "triton")),
                                     ("fp8", ("torch_scaled_mm", "triton"))):
                for provider in providers:
                    yield pytest.param(provider, dtype, k, n, batch,
                                       id=f"{provider}-{dtype}-K{k}-N{n}-B{batch}")


@pytest.mark.parametrize("provider,dtype,k,n,batch", list(_cases()))
def test_gemv(benchmark, provider, dtype, k, n, batch):
    from ridgeline.device import get_device
    from ridgeline.errors import Waived
    from ridgeline.probes.base import Case, ProbeContext
    from ridgeline.probes.gemv import GemvProbe, fp8_name
    from ridgeline.timing import EventTimer

    dev = get_device("cuda:0")
    dtype = fp8_name(dev) if dtype == "fp8" else dtype

    class KeepFn(EventTimer):
        """The probe's timer, keeping the timed callable for pytest-benchmark."""

        def time(self, fn, **kwargs):
            self.fn, self.launches = fn, kwargs.get("launches_per_sample", 1)
            return super().time(fn, **kwargs)

    timer = KeepFn(dev.index, dev.l2_cache_bytes)
    ctx = ProbeContext(device=dev, timer=timer)
    params = {"provider": provider, "dtype": dtype, "k": k, "n": n, "batch": batch}
    try:
        [rec] = GemvProbe().run(Case(params), ctx)
    except Waived as w:
        pytest.skip(w.reason)
    assert rec["validated"], f"output off the reference (max abs err {rec['max_abs_error']})"

    graph = capture_graph(timer.fn, launches=timer.launches)[0]

    def replay():
        graph.replay()
        torch.cuda.synchronize()

    benchmark.pedantic(replay, rounds=30, warmup_rounds=3, iterations=1)
    benchmark.extra_info.update({
        "device": dev.name, "launches_per_replay": timer.launches, "copies": rec["copies"],
        "time_us_median": rec["time_ms_median"] * 1e3, "weight_bw_GBps": rec["weight_bw_GBps"],
        "bw_GBps": rec["bw_GBps"], "TFLOPS": rec["TFLOPS"], "config": rec["config"],
        "tune_budget": rec["tune_budget"], "fast_accum": rec["fast_accum"],
    })
