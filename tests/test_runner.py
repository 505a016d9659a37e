"""The runner: end to end with the fake timer, Ctrl-C keeps records, errors become records."""

import json

import pytest

from ridgeline.device import cpu_device
from ridgeline.errors import Waived
from ridgeline.probes.base import Case, Probe
from ridgeline.roofline.profile import load_profile
from ridgeline.runner import run_profile
from ridgeline.timing import FakeTimer

SMALL = {"hbm": {"sizes": [3 * 4096 * 5, 3 * 4096 * 40], "providers": ["torch"]},
         "matmul": {"dtypes": ["fp32", "bf16", "fp8_e4m3"],
                    "shapes": [("square", 64, 64, 64), ("llm", 16, 96, 64)]}}


def test_fake_timer_pipeline_writes_a_valid_profile_and_csv(tmp_path):
    device = cpu_device()
    device.l2_cache_bytes = 3 * 4096 * 8  # so the larger size counts as the plateau
    profile = run_profile(device, ["hbm", "matmul"], out_dir=tmp_path,
                          timer=FakeTimer(bw_GBps=500.0, peak_TFLOPS=2.0, latency_us=0.0),
                          options=SMALL, versions={})
    loaded = load_profile(tmp_path / "profile.json")
    assert loaded["complete"] is True
    bw = loaded["ceilings"]["memory_bandwidth_GBps"]
    assert set(bw) == {"copy", "read", "write", "triad"}
    assert bw["copy"] == pytest.approx(500.0 / 1.02, rel=0.01)  # the fake timer's median
    assert set(loaded["ceilings"]["matmul_TFLOPS"]) == {"fp32", "bf16"}
    assert any(w["dtype"] == "fp8_e4m3" and "FP8" in w["reason"] for w in loaded["waived"])
    csv = (tmp_path / "records.csv").read_text().splitlines()
    header = csv[0].split(",")
    for col in ("probe", "provider", "dtype", "size_bytes", "m", "n", "k", "batch",
                "time_ms_median", "time_ms_p20", "time_ms_p80", "time_ms_min", "bw_GBps",
                "TFLOPS", "validated"):
        assert col in header
    assert len(csv) - 1 == len(profile["records"])
    assert not (tmp_path / "records.partial.jsonl").exists()


class _InterruptingProbe(Probe):
    name = "hbm"

    def cases(self, ctx):
        return [Case({"i": i}) for i in range(5)]

    def run(self, case, ctx):
        if case["i"] == 2:
            raise KeyboardInterrupt
        if case["i"] == 1:
            raise Waived("not here")
        return [{"probe": "hbm", "kernel": "copy", "provider": "torch", "size_bytes": 10**9,
                 "bw_GBps": 100.0, "status": "ok", "validated": True, "i": case["i"]}]


class _BrokenProbe(_InterruptingProbe):
    def run(self, case, ctx):
        if case["i"] == 0:
            raise RuntimeError("kernel exploded\nlong traceback text")
        import torch

        if case["i"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")
        return super().run(case, ctx) if case["i"] != 2 else []


def test_ctrl_c_keeps_finished_records_and_marks_incomplete(tmp_path, monkeypatch):
    monkeypatch.setattr("ridgeline.runner.get_probe", lambda name: _InterruptingProbe())
    profile = run_profile(cpu_device(), ["hbm"], out_dir=tmp_path, timer=FakeTimer(),
                          versions={})
    loaded = load_profile(tmp_path / "profile.json")
    assert loaded["complete"] is False and "interrupted" in loaded["incomplete_reason"]
    assert [r.get("i") for r in loaded["records"]] == [0, 1]
    assert loaded["records"][1]["status"] == "waived"
    assert loaded["ceilings"]["memory_bandwidth_GBps"]["copy"] == 100.0  # fitted from what finished
    detail = loaded["ceilings"]["memory_bandwidth_detail"]["copy"]
    assert detail["status"] == "unverified" and "only 1 size" in detail["reason"]
    assert profile["records"] == loaded["records"]


def test_errors_and_oom_become_one_line_records(tmp_path, monkeypatch):
    monkeypatch.setattr("ridgeline.runner.get_probe", lambda name: _BrokenProbe())
    profile = run_profile(cpu_device(), ["hbm"], out_dir=tmp_path, timer=FakeTimer(),
                          versions={})
    failed, oom = profile["records"][0], profile["records"][1]
    assert failed["status"] == "failed" and failed["reason"] == "RuntimeError: kernel exploded"
    assert oom["status"] == "waived" and oom["reason"].startswith("out of device memory")
    assert len(profile["records"]) == 4  # case 2 produced no record
    # a failed case is a hole in the sweep: the run says so
    assert profile["complete"] is False
    assert "1 hbm case(s) failed" in profile["incomplete_reason"]
    assert any("incomplete: 1 hbm case(s) failed" in w for w in profile["warnings"])
