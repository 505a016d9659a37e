"""Measured curves: vLLM bench serve and AIPerf results read into the simulated point shape."""

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ridgeline.errors import RidgelineError
from ridgeline.sizing.simulation.measured import (AIPERF_CSV, AIPERF_JSON, read_file,
                                                  read_measured)

DATA = Path(__file__).parent / "data" / "measured"
VLLM_DIR = DATA / "vllm"
AIPERF_DIR = DATA / "aiperf"


def vllm_file(qps: float) -> Path:
    return next(VLLM_DIR.glob(f"openai-{qps:.1f}qps-*.json"))


def aiperf_dir(rate: float) -> Path:
    return next(AIPERF_DIR.glob(f"*-request_rate{rate:.1f}"))


def raw(path: Path) -> dict:
    return json.loads(path.read_text())


# -- vLLM -----------------------------------------------------------------------------------------

def test_vllm_sweep_is_one_curve_in_load_order():
    (curve,) = read_measured(VLLM_DIR)
    assert curve.tool == "vLLM" and curve.label == "measured (vLLM)" and curve.load == "rps"
    assert [p.value for p in curve.points] == [2.0, 8.0, 16.0, 32.0]
    # one file at a time, in any order, gives the same curve
    files = sorted(VLLM_DIR.glob("*.json"), reverse=True)
    assert [p.value for p in read_measured(files)[0].points] == [2.0, 8.0, 16.0, 32.0]


def test_vllm_summary_is_read_and_converted_from_ms():
    src = raw(vllm_file(16))
    (p,) = read_file(vllm_file(16))
    assert p.load == "rps" and p.value == 16.0 and p.arrival_cv == 1.0
    for name, m in (("ttft_s", "ttft"), ("itl_s", "itl"), ("e2e_s", "e2el"), ("tpot_s", "tpot")):
        stat = getattr(p, name)
        assert stat.mean == pytest.approx(src[f"mean_{m}_ms"] / 1e3, rel=1e-12)
        assert stat.p50 == pytest.approx(src[f"median_{m}_ms"] / 1e3, rel=1e-12)
        assert stat.p95 == pytest.approx(src[f"p95_{m}_ms"] / 1e3, rel=1e-12)
        assert stat.p99 == pytest.approx(src[f"p99_{m}_ms"] / 1e3, rel=1e-12)
    assert p.request_throughput == src["request_throughput"]
    assert p.output_tokens_per_s == src["output_throughput"]
    assert p.total_tokens_per_s == src["total_token_throughput"]
    assert p.requests == src["completed"] and p.duration_s == src["duration"]
    assert p.missing == []


def test_vllm_missing_percentiles_stay_none_and_are_named():
    """The default --metric-percentiles is 99: no P95; an older vLLM keeps no latencies."""
    src = raw(vllm_file(32))
    assert "p95_ttft_ms" not in src and "latencies" not in src and "mean_e2el_ms" not in src
    (p,) = read_file(vllm_file(32))
    assert p.ttft_s.p95 is None and p.itl_s.p95 is None and p.tpot_s.p95 is None
    assert p.ttft_s.p99 == pytest.approx(src["p99_ttft_ms"] / 1e3)
    assert p.e2e_s.to_dict() == {"mean": None, "p50": None, "p95": None, "p99": None}
    assert set(p.missing) == {"ttft_s.p95", "itl_s.p95", "tpot_s.p95", "e2e_s.mean",
                              "e2e_s.p50", "e2e_s.p95", "e2e_s.p99"}
    d = p.to_dict()
    assert d["ttft_s"]["p95"] is None and d["missing"] == p.missing
    summary = read_measured(VLLM_DIR)[0].missing_summary()
    assert "at 32 req/s TTFT P95; ITL P95; E2E; TPOT P95" in summary
    assert "--metric-percentiles" in summary and "at 16 req/s" not in summary


def test_vllm_e2e_from_the_latencies_current_vllm_keeps():
    src = raw(vllm_file(8))
    assert "mean_e2el_ms" not in src and len(src["latencies"]) == src["completed"]
    (p,) = read_file(vllm_file(8))
    lat = np.asarray(src["latencies"])
    assert p.e2e_s.p50 == pytest.approx(np.percentile(lat, 50))
    assert p.e2e_s.p95 == pytest.approx(np.percentile(lat, 95))
    assert p.e2e_s.mean == pytest.approx(lat.mean())
    # time-average of requests in flight: the integral of in-flight requests over the run
    assert p.mean_concurrency == pytest.approx(lat.sum() / src["duration"])
    assert any("computed from the per-request lists" in n for n in p.notes)


