"""The plan: parallelism choice, operating point, fleet equations, properties and budget.

The closed-form tests run with PlanMethod(fast=True) (`--fast`: the equations as written);
the simulated plan (the default) is tested at the end.
"""

import json
import math
import re

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
from ridgeline.sizing.plan import PlanInputs, PlanMethod, infeasible, make_plan
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.serving import ReplicaModel, Shape
from ridgeline.sizing.workload import SLO, FleetOptions, ParallelOptions, Workload

FP8 = Precision("fp8", "fp8", "fp8")
FAST, SIMULATED = PlanMethod(fast=True), PlanMethod()
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
           method=FAST, **work):
    w = dict(input_p95=8192, output_p95=512, concurrency=50, peak_rps=120)
    w.update(work)
    return PlanInputs(spec=load_model(model), precision=precision, workload=Workload(**w), slo=slo,
                      method=method)


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
    from ridgeline.datasheets import achievable_fractions, by_sku

    hw = hardware_from_gpu_name("h100-sxm")
    assert hw.source == "datasheet" and "DATASHEET" in hw.warnings[0]
    # derated by the published fraction kernels reach, never 100% of the sheet
    bw_fraction = achievable_fractions(by_sku("h100-sxm")).bandwidth.fraction
    assert bw_fraction < 1 and hw.model.bandwidth_GBps == pytest.approx(3350 * bw_fraction)
    assert hardware_from_gpu_name("h100-sxm", derate=False).model.bandwidth_GBps == 3350
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


def tiny_inputs(concurrency=None, peak_rps=None, method=FAST):
    return PlanInputs(spec=load_model("tiny"), precision=Precision(),
                      workload=Workload(input_p95=900, output_p95=100, concurrency=concurrency,
                                        peak_rps=peak_rps),
                      slo=SLO(ttft_s=0.05, itl_s=0.002),
                      engine=EngineConfig(max_batched_tokens=256), fleet=FleetOptions(),
                      method=method)


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


# -- --fast: the closed forms, unchanged ----------------------------------------------------

def test_fast_gives_the_closed_form_figures_of_the_docs_example():
    """The docs example's workload on the H100 datasheet at 100% of its peaks (--no-derate),
    as planned before the simulation existed."""
    pl = make_plan(inputs(), hardware_from_gpu_name("h100-sxm", derate=False))
    f = pl["fleet"]
    assert pl["method"] == f["method"] == "closed form" and pl["simulation"] is None
    assert pl["parallelism"]["chosen"]["tp"] == 4
    assert pl["operating_point"]["concurrency"] == 63
    assert f["usable_rps_per_replica"] == pytest.approx(2.4548521632396367, rel=1e-9)
    assert f["replicas_needed"] == pytest.approx(48.882780721767595, rel=1e-9)
    assert (f["replicas_with_safety"], f["gpus_deployed"]) == (59, 240)
    assert [round(f[k], 3) for k in ("cost_per_1m_input_tokens", "cost_per_1m_output_tokens",
                                     "cost_per_1m_blended_tokens")] == [0.093, 0.727, 0.13]


# -- the simulated plan (the default) --------------------------------------------------------

@pytest.fixture(scope="module")
def simulated():
    hw = hardware_from_gpu_name("h100-sxm", derate=False)   # the 100% sheet: the ITL SLO binds
    return make_plan(inputs(method=SIMULATED), hw), make_plan(inputs(), hw)


