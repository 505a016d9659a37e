"""Has the device changed since it was profiled? One of the profile's own GEMV cases, timed again.

`validate` prices its points on a profile measured earlier. A device whose streaming rate
moved in between (a shared VM's neighbours, another tenant on the GPU, a clock or power
change) shows up as prediction error that is not the model's. So validate runs the gemv
probe again on one case the profile measured, before and after its points:

    case   = the profile's best-provider GEMV row (model.gemv_best_provider) in the
             validation's weight dtype (else bf16, else any), batch 1, largest weights;
             same provider, same shape, same probe code and timer as the profile
    drift  = bw_now_GBps / bw_profile_GBps - 1          (before and after the points)

A |drift| above roofline.trust.NOISY_SPREAD (10%) on either side adds a note: the errors
then include the device's own change. validation.json "drift":

    {"case": {"provider", "dtype", "batch", "k", "n"}, "profile_GBps", "before_GBps",
     "after_GBps", "before", "after"}                   (null when the profile has no row)

Run by ridgeline.validation.run (not with --tp); tests: tests/test_validation_drift.py.
"""

from __future__ import annotations

from typing import Any

from ridgeline.roofline.sections import ModelSection
from ridgeline.roofline.trust import NOISY_SPREAD


def reference_case(profile: dict[str, Any], weights: str) -> dict[str, Any] | None:
    """The profile's GEMV case to time again, with its rate then; None without gemv rows."""
    rows = [r for r in ModelSection.of(profile).gemv_best_provider or []
            if isinstance(r, dict) and r.get("batch") == 1 and r.get("bw_GBps")
            and r.get("provider") and r.get("k") and r.get("n")]
    for dtype in (weights, "bf16", None):
        mine = [r for r in rows if dtype is None or r.get("dtype") == dtype]
        if mine:
            row = max(mine, key=lambda r: (r.get("weight_bytes") or 0, r["k"] * r["n"]))
            return {"case": {"provider": row["provider"], "dtype": row["dtype"], "batch": 1,
                             "k": int(row["k"]), "n": int(row["n"])},
                    "profile_GBps": float(row["bw_GBps"])}
    return None


def time_reference(case: dict[str, Any], device, timer) -> float | None:
    """The case's weight-streaming rate now (GB/s), through the gemv probe; None when it
    was waived, failed or did not validate."""
    from ridgeline.probes.base import Case, ProbeContext
    from ridgeline.probes.gemv import GemvProbe

    probe = GemvProbe()
    try:
        (rec,) = probe.run(Case(dict(case)), ProbeContext(device, timer))
    except Exception:  # noqa: BLE001 - a reference that cannot run is reported as not run
        return None
    finally:
        probe.pools.drop()
    rate = rec.get("bw_GBps")
    return float(rate) if rec.get("validated") and rate else None


def summarize(ref: dict[str, Any], before_GBps: float | None,
              after_GBps: float | None) -> dict[str, Any]:
    """validation.json "drift" from the reference and the two rates."""
    then = ref["profile_GBps"]

    def rel(now: float | None) -> float | None:
        return now / then - 1.0 if now else None

    return {**ref, "before_GBps": before_GBps, "after_GBps": after_GBps,
            "before": rel(before_GBps), "after": rel(after_GBps)}


def note(drift: dict[str, Any] | None) -> str | None:
    """One line when the device streamed more than NOISY_SPREAD away from its profile."""
    if not drift:
        return None
    moved = [(side, drift[side]) for side in ("before", "after")
             if drift.get(side) is not None and abs(drift[side]) > NOISY_SPREAD]
    if not moved:
        return None
    c = drift["case"]
    sides = ", ".join(f"{100 * v:+.0f}% {side} the points" for side, v in moved)
    return (f"the device changed since it was profiled: its {c['dtype']} GEMV "
            f"({c['k']}x{c['n']}, batch 1, {c['provider']}) streamed {sides} against the "
            f"profile's {drift['profile_GBps']:.3g} GB/s: the errors include that change")
