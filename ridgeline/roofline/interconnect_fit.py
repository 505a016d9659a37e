"""Fit the interconnect model (read by ridgeline.roofline.interconnect) from its records.

    profile["interconnect"] = fit_interconnect(records, device)

Collectives (records of probe allreduce | all_gather | reduce_scatter |
all_to_all): per collective and world size, the alpha-beta model

    t(size_bytes) = alpha + size_bytes / algbw,      busbw = algbw x busbw_factor(collective, n)

fitted by robust least squares on *relative* residuals (t_fit - t) / t over
the whole size sweep: relative weighting lets the microsecond points at small
sizes set alpha and the millisecond points at large sizes set algbw, where an
absolute least squares would let the largest sizes decide both. Huber weights
(a few reweighting passes) keep the protocol switches of NCCL at mid sizes
from pulling the line. `fit_error_median` / `fit_error_worst` are the median
and largest |t_fit - t| / t over the points. `size_bytes` follows nccl-tests
(all-gather and reduce-scatter: the total buffer; all-to-all: the total each
rank sends), so algbw and busbw compare with all_reduce_perf and friends
(alltoall_perf included). One entry per world size, in the dtype the
planner uses (bf16, else fp16, else fp32); every dtype sits under "by_dtype".
All-to-all is stored beside the others, though no sizing equation reads it
yet (expert parallelism is not modelled).

Whether a fit's bandwidth can be trusted (the fields of roofline.trust:
`status`, `reason`, `spread`; beside them `n_points`, `size_min_bytes`,
`size_max_bytes`, `n_bandwidth_points`). A size *shows the bandwidth term*
when both

    size / algbw >= BW_DOMINANCE x alpha           (fitted: >= 80% of its time)
    t(size) >= (1 + BW_DOMINANCE) x t(smallest)    (measured: the same, model-free)

hold. Why 4: algbw = size / (t - alpha), so where the size term is 4x alpha an
alpha wrong by 20% moves algbw by at most 5%; below it the bandwidth is mostly
a guess about alpha. The measured condition keeps a fit whose alpha was
clamped to 0 from passing the fitted one by construction. The bandwidth is
"verified" with BW_MIN_POINTS such sizes (in practice: the largest size) and
a complete sweep (no `failed` record for that collective, world size and
dtype); else it is "unverified" with the reason: a sweep that died at 16 KiB
fits a latency, not a bandwidth. A fixed size floor (say 1 MiB) is not the
rule: on NVLink a 1 MiB all-reduce is still mostly latency, over loopback TCP
256 KiB is not. "noisy": verified by the rule, but at a size that shows the
bandwidth term the samples' (p80 - p20) / median exceeds trust.NOISY_SPREAD.
`spread`: `samples_p20_p80`, the worst of that over the sizes showing the
bandwidth term (over all fitted sizes when none does: the small sizes' scatter
is latency jitter, not the bandwidth's), and `across_points`, the range
(max - min) of the relative residuals (t_fit - t) / t over those sizes (None
below two).

Host link (probe host_link): the pinned-memory plateau per direction, i.e. the
median bw_GBps over the sizes within 10% of the best one; "bidir" is the
aggregate of both directions at once. Pageable plateaus and the latency of
the smallest copy sit beside it.

P2P (probe p2p): per ordered pair the plateau bandwidth, the smallest copy's
latency and the path.

Everything here is "source": "measured"; estimates (for a node without a
measured collective) are made and labelled at query time by
roofline.interconnect, never stored here. Only fit_ready records are used.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import numpy as np

from ridgeline.records import fit_ready
from ridgeline.roofline.interconnect import COLLECTIVES, busbw_factor
from ridgeline.roofline.trust import NOISY, NOISY_SPREAD, UNVERIFIED, VERIFIED, sample_spread

DTYPE_PREFERENCE = ("bf16", "fp16", "fp32")
PLATEAU_FRACTION = 0.9
# A size shows the bandwidth term when size / algbw is at least this many times alpha.
BW_DOMINANCE = 4.0
# Sizes showing it that a verified bandwidth needs (one fixes algbw to 5% given alpha).
BW_MIN_POINTS = 1


def alpha_beta_fit(size_bytes: Iterable[float], time_s: Iterable[float],
                   passes: int = 20) -> dict[str, float]:
    """Robust fit of t = alpha + size / algbw; returns alpha_s, algbw_Bps and relative errors."""
    x = np.asarray(list(size_bytes), dtype=float)
    t = np.asarray(list(time_s), dtype=float)
    keep = np.isfinite(x) & np.isfinite(t) & (t > 0) & (x > 0)
    x, t = x[keep], t[keep]
    if len(x) < 2 or len(np.unique(x)) < 2:
        raise ValueError("an alpha-beta fit needs at least two distinct sizes")
    # relative residual of (alpha, inv_bw): (alpha + x inv_bw) / t - 1 = A @ p - 1
    A = np.stack([1.0 / t, x / t], axis=1)
    w = np.ones_like(t)
    p = np.zeros(2)
    for _ in range(passes):
        sw = np.sqrt(w)
        p, *_ = np.linalg.lstsq(A * sw[:, None], sw, rcond=None)
        p = _constrain(p, A, w, x, t)
        r = A @ p - 1.0
        scale = 1.4826 * float(np.median(np.abs(r - np.median(r))))
        c = 1.345 * max(scale, 1e-6)
        new_w = np.where(np.abs(r) <= c, 1.0, c / np.maximum(np.abs(r), 1e-300))
        if np.allclose(new_w, w, rtol=1e-6, atol=1e-9):
            break
        w = new_w
    alpha, inv_bw = float(p[0]), float(p[1])
    rel = np.abs((alpha + x * inv_bw) / t - 1.0)
    return {"alpha_s": alpha, "algbw_Bps": 1.0 / inv_bw, "fit_error_median": float(np.median(rel)),
            "fit_error_worst": float(np.max(rel)), "n_points": int(len(x))}


def _constrain(p: np.ndarray, A: np.ndarray, w: np.ndarray, x: np.ndarray,
               t: np.ndarray) -> np.ndarray:
    """Keep alpha >= 0 and 1/algbw > 0 (a physical model), refitting the free parameter."""
    alpha, inv_bw = p
    if inv_bw <= 0:  # no size dependence seen: latency-only sweep; bound bw by the largest point
        big = int(np.argmax(x))
        alpha = max(0.0, float(np.sum(w * t) / np.sum(w)) if alpha < 0 else alpha)
        inv_bw = max(t[big] - alpha, t[big] * 1e-3) / x[big]
        return np.array([alpha, inv_bw])
    if alpha < 0:  # through the origin: inv_bw minimising sum w (x inv_bw / t - 1)^2
        a = A[:, 1]
        return np.array([0.0, float(np.sum(w * a) / np.sum(w * a * a))])
    return p


def plateau(values: Iterable[float], fraction: float = PLATEAU_FRACTION) -> float | None:
    """Median of the values within `fraction` of the best: the sustained rate of a sweep."""
    v = [float(x) for x in values if x is not None and np.isfinite(x)]
    if not v:
        return None
    top = max(v)
    return float(np.median([x for x in v if x >= fraction * top]))


def _most_common(values: Iterable[Any]) -> Any:
    counts: dict[Any, int] = defaultdict(int)
    for v in values:
        if v is not None:
            counts[v] += 1
    return max(counts, key=counts.get) if counts else None


def _fit_one(recs: list[dict[str, Any]], collective: str, n: int,
             failed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One collective, world size and dtype: the alpha-beta fit and whether it can be trusted."""
    fit = alpha_beta_fit([r["size_bytes"] for r in recs],
                         [r["time_ms_median"] * 1e-3 for r in recs])
    largest = max(recs, key=lambda r: r["size_bytes"])
    algbw = fit["algbw_Bps"] / 1e9
    out = {
        "alpha_us": fit["alpha_s"] * 1e6,
        "algbw_GBps": algbw,
        "busbw_GBps": algbw * busbw_factor(collective, n),
        "fit_error_median": fit["fit_error_median"],
        "fit_error_worst": fit["fit_error_worst"],
        "n_points": fit["n_points"],
        "size_min_bytes": int(min(r["size_bytes"] for r in recs)),
        "size_max_bytes": int(largest["size_bytes"]),
        # the figure to hold against all_reduce_perf's busbw at the same size
        "busbw_GBps_at_max_size": largest.get("busbw_GBps"),
    }
    out.update(fit_trust(recs, fit["alpha_s"], fit["algbw_Bps"], failed or []))
    return out


