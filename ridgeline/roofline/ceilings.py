"""Measured ceilings from validated records, each with its status, reason and spread.

Bandwidth of a (kernel, provider): the median bw_GBps over the verified plateau
of its working-set sweep (ridgeline.roofline.plateau: the largest sizes whose
rates agree within PLATEAU_TOLERANCE, over at least two doublings, all above
PLATEAU_CACHE_MULTIPLE x the reported cache and PLATEAU_MIN_BYTES). A size measured more than once
(re-measured because it was disturbed) counts with its fastest attempt: other
work only ever slows a measurement down (BabelStream and mamf-finder keep the
best for the same reason). The
kernel's ceiling is the best verified provider's plateau (the best provider
overall when none is verified, then marked unverified).

Matmul of a dtype: the highest median TFLOP/s over its validated cases, with the
shape where it was reached. It is verified when at least PEAK_MIN_SHAPES
distinct shapes come within PEAK_AGREEMENT of it (a peak from one shape is a
peak of that shape, and says so).

Status (see ridgeline.roofline.trust): "noisy" when the samples behind the
ceiling spread by more than NOISY_SPREAD (p20..p80 over the median), else
"verified" or "unverified" with the reason.

A ceiling above the datasheet peak is flagged (a number above the physical
ceiling is a bug until explained), not reported as a win.
"""

from __future__ import annotations

from typing import Any

from ridgeline.records import fit_ready
from ridgeline.roofline import trust
from ridgeline.roofline.plateau import find_plateau
from ridgeline.roofline.sections import Ceilings
from ridgeline.roofline.trust import (DEFAULT_CACHE_BYTES, NOISY, NOISY_SPREAD, PEAK_AGREEMENT,
                                      PEAK_MIN_SHAPES, PLATEAU_CACHE_MULTIPLE, UNVERIFIED,
                                      VERIFIED, sample_spread)


