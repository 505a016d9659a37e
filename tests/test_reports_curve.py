"""The latency-throughput curve's CSV, PNG and tables, from real simulated sweeps."""

import csv
import io
import json
import math
from pathlib import Path

import pytest

from ridgeline.errors import RidgelineError
from ridgeline.reports.curve import (CSV_COLUMNS, curve_figure, curve_tables, write_curve_csv,
                                     write_curve_png)
from ridgeline.reports.tables import to_html, to_markdown, to_rich
from ridgeline.sizing.hardware import hardware_from_gpu_name
from ridgeline.sizing.models import load_model
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.simulation import LognormalLengths, make_requests, scheduler_for, sweep
from ridgeline.sizing.simulation.measured import read_measured
from ridgeline.sizing.step_model import StepModel

DATA = Path(__file__).parent / "data" / "measured"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RATES = [2, 8, 16, 32, 48, 64, 80]


@pytest.fixture(scope="module")
def engine():
    spec, prec = load_model("llama-3.1-8b"), Precision("fp8", "fp8", "fp8")
    hw = hardware_from_gpu_name("h100-sxm")
    return StepModel(spec, prec, hw, 1), scheduler_for(spec, prec, hw.memory_bytes)


@pytest.fixture(scope="module")
def reqs():
    # the fixtures' workload: 1024 prompt and 128 output tokens
    return make_requests(LognormalLengths(1024, 1024, 128, 128), n=600, seed=0)


@pytest.fixture(scope="module")
def curve(engine, reqs):
    sm, sched = engine
    return sweep(sm, sched, reqs, rps=RATES, ttft_slo_s=0.05, itl_slo_s=0.03,
                 itl_percentile="p95")


@pytest.fixture(scope="module")
def measured():
    return read_measured([DATA / "vllm", DATA / "aiperf"])


def lines_by_label(ax):
    return {ln.get_label(): ln for ln in ax.get_lines()}


# -- CSV ------------------------------------------------------------------------------------------

def test_csv_round_trips_every_simulated_point(curve, tmp_path):
    path = write_curve_csv(curve, tmp_path / "curve.csv")
    assert path == tmp_path / "curve.csv" and [p.name for p in tmp_path.iterdir()] == ["curve.csv"]
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == len(curve.points)
    for row, p in zip(rows, curve.points):
        assert row["source"] == "simulated" and row["load_kind"] == "rps"
        assert float(row["load"]) == p.value and int(row["requests"]) == p.requests
        for name in ("ttft", "itl", "e2e", "queue_wait", "tpot"):
            stat = getattr(p, f"{name}_s")
            for q in ("mean", "p50", "p95", "p99"):
                assert float(row[f"{name}_{q}_s"]) == stat.get(q)   # exact: repr round-trips
        assert float(row["output_tokens_per_s"]) == p.output_tokens_per_s
        assert float(row["request_throughput"]) == p.request_throughput
        assert float(row["mean_concurrency"]) == p.mean_concurrency
        assert float(row["kv_utilization"]) == p.mean_kv_utilization
        assert int(row["preemptions"]) == p.preemptions
    marks = {i: r["mark"] for i, r in enumerate(rows) if r["mark"]}
    want: dict[int, list[str]] = {}
    if curve.knee_index is not None:
        want.setdefault(curve.knee_index, []).append("knee")
    if curve.operating_point and curve.operating_point.index is not None:
        want.setdefault(curve.operating_point.index, []).append("operating point")
    assert marks == {i: "; ".join(m) for i, m in want.items()} and marks


def test_csv_measured_rows_leave_missing_statistics_empty(curve, measured, tmp_path):
    rows = list(csv.DictReader(write_curve_csv(curve, tmp_path / "c.csv", measured).open()))
    vllm = [r for r in rows if r["source"] == "measured (vLLM)"]
    aiperf = [r for r in rows if r["source"] == "measured (AIPerf)"]
    assert [float(r["load"]) for r in vllm] == [2.0, 8.0, 16.0, 32.0]
    assert [float(r["load"]) for r in aiperf] == [12.0, 24.0, 48.0]
    at32 = vllm[-1]
    assert at32["ttft_p95_s"] == "" and at32["e2e_p99_s"] == "" and at32["ttft_p99_s"] != ""
    assert at32["queue_wait_p50_s"] == "" and at32["kv_utilization"] == ""
    assert float(at32["ttft_p99_s"]) == measured[0].points[-1].ttft_s.p99


