"""The latency-throughput curve rendered three ways: CSV, PNG and tables (console/markdown/HTML).

    curve = sweep(sm, sched, reqs, rps=[...], ttft_slo_s=2.0)        # or curve.to_dict()
    measured = read_measured(["vllm-8qps.json", "aiperf-artifacts/"])  # optional
    write_curve_csv(curve, "curve.csv", measured)
    write_curve_png(curve, "curve.png", measured, title="Llama-3.1-70B FP8, TP=4, H100")
    for t in curve_tables(curve, measured): print(to_markdown(t))

Everything takes the `Sweep` or its `to_dict()` (so a saved `simulate --json` renders
the same), and the measured curves of `simulation.measured` (or their `to_dict()`).

- CSV: one row per point, simulated ("simulated") and measured ("measured (vLLM)"...),
  flat columns in seconds, tokens/s and requests/s (CSV_COLUMNS); a statistic a point
  does not have is an empty cell; `mark` says "knee" / "operating point".
- PNG: three panels against load (request rate or clients): output tokens/s; TTFT and
  ITL at P50 and P99 (and the SLO's percentile when it is another), log scale. The SLOs
  are horizontal dashed lines, the knee a dotted vertical line, the SLO operating point a
  green vertical line at `load_at_slo` with a star on the last point meeting the SLOs.
  Simulated points are solid lines; measured ones hollow markers on a thin dotted line
  (square vLLM, triangle AIPerf), labelled "measured (vLLM)" / "measured (AIPerf)". A
  measured point without a statistic is not drawn for it (never estimated).
- Tables: two, stacked (each fits 80 columns): latencies (P50/P99 TTFT and ITL, P99
  E2E, in ms) and throughput/occupancy (output tokens/s, requests/s, mean requests in
  the system, KV use, preemptions, knee/SLO marks). Measured rows sit among the
  simulated ones in load order, their source named.
Drawing uses a Figure on an Agg canvas (no pyplot, as reports/plots.py does); files are
written atomically (ridgeline.outputs).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from ridgeline.errors import RidgelineError
from ridgeline.outputs import atomic_write_bytes, atomic_write_text
from ridgeline.reports.tables import Table

SIMULATED = "simulated"
STATS = ("mean", "p50", "p95", "p99")
LATENCY_FIELDS = ("ttft", "itl", "e2e", "queue_wait", "tpot")
CSV_COLUMNS = (["source", "load_kind", "load", "requests"]
               + [f"{m}_{s}_s" for m in LATENCY_FIELDS for s in STATS]
               + ["output_tokens_per_s", "total_tokens_per_s", "request_throughput",
                  "mean_concurrency", "mean_batch", "kv_utilization", "peak_kv_utilization",
                  "preemptions", "mark"])
PERCENTILE_COLORS = {"p50": "tab:blue", "p95": "tab:orange", "p99": "tab:red", "mean": "tab:gray"}
TOOL_MARKERS = {"vLLM": "s", "AIPerf": "^"}
LOAD_AXIS = {"rps": "offered load (requests/s)", "concurrency": "concurrency (clients)"}
LOAD_UNIT = {"rps": "req/s", "concurrency": "clients"}


# ------------------------------------------------------------------------------ inputs

def _sweep_dict(curve: Any) -> dict[str, Any]:
    d = curve.to_dict() if hasattr(curve, "to_dict") else curve
    if not isinstance(d, dict) or not d.get("points"):
        raise RidgelineError("the curve has no points to render")
    return d


def _measured_dicts(measured: Iterable[Any]) -> list[dict[str, Any]]:
    return [m.to_dict() if hasattr(m, "to_dict") else m for m in measured or () if m]


def load_kind(point: dict[str, Any]) -> str:
    return "rps" if "rps" in point else "concurrency"


def _check_axes(curve: dict[str, Any], measured: list[dict[str, Any]]) -> str:
    """The one load axis of the simulated and measured points, or a one-line error."""
    kind = load_kind(curve["points"][0])
    for m in measured:
        if m.get("points") and load_kind(m["points"][0]) != kind:
            other = load_kind(m["points"][0])
            raise RidgelineError(
                f"the {m.get('label', 'measured')} points are against "
                f"{'request rate' if other == 'rps' else 'concurrency'}, the simulated ones "
                f"against {'request rate' if kind == 'rps' else 'concurrency'}: simulate with "
                f"--{'rps' if other == 'rps' else 'concurrency'} to compare them")
    return kind


def _marks(curve: dict[str, Any]) -> dict[int, str]:
    """Point index -> 'knee' / 'operating point' / both."""
    marks: dict[int, list[str]] = {}
    knee = (curve.get("knee") or {}).get("index")
    if knee is not None:
        marks.setdefault(knee, []).append("knee")
    op = (curve.get("operating_point") or {}).get("index")
    if op is not None:
        marks.setdefault(op, []).append("operating point")
    return {i: "; ".join(m) for i, m in marks.items()}


def _stat(point: dict[str, Any], metric: str, stat: str) -> float | None:
    v = (point.get(f"{metric}_s") or {}).get(stat)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# ------------------------------------------------------------------------------ CSV

def curve_rows(curve: Any, measured: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """Flat rows (CSV_COLUMNS), simulated then measured, each in load order; None = absent."""
    sweep = _sweep_dict(curve)
    meas = _measured_dicts(measured)
    _check_axes(sweep, meas)
    marks = _marks(sweep)
    rows = [_row(p, SIMULATED, marks.get(i, "")) for i, p in enumerate(sweep["points"])]
    for m in meas:
        rows += [_row(p, m.get("label") or "measured", "") for p in m.get("points") or []]
    return rows


def _row(p: dict[str, Any], source: str, mark: str) -> dict[str, Any]:
    kind = load_kind(p)
    row: dict[str, Any] = {"source": source, "load_kind": kind, "load": p[kind],
                           "requests": p.get("requests")}
    for m in LATENCY_FIELDS:
        for s in STATS:
            row[f"{m}_{s}_s"] = _stat(p, m, s)
    for key in ("output_tokens_per_s", "total_tokens_per_s", "request_throughput",
                "mean_concurrency", "mean_batch", "peak_kv_utilization", "preemptions"):
        row[key] = p.get(key)
    row["kv_utilization"] = p.get("mean_kv_utilization")
    row["mark"] = mark
    return row


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # shortest text that reads back as the same float
    return str(v)


def curve_csv(curve: Any, measured: Iterable[Any] = ()) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for row in curve_rows(curve, measured):
        w.writerow([_cell(row.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def write_curve_csv(curve: Any, path: str | Path, measured: Iterable[Any] = ()) -> Path:
    """The points as CSV, written atomically (a crash never leaves half a file)."""
    return atomic_write_text(path, curve_csv(curve, measured))


# ------------------------------------------------------------------------------ PNG

def _percentiles_drawn(slo: dict[str, Any]) -> list[str]:
    """P50 and P99, and the SLOs' own percentile when it is another (e.g. an ITL P95 SLO)."""
    drawn = ["p50", "p99"]
    for key in ("ttft_percentile", "itl_percentile"):
        q = slo.get(key)
        if q in PERCENTILE_COLORS and q not in drawn:
            drawn.insert(-1, q)
    return drawn


