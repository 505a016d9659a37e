"""Find where a rate stops changing with working-set size: the plateau a ceiling is quoted from.

    p = find_plateau([(size_bytes, bw_GBps), ...], floor_bytes=4 * l2_bytes)
    p.verified, p.value, p.sizes_bytes, p.reason

The plateau is the longest run of the *largest* sizes whose rates all lie
within PLATEAU_TOLERANCE of that run's median. It is verified when it holds at
least PLATEAU_MIN_POINTS sizes spanning PLATEAU_MIN_SPAN (two successive
doublings: 1x, 2x, 4x), all at or above `floor_bytes`. The floor is a multiple
of the cache the device reports; it is only a floor, because real caches are
often larger than reported (a VM host's L3, MI300X's Infinity Cache): the
sweep goes on past it until the rate is flat.

A cache only ever makes a *smaller* working set faster, and other work on the
machine only ever makes a measurement slower. So where the rate falls with size
the sweep is still in a cache (measure larger sizes), and where a larger size
runs faster than a smaller one beyond the tolerance, the smaller one was
disturbed (`dips`: measure it again).

Pure functions on numbers: the hbm probe asks "is it flat yet?" to extend its
sweep or re-measure, and the fit quotes the ceiling from the same rule.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ridgeline.roofline.trust import PLATEAU_MIN_POINTS, PLATEAU_TOLERANCE

# Sizes spanned by a verified plateau (two doublings; 3.5 allows sizes rounded to pages).
PLATEAU_MIN_SPAN = 3.5


@dataclass
class Plateau:
    verified: bool
    value: float | None                 # median rate over the plateau sizes
    sizes_bytes: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    reason: str | None = None           # why it is not verified
    still_falling: bool = False         # the rate falls with size: larger sizes are needed
    dips_bytes: list[int] = field(default_factory=list)  # disturbed sizes: measure again

    @property
    def across_points(self) -> float | None:
        """(max - min) / median of the plateau's rates."""
        if len(self.rates) < 2 or not self.value:
            return None
        return (max(self.rates) - min(self.rates)) / self.value


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n < 2**30 else f"{n / 2**30:,.1f} GiB"


def _span(rates: list[float]) -> str:
    lo, hi = min(rates), max(rates)
    return f"{lo:,.3g}" if lo == hi else f"{lo:,.3g}-{hi:,.3g}"


def _flat(rates: list[float], tolerance: float) -> bool:
    mid = statistics.median(rates)
    return all(abs(r - mid) <= tolerance * mid for r in rates)


def find_plateau(points: list[tuple[int, float]], floor_bytes: int,
                 tolerance: float = PLATEAU_TOLERANCE) -> Plateau:
    """The plateau of (size_bytes, rate) points; one point per size (the caller picks it)."""
    pts = sorted((int(s), float(r)) for s, r in points if r and r > 0)
    if not pts:
        return Plateau(False, None, reason="no measured sizes")
    above = [p for p in pts if p[0] >= floor_bytes]
    if not above:
        s, r = pts[-1]
        return Plateau(False, r, [s], [r],
                       reason=f"no working set reached {_mib(floor_bytes)} (largest {_mib(s)}): "
                              "the rate may still be served by a cache")
    dips = dips_bytes(above, tolerance)
    run = [above[-1]]
    for p in reversed(above[:-1]):
        if not _flat([r for _, r in run] + [p[1]], tolerance):
            break
        run.insert(0, p)
    sizes, rates = [s for s, _ in run], [r for _, r in run]
    value = statistics.median(rates)
    span = sizes[-1] / sizes[0]
    if len(run) >= PLATEAU_MIN_POINTS and span >= PLATEAU_MIN_SPAN:
        return Plateau(True, value, sizes, rates, dips_bytes=dips)
    falling = False
    if len(run) < len(above):
        prev_s, prev_r = above[len(above) - len(run) - 1]
        falling = prev_r > value
        reason = (f"rate still changing with size: {prev_r:,.3g} at {_mib(prev_s)} against "
                  f"{_span(rates)} at {_mib(sizes[0])}-{_mib(sizes[-1])} "
                  f"(not all within {tolerance:.0%} of their median)")
        if prev_s in dips:
            reason += ": a larger working set ran faster, so the smaller one was disturbed"
    else:
        reason = (f"only {len(run)} size(s) from {_mib(sizes[0])} to {_mib(sizes[-1])}: "
                  f"a plateau needs {PLATEAU_MIN_POINTS} sizes over {PLATEAU_MIN_SPAN:g}x")
    # not flat and not disturbed: larger sizes may still settle it
    return Plateau(False, value, sizes, rates, reason=reason,
                   still_falling=falling or not dips or len(run) == len(above), dips_bytes=dips)


def dips_bytes(points: list[tuple[int, float]], tolerance: float = PLATEAU_TOLERANCE) -> list[int]:
    """Sizes slower, beyond the tolerance, than some larger size: no cache explains that,
    so the measurement there was disturbed. The bound is the flatness rule's: two rates
    are flat when both lie within the tolerance of their median."""
    out = []
    best_above = 0.0
    for size, rate in sorted(points, reverse=True):
        if rate < best_above * (1 - tolerance) / (1 + tolerance):
            out.append(size)
        best_above = max(best_above, rate)
    return sorted(out)