def bandwidth_sizes(recs: list[dict[str, Any]], alpha_s: float,
                    algbw_Bps: float) -> list[dict[str, Any]]:
    """The records whose size shows the bandwidth term (module docstring), smallest first."""
    recs = sorted(recs, key=lambda r: r["size_bytes"])
    t_smallest_s = recs[0]["time_ms_median"] * 1e-3
    return [r for r in recs
            if r["size_bytes"] / algbw_Bps >= BW_DOMINANCE * alpha_s
            and r["time_ms_median"] * 1e-3 >= (1 + BW_DOMINANCE) * t_smallest_s]


def fit_trust(recs: list[dict[str, Any]], alpha_s: float, algbw_Bps: float,
              failed: list[dict[str, Any]]) -> dict[str, Any]:
    """status, reason, spread and n_bandwidth_points of one fit (module docstring)."""
    shown = bandwidth_sizes(recs, alpha_s, algbw_Bps)
    judged = shown or recs
    spreads = [(v, r["size_bytes"]) for r in judged if (v := sample_spread(r)) is not None]
    worst = max(spreads) if spreads else None
    residuals = [(alpha_s + r["size_bytes"] / algbw_Bps) / (r["time_ms_median"] * 1e-3) - 1.0
                 for r in shown]
    spread = {"samples_p20_p80": worst[0] if worst else None,
              "across_points": max(residuals) - min(residuals) if len(residuals) >= 2 else None}
    reasons = [_incomplete_reason(failed)] if failed else []
    if len(shown) < BW_MIN_POINTS:
        reasons.append(_not_shown_reason(recs, alpha_s, algbw_Bps, len(shown)))
    if reasons:
        status = UNVERIFIED
    elif worst and worst[0] > NOISY_SPREAD:
        status = NOISY
        reasons.append(f"samples scatter {worst[0]:.0%} (p20-p80 / median) at {worst[1]} B, "
                       f"above {NOISY_SPREAD:.0%}: something else was running")
    else:
        status = VERIFIED
    return {"status": status, "reason": "; ".join(reasons) or None, "spread": spread,
            "n_bandwidth_points": len(shown)}


