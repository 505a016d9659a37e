"""validate's drift check (ridgeline.validation.drift): the profile's own GEMV case, timed again."""

from __future__ import annotations

import json

import pytest

from ridgeline.validation import drift


def _profile(rows):
    return {"model": {"gemv_best_provider": rows}}


def _row(dtype, k, n, batch=1, bw=10.0, provider="torch"):
    return {"dtype": dtype, "k": k, "n": n, "batch": batch, "bw_GBps": bw, "provider": provider,
            "weight_bytes": k * n * 2}


def test_the_reference_is_the_largest_batch_1_gemv_of_the_weight_dtype():
    rows = [_row("bf16", 4096, 4096, bw=11.0), _row("bf16", 4096, 14336, bw=12.0),
            _row("bf16", 4096, 14336, batch=4, bw=16.0), _row("fp32", 8192, 8192, bw=9.0)]
    ref = drift.reference_case(_profile(rows), "bf16")
    assert ref == {"case": {"provider": "torch", "dtype": "bf16", "batch": 1, "k": 4096,
                            "n": 14336}, "profile_GBps": 12.0}
    # fp8 weights without an fp8 row: bf16's; nothing in bf16 either: any dtype's
    assert drift.reference_case(_profile(rows), "fp8")["case"]["dtype"] == "bf16"
    assert drift.reference_case(_profile(rows[3:]), "fp8")["case"]["dtype"] == "fp32"
    assert drift.reference_case(_profile([]), "bf16") is None
    assert drift.reference_case({}, "bf16") is None


def test_drift_above_ten_percent_is_a_note():
    ref = {"case": {"provider": "torch", "dtype": "bf16", "batch": 1, "k": 64, "n": 96},
           "profile_GBps": 10.0}
    quiet = drift.summarize(ref, 10.5, 9.6)
    assert quiet["before"] == pytest.approx(0.05) and quiet["after"] == pytest.approx(-0.04)
    assert drift.note(quiet) is None
    moved = drift.summarize(ref, 10.2, 7.5)
    line = drift.note(moved)
    assert "-25% after the points" in line and "before" not in line and "10 GB/s" in line
    assert drift.note(drift.summarize(ref, None, None)) is None
    assert drift.note(None) is None


def test_validate_times_the_reference_before_and_after(tmp_path):
    from ridgeline.cli import main
    from tests.test_commands_validate import FAST, cpu_profile

    path = cpu_profile(tmp_path / "profile.json")
    prof = json.loads(path.read_text())
    prof["model"]["gemv_best_provider"] = [_row("bf16", 256, 384, bw=5.0)]
    path.write_text(json.dumps(prof))
    rc = main(["validate", *FAST, "--batch", "1", "--context", "4", "--prefill", "none",
               "--profile", str(path), "-o", str(tmp_path / "out")])
    data = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert rc == 0
    d = data["drift"]
    assert d["case"] == {"provider": "torch", "dtype": "bf16", "batch": 1, "k": 256, "n": 384}
    assert d["before_GBps"] > 0 and d["after_GBps"] > 0
    assert d["before"] == pytest.approx(d["before_GBps"] / 5.0 - 1)
    md = (tmp_path / "out" / "validation.md").read_text()
    assert "device drift (the profile's bf16 GEMV 256x384, batch 1, torch" in md