def test_vllm_detailed_lists_fill_percentiles_over_successful_requests_only():
    src = raw(vllm_file(2))
    ok = np.array([e == "" for e in src["errors"]])
    assert src["failed"] == 1 and (~ok).sum() == 1
    (p,) = read_file(vllm_file(2))
    ttft = np.asarray(src["ttfts"])[ok]
    gaps = np.concatenate([np.asarray(g) for g, good in zip(src["itls"], ok) if good])
    assert p.ttft_s.p95 == pytest.approx(np.percentile(ttft, 95), rel=1e-12)
    assert p.itl_s.p95 == pytest.approx(np.percentile(gaps, 95), rel=1e-12)
    # the failed request (TTFT 0) is left out: with it the P95 would differ
    assert np.percentile(np.asarray(src["ttfts"]), 95) != pytest.approx(p.ttft_s.p95)
    # where the summary has the statistic, it is taken as written, and the lists agree with it
    assert p.ttft_s.p99 == pytest.approx(src["p99_ttft_ms"] / 1e3, rel=1e-12)
    assert np.percentile(ttft, 99) == pytest.approx(src["p99_ttft_ms"] / 1e3, rel=1e-4)
    lat, out = np.asarray(src["latencies"])[ok], np.asarray(src["output_lens"])[ok]
    assert p.tpot_s.p95 == pytest.approx(np.percentile((lat - ttft) / (out - 1), 95), rel=1e-12)
    assert p.requests == 15 and any("1 failed request" in n for n in p.notes)


def test_vllm_appended_results_are_a_closed_loop_sweep():
    (curve,) = read_measured(DATA / "vllm_concurrency")
    assert curve.load == "concurrency" and [p.value for p in curve.points] == [4.0, 16.0]
    d = curve.points[1].to_dict()
    assert d["concurrency"] == 16.0 and "rps" not in d and "arrival_cv" not in d
    assert set(d["ttft_s"]) == {"mean", "p50", "p95", "p99"}


def test_vllm_burstiness_is_the_arrival_cv(tmp_path):
    doc = raw(vllm_file(16))
    doc["burstiness"] = 4.0   # gamma shape 4: CV 1/2
    f = tmp_path / "bursty.json"
    f.write_text(json.dumps(doc))
    assert read_file(f)[0].arrival_cv == pytest.approx(0.5)


# -- AIPerf ---------------------------------------------------------------------------------------

def test_aiperf_json_blocks_in_ms_become_seconds():
    folder = aiperf_dir(12)
    src = raw(folder / AIPERF_JSON)
    (p,) = read_file(folder / AIPERF_JSON)
    assert p.tool == "AIPerf" and p.load == "rps" and p.value == 12.0 and p.arrival_cv == 1.0
    for name, tag in (("ttft_s", "time_to_first_token"), ("itl_s", "inter_chunk_latency"),
                      ("e2e_s", "request_latency"), ("tpot_s", "inter_token_latency")):
        block = src[tag]
        assert block["unit"] == "ms"
        stat = getattr(p, name)
        assert stat.mean == pytest.approx(block["avg"] / 1e3, rel=1e-12)
        for q in ("p50", "p95", "p99"):
            assert stat.get(q) == pytest.approx(block[q] / 1e3, rel=1e-12)
    assert p.request_throughput == src["request_throughput"]["avg"]
    assert p.output_tokens_per_s == src["output_token_throughput"]["avg"]
    dur = src["benchmark_duration"]["avg"]
    assert p.duration_s == dur and p.requests == src["request_count"]["avg"]
    assert p.total_tokens_per_s == pytest.approx(
        (src["total_isl"]["avg"] + src["total_osl"]["avg"]) / dur)
    assert p.missing == [] and p.mean_concurrency is None  # schema 1.0 has no latency sum


