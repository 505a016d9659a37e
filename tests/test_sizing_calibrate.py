"""Calibrating the engine layer from benchmark results (sizing.calibrate): lengths read from the
real formats, the predictor, and recovering known overheads from results the simulator wrote."""

import json
from pathlib import Path

import numpy as np
import pytest

from ridgeline.errors import RidgelineError
from ridgeline.sizing.calibrate import (COMPARED, MIN_POINTS, Predictor, WithOverheads,
                                        build_cases, calibrate_from_values, file_lengths,
                                        folds_of, weighted_median)
from ridgeline.sizing.engine import load_engine, read_engine_file
from ridgeline.sizing.hardware import hardware_from_gpu_name
from ridgeline.sizing.models import load_model
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.simulation import (ClosedLoop, LognormalLengths, OpenLoop, Trace,
                                         make_requests, read_trace, scheduler_for, simulate)
from ridgeline.sizing.step_model import StepModel

DATA = Path(__file__).parent / "data" / "measured"
BF16 = Precision("bf16", "bf16", "bf16")
LENGTHS = LognormalLengths(1024, 1024, 128, 128)  # fixed lengths, as a random-dataset benchmark
N = 160                                           # requests per point
GPU, MODEL = "h100-sxm", "llama-3.1-8b"


# -- result files in the real formats, written from simulated points ----------------------------

MS = {"ttft_s": "ttft", "tpot_s": "tpot", "itl_s": "itl", "e2e_s": "e2el"}


def vllm_result(path: Path, point, rate: float, reqs) -> Path:
    """`vllm bench serve --save-result --percentile-metrics ttft,tpot,itl,e2el` JSON."""
    doc = {"date": "20250701-120000", "endpoint_type": "openai", "backend": "openai",
           "label": None, "model_id": "meta-llama/Llama-3.1-8B-Instruct",
           "num_prompts": len(reqs), "fixture": "written by the simulator for ridgeline's tests",
           "request_rate": rate, "burstiness": 1.0, "max_concurrency": None,
           "duration": point.duration_s, "completed": len(reqs), "failed": 0,
           "total_input_tokens": int(reqs.input_tokens.sum()),
           "total_output_tokens": int(reqs.output_tokens.sum()),
           "request_throughput": point.request_throughput,
           "output_throughput": point.output_tokens_per_s,
           "total_token_throughput": point.total_tokens_per_s}
    for name, m in MS.items():
        st = getattr(point, name)
        doc.update({f"mean_{m}_ms": st.mean * 1e3, f"median_{m}_ms": st.p50 * 1e3,
                    f"p99_{m}_ms": st.p99 * 1e3})
    path.write_text(json.dumps(doc))
    return path


AIPERF_TAGS = {"ttft_s": "time_to_first_token", "itl_s": "inter_chunk_latency",
               "tpot_s": "inter_token_latency", "e2e_s": "request_latency"}


def aiperf_result(folder: Path, point, concurrency: int, reqs) -> Path:
    """An `aiperf profile` artifact folder with its profile_export_aiperf.json (closed loop)."""
    folder.mkdir(parents=True)
    doc = {"schema_version": "1.1", "aiperf_version": "0.3.0"}
    for name, tag in AIPERF_TAGS.items():
        st = getattr(point, name)
        doc[tag] = {"unit": "ms", "avg": st.mean * 1e3, "p50": st.p50 * 1e3,
                    "p95": st.p95 * 1e3, "p99": st.p99 * 1e3}
    for tag, arr in (("input_sequence_length", reqs.input_tokens),
                     ("output_sequence_length", reqs.output_tokens)):
        doc[tag] = {"unit": "tokens", "avg": float(arr.mean()),
                    **{f"p{q}": float(np.percentile(arr, q)) for q in (50, 95, 99)}}
    doc.update(request_throughput={"unit": "requests/sec", "avg": point.request_throughput},
               output_token_throughput={"unit": "tokens/sec", "avg": point.output_tokens_per_s},
               request_count={"unit": "requests", "avg": len(reqs)},
               benchmark_duration={"unit": "sec", "avg": point.duration_s},
               input_config={"loadgen": {"concurrency": concurrency}})
    path = folder / "profile_export_aiperf.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def llama():
    hw = hardware_from_gpu_name(GPU)
    spec = load_model(MODEL)
    return spec, hw, scheduler_for(spec, BF16, hw.memory_bytes)