def _fmt_load(v: float, kind: str) -> str:
    return f"{v:,.0f}" if kind == "concurrency" or v >= 100 else f"{v:.3g}"


def curve_figure(curve: Any, measured: Iterable[Any] = (), title: str | None = None):
    """The Figure (Agg canvas) of the curve: throughput, TTFT and ITL panels (module doc)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sweep = _sweep_dict(curve)
    meas = _measured_dicts(measured)
    kind = _check_axes(sweep, meas)
    pts = sweep["points"]
    slo = sweep.get("slo") or {}
    x = [float(p[kind]) for p in pts]

    fig = Figure(figsize=(8.5, 10.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax_tp, ax_ttft, ax_itl = fig.subplots(3, 1, sharex=True)

    ax_tp.plot(x, [p.get("output_tokens_per_s") for p in pts], "-o", color="black", ms=4,
               label="output tokens/s (simulated)")
    for m in meas:
        xs, ys = _series(m["points"], kind, lambda p: p.get("output_tokens_per_s"))
        if xs:
            ax_tp.plot(xs, ys, ls=":", lw=1, marker=TOOL_MARKERS.get(m.get("tool"), "D"), ms=7,
                       mfc="none", color="black", label=f"output tokens/s, {m['label']}")
    ax_tp.set_ylabel("output tokens/s")
    ax_tp.set_ylim(bottom=0)

    drawn = _percentiles_drawn(slo)
    for ax, metric, name, scale, unit in ((ax_ttft, "ttft", "TTFT", 1.0, "s"),
                                          (ax_itl, "itl", "ITL", 1e3, "ms")):
        for q in drawn:
            ys = [_stat(p, metric, q) for p in pts]
            ax.plot(x, [None if v is None else v * scale for v in ys], "-o", ms=3.5,
                    color=PERCENTILE_COLORS[q], label=f"{name} {q.upper()} (simulated)")
            for m in meas:
                xs, ms = _series(m["points"], kind, lambda p: _stat(p, metric, q))
                if xs:
                    ax.plot(xs, [v * scale for v in ms], ls=":", lw=1, mfc="none", ms=7,
                            marker=TOOL_MARKERS.get(m.get("tool"), "D"),
                            color=PERCENTILE_COLORS[q], label=f"{name} {q.upper()} {m['label']}")
        target = slo.get(f"{metric}_s")
        slo_line = None
        if target:
            q = str(slo.get(f"{metric}_percentile") or "p99")
            slo_line = ax.axhline(target * scale, color=PERCENTILE_COLORS.get(q, "black"),
                                  ls="--", lw=1.2,
                                  label=f"{name} SLO {target * scale:g} {unit} at {q.upper()}")
        ax.set_yscale("log")
        _plain_ticks(ax.yaxis)
        ax.set_ylabel(f"{name} ({unit})")
        # one legend entry per colour (percentile) and per line style (source), not per series
        ax.legend(handles=_latency_legend(name, drawn, meas, slo_line), fontsize=7,
                  loc="upper left", framealpha=0.9)

    _mark_knee_and_operating_point((ax_tp, ax_ttft, ax_itl), sweep, pts, kind, drawn)
    ax_tp.legend(fontsize=7, loc="upper left", framealpha=0.9)
    spread = max(x) / min(x) if min(x) > 0 else 1.0
    if spread > 20:  # a wide sweep (2 ... 80 req/s, 1 ... 400 clients) reads better on log
        ax_itl.set_xscale("log")  # shared by the three panels
        _plain_ticks(ax_itl.xaxis)
    ax_itl.set_xlabel(LOAD_AXIS[kind])
    for ax in (ax_tp, ax_ttft, ax_itl):
        ax.grid(True, which="both", alpha=0.25)
    fig.suptitle("Latency-throughput curve" + (f": {title}" if title else " (simulated)"))
    return fig


def _plain_ticks(axis) -> None:
    """Log-axis ticks at 1, 2, 5 x 10^k written as plain numbers (0.02, 5, 200), not 2x10^1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _latency_legend(name: str, drawn: list[str], meas: list[dict[str, Any]], slo_line) -> list:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=PERCENTILE_COLORS[q], lw=2, label=f"{name} {q.upper()}")
               for q in drawn]
    handles.append(Line2D([], [], color="black", marker="o", ms=3.5, label="simulated"))
    handles += [Line2D([], [], color="black", ls=":", lw=1, mfc="none", ms=7,
                       marker=TOOL_MARKERS.get(m.get("tool"), "D"), label=m["label"])
                for m in meas]
    return handles + ([slo_line] if slo_line is not None else [])


