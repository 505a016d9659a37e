"""Fit the engine layer from real serving benchmarks, with the hardware held fixed.

    values = option_values(args, CALIBRATE_GROUPS)          # model, hardware, precision, ...
    result = calibrate_from_values(values, ["vllm-results/"])
    result.error_before, result.error_after                # mean relative error, before / held out
    write(result.engine_document())                        # the engine.json `--engine` reads

Run: `ridgeline calibrate RESULT... --model M (--profile P | --gpu G) -o engine.json`.

Inputs. Measured points are read by simulation.measured.read_measured (`vllm bench serve
--save-result` JSON, AIPerf profile_export_aiperf.json/.csv, files or folders). Each point is
predicted by the serving simulation `ridgeline simulate` runs (simulation.engine: vLLM v1's
scheduler on the step model, this hardware, model and precision), at its own load (its
request rate and arrival CV, or its clients) with its own request lengths:
    --input-p50/p95/p99, --output-..., --trace      when given, for every point
    else from the file: per-request lengths (vLLM --save-detailed `input_lens`/`output_lens`,
    successful requests only); AIPerf's input/output_sequence_length P50/P95/P99 (a lognormal
    through them); else the totals over the request count (fixed mean lengths)
and as many requests as the point completed, at most --requests, random stream --seed.

Error. Per point, over the statistics the file holds among COMPARED (mean and P50 of TTFT,
ITL, TPOT, E2E: the typical request, not the queueing tail):
    e(point) = mean_j |predicted_j - measured_j| / measured_j
and a set's error is the mean of e over its points.

Free parameters: the engine's step_overhead_us (s) and request_overhead_us (o), both >= 0;
every other field stays the base engine's (--engine: vllm, sglang, trtllm, none, a file).
    o   shifts TTFT and E2E by itself (exactly in an open loop), so for each s the best o is
        a weighted median of (measured - predicted) over those statistics: no search
    s   a grid (0 and GRID_POINTS geometric steps up to the largest measured ITL/TPOT), then
        golden-section refinement around the best grid value (to S_TOLERANCE)
A closed-loop client also waits o before its next request (it changes the load): the search
uses the shift, every reported error simulates o exactly.

Held out. The points (by tool, each in load order) are dealt round robin into k = min(5,
points) folds; each fold is predicted by the fit on the others: error_after is the mean of
those held-out errors, so noise the fit could absorb does not count. The engine written is
the fit on all points; its in-sample error is reported beside. error_before is the base
engine's error.
Fewer than MIN_POINTS points is refused. Pure Python + numpy: no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ridgeline import __version__
from ridgeline.errors import RidgelineError
from ridgeline.sizing.engine import (ENGINE_KIND, ENGINE_SCHEMA_VERSION, EngineLayerOptions,
                                     EngineProfile, entry_of)
from ridgeline.sizing.hardware import Hardware, HardwareOptions
from ridgeline.sizing.memory import EngineConfig
from ridgeline.sizing.models import ModelOptions, ModelSpec
from ridgeline.sizing.options import build, check, option, option_like
from ridgeline.sizing.precision import Precision, PrecisionOptions, require_supported
from ridgeline.sizing.simulation.load import (ClosedLoop, LengthSource, Load, LognormalLengths,
                                              OpenLoop, Requests, Trace, make_requests)
from ridgeline.sizing.simulation.measured import (AIPERF, AIPERF_SCALARS, _json_documents,
                                                  _json_tool, aiperf_csv_blocks, read_file,
                                                  read_measured)
from ridgeline.sizing.simulation.options import LengthOptions
from ridgeline.sizing.workload import ParallelOptions, Workload

METHOD_VERSION = 1
MIN_POINTS = 3                 # k-fold needs points to hold out and at least two to fit on
MAX_FOLDS = 5
DEFAULT_REQUESTS = 1000        # per point, at most (a point's own count when smaller)
GRID_POINTS = 16               # geometric steps of s after 0
S_TOLERANCE = 0.003            # golden-section stop: relative width of the bracket
COMPARED = (("ttft_s", "mean"), ("ttft_s", "p50"), ("itl_s", "mean"), ("itl_s", "p50"),
            ("tpot_s", "mean"), ("tpot_s", "p50"), ("e2e_s", "mean"), ("e2e_s", "p50"))
SHIFTED = frozenset({"ttft_s", "e2e_s"})   # what the per-request overhead adds to
FREE = ("step_overhead_us", "request_overhead_us")


# -- options ---------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CalibrateLengths:
    """Request lengths (default: from the result files)."""

    input_p95: int | None = option_like(Workload, "input_p95", None)
    output_p95: int | None = option_like(Workload, "output_p95", None)
    input_p50: int | None = option_like(Workload, "input_p50", None)
    output_p50: int | None = option_like(Workload, "output_p50", None)
    input_p99: int | None = option_like(LengthOptions, "input_p99", None)
    output_p99: int | None = option_like(LengthOptions, "output_p99", None)
    trace: str | None = option(None, "request lengths from a CSV or JSONL trace (as simulate "
                                     "reads it; its arrival times are not used: each point "
                                     "keeps the benchmark's load)", metavar="FILE")

    def options(self) -> LengthOptions | None:
        """simulate's LengthOptions (its checks) when any length is given, else None."""
        values = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if all(v is None for v in values.values()):
            return None
        return LengthOptions(**values)