def test_aiperf_itl_is_the_pooled_chunk_gaps_not_its_per_request_itl():
    """AIPerf's inter_token_latency is (latency - TTFT) / (OSL - 1) per request: TPOT."""
    (p,) = read_file(aiperf_dir(12) / AIPERF_JSON)
    assert p.itl_s.p99 > 2 * p.tpot_s.p99  # pooled gaps keep the prefill stalls in the tail


def test_aiperf_csv_beside_json_reads_the_same_point():
    folder = aiperf_dir(12)
    (from_json,) = read_file(folder / AIPERF_JSON)
    (from_csv,) = read_file(folder / AIPERF_CSV)
    assert (from_csv.load, from_csv.value) == (from_json.load, from_json.value)  # load: the JSON
    for name in ("ttft_s", "itl_s", "e2e_s", "tpot_s"):
        for q in ("mean", "p50", "p95", "p99"):
            # the CSV rounds to 0.01 ms
            assert getattr(from_csv, name).get(q) == pytest.approx(
                getattr(from_json, name).get(q), abs=5.1e-6)
    assert from_csv.request_throughput == pytest.approx(from_json.request_throughput, abs=0.005)
    assert from_csv.duration_s == pytest.approx(from_json.duration_s, abs=0.005)


def test_aiperf_csv_alone_takes_the_load_from_aiperf_folder_name():
    folder = aiperf_dir(48)
    assert not (folder / AIPERF_JSON).exists()
    (p,) = read_file(folder / AIPERF_CSV)
    assert p.load == "rps" and p.value == 48.0
    lines = [r for r in csv.reader((folder / AIPERF_CSV).open()) if r]
    header = lines[0]  # the first section's: Metric,avg,min,max,p1,...,p99,std
    rows = {r[0]: r for r in lines}
    ttft = dict(zip(header, rows["Time to First Token (ms)"]))
    assert p.ttft_s.p99 == pytest.approx(float(ttft["p99"]) / 1e3, rel=1e-12)
    assert p.ttft_s.mean == pytest.approx(float(ttft["avg"]) / 1e3, rel=1e-12)
    assert p.output_tokens_per_s == float(rows["Output Token Throughput (tokens/sec)"][1])


def test_aiperf_schema_1_1_phases_config_and_latency_sum():
    folder = aiperf_dir(24)
    src = raw(folder / AIPERF_JSON)
    assert "loadgen" not in src["input_config"]
    (p,) = read_file(folder / AIPERF_JSON)
    assert p.value == 24.0
    lat = src["request_latency"]
    assert p.mean_concurrency == pytest.approx(lat["sum"] / 1e3 / src["benchmark_duration"]["avg"])


def test_aiperf_folder_sweep_prefers_json_and_is_sorted():
    (curve,) = read_measured(AIPERF_DIR)
    assert curve.label == "measured (AIPerf)"
    assert [p.value for p in curve.points] == [12.0, 24.0, 48.0]
    assert [Path(p.source).name for p in curve.points] == [AIPERF_JSON, AIPERF_JSON, AIPERF_CSV]


def test_aiperf_units_are_each_blocks_own(tmp_path):
    doc = raw(aiperf_dir(12) / AIPERF_JSON)
    ttft_ms = doc["time_to_first_token"]["p99"]
    doc["time_to_first_token"] = {k: (v * 1e6 if isinstance(v, float) else v)
                                  for k, v in doc["time_to_first_token"].items()}
    doc["time_to_first_token"]["unit"] = "ns"
    doc["input_config"]["loadgen"] = {"concurrency": 32}
    del doc["inter_chunk_latency"]
    f = tmp_path / AIPERF_JSON
    f.write_text(json.dumps(doc))
    (p,) = read_file(f)
    assert p.ttft_s.p99 == pytest.approx(ttft_ms / 1e3, rel=1e-12)
    assert (p.load, p.value, p.arrival_cv) == ("concurrency", 32.0, None)
    # no pooled gaps: ITL is absent, never taken from AIPerf's per-request ITL
    assert p.itl_s.to_dict() == {"mean": None, "p50": None, "p95": None, "p99": None}
    assert p.tpot_s.p50 is not None and any("tpot_s" in n for n in p.notes)