def test_csv_from_saved_json_is_the_same(curve, measured, tmp_path):
    """A `simulate --json` file read back renders exactly as the Sweep itself."""
    saved = json.loads(json.dumps(curve.to_dict()))
    meas = [json.loads(json.dumps(m.to_dict())) for m in measured]
    a = write_curve_csv(curve, tmp_path / "a.csv", measured).read_text()
    b = write_curve_csv(saved, tmp_path / "b.csv", meas).read_text()
    assert a == b


# -- PNG ------------------------------------------------------------------------------------------

def test_png_is_written_atomically_and_is_a_png(curve, measured, tmp_path):
    path = write_curve_png(curve, tmp_path / "curve.png", measured, title="test")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]   # no temp file left


def test_figure_draws_throughput_ttft_itl_against_load(curve):
    fig = curve_figure(curve)
    ax_tp, ax_ttft, ax_itl = fig.axes
    loads = [p.value for p in curve.points]
    tp = lines_by_label(ax_tp)["output tokens/s (simulated)"]
    assert list(tp.get_xdata()) == loads
    assert list(tp.get_ydata()) == [p.output_tokens_per_s for p in curve.points]
    ttft, itl = lines_by_label(ax_ttft), lines_by_label(ax_itl)
    for q in ("p50", "p99", "p95"):  # P95 too: the ITL SLO is at P95
        assert list(ttft[f"TTFT {q.upper()} (simulated)"].get_ydata()) == [
            p.ttft_s.get(q) for p in curve.points]
        assert list(itl[f"ITL {q.upper()} (simulated)"].get_ydata()) == pytest.approx(
            [1e3 * p.itl_s.get(q) for p in curve.points])
    assert ax_ttft.get_yscale() == "log" and ax_itl.get_ylabel() == "ITL (ms)"
    assert ax_itl.get_xlabel() == "offered load (requests/s)"


def test_figure_marks_slos_knee_and_operating_point(curve):
    fig = curve_figure(curve)
    ax_tp, ax_ttft, ax_itl = fig.axes
    ttft_slo = lines_by_label(ax_ttft)["TTFT SLO 0.05 s at P99"]
    assert list(ttft_slo.get_ydata()) == [0.05, 0.05]
    assert list(lines_by_label(ax_itl)["ITL SLO 30 ms at P95"].get_ydata()) == [30.0, 30.0]
    top = lines_by_label(ax_tp)
    knee = next(ln for lab, ln in top.items() if lab.startswith("knee "))
    assert list(knee.get_xdata()) == [curve.knee.value] * 2
    op = curve.operating_point
    assert op.index is not None
    op_line = next(ln for lab, ln in top.items() if lab.startswith("SLO operating point"))
    assert list(op_line.get_xdata()) == [op.load_at_slo] * 2
    assert f"({op.limit} binds)" in op_line.get_label()
    star = top["last swept load meeting the SLOs"]
    assert star.get_marker() == "*" and list(star.get_xdata()) == [op.load]
    # the vertical lines cross every panel, labelled once
    for ax in (ax_ttft, ax_itl):
        xs = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_label() == "_nolegend_"
                    and len(ln.get_xdata()) == 2 and ln.get_xdata()[0] == ln.get_xdata()[1])
        assert xs == sorted([curve.knee.value, op.load_at_slo])


