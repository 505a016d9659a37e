"""Fleet: replicas, GPUs, N+1, cost per token and the circuit-breaker depth.

    usable RPS per replica = C_op / E2E(C_op)                   Little's law (field guide §8.3)
    load       = peak RPS x (1 + headroom), and/or requests in flight x (1 + headroom)
                 (users x duty cycle, or peak RPS x E2E: 11-step method, step 3)
    needed     = load / usable RPS per replica (or in flight / C_op; the larger), fractional;
                 with only --concurrency per replica: concurrency / C_op
    replicas with safety = ceil(needed x safety factor)                          (§8.3 step 3)
                 the safety buffer is capacity on top of the load (§8.3: 20-50%), applied
                 before rounding: a load one replica holds 4x over is one replica, not
                 ceil(1 x 1.2) = 2
    GPUs       = replicas with safety x TP x PP;  N+1: + redundancy replicas deployed
    cost       GPU time split by what the replica spends it on (rho = prefill share, §6.3):
                 $ per 1M input  = $/replica-hour x rho       / (input tokens/s  x 3600) x 1e6
                 $ per 1M output = $/replica-hour x (1 - rho) / (output tokens/s x 3600) x 1e6
                 $ per 1M blended = $/replica-hour / ((input + output) tokens/s x 3600) x 1e6,
                 every token counted alike at the workload's own mix of I50 input to O50 output
                 tokens per request (the ratio is reported); $/replica-hour = $/GPU-hour x
                 GPUs per replica / utilization (§9.2)
    queue depth = max queue wait x arrival rate; breaker trips at a fraction of it  (§9.4)
                 max wait defaults to the TTFT SLO minus the predicted service time
                 (prefill + one decode step), the wait the SLO still allows

A fleet over MAX_FLEET_GPUS is refused: see there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ridgeline.errors import RidgelineError
from ridgeline.sizing.serving import ServingPoint
from ridgeline.sizing.workload import SLO, FleetOptions, Workload

# The largest GPU deployments announced by 2025 hold a few 10^5 GPUs. A plan several
# times that size is almost surely a unit slip (requests per day typed as per second is
# 86,400x), so it is refused with the count rather than printed as if it were a plan.
MAX_FLEET_GPUS = 1_000_000


@dataclass
class FleetPlan:
    feasible: bool
    safety_factor: float
    redundancy: int
    utilization: float
    gpu_hourly: float | None
    reason: str = ""
    usable_rps_per_replica: float | None = None
    demand_rps: float | None = None
    fleet_concurrency: float | None = None     # requests in flight, headroom included
    replicas_for_rps: int | None = None
    replicas_for_concurrency: int | None = None
    replicas_needed: float | None = None       # fractional, before safety
    replicas: int | None = None                # ceil(replicas_needed)
    replicas_with_safety: int | None = None
    gpus_per_replica: int | None = None
    gpus: int | None = None
    replicas_deployed: int | None = None
    gpus_deployed: int | None = None
    output_tokens_per_s_per_replica: float | None = None
    input_tokens_per_s_per_replica: float | None = None
    cost_per_1m_input_tokens: float | None = None
    cost_per_1m_output_tokens: float | None = None
    cost_per_1m_blended_tokens: float | None = None
    blended_input_per_output: float | None = None    # input tokens per output token (I50 / O50)
    fleet_cost_per_hour: float | None = None
    cost_per_1m_blended_tokens_at_peak: float | None = None
    breaker_fraction: float | None = None
    max_queue_wait_s: float | None = None
    queue_depth_fleet: float | None = None
    queue_depth_per_replica: float | None = None
    breaker_threshold_fleet: int | None = None
    breaker_threshold_per_replica: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fleet_in_flight(workload: Workload, point: ServingPoint | None) -> tuple[float | None, str]:
    """Fleet-wide requests in flight before headroom, and where the number comes from."""
    if workload.concurrency is not None:
        return None, "given, per replica"
    if workload.users is not None:
        return workload.users * (workload.duty_cycle or 1.0), "users x duty cycle (fleet)"
    if workload.peak_rps is not None and point is not None:
        return workload.peak_rps * point.e2e_s, "Little's law: peak RPS x predicted E2E (fleet)"
    return None, "operating point (no load given)"


def fleet_plan(point: ServingPoint | None, tp: int, pp: int, workload: Workload, slo: SLO,
               opts: FleetOptions) -> FleetPlan:
    """Fleet size and economics from one replica's operating point (None: infeasible)."""
    grow = 1 + workload.headroom
    f = FleetPlan(False, opts.safety_factor, opts.redundancy, slo.utilization, slo.gpu_hourly)
    in_flight, _ = fleet_in_flight(workload, point)
    if in_flight is not None:
        f.fleet_concurrency = in_flight * grow
    if point is None or point.concurrency < 1 or point.rps <= 0:
        f.reason = "no concurrency meets the SLO on one replica: no fleet size"
        return f
    per = tp * pp
    f.feasible, f.gpus_per_replica, f.usable_rps_per_replica = True, per, point.rps
    f.output_tokens_per_s_per_replica = point.output_tokens_per_s
    f.input_tokens_per_s_per_replica = point.rps * workload.input_p50
    needs = []
    if workload.peak_rps is not None:
        f.demand_rps = workload.peak_rps * grow
        needs.append(f.demand_rps / point.rps)
        f.replicas_for_rps = ceil_count(needs[-1])
    if f.fleet_concurrency is not None:
        needs.append(f.fleet_concurrency / point.concurrency)
        f.replicas_for_concurrency = ceil_count(needs[-1])
    if not needs:
        f.notes.append("no fleet-wide load given (--peak-rps or --users): sized for the "
                       "--concurrency target")
        needs.append((workload.concurrency or point.concurrency) / point.concurrency)
    f.replicas_needed = max(needs)
    f.replicas = max(1, ceil_count(f.replicas_needed))
    f.replicas_with_safety = max(1, ceil_count(f.replicas_needed * opts.safety_factor))
    f.gpus = f.replicas_with_safety * per
    f.replicas_deployed = f.replicas_with_safety + opts.redundancy
    f.gpus_deployed = f.replicas_deployed * per
    if f.gpus_deployed > MAX_FLEET_GPUS:
        load = "--peak-rps" if workload.peak_rps is not None else "--users x --duty-cycle"
        raise RidgelineError(f"the load needs {f.gpus_deployed:,} GPUs ({f.replicas_deployed:,} "
                             f"replicas of {per}), over the {MAX_FLEET_GPUS:,} this planner "
                             f"sizes (the largest deployments hold a few 100,000): check {load} "
                             "(per second, not per day?)")
    _cost(f, point, workload, slo, per)
    _breaker(f, point, slo, opts)
    return f