def _series(points: Sequence[dict[str, Any]], kind: str, value) -> tuple[list[float], list]:
    """(loads, values) of the points that have the value: an absent one is skipped, not drawn."""
    xs, ys = [], []
    for p in points:
        v = value(p)
        if v is not None:
            xs.append(float(p[kind]))
            ys.append(float(v))
    return xs, ys


def _mark_knee_and_operating_point(axes, sweep: dict[str, Any], pts, kind: str,
                                   drawn: list[str]) -> None:
    unit = LOAD_UNIT[kind]
    knee = (sweep.get("knee") or {}).get("index")
    op = sweep.get("operating_point") or {}
    for i, ax in enumerate(axes):
        first = i == 0  # the lines are labelled once, in the top panel's legend
        if knee is not None:
            ax.axvline(float(pts[knee][kind]), color="dimgray", ls=":", lw=1.6,
                       label=(f"knee {_fmt_load(float(pts[knee][kind]), kind)} {unit} "
                              "(P99 TTFT leaves P50)") if first else "_nolegend_")
        if op.get("index") is not None:
            at = op.get("load_at_slo") or op.get("load")
            limit = op.get("limit") or ""
            text = (f"SLO operating point {_fmt_load(at, kind)} {unit} ({limit} binds)"
                    if limit != "sweep limit" else
                    f"SLO operating point {_fmt_load(at, kind)} {unit} (every swept load "
                    "meets the SLOs)")
            ax.axvline(float(at), color="tab:green", ls="-", lw=1.4, alpha=0.8,
                       label=text if first else "_nolegend_")
    if op.get("index") is not None:
        p = pts[op["index"]]
        xs = float(p[kind])
        axes[0].plot([xs], [p.get("output_tokens_per_s")], "*", ms=14, color="tab:green",
                     mec="black", label="last swept load meeting the SLOs")
        for ax, metric, scale in ((axes[1], "ttft", 1.0), (axes[2], "itl", 1e3)):
            for q in drawn:
                v = _stat(p, metric, q)
                if v is not None:
                    ax.plot([xs], [v * scale], "*", ms=12, color="tab:green", mec="black",
                            label="_nolegend_")
    elif op:  # even the lowest swept load misses an SLO
        axes[1].text(0.5, 0.95, f"no swept load meets the SLOs ({op.get('limit')} misses at "
                                "the lowest)", transform=axes[1].transAxes, ha="center",
                     va="top", fontsize=8, color="tab:red")


