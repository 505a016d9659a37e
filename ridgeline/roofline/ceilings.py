"""Measured ceilings from validated records: sustained bandwidth per stream kernel, best matmul per dtype.

Bandwidth plateau of a (kernel, provider): the median bw_GBps over the sizes
whose working set is >= PLATEAU_CACHE_MULTIPLE x the last-level cache (no cache
can serve those); when the sweep has no such size, the largest size is used and
the detail says so. The kernel's ceiling is the best provider's plateau.

Matmul ceiling of a dtype: the highest median TFLOP/s over its validated cases,
with the shape where it was reached.

A ceiling above the datasheet peak is flagged (a number above the physical
ceiling is a bug until explained), not reported as a win.
"""

from __future__ import annotations

import statistics
from typing import Any

from ridgeline.probes.hbm import DEFAULT_CACHE_BYTES, PLATEAU_CACHE_MULTIPLE
from ridgeline.records import fit_ready


def bandwidth_plateaus(records: list[dict[str, Any]], cache_bytes: int) -> dict[str, dict[str, Any]]:
    """{kernel: {provider: {bw_GBps, plateau_min_bytes, n_points, from_plateau}}}."""
    out: dict[str, dict[str, Any]] = {}
    hbm = fit_ready(records, "hbm")
    threshold = PLATEAU_CACHE_MULTIPLE * cache_bytes
    for kernel in sorted({r["kernel"] for r in hbm}):
        for provider in sorted({r["provider"] for r in hbm if r["kernel"] == kernel}):
            rows = [r for r in hbm if r["kernel"] == kernel and r["provider"] == provider
                    and r.get("bw_GBps")]
            if not rows:
                continue
            plateau = [r for r in rows if r["size_bytes"] >= threshold]
            from_plateau = bool(plateau)
            if not plateau:
                plateau = [max(rows, key=lambda r: r["size_bytes"])]
            out.setdefault(kernel, {})[provider] = {
                "bw_GBps": statistics.median(r["bw_GBps"] for r in plateau),
                "plateau_min_bytes": min(r["size_bytes"] for r in plateau),
                "n_points": len(plateau),
                "from_plateau": from_plateau,
            }
    return out


def fit_ceilings(records: list[dict[str, Any]], device: dict[str, Any],
                 datasheet: dict[str, Any] | None = None) -> dict[str, Any]:
    cache = device.get("l2_cache_bytes") or DEFAULT_CACHE_BYTES
    plateaus = bandwidth_plateaus(records, cache)
    bw, bw_detail = {}, {}
    for kernel, providers in plateaus.items():
        best = max(providers, key=lambda p: providers[p]["bw_GBps"])
        bw[kernel] = providers[best]["bw_GBps"]
        bw_detail[kernel] = {"provider": best, **providers[best],
                             "per_provider_GBps": {p: v["bw_GBps"] for p, v in providers.items()}}
    mm, mm_detail = {}, {}
    for r in fit_ready(records, "matmul"):
        if r.get("TFLOPS") and r["TFLOPS"] > mm.get(r["dtype"], 0.0):
            mm[r["dtype"]] = r["TFLOPS"]
            mm_detail[r["dtype"]] = {k: r.get(k) for k in
                                     ("provider", "m", "n", "k", "shape_kind", "time_ms_median")}
    flags = []
    if datasheet:
        peak_bw = datasheet.get("memory_bandwidth_GBps")
        for kernel, value in bw.items():
            if peak_bw and value > peak_bw:
                flags.append(f"{kernel} bandwidth {value:.0f} GB/s exceeds the datasheet "
                             f"{peak_bw:.0f} GB/s: check cache effects before trusting it")
        for dtype, value in mm.items():
            peak = (datasheet.get("matmul_TFLOPS") or {}).get(dtype)
            if peak and value > peak:
                flags.append(f"{dtype} matmul {value:.1f} TFLOP/s exceeds the datasheet "
                             f"{peak:.1f}: check the FLOP count and validation")
    return {"memory_bandwidth_GBps": bw, "memory_bandwidth_detail": bw_detail,
            "matmul_TFLOPS": mm, "matmul_detail": mm_detail, "flags": flags,
            "plateau_rule": f"median over working sets >= {PLATEAU_CACHE_MULTIPLE} x "
                            f"{cache / 2**20:.0f} MiB cache"}