@dataclass(frozen=True, kw_only=True)
class CalibrateOptions:
    """Calibration."""

    requests: int = option(DEFAULT_REQUESTS, "requests simulated per measured point, at most "
                                             "(a point's own count when it has fewer)")
    seed: int = option(0, "random seed of the simulated lengths and arrivals")

    def __post_init__(self) -> None:
        check(self, "a positive whole number", "requests")
        check(self, "a whole number >= 0", "seed")


# The option groups of `ridgeline calibrate`, in --help and docs order: plan's model,
# precision, hardware, engine config, engine layer (the base) and parallelism groups.
CALIBRATE_GROUPS: tuple[type, ...] = (ModelOptions, PrecisionOptions, HardwareOptions,
                                      CalibrateLengths, EngineConfig, EngineLayerOptions,
                                      ParallelOptions, CalibrateOptions)


# -- request lengths of a measured point ----------------------------------------------------

def _fixed(input_mean: float, output_mean: float) -> LognormalLengths:
    i, o = max(1, round(input_mean)), max(1, round(output_mean))
    return LognormalLengths(i, i, o, o)


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _vllm_lengths(doc: dict[str, Any], where: str) -> tuple[LengthSource | None, str]:
    ins, outs, errors = doc.get("input_lens"), doc.get("output_lens"), doc.get("errors")
    if isinstance(ins, list) and isinstance(outs, list) and len(ins) == len(outs) and ins:
        ok = [not e for e in errors] if isinstance(errors, list) and len(errors) == len(ins) \
            else [True] * len(ins)
        pairs = [(int(i), int(o)) for i, o, good in zip(ins, outs, ok)
                 if good and _positive(i) and _positive(o)]
        if pairs:
            i_arr, o_arr = (np.asarray(x, dtype=np.int64) for x in zip(*pairs))
            return Trace(i_arr, o_arr, None, where), "per-request lengths in the file"
    ti, to, n = (doc.get(k) for k in ("total_input_tokens", "total_output_tokens", "completed"))
    if _positive(ti) and _positive(to) and _positive(n):
        return _fixed(ti / n, to / n), "mean lengths from the file's totals (fixed)"
    return None, "no lengths in the file"


def _block_lengths(blocks: dict[str, dict[str, Any]]) -> tuple[LengthSource | None, str]:
    """AIPerf's input/output_sequence_length blocks (P50, P95, P99), else the totals."""
    isl, osl = blocks.get("input_sequence_length"), blocks.get("output_sequence_length")
    if isl and osl and all(_positive(b.get(q)) for b in (isl, osl) for q in ("p50", "p95")):
        def pct(b: dict[str, Any], q: str) -> int | None:
            return max(1, round(b[q])) if _positive(b.get(q)) else None

        p99 = [pct(b, "p99") for b in (isl, osl)]
        try:
            return LognormalLengths(pct(isl, "p50"), pct(isl, "p95"), pct(osl, "p50"),
                                    pct(osl, "p95"),
                                    p99[0] if p99[0] and p99[0] >= pct(isl, "p95") else None,
                                    p99[1] if p99[1] and p99[1] >= pct(osl, "p95") else None), \
                "input/output sequence length P50/P95/P99 in the file (lognormal)"
        except RidgelineError:
            pass  # percentiles out of order: fall back to the totals
    tin, tout, n = (_block_avg(blocks.get(k)) for k in ("total_isl", "total_osl", "request_count"))
    if _positive(tin) and _positive(tout) and _positive(n):
        return _fixed(tin / n, tout / n), "mean lengths from the file's totals (fixed)"
    return None, "no lengths in the file"