def curve_png(curve: Any, measured: Iterable[Any] = (), title: str | None = None) -> bytes:
    buf = io.BytesIO()  # drawn in memory, then written atomically: never half a PNG
    curve_figure(curve, measured, title).savefig(buf, format="png")
    return buf.getvalue()


def write_curve_png(curve: Any, path: str | Path, measured: Iterable[Any] = (),
                    title: str | None = None) -> Path:
    """The curve's PNG (curve_figure), written atomically."""
    return atomic_write_bytes(path, curve_png(curve, measured, title))


# ------------------------------------------------------------------------------ tables

def _ms(v: float | None) -> str:
    """Latency in ms, about three significant digits: 3.38 / 45.2 / 1,234."""
    if v is None:
        return "-"
    ms = v * 1e3
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _num(v: Any, digits: int = 0) -> str:
    """Thousands separators; below 10, three significant digits kept (2.00, 0.893)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.{digits}f}" if abs(v) >= 10 or digits == 0 else f"{v:#.3g}"


def curve_tables(curve: Any, measured: Iterable[Any] = ()) -> list[Table]:
    """Two tables, stacked so each fits 80 columns: latencies, then throughput and marks."""
    sweep = _sweep_dict(curve)
    meas = _measured_dicts(measured)
    kind = _check_axes(sweep, meas)
    marks = _marks(sweep)
    rows: list[tuple[float, int, str, dict[str, Any], str]] = []
    for i, p in enumerate(sweep["points"]):
        rows.append((float(p[kind]), 0, "sim", p, marks.get(i, "")))
    for j, m in enumerate(meas, 1):
        for p in m.get("points") or []:
            rows.append((float(p[kind]), j, str(m.get("tool") or "measured"), p, ""))
    rows.sort(key=lambda r: (r[0], r[1]))
    with_source = bool(meas)
    head = [LOAD_UNIT[kind]] + (["source"] if with_source else [])

    lat = Table("Latency against load (ms)",
                head + ["TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "E2E p99"])
    thr = Table("Throughput and occupancy against load",
                head + ["out tok/s", "req/s", "conc", "KV use", "preempt", "mark"])
    for load, _, source, p, mark in rows:
        first = [_fmt_load(load, kind)] + ([source] if with_source else [])
        lat.rows.append(first + [_ms(_stat(p, "ttft", "p50")), _ms(_stat(p, "ttft", "p99")),
                                 _ms(_stat(p, "itl", "p50")), _ms(_stat(p, "itl", "p99")),
                                 _ms(_stat(p, "e2e", "p99"))])
        kv = p.get("mean_kv_utilization")
        thr.rows.append(first + [_num(p.get("output_tokens_per_s")),
                                 _num(p.get("request_throughput"), 2),
                                 _num(p.get("mean_concurrency"), 1),
                                 "-" if kv is None else f"{100 * kv:.0f}%",
                                 _num(p.get("preemptions")),
                                 {"knee": "knee", "operating point": "SLO",
                                  "knee; operating point": "knee+SLO"}.get(mark, mark)])
    lat.note = _latency_note(sweep, meas)
    thr.note = _throughput_note(sweep, kind)
    return [lat, thr]


def _latency_note(sweep: dict[str, Any], meas: list[dict[str, Any]]) -> str:
    slo = sweep.get("slo") or {}
    parts = []
    for metric, name in (("ttft", "TTFT"), ("itl", "ITL")):
        if slo.get(f"{metric}_s"):
            parts.append(f"{name} SLO {_ms(slo[f'{metric}_s'])} ms at "
                         f"{str(slo.get(f'{metric}_percentile') or 'p99').upper()}")
    parts.append("ITL: every gap between two tokens, pooled over requests")
    if meas:
        parts.append("sim = simulated; measured rows are the benchmark's own numbers, '-' "
                     "where it does not report the statistic")
        parts += [m["missing"] for m in meas if m.get("missing")]
    return "; ".join(parts)


def _throughput_note(sweep: dict[str, Any], kind: str) -> str:
    unit = LOAD_UNIT[kind]
    parts = ["conc = mean requests in the system (queued + running); KV use = mean share of "
             "KV blocks in use"]
    knee = sweep.get("knee") or {}
    if knee.get("index") is not None:
        parts.append(f"knee (P99 TTFT leaves P50) at {_fmt_load(knee['load'], kind)} {unit}")
    op = sweep.get("operating_point")
    if op and op.get("index") is not None:
        parts.append(f"SLO = the highest swept load meeting the SLOs, "
                     f"{_fmt_load(op['load'], kind)} {unit} (about "
                     f"{_fmt_load(op['load_at_slo'], kind)} {unit} where the {op['limit']} "
                     "binds)" if op.get("limit") != "sweep limit" else
                     f"SLO = every swept load meets the SLOs, up to "
                     f"{_fmt_load(op['load'], kind)} {unit}")
    elif op:
        parts.append(f"no swept load meets the SLOs ({op.get('limit')} misses at the lowest)")
    return "; ".join(parts)
