"""Bandwidth benchmark: ridgeline's copy and read ceilings against a STREAM-style reference.

The reference is measured in the same run, past the verified plateau (at its
largest working set), STREAM-style with plain multi-threaded torch calls (numpy's
copy is single-threaded, so it would under-read a multi-core host): Copy =
`b.copy_(a)` (2 N e bytes) and Dot = `torch.dot(a, b)` (2 N e bytes, BabelStream's
Dot), the median of 10 host-clock calls per allocation, best of REFERENCE_TRIES
fresh allocations: the same statistic as the ceiling (each size's median, its
fastest attempt), since a shared host's bandwidth only ever drops below it. Targets (issue 9), on the CPU:
- copy and read within 0.90-1.10 x the reference (issue 9 found 1.8x: a cache plateau);
- on a loaded machine (two busy processes) each ceiling is either flagged
  (noisy / unverified) or within 0.90-1.10 x the idle one: never quoted wrong silently.
On an H100 SXM: read >= 3.15 TB/s, copy >= 2.9 TB/s (BabelStream: 3.18 Dot / 2.90 Copy).

    python -m pytest benchmarks/bench_hbm.py --benchmark-only -s
"""

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ridgeline.device import cpu_device, get_device
from ridgeline.roofline.trust import VERIFIED
from ridgeline.runner import run_profile



def _median_s(fn, reps: int = 10) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


REFERENCE_TRIES = 3


def stream_reference_GBps(working_set_bytes: int) -> dict[str, float]:
    """STREAM Copy and Dot at this working set (two fp32 arrays of half of it each)."""
    n = working_set_bytes // 8
    moved = 2 * 4 * n
    best = {"copy": 0.0, "read": 0.0}
    for _ in range(REFERENCE_TRIES):
        a, b = torch.rand(n), torch.rand(n)
        best["copy"] = max(best["copy"], moved / _median_s(lambda: b.copy_(a)) / 1e9)
        best["read"] = max(best["read"], moved / _median_s(lambda: torch.dot(a, b)) / 1e9)
        del a, b
    return best


def _profile(tmp_path):
    return run_profile(cpu_device(), ["hbm"], quick=True, out_dir=tmp_path,
                       options={"hbm": {"kernels": ["copy", "read"]}})


@pytest.mark.benchmark(group="hbm")
def test_cpu_ceilings_match_a_stream_reference(benchmark, tmp_path):
    profile = benchmark.pedantic(lambda: _profile(tmp_path), rounds=1, iterations=1)
    ceil = profile["ceilings"]
    for kernel in ("copy", "read"):
        d = ceil["memory_bandwidth_detail"][kernel]
        print(f"\n{kernel}: {d['bw_GBps']:.1f} GB/s {d['status']} {d.get('reason') or ''} "
              f"plateau {[s >> 20 for s in d['plateau_sizes_bytes']]} MiB")
    largest = max(d["largest_size_bytes"] for d in ceil["memory_bandwidth_detail"].values())
    ref = stream_reference_GBps(largest)
    ratios = {k: ceil["memory_bandwidth_GBps"][k] / ref[k] for k in ("copy", "read")}
    benchmark.extra_info.update(ridgeline=ceil["memory_bandwidth_GBps"], reference=ref,
                                ratios=ratios)
    print(f"reference at {largest >> 20} MiB: copy {ref['copy']:.1f}, dot {ref['read']:.1f} GB/s; "
          f"ratios copy {ratios['copy']:.2f}, read {ratios['read']:.2f}")
    for kernel in ("copy", "read"):
        assert ceil["memory_bandwidth_detail"][kernel]["status"] == VERIFIED
        assert 0.90 <= ratios[kernel] <= 1.10, (kernel, ratios)


@pytest.mark.benchmark(group="hbm")
def test_cpu_ceilings_under_load_are_flagged_or_right(benchmark, tmp_path):
    idle = _profile(tmp_path / "idle")["ceilings"]["memory_bandwidth_GBps"]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        loaded = benchmark.pedantic(lambda: _profile(tmp_path / "loaded"), rounds=1, iterations=1)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    for kernel in ("copy", "read"):
        d = loaded["ceilings"]["memory_bandwidth_detail"][kernel]
        ratio = d["bw_GBps"] / idle[kernel]
        print(f"\nloaded {kernel}: {d['bw_GBps']:.1f} GB/s ({ratio:.2f} x idle), {d['status']}: "
              f"{d.get('reason')}")
        assert d["status"] != VERIFIED or 0.90 <= ratio <= 1.10, (kernel, ratio, d)
    print("warnings:", *loaded["warnings"], sep="\n  ")


@pytest.mark.gpu
@pytest.mark.benchmark(group="hbm")
def test_gpu_bandwidth_targets(benchmark, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    device = get_device("cuda:0")
    profile = benchmark.pedantic(
        lambda: run_profile(device, ["hbm"], out_dir=tmp_path),
        rounds=1, iterations=1)
    bw = profile["ceilings"]["memory_bandwidth_GBps"]
    benchmark.extra_info.update(bw)
    print(f"\n{device.name}: " + ", ".join(f"{k} {v:.0f} GB/s" for k, v in bw.items()))
    if "H100" in device.name and "HBM3" in device.name:
        assert bw["read"] >= 3150 and bw["copy"] >= 2900
