"""Fleet: replicas with safety and N+1, memory at the provisioned load, prices, bounds."""

import math

import pytest

from ridgeline.errors import RidgelineError
from ridgeline.sizing.hardware import hardware_from_gpu_name
from ridgeline.sizing.models import load_model
from ridgeline.sizing.plan import PlanInputs, PlanMethod, make_plan
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.workload import SLO, FleetOptions, Workload

H100 = hardware_from_gpu_name("h100-sxm")
SLO_CHAT = SLO(ttft_s=2.0, itl_s=0.05, gpu_hourly=2.5, utilization=0.5)


def small_plan(peak_rps=1.0, headroom=0.2, fast=True, **fleet):
    """Llama-3.1-8B on one H100: one replica serves ~35 RPS, so 1 RPS is a small fleet.
    The closed forms by default: these tests check the fleet's arithmetic, not the curve."""
    work = Workload(input_p95=1000, output_p95=200, peak_rps=peak_rps, headroom=headroom)
    return make_plan(PlanInputs(spec=load_model("llama-3.1-8b"), precision=Precision(),
                                workload=work, slo=SLO_CHAT, fleet=FleetOptions(**fleet),
                                method=PlanMethod(fast=fast)), H100)


def test_a_load_one_replica_holds_many_times_over_is_one_replica_plus_one():
    f = small_plan()["fleet"]
    assert f["usable_rps_per_replica"] > 4 * 1.2 * 1.2      # one replica holds it 4x over
    assert f["replicas_needed"] == pytest.approx(1.2 / f["usable_rps_per_replica"])
    # safety multiplies the capacity needed, then whole replicas: ceil(0.04 x 1.2) = 1, not 2
    assert f["replicas_with_safety"] == 1
    assert f["replicas_deployed"] == 2 and f["gpus_deployed"] == 2   # N+1
    simulated = small_plan(fast=False)["fleet"]  # the simulated curve rounds the same way
    assert simulated["method"] == "simulated" and simulated["replicas_deployed"] == 2


def test_safety_applies_to_the_load_before_rounding():
    f = small_plan(peak_rps=300.0, headroom=0.0, safety_factor=1.5)["fleet"]
    need = 300.0 / f["usable_rps_per_replica"]
    assert f["replicas"] == math.ceil(need)
    assert f["replicas_with_safety"] == math.ceil(need * 1.5)
    assert f["gpus"] == f["replicas_with_safety"] * f["gpus_per_replica"]
    assert f["replicas_deployed"] == f["replicas_with_safety"] + 1


def test_memory_section_holds_the_load_the_fleet_is_sized_for():
    pl = small_plan(peak_rps=100.0, headroom=0.2)
    raw = pl["workload"]["fleet_concurrency"]
    assert pl["fleet"]["fleet_concurrency"] == pytest.approx(raw * 1.2)
    assert pl["memory"]["concurrency"] == math.ceil(pl["fleet"]["fleet_concurrency"] - 1e-9)
    assert pl["memory"]["concurrency"] > math.ceil(raw)


def test_input_output_and_blended_prices_split_the_gpu_time():
    pl = small_plan(peak_rps=100.0)
    f, op = pl["fleet"], pl["operating_point"]
    hourly = 2.5 * f["gpus_per_replica"] / 0.5          # $ per replica-hour at 50% utilization
    rho = op["prefill_share"]
    in_tps, out_tps = op["rps"] * 1000, op["rps"] * 200
    assert f["cost_per_1m_input_tokens"] == pytest.approx(hourly * rho / (in_tps * 3600) * 1e6)
    assert f["cost_per_1m_output_tokens"] == pytest.approx(hourly * (1 - rho) / (out_tps * 3600)
                                                           * 1e6)
    # blended: every token at the workload's own mix, input:output = 1000:200
    assert f["blended_input_per_output"] == pytest.approx(5.0)
    assert f["cost_per_1m_blended_tokens"] == pytest.approx(hourly / ((in_tps + out_tps) * 3600)
                                                            * 1e6)
    total = f["cost_per_1m_input_tokens"] * 1000 + f["cost_per_1m_output_tokens"] * 200
    assert total == pytest.approx(f["cost_per_1m_blended_tokens"] * 1200)


def test_an_absurd_load_is_refused_in_one_line():
    with pytest.raises(RidgelineError, match="GPUs") as exc:
        small_plan(peak_rps=1e12)
    assert "\n" not in str(exc.value)
    assert small_plan(peak_rps=1e4)["fleet"]["gpus_deployed"] < 1000   # a big fleet is fine