def _block_avg(block: Any) -> Any:
    return block.get("avg") if isinstance(block, dict) else None


# AIPerf CSV rows of the lengths -> the JSON export's tags (exporters/csv_exporter.py writes
# both); the totals' rows are measured's
_AIPERF_CSV_LENGTHS = {"Input Sequence Length": "input_sequence_length",
                       "Output Sequence Length": "output_sequence_length",
                       **{AIPERF_SCALARS[t]: t
                          for t in ("total_isl", "total_osl", "request_count")}}


def file_lengths(path: str | Path) -> list[tuple[LengthSource | None, str]]:
    """(lengths, how) of each point of a result file, in simulation.measured.read_file order."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return [_block_lengths(aiperf_csv_blocks(path, _AIPERF_CSV_LENGTHS))]
    out = []
    for doc in _json_documents(path):
        out.append(_block_lengths({k: v for k, v in doc.items() if isinstance(v, dict)})
                   if _json_tool(doc, path) == AIPERF else _vllm_lengths(doc, str(path)))
    return out


# -- the cases: measured points, each with its load and requests ----------------------------

@dataclass
class Case:
    """One measured point and what predicting it takes."""

    point: Any                              # simulation.measured.MeasuredPoint
    load: Load
    requests: Requests
    lengths: str                            # how the lengths were found
    measured: dict[tuple[str, str], float]  # (metric, stat) -> seconds, COMPARED order

    @property
    def label(self) -> str:
        unit = "req/s" if self.point.load == "rps" else "clients"
        return f"{self.point.value:g} {unit} ({Path(self.point.source).name})"


def _measured_stats(point: Any) -> dict[tuple[str, str], float]:
    out = {}
    for metric, stat in COMPARED:
        v = getattr(point, metric).get(stat)
        if v is not None and v > 0:
            out[(metric, stat)] = float(v)
    return out


def _load_of(point: Any) -> Load:
    if point.load == "concurrency":
        return ClosedLoop(int(round(point.value)))
    cv = point.arrival_cv if point.arrival_cv is not None else 1.0
    return OpenLoop(float(point.value), float(cv))


def build_cases(paths: Sequence[str], lengths: LengthSource | None, max_requests: int,
                seed: int) -> list[Case]:
    """Every measured point under `paths` with its load, lengths and requests to simulate."""
    curves = read_measured(list(paths))
    points = [p for c in curves for p in c.points]
    per_file: dict[str, list[tuple[Any, tuple[LengthSource | None, str]]]] = {}
    cases = []
    for p in points:
        if p.source not in per_file:
            per_file[p.source] = list(zip(read_file(p.source), file_lengths(p.source)))
        pool = per_file[p.source]
        k = next(i for i, (q, _) in enumerate(pool) if q.load == p.load and q.value == p.value)
        source, how = pool.pop(k)[1]
        if lengths is not None:
            source, how = lengths, "given on the command line"
        if source is None:
            raise RidgelineError(f"{p.source}: no request lengths in it (no per-request lengths, "
                                 "sequence-length statistics or totals): give --input-p95 and "
                                 "--output-p95 (and the p50s), or --trace")
        stats = _measured_stats(p)
        if not stats:
            raise RidgelineError(f"{p.source}: the point at {p.value:g} has none of the "
                                 "statistics calibrate compares (mean or P50 of TTFT, ITL, TPOT, "
                                 "E2E)")
        n = min(max_requests, p.requests or max_requests)
        requests = make_requests(source, n, seed, replay_arrivals=False)  # the point's load
        cases.append(Case(p, _load_of(p), requests, how, stats))
    return cases


# -- predicting a case under an engine -------------------------------------------------------

class WithOverheads:
    """A step model plus an engine's overheads: step times + s, and the engine whose per-request
    overhead the simulation reads. Equal to StepModel(..., engine=that engine) (its body(m)
    carries s, so every step is s longer; tests hold the two equal), without re-pricing."""

    def __init__(self, sm: Any, engine: EngineProfile):
        self.sm, self.engine = sm, engine
        self.s = engine.step_overhead_s

    def step_s(self, decode_seqs: int, decode_context_tokens: float,
               chunks: Sequence[tuple[int, int]] = (), sampled: int | None = None) -> float:
        t = self.sm.step_s(decode_seqs, decode_context_tokens, chunks, sampled)
        return t + self.s if t > 0 else t

    def decode_steps_s(self, decode_seqs: int, context_tokens: float, growth: float,
                       steps: int) -> np.ndarray:
        return self.sm.decode_steps_s(decode_seqs, context_tokens, growth, steps) + self.s


class Predictor:
    """Simulated statistics of each case at (s, o) microseconds, cached by (case, s, o)."""

    def __init__(self, sm: Any, sched: Any, cases: list[Case], base: EngineProfile):
        self.sm, self.sched, self.cases, self.base = sm, sched, cases, base
        self._cache: dict[tuple[int, float, float], Any] = {}
        self.simulations = 0

    def engine(self, s_us: float, o_us: float) -> EngineProfile:
        return self.base.with_values(step_overhead_us=float(s_us), request_overhead_us=float(o_us))

    def simulate(self, i: int, s_us: float, o_us: float = 0.0) -> Any:
        from ridgeline.sizing.simulation.sweep import simulate

        key = (i, float(s_us), float(o_us))
        p = self._cache.get(key)
        if p is None:
            c = self.cases[i]
            p = simulate(WithOverheads(self.sm, self.engine(s_us, o_us)), self.sched, c.requests,
                         c.load)
            self._cache[key] = p
            self.simulations += 1
        return p

    def predicted(self, i: int, s_us: float, o_us: float,
                  exact: bool = True) -> dict[tuple[str, str], float]:
        """The compared statistics of case i; o is a shift of TTFT and E2E unless a closed
        loop is simulated with it (`exact`: the client's wait changes the load)."""
        closed = isinstance(self.cases[i].load, ClosedLoop)
        if exact and closed and o_us > 0:
            p, shift = self.simulate(i, s_us, o_us), 0.0
        else:
            p, shift = self.simulate(i, s_us), o_us * 1e-6
        return {(m, st): getattr(p, m).get(st) + (shift if m in SHIFTED else 0.0)
                for m, st in self.cases[i].measured}

    def error(self, i: int, s_us: float, o_us: float, exact: bool = True) -> float:
        pred = self.predicted(i, s_us, o_us, exact)
        meas = self.cases[i].measured
        return float(np.mean([abs(pred[k] - meas[k]) / meas[k] for k in meas]))

    def mean_error(self, idx: Sequence[int], s_us: float, o_us: float,
                   exact: bool = True) -> float:
        return float(np.mean([self.error(i, s_us, o_us, exact) for i in idx]))


def weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    """argmin over x of sum w |x - v| (the lower weighted median)."""
    order = np.argsort(values, kind="stable")
    v, w = np.asarray(values, float)[order], np.asarray(weights, float)[order]
    cum = np.cumsum(w)
    return float(v[int(np.searchsorted(cum, cum[-1] / 2.0))])


@dataclass
class Fit:
    step_overhead_us: float
    request_overhead_us: float
    error: float            # in-sample mean error on the points fitted (search: o shifted)
    request_fitted: bool    # False: no TTFT or E2E among the fitted points: o kept


def fit(pred: Predictor, idx: Sequence[int], s_max_us: float) -> Fit:
    """The (s, o) minimizing the mean relative error over cases `idx` (module docstring)."""
    shifted = [(i, k) for i in idx for k in pred.cases[i].measured if k[0] in SHIFTED]
    o_base = pred.base.request_overhead_us

    def best_o(s_us: float) -> float:
        if not shifted:
            return o_base
        p0 = {i: pred.predicted(i, s_us, 0.0, exact=False) for i in {i for i, _ in shifted}}
        targets = [(pred.cases[i].measured[k] - p0[i][k]) * 1e6 for i, k in shifted]
        weights = [1.0 / (len(pred.cases[i].measured) * pred.cases[i].measured[k])
                   for i, k in shifted]
        return max(0.0, weighted_median(targets, weights))

    def objective(s_us: float) -> tuple[float, float]:
        o = best_o(s_us)
        return pred.mean_error(idx, s_us, o, exact=False), o

    grid = [0.0] + list(np.geomspace(s_max_us * 1e-3, s_max_us, GRID_POINTS))
    scores = [objective(s)[0] for s in grid]
    b = int(np.argmin(scores))
    lo, hi = grid[max(0, b - 1)], grid[min(len(grid) - 1, b + 1)]
    best_s, best_score = grid[b], scores[b]
    s_opt = _golden(lambda s: objective(s)[0], lo, hi)
    score = objective(s_opt)[0]
    if score < best_score:
        best_s, best_score = s_opt, score
    return Fit(float(best_s), float(objective(best_s)[1]), float(best_score), bool(shifted))


def _golden(f: Callable[[float], float], lo: float, hi: float) -> float:
    """Golden-section search for the minimum of f on [lo, hi] (unimodal there)."""
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > max(S_TOLERANCE * b, 0.05):  # relative, but no finer than 0.05 us
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2.0


def step_ceiling_us(cases: Sequence[Case]) -> float:
    """The largest step overhead worth trying: the longest measured inter-token time (a step
    cannot outlast it), else the longest P50 TTFT."""
    for metrics in (("itl_s", "tpot_s"), ("ttft_s",)):
        vals = [v for c in cases for (m, _), v in c.measured.items() if m in metrics]
        if vals:
            return max(vals) * 1e6
    return 1e5


def folds_of(n: int) -> list[list[int]]:
    """k = min(MAX_FOLDS, n) folds of the cases (by tool, each in load order), dealt round robin."""
    k = min(MAX_FOLDS, n)
    return [[i for i in range(n) if i % k == f] for f in range(k)]


# -- the result ------------------------------------------------------------------------------

@dataclass
class Calibration:
    """A fitted engine layer, its errors and where everything came from."""

    engine: EngineProfile
    base: EngineProfile
    error_before: float
    error_after: float                  # held out (k-fold)
    error_after_in_sample: float
    folds: list[dict[str, Any]]
    points: list[dict[str, Any]]
    notes: list[str]
    provenance: dict[str, Any]
    request_fitted: bool = True
    simulations: int = 0

    @property
    def k(self) -> int:
        return len(self.folds)

    def fitted(self) -> dict[str, float]:
        return {f: getattr(self.engine, f) for f in FREE}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "ridgeline-calibration", "ridgeline_version": __version__,
                "method_version": METHOD_VERSION, "engine": self.engine.summary(),
                "base_engine": self.base.name, "fitted": self.fitted(),
                "request_overhead_fitted": self.request_fitted,
                "error_before": self.error_before, "error_after": self.error_after,
                "error_after_in_sample": self.error_after_in_sample,
                "error": "mean over points of the mean |predicted - measured| / measured over "
                         "the compared statistics; error_after is held out (k-fold)",
                "compared": [f"{m}.{s}" for m, s in COMPARED], "k": self.k,
                "folds": self.folds, "points": self.points, "simulations": self.simulations,
                "notes": list(self.notes), "provenance": self.provenance}

    def engine_document(self) -> dict[str, Any]:
        """The engine.json `--engine FILE` reads: versioned, with the fit and provenance."""
        files = ", ".join(sorted({Path(p["source"]).name for p in self.points}))
        says = (f"fitted by `ridgeline calibrate` on {len(self.points)} measured points "
                f"({files}): held-out error {self.error_after:.1%} (k-fold, k={self.k}), "
                f"{self.error_before:.1%} with the {self.base.name} engine before")
        sources = {f: {"url": None, "says": says} for f in FREE}
        if not self.request_fitted:
            sources.pop("request_overhead_us")
        return {"kind": ENGINE_KIND, "schema_version": ENGINE_SCHEMA_VERSION,
                "method_version": METHOD_VERSION, "name": self.engine.name,
                "engine": entry_of(self.engine, sources),
                "fit": {"free": list(FREE), "values": self.fitted(),
                        "request_overhead_fitted": self.request_fitted,
                        "error_before": self.error_before, "error_after": self.error_after,
                        "error_after_in_sample": self.error_after_in_sample,
                        "k": self.k, "compared": [f"{m}.{s}" for m, s in COMPARED],
                        "folds": self.folds, "points": self.points},
                "provenance": self.provenance}


