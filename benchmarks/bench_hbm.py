"""Bandwidth benchmark: ridgeline's copy and read ceilings against a STREAM-style reference.

The reference is measured in the same run, past the verified plateau (at its
largest working set), STREAM-style with plain multi-threaded torch calls (numpy's
copy is single-threaded, so it would under-read a multi-core host): Copy =
`b.copy_(a)` (2 N e bytes) and Dot = `torch.dot(a, b)` (2 N e bytes, BabelStream's
Dot), the median of 10 host-clock calls per allocation, best of REFERENCE_TRIES
fresh allocations: the same statistic as the ceiling (each size's median, its
fastest attempt), since a shared host's bandwidth only ever drops below it. Targets (issue 9), on the CPU:
- copy and read within 0.90-1.10 x the reference (issue 9 found 1.8x: a cache plateau),
  best of ROUNDS alternating profile/reference rounds on both sides;
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


ROUNDS = 3


@pytest.mark.benchmark(group="hbm")
def test_cpu_ceilings_match_a_stream_reference(benchmark, tmp_path):
    """Profile and reference alternate ROUNDS times and the best of each is compared: a shared
    host's memory bandwidth drifts by 1.5x over tens of seconds (28-47 GB/s measured with
    plain torch loops on the 2-core CI machine), so one profile against one reference taken
    a minute apart compares two moments, not two methods."""
    rounds = []

    def measure():
        for i in range(ROUNDS):
            ceil = _profile(tmp_path / f"round{i}")["ceilings"]
            largest = max(d["largest_size_bytes"]
                          for d in ceil["memory_bandwidth_detail"].values())
            rounds.append((ceil, stream_reference_GBps(largest)))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    ours, ref = {}, {}
    for i, (ceil, reference) in enumerate(rounds):
        for kernel in ("copy", "read"):
            d = ceil["memory_bandwidth_detail"][kernel]
            print(f"\nround {i} {kernel}: {d['bw_GBps']:.1f} GB/s {d['status']} "
                  f"{d.get('reason') or ''} plateau {[s >> 20 for s in d['plateau_sizes_bytes']]}"
                  f" MiB; reference {reference[kernel]:.1f} GB/s")
            if d["status"] == VERIFIED:
                ours[kernel] = max(ours.get(kernel, 0.0), d["bw_GBps"])
            ref[kernel] = max(ref.get(kernel, 0.0), reference[kernel])
    assert set(ours) == {"copy", "read"}, "no verified plateau in any round"
    ratios = {k: ours[k] / ref[k] for k in ("copy", "read")}
    benchmark.extra_info.update(ridgeline=ours, reference=ref, ratios=ratios)
    print(f"best of {ROUNDS}: ridgeline {ours}, reference {ref}, ratios "
          + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    for kernel in ("copy", "read"):
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
