"""validate's drift check (ridgeline.validation.drift): two of the profile's own cases, a GEMV
and a matmul, timed again before and after the points."""

from __future__ import annotations

import json

import pytest

from ridgeline.validation import drift


def _row(dtype, k, n, batch=1, bw=10.0, provider="torch"):
    return {"dtype": dtype, "k": k, "n": n, "batch": batch, "bw_GBps": bw, "provider": provider,
            "weight_bytes": k * n * 2}


def _profile(rows=(), matmul=None):
    prof = {"model": {"gemv_best_provider": list(rows)}}
    if matmul:
        prof["ceilings"] = {"memory_bandwidth_GBps": {"read": 20.0},
                            "matmul_TFLOPS": {d: v["TFLOPS"] for d, v in matmul.items()},
                            "matmul_detail": matmul}
    return prof


MATMUL = {"bf16": {"provider": "torch", "m": 96, "n": 80, "k": 64, "shape_kind": "square",
                   "TFLOPS": 0.3},
          "fp32": {"provider": "torch", "m": 128, "n": 128, "k": 128, "TFLOPS": 0.1}}


def test_the_references_are_the_largest_batch_1_gemv_and_the_matmul_ceiling_of_the_dtype():
    rows = [_row("bf16", 4096, 4096, bw=11.0), _row("bf16", 4096, 14336, bw=12.0),
            _row("bf16", 4096, 14336, batch=4, bw=16.0), _row("fp32", 8192, 8192, bw=9.0)]
    gemv, matmul = drift.references(_profile(rows, MATMUL), "bf16")
    assert (gemv.kind, gemv.case, gemv.profile_rate) == (
        "gemv", {"provider": "torch", "dtype": "bf16", "batch": 1, "k": 4096, "n": 14336}, 12.0)
    assert (matmul.kind, matmul.case, matmul.profile_rate) == (
        "matmul", {"dtype": "bf16", "shape_kind": "square", "m": 96, "n": 80, "k": 64}, 0.3)
    # fp8 weights without fp8 cases: bf16's; nothing in bf16 either: any dtype's
    assert [r.case["dtype"] for r in drift.references(_profile(rows, MATMUL), "fp8")] == [
        "bf16", "bf16"]
    assert drift.references(_profile(rows[3:]), "fp8")[0].case["dtype"] == "fp32"
    assert drift.references(_profile(), "bf16") == []
    assert drift.references({}, "bf16") == []


def test_a_change_above_ten_percent_is_a_note():
    refs = drift.references(_profile([_row("bf16", 64, 96)], MATMUL), "bf16")
    quiet = drift.summarize(refs, [[10.5], [0.29]], [[9.6], [0.31]])
    assert quiet["gemv"]["before_change"] == pytest.approx(0.05)
    assert quiet["matmul"]["after_change"] == pytest.approx(0.31 / 0.3 - 1)
    assert drift.note(quiet) is None
    moved = drift.summarize(refs, [[10.2], [0.3]], [[7.5], [0.2]])
    line = drift.note(moved)
    assert "bf16 GEMV 64x96 batch 1 (torch) -25% after the points" in line
    assert "bf16 matmul 96x80x64 (torch) -33% after" in line and "+2% before" not in line
    assert drift.note(drift.summarize(refs, [[None], [None]], [[None], [None]])) is None
    assert drift.note(None) is None and drift.lines(None) == []
    assert drift.lines(moved)[0].endswith("+2% before, -25% after the points")


