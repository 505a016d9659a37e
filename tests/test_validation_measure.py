"""validate's passes (ridgeline.validation.measure: merge_passes, run_points(passes=N)): every
point measured once per pass, passes in alternating order, each point quoting its median."""

from __future__ import annotations

import numpy as np
import pytest

from ridgeline.validation.measure import (NOISY_NOTE, DepthPlan, Measured, Skipped, merge_passes,
                                          prefill_points, run_points)
from ridgeline.validation.run import Sweep


def _measured(p, time_ms, spread=0.02, notes=(), finite=True, attempts=1, mode="eager"):
    return Measured(p.phase, mode, p.batch, p.context, time_ms * 1e-3, 2, 2, False, finite,
                    {"time_ms_median": time_ms}, None, list(notes), spread, False, attempts)


def test_one_pass_is_the_point_unchanged():
    p = prefill_points([5])[0]
    m = _measured(p, 3.0, notes=["a"])
    assert merge_passes([m]) is m


def test_the_median_pass_is_quoted_with_a_spread_over_the_passes():
    p = prefill_points([5])[0]
    runs = [_measured(p, 3.0, notes=["built"]), _measured(p, 2.0, spread=0.04, notes=["built"]),
            _measured(p, 2.1, notes=["built"], attempts=2)]
    m = merge_passes(runs)
    assert m.measured_s == pytest.approx(2.1e-3)
    assert m.timing == {"time_ms_median": 2.1}          # the median pass's statistics
    assert m.passes_s == pytest.approx([3e-3, 2e-3, 2.1e-3])
    across = (np.percentile([3.0, 2.0, 2.1], 80) - np.percentile([3.0, 2.0, 2.1], 20)) / 2.1
    assert m.spread == pytest.approx(across) and m.noisy   # 3 ms against 2: the device moved
    assert m.attempts == 4 and m.finite
    assert m.notes[0] == "built" and m.notes.count("built") == 1
    assert "median of 3 passes over the points (alternating order): 3, 2, 2.1 ms" in m.notes
    assert m.notes[-1].startswith(NOISY_NOTE) and "across passes" in m.notes[-1]


def test_steady_passes_keep_the_median_pass_own_spread_and_its_noisy_note_is_redone():
    p = prefill_points([5])[0]
    runs = [_measured(p, 2.0, spread=0.15, notes=[NOISY_NOTE + "samples spread 15%"]),
            _measured(p, 2.01, spread=0.03), _measured(p, 2.02, spread=0.05, finite=False)]
    m = merge_passes(runs)
    assert m.measured_s == pytest.approx(2.01e-3) and m.spread == pytest.approx(0.03)
    assert not m.noisy and not any(n.startswith(NOISY_NOTE) for n in m.notes)
    assert not m.finite                                   # one non-finite pass taints the point
    two = merge_passes(runs[:2])                          # an even count: the mean of the middle
    assert two.measured_s == pytest.approx(2.005e-3) and two.timing == runs[0].timing


def test_passes_alternate_their_order_and_each_point_quotes_its_median():
    points = prefill_points([3, 5, 7])
    plan = DepthPlan(2, {points[0]: 2, points[1]: 2}, {points[2]: "does not fit"})
    calls, results = [], []
    times = {3: [4.0, 1.0, 2.0], 5: [5.0, 6.0, 7.0]}

    def run_point(p, layers, modes):
        calls.append(p.context)
        t = times[p.context][sum(c == p.context for c in calls) - 1]
        return [_measured(p, t, mode=m) for m in modes]

    measured, skipped, interrupted = run_points(points, plan, ["eager"], run_point, cpu=True,
                                                on_result=lambda p, out: results.append(p.context),
                                                passes=3)
    assert not interrupted
    assert calls == [3, 5, 5, 3, 3, 5]                   # forward, backward, forward
    assert results == [3, 5, 7, 7, 5, 3, 3, 5, 7]        # progress counts every pass
    assert [(m.context, m.measured_s) for m in measured] == [(3, pytest.approx(2e-3)),
                                                            (5, pytest.approx(6e-3))]
    assert [s.context for s in skipped if s.mode == "eager"] == [7]   # said once


def test_a_pass_that_failed_keeps_the_others_and_ctrl_c_keeps_finished_passes():
    points = prefill_points([3, 5])
    plan = DepthPlan(2, {p: 2 for p in points}, {})
    calls = []

    def run_point(p, layers, modes):
        calls.append(p.context)
        if len(calls) == 3:                              # the second pass's first point: OOM
            return [Skipped(p.phase, m, p.batch, p.context, "out of memory") for m in modes]
        if len(calls) == 4:
            raise KeyboardInterrupt
        return [_measured(p, 1.0 + len(calls), mode=m) for m in modes]

    measured, skipped, interrupted = run_points(points, plan, ["eager"], run_point, cpu=False,
                                                passes=2)
    assert interrupted and calls == [3, 5, 5, 3]
    assert [(m.context, m.passes_s) for m in measured] == [(3, None), (5, None)]
    assert skipped == []                                 # 5 was measured in the first pass


def test_the_cpu_runs_three_passes_a_gpu_one_unless_told():
    sweep = Sweep(batches=(1,), contexts=(4,))
    assert (sweep.passes_for("cpu"), sweep.passes_for("cuda")) == (3, 1)
    told = Sweep(batches=(1,), contexts=(4,), passes=2)
    assert (told.passes_for("cpu"), told.passes_for("rocm")) == (2, 2)
