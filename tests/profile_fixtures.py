"""A hand-made measured profile of an H100-like GPU, for planner tests (no torch).

    path = synthetic_profile(tmp_path / "profile.json", bf16_status=NOISY)

Named like torch names an H100 SXM, so --compare-datasheet finds its datasheet entry;
every ceiling verified unless a test says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ridgeline.roofline.profile import new_profile, save_profile

VERIFIED = {"status": "verified", "reason": None, "spread": {"samples_p20_p80": 0.02}}
NOISY = {"status": "noisy", "reason": "samples spread 35%", "spread": {"samples_p20_p80": 0.35}}
UNVERIFIED = {"status": "unverified", "reason": "no plateau", "spread": {}}


def synthetic_cpu_profile(bf16_TFLOPS: float = 0.05,
                          device: dict[str, Any] | None = None) -> dict[str, Any]:
    """A plausible measured profile of a CPU (a real `ridgeline profile` takes minutes), as a
    dict: the validate tests plan the tiny model on it. `device`: this machine's CPU (needs
    torch) unless given."""
    if device is None:
        from ridgeline.device import cpu_device

        device = cpu_device().to_dict()
    prof = new_profile(device, command_line=["test"], versions={})
    prof["complete"] = True
    prof["ceilings"] = {"memory_bandwidth_GBps": {"read": 20.0},
                        "matmul_TFLOPS": {"fp32": 0.2, "bf16": bf16_TFLOPS}}
    prof["model"] = {"bandwidth_GBps": 20.0, "latency_floor_us": 10.0, "source": "measured",
                     "matmul": {"fp32": {"peak_TFLOPS": 0.2, "flops_half": 1e6},
                                "bf16": {"peak_TFLOPS": bf16_TFLOPS, "flops_half": 1e6}}}
    return prof


def synthetic_profile(path: str | Path, *, fp8: bool = True,
                      memory_bytes: int = 80_000_000_000,
                      read_status: dict[str, Any] = VERIFIED,
                      bf16_status: dict[str, Any] = VERIFIED,
                      name: str = "NVIDIA H100 80GB HBM3") -> Path:
    dev = {"name": name, "kind": "cuda", "memory_bytes": memory_bytes,
           "dtypes": {"fp32": True, "fp16": True, "bf16": True, "fp8_e4m3": fp8}}
    p = new_profile(dev, command_line=["test"], versions={})
    p["complete"] = True
    p["ceilings"] = {"memory_bandwidth_GBps": {"read": 3000.0},
                     "memory_bandwidth_detail": {"read": dict(read_status)},
                     "matmul_TFLOPS": {"bf16": 700.0, "fp8_e4m3": 1300.0},
                     "matmul_detail": {"bf16": dict(bf16_status), "fp8_e4m3": dict(VERIFIED)}}
    p["model"] = {"bandwidth_GBps": 3000.0, "latency_floor_us": 3.0, "source": "measured",
                  "matmul": {"bf16": {"peak_TFLOPS": 700.0, "flops_half": 1e9},
                             "fp8_e4m3": {"peak_TFLOPS": 1300.0, "flops_half": 2e9}}}
    p["interconnect"] = {"allreduce": {str(n): {"alpha_us": 10.0, "busbw_GBps": 350.0,
                                                "source": "measured", **VERIFIED}
                                       for n in (2, 4, 8)}}
    p["datasheet"] = None
    return save_profile(p, path)
