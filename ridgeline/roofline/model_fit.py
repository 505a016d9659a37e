"""Fit the roofline model (see roofline.model) from hbm, matmul, gemv and launch records.

    model = fit_model(records, ceilings, datasheet, device=profile["provenance"]["device"])
    profile["model"] = model      # read back by RooflineModel.from_profile

Only validated records are used (ridgeline.records.fit_ready); invalid, waived
and failed records never reach the fit.

What is fitted, and from what:
- latency floor (launch records): the per-launch time of the fastest minimal
  kernel under CUDA-graph replay, i.e. launch cost plus the minimum kernel
  time; the eager (one launch per call) floor is stored beside it. Serving
  engines replay graphs in decode, so the graph floor is the model's (eager
  when no graph was timed, e.g. on the CPU). Without launch records: the fitted
  per-kernel overhead.
- bandwidth: decode streams weights through a GEMV, not through a STREAM-style
  copy, so when gemv records exist the bandwidth is fitted on them (its raw
  plateau, the median of the best provider's achieved GB/s at batch <= 16 on
  weights >= 64 MB, starts the fit and is stored); otherwise it is the hbm
  read plateau from the ceilings, held fixed. Both numbers are stored.
- per-dtype bandwidth (gemv-fitted bandwidth only): a GEMV's weight-streaming rate
  depends on its dtype (CPU fp32 GEMVs stream at about half the bf16 rate; a GPU fp8
  GEMV through torch._scaled_mm worse than bf16), so one shared rate would be dragged
  by the worst dtype. The reference dtype (the compute dtype with the most gemv cases;
  ties: bf16, then by name) holds bandwidth_GBps; every other compute dtype with at
  least MIN_GEMV_FOR_OWN_BANDWIDTH gemv cases may stream at bandwidth * exp(r_d), r_d
  within 4x. All those r_d are freed together, refitted over the p grid, and kept only
  when they pay for themselves as the wave term must (no worse score, 10% less squared
  error); not kept, they are tried once more after a wave term was kept. Stored as
  matmul[dtype].bandwidth_GBps; bandwidth.reference_dtype, bandwidth.per_dtype_GBps
  (when kept) and bandwidth.per_dtype_tried say what was done.
- per-dtype peak_TFLOPS and flops_half, the per-kernel overhead and the
  memory/compute overlap exponent overlap_p: least squares on log time
  (relative error) over the matmul records and all gemv records (best provider
  per case), solved by Levenberg-Marquardt for each p of a small grid; the p
  with the best score max(median / 5 %, worst / 15 %) is kept.
- two overheads: records timed back to back (CUDA-graph replay, the gemv
  probe) and records timed one launch per sample (events, the matmul probe)
  pay different fixed costs, so each timing mode gets its own; the model's
  overhead_us is the graph one (serving replays graphs), the eager one is
  stored beside it.
- wave quantization (GPU only, needs the device's SM/CU count): per dtype, a
  tile shape from a few candidates is kept only when it lowers both the score
  and the squared error; tried after the bandwidth form (shared or per dtype) is chosen.
- fit_error: median and worst |predicted - measured| / measured of the final
  model on its own records, per probe (measured = time_ms_median).
- undetermined: a fixed cost (an overhead, a GEMM start-up flops_half / peak, a
  floor taken from the overhead) that the fit drove below RESOLVABLE_TIME_US ran
  into its numerical floor: the data do not determine it. It is stored as 0, its
  field path listed in "undetermined" and said in "notes", never kept as 1e-10
  noise that a report or `compare` would quote.

Run: called by ridgeline.roofline.profile_fit.fit_profile after `ridgeline profile`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from ridgeline.datasheets import matmul_peak_TFLOPS
from ridgeline.records import fastest_per_case, fit_ready, gemv_case_key
from ridgeline.roofline.model import RESOLVABLE_TIME_US, RooflineModel, wave_factor
from ridgeline.roofline.sections import Ceilings, ModelSection
from ridgeline.roofline.trust import GEMV_PLATEAU_MIN_WEIGHT_BYTES

GEMV_PLATEAU_MAX_BATCH = 16
TARGET_MEDIAN = 0.05
TARGET_WORST = 0.15
OVERLAP_GRID: tuple[float | None, ...] = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0, None)
WAVE_TILES = ((128, 128), (128, 256), (256, 128))
FORM = ("t = max(latency_floor, overhead + smax_p(bytes / bandwidth(dtype), "
        "w(M,N) * (flops + flops_half) / peak))")
# a dtype needs this many gemv cases (best provider each) to be given its own bandwidth
MIN_GEMV_FOR_OWN_BANDWIDTH = 4
# squared log-time error below which fits do not differ (relative errors ~1e-6: no timer)
COST_RESOLUTION = 1e-12
BOUND_FACTOR = 4.0  # bandwidth, peaks and per-dtype bandwidth ratios: within 4x of the data


def _mode(rec: dict[str, Any]) -> str:
    """graph | eager: how a record was timed (explicit 'mode' wins; else from the timer).

    Back-to-back launches in one sample (a CUDA graph, or amortized host launches) count as
    graph: no per-call launch gap is in the time."""
    if rec.get("mode") in ("graph", "eager"):
        return rec["mode"]
    if rec.get("timer") == "cuda-graph" or (rec.get("launches_per_sample") or 1) > 1:
        return "graph"
    return "eager"


def fit_latency(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Launch floors in us: per-launch time of every launch kernel, and per mode the fastest.

    {"graph_us": .., "eager_us": .., "kernels": {kernel: {"mode", "provider", "time_us"}}}
    """
    kernels: dict[str, dict[str, Any]] = {}
    for r in fit_ready(records, "launch"):
        if not r.get("time_ms_median"):
            continue
        mode = _mode(r)
        name = str(r.get("kernel") or "launch")
        name = name if name.endswith(mode) else f"{name}_{mode}"  # one entry per timing mode
        t_us = r["time_ms_median"] * 1e3
        if name not in kernels or t_us < kernels[name]["time_us"]:
            kernels[name] = {"mode": mode, "provider": r.get("provider"), "time_us": t_us}
    out: dict[str, Any] = {}
    for mode in ("graph", "eager"):
        times = [k["time_us"] for k in kernels.values() if k["mode"] == mode]
        out[f"{mode}_us"] = float(min(times)) if times else None
    out["kernels"] = dict(sorted(kernels.items()))
    return out


