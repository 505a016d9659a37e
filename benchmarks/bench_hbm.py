"""Bandwidth benchmark: ridgeline's sustained copy against a plain numpy copy, same machine, same moment.

Target (issue 2): on the CPU, ridgeline's copy ceiling >= 0.95 x numpy's copy.
On an H100 SXM: read >= 3.15 TB/s, copy >= 2.9 TB/s (BabelStream: 3.18 Dot / 2.90 Copy).

    python -m pytest benchmarks/bench_hbm.py --benchmark-only -s
"""

import time

import numpy as np
import pytest
import torch

from ridgeline.device import cpu_device, get_device
from ridgeline.runner import run_profile


def numpy_copy_GBps(size_bytes: int, reps: int = 10) -> float:
    src = np.random.rand(size_bytes // 16).astype(np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2 * src.nbytes / float(np.median(times)) / 1e9


@pytest.mark.benchmark(group="hbm")
def test_cpu_copy_reaches_numpy(benchmark, tmp_path):
    device = cpu_device()
    profile = benchmark.pedantic(
        lambda: run_profile(device, ["hbm"], quick=True, out_dir=tmp_path, write_report=False),
        rounds=1, iterations=1)
    ours = profile["ceilings"]["memory_bandwidth_GBps"]["copy"]
    ref = numpy_copy_GBps(profile["ceilings"]["memory_bandwidth_detail"]["copy"]["plateau_min_bytes"])
    benchmark.extra_info.update(ridgeline_copy_GBps=ours, numpy_copy_GBps=ref)
    print(f"\nridgeline copy {ours:.1f} GB/s, numpy copy {ref:.1f} GB/s, ratio {ours / ref:.2f}")
    assert ours >= 0.95 * ref


@pytest.mark.gpu
@pytest.mark.benchmark(group="hbm")
def test_gpu_bandwidth_targets(benchmark, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    device = get_device("cuda:0")
    profile = benchmark.pedantic(
        lambda: run_profile(device, ["hbm"], out_dir=tmp_path, write_report=False),
        rounds=1, iterations=1)
    bw = profile["ceilings"]["memory_bandwidth_GBps"]
    benchmark.extra_info.update(bw)
    print(f"\n{device.name}: " + ", ".join(f"{k} {v:.0f} GB/s" for k, v in bw.items()))
    if "H100" in device.name and "HBM3" in device.name:
        assert bw["read"] >= 3150 and bw["copy"] >= 2900