def ceil_count(x: float) -> int:
    """Whole replicas for a fractional need (a hair of float noise does not add one)."""
    return int(math.ceil(x - 1e-9))


def _cost(f: FleetPlan, point: ServingPoint, workload: Workload, slo: SLO, per: int) -> None:
    if slo.gpu_hourly is None or point.output_tokens_per_s <= 0:
        return
    replica_hourly = slo.gpu_hourly * per / slo.utilization
    rho = point.prefill_share
    in_tps, out_tps = f.input_tokens_per_s_per_replica, point.output_tokens_per_s
    f.cost_per_1m_input_tokens = replica_hourly * rho / (in_tps * 3600) * 1e6
    f.cost_per_1m_output_tokens = replica_hourly * (1 - rho) / (out_tps * 3600) * 1e6
    f.cost_per_1m_blended_tokens = replica_hourly / ((in_tps + out_tps) * 3600) * 1e6
    f.blended_input_per_output = workload.input_p50 / workload.output_p50
    f.fleet_cost_per_hour = slo.gpu_hourly * f.gpus_deployed
    if f.demand_rps:
        peak_tps = workload.peak_rps * (workload.input_p50 + workload.output_p50)
        f.cost_per_1m_blended_tokens_at_peak = f.fleet_cost_per_hour / (peak_tps * 3600) * 1e6
    if slo.utilization == 1.0:
        f.notes.append("cost at 100% utilization: pass --utilization (fleets typically "
                       "average 30-60%, field guide §9.2)")


def _breaker(f: FleetPlan, point: ServingPoint, slo: SLO, opts: FleetOptions) -> None:
    """Safe queue depth and the circuit-breaker threshold (field guide §9.4)."""
    service = point.prefill_p95_s + point.decode_step_p95_s
    wait = opts.max_queue_wait_s
    if wait is None and slo.ttft_s is not None:
        wait = max(0.0, slo.ttft_s - service)
    if wait is None:
        return
    f.max_queue_wait_s, f.breaker_fraction = wait, opts.breaker_fraction
    rate = f.demand_rps if f.demand_rps is not None else point.rps * f.replicas_with_safety
    f.queue_depth_fleet = wait * rate
    f.queue_depth_per_replica = wait * rate / f.replicas_with_safety
    f.breaker_threshold_fleet = int(math.floor(opts.breaker_fraction * f.queue_depth_fleet))
    f.breaker_threshold_per_replica = int(math.floor(opts.breaker_fraction *
                                                     f.queue_depth_per_replica))