def simulated_engine_results(folder: Path, llama, engine, loads) -> list[Path]:
    """Result files of the simulator running `engine` (the full StepModel path) at `loads`."""
    spec, hw, sched = llama
    sm = StepModel(spec, BF16, hw, engine=engine)
    reqs = make_requests(LENGTHS, N, seed=0)
    paths = []
    for i, load in enumerate(loads):
        point = simulate(sm, sched, reqs, load)
        if isinstance(load, OpenLoop):
            paths.append(vllm_result(folder / f"openai-{load.rps:.1f}qps-sim.json", point,
                                     load.rps, reqs))
        else:
            paths.append(aiperf_result(folder / f"sim-openai-chat-concurrency{load.concurrency}",
                                       point, load.concurrency, reqs))
    return paths


def values(**extra):
    return {"model": MODEL, "gpu": GPU, "weights": "bf16", "engine": "vllm", "requests": N,
            **extra}


# -- lengths from the result files ---------------------------------------------------------------

def test_lengths_come_from_each_format():
    detailed, = file_lengths(next((DATA / "vllm").glob("openai-2.0qps-*.json")))
    trace, how = detailed
    assert isinstance(trace, Trace) and how == "per-request lengths in the file"
    assert len(trace.input_tokens) == 15  # the failed request is left out
    assert set(trace.input_tokens) == {1024} and set(trace.output_tokens) == {128}
    totals, how = file_lengths(next((DATA / "vllm").glob("openai-32.0qps-*.json")))[0]
    assert how.startswith("mean lengths from the file's totals")
    assert (totals.input_p50, totals.input_p95, totals.output_p95) == (1024, 1024, 128)
    appended = file_lengths(next((DATA / "vllm_concurrency").glob("*.json")))
    assert len(appended) == 2 and all(src is not None for src, _ in appended)
    for folder in sorted((DATA / "aiperf").iterdir()):
        for f in sorted(folder.iterdir()):
            src, how = file_lengths(f)[0]
            assert (src.input_p50, src.output_p95) == (1024, 128), f


def test_given_lengths_replace_the_files_and_missing_ones_are_refused(tmp_path):
    cases = build_cases([str(DATA / "vllm")], LognormalLengths(500, 900, 50, 90), 40, 0)
    assert [c.point.value for c in cases] == [2.0, 8.0, 16.0, 32.0]
    assert all(c.lengths == "given on the command line" for c in cases)
    assert cases[0].requests.input_tokens.max() <= 900 * 3
    assert len(cases[0].requests) == 15 and len(cases[1].requests) == 40  # own count, capped
    # a trace gives lengths only: each point keeps the benchmark's arrivals (its rate and CV)
    trace = read_trace(DATA.parent / "azure_llm_trace_sample.csv")
    assert trace.arrival_s is not None
    cases = build_cases([str(DATA / "vllm")], trace, 40, 0)
    assert all(c.requests.trace_gaps_s is None for c in cases)
    cycled = trace.input_tokens[np.arange(40) % len(trace.input_tokens)]  # 5 rows, replayed
    assert list(cases[1].requests.input_tokens) == list(cycled)
    doc = json.loads(next((DATA / "vllm").glob("openai-16.0qps-*.json")).read_text())
    for key in ("total_input_tokens", "total_output_tokens"):
        doc.pop(key)
    (tmp_path / "r.json").write_text(json.dumps(doc))
    with pytest.raises(RidgelineError, match="no request lengths in it.*--input-p95"):
        build_cases([str(tmp_path / "r.json")], None, 40, 0)


# -- the predictor -------------------------------------------------------------------------------

def test_overheads_added_to_a_step_model_equal_the_engines_step_model(llama):
    """What calibrate simulates for a candidate (s, o) is what `simulate --engine` runs."""
    spec, hw, sched = llama
    base = load_engine("vllm")
    reqs = make_requests(LENGTHS, 80, seed=4)
    cand = base.with_values(step_overhead_us=420.0, request_overhead_us=1500.0)
    fast = WithOverheads(StepModel(spec, BF16, hw, engine=base), cand)
    full = StepModel(spec, BF16, hw, engine=cand)
    for load in (OpenLoop(12.0), ClosedLoop(6)):
        a, b = simulate(fast, sched, reqs, load), simulate(full, sched, reqs, load)
        for name in ("ttft_s", "itl_s", "e2e_s", "tpot_s"):
            for st in ("mean", "p50", "p99"):
                assert getattr(a, name).get(st) == pytest.approx(getattr(b, name).get(st),
                                                                 rel=1e-9)
        assert a.steps == b.steps


def test_weighted_median_and_folds():
    assert weighted_median([3.0, 1.0, 2.0], [1, 1, 1]) == 2.0
    assert weighted_median([1.0, 10.0], [1, 5]) == 10.0
    assert folds_of(7) == [[0, 5], [1, 6], [2], [3], [4]]
    assert folds_of(3) == [[0], [1], [2]]
    assert all(sorted(sum(folds_of(n), [])) == list(range(n)) for n in range(3, 12))


