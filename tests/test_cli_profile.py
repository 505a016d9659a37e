"""The CLI end to end on the CPU device, and its error handling."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ridgeline.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_devices_lists_the_cpu_as_json(capsys):
    assert main(["devices", "--json"]) == 0
    devices = json.loads(capsys.readouterr().out)
    cpu = devices[-1]
    assert cpu["id"] == "cpu" and cpu["memory_bytes"] > 0 and cpu["dtypes"]["fp32"]


def test_unknown_device_and_probe_are_one_line_errors(capsys, tmp_path):
    assert main(["profile", "--device", "tpu:0", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown device" in err[0]
    assert main(["profile", "--device", "cpu", "--probes", "hbm,warp", "-o", str(tmp_path)]) == 2
    assert "unknown probe" in capsys.readouterr().err


def test_profile_cuda_without_gpu_says_so(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["profile", "--device", "cuda:0", "-o", str(tmp_path)]) == 2
    assert "no GPU is visible" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_cpu_profile_end_to_end(tmp_path):
    """The CI profile: every default probe, on the CPU, through the installed entry point."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "ridgeline", "profile", "--device", "cpu",
                           "--quick", "-o", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    profile = json.loads((out / "profile.json").read_text())
    assert profile["complete"] is True
    assert profile["provenance"]["device"]["kind"] == "cpu"
    assert set(profile["ceilings"]["memory_bandwidth_GBps"]) >= {"copy", "read", "write", "triad"}
    assert "fp32" in profile["ceilings"]["matmul_TFLOPS"]
    assert (out / "records.csv").exists()
    assert "copy bandwidth" in proc.stdout
