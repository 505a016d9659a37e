"""The timing primitive: statistics, budgets, and the fake and host timers."""

import time

import pytest

from ridgeline.timing import FakeTimer, HostTimer, Timing, Work, _counts


def test_statistics_are_named_and_ordered():
    t = Timing([5.0, 1.0, 2.0, 3.0, 4.0], "test")
    s = t.stats()
    assert s["time_ms_median"] == 3.0
    assert s["time_ms_min"] == 1.0
    assert s["time_ms_p20"] == pytest.approx(1.8)
    assert s["time_ms_p80"] == pytest.approx(4.2)
    assert s["n_samples"] == 5 and s["timer"] == "test"


def test_budgets_become_counts_within_bounds():
    assert _counts(1.0, 25.0, 100.0, 5, 500) == (25, 100)
    assert _counts(100.0, 25.0, 100.0, 5, 500) == (1, 5)        # slow case: min repeats
    assert _counts(1e-6, 25.0, 100.0, 5, 500)[1] == 500          # tiny case: capped


def test_fake_timer_follows_its_roofline_and_runs_the_function():
    calls = []
    timer = FakeTimer(bw_GBps=100.0, peak_TFLOPS=1.0, latency_us=0.0)
    t = timer.time(lambda: calls.append(1), work=Work(bytes=1e9, flops=1e9))
    assert calls, "the function must run so its output can be validated"
    assert t.median_ms == pytest.approx(10.0 * 1.02, rel=0.02)   # 1 GB at 100 GB/s = 10 ms
    t = timer.time(lambda: None, work=Work(bytes=1.0, flops=1e12))
    assert t.median_ms == pytest.approx(1000.0 * 1.02, rel=0.02)  # compute-bound


def test_host_timer_measures_sleep_and_divides_by_launches():
    timer = HostTimer(flush_bytes=1 << 20)
    t = timer.time(lambda: time.sleep(0.002), warmup_ms=1, rep_ms=10, min_reps=3, max_reps=5,
                   launches_per_sample=2)
    assert t.launches_per_sample == 2 and 3 <= len(t.samples_ms) <= 5
    assert 1.9 <= t.stats()["time_ms_min"] <= 20.0  # per call, not per sample of two