def _not_shown_reason(recs: list[dict[str, Any]], alpha_s: float, algbw_Bps: float,
                      n_shown: int) -> str:
    largest = max(recs, key=lambda r: r["size_bytes"])
    smallest = min(recs, key=lambda r: r["size_bytes"])
    term = largest["size_bytes"] / algbw_Bps
    ratio = f"{term / alpha_s:.2g}x alpha" if alpha_s > 0 else "alpha fitted to 0"
    rise = largest["time_ms_median"] / smallest["time_ms_median"]
    return (f"bandwidth term not shown: {n_shown} of {len(recs)} sizes (needs {BW_MIN_POINTS}); "
            f"at the largest, {largest['size_bytes']} B, size/bandwidth is {ratio} and the time "
            f"{rise:.2g}x the smallest size's (needs >= {BW_DOMINANCE:g}x and "
            f">= {1 + BW_DOMINANCE:g}x)")


def _incomplete_reason(failed: list[dict[str, Any]]) -> str:
    # the failed records themselves carry the full story (which rank, where, why)
    sizes = sorted(f["size_bytes"] for f in failed if f.get("size_bytes"))
    what = (f"{len(sizes)} size(s) from {sizes[0]} B not measured" if sizes
            else "a rank failed")
    return f"sweep incomplete: {what} (see the failed records)"


