"""tp_allreduce_time / collective_time: measured, estimated (labelled), none, never mixed."""

import math

import pytest

from ridgeline.roofline.interconnect import collective_time, tp_allreduce_time

HIDDEN, TOKENS = 8192, 16
SIZE = HIDDEN * TOKENS * 2  # bf16 activations of one all-reduce


def _entry(alpha_us, busbw, n):
    factor = 2 * (n - 1) / n
    return {"alpha_us": alpha_us, "busbw_GBps": busbw, "algbw_GBps": busbw / factor,
            "link": "nvlink", "source": "measured", "dtype": "bf16", "backend": "nccl"}


def test_measured_world_size_is_measured():
    prof = {"interconnect": {"allreduce": {"8": _entry(10.0, 350.0, 8)}}}
    est = tp_allreduce_time(HIDDEN, TOKENS, "bf16", 8, prof)
    one = 10e-6 + SIZE / (350e9 / 1.75)
    assert est.source == "measured"
    assert est.time_s == pytest.approx(2 * one, rel=1e-12)  # two all-reduces per layer
    assert "2 x" in est.detail


def test_other_world_size_is_estimated_from_nearest_measurement():
    prof = {"interconnect": {"allreduce": {"8": _entry(14.0, 350.0, 8)},
                             "host_link_GBps": {"h2d": 55.0, "d2h": 53.0, "source": "measured"}}}
    est = collective_time("allreduce", SIZE, 4, prof)
    # busbw carried over, alpha scaled by ring steps 2(n-1): 6 / 14
    assert est.source == "estimated"
    assert est.time_s == pytest.approx(14e-6 * 6 / 14 + SIZE / (350e9 / 1.5), rel=1e-12)
    assert "n=8" in est.detail


def test_host_link_estimate_is_labelled_estimated():
    prof = {"interconnect": {"host_link_GBps": {"h2d": 55.0, "d2h": 53.0, "bidir": 90.0,
                                                "latency_us": {"h2d": 4.0, "d2h": 5.0},
                                                "source": "measured"}}}
    est = tp_allreduce_time(HIDDEN, TOKENS, "bf16", 2, prof)
    link = min(55.0, 53.0, 90.0 / 2)  # sending and receiving at once: half the bidir sum
    one = 2 * (4.0 + 5.0) * 1e-6 + SIZE / (link * 1e9 / 1.0)
    assert est.source == "estimated"
    assert est.time_s == pytest.approx(2 * one, rel=1e-12)
    assert "estimated from host link" in est.detail


def test_measured_and_estimated_never_mixed():
    prof = {"interconnect": {"allreduce": {"2": _entry(8.0, 90.0, 2)},
                             "host_link_GBps": {"h2d": 55.0, "d2h": 53.0, "source": "measured"}}}
    assert tp_allreduce_time(HIDDEN, TOKENS, "bf16", 2, prof).source == "measured"
    four = tp_allreduce_time(HIDDEN, TOKENS, "bf16", 4, prof)
    assert four.source == "estimated" and "host link" not in four.detail


def test_no_data_and_one_rank():
    est = tp_allreduce_time(HIDDEN, TOKENS, "bf16", 8, {"interconnect": {}})
    assert est.source == "none" and math.isnan(est.time_s)
    one = tp_allreduce_time(HIDDEN, TOKENS, "bf16", 1, {})
    assert one.time_s == 0.0 and one.source == "measured"


def test_fp32_activations_double_the_bytes():
    prof = {"interconnect": {"allreduce": {"2": _entry(0.0, 100.0, 2)}}}
    b = tp_allreduce_time(HIDDEN, TOKENS, "bf16", 2, prof).time_s
    f = tp_allreduce_time(HIDDEN, TOKENS, "fp32", 2, prof).time_s
    assert f == pytest.approx(2 * b, rel=1e-12)


def test_an_unverified_fit_says_so_in_the_estimate():
    entry = dict(_entry(10.0, 350.0, 8), status="unverified",
                 reason="bandwidth term not shown: 0 of 7 sizes")
    prof = {"interconnect": {"allreduce": {"8": entry}}}
    measured = collective_time("allreduce", SIZE, 8, prof)
    assert measured.detail.endswith("[unverified: bandwidth term not shown: 0 of 7 sizes]")
    carried = collective_time("allreduce", SIZE, 4, prof)
    assert carried.source == "estimated" and "[unverified: " in carried.detail
    verified = dict(entry, status="verified", reason=None)
    assert "[" not in collective_time("allreduce", SIZE, 8,
                                      {"interconnect": {"allreduce": {"8": verified}}}).detail


def test_a_noisy_collective_the_planner_does_not_price_never_refuses_a_plan(tmp_path):
    """all_to_all (and all-gather, reduce-scatter) are measured and shown, but only the TP
    all-reduce is priced: only an untrusted all-reduce refuses `plan --profile`."""
    from ridgeline.errors import RidgelineError
    from ridgeline.roofline.profile import load_profile
    from ridgeline.sizing.hardware import hardware_from_profile
    from tests.profile_fixtures import NOISY, synthetic_profile

    prof = load_profile(synthetic_profile(tmp_path / "p.json"))
    prof["interconnect"]["all_to_all"] = {"2": {"alpha_us": 200.0, "busbw_GBps": 2.0,
                                                "source": "measured", **NOISY}}
    hardware_from_profile(prof, refuse_untrusted=True)  # no refusal
    prof["interconnect"]["allreduce"]["2"].update(NOISY)
    with pytest.raises(RidgelineError, match="allreduce n=2 noisy"):
        hardware_from_profile(prof, refuse_untrusted=True)
