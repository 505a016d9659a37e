"""Whether a measured ceiling can be planned from: verified, unverified or noisy.

Every ceiling's detail in profile.json carries

    "status": "verified" | "unverified" | "noisy"
    "reason": why it is not verified (None when it is)
    "spread": {"samples_p20_p80": (p80 - p20) / median of the samples, the worst over
               the points the ceiling comes from,
               "across_points": (max - min) / median over those points}

- verified:   taken from a measured plateau (bandwidth: the rate stopped changing
              over at least two successive doublings of the working set; matmul:
              several shapes within PEAK_AGREEMENT of the best; collectives: sizes
              large enough that the bandwidth term dominates) with a small spread.
- unverified: too few points, no plateau, still in cache, interrupted, one shape.
- noisy:      a plateau was found but the samples scatter by more than NOISY_SPREAD
              even after re-measuring: something else was running.

Measured kernel-efficiency curves (roofline.efficiency) carry the same three fields per
curve and dtype (curve_trust): a curve spans many shapes, each timed once, so it is noisy
when more than NOISY_POINT_SHARE of its shapes scatter above NOISY_SPREAD (fewer disturbed
shapes are counted in the report's status column, the curve stays verified);
unverified when it has one shape (held constant over every shape the planner asks for) or
its samples' spread was not recorded; "spread" then holds the worst and the median sample
spread over its shapes and how many scatter.

The planner refuses untrusted ceilings unless told (`--allow-unverified`); the
summary, report and `compare` show the status beside the number.

    for c in untrusted_ceilings(profile): print(c.name, c.status, c.reason)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ridgeline.roofline.sections import Ceilings, ModelSection

VERIFIED = "verified"
UNVERIFIED = "unverified"
NOISY = "noisy"
STATUSES = (VERIFIED, UNVERIFIED, NOISY)

# A plateau: successive working sets whose rates differ by at most this fraction of their median.
PLATEAU_TOLERANCE = 0.05
# Points (sizes) a plateau needs: two successive doublings = three sizes.
PLATEAU_MIN_POINTS = 3
# No plateau is looked for below this multiple of the cache the device reports, nor
# below PLATEAU_MIN_BYTES: real caches are often larger than reported (MI300X's
# 256 MB Infinity Cache beside a 4 MB L2; a VM host's L3), and a rate that is flat
# inside such a cache is a cache's rate. Above the floor the sweep still has to
# find the rate flat; the floor only keeps it from stopping inside a cache.
PLATEAU_CACHE_MULTIPLE = 4
PLATEAU_MIN_BYTES = 256 * 2**20
# When the device reports no cache size.
DEFAULT_CACHE_BYTES = 32 * 2**20
# Decode GEMV: weights this large are past any cache, so their rate is the plateau (numpy-free
# here: the reports read it without loading the fit).
GEMV_PLATEAU_MIN_WEIGHT_BYTES = 64e6
# A sample spread (p20..p80 relative to the median) above this means the run was disturbed.
NOISY_SPREAD = 0.10
# Matmul: shapes within this fraction of the best confirm the peak is not one lucky shape.
PEAK_AGREEMENT = 0.05
PEAK_MIN_SHAPES = 2

OLD_METHOD_REASON = "measured before ridgeline checked plateaus (no status recorded)"
# An efficiency curve is noisy when more than this share of its shapes scatter above NOISY_SPREAD.
NOISY_POINT_SHARE = 0.25


@dataclass(frozen=True)
class CeilingStatus:
    """One ceiling of a profile and whether it can be trusted."""

    name: str          # "copy bandwidth", "bf16 matmul", "allreduce n=2"
    value: float | None
    unit: str
    status: str
    reason: str | None
    spread: dict[str, Any]

    @property
    def trusted(self) -> bool:
        return self.status == VERIFIED


def sample_spread(rec: dict[str, Any]) -> float | None:
    """(p80 - p20) / median of one record's timing samples."""
    med, lo, hi = rec.get("time_ms_median"), rec.get("time_ms_p20"), rec.get("time_ms_p80")
    if not all(isinstance(v, (int, float)) for v in (med, lo, hi)) or not med or med <= 0:
        return None
    return (hi - lo) / med


def scatters(spread: float | None) -> bool:
    """A (p80 - p20) / median above NOISY_SPREAD: the samples say something else was running.
    None (not recorded) is not evidence either way."""
    return spread is not None and spread > NOISY_SPREAD


