"""The engine layer (sizing.engine): presets and their sources, files, and where it enters the
step time, the simulation's TTFT/E2E and the plan (pure, no torch)."""

import json
from pathlib import Path

import pytest

from ridgeline.errors import RidgelineError
from ridgeline.roofline.interconnect import tp_allreduce_time
from ridgeline.sizing.engine import (FIELDS, NO_ENGINE, EngineProfile, entry_of, load_engine,
                                     preset_names, read_engine_file)
from ridgeline.sizing.hardware import hardware_from_gpu_name, hardware_from_profile
from ridgeline.sizing.latency import decode_step_time, prefill_time
from ridgeline.sizing.models import load_model
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.simulation import (ClosedLoop, LognormalLengths, OpenLoop, make_requests,
                                         scheduler_for, simulate)
from ridgeline.sizing.step_model import StepModel

ROOT = Path(__file__).resolve().parents[1]
BF16 = Precision("bf16", "bf16", "bf16")


def profile(eager: bool = True, link: str | None = "nvlink") -> dict:
    """A measured profile with graph and eager overheads and a TP all-reduce fit."""
    model = {"bandwidth_GBps": 3000.0, "latency_floor_us": 3.0, "overhead_us": 2.0,
             "source": "measured",
             "matmul": {"bf16": {"peak_TFLOPS": 700.0, "flops_half": 1e9}}}
    if eager:
        model["overhead"] = {"graph_us": 2.0, "eager_us": 7.0, "used": "graph"}
        model["latency"] = {"graph_us": 3.0, "eager_us": 9.0}
    fit = {"alpha_us": 12.0, "busbw_GBps": 360.0, "source": "measured"}
    if link:
        fit["link"] = link
    return {"provenance": {"device": {"name": "test GPU", "memory_bytes": 80_000_000_000,
                                      "dtypes": {"bf16": True}}},
            "complete": True, "model": model,
            "interconnect": {"allreduce": {str(n): dict(fit) for n in (2, 4, 8)}}}


@pytest.fixture(scope="module")
def hw():
    return hardware_from_profile(profile())


@pytest.fixture(scope="module")
def llama8b():
    return load_model("llama-3.1-8b")


# -- presets and their sources --------------------------------------------------------------------

def test_presets_are_the_data_file_and_every_value_says_its_source():
    doc = json.loads((ROOT / "ridgeline" / "data" / "engines.json").read_text())
    assert preset_names() == [*doc["engines"], "none"] and {"vllm", "sglang", "trtllm"} <= \
        set(doc["engines"])
    for name, entry in doc["engines"].items():
        assert set(entry) - {"description"} == set(FIELDS), name
        for f in FIELDS:
            item = entry[f]
            sources = item["source"] if isinstance(item["source"], list) else \
                [item["source"]] if item["source"] else []
            for s in sources:  # a source is a URL and what it says there
                assert s["url"].startswith("https://") and len(s["says"]) > 20, (name, f)
            if not sources:  # no source: a neutral value, and the note says why
                assert item.get("note"), (name, f)
                neutral = {"step_overhead_us": 0, "request_overhead_us": 0, "allreduce": "nccl",
                           "one_shot_latency_us": {}, "one_shot_max_bytes": {},
                           "cuda_graphs": True, "bandwidth_efficiency": 1.0,
                           "compute_efficiency": 1.0, "allreduce_efficiency": 1.0}
                assert item["value"] == neutral[f], (name, f)
        eng = load_engine(name)
        assert eng.name == name and "engines.json" in eng.source
        assert set(eng.unsourced()) == {f for f in FIELDS if not entry[f]["source"]}


def test_vllm_preset_carries_the_custom_allreduce_rule():
    """vLLM's kernel: one-shot below 512 KiB at TP 4, below 256 KiB at TP 8, every size below
    8 MiB at TP 2 (csrc/custom_all_reduce.cuh); the ~10 us latency of its published table."""
    v = load_engine("vllm")
    assert v.allreduce == "one_shot" and v.cuda_graphs
    assert v.one_shot_max_bytes == {2: 8 * 2**20 - 1, 4: 512 * 1024 - 1, 6: 256 * 1024 - 1,
                                    8: 256 * 1024 - 1}
    assert all(8 < us < 11 for us in v.one_shot_latency_us.values())
    assert load_engine("none") is NO_ENGINE and NO_ENGINE.is_none
    assert load_engine("trtllm").allreduce == "nccl"  # no published one-shot latency