def test_each_side_quotes_the_median_of_its_runs_and_a_wide_spread_is_a_note():
    refs = drift.references(_profile([_row("bf16", 64, 96)], MATMUL), "bf16")
    # the GEMV: 3 runs a side, one failed; the matmul: steady
    d = drift.summarize(refs, [[9.0, 10.0, None], [0.30, 0.30, 0.30]],
                        [[13.0, 8.0, 10.0], [0.30, 0.31, 0.30]])
    gemv, matmul = d["gemv"], d["matmul"]
    assert gemv["before"] == pytest.approx(9.5) and gemv["after"] == pytest.approx(10.0)
    assert gemv["before_change"] == pytest.approx(-0.05) and gemv["after_change"] == 0.0
    assert gemv["before_runs"] == [9.0, 10.0, None] and gemv["after_runs"] == [13.0, 8.0, 10.0]
    assert (gemv["runs_min"], gemv["runs_max"]) == (8.0, 13.0)
    # (p80 - p20) / median of the five rates, as ridgeline.timing states percentiles
    import numpy as np
    rates = [9.0, 10.0, 13.0, 8.0, 10.0]
    assert gemv["spread"] == pytest.approx(
        (np.percentile(rates, 80) - np.percentile(rates, 20)) / np.median(rates))
    assert matmul["spread"] < 0.1
    assert drift.note(d) is None   # neither median moved 10%
    line = drift.spread_note(d)
    assert line.startswith("the device is not repeatable at the errors' scale: "
                           "bf16 GEMV 64x96 batch 1 (torch) timed 5 times ranged 8-13 GB/s")
    assert "matmul" not in line
    assert drift.lines(d)[0].endswith("(5 runs: 8-13 GB/s, spread 18%)")
    # two runs are too few for a spread; none at all: no note, no range
    few = drift.summarize(refs, [[9.0], [None]], [[12.0], [None]])
    assert few["gemv"]["spread"] is None and few["matmul"]["runs_min"] is None
    assert drift.spread_note(few) is None and drift.spread_note(None) is None
    assert drift.lines(few)[0].endswith("after the points")


def test_the_references_alternate_within_each_round(monkeypatch):
    refs = drift.references(_profile([_row("bf16", 64, 96)], MATMUL), "bf16")
    order = []
    monkeypatch.setattr(drift, "time_reference",
                        lambda ref, device, timer: order.append(ref.kind) or len(order))
    runs = drift.time_references(refs, "dev", "timer", repeats=3)
    assert order == ["gemv", "matmul"] * 3
    assert runs == [[1, 3, 5], [2, 4, 6]]


def test_validate_times_both_references_before_and_after(tmp_path, capsys):
    from ridgeline.cli import main
    from tests.test_commands_validate import FAST, cpu_profile

    path = cpu_profile(tmp_path / "profile.json")
    prof = json.loads(path.read_text())
    prof["model"]["gemv_best_provider"] = [_row("bf16", 256, 384, bw=5.0)]
    prof["ceilings"]["matmul_detail"] = {"bf16": MATMUL["bf16"]}
    path.write_text(json.dumps(prof))
    rc = main(["validate", *FAST, "--batch", "1", "--context", "4", "--prefill", "none",
               "--profile", str(path), "-o", str(tmp_path / "out")])
    data = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert rc == 0
    gemv, matmul = data["drift"]["gemv"], data["drift"]["matmul"]
    assert gemv["case"] == {"provider": "torch", "dtype": "bf16", "batch": 1, "k": 256, "n": 384}
    assert gemv["before"] > 0 and gemv["after"] > 0 and gemv["unit"] == "GB/s"
    assert gemv["before_change"] == pytest.approx(gemv["before"] / 5.0 - 1)
    assert len(gemv["before_runs"]) == len(gemv["after_runs"]) == drift.REPEATS
    assert gemv["runs_min"] <= gemv["before"] <= gemv["runs_max"]
    # the profile's matmul ceiling is 0.05 TFLOP/s (bf16 in the synthetic profile)
    assert matmul["before"] > 0 and matmul["after"] > 0 and matmul["unit"] == "TFLOP/s"
    assert matmul["before_change"] == pytest.approx(matmul["before"] / 0.05 - 1)
    assert "device drift, bf16 GEMV 256x384 batch 1" in capsys.readouterr().out
    md = (tmp_path / "out" / "validation.md").read_text()
    assert "device drift, bf16 GEMV 256x384 batch 1 (torch, profile 5 GB/s)" in md
    assert "device drift, bf16 matmul 96x80x64 (torch, profile 0.05 TFLOP/s)" in md