def fastest_per_size(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per size_bytes: the attempt with the highest median rate (the least
    disturbed one: other work can slow a copy down, never speed it up)."""
    best: dict[int, dict[str, Any]] = {}
    for r in rows:
        s = r["size_bytes"]
        if s not in best or r["bw_GBps"] > best[s]["bw_GBps"]:
            best[s] = r
    return [best[s] for s in sorted(best)]


def plateau_floor_bytes(cache_bytes: int | None) -> int:
    """The smallest working set a plateau may start at (see trust.PLATEAU_MIN_BYTES)."""
    return max(PLATEAU_CACHE_MULTIPLE * (cache_bytes or DEFAULT_CACHE_BYTES),
               trust.PLATEAU_MIN_BYTES)


def _status(verified: bool, reason: str | None, worst_spread: float | None,
            disturbed: bool = False) -> tuple[str, str | None]:
    if worst_spread is not None and worst_spread > NOISY_SPREAD:
        noisy = (f"samples spread {worst_spread:.0%} (p20..p80 of the median), above "
                 f"{NOISY_SPREAD:.0%}: other work disturbed the run")
        return NOISY, noisy + (f"; {reason}" if reason and not verified else "")
    if disturbed and not verified:
        return NOISY, reason
    return (VERIFIED, None) if verified else (UNVERIFIED, reason)


def _max(values) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def bandwidth_plateau(rows: list[dict[str, Any]], cache_bytes: int | None) -> dict[str, Any]:
    """The ceiling detail of one (kernel, provider) sweep."""
    per_size = fastest_per_size(rows)
    plateau = find_plateau([(r["size_bytes"], r["bw_GBps"]) for r in per_size],
                           plateau_floor_bytes(cache_bytes))
    chosen = [r for r in per_size if r["size_bytes"] in set(plateau.sizes_bytes)]
    worst = _max(sample_spread(r) for r in chosen)
    status, reason = _status(plateau.verified, plateau.reason, worst,
                             disturbed=bool(plateau.dips_bytes) and not plateau.still_falling)
    return {"bw_GBps": plateau.value, "status": status, "reason": reason,
            "spread": {"samples_p20_p80": worst, "across_points": plateau.across_points},
            "plateau_sizes_bytes": plateau.sizes_bytes,
            "plateau_min_bytes": min(plateau.sizes_bytes) if plateau.sizes_bytes else None,
            "n_points": len(plateau.sizes_bytes),
            "largest_size_bytes": max(r["size_bytes"] for r in per_size),
            "from_plateau": plateau.verified, "still_falling": plateau.still_falling,
            "disturbed_sizes_bytes": plateau.dips_bytes}


def bandwidth_plateaus(records: list[dict[str, Any]], cache_bytes: int | None
                       ) -> dict[str, dict[str, Any]]:
    """{kernel: {provider: detail}} for every hbm sweep in the records."""
    out: dict[str, dict[str, Any]] = {}
    hbm = [r for r in fit_ready(records, "hbm") if r.get("bw_GBps") and r.get("size_bytes")]
    for kernel in sorted({r["kernel"] for r in hbm}):
        for provider in sorted({r["provider"] for r in hbm if r["kernel"] == kernel}):
            rows = [r for r in hbm if r["kernel"] == kernel and r["provider"] == provider]
            out.setdefault(kernel, {})[provider] = bandwidth_plateau(rows, cache_bytes)
    return out


def _best_provider(providers: dict[str, dict[str, Any]]) -> str:
    trusted = [p for p, d in providers.items() if d["status"] == VERIFIED]
    pool = trusted or list(providers)
    return max(pool, key=lambda p: providers[p]["bw_GBps"] or 0.0)


def matmul_peak(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ceiling detail of one dtype: the best shape, confirmed by other shapes or not."""
    best = max(rows, key=lambda r: r["TFLOPS"])
    near = {(r.get("m"), r.get("n"), r.get("k")) for r in rows
            if r["TFLOPS"] >= (1 - PEAK_AGREEMENT) * best["TFLOPS"]}
    shapes = {(r.get("m"), r.get("n"), r.get("k")) for r in rows}
    verified = len(near) >= PEAK_MIN_SHAPES
    reason = None
    if not verified:
        others = [r["TFLOPS"] for r in rows
                  if (r.get("m"), r.get("n"), r.get("k")) != (best.get("m"), best.get("n"),
                                                              best.get("k"))]
        reason = (f"peak from one shape (M={best.get('m')} N={best.get('n')} K={best.get('k')}); "
                  + (f"the next best of {len(shapes) - 1} other shape(s) reaches "
                     f"{max(others) / best['TFLOPS']:.0%} of it" if others
                     else "no other shape was measured"))
    spread = sample_spread(best)
    status, reason = _status(verified, reason, spread)
    detail = {k: best.get(k) for k in ("provider", "m", "n", "k", "shape_kind", "time_ms_median")}
    detail.update({"TFLOPS": best["TFLOPS"], "status": status, "reason": reason,
                   "spread": {"samples_p20_p80": spread,
                              "across_points": None},
                   "n_shapes": len(shapes), "n_shapes_within_agreement": len(near)})
    return detail


def fit_ceilings(records: list[dict[str, Any]], device: dict[str, Any],
                 datasheet: dict[str, Any] | None = None) -> dict[str, Any]:
    cache = device.get("l2_cache_bytes") or DEFAULT_CACHE_BYTES
    plateaus = bandwidth_plateaus(records, cache)
    bw, bw_detail = {}, {}
    for kernel, providers in plateaus.items():
        best = _best_provider(providers)
        bw[kernel] = providers[best]["bw_GBps"]
        bw_detail[kernel] = {"provider": best, **providers[best],
                             "per_provider_GBps": {p: v["bw_GBps"] for p, v in providers.items()},
                             "per_provider_status": {p: v["status"] for p, v in providers.items()}}
    mm, mm_detail = {}, {}
    matmul = [r for r in fit_ready(records, "matmul") if r.get("TFLOPS")]
    for dtype in sorted({r["dtype"] for r in matmul}):
        detail = matmul_peak([r for r in matmul if r["dtype"] == dtype])
        mm[dtype] = detail["TFLOPS"]
        mm_detail[dtype] = detail
    flags = []
    if datasheet:
        peak_bw = datasheet.get("memory_bandwidth_GBps")
        for kernel, value in bw.items():
            if peak_bw and value and value > peak_bw:
                flags.append(f"{kernel} bandwidth {value:.0f} GB/s exceeds the datasheet "
                             f"{peak_bw:.0f} GB/s: check cache effects before trusting it")
        for dtype, value in mm.items():
            peak = (datasheet.get("matmul_TFLOPS") or {}).get(dtype)
            if peak and value > peak:
                flags.append(f"{dtype} matmul {value:.1f} TFLOP/s exceeds the datasheet "
                             f"{peak:.1f}: check the FLOP count and validation")
    rule = (f"median over the largest working sets whose rates agree within "
            f"{trust.PLATEAU_TOLERANCE:.0%}, over >= 2 doublings, all >= "
            f"{plateau_floor_bytes(cache) / 2**20:,.0f} MiB (the larger of "
            f"{PLATEAU_CACHE_MULTIPLE} x the {cache / 2**20:.0f} MiB reported "
            f"cache and {trust.PLATEAU_MIN_BYTES / 2**20:.0f} MiB)")
    return Ceilings(bw, mm, bw_detail, mm_detail, flags, rule).to_dict()
