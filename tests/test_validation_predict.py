"""The validation error arithmetic, summaries, and the planner/datasheet predictions it scores."""

import pytest

from ridgeline.sizing.hardware import hardware_from_profile
from ridgeline.sizing.latency import decode_step_time, prefill_time
from ridgeline.sizing.models import load_model
from ridgeline.validation import predict as pr


def _profile():
    from tests.profile_fixtures import synthetic_cpu_profile

    return synthetic_cpu_profile(bf16_TFLOPS=0.1, device={"name": "test-cpu", "kind": "cpu",
                                                          "memory_bytes": 2**34})


def test_relative_error_exact():
    assert pr.relative_error(0.75, 0.5) == 0.5       # over-predicted by half
    assert pr.relative_error(0.25, 0.5) == 0.5       # under-predicted by half
    assert pr.relative_error(0.5, 0.5) == 0.0
    assert pr.relative_error(None, 0.5) is None
    with pytest.raises(ValueError):
        pr.relative_error(1.0, 0.0)


def _pt(phase, mode, ep, ed=None, finite=True):
    return {"phase": phase, "mode": mode, "error_profile": ep, "error_datasheet": ed,
            "finite": finite}


def test_summary_median_and_worst_over_the_primary_mode():
    points = [_pt("decode", "graph", 0.1, 0.5), _pt("decode", "graph", 0.3, 0.25),
              _pt("decode", "graph", 0.2, 0.75), _pt("decode", "eager", 0.9),
              _pt("decode", "graph", 5.0, finite=False),  # non-finite logits: not scored
              _pt("prefill", "eager", 0.125), _pt("prefill", "eager", 0.375)]
    summary, by_mode = pr.summarize(points)
    d = summary["decode"]
    assert d["mode"] == "graph" and d["n_points"] == 3
    assert d["median_error_profile"] == 0.2 and d["worst_error_profile"] == 0.3
    assert d["median_error_datasheet"] == 0.5 and d["worst_error_datasheet"] == 0.75
    p = summary["prefill"]
    assert p["mode"] == "eager"
    assert p["median_error_profile"] == 0.25  # even count: mean of the middle two
    assert p["median_error_datasheet"] is None and p["worst_error_datasheet"] is None
    assert by_mode["decode/eager"]["median_error_profile"] == 0.9
    assert set(pr.SUMMARY_KEYS) <= set(d)


def test_summary_of_nothing_is_empty_not_an_error():
    summary, by_mode = pr.summarize([])
    assert summary["decode"]["n_points"] == 0 and summary["decode"]["median_error_profile"] is None
    assert by_mode == {}


def test_score_point_uses_the_planner_equations():
    spec = load_model("tiny")
    hw = hardware_from_profile(_profile())
    prec = pr.precision_for("bf16")
    m = {"phase": "decode", "mode": "eager", "batch": 3, "context": 17, "measured_s": 0.004}
    pt = pr.score_point(m, spec, prec, hw, None)
    expected = decode_step_time(spec, prec, hw, 3, 17).time_s
    assert pt["predicted_profile_s"] == expected
    assert pt["error_profile"] == abs(expected - 0.004) / 0.004
    assert pt["predicted_datasheet_s"] is None and pt["error_datasheet"] is None
    # prefill: one pass over the whole prompt, as measured (no chunking above 8192 tokens)
    m = {"phase": "prefill", "mode": "eager", "batch": 1, "context": 10000, "measured_s": 1.0}
    pt = pr.score_point(m, spec, prec, hw, None)
    assert pt["predicted_profile_s"] == prefill_time(spec, prec, hw, 1, 10000,
                                                     max_batched_tokens=10000).time_s


def test_datasheet_hardware():
    assert pr.datasheet_hardware(_profile(), {"kind": "cpu", "name": "AMD EPYC"}) is None
    hw = pr.datasheet_hardware(None, {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3",
                                      "memory_bytes": 85 * 10**9})
    # what `ridgeline plan --gpu` prices: the sheet x the published achievable fractions
    assert hw.source == "datasheet" and hw.model.bandwidth_GBps == pytest.approx(3350 * 0.949)
    assert hw.model.peak_TFLOPS["bf16"] == pytest.approx(989.4 * 0.803)
    assert pr.datasheet_hardware(None, {"kind": "cuda", "name": "Some Unknown GPU"}) is None


def test_precision_for():
    assert pr.precision_for("fp8").gemm_dtype == "fp8"
    assert pr.precision_for("fp8").kv_cache == "bf16"
    assert pr.precision_for("fp16").gemm_dtype == "fp16"
