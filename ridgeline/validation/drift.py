"""Has the device changed since it was profiled? Two of the profile's own cases, timed again.

`validate` prices its points on a profile measured earlier. A device whose streaming rate
or compute rate moved in between (a shared VM's neighbours, another tenant on the GPU, a
clock or power change) shows up as prediction error that is not the model's. So validate
runs two cases the profile measured again, with the same probe code, provider and timer,
REPEATS times before and REPEATS times after its points (the two alternating, so a slow
stretch of the machine falls on both):

    gemv    the best-provider decode GEMV (model.gemv_best_provider) in the validation's
            weight dtype (else bf16, else any), batch 1, largest weights   -> GB/s
    matmul  the matmul ceiling's shape (ceilings.matmul_detail) in the weight dtype
            (else bf16, else any), its provider                            -> TFLOP/s

    change = median(rates_now) / rate_profile - 1     (before and after the points)
    spread = (p80 - p20) / median of all 2 x REPEATS rates    (the run-to-run spread)

A |change| above roofline.trust.NOISY_SPREAD (10%) on either side adds a note: the errors
then include the device's own change (memory-bound points follow the GEMV, compute-bound
ones, CPU attention among them, the matmul). A spread above it adds another: the same
kernel, timed again seconds apart, varies that much, so errors of that size cannot be told
from the device's own variation (a point is one such timing per pass). On a shared VM the
machine's memory bandwidth moves with its neighbours without any CPU steal showing: one
bf16 GEMV timed 77 times in a minute on the project's 2-core VM ranged 9.8-17.9 GB/s,
spread 26% (docs/validation.md, "The CPU"). validation.json "drift":

    {"gemv": {"case": {...}, "unit": "GB/s", "profile", "before", "after",
              "before_change", "after_change", "before_runs": [...], "after_runs": [...],
              "spread", "runs_min", "runs_max"},
     "matmul": {... "unit": "TFLOP/s" ...}}        (a kind the profile cannot give: absent)

Run by ridgeline.validation.run (not with --tp); tests: tests/test_validation_drift.py.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from ridgeline.roofline.sections import Ceilings, ModelSection
from ridgeline.roofline.trust import NOISY_SPREAD, scatters

UNITS = {"gemv": "GB/s", "matmul": "TFLOP/s"}
REPEATS = 3      # timings of each reference on each side of the points
RATE_FIELD = {"gemv": "bw_GBps", "matmul": "TFLOPS"}


@dataclass(frozen=True)
class Reference:
    """One profiled case to time again: its probe (`kind`), case parameters and rate then."""

    kind: str                  # "gemv" | "matmul"
    case: dict[str, Any]       # the probe's Case parameters
    provider: str
    profile_rate: float        # in UNITS[kind]

    def label(self) -> str:
        c = self.case
        return (f"{c['dtype']} GEMV {c['k']}x{c['n']} batch 1" if self.kind == "gemv"
                else f"{c['dtype']} matmul {c['m']}x{c['n']}x{c['k']}")


def _prefer(candidates: dict[str, Any], weights: str) -> str | None:
    for dtype in (weights, "bf16"):
        if dtype in candidates:
            return dtype
    return next(iter(sorted(candidates)), None)


def references(profile: dict[str, Any], weights: str) -> list[Reference]:
    """The profile's GEMV and matmul cases to time again (either may be missing)."""
    out = []
    rows = [r for r in ModelSection.of(profile).gemv_best_provider or []
            if isinstance(r, dict) and r.get("batch") == 1 and r.get("bw_GBps")
            and r.get("provider") and r.get("k") and r.get("n")]
    by_dtype: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_dtype.setdefault(str(r.get("dtype")), []).append(r)
    dtype = _prefer(by_dtype, weights)
    if dtype is not None:
        row = max(by_dtype[dtype], key=lambda r: (r.get("weight_bytes") or 0, r["k"] * r["n"]))
        out.append(Reference("gemv", {"provider": row["provider"], "dtype": dtype, "batch": 1,
                                      "k": int(row["k"]), "n": int(row["n"])},
                             str(row["provider"]), float(row["bw_GBps"])))
    ceilings = Ceilings.of(profile)
    detail = {d: v for d, v in (ceilings.matmul_detail or {}).items()
              if isinstance(v, dict) and ceilings.matmul_TFLOPS.get(d)
              and all(v.get(k) for k in ("m", "n", "k", "provider"))}
    dtype = _prefer(detail, weights)
    if dtype is not None:
        d = detail[dtype]
        out.append(Reference("matmul", {"dtype": dtype, "shape_kind": d.get("shape_kind", "square"),
                                        "m": int(d["m"]), "n": int(d["n"]), "k": int(d["k"])},
                             str(d["provider"]), float(ceilings.matmul_TFLOPS[dtype])))
    return out