def test_aiperf_constant_rate_mode_is_evenly_spaced(tmp_path):
    doc = raw(aiperf_dir(12) / AIPERF_JSON)
    doc["input_config"]["loadgen"]["request_rate_mode"] = "constant"
    doc["input_config"]["loadgen"]["concurrency"] = 64   # a rate wins: the concurrency only caps
    f = tmp_path / AIPERF_JSON
    f.write_text(json.dumps(doc))
    (p,) = read_file(f)
    assert (p.load, p.value, p.arrival_cv) == ("rps", 12.0, 0.0)


def test_two_tools_are_two_curves_in_the_order_given():
    curves = read_measured([AIPERF_DIR, VLLM_DIR])
    assert [c.tool for c in curves] == ["AIPerf", "vLLM"]
    assert all(c.load == "rps" for c in curves)


# -- bad input: one line each ---------------------------------------------------------------------

def _copy_vllm(tmp_path, **changes) -> Path:
    doc = raw(vllm_file(16))
    doc.update(changes)
    f = tmp_path / "result.json"
    f.write_text(json.dumps(doc))
    return f


@pytest.mark.parametrize("content,expect", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "JSON list"),
    ('{"hello": 1}', "neither a `vllm bench serve --save-result` result nor an AIPerf"),
    ('"text"', "not a benchmark result"),
    ('{"metadata": {}, "metrics": {}, "error": null}', "per-request record"),
])
def test_malformed_files_are_one_line(tmp_path, content, expect):
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(RidgelineError) as e:
        read_measured(f)
    assert expect in str(e.value) and str(f) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("changes,expect", [
    ({"mean_ttft_ms": "fast"}, "mean_ttft_ms is not a number ('fast')"),
    ({"request_rate": "inf", "max_concurrency": None}, "no load to place"),
    ({"ramp_up_strategy": "linear", "request_rate": "inf"}, "ramp-up"),
    ({"ttfts": [0.1, 0.2], "errors": ["", "", ""]}, "ttfts has 2 entries for 3 requests"),
])
def test_bad_vllm_fields_are_one_line(tmp_path, changes, expect):
    f = _copy_vllm(tmp_path, **changes)
    with pytest.raises(RidgelineError) as e:
        read_file(f)
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_bad_aiperf_inputs_are_one_line(tmp_path):
    # a CSV with no JSON beside it, in a folder whose name names no load
    plain = tmp_path / "results"
    plain.mkdir()
    shutil.copy(aiperf_dir(48) / AIPERF_CSV, plain / AIPERF_CSV)
    with pytest.raises(RidgelineError, match="no load found"):
        read_file(plain / AIPERF_CSV)
    # a unit the reader does not know
    doc = raw(aiperf_dir(12) / AIPERF_JSON)
    doc["request_latency"]["unit"] = "fortnights"
    f = tmp_path / AIPERF_JSON
    f.write_text(json.dumps(doc))
    with pytest.raises(RidgelineError, match="request_latency is in 'fortnights'"):
        read_file(f)
    # a CSV that is not AIPerf's
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(RidgelineError, match="is not an AIPerf"):
        read_file(other)
    # a number cell that is not a number
    text = (aiperf_dir(48) / AIPERF_CSV).read_text()
    bad = tmp_path / "x-request_rate4.0" / AIPERF_CSV
    bad.parent.mkdir()
    bad.write_text(re.sub(r"Time to First Token \(ms\),[0-9.]+", "Time to First Token (ms),n/a",
                          text))
    with pytest.raises(RidgelineError, match="Time to First Token \\(ms\\) avg is not a number"):
        read_file(bad)
    # a trace replay has no single load
    doc = raw(aiperf_dir(12) / AIPERF_JSON)
    doc["input_config"]["input"]["fixed_schedule"] = True
    f.write_text(json.dumps(doc))
    with pytest.raises(RidgelineError, match="fixed-schedule"):
        read_file(f)


def test_missing_paths_empty_folders_and_mixed_loads_are_one_line(tmp_path):
    with pytest.raises(RidgelineError, match="no such file or folder"):
        read_measured(tmp_path / "nope.json")
    with pytest.raises(RidgelineError, match="no benchmark results in this folder"):
        read_measured(tmp_path)
    with pytest.raises(RidgelineError, match="mix request rates .* and concurrencies"):
        read_measured([VLLM_DIR, DATA / "vllm_concurrency"])
