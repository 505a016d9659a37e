"""ridgeline.api: the stable surface notebooks and tools call; plain dataclasses out, no torch."""

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from profile_fixtures import synthetic_profile

from ridgeline import api
from ridgeline.roofline.profile import json_safe
from ridgeline.sizing.latency import decode_step_time, prefill_time
from ridgeline.sizing.precision import Precision

ROOT = Path(__file__).resolve().parents[1]


def write_profile(path):
    return str(synthetic_profile(path, name="Test GPU"))


@pytest.fixture(scope="module")
def h100():
    return api.load_gpu("h100-sxm")


def test_importing_the_api_imports_no_torch():
    code = textwrap.dedent("""
        import sys
        import ridgeline.api as api
        api.plan("tiny", "h100-sxm", api.Workload(input_p95=64, output_p95=8, concurrency=2))
        print(sorted(m for m in ("torch", "triton") if m in sys.modules))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_the_stable_names_exist():
    for name in api.__all__:
        assert hasattr(api, name), name


def test_gpus_from_a_datasheet_or_a_measured_profile(h100, tmp_path):
    sheet = api.load_gpu("h100-sxm", derate=False)
    assert (sheet.source, sheet.bandwidth_GBps, sheet.memory_bytes) == ("datasheet", 3350,
                                                                        85_899_345_920)
    # by default x the published achievable fractions, and the notes say so
    assert h100.source == "datasheet" and h100.bandwidth_GBps < 3350
    assert h100.peak_TFLOPS["bf16"] < sheet.peak_TFLOPS["bf16"] == 989.4
    assert any(n.startswith("derated: ") for n in h100.notes)
    assert any("DATASHEET" in w for w in h100.warnings)
    gpu = api.load_profile(write_profile(tmp_path / "p.json"))
    assert (gpu.source, gpu.name, gpu.peak_TFLOPS["bf16"]) == ("measured", "Test GPU", 700.0)
    with pytest.raises(api.RidgelineError, match="unknown GPU 'gb200'"):
        api.load_gpu("gb200")


@pytest.mark.parametrize("hf_id, bundled, window", [
    ("meta-llama/Meta-Llama-3-8B", "llama-3.1-8b", 8192),
    ("meta-llama/Llama-2-7b-chat-hf", "llama-2-7b", 4096),
    ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.1-70b", 131072),
])
def test_hf_ids_map_to_bundled_shapes_with_a_note(hf_id, bundled, window):
    m = api.load_model(hf_id)
    ref = api.load_model(bundled)
    assert m.params == ref.params and m.layers == ref.layers and m.context_window == window
    assert len(m.notes) == 1 and hf_id in m.notes[0] and bundled in m.notes[0]
    assert ref.notes == ()


def test_models_from_a_config_file_or_folder(tmp_path):
    cfg = json.loads((ROOT / "ridgeline/data/models/llama-3.1-8b.json").read_text())
    folder = tmp_path / "my-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    for where in (folder, folder / "config.json"):
        m = api.load_model(str(where))
        assert m.name == "my-llama" and m.params == api.load_model("llama-3.1-8b").params


def test_steps_are_the_planners_step_times(h100):
    m = api.load_model("llama-3.1-8b")
    step = api.decode_step(m, h100, batch=16, context_tokens=2000, precision="fp8")
    fp8 = Precision("fp8", "fp8", "bf16")          # auto: W8A8 on H100, 16-bit KV
    assert step.precision["gemm_dtype"] == "fp8" and step.precision["kv_cache"] == "bf16"
    assert step.time_s == decode_step_time(m.spec, fp8, h100.hardware, 16, 2000).time_s
    first = api.prefill("llama-3.1-8b", "h100-sxm", input_tokens=4096, tp=2)
    assert first.time_s == prefill_time(m.spec, Precision(), h100.hardware, 1, 4096, tp=2,
                                        max_batched_tokens=8192).time_s
    assert first.allreduce_source == "datasheet" and first.tokens == 4096
    a100 = api.decode_step(m, "a100-sxm4", batch=1, context_tokens=10,
                           precision=api.PrecisionOptions(weights="fp8", kv="fp8"))
    assert a100.precision["gemm_dtype"] == "bf16" and a100.precision["kv_cache"] == "fp8"
    assert any("weight-only" in n for n in a100.notes)


def test_static_batch_and_serving_point(h100):
    run = api.static_batch("llama-3.1-8b", h100, batch=8, input_len=1000, output_len=50)
    assert run.tokens_per_s == pytest.approx(8 * 50 / run.latency_s) and run.basis == "datasheet"
    point = api.serving_point("llama-3.1-8b", h100, concurrency=16, input_p95=2000,
                              output_p95=300, input_p50=1000, output_p50=100)
    assert point.concurrency == 16 and point.rps * point.e2e_s == pytest.approx(16, rel=1e-6)


def test_static_batch_takes_the_serving_engine(h100):
    """None keeps the hardware-alone numbers; a preset name or an EngineProfile prices every
    step with it (as prefill and simulate do) and adds its request overhead once."""
    kw = dict(batch=4, input_len=512, output_len=30, parallel=api.ParallelOptions(tp=2))
    bare = api.static_batch("llama-3.1-8b", h100, **kw)
    same = api.static_batch("llama-3.1-8b", h100, serving_engine=None, **kw)
    assert (same.latency_s, same.prefill_s, same.decode_s) == \
        (bare.latency_s, bare.prefill_s, bare.decode_s)
    assert bare.engine_layer["name"] == "none" and bare.request_overhead_s == 0
    slow = api.load_engine("none").with_values(step_overhead_us=500.0,
                                               request_overhead_us=3000.0)
    got = api.static_batch("llama-3.1-8b", h100, serving_engine=slow, **kw)
    # one prefill pass (4 x 512 tokens) and 29 decode steps at 0.5 ms, 3 ms once
    assert got.latency_s == pytest.approx(bare.latency_s + 30 * 500e-6 + 3e-3, rel=1e-12)
    vllm = api.static_batch("llama-3.1-8b", h100, serving_engine="vllm", **kw)
    assert vllm.engine_layer["allreduce"] == "one_shot" and vllm.latency_s < bare.latency_s
    with pytest.raises(api.RidgelineError):
        api.static_batch("llama-3.1-8b", h100, serving_engine="no-such-engine", **kw)


def test_plan_headline_and_detail():
    h100 = api.load_gpu("h100-sxm", derate=False)   # the 100% sheet: the ITL SLO binds
    p = api.plan("llama-3.1-70b", h100,
                 api.Workload(input_p95=8192, output_p95=512, concurrency=50, peak_rps=120),
                 api.SLO(ttft_s=2, itl_s=0.05, gpu_hourly=2.5),
                 precision=api.PrecisionOptions(weights="fp8", kv="fp8"))   # the docs example
    assert p.feasible and p.infeasible is None and p.tp == 4 and p.method == "simulated"
    sim = p.detail["simulation"]
    assert p.usable_rps_per_replica == sim["operating_point"]["rps"]
    assert p.operating_concurrency == sim["operating_point"]["concurrency"]
    assert p.gpus_deployed == p.detail["fleet"]["gpus_deployed"]
    # the closed forms' 240 beside it: prefill-chunk steps make the ITL SLO bind sooner
    assert sim["closed_form_fleet"]["gpus_deployed"] == 240 < p.gpus_deployed
    assert p.cost_per_1m_blended_tokens < p.cost_per_1m_output_tokens
    json.dumps(json_safe(p.to_dict()))
    fast = api.plan("llama-3.1-70b", h100,
                    api.Workload(input_p95=8192, output_p95=512, concurrency=50, peak_rps=120),
                    api.SLO(ttft_s=2, itl_s=0.05, gpu_hourly=2.5),
                    precision=api.PrecisionOptions(weights="fp8", kv="fp8"),
                    method=api.PlanMethod(fast=True))
    assert (fast.method, fast.gpus_deployed, fast.operating_concurrency) == ("closed form", 240, 63)
    assert fast.detail["simulation"] is None
    bad = api.plan("llama-3.1-8b", h100, api.Workload(input_p95=100, output_p95=10,
                                                      concurrency=1), api.SLO(itl_s=1e-6))
    assert not bad.feasible and "ITL" in bad.infeasible and bad.gpus_deployed is None


def test_outputs_are_plain_dataclasses(h100):
    m = api.load_model("tiny")
    for out in (h100, m, api.decode_step(m, h100, batch=1, context_tokens=1),
                api.static_batch(m, h100, batch=1, input_len=4, output_len=2),
                api.serving_point(m, h100, concurrency=1, input_p95=4, output_p95=2)):
        assert dataclasses.is_dataclass(out)
        json.dumps(json_safe(out.to_dict()))


def test_simulate_is_the_commands_curve(h100):
    sim = api.simulate("llama-3.1-8b", h100, api.Workload(input_p95=1024, output_p95=128,
                                                          concurrency=1),
                       api.SLO(ttft_s=0.5), load=api.LoadOptions(rps=(2, 8, 64), requests=300))
    assert dataclasses.is_dataclass(sim) and sim.basis == "datasheet" and sim.tp == 1
    assert (sim.load_kind, sim.loads) == ("rps", (2.0, 8.0, 64.0))
    points = sim.to_dict()["points"]
    assert [set(p["ttft_s"]) for p in points] == [{"mean", "p50", "p95", "p99"}] * 3
    assert sim.operating_load in sim.loads and sim.limit == "TTFT SLO"
    assert sim.summary == sim.to_dict()["summary"]
    json.dumps(json_safe(sim.to_dict()))
    closed = api.simulate("llama-3.1-8b", h100, api.LengthOptions(input_p95=1024, output_p95=128),
                          load=api.LoadOptions(concurrency=(1, 4), requests=100), tp=2)
    assert closed.loads == (1, 4) and closed.tp == 2 and closed.capacity_rps is None
    with pytest.raises(api.RidgelineError, match="no request lengths"):
        api.LengthOptions()


def test_the_serving_engine_layer_is_part_of_the_api():
    """serving_engine: a preset name, a file, or an EngineProfile; None adds nothing."""
    bare = api.decode_step("llama-3.1-8b", "h100-sxm", batch=8, context_tokens=1024)
    slow = api.load_engine("none").with_values(
        step_overhead_us=500.0)
    eng = api.decode_step("llama-3.1-8b", "h100-sxm", batch=8, context_tokens=1024,
                          serving_engine=slow)
    assert eng.time_s == pytest.approx(bare.time_s + 500e-6)
    same = api.decode_step("llama-3.1-8b", "h100-sxm", batch=8, context_tokens=1024,
                           serving_engine="none")
    assert same.time_s == bare.time_s
    with pytest.raises(api.RidgelineError):
        api.decode_step("llama-3.1-8b", "h100-sxm", batch=8, context_tokens=1024,
                        serving_engine="no-such-engine")