def fit_collectives(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{collective: {"<world_size>": entry}} for every collective with a fittable sweep.

    A `failed` record of the same collective, world size and dtype (a sweep that
    died or was skipped) makes that fit unverified.
    """
    out: dict[str, dict[str, Any]] = {}
    for collective in COLLECTIVES:
        groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
        for r in fit_ready(records, collective):
            if r.get("world_size") and r.get("time_ms_median"):
                groups[(int(r["world_size"]), r.get("dtype") or "")].append(r)
        failed: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            if r.get("probe") == collective and r.get("status") == "failed" and r.get("world_size"):
                failed[(int(r["world_size"]), r.get("dtype") or "")].append(r)
        table: dict[str, Any] = {}
        for n in sorted({n for n, _ in groups}):
            by_dtype = {}
            for (m, dtype), recs in groups.items():
                if m != n:
                    continue
                try:
                    by_dtype[dtype] = _fit_one(recs, collective, n, failed.get((n, dtype)))
                except ValueError:
                    continue
            if not by_dtype:
                continue
            chosen = next((d for d in DTYPE_PREFERENCE if d in by_dtype), sorted(by_dtype)[0])
            recs = groups[(n, chosen)]
            entry = dict(by_dtype[chosen])
            entry.update({
                "link": _most_common(r.get("link") for r in recs) or "unknown",
                "source": "measured",
                "dtype": chosen,
                "backend": _most_common(r.get("provider") for r in recs),
                "nodes": _most_common(r.get("nodes") for r in recs),
                "by_dtype": by_dtype,
            })
            table[str(n)] = entry
        if table:
            out[collective] = table
    return out


def fit_host_link(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Pinned plateau per direction (GB/s), pageable beside it, small-copy latency."""
    recs = fit_ready(records, "host_link")
    if not recs:
        return None

    def table(memory: str) -> dict[str, float]:
        out = {}
        for d in ("h2d", "d2h", "bidir"):
            v = plateau(r["bw_GBps"] for r in recs
                        if r.get("memory") == memory and r.get("direction") == d)
            if v is not None:
                out[d] = v
        return out

    pinned, pageable = table("pinned"), table("pageable")
    main, memory = (pinned, "pinned") if pinned else (pageable, "pageable")
    latency = {}
    for d in ("h2d", "d2h"):
        mine = [r for r in recs if r.get("memory") == memory and r.get("direction") == d]
        if mine:
            latency[d] = min(mine, key=lambda r: r["size_bytes"])["time_ms_median"] * 1e3
    out: dict[str, Any] = dict(main)
    out.update({"source": "measured", "memory": memory, "bidir_is": "sum of both directions",
                "pageable": pageable, "latency_us": latency})
    return out


def fit_p2p(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    recs = fit_ready(records, "p2p")
    if not recs:
        return None
    pairs: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        pairs[(int(r["src"]), int(r["dst"]))].append(r)
    rows = []
    for (s, d), rs in sorted(pairs.items()):
        smallest = min(rs, key=lambda r: r["size_bytes"])
        rows.append({"src": s, "dst": d, "path": rs[0].get("path"),
                     "path_code": rs[0].get("path_code"),
                     "bw_GBps": plateau(r["bw_GBps"] for r in rs),
                     "latency_us": smallest["time_ms_median"] * 1e3})
    return {"source": "measured", "pairs": rows}


def _topology(records: list[dict[str, Any]], device: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(device, dict) and isinstance(device.get("topology"), dict):
        return device["topology"]
    found = [r["topology"] for r in records if r.get("probe") == "topology" and r.get("topology")]
    return found[-1] if found else None


def fit_interconnect(records: list[dict[str, Any]], device: dict[str, Any]) -> dict[str, Any]:
    """profile["interconnect"]: collectives per world size, host link, p2p, topology."""
    out: dict[str, Any] = fit_collectives(records)
    host = fit_host_link(records)
    if host:
        out["host_link_GBps"] = host
    p2p = fit_p2p(records)
    if p2p:
        out["p2p"] = p2p
    topo = _topology(records, device)
    if topo:
        out["topology"] = topo
    return out