# -- recovering known overheads --------------------------------------------------------------------

def test_recovers_a_known_step_and_request_overhead(tmp_path, llama):
    """Results the simulator wrote with s = 800 us, o = 3 ms (vLLM JSON, open loop): calibrate
    finds both within a few percent, and its held-out error is far below the error before."""
    truth = load_engine("vllm").with_values(step_overhead_us=800.0, request_overhead_us=3000.0)
    simulated_engine_results(tmp_path, llama, truth,
                             [OpenLoop(r) for r in (2.0, 5.0, 9.0, 14.0, 20.0)])
    result = calibrate_from_values(values(), [str(tmp_path)], ["ridgeline", "calibrate"])
    fitted = result.fitted()
    assert fitted["step_overhead_us"] == pytest.approx(800.0, rel=0.03)
    assert fitted["request_overhead_us"] == pytest.approx(3000.0, rel=0.05)
    assert result.k == 5 and len(result.points) == 5
    assert result.error_after < 0.01 < 0.05 < result.error_before
    for f in result.folds:  # every fold's fit on the other four finds it too
        assert f["step_overhead_us"] == pytest.approx(800.0, rel=0.05)
    # the engine file: versioned, with provenance, read back by --engine
    doc = result.engine_document()
    assert doc["kind"] == "ridgeline-engine" and doc["schema_version"] == 1
    assert doc["fit"]["error_before"] == result.error_before
    assert doc["fit"]["error_after"] == result.error_after
    prov = doc["provenance"]
    assert prov["model"]["name"] == load_model(MODEL).name and prov["tp"] == 1
    assert len(prov["inputs"]) == 5 and all(len(i["sha256"]) == 64 for i in prov["inputs"])
    assert prov["base_engine"]["name"] == "vllm"
    path = tmp_path / "engine.json"
    path.write_text(json.dumps(doc))
    back = read_engine_file(path)
    assert back.step_overhead_us == fitted["step_overhead_us"]
    assert back.allreduce == "one_shot"  # the base engine's fields are kept
    assert "ridgeline calibrate" in back.sources["step_overhead_us"]
    assert "step_overhead_us" not in back.unsourced()


def test_closed_loop_results_recover_the_overheads(tmp_path, llama):
    """AIPerf exports at fixed concurrency: the request overhead also stretches each client's
    cycle (it changes the load), and the fit still finds both."""
    truth = load_engine("sglang").with_values(step_overhead_us=500.0, request_overhead_us=4000.0)
    simulated_engine_results(tmp_path, llama, truth, [ClosedLoop(c) for c in (1, 3, 6, 12)])
    result = calibrate_from_values(values(engine="sglang"), [str(tmp_path)])
    assert result.fitted()["step_overhead_us"] == pytest.approx(500.0, rel=0.05)
    assert result.fitted()["request_overhead_us"] == pytest.approx(4000.0, rel=0.1)
    assert result.k == 4 and result.error_after < 0.02
    assert {p["tool"] for p in result.points} == {"AIPerf"}
    assert all(p["load"] == "concurrency" for p in result.points)


def test_too_few_points_is_refused_in_one_line(tmp_path):
    files = sorted((DATA / "vllm").glob("*.json"))[:MIN_POINTS - 1]
    with pytest.raises(RidgelineError, match=f"at least {MIN_POINTS} measured points"):
        calibrate_from_values(values(), [str(f) for f in files])


def test_every_compared_statistic_is_a_measured_field():
    from ridgeline.sizing.simulation.measured import LATENCIES, STATS

    assert {m for m, _ in COMPARED} <= set(LATENCIES) and {s for _, s in COMPARED} <= set(STATS)


def test_predictor_error_is_the_mean_relative_error(llama):
    spec, hw, sched = llama
    cases = build_cases([str(DATA / "vllm")], None, 30, 0)
    pred = Predictor(StepModel(spec, BF16, hw), sched, cases, load_engine("none"))
    p = pred.predicted(1, 0.0, 0.0)
    meas = cases[1].measured
    want = np.mean([abs(p[k] - meas[k]) / meas[k] for k in meas])
    assert pred.error(1, 0.0, 0.0) == pytest.approx(want)
    # o shifts TTFT and E2E only, by itself, in an open loop
    q = pred.predicted(1, 0.0, 5000.0)
    for (m, st), v in q.items():
        assert v == pytest.approx(p[(m, st)] + (0.005 if m in ("ttft_s", "e2e_s") else 0.0))