def _hbm_read_GBps(records: list[dict[str, Any]], ceilings: dict[str, Any]) -> float | None:
    # the ceilings hold the one plateau rule (roofline.ceilings); never a second one here
    return Ceilings.of({"ceilings": ceilings}).first_bandwidth_GBps(("read", "copy"))


def gemv_best(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best provider per gemv (dtype, batch, K, N), with the runner-up's slowdown."""
    rows = []
    for (dtype, batch, k, n), recs in fastest_per_case(records, "gemv", gemv_case_key).items():
        best = recs[0]
        rows.append({
            "dtype": dtype, "batch": batch, "k": k, "n": n,
            "weight_bytes": best.get("weight_bytes"), "provider": best["provider"],
            "time_ms_median": best["time_ms_median"], "bw_GBps": best.get("bw_GBps"),
            "TFLOPS": best.get("TFLOPS"),
            "providers_ms": {r["provider"]: r["time_ms_median"] for r in recs},
            "runner_up_slowdown": (recs[1]["time_ms_median"] / best["time_ms_median"]
                                   if len(recs) > 1 else None),
            "_record": best,
        })
    return rows


def gemv_plateau(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Best-provider weight-streaming rate at small batch on large weights (median)."""
    small = [r for r in rows if r["batch"] <= GEMV_PLATEAU_MAX_BATCH and r.get("bw_GBps")]
    if not small:
        return None
    big = [r for r in small if (r.get("weight_bytes") or 0) >= GEMV_PLATEAU_MIN_WEIGHT_BYTES]
    note = None
    if not big:  # quick/CPU sweeps: the largest weights there are
        largest = max(r.get("weight_bytes") or 0 for r in small)
        big = [r for r in small if (r.get("weight_bytes") or 0) == largest]
        note = f"no weights >= {GEMV_PLATEAU_MIN_WEIGHT_BYTES / 1e6:.0f} MB: largest used"
    return {"GBps": float(np.median([r["bw_GBps"] for r in big])), "n_points": len(big),
            "max_batch": GEMV_PLATEAU_MAX_BATCH,
            "min_weight_bytes": float(min(r.get("weight_bytes") or 0 for r in big)),
            "providers": sorted({r["provider"] for r in big}), "note": note}


# ---------------------------------------------------------------- the least-squares fit

class _Points:
    """The fitted cases as arrays: flops, bytes, measured time, compute dtype index, shape."""

    def __init__(self, items: list[dict[str, Any]], dtypes: list[str]):
        self.items = items
        self.dtypes = dtypes
        self.flops = np.array([it["flops"] for it in items], dtype=float)
        self.bytes = np.array([it["bytes"] for it in items], dtype=float)
        self.time_s = np.array([it["time_s"] for it in items], dtype=float)
        self.d = np.array([dtypes.index(it["cdtype"]) for it in items], dtype=int)
        self.probe = np.array([it["probe"] for it in items])
        self.graph = np.array([it["mode"] == "graph" for it in items], dtype=bool)
        counts = {p: int((self.probe == p).sum()) for p in set(self.probe)}
        # each probe weighs the same in the fit, however many cases it swept
        self.sqrt_w = np.array([1.0 / math.sqrt(counts[p]) for p in self.probe])

    def wave_factors(self, wave: dict[str, dict[str, Any]]) -> np.ndarray:
        return np.array([wave_factor(it["m"], it["n"], wave.get(it["cdtype"]))
                         if it["m"] and it["n"] else 1.0 for it in self.items])


def _predict(theta: np.ndarray, pts: _Points, floor_s: float, p: float | None,
             wf: np.ndarray) -> np.ndarray:
    """numpy mirror of RooflineModel.predict.

    theta = log of: bandwidth (B/s), overhead graph, overhead eager (s), then per dtype
    peak (FLOP/s) and flops_half (FLOP), then per dtype the bandwidth ratio r_d (0: the
    shared bandwidth; held at 0 unless the dtype's own bandwidth is fitted)."""
    end = 3 + 2 * len(pts.dtypes)
    bw = math.exp(theta[0]) * np.exp(theta[end:])[pts.d]  # exp(0) = 1: exactly the shared
    ovh = np.where(pts.graph, math.exp(theta[1]), math.exp(theta[2]))
    peak = np.exp(theta[3:end:2])[pts.d]
    half = np.exp(theta[4:end:2])[pts.d]
    mem = pts.bytes / bw
    comp = wf * (pts.flops + half) / peak
    hi, lo = np.maximum(mem, comp), np.minimum(mem, comp)
    if p is None:
        core = hi
    else:
        ratio = np.divide(lo, hi, out=np.zeros_like(hi), where=hi > 0)
        core = hi * (1.0 + ratio ** p) ** (1.0 / p)
    return np.maximum(np.maximum(floor_s, ovh + core), 1e-15)


def _levenberg_marquardt(resid: Callable[[np.ndarray], np.ndarray], theta0: np.ndarray,
                         free: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                         max_iter: int = 150) -> tuple[np.ndarray, float]:
    theta = np.clip(theta0.astype(float), lo, hi)
    r = resid(theta)
    cost = float(r @ r)
    lam = 1e-3
    idx = np.flatnonzero(free)
    for _ in range(max_iter):
        J = np.empty((r.size, idx.size))
        for j, i in enumerate(idx):
            step = 1e-6 * max(1.0, abs(theta[i]))
            t2 = theta.copy()
            t2[i] += step
            J[:, j] = (resid(t2) - r) / step
        A, g = J.T @ J, J.T @ r
        improved = False
        for _ in range(12):
            M = A + lam * (np.diag(np.diag(A)) + 1e-12 * np.eye(idx.size))
            try:
                delta = np.linalg.solve(M, -g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            cand = theta.copy()
            cand[idx] = np.clip(theta[idx] + delta, lo[idx], hi[idx])
            rc = resid(cand)
            cc = float(rc @ rc)
            if cc < cost:
                gain = cost - cc
                theta, r, cost = cand, rc, cc
                lam = max(lam / 4, 1e-12)
                improved = True
                break
            lam *= 4
        if not improved or gain <= 1e-10 * max(cost, 1e-30):
            break
    return theta, cost


def _errors(pred_s: np.ndarray, pts: _Points) -> dict[str, np.ndarray]:
    rel = np.abs(pred_s - pts.time_s) / pts.time_s
    return {p: rel[pts.probe == p] for p in sorted(set(pts.probe))}


def _score(errs: dict[str, np.ndarray]) -> float:
    """How far from the targets the worst probe is (<= 1 meets both)."""
    return max(max(float(np.median(e)) / TARGET_MEDIAN, float(np.max(e)) / TARGET_WORST)
               for e in errs.values() if e.size)


def _better(cand: dict[str, Any], best: dict[str, Any]) -> bool:
    """An extra term must pay for itself: no worse score and 10% less squared error, by
    more than COST_RESOLUTION (on exact data both fits sit at rounding noise)."""
    return (cand["score"] <= best["score"]
            and best["cost"] - cand["cost"] > max(0.1 * best["cost"], COST_RESOLUTION))


def _fit_params(pts: _Points, floor_s: float, bw0: float, bw_free: bool,
                wave: dict[str, dict[str, Any]], overlap_grid,
                own_bw: tuple[str, ...] = ()) -> dict[str, Any]:
    """Best (theta, p) over the overlap grid for a given wave choice, with the dtypes in
    `own_bw` streaming at their own bandwidth (the others at the shared one)."""
    nd = len(pts.dtypes)
    theta0 = np.zeros(3 + 3 * nd)  # the bandwidth ratios r_d start (and are held) at 0
    theta0[0] = math.log(bw0 * 1e9)
    theta0[1:3] = math.log(max(0.3 * float(pts.time_s.min()), 1e-9))
    for j in range(nd):
        sel = pts.d == j
        best_rate = float(np.max(pts.flops[sel] / pts.time_s[sel]))
        theta0[3 + 2 * j] = math.log(1.2 * best_rate)
        theta0[4 + 2 * j] = math.log(1.2 * best_rate * 1e-6)  # ~1 us of start-up
    # physical bounds keep noisy data from sending a parameter to infinity: bandwidth and
    # peaks within 4x of what was measured, a fixed cost never above the fastest record
    lo = np.full_like(theta0, -60.0)
    hi = np.full_like(theta0, 80.0)
    rates = pts.bytes / pts.time_s
    lo[0] = math.log(min(bw0 * 1e9, float(rates.max())) / BOUND_FACTOR)
    hi[0] = math.log(max(bw0 * 1e9, float(rates.max())) * BOUND_FACTOR)
    lo[3 + 2 * nd:], hi[3 + 2 * nd:] = -math.log(BOUND_FACTOR), math.log(BOUND_FACTOR)
    for i, sel in ((1, pts.graph), (2, ~pts.graph)):
        if sel.any():
            hi[i] = math.log(float(pts.time_s[sel].min()))
    for j in range(nd):
        log_best = theta0[3 + 2 * j] - math.log(1.2)  # best measured FLOP/s of the dtype
        lo[3 + 2 * j] = log_best - math.log(BOUND_FACTOR)
        hi[3 + 2 * j] = log_best + math.log(BOUND_FACTOR)
        # start-up (flops_half / peak) no longer than the slowest record
        hi[4 + 2 * j] = hi[3 + 2 * j] + math.log(float(pts.time_s.max()))
    theta0 = np.clip(theta0, lo, hi)
    free = np.ones(theta0.size, dtype=bool)
    free[0] = bw_free
    free[1], free[2] = bool(pts.graph.any()), bool((~pts.graph).any())
    free[3 + 2 * nd:] = [bw_free and d in own_bw for d in pts.dtypes]
    wf = pts.wave_factors(wave)
    log_t = np.log(pts.time_s)
    best: dict[str, Any] | None = None
    for p in overlap_grid:
        def resid(th, p=p):
            return pts.sqrt_w * (np.log(_predict(th, pts, floor_s, p, wf)) - log_t)

        theta, cost = _levenberg_marquardt(resid, theta0, free, lo, hi)
        score = _score(_errors(_predict(theta, pts, floor_s, p, wf), pts))
        if best is None or (round(score, 6), cost) < (round(best["score"], 6), best["cost"]):
            best = {"theta": theta, "p": p, "cost": cost, "score": score, "wave": dict(wave),
                    "own_bw": tuple(own_bw)}
    assert best is not None
    return best


def _fit_items(matmul: list[dict[str, Any]], gemv_rows: list[dict[str, Any]],
               dtypes: list[str]) -> list[dict[str, Any]]:
    resolver = RooflineModel(1.0, {d: 1.0 for d in dtypes})
    def item(probe: str, r: dict[str, Any], m: int, n: int, k: int) -> dict[str, Any]:
        return {"probe": probe, "dtype": r["dtype"], "cdtype": resolver.compute_dtype(r["dtype"]),
                "flops": float(r["flops"]), "bytes": float(r["bytes_read"] + r["bytes_written"]),
                "time_s": r["time_ms_median"] * 1e-3, "m": int(m), "n": int(n), "k": int(k),
                "provider": r["provider"], "mode": _mode(r)}

    items = [item("matmul", r, r["m"], r["n"], r["k"]) for r in matmul]
    items += [item("gemv", row["_record"], row["batch"], row["n"], row["k"]) for row in gemv_rows]
    return [it for it in items if it["time_s"] > 0 and it["flops"] > 0]


def _gemv_counts(items: list[dict[str, Any]]) -> dict[str, int]:
    """{compute dtype: number of gemv cases} (best provider per case)."""
    counts: dict[str, int] = {}
    for it in items:
        if it["probe"] == "gemv":
            counts[it["cdtype"]] = counts.get(it["cdtype"], 0) + 1
    return counts


def reference_dtype(items: list[dict[str, Any]]) -> str | None:
    """The compute dtype whose streaming rate is bandwidth_GBps: the most gemv cases; ties
    go to bf16 (what decode streams most often), then to the first by name. None: no gemv."""
    counts = _gemv_counts(items)
    return min(counts, key=lambda d: (-counts[d], d != "bf16", d)) if counts else None


def _best_matmul(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fastest provider per matmul (dtype, m, n, k): the model predicts the best available."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in fit_ready(records, "matmul"):
        if not r.get("time_ms_median") or not r.get("flops"):
            continue
        key = (r["dtype"], r["m"], r["n"], r["k"])
        if key not in best or r["time_ms_median"] < best[key]["time_ms_median"]:
            best[key] = r
    return list(best.values())


def _error_summary(models: dict[str, RooflineModel],
                   items: list[dict[str, Any]]) -> dict[str, Any]:
    """Per probe: median and worst relative error of the model (with the overhead of the
    record's timing mode) against the record's median time."""
    out: dict[str, Any] = {}
    for probe in sorted({it["probe"] for it in items}):
        rel, worst = [], None
        for it in items:
            if it["probe"] != probe:
                continue
            model = models[it["mode"]]
            pred = model.predict(it["flops"], it["bytes"], it["dtype"], m=it["m"], n=it["n"]).time_s
            e = abs(pred - it["time_s"]) / it["time_s"]
            rel.append(e)
            if worst is None or e > worst["error"]:
                worst = {"error": e, "dtype": it["dtype"], "m": it["m"], "n": it["n"], "k": it["k"],
                         "provider": it["provider"], "timing": it["mode"],
                         "measured_ms": it["time_s"] * 1e3, "predicted_ms": pred * 1e3}
        out[probe] = {"n": len(rel), "median": float(np.median(rel)), "worst": float(max(rel)),
                      "worst_case": worst}
    out["statistic"] = "|predicted - measured| / measured on time_ms_median, best provider per case"
    probes = [v for v in out.values() if isinstance(v, dict)]
    out["target"] = {"median_max": TARGET_MEDIAN, "worst_max": TARGET_WORST}
    out["meets_target"] = bool(probes) and all(
        v["median"] <= TARGET_MEDIAN and v["worst"] <= TARGET_WORST for v in probes)
    return out


def fit_model(records: list[dict[str, Any]], ceilings: dict[str, Any],
              datasheet: dict[str, Any] | None = None, *,
              device: dict[str, Any] | None = None) -> dict[str, Any]:
    """profile["model"] from the records (see the module docstring).

    With no validated matmul or gemv record the result holds only the latency/bandwidth
    detail and a note (no bandwidth_GBps/matmul): RooflineModel then falls back to ceilings."""
    notes: list[str] = []
    latency = fit_latency(records)
    matmul = _best_matmul(records)
    rows = gemv_best(records)
    hbm_read = _hbm_read_GBps(records, ceilings)
    plateau = gemv_plateau(rows)
    dtypes = sorted({r["dtype"] for r in matmul}) or sorted({r["dtype"] for r in rows})
    items = _fit_items(matmul, rows, dtypes) if dtypes else []
    gemv_table = [{k: v for k, v in row.items() if k != "_record"} for row in rows]

    if latency.get("graph_us"):
        floor_us, floor_src = latency["graph_us"], "launch records, CUDA-graph replay"
    elif latency.get("eager_us"):
        floor_us, floor_src = latency["eager_us"], "launch records, eager launches"
    elif items:
        floor_us, floor_src = None, "the fitted per-kernel overhead (no launch records)"
    else:
        floor_us, floor_src = None, None
    latency["floor_source"] = floor_src

    bandwidth = {"hbm_read_GBps": hbm_read,
                 "gemv_plateau_GBps": plateau["GBps"] if plateau else None,
                 "gemv_plateau": plateau}
    if not items:
        return ModelSection(latency_floor_us=floor_us, source="measured", form=FORM,
                            notes=["no validated matmul or gemv records: no model fitted"],
                            bandwidth=bandwidth, latency=latency,
                            gemv_best_provider=gemv_table).to_dict()

    has_gemv = any(it["probe"] == "gemv" for it in items)
    if has_gemv:
        bw0, bw_free, bw_src = (plateau["GBps"] if plateau else hbm_read or 1.0), True, "gemv"
        if plateau and plateau.get("note"):
            notes.append(f"gemv plateau: {plateau['note']}")
    elif hbm_read:
        bw0, bw_free, bw_src = hbm_read, False, "hbm"
        notes.append("no gemv records: bandwidth held at the hbm read plateau")
    else:
        bw0 = max(it["bytes"] / it["time_s"] for it in items) / 1e9
        bw_free, bw_src = True, "matmul"
        notes.append("no gemv or hbm records: bandwidth fitted on matmul records only")

    pts = _Points(items, dtypes)
    floor_s = floor_us * 1e-6 if floor_us is not None else 0.0
    best = _fit_params(pts, floor_s, bw0, bw_free, {}, OVERLAP_GRID)
    # per-dtype streaming bandwidth: only on a gemv-fitted bandwidth, kept when it pays
    ref = reference_dtype(items) if bw_src == "gemv" else None
    counts = _gemv_counts(items)
    tried = [d for d in dtypes
             if ref and d != ref and counts.get(d, 0) >= MIN_GEMV_FOR_OWN_BANDWIDTH]
    if tried:
        cand = _fit_params(pts, floor_s, bw0, bw_free, {}, OVERLAP_GRID, tuple(tried))
        if _better(cand, best):
            best = cand
    slots = int((device or {}).get("multiprocessors") or 0)
    if slots and (device or {}).get("kind") in ("cuda", "rocm"):
        for d in dtypes:  # greedy, one dtype at a time, each candidate refitted in full
            for tm, tn in WAVE_TILES:
                wave = dict(best["wave"])
                wave[d] = {"tile_m": tm, "tile_n": tn, "slots": slots}
                if all(wave_factor(it["m"], it["n"], wave[d]) == 1.0
                       for it in items if it["cdtype"] == d):
                    continue
                # screen at the current p; only a promising tile shape gets the full p grid
                cand = _fit_params(pts, floor_s, bw0, bw_free, wave, (best["p"],),
                                   best["own_bw"])
                if not _better(cand, best):
                    continue
                cand = _fit_params(pts, floor_s, bw0, bw_free, wave, OVERLAP_GRID,
                                   best["own_bw"])
                if _better(cand, best):
                    best = cand
    if tried and not best["own_bw"] and best["wave"]:
        # judged once more against the model with its wave term, whose misfit hid the gain
        cand = _fit_params(pts, floor_s, bw0, bw_free, best["wave"], OVERLAP_GRID, tuple(tried))
        if _better(cand, best):
            best = cand

    theta = best["theta"]
    bw_GBps = math.exp(theta[0]) / 1e9 if bw_free else float(bw0)  # held: exactly the ceiling
    end = 3 + 2 * len(dtypes)
    # as _predict computes it: shared rate x exp(r_d)
    own_bw = {d: math.exp(theta[0]) * math.exp(theta[end + j]) / 1e9
              for j, d in enumerate(dtypes) if d in best["own_bw"]}
    has_graph = bool(pts.graph.any())
    undetermined: list[str] = []
    overhead = {"graph_us": math.exp(theta[1]) * 1e6 if has_graph else None,
                "eager_us": math.exp(theta[2]) * 1e6 if (~pts.graph).any() else None,
                "used": "graph" if has_graph else "eager"}
    for mode in ("graph", "eager"):
        overhead[f"{mode}_us"] = _resolved(overhead[f"{mode}_us"], f"overhead.{mode}_us",
                                           undetermined)
    overhead_us = overhead[f"{overhead['used']}_us"]
    if f"overhead.{overhead['used']}_us" in undetermined:
        undetermined.append("overhead_us")
    if floor_us is None:  # t = max(overhead, overhead + ...): the same predictions
        floor_us = min(v for v in (overhead["graph_us"], overhead["eager_us"]) if v is not None)
        if floor_us == 0.0:
            undetermined.append("latency_floor_us")
    model_matmul: dict[str, Any] = {}
    for j, d in enumerate(dtypes):
        sel = [it for it in items if it["cdtype"] == d]
        peak_flops = math.exp(theta[3 + 2 * j])
        # judged as the start-up time it adds (flops_half / peak), the unit the floor is in
        startup_us = _resolved(math.exp(theta[4 + 2 * j]) / peak_flops * 1e6,
                               f"matmul.{d}.flops_half", undetermined)
        entry: dict[str, Any] = {
            "peak_TFLOPS": peak_flops / 1e12,
            "flops_half": startup_us * 1e-6 * peak_flops,
            "best_measured_TFLOPS": max(it["flops"] / it["time_s"] for it in sel) / 1e12,
            "n_records": {p: sum(1 for it in sel if it["probe"] == p) for p in ("matmul", "gemv")},
            "datasheet_TFLOPS": matmul_peak_TFLOPS(datasheet, d),
        }
        if d in best["wave"]:
            entry["wave"] = best["wave"][d]
        if d in own_bw:
            entry["bandwidth_GBps"] = own_bw[d]
        model_matmul[d] = entry
    bandwidth["source"] = bw_src
    bandwidth["fitted"] = bw_free
    bandwidth["reference_dtype"] = ref
    if own_bw:
        bandwidth["per_dtype_GBps"] = {ref: bw_GBps, **own_bw}
    bandwidth["per_dtype_tried"] = tried
    section = ModelSection(bw_GBps, model_matmul, floor_us, "measured", overhead_us, best["p"],
                           form=FORM, overhead=overhead, bandwidth=bandwidth, latency=latency)
    model = RooflineModel.from_profile({"model": section.to_dict()})
    ds_bw = (datasheet or {}).get("memory_bandwidth_GBps")
    ceil_mm = Ceilings.of({"ceilings": ceilings}).matmul_TFLOPS
    # measured = the fitted model's peak / bandwidth (what predictions use); ceilings = best
    # measured matmul / hbm read plateau; datasheet = vendor peak / vendor bandwidth
    ridge = {
        d: {"measured": model.ridge_point(d),
            "ceilings": (ceil_mm[d] * 1e12 / (hbm_read * 1e9)
                         if ceil_mm.get(d) and hbm_read else None),
            "datasheet": (model_matmul[d]["datasheet_TFLOPS"] * 1e12 / (ds_bw * 1e9)
                          if ds_bw and model_matmul[d]["datasheet_TFLOPS"] else None)}
        for d in dtypes}
    top_bw = max([bw_GBps, *own_bw.values()])
    if ds_bw and top_bw > ds_bw:
        notes.append(f"fitted bandwidth {top_bw:.0f} GB/s is above the datasheet {ds_bw:.0f} "
                     "GB/s: check the gemv working sets exceed the caches")
    for d, e in model_matmul.items():
        if e["datasheet_TFLOPS"] and e["peak_TFLOPS"] > 1.05 * e["datasheet_TFLOPS"]:
            notes.append(f"fitted {d} peak {e['peak_TFLOPS']:.0f} TFLOP/s is above the datasheet "
                         f"{e['datasheet_TFLOPS']:.0f}: check clocks and the matmul inputs")
    models = {mode: dataclasses.replace(model, overhead_us=overhead[f"{mode}_us"])
              for mode in ("graph", "eager") if overhead[f"{mode}_us"] is not None}
    fit_error = _error_summary(models, items)
    if not fit_error["meets_target"]:
        notes.append(f"fit error above target (median <= {TARGET_MEDIAN:.0%}, worst <= "
                     f"{TARGET_WORST:.0%}): the model reproduces its own records only roughly")
    if undetermined:
        notes.append(f"not determined by the data (the fit ran to its floor, below "
                     f"{RESOLVABLE_TIME_US:g} us): {', '.join(undetermined)}; stored as 0")
    return dataclasses.replace(section, ridge_point_FLOP_per_byte=ridge, fit_error=fit_error,
                               gemv_best_provider=gemv_table, undetermined=undetermined,
                               notes=notes).to_dict()


def _resolved(value_us: float | None, name: str, undetermined: list[str]) -> float | None:
    """A fitted fixed cost, or 0.0 (and `name` listed) when it is below what a timer resolves:
    the least-squares ran it to its numerical floor, the data did not determine it."""
    if value_us is None or value_us >= RESOLVABLE_TIME_US:
        return value_us
    undetermined.append(name)
    return 0.0