def curve_trust(spreads: list[float | None]) -> dict[str, Any]:
    """{"status", "reason", "spread"} of one efficiency curve from its shapes' sample spreads
    ((p80 - p20) / median, None where a record has no percentiles)."""
    known = sorted(s for s in spreads if s is not None)
    n = len(spreads)
    if not known or len(known) < n:
        return {"status": UNVERIFIED, "reason": f"sample spread not recorded for "
                f"{n - len(known)} of {n} shape(s)", "spread": {}}
    scattered = sum(scatters(s) for s in known)
    spread = {"samples_p20_p80": known[-1], "median_samples_p20_p80": known[len(known) // 2],
              "noisy_points": scattered, "points": n}
    if scattered > NOISY_POINT_SHARE * n:
        return {"status": NOISY, "spread": spread,
                "reason": (f"{scattered} of {n} shape(s) scatter above {NOISY_SPREAD:.0%} "
                           f"(p20..p80 of the median; worst {known[-1]:.0%}): other work "
                           "disturbed the run")}
    if n < 2:
        return {"status": UNVERIFIED, "spread": spread,
                "reason": "one shape: held constant over every shape it prices"}
    return {"status": VERIFIED, "reason": None, "spread": spread}


def _status_of(detail: Any) -> tuple[str, str | None, dict[str, Any]]:
    if not isinstance(detail, dict):
        return UNVERIFIED, OLD_METHOD_REASON, {}
    status = detail.get("status")
    if status not in STATUSES:
        return UNVERIFIED, OLD_METHOD_REASON, {}
    spread = detail.get("spread") if isinstance(detail.get("spread"), dict) else {}
    return status, detail.get("reason"), spread


def ceiling_statuses(profile: dict[str, Any]) -> list[CeilingStatus]:
    """Every measured ceiling of a profile with its status (datasheet profiles: none)."""
    if (ModelSection.of(profile).source == "datasheet"
            or ((profile.get("provenance") or {}).get("device") or {}).get("kind") == "datasheet"):
        return []
    ceil = Ceilings.of(profile)
    out = []
    bw_detail = ceil.bandwidth_detail or {}
    for kernel, value in sorted(ceil.bandwidth_GBps.items()):
        status, reason, spread = _status_of(bw_detail.get(kernel))
        out.append(CeilingStatus(f"{kernel} bandwidth", value, "GB/s", status, reason, spread))
    mm_detail = ceil.matmul_detail or {}
    for dtype, value in sorted(ceil.matmul_TFLOPS.items()):
        status, reason, spread = _status_of(mm_detail.get(dtype))
        out.append(CeilingStatus(f"{dtype} matmul", value, "TFLOP/s", status, reason, spread))
    ic = profile.get("interconnect") or {}
    for name, per_world in sorted(ic.items()):
        if name in ("host_link_GBps", "topology") or not isinstance(per_world, dict):
            continue
        for world, fit in sorted(per_world.items(), key=lambda kv: str(kv[0])):
            if isinstance(fit, dict) and fit.get("source", "measured") == "measured":
                status, reason, spread = _status_of(fit)
                out.append(CeilingStatus(f"{name} n={world}", fit.get("busbw_GBps"), "GB/s busbw",
                                         status, reason, spread))
    return out + _efficiency_statuses(profile)


def _efficiency_statuses(profile: dict[str, Any]) -> list[CeilingStatus]:
    """One entry per measured efficiency curve and dtype, valued at its median efficiency."""
    from ridgeline.roofline.efficiency import CURVES, SECTION  # it imports this module

    section = profile.get(SECTION)
    out = []
    for name, spec in CURVES.items():
        by_dtype = section.get(name) if isinstance(section, dict) else None
        for dtype, curve in sorted((by_dtype or {}).items() if isinstance(by_dtype, dict) else ()):
            effs = sorted(p["efficiency"] for p in (curve or {}).get("points") or []
                          if isinstance(p, dict) and isinstance(p.get("efficiency"), (int, float)))
            status, reason, spread = _status_of(curve)
            out.append(CeilingStatus(f"{spec.what} {dtype} efficiency",
                                     effs[len(effs) // 2] if effs else None,
                                     "of the roofline (median over shapes)", status, reason,
                                     spread))
    return out


def untrusted_ceilings(profile: dict[str, Any]) -> list[CeilingStatus]:
    """The ceilings of a profile that are not verified (unverified or noisy)."""
    return [c for c in ceiling_statuses(profile) if not c.trusted]


def describe(c: CeilingStatus) -> str:
    """One line: 'copy bandwidth unverified: no plateau ...'."""
    return f"{c.name} {c.status}" + (f": {c.reason}" if c.reason else "")