def _sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def calibrate(cases: list[Case], sm: Any, sched: Any, base: EngineProfile, *,
              provenance: dict[str, Any] | None = None,
              notes: Sequence[str] = ()) -> Calibration:
    """Fit (s, o) on the cases with k-fold held-out error (module docstring)."""
    n = len(cases)
    if n < MIN_POINTS:
        raise RidgelineError(f"calibrate needs at least {MIN_POINTS} measured points to hold "
                             f"some out (k-fold, k = min({MAX_FOLDS}, points)); the results hold "
                             f"{n}")
    pred = Predictor(sm, sched, cases, base)
    s_max = step_ceiling_us(cases)
    before = [pred.error(i, base.step_overhead_us, base.request_overhead_us) for i in range(n)]
    held = [0.0] * n
    fold_rows = []
    for f, test in enumerate(folds_of(n)):
        train = [i for i in range(n) if i not in test]
        ft = fit(pred, train, s_max)
        for i in test:
            held[i] = pred.error(i, ft.step_overhead_us, ft.request_overhead_us)
        fold_rows.append({"fold": f, "held_out": [cases[i].label for i in test],
                          "step_overhead_us": ft.step_overhead_us,
                          "request_overhead_us": ft.request_overhead_us,
                          "held_out_error": float(np.mean([held[i] for i in test]))})
    final = fit(pred, list(range(n)), s_max)
    s, o = final.step_overhead_us, final.request_overhead_us
    engine = pred.engine(s, o)
    name = f"{base.name}-calibrated" if not base.is_none else "calibrated"
    engine = engine.with_values(name=name, description=f"{base.name} engine layer fitted by "
                                                       "ridgeline calibrate")
    after_in = [pred.error(i, s, o) for i in range(n)]
    says = (f"fitted by ridgeline calibrate on {n} measured points: held-out error "
            f"{float(np.mean(held)):.1%} (k-fold, k={len(fold_rows)})")
    engine = engine.with_values(sources={**engine.sources, **{
        f: says for f in FREE if f != "request_overhead_us" or final.request_fitted}})
    rows = []
    for i, c in enumerate(cases):
        p = c.point
        rows.append({"load": p.load, "value": p.value, "tool": p.tool, "source": p.source,
                     "lengths": c.lengths, "requests_simulated": len(c.requests),
                     "fold": next(f for f, t in enumerate(folds_of(n)) if i in t),
                     "measured": {f"{m}.{st}": v for (m, st), v in c.measured.items()},
                     "predicted_before": _named(pred.predicted(i, base.step_overhead_us,
                                                               base.request_overhead_us)),
                     "predicted_after": _named(pred.predicted(i, s, o)),
                     "error_before": before[i], "error_after": held[i],
                     "error_after_in_sample": after_in[i]})
    out_notes = list(notes)
    if not final.request_fitted:
        out_notes.append(f"no TTFT or E2E in the results: request_overhead_us is not determined "
                         f"and stays the {base.name} engine's ({base.request_overhead_us:g} us)")
    if s >= 0.999 * s_max:
        out_notes.append("the fitted step overhead reached its ceiling (the longest measured "
                         "inter-token time): the simulation is far slower than the results at "
                         "every step; check the model, precision, TP and hardware")
    return Calibration(engine, base, float(np.mean(before)), float(np.mean(held)),
                       float(np.mean(after_in)), fold_rows, rows, out_notes, provenance or {},
                       final.request_fitted, pred.simulations)