def test_unknown_names_and_bad_files_are_one_line(tmp_path):
    with pytest.raises(RidgelineError, match="unknown engine 'vlm': one of vllm, sglang"):
        load_engine("vlm")
    with pytest.raises(RidgelineError, match="engine file not found"):
        load_engine(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(RidgelineError, match="not an engine file"):
        load_engine(str(bad))
    bad.write_text(json.dumps({"kind": "ridgeline-profile"}))
    with pytest.raises(RidgelineError, match="kind 'ridgeline-engine' expected"):
        load_engine(str(bad))
    doc = {"kind": "ridgeline-engine", "schema_version": 99, "engine": {}}
    bad.write_text(json.dumps(doc))
    with pytest.raises(RidgelineError, match="schema_version 99"):
        load_engine(str(bad))
    for field_, value, match in (("step_overhead_us", -1, ">= 0"),
                                 ("allreduce", "two_shot", "allreduce must be one of"),
                                 ("compute_efficiency", 0, "> 0"),
                                 ("one_shot_max_bytes", {"1": 10}, "TP degrees >= 2"),
                                 ("warp_speed", 2, "unknown field")):
        doc = {"kind": "ridgeline-engine", "schema_version": 1,
               "engine": {field_: {"value": value, "source": None}}}
        bad.write_text(json.dumps(doc))
        with pytest.raises(RidgelineError, match=match):
            load_engine(str(bad))


def test_an_engine_file_round_trips(tmp_path):
    eng = load_engine("vllm").with_values(step_overhead_us=123.0, request_overhead_us=4567.0)
    fitted = {"url": None, "says": "fitted on 5 points"}
    doc = {"kind": "ridgeline-engine", "schema_version": 1, "name": "mine",
           "engine": entry_of(eng, {"step_overhead_us": fitted}),
           "fit": {"error_after": 0.031}}
    path = tmp_path / "engine.json"
    path.write_text(json.dumps(doc))
    back = read_engine_file(path)
    assert back.name == "mine" and "held-out error 3.1%" in back.source
    for f in FIELDS:
        assert getattr(back, f) == getattr(eng, f), f
    assert back.sources["step_overhead_us"] == "fitted on 5 points"
    assert back.sources["one_shot_max_bytes"] == eng.sources["one_shot_max_bytes"]
    assert "request_overhead_us" in back.unsourced()


# -- the step time --------------------------------------------------------------------------------

def test_step_overhead_is_one_latency_op_of_every_step(hw, llama8b):
    eng = EngineProfile(name="t", step_overhead_us=250.0)
    for tp in (1, 2):
        base = decode_step_time(llama8b, BF16, hw, 16, 1000, tp=tp)
        with_e = decode_step_time(llama8b, BF16, hw, 16, 1000, tp=tp, engine=eng)
        assert with_e.time_s == pytest.approx(base.time_s + 250e-6, rel=1e-12)
        op = next(o for o in with_e.ops if o.name == "engine_step")
        assert (op.group, op.bound, op.kernels) == ("engine", "latency", 0)
        assert with_e.breakdown["engine"] == pytest.approx(250e-6)
        assert with_e.kernels == base.kernels and with_e.floor_s == base.floor_s
    # a prefill in 3 passes pays it 3 times; the hardware alone (none) pays nothing
    p0 = prefill_time(llama8b, BF16, hw, 1, 20000, max_batched_tokens=8192)
    p1 = prefill_time(llama8b, BF16, hw, 1, 20000, max_batched_tokens=8192, engine=eng)
    assert p1.time_s == pytest.approx(p0.time_s + 3 * 250e-6, rel=1e-12)
    assert decode_step_time(llama8b, BF16, hw, 16, 1000, engine=NO_ENGINE).time_s == \
        decode_step_time(llama8b, BF16, hw, 16, 1000).time_s


def test_step_model_carries_the_engine_as_the_planner_does(hw, llama8b):
    """body(m) holds the step overhead (cached and interpolated above EXACT_TOKENS); eager
    kernels and efficiencies change the roofline both use."""
    eng = load_engine("vllm").with_values(step_overhead_us=300.0, cuda_graphs=False,
                                          compute_efficiency=0.7, bandwidth_efficiency=0.9)
    for tp in (1, 4):
        sm = StepModel(llama8b, BF16, hw, tp, engine=eng)
        for batch, ctx in ((1, 0), (7, 999), (128, 3000)):
            want = decode_step_time(llama8b, BF16, hw, batch, ctx, tp=tp, engine=eng).time_s
            assert sm.step_s(batch, batch * (ctx + 1)) == pytest.approx(want, rel=1e-12)
            assert sm.decode_steps_s(batch, batch * (ctx + 1), batch, 2)[0] == \
                pytest.approx(want, rel=1e-12)
        want = prefill_time(llama8b, BF16, hw, 1, 5000, tp=tp, engine=eng).time_s
        assert sm.step_s(0, 0, [(5000, 0)], 1) == pytest.approx(want, rel=1e-9)


def test_bandwidth_efficiency_scales_every_dtypes_own_bandwidth(hw):
    from dataclasses import replace

    own = replace(hw, model=replace(hw.model, bandwidth_by_dtype={"bf16": 2000.0}))
    slowed = load_engine("vllm").with_values(bandwidth_efficiency=0.5).hardware(own).model
    assert slowed.bandwidth_for("bf16") == pytest.approx(1000.0)
    assert slowed.bandwidth_GBps == pytest.approx(0.5 * hw.model.bandwidth_GBps)


def test_eager_engine_prices_kernels_at_the_profiles_eager_overhead(llama8b):
    hw = hardware_from_profile(profile())
    graph = load_engine("vllm")
    eager = graph.with_values(cuda_graphs=False)
    assert eager.hardware(hw).model.overhead_us == 7.0
    assert eager.hardware(hw).model.latency_floor_us == 9.0
    assert graph.hardware(hw) is hw
    t_graph = decode_step_time(llama8b, BF16, hw, 1, 100, engine=graph)
    t_eager = decode_step_time(llama8b, BF16, hw, 1, 100, engine=eager)
    # a batch-1 step is hundreds of small kernels: eager pays its overhead on each
    assert t_eager.time_s > t_graph.time_s + t_graph.kernels * 3e-6
    # a profile without eager terms keeps the fitted ones, and says so
    bare = hardware_from_profile(profile(eager=False))
    out = eager.hardware(bare)
    assert out.model.overhead_us == bare.model.overhead_us
    assert any("no eager overhead" in n for n in out.notes)


def test_efficiency_factors_scale_the_ceilings(hw, llama8b):
    eng = EngineProfile(name="slow", bandwidth_efficiency=0.5, compute_efficiency=0.25,
                        allreduce_efficiency=0.5)
    m = eng.hardware(hw).model
    assert m.bandwidth_GBps == 1500.0 and m.peak_TFLOPS["bf16"] == 175.0
    assert hw.model.bandwidth_GBps == 3000.0  # the profile's hardware is left alone
    base = tp_allreduce_time(4096, 8, "bf16", 2, hw.profile)
    assert eng.tp_allreduce(4096, 8, "bf16", 2, hw.profile).time_s == \
        pytest.approx(base.time_s / 0.5)


def test_one_shot_allreduce_and_its_limit(hw):
    """t = latency + (TP - 1) x S / busbw up to the limit; the profile's nccl above it, at a TP
    without a limit, and on PCIe beyond two GPUs."""
    eng = EngineProfile(name="os", allreduce="one_shot", one_shot_latency_us={4: 9.0},
                        one_shot_max_bytes={4: 512 * 1024})
    busbw = 360e9
    for tokens in (1, 32):  # 8 KiB and 256 KiB of bf16 at hidden 4096
        size = tokens * 4096 * 2
        got = eng.tp_allreduce(4096, tokens, "bf16", 4, hw.profile)
        assert got.time_s == pytest.approx(2 * (9e-6 + 3 * size / busbw), rel=1e-9)
        assert got.source == "measured" and "one-shot" in got.detail
    nccl = tp_allreduce_time(4096, 128, "bf16", 4, hw.profile)  # 1 MiB: above the limit
    assert eng.tp_allreduce(4096, 128, "bf16", 4, hw.profile).time_s == nccl.time_s
    assert eng.tp_allreduce(4096, 1, "bf16", 8, hw.profile).time_s == \
        tp_allreduce_time(4096, 1, "bf16", 8, hw.profile).time_s  # no TP=8 limit
    pcie = hardware_from_profile(profile(link="pcie"))
    assert eng.tp_allreduce(4096, 1, "bf16", 4, pcie.profile).time_s == \
        tp_allreduce_time(4096, 1, "bf16", 4, pcie.profile).time_s
    # at small messages one-shot's single step beats the ring's 2(n-1) latency-bound steps
    assert eng.tp_allreduce(4096, 1, "bf16", 4, hw.profile).time_s < \
        tp_allreduce_time(4096, 1, "bf16", 4, hw.profile).time_s


def test_datasheet_one_shot_uses_its_nvlink_estimate(llama8b):
    h100 = hardware_from_gpu_name("h100-sxm")
    vllm = load_engine("vllm")
    one = decode_step_time(llama8b, BF16, h100, 1, 100, tp=4, engine=vllm)
    base = decode_step_time(llama8b, BF16, h100, 1, 100, tp=4)
    assert one.allreduce_s < base.allreduce_s
    big = 512  # 4 MiB messages: above vLLM's TP=4 one-shot limit, so nccl's time
    assert decode_step_time(llama8b, BF16, h100, big, 100, tp=4, engine=vllm).allreduce_s == \
        decode_step_time(llama8b, BF16, h100, big, 100, tp=4).allreduce_s


# -- the simulation: per-request overhead -----------------------------------------------------

@pytest.fixture(scope="module")
def sim_setup(hw, llama8b):
    sched = scheduler_for(llama8b, BF16, hw.memory_bytes)
    reqs = make_requests(LognormalLengths(300, 900, 40, 120), 300, seed=3)
    return sched, reqs


def test_request_overhead_adds_to_ttft_and_e2e_only(hw, llama8b, sim_setup):
    sched, reqs = sim_setup
    o = 0.02
    plain = simulate(StepModel(llama8b, BF16, hw, engine=NO_ENGINE), sched, reqs, OpenLoop(8.0))
    eng = EngineProfile(name="o", request_overhead_us=o * 1e6)
    over = simulate(StepModel(llama8b, BF16, hw, engine=eng), sched, reqs, OpenLoop(8.0))
    for stat in ("mean", "p50", "p95", "p99"):
        assert over.ttft_s.get(stat) == pytest.approx(plain.ttft_s.get(stat) + o, rel=1e-12)
        assert over.e2e_s.get(stat) == pytest.approx(plain.e2e_s.get(stat) + o, rel=1e-12)
        assert over.itl_s.get(stat) == plain.itl_s.get(stat)
        assert over.tpot_s.get(stat) == plain.tpot_s.get(stat)
        assert over.queue_wait_s.get(stat) == plain.queue_wait_s.get(stat)
    assert over.steps == plain.steps  # the engine did the same work
    # Little's law still holds with the overhead in the system time
    assert over.mean_concurrency == pytest.approx(over.request_throughput * over.e2e_s.mean,
                                                  rel=0.02)


def test_a_closed_loop_client_waits_out_the_request_overhead(hw, llama8b, sim_setup):
    sched, reqs = sim_setup
    eng = EngineProfile(name="o", request_overhead_us=50_000.0)
    plain = simulate(StepModel(llama8b, BF16, hw), sched, reqs, ClosedLoop(4))
    over = simulate(StepModel(llama8b, BF16, hw, engine=eng), sched, reqs, ClosedLoop(4))
    assert over.request_throughput < plain.request_throughput
    # each client's cycle is its E2E, which now holds the overhead: throughput = clients / E2E
    assert over.request_throughput == pytest.approx(4 / over.e2e_s.mean, rel=0.03)
    assert over.mean_concurrency == pytest.approx(over.request_throughput * over.e2e_s.mean,
                                                  rel=0.02)


# -- plan and simulate name it and use it -----------------------------------------------------

def test_plan_adds_the_request_overhead_to_ttft_and_names_the_engine(llama8b):
    from ridgeline.sizing.plan import PlanInputs, PlanMethod, make_plan
    from ridgeline.sizing.workload import SLO, Workload

    h100 = hardware_from_gpu_name("h100-sxm")
    base = dict(spec=llama8b, precision=BF16, method=PlanMethod(fast=True),
                workload=Workload(input_p95=2000, output_p95=200, concurrency=8),
                slo=SLO(ttft_s=2.0, itl_s=0.1))
    plain = make_plan(PlanInputs(**base), h100)
    eng = load_engine("sglang").with_values(request_overhead_us=40_000.0)
    over = make_plan(PlanInputs(**base, engine_profile=eng), h100)
    for a, b in zip(plain["performance"]["ttft_vs_input"], over["performance"]["ttft_vs_input"]):
        assert b["ttft_s"] == pytest.approx(a["ttft_s"] + 0.04, rel=1e-9)
    assert over["engine_layer"]["name"] == "sglang"
    assert over["engine_layer"]["request_overhead_us"] == 40_000.0
    assert "engines.json" in over["engine_layer"]["source"]
    assert over["notes"][0].startswith("engine layer: sglang [preset sglang")
    assert plain["engine_layer"]["name"] == "none"
    assert plain["notes"][0].startswith("engine layer: none")
    assert over["operating_point"]["ttft_p95_s"] > plain["operating_point"]["ttft_p95_s"] + 0.039
