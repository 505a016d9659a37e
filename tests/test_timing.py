"""The timing primitive: statistics, budgets, the one sampling loop, and the fake and host timers."""

import time

import pytest

from ridgeline.timing import (FakeTimer, HostClock, HostTimer, Timing, Work, budget_counts,
                              sample_ms)


def test_statistics_are_named_and_ordered():
    t = Timing([5.0, 1.0, 2.0, 3.0, 4.0], "test")
    s = t.stats()
    assert s["time_ms_median"] == 3.0
    assert s["time_ms_min"] == 1.0
    assert s["time_ms_p20"] == pytest.approx(1.8)
    assert s["time_ms_p80"] == pytest.approx(4.2)
    assert s["n_samples"] == 5 and s["timer"] == "test"


def test_budgets_become_counts_within_bounds():
    assert budget_counts(1.0, 25.0, 100.0, 5, 500) == (25, 100)
    assert budget_counts(100.0, 25.0, 100.0, 5, 500) == (1, 5)        # slow case: min repeats
    assert budget_counts(1e-6, 25.0, 100.0, 5, 500) == (5000, 500)     # tiny: warm-up 10 x max
    # explicit warm-up bounds (the collective worker: at least 2, at most max_iters)
    assert budget_counts(100.0, 25.0, 100.0, 5, 500, min_warmup=2) == (2, 5)
    assert budget_counts(1e-6, 25.0, 100.0, 5, 500, max_warmup=1000) == (1000, 500)


class _TickClock:
    """A clock whose time is the number of `fn` calls so far, in ms: exact, no sleeping."""

    name = "ticks"

    def __init__(self):
        self.now = 0
        self.synced = 0

    def stopwatch(self):
        clock = self

        class Watch:
            def start(self):
                self.t0 = clock.now

            def stop(self):
                self.t1 = clock.now

            def elapsed_ms(self):
                assert clock.synced, "marks read before the clock synchronized"
                return float(self.t1 - self.t0)

        return Watch()

    def synchronize(self):
        self.synced += 1


def test_sample_loop_counts_hooks_and_launches():
    clock, events = _TickClock(), []

    def fn():
        clock.now += 1
        events.append("call")

    samples = sample_ms(fn, clock, n_warmup=3, n_rep=4, launches=2,
                        before_sample=lambda: events.append("before"),
                        after_warmup=lambda: events.append("settle"))
    assert samples == [1.0] * 4  # 2 calls per sample, divided by launches
    # warm-up calls untimed, the settle hook once, then a hook outside every sample
    assert events == ["call"] * 3 + ["settle"] + ["before", "call", "call"] * 4
    assert clock.synced == 1


def test_sample_loop_keeps_hooks_out_of_the_timed_region():
    clock = _TickClock()

    def slow_flush():
        clock.now += 100  # a flush or barrier that takes long must not be timed

    def fn():
        clock.now += 1

    assert sample_ms(fn, clock, n_warmup=0, n_rep=3, before_sample=slow_flush) == [1.0] * 3


def test_host_clock_reads_wall_time():
    samples = sample_ms(lambda: time.sleep(0.002), HostClock(), n_warmup=1, n_rep=3)
    assert len(samples) == 3 and all(1.9 <= s <= 50.0 for s in samples)


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


def test_event_timer_runs_the_shared_loop_without_a_gpu():
    """EventTimer's wiring on a tick clock: estimate, budgets, a flush outside every sample."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from ridgeline.timing import EventTimer

    timer = EventTimer(0)  # a torch.device object only: nothing touches CUDA below
    clock, events = _TickClock(), []
    timer.clock = clock
    timer.torch = SimpleNamespace(cuda=SimpleNamespace(device=lambda d: nullcontext()))
    timer.flush = lambda: events.append("flush")

    def graph_of(fn, launches):  # what a graph replay does: `launches` calls in one
        return lambda: [fn() for _ in range(launches)]

    timer._graph_of = graph_of

    def fn():
        clock.now += 1  # 1 ms per call
        events.append("call")

    t = timer.time(fn, warmup_ms=4, rep_ms=10, min_reps=3, max_reps=50, launches_per_sample=2)
    # one sample = one replay of 2 calls = 2 ms: 4 ms warm-up -> 2 replays, 10 ms -> 5 samples
    assert t.timer == "cuda-graph" and t.launches_per_sample == 2
    assert t.samples_ms == [1.0] * 5  # per call
    timed = events[events.index("flush"):]
    assert timed == ["flush", "call", "call"] * 5
    assert events[:events.index("flush")] == ["call"] * (1 + 3 * 2 + 2 * 2)  # first, estimate, warm-up


def test_time_alternating_interleaves_the_rounds_and_reuses_the_first_rounds_counts():
    from ridgeline.timing import HostTimer

    calls = []
    timer = HostTimer(flush_bytes=2**20)
    rounds = timer.time_alternating({"a": lambda: calls.append("a"),
                                     "b": lambda: calls.append("b")}, rounds=3, rep_ms=3.0)
    assert [len(rounds[n]) for n in "ab"] == [3, 3]
    na, nb = len(rounds["a"][0].samples_ms), len(rounds["b"][0].samples_ms)
    assert all(len(t.samples_ms) == na for t in rounds["a"])      # same count every round
    assert all(len(t.samples_ms) == nb for t in rounds["b"])
    # the later rounds only sample, alternating: a x na, b x nb, a x na, b x nb
    assert calls[-2 * (na + nb):] == (["a"] * na + ["b"] * nb) * 2
    assert calls[0] == "a" and "b" in calls[:-2 * (na + nb)]     # round 0: a then b, warmed
