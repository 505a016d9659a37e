"""scripts/gpu_run.sh on its CPU smoke path, and the targets table it prints last.

The smoke run is marked `slow` (deselect with -m "not slow"); it limits itself to
the matmul probe and skips validate and the benchmarks, so it takes ~20 s here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_run.sh"


def _targets_module():
    path = REPO / "scripts" / "gpu_targets.py"
    spec = importlib.util.spec_from_file_location("gpu_targets", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_targets"] = module   # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


T = _targets_module()


# --- the targets table ------------------------------------------------------------------

def _gemv(dtype, k, n, batch, bw_GBps, time_ms, provider="triton"):
    width = 1 if dtype.startswith("fp8") else 2
    return {"probe": "gemv", "status": "ok", "validated": True, "dtype": dtype, "k": k, "n": n,
            "batch": batch, "provider": provider, "bw_GBps": bw_GBps, "time_ms_median": time_ms,
            "weight_bytes": k * n * width}


def h200_profile(quick=False, duration_s=80.0):
    records = [
        _gemv("bf16", 4096, 14336, 1, 4200.0, 0.030),             # 117 MB: 93% of read
        _gemv("bf16", 4096, 14336, 1, 4000.0, 0.031, "torch"),    # slower provider: not used
        _gemv("bf16", 4096, 14336, 16, 3900.0, 0.032),            # 87%: the worst point
        _gemv("bf16", 4096, 4096, 1, 1000.0, 0.040),              # 33.5 MB: below 64 MB, ignored
        _gemv("bf16", 4096, 14336, 32, 100.0, 1.0),               # B > 16: ignored
        _gemv("fp8_e4m3", 4096, 14336, 1, 4100.0, 0.016),         # 1.875x bf16; 58.7 MB: no %
        _gemv("fp8_e4m3", 8192, 28672, 4, 4300.0, 0.060),         # 235 MB: 95.6%
        {**_gemv("fp8_e4m3", 8192, 28672, 8, 10.0, 9.0), "validated": False, "status": "invalid"},
    ]
    return {
        "provenance": {"device": {"name": "NVIDIA H200"}, "duration_s": duration_s,
                       "sweep": {"probes": ["hbm", "matmul", "gemv"], "quick": quick}},
        "complete": True,
        "ceilings": {
            "memory_bandwidth_GBps": {"read": 4500.0, "copy": 4300.0},
            "memory_bandwidth_detail": {
                "read": {"provider": "triton", "status": "verified"},
                "copy": {"provider": "torch", "status": "verified",
                         "per_provider_GBps": {"triton": 4300.0, "torch": 4350.0},
                         "per_provider_status": {"triton": "verified", "torch": "verified"}}},
            "matmul_TFLOPS": {"bf16": 790.0, "fp8_e4m3": 1350.0},
            "matmul_detail": {"bf16": {"m": 8192, "n": 8192, "k": 8192, "status": "verified"},
                              "fp8_e4m3": {"m": 8192, "n": 8192, "k": 8192, "status": "noisy"}}},
        "records": records,
    }


SWEEP = {"best": {"bf16": {"TFLOPS": 800.0, "m": 4096, "n": 16384, "k": 8192},
                  "fp8_e4m3": {"TFLOPS": 1500.0, "m": 8192, "n": 8192, "k": 16384}},
         "n_shapes": {"bf16": 50, "fp8_e4m3": 50}}
VALIDATIONS = {"bf16": {"model": "llama-3.1-8b", "summary": {
    "decode": {"median_error_profile": 0.05, "worst_error_profile": 0.09, "n_points": 12},
    "prefill": {"median_error_profile": 0.20, "worst_error_profile": 0.3, "n_points": 4}}}}


def by_name(targets):
    return {t.name: t for t in targets}


def test_targets_judge_an_h200_run():
    steps = {"profile": {"result": "ok", "wall_s": 85.0}, "quick": {"result": "ok", "wall_s": 25.0}}
    rows = by_name(T.all_targets(h200_profile(), h200_profile(quick=True, duration_s=17.0), SWEEP,
                                 VALIDATIONS, steps))
    expect = {
        "HBM read bandwidth": ("pass", 4500.0),
        "HBM copy bandwidth": ("pass", 4300.0),
        "copy: ridgeline / torch copy": ("pass", 4300.0 / 4350.0),
        "bf16 matmul": ("pass", 790.0),
        "bf16 matmul / best torch (sweep)": ("pass", 790.0 / 800.0),
        "fp8 matmul": ("FAIL", 1350.0),
        "fp8 matmul / best torch (sweep)": ("FAIL", 1350.0 / 1500.0),
        "GEMV bf16 B=1..16, W>=64MB: of read": ("FAIL", 3900.0 / 4500.0),
        "GEMV fp8_e4m3 B=1..16, W>=64MB: of read": ("pass", 4300.0 / 4500.0),
        "GEMV fp8 / bf16 tokens/s at B=1": ("pass", 0.030 / 0.016),
        "default profile time": ("pass", 85.0),
        "quick profile time": ("FAIL", 25.0),        # the step's wall clock, not duration_s
        "validate bf16 decode median error": ("pass", 0.05),
        "validate bf16 prefill median error": ("FAIL", 0.20),
        "validate fp8 decode median error": ("not measured", None),
        "validate fp8 prefill median error": ("not measured", None),
    }
    assert set(rows) == set(expect)
    for name, (result, value) in expect.items():
        assert rows[name].result == result, name
        assert rows[name].value == (pytest.approx(value) if value is not None else None), name
    assert rows["HBM read bandwidth"].status == "verified"
    assert rows["fp8 matmul"].status == "noisy"          # the profile's own ceiling status
    assert "K=4096 N=14336 B=16" in rows["GEMV bf16 B=1..16, W>=64MB: of read"].note


def test_h100_goals_and_devices_without_goals():
    prof = h200_profile()
    prof["provenance"]["device"]["name"] = "NVIDIA H100 80GB HBM3"
    rows = by_name(T.all_targets(prof))
    assert rows["HBM read bandwidth"].goal == ">= 3,150 GB/s"
    for name in ("NVIDIA H100 PCIe", "AMD EPYC 7B13"):
        prof["provenance"]["device"]["name"] = name
        rows = by_name(T.all_targets(prof))
        assert rows["HBM read bandwidth"].result == "n/a"            # no absolute goal here
        assert rows["copy: ridgeline / torch copy"].result == "pass"  # ratios still judged
        assert rows["default profile time"].result == "n/a"


def test_nothing_measured_without_inputs():
    targets = T.all_targets(None)
    assert targets and {t.result for t in targets} == {"not measured"}
    assert all(t.measured == "-" for t in targets)


def test_render_ends_with_the_counts(tmp_path):
    text = T.render(T.all_targets(h200_profile(), sweep=SWEEP), "NVIDIA H200")
    lines = text.splitlines()
    assert lines[0] == "== targets (issue 10) on NVIDIA H200"
    assert lines[1].split()[:4] == ["target", "measured", "goal", "result"]
    assert len(lines) == 2 + 16 + 1
    assert lines[-1].startswith("targets: ") and "FAIL" in lines[-1]


def test_main_reads_files_and_writes_json(tmp_path, capsys):
    import json

    (tmp_path / "p.json").write_text(json.dumps(h200_profile()))
    (tmp_path / "steps.tsv").write_text("profile\tok\t70\nquick\ttimed out after 60s\t60\n")
    assert T.main(["--profile", str(tmp_path / "p.json"), "--steps", str(tmp_path / "steps.tsv"),
                   "--quick-profile", str(tmp_path / "absent.json"),
                   "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("targets: ")
    doc = json.loads((tmp_path / "t.json").read_text())
    rows = {t["name"]: t for t in doc["targets"]}
    assert doc["device"] == "NVIDIA H200"
    assert rows["default profile time"]["value"] == 70.0
    assert rows["quick profile time"]["result"] == "not measured"


def test_targets_of_a_real_cpu_profile(tmp_path):
    """A profile made by the runner (CPU, fake timer: fast and deterministic) goes through the
    table: its matmul ceiling and its GEMV records are read where the GPU run's would be."""
    pytest.importorskip("torch")
    from ridgeline.device import cpu_device
    from ridgeline.runner import run_profile
    from ridgeline.timing import FakeTimer

    gemv = {"shapes": [[4096, 8192]], "batches": [1, 4], "dtypes": ["bf16"],
            "providers": ["torch"]}   # 67 MB of bf16 weights: above the 64 MB line
    profile = run_profile(cpu_device(), ["matmul", "gemv"], quick=True, out_dir=tmp_path,
                          timer=FakeTimer(bw_GBps=1000.0), options={"gemv": gemv})
    rows = by_name(T.all_targets(profile))
    assert rows["bf16 matmul"].value == profile["ceilings"]["matmul_TFLOPS"]["bf16"]
    assert rows["bf16 matmul"].result == "n/a"            # no absolute goal for a CPU
    assert rows["GEMV bf16 B=1..16, W>=64MB: of read"].result == "not measured"  # no hbm probe
    profile["ceilings"]["memory_bandwidth_GBps"]["read"] = 1100.0
    row = by_name(T.all_targets(profile))["GEMV bf16 B=1..16, W>=64MB: of read"]
    worst = min(r["bw_GBps"] for r in profile["records"] if r["probe"] == "gemv")
    assert row.value == pytest.approx(worst / 1100.0) and row.result == "FAIL"   # ~0.9 x 1000
    assert rows["quick profile time"].value == profile["provenance"]["duration_s"]


