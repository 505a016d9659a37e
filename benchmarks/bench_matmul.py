"""Matmul benchmark: the profile's best TFLOP/s per dtype against the targets.

Targets (issue 2) on an H100 SXM: BF16 >= 790 TFLOP/s, FP8 >= 1400 TFLOP/s;
the default hbm+matmul profile under 90 s and --quick under 20 s.

    python -m pytest benchmarks/bench_matmul.py --benchmark-only -s
"""

import time

import pytest
import torch

from ridgeline.device import get_device
from ridgeline.runner import run_profile


@pytest.mark.gpu
@pytest.mark.benchmark(group="matmul")
@pytest.mark.parametrize("quick", [True, False])
def test_gpu_profile_targets(benchmark, tmp_path, quick):
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    device = get_device("cuda:0")
    t0 = time.monotonic()
    profile = benchmark.pedantic(
        lambda: run_profile(device, ["hbm", "matmul"], quick=quick, out_dir=tmp_path,
                            write_report=False), rounds=1, iterations=1)
    wall_s = time.monotonic() - t0
    mm = profile["ceilings"]["matmul_TFLOPS"]
    benchmark.extra_info.update(mm, wall_s=wall_s)
    print(f"\n{device.name} quick={quick} in {wall_s:.0f} s: "
          + ", ".join(f"{k} {v:.0f}" for k, v in mm.items()))
    if "H100" in device.name and "HBM3" in device.name:
        assert wall_s < (20 if quick else 90)
        if not quick:
            assert mm["bf16"] >= 790 and mm.get("fp8_e4m3", 0) >= 1400