def test_the_fleet_is_sized_on_the_highest_simulated_load_meeting_the_slo(simulated):
    pl, closed = simulated
    sim, f = pl["simulation"], pl["fleet"]
    assert pl["method"] == f["method"] == "simulated" and sim["basis"] == "datasheet"
    op = sim["operating_point"]
    assert f["usable_rps_per_replica"] == op["rps"]
    assert f["replicas_with_safety"] == math.ceil(120 / op["rps"] * 1.2)
    assert f["gpus_deployed"] == (f["replicas_with_safety"] + 1) * 4
    # TTFT at P99, ITL at --slo-percentile (p95): the operating point meets both ...
    assert (sim["ttft_percentile"], sim["itl_percentile"]) == ("p99", "p95")
    assert op["ttft_s"]["p99"] <= 2.0 and op["itl_s"]["p95"] <= 0.05
    # ... and the next simulated load misses the one that binds (bisected to within 1%)
    loads = [p["rps"] for p in sim["points"]]
    nxt = sim["points"][loads.index(op["rps"]) + 1]
    assert nxt["itl_s"]["p95"] > 0.05 and sim["limit"] == "ITL SLO"
    assert nxt["rps"] - op["rps"] < 0.01 * sim["capacity_rps"]
    # prefill-chunk steps put the pooled P95 ITL far above the closed form's mean-based one
    assert nxt["itl_s"]["p95"] > 4 * closed["operating_point"]["itl_p95_s"]


def test_the_simulated_plan_shows_the_closed_forms_beside_it(simulated):
    pl, closed = simulated
    rows = {r["quantity"]: r for r in pl["simulation"]["differences"]}
    fleet = rows["GPUs deployed (N+redundancy)"]
    assert fleet["closed_form"] == closed["fleet"]["gpus_deployed"] == 240
    assert fleet["simulated"] == pl["fleet"]["gpus_deployed"]
    assert fleet["ratio"] == pytest.approx(fleet["simulated"] / 240)
    assert pl["simulation"]["closed_form_fleet"] == {**closed["fleet"], "method": "closed form"}
    # the sections the simulation does not touch are the closed forms' own
    for key in ("memory", "performance", "operating_point"):
        assert pl[key] == closed[key], key


def test_simulated_and_closed_forms_agree_where_queueing_is_small():
    """A light workload (short prompts, generous SLO): both methods give a usable rate near
    the capacity, within 25%; the simulated operating point carries the SLO's percentiles."""
    hw = hardware_from_gpu_name("h100-sxm")
    base = dict(model="llama-3.1-8b", slo=SLO(ttft_s=5, itl_s=0.5), input_p95=512,
                input_p50=256, output_p95=256, output_p50=128, concurrency=None, peak_rps=100)
    sim = make_plan(inputs(method=SIMULATED, **base), hw)
    fast = make_plan(inputs(**base), hw)
    a, b = sim["fleet"]["usable_rps_per_replica"], fast["fleet"]["usable_rps_per_replica"]
    assert a == pytest.approx(b, rel=0.25)


def test_no_load_meeting_the_slo_is_infeasible_with_the_simulated_reason():
    from dataclasses import replace

    forced = replace(inputs(slo=SLO(ttft_s=0.2, itl_s=0.05), method=SIMULATED),
                     parallel=ParallelOptions(tp=4))
    pl = make_plan(forced, hardware_from_gpu_name("h100-sxm"))
    assert pl["fleet"]["feasible"] is False and pl["simulation"]["feasible"] is False
    why = infeasible(pl)
    assert "simulated at TP=4, the TTFT SLO (200.0 ms at P99) is missed" in why
    assert re.search(r"even at [\d.]+ req/s, 5% of the replica's capacity: TTFT P99 [\d.]+ ms", why)
    closed = make_plan(replace(forced, method=FAST), hardware_from_gpu_name("h100-sxm"))
    assert closed["fleet"]["feasible"] is False and "TTFT p95" in infeasible(closed)


def test_a_layout_missing_the_slo_at_low_load_hands_over_to_a_larger_tp():
    """TTFT 0.45 s at P99: the closed forms' TP=4 prefills an 8,192-token prompt in 0.27 s,
    but at 5% of its capacity one prompt in a hundred waits behind another (P99 0.55 s);
    TP=8 meets it, and the plan says why it moved (on the sheet at 100%: --no-derate)."""
    pl = make_plan(inputs(slo=SLO(ttft_s=0.45, itl_s=0.05), method=SIMULATED, concurrency=10,
                          peak_rps=20), hardware_from_gpu_name("h100-sxm", derate=False))
    chosen, sim = pl["parallelism"]["chosen"], pl["simulation"]
    assert chosen["tp"] == sim["tp"] == 8 and "closed forms chose TP=4" in chosen["reason"]
    (tried,) = sim["tried"]
    assert tried["tp"] == 4 and "TTFT SLO (450.0 ms at P99) is missed" in tried["reason"]
    assert sim["operating_point"]["ttft_s"]["p99"] <= 0.45
    assert pl["fleet"]["gpus_per_replica"] == 8 and pl["memory"]["replica_tp"] == 8