def time_reference(ref: Reference, device, timer) -> float | None:
    """The case's rate now (UNITS[kind]) through its probe; None when it was waived, failed
    or did not validate."""
    from ridgeline.probes import get_probe
    from ridgeline.probes.base import Case, ProbeContext

    probe = get_probe(ref.kind)
    try:
        records = probe.run(Case(dict(ref.case)), ProbeContext(device, timer))
    except Exception:  # noqa: BLE001 - a reference that cannot run is reported as not run
        return None
    finally:
        pools = getattr(probe, "pools", None)
        if pools is not None:
            pools.drop()
    mine = [r for r in records if r.get("provider") == ref.provider and r.get("validated")
            and r.get(RATE_FIELD[ref.kind])]
    return float(mine[0][RATE_FIELD[ref.kind]]) if mine else None


def time_references(refs: list[Reference], device, timer,
                    repeats: int = REPEATS) -> list[list[float | None]]:
    """Each reference's rates over `repeats` rounds, the references alternating in a round."""
    runs: list[list[float | None]] = [[] for _ in refs]
    for _ in range(repeats):
        for ref, out in zip(refs, runs):
            out.append(time_reference(ref, device, timer))
    return runs


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(refs: list[Reference], before: list[list[float | None]],
              after: list[list[float | None]]) -> dict[str, Any]:
    """validation.json "drift" from the references and their rates (a list per reference)
    before and after the points."""
    from ridgeline.validation.measure import relative_spread

    out = {}
    for ref, b_runs, a_runs in zip(refs, before, after):
        b_ok = [r for r in b_runs if r]
        a_ok = [r for r in a_runs if r]
        b, a = _median(b_ok), _median(a_ok)
        both = b_ok + a_ok

        def change(now: float | None) -> float | None:
            return now / ref.profile_rate - 1.0 if now else None

        out[ref.kind] = {"case": dict(ref.case), "provider": ref.provider, "label": ref.label(),
                         "unit": UNITS[ref.kind], "profile": ref.profile_rate, "before": b,
                         "after": a, "before_change": change(b), "after_change": change(a),
                         "before_runs": list(b_runs), "after_runs": list(a_runs),
                         # a spread needs a few runs: (p80 - p20) of two says little
                         "spread": relative_spread(both) if len(both) >= 3 else None,
                         "runs_min": min(both) if both else None,
                         "runs_max": max(both) if both else None}
    return out


def note(drift: dict[str, Any] | None) -> str | None:
    """One line when a reference ran more than NOISY_SPREAD away from its profile."""
    parts = []
    for d in (drift or {}).values():
        moved = [f"{100 * d[f'{side}_change']:+.0f}% {side}" for side in ("before", "after")
                 if d.get(f"{side}_change") is not None
                 and abs(d[f"{side}_change"]) > NOISY_SPREAD]
        if moved:
            parts.append(f"{d['label']} ({d['provider']}) {' and '.join(moved)} the points "
                         f"against the profile's {d['profile']:.3g} {d['unit']}")
    if not parts:
        return None
    return ("the device changed since it was profiled: " + "; ".join(parts)
            + ": the errors include that change")


def spread_note(drift: dict[str, Any] | None) -> str | None:
    """One line when a reference's own re-timings spread more than NOISY_SPREAD."""
    parts = [f"{d['label']} ({d['provider']}) timed {_n_runs(d)} times ranged "
             f"{d['runs_min']:.3g}-{d['runs_max']:.3g} {d['unit']} (spread {d['spread']:.0%})"
             for d in (drift or {}).values() if scatters(d.get("spread"))]
    if not parts:
        return None
    return ("the device is not repeatable at the errors' scale: " + "; ".join(parts)
            + ": a point is one such timing per pass, so errors of that size can be the "
              "device's own variation, not the model's")


def _n_runs(d: dict[str, Any]) -> int:
    return sum(1 for r in (d.get("before_runs") or []) + (d.get("after_runs") or []) if r)


def lines(drift: dict[str, Any] | None) -> list[str]:
    """Markdown lines, one per reference: how far it ran from the profile, before and after."""
    def signed(rel: float | None) -> str:
        return "-" if rel is None else f"{100 * rel:+.0f}%"

    def runs(d: dict[str, Any]) -> str:
        if d.get("spread") is None:
            return ""
        return (f" ({_n_runs(d)} runs: {d['runs_min']:.3g}-{d['runs_max']:.3g} {d['unit']}, "
                f"spread {d['spread']:.0%})")

    return [f"- device drift, {d['label']} ({d['provider']}, profile {d['profile']:.3g} "
            f"{d['unit']}): {signed(d.get('before_change'))} before, "
            f"{signed(d.get('after_change'))} after the points{runs(d)}"
            for d in (drift or {}).values()]