# --- the script, end to end on the CPU ---------------------------------------------------

def test_documented_environment_is_what_the_script_and_benchmarks_read():
    header, body = SCRIPT.read_text().split("set -uo pipefail", 1)
    documented = set(re.findall(r"RIDGELINE_[A-Z_]+", header))
    read_here = set(re.findall(r"\$\{?(RIDGELINE_[A-Z_]+)", body))
    exported = set(re.findall(r"export (RIDGELINE_[A-Z_]+)=", body)) | \
        set(re.findall(r" (RIDGELINE_[A-Z_]+)=\"", body))
    bench = (REPO / "benchmarks" / "bench_matmul.py").read_text()
    read_by_bench = set(re.findall(r"\"(RIDGELINE_[A-Z_]+)\"", bench))
    assert read_here <= documented
    assert documented == read_here | exported | read_by_bench
    assert {"RIDGELINE_PROFILE", "RIDGELINE_BENCH_DIR"} <= exported & read_by_bench



@pytest.mark.slow
def test_cpu_smoke_run(tmp_path):
    pytest.importorskip("torch")   # the script measures: it needs the `measure` extra
    out = tmp_path / "out"
    env = {**os.environ, "RIDGELINE_DEVICE": "cpu", "RIDGELINE_PROBES": "matmul",
           "RIDGELINE_SKIP": "validate,bench", "RIDGELINE_SCRATCH": str(tmp_path / "scratch")}
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8
    assert {"log.txt", "results.tgz", "summary.txt", "profile.json"} <= set(files)
    # the table is the last thing printed, and the log ends the same way
    table = (out / "summary.txt").read_text().strip().splitlines()
    assert table[0].startswith("== targets") and table[-1].startswith("targets: ")
    assert proc.stdout.strip().splitlines()[-len(table):] == table
    assert (out / "log.txt").read_text().strip().splitlines()[-len(table):] == table
    # the archive holds what was done: the profile, the step times
    with tarfile.open(out / "results.tgz") as tgz:
        names = tgz.getnames()
    assert any(n.endswith("profile/profile.json") for n in names)
    assert any(n.endswith("steps.tsv") for n in names)
    steps = (tmp_path / "scratch" / "steps.tsv").read_text()
    assert "profile\tok" in steps and "gpu-tests\tok" in steps
    assert "quick profile time" in "\n".join(table)


@pytest.mark.slow
def test_usage_error_without_outdir():
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage" in proc.stderr