def test_itl_percentile_follows_the_slo_percentile_and_p90_is_checked_at_p95():
    hw = hardware_from_gpu_name("h100-sxm")
    pl = make_plan(inputs("llama-3.1-8b", slo=SLO(itl_s=0.05, percentile="p90"),
                          method=PlanMethod(ttft_percentile="p95", sim_requests=300),
                          input_p95=1000, output_p95=100), hw)
    sim = pl["simulation"]
    assert (sim["ttft_percentile"], sim["itl_percentile"]) == ("p95", "p95")
    assert sim["requests_per_point"] == 300
    assert any("P90 SLO is checked at the simulated P95" in n for n in pl["notes"])
    with pytest.raises(RidgelineError, match="--ttft-percentile must be"):
        PlanMethod(ttft_percentile="p90")
    with pytest.raises(RidgelineError, match="--sim-requests must be"):
        PlanMethod(sim_requests=0)


def test_more_traffic_never_needs_fewer_gpus_simulated():
    hw = hardware_from_profile(profile())
    gpus = [make_plan(tiny_inputs(peak_rps=r, method=PlanMethod(sim_requests=300)),
                      hw)["fleet"]["gpus_deployed"] for r in (1, 300, 30_000)]
    assert gpus == sorted(gpus) and gpus[0] < gpus[-1]


@pytest.mark.benchmark(group="plan")
def test_simulated_plan_benchmark(benchmark):
    hw = hardware_from_gpu_name("h100-sxm")
    benchmark.pedantic(make_plan, (inputs(method=SIMULATED), hw), rounds=1, iterations=1)


def _printed(plan):
    import io

    from rich.console import Console

    from ridgeline.sizing.render import print_plan

    buf = io.StringIO()
    print_plan(plan, Console(file=buf, width=80))
    return buf.getvalue()


def test_the_printed_plan_shows_both_methods(simulated):
    pl, closed = simulated
    text = _printed(pl)
    flat = " ".join(text.split())
    assert "Simulated against closed forms (TP=4, §8.1-8.3) [DATASHEET]" in flat
    assert "operating load (simulated)" in text and "closed forms (--fast): TTFT" in text
    assert re.search(r"GPUs deployed \(N\+redundancy\)\s*│\s*240\s*│\s*308", text)
    assert f"operating load {pl['simulation']['operating_point']['rps']:,.3g} req/s" in flat
    assert max(len(line) for line in text.splitlines()) <= 80
    fast = " ".join(_printed(closed).split())
    assert "Simulated against closed forms" not in fast and "operating concurrency" in fast


def test_the_plan_command_takes_fast(capsys):
    """`ridgeline plan --fast` is the closed forms; without it the simulated fleet. Needs
    sizing.plan_options.build_inputs to pass method=build(PlanMethod, values) to PlanInputs."""
    from ridgeline.cli import main

    argv = ["plan", "--model", "llama-3.1-70b", "--weights", "fp8", "--kv", "fp8",
            "--input-p95", "8192", "--output-p95", "512", "--concurrency", "50",
            "--peak-rps", "120", "--ttft-slo", "2", "--itl-slo", "0.05", "--gpu", "h100-sxm",
            "--no-derate", "--json"]
    assert main([*argv, "--fast"]) == 0
    fast = json.loads(capsys.readouterr().out)
    assert fast["method"] == "closed form" and fast["fleet"]["gpus_deployed"] == 240
    assert main([*argv, "--sim-requests", "500", "--ttft-percentile", "p95"]) == 0
    sim = json.loads(capsys.readouterr().out)["simulation"]
    assert sim["requests_per_point"] == 500 and sim["ttft_percentile"] == "p95"
