"""The plan: parallelism choice, operating point, fleet equations, properties and budget."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ridgeline.sizing.latency as latency
from ridgeline.errors import RidgelineError
from ridgeline.roofline.profile import new_profile
from ridgeline.sizing import hardware as hardware_mod
from ridgeline.sizing.hardware import hardware_from_gpu_name, hardware_from_profile
from ridgeline.sizing.memory import EngineConfig
from ridgeline.sizing.models import load_model
from ridgeline.sizing.plan import PlanInputs, make_plan
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.serving import ReplicaModel, Shape
from ridgeline.sizing.workload import SLO, FleetOptions, Workload

FP8 = Precision("fp8", "fp8", "fp8")
SECTIONS = ("memory", "performance", "parallelism", "operating_point", "fleet")


def profile(memory_bytes=80_000_000_000, bw=3000.0, bf16=720.0, fp8=1350.0, floor_us=3.0,
            busbw=360.0, fp8_ok=True):
    dev = {"name": "Test GPU", "kind": "cuda", "memory_bytes": memory_bytes,
           "dtypes": {"fp32": True, "fp16": True, "bf16": True, "fp8_e4m3": fp8_ok}}
    p = new_profile(dev, command_line=["test"], versions={})
    p["complete"] = True
    p["ceilings"] = {"memory_bandwidth_GBps": {"read": bw},
                     "matmul_TFLOPS": {"bf16": bf16, "fp16": bf16, "fp8_e4m3": fp8}}
    p["model"] = {"bandwidth_GBps": bw, "latency_floor_us": floor_us, "source": "measured",
                  "matmul": {"bf16": {"peak_TFLOPS": bf16, "flops_half": 1e9},
                             "fp16": {"peak_TFLOPS": bf16, "flops_half": 1e9},
                             "fp8_e4m3": {"peak_TFLOPS": fp8, "flops_half": 2e9}}}
    p["interconnect"] = {"allreduce": {str(n): {"alpha_us": 10.0, "busbw_GBps": busbw,
                                                "source": "measured"} for n in (2, 4, 8)}}
    return p


def inputs(model="llama-3.1-70b", precision=FP8, slo=SLO(ttft_s=2.0, itl_s=0.05, gpu_hourly=2.5),
           **work):
    w = dict(input_p95=8192, output_p95=512, concurrency=50, peak_rps=120)
    w.update(work)
    return PlanInputs(spec=load_model(model), precision=precision, workload=Workload(**w), slo=slo)


@pytest.fixture(scope="module")
def plan():
    return make_plan(inputs(), hardware_from_profile(profile()))


def test_every_section_is_labelled_with_its_basis(plan):
    assert plan["basis"] == "measured"
    for key in SECTIONS:
        assert plan[key]["basis"] == "measured", key


def test_memory_section_accounts_kv_at_target_concurrency(plan):
    m = plan["memory"]
    assert m["kv_bytes_per_token"] == 163_840             # fp8: half of 327,680
    assert m["kv_bytes"] == 50 * 8704 * 163_840
    assert m["min_gpus"] == math.ceil(m["total_bytes"] / m["usable_bytes_per_gpu"])


def test_chosen_tp_is_the_lowest_that_fits_and_meets_the_slo(plan):
    rows = plan["parallelism"]["rows"]
    chosen = plan["parallelism"]["chosen"]
    ok = [r for r in rows if r["fits"] and r["meets_slo"]]
    assert ok and (chosen["tp"], chosen["pp"]) == (ok[0]["tp"], ok[0]["pp"])
    assert all(not (r["fits"] and r["meets_slo"]) for r in rows if r["gpus"] < chosen["gpus"])


def test_operating_point_is_the_smaller_axis_and_says_which(plan):
    op = plan["operating_point"]
    cap, perf = op["max_concurrency_capacity"], op["max_concurrency_slo"]
    assert op["concurrency"] == min(cap, perf)
    assert op["binding"].startswith("performance" if perf < cap else "capacity")
    assert op["ttft_p95_s"] <= 2.0 and op["itl_p95_s"] <= 0.05


def test_littles_law_at_the_operating_point(plan):
    op = plan["operating_point"]
    assert op["rps"] * op["e2e_s"] == pytest.approx(op["concurrency"], rel=1e-6)


def test_fleet_equations(plan):
    f, op = plan["fleet"], plan["operating_point"]
    tp = plan["parallelism"]["chosen"]["gpus"]
    assert f["usable_rps_per_replica"] == op["rps"]
    assert f["replicas"] == math.ceil(120 / op["rps"])
    assert f["replicas_with_safety"] == math.ceil(120 / op["rps"] * 1.2)   # safety on the load
    assert f["gpus"] == f["replicas_with_safety"] * tp
    assert f["gpus_deployed"] == (f["replicas_with_safety"] + 1) * tp      # N+1
    tokens_per_s = op["rps"] * 512
    decode_share = 1 - op["prefill_share"]
    assert f["cost_per_1m_output_tokens"] == pytest.approx(2.5 * tp * decode_share
                                                           / (tokens_per_s * 3600) * 1e6)
    wait = 2.0 - (op["prefill_p95_s"] + op["decode_step_p95_s"])
    assert f["queue_depth_fleet"] == pytest.approx(wait * 120)
    assert f["breaker_threshold_fleet"] == math.floor(0.85 * wait * 120)


def test_serving_point_equations():
    spec = load_model("llama-3.1-8b")
    shape = Shape(1000, 2000, 100, 300)
    rm = ReplicaModel(spec, FP8, hardware_from_profile(profile()), shape)
    p = rm.point(64)
    d95, d50 = rm.decode(64, 2300).time_s, rm.decode(64, 1050).time_s
    p95, p50 = rm.prefill(2000).time_s, rm.prefill(1000).time_s
    rho = p.rps * p50
    assert p.prefill_share == pytest.approx(rho)
    assert p.itl_p95_s == pytest.approx(d95 / (1 - rho))
    wait = rho * p50 / (2 * (1 - rho))
    assert p.ttft_p95_s == pytest.approx(wait + p95 + d95)
    assert p.e2e_s == pytest.approx(wait + p50 + d50 / 2 + 100 * d50 / (1 - rho))
    assert p.rps * p.e2e_s == pytest.approx(64, rel=1e-6)


def test_fleet_scope_concurrency_from_littles_law():
    pl = make_plan(inputs(concurrency=None, peak_rps=40), hardware_from_profile(profile()))
    e2e = pl["operating_point"]["e2e_s"]
    assert pl["workload"]["fleet_concurrency"] == pytest.approx(40 * e2e)
    assert pl["memory"]["concurrency"] == math.ceil(40 * e2e)
    assert pl["fleet"]["replicas"] == math.ceil(40 / pl["operating_point"]["rps"] - 1e-9)


def test_users_times_duty_cycle():
    pl = make_plan(inputs(concurrency=None, peak_rps=None, users=2000, duty_cycle=0.05),
                   hardware_from_profile(profile()))
    assert pl["workload"]["fleet_concurrency"] == 100
    assert pl["fleet"]["replicas"] == math.ceil(100 / pl["operating_point"]["concurrency"])


def test_pipeline_parallel_beyond_a_node():
    bf16 = Precision("bf16", "bf16", "bf16")
    pl = make_plan(inputs("llama-3.1-405b", bf16, SLO(), concurrency=8),
                   hardware_from_profile(profile()))
    chosen = pl["parallelism"]["chosen"]
    assert chosen["tp"] == 8 and chosen["pp"] >= 2
    row = next(r for r in pl["parallelism"]["rows"] if r["pp"] == chosen["pp"])
    assert row["pp_bubble"] == pytest.approx((chosen["pp"] - 1) / (chosen["pp"] + chosen["pp"] - 1))


def test_nonsense_is_one_clear_error():
    hw = hardware_from_profile(profile())
    with pytest.raises(RidgelineError, match="fits on no count of GPUs"):
        make_plan(inputs(concurrency=1), hardware_from_profile(profile(memory_bytes=100_000_000)))
    with pytest.raises(RidgelineError, match="context window"):
        make_plan(inputs("llama-2-7b", input_p95=4000, output_p95=512), hw)
    with pytest.raises(RidgelineError, match="not supported"):
        make_plan(inputs(), hardware_from_profile(profile(fp8_ok=False)))
    with pytest.raises(RidgelineError, match="input-p95"):
        Workload(input_p95=-1, output_p95=10, concurrency=1)
    with pytest.raises(RidgelineError, match="no load"):
        Workload(input_p95=10, output_p95=10)


def test_infeasible_slo_is_reported_not_raised():
    pl = make_plan(inputs(slo=SLO(ttft_s=0.001, itl_s=0.05)), hardware_from_profile(profile()))
    assert pl["operating_point"]["concurrency"] == 0
    assert pl["fleet"]["feasible"] is False
    assert any("SLO cannot be met" in w for w in pl["warnings"])


def test_datasheet_fallback_and_reference_profile(monkeypatch):
    hw = hardware_from_gpu_name("h100-sxm")
    assert hw.source == "datasheet" and "DATASHEET" in hw.warnings[0]
    assert hw.model.bandwidth_GBps == 3350
    ref = profile()
    monkeypatch.setattr(hardware_mod, "_bundled_profile",
                        lambda sku: ref if sku == "h100-sxm5-80gb" else None)
    hw = hardware_from_gpu_name("h100-sxm")
    assert hw.source == "reference" and "another machine" in hw.warnings[0]
    pl = make_plan(inputs(), hw)
    assert all(pl[k]["basis"] == "reference" for k in SECTIONS)


def test_a_plan_prices_a_bounded_number_of_steps(monkeypatch):
    """Deterministic stand-in for "well under a second": a step prices in about 0.3 ms."""
    calls = []
    real = latency._step
    monkeypatch.setattr(latency, "_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    make_plan(inputs(), hardware_from_profile(profile()))
    make_plan(inputs("deepseek-v3", concurrency=16), hardware_from_gpu_name("h200"))
    assert len(calls) < 600


@pytest.mark.benchmark(group="plan")
def test_plan_benchmark(benchmark):
    hw = hardware_from_profile(profile())
    benchmark(make_plan, inputs(), hw)


TINY_GPU = 40_000_000  # bytes: the tiny model needs TP as concurrency grows


def tiny_inputs(concurrency=None, peak_rps=None):
    return PlanInputs(spec=load_model("tiny"), precision=Precision(),
                      workload=Workload(input_p95=900, output_p95=100, concurrency=concurrency,
                                        peak_rps=peak_rps),
                      slo=SLO(ttft_s=0.05, itl_s=0.002),
                      engine=EngineConfig(max_batched_tokens=256), fleet=FleetOptions())


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300))
def test_more_concurrency_never_needs_fewer_gpus(c1, c2):
    lo, hi = sorted((c1, c2))
    hw = hardware_from_profile(profile(memory_bytes=TINY_GPU))

    def gpus(c):
        try:
            pl = make_plan(tiny_inputs(concurrency=c), hw)
        except RidgelineError:
            return math.inf   # fits on no count of GPUs
        m = pl["memory"]
        return pl["parallelism"]["chosen"]["gpus"], m["min_gpus"], m["recommended_gpus"]

    a, b = gpus(lo), gpus(hi)
    if a == math.inf:
        assert b == math.inf
    elif b != math.inf:
        assert all(x <= y for x, y in zip(a, b))


@settings(max_examples=12, deadline=None)
@given(st.floats(1, 50_000), st.floats(1, 50_000))
def test_more_traffic_never_needs_fewer_gpus(r1, r2):
    lo, hi = sorted((r1, r2))
    hw = hardware_from_profile(profile())
    a = make_plan(tiny_inputs(peak_rps=lo), hw)["fleet"]["gpus_deployed"]
    b = make_plan(tiny_inputs(peak_rps=hi), hw)["fleet"]["gpus_deployed"]
    assert a <= b
