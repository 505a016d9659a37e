"""The latency-throughput curve: a sweep of load points, its knee and its SLO operating point.

    curve = sweep(sm, sched, reqs, rps=[2, 4, 8, 16], ttft_slo_s=2.0, itl_slo_s=0.05)
    curve.knee_index, curve.operating_point, curve.to_dict()    # {"points": [...], ...}

Knee (field guide §8.1: where P99 TTFT leaves P50): the first point, in increasing load,
where the TTFT spread P99 - P50 exceeds `knee_factor` (2) times the spread with no
queue at all. The no-queue TTFT of a request is its prefill alone (its prompt, in
chunks of the token budget, on an idle engine), so the spread that long prompts
explain at any load (§1.1) is divided out and only what queueing adds counts. With
fixed lengths that spread is 0: it is floored at the no-queue P50 (the knee is then
where P99 waits more than two prefills longer than P50). A ratio P99/P50 would not do:
past saturation the queue dominates both and the ratio falls.

SLO operating point (§8.3, C_max): scanning points in increasing load, the last one
before the first that misses an SLO (TTFT and ITL each at its percentile, P99 by
default); `load_at_slo` interpolates linearly between that point and the first miss
on the metric that misses. Points past the first miss are not considered even if
they meet the SLO again (noise at a fixed seed), so the answer is conservative.

Capacity (`capacity_rps`): the steady request rate of an overloaded replica (closed
loop, twice max_num_seqs clients), measured between its 20th and 80th percentile
completions so the ramp-up and the drain do not count: the top of the rps axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ridgeline.errors import RidgelineError
from ridgeline.sizing.simulation.engine import SchedulerConfig, StepTimes, run_engine
from ridgeline.sizing.simulation.load import ClosedLoop, Load, OpenLoop, Requests
from ridgeline.sizing.simulation.metrics import SimPoint, summarize

KNEE_FACTOR = 2.0
BASELINE_SAMPLE = 2000  # requests whose idle-engine TTFT sets the knee's baseline


def simulate(sm: StepTimes, sched: SchedulerConfig, requests: Requests, load: Load, *,
             bulk: bool = True) -> SimPoint:
    """One load point: run the engine on the requests and summarize."""
    return summarize(run_engine(sm, sched, requests, load, bulk=bulk), load)


def unloaded_ttft_s(sm: StepTimes, sched: SchedulerConfig, input_tokens: np.ndarray) -> np.ndarray:
    """TTFT of each prompt alone on an idle engine: its chunks one step each."""
    budget = sched.max_num_batched_tokens
    cache: dict[int, float] = {}
    out = np.empty(len(input_tokens))
    for i, tokens in enumerate(int(x) for x in input_tokens):
        t = cache.get(tokens)
        if t is None:
            t, prior = 0.0, 0
            while prior < tokens:
                k = min(budget, tokens - prior)
                t += sm.step_s(0, 0, [(k, prior)], 1 if prior + k == tokens else 0)
                prior += k
            cache[tokens] = t
        out[i] = t
    return out


def baseline_ttft_spread_s(sm: StepTimes, sched: SchedulerConfig, requests: Requests) -> float:
    """P99 - P50 of the no-queue TTFT over (a sample of) the prompts, at least its P50."""
    ttft = unloaded_ttft_s(sm, sched, requests.input_tokens[:BASELINE_SAMPLE])
    p50, p99 = np.percentile(ttft, [50, 99])
    return float(max(p99 - p50, p50))


def find_knee(points: Sequence[SimPoint], baseline_spread_s: float,
              factor: float = KNEE_FACTOR) -> int | None:
    """Index of the first point (in the given order) where P99 - P50 TTFT > factor x baseline."""
    for i, p in enumerate(points):
        if p.ttft_s.p99 - p.ttft_s.p50 > factor * baseline_spread_s:
            return i
    return None


@dataclass(frozen=True)
class OperatingPoint:
    """The highest swept load meeting the SLOs, and why the next one does not."""

    index: int | None          # into the sweep's points; None when even the first misses
    load: float | None         # that point's rps or concurrency
    load_at_slo: float | None  # interpolated to where the binding metric meets its SLO
    limit: str                 # "TTFT SLO" | "ITL SLO" | "sweep limit"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "load": self.load, "load_at_slo": self.load_at_slo,
                "limit": self.limit}


def _misses(p: SimPoint, ttft_slo_s: float | None, itl_slo_s: float | None,
            ttft_percentile: str, itl_percentile: str) -> tuple[str, float, float] | None:
    """(limit, value, SLO) of the first SLO the point misses, else None."""
    if ttft_slo_s is not None and p.ttft_s.get(ttft_percentile) > ttft_slo_s:
        return "TTFT SLO", p.ttft_s.get(ttft_percentile), ttft_slo_s
    if itl_slo_s is not None and p.itl_s.get(itl_percentile) > itl_slo_s:
        return "ITL SLO", p.itl_s.get(itl_percentile), itl_slo_s
    return None


def max_load_meeting(points: Sequence[SimPoint], ttft_slo_s: float | None = None,
                     itl_slo_s: float | None = None, ttft_percentile: str = "p99",
                     itl_percentile: str = "p99") -> OperatingPoint:
    """The SLO-constrained operating point of points in increasing load (module docstring)."""
    for i, p in enumerate(points):
        miss = _misses(p, ttft_slo_s, itl_slo_s, ttft_percentile, itl_percentile)
        if miss is None:
            continue
        limit, value, slo = miss
        if i == 0:
            return OperatingPoint(None, None, None, limit)
        prev = points[i - 1]
        stat = prev.ttft_s if limit == "TTFT SLO" else prev.itl_s
        before = stat.get(ttft_percentile if limit == "TTFT SLO" else itl_percentile)
        frac = (slo - before) / (value - before) if value > before else 0.0
        at = prev.value + min(1.0, max(0.0, frac)) * (p.value - prev.value)
        return OperatingPoint(i - 1, prev.value, at, limit)
    if not points:
        return OperatingPoint(None, None, None, "sweep limit")
    return OperatingPoint(len(points) - 1, points[-1].value, points[-1].value, "sweep limit")


@dataclass
class Sweep:
    """Points in increasing load, the knee and (given SLOs) the operating point."""

    points: list[SimPoint]
    knee_index: int | None
    baseline_ttft_spread_s: float
    knee_factor: float
    operating_point: OperatingPoint | None
    slo: dict[str, Any] = field(default_factory=dict)

    @property
    def knee(self) -> SimPoint | None:
        return None if self.knee_index is None else self.points[self.knee_index]

    def to_dict(self) -> dict[str, Any]:
        knee = self.knee
        return {"points": [p.to_dict() for p in self.points],
                "knee": {"index": self.knee_index, "load": knee.value if knee else None,
                         "baseline_ttft_spread_s": self.baseline_ttft_spread_s,
                         "definition": f"first point with P99 - P50 TTFT > {self.knee_factor:g} x "
                                       "the no-queue spread (at least the no-queue P50)"},
                "operating_point": (self.operating_point.to_dict()
                                    if self.operating_point else None),
                "slo": dict(self.slo)}


def sweep(sm: StepTimes, sched: SchedulerConfig, requests: Requests, *,
          rps: Sequence[float] | None = None, concurrency: Sequence[int] | None = None,
          arrival_cv: float = 1.0, think_s: float = 0.0, ttft_slo_s: float | None = None,
          itl_slo_s: float | None = None, ttft_percentile: str = "p99",
          itl_percentile: str = "p99", knee_factor: float = KNEE_FACTOR,
          bulk: bool = True) -> Sweep:
    """Simulate each load (same requests, same arrival pattern) in increasing order."""
    if (rps is None) == (concurrency is None):
        raise RidgelineError("a sweep takes either request rates or concurrencies")
    loads: list[Load] = ([OpenLoop(float(r), arrival_cv) for r in sorted(rps)] if rps is not None
                         else [ClosedLoop(int(c), think_s) for c in sorted(concurrency or ())])
    if not loads:
        raise RidgelineError("a sweep needs at least one load")
    points = [simulate(sm, sched, requests, load, bulk=bulk) for load in loads]
    return curve_of(sm, sched, requests, points, ttft_slo_s, itl_slo_s, ttft_percentile,
                    itl_percentile, knee_factor)


def curve_of(sm: StepTimes, sched: SchedulerConfig, requests: Requests, points: list[SimPoint],
             ttft_slo_s: float | None, itl_slo_s: float | None, ttft_percentile: str,
             itl_percentile: str, knee_factor: float = KNEE_FACTOR) -> Sweep:
    """The Sweep (knee, SLO operating point) of simulated points in increasing load."""
    base = baseline_ttft_spread_s(sm, sched, requests)
    op = None
    if ttft_slo_s is not None or itl_slo_s is not None:
        op = max_load_meeting(points, ttft_slo_s, itl_slo_s, ttft_percentile, itl_percentile)
    slo = {"ttft_s": ttft_slo_s, "ttft_percentile": ttft_percentile, "itl_s": itl_slo_s,
           "itl_percentile": itl_percentile}
    return Sweep(points, find_knee(points, base, knee_factor), base, knee_factor, op, slo)


def capacity_rps(sm: StepTimes, sched: SchedulerConfig, requests: Requests,
                 max_requests: int = 5000) -> float:
    """Steady completion rate of an overloaded replica (see the module docstring)."""
    n = min(len(requests), max(max_requests, 20 * sched.max_num_seqs))
    sub = Requests(requests.input_tokens[:n], requests.output_tokens[:n], None, requests.seed)
    run = run_engine(sm, sched, sub, ClosedLoop(2 * sched.max_num_seqs))
    t = np.sort(run.finish_s)
    lo, hi = int(0.2 * n), int(0.8 * n)
    if hi <= lo or t[hi] <= t[lo]:
        return n / float(t[-1]) if t[-1] > 0 else float("inf")
    return (hi - lo) / float(t[hi] - t[lo])