def _named(stats: dict[tuple[str, str], float]) -> dict[str, float]:
    return {f"{m}.{s}": v for (m, s), v in stats.items()}


def calibrate_from_values(values: dict[str, Any], results: Sequence[str],
                          command_line: Sequence[str] | None = None) -> Calibration:
    """The calibration from `ridgeline calibrate`'s option values and result paths."""
    from ridgeline.sizing.simulation.engine import scheduler_for
    from ridgeline.sizing.simulation.run import choose_tp, length_source
    from ridgeline.sizing.step_model import StepModel

    if not results:
        raise RidgelineError("no benchmark results given: pass vllm bench serve --save-result "
                             "JSON files or AIPerf exports (files or folders)")
    spec: ModelSpec
    spec, model_notes = build(ModelOptions, values).load()
    hw_opts = build(HardwareOptions, values)
    hw: Hardware = hw_opts.load()
    precision: Precision
    precision, more = build(PrecisionOptions, values).resolve(hw.device_dtypes)
    require_supported(precision, hw.device_dtypes, hw.name)
    engine_cfg = build(EngineConfig, values)
    parallel = build(ParallelOptions, values)
    base = build(EngineLayerOptions, values).load()
    opts = build(CalibrateOptions, values)
    length_opts = build(CalibrateLengths, values).options()
    lengths = length_source(length_opts, spec) if length_opts is not None else None
    cases = build_cases(results, lengths, opts.requests, opts.seed)
    if len(cases) < MIN_POINTS:  # before pricing anything
        raise RidgelineError(f"calibrate needs at least {MIN_POINTS} measured points to hold "
                             f"some out (k-fold, k = min({MAX_FOLDS}, points)); "
                             f"{', '.join(results)} hold {len(cases)}")
    longest = max(int((c.requests.input_tokens + c.requests.output_tokens).max()) for c in cases)
    tp, tp_reason = choose_tp(spec, precision, hw, engine_cfg, parallel, longest)
    sched = scheduler_for(spec, precision, hw.memory_bytes, engine_cfg, tp)
    zero = base.with_values(step_overhead_us=0.0, request_overhead_us=0.0)
    sm = StepModel(spec, precision, hw, tp=tp, engine=zero)
    inputs = sorted({c.point.source for c in cases})
    provenance = {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "ridgeline_version": __version__,
        "command_line": list(command_line or []),
        "inputs": [{"file": f, "sha256": _sha256(f)} for f in inputs],
        "model": spec.summary(), "precision": precision.to_dict(),
        "hardware": {**hw.summary(), "profile_file": hw_opts.profile},
        "tp": tp, "tp_reason": tp_reason,
        "engine_config": {k: getattr(engine_cfg, k) for k in engine_cfg.__dataclass_fields__},
        "base_engine": base.summary(), "scheduler": sched.to_dict(),
        "requests_per_point_max": opts.requests, "seed": opts.seed,
    }
    notes = list(model_notes) + list(more) + list(hw.notes)
    if hw.source != "measured":
        notes.append(f"the hardware is a {hw.source} description, not a profile measured on the "
                     "benchmarked machine: the fitted overheads absorb its error too")
    return calibrate(cases, sm, sched, base, provenance=provenance, notes=notes)


def write_engine_file(result: Calibration, path: str | Path) -> Path:
    """The engine.json, atomically (the caller checked the path before fitting)."""
    from ridgeline.outputs import atomic_write_text
    from ridgeline.roofline.profile import json_safe

    return atomic_write_text(path, json.dumps(json_safe(result.engine_document()), indent=1)
                             + "\n")


def check_output(path: str | Path | None, force: bool) -> None:
    """One line now, not after the fit, for an engine file that cannot or may not be written."""
    from ridgeline.outputs import OutputError

    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"-o {p} is a folder; it takes the engine file to write")
    if not p.absolute().parent.is_dir():
        raise OutputError(f"-o {p}: no folder {p.parent}")
    if p.exists() and not force:
        raise OutputError(f"{p} exists: pass --force to replace it")