def test_figure_draws_measured_points_on_the_same_axes(curve, measured):
    fig = curve_figure(curve, measured)
    ax_tp, ax_ttft, ax_itl = fig.axes
    vllm, aiperf = measured
    assert (vllm.tool, aiperf.tool) == ("vLLM", "AIPerf")
    ttft = lines_by_label(ax_ttft)
    v50 = ttft["TTFT P50 measured (vLLM)"]
    assert v50.get_marker() == "s" and v50.get_linestyle() == ":"
    assert list(v50.get_xdata()) == [p.value for p in vllm.points]
    assert list(v50.get_ydata()) == [p.ttft_s.p50 for p in vllm.points]
    assert ttft["TTFT P99 measured (AIPerf)"].get_marker() == "^"
    # a statistic the file lacks is not drawn: vLLM P95 TTFT exists at 2 and 16 req/s only
    assert list(ttft["TTFT P95 measured (vLLM)"].get_xdata()) == [2.0, 16.0]
    itl = lines_by_label(ax_itl)["ITL P99 measured (AIPerf)"]
    assert list(itl.get_ydata()) == pytest.approx([1e3 * p.itl_s.p99 for p in aiperf.points])
    assert "output tokens/s, measured (vLLM)" in lines_by_label(ax_tp)
    for ax in (ax_ttft, ax_itl):
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "measured (vLLM)" in legend and "measured (AIPerf)" in legend
        assert "simulated" in legend


def test_wide_closed_loop_sweep_uses_a_log_load_axis(engine, reqs):
    sm, sched = engine
    closed = sweep(sm, sched, reqs, concurrency=[1, 4, 16, 64, 256])
    ax = curve_figure(closed).axes[-1]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "concurrency (clients)"
    assert all(not ln.get_label().startswith("SLO") for a in curve_figure(closed).axes
               for ln in a.get_lines())  # no SLOs given: no SLO lines, no operating point


def test_measured_on_another_load_axis_is_one_line(curve):
    closed = read_measured(DATA / "vllm_concurrency")
    for render in (lambda: curve_figure(curve, closed), lambda: curve_tables(curve, closed)):
        with pytest.raises(RidgelineError) as e:
            render()
        assert "against concurrency" in str(e.value) and "\n" not in str(e.value)


def test_no_load_meets_the_slo_is_said(engine, reqs):
    sm, sched = engine
    strict = sweep(sm, sched, reqs, rps=[8, 16], ttft_slo_s=0.001)
    assert strict.operating_point.index is None
    texts = [t.get_text() for t in curve_figure(strict).axes[1].texts]
    assert any("no swept load meets the SLOs" in t for t in texts)
    assert "no swept load meets the SLOs" in curve_tables(strict)[1].note


# -- tables ---------------------------------------------------------------------------------------

def test_tables_rows_in_load_order_with_sources_and_marks(curve, measured):
    lat, thr = curve_tables(curve, measured)
    n = len(curve.points) + sum(len(m.points) for m in measured)
    assert len(lat.rows) == len(thr.rows) == n
    loads = [float(r[0]) for r in lat.rows]
    assert loads == sorted(loads)
    assert lat.headers[:2] == ["req/s", "source"]
    sims = [r for r in lat.rows if r[1] == "sim"]
    assert len(sims) == len(curve.points)
    for row, p in zip(sims, curve.points):
        ttft_p99_ms = 1e3 * p.ttft_s.p99
        assert float(row[3].replace(",", "")) == pytest.approx(ttft_p99_ms, rel=0.01)
    v32 = next(r for r in lat.rows if r[:2] == ["32", "vLLM"])
    assert v32[-1] == "-"  # that file has no E2E: shown as absent, not estimated
    marks = [r[-1] for r in thr.rows if r[1] == "sim"]
    assert marks[curve.knee_index] in ("knee", "knee+SLO")
    assert marks[curve.operating_point.index] in ("SLO", "knee+SLO")
    assert "not in the vLLM results" in lat.note and "TTFT SLO 50.0 ms at P99" in lat.note


def test_tables_fit_80_columns_and_render_three_ways(curve, measured):
    from rich.console import Console

    for meas in ((), measured):
        for table in curve_tables(curve, meas):
            console = Console(width=200, record=True, file=io.StringIO())
            console.print(to_rich(table))
            widths = [len(line) for line in console.export_text().splitlines()]
            assert max(widths) <= 80, (table.title, max(widths))
            md = to_markdown(table)
            assert md.count("\n|") == len(table.rows) + 2  # header, rule, rows
            assert "<table>" in to_html(table)


def test_tables_without_measured_have_no_source_column(curve):
    lat, thr = curve_tables(curve)
    assert "source" not in lat.headers and thr.headers[-1] == "mark"
    assert all(not math.isnan(float(r[1].replace(",", ""))) for r in lat.rows)
