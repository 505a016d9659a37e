"""Fleet: replicas, GPUs, N+1, cost per token and the circuit-breaker depth.

    usable RPS per replica = C_op / E2E(C_op)                   Little's law (field guide §8.3)
    replicas   = ceil(peak RPS x (1 + headroom) / usable RPS per replica)       (§8.3 step 3)
                 (and, for a fleet-wide in-flight target, >= ceil(in flight / C_op))
    GPUs       = replicas x TP x PP x safety factor, rounded up to whole replicas:
                 ceil(replicas x safety) x TP x PP                               (§8.3, §9.1 #11)
    N+1        = + redundancy replicas (a failure domain; N+2 for critical workloads)
    cost / 1M output tokens = $/GPU-hour x GPUs per replica
                              / (output tokens/s per replica x 3600 x utilization) x 1e6   (§9.2)
    queue depth = max queue wait x arrival rate; breaker trips at a fraction of it  (§9.4)
                 max wait defaults to the TTFT SLO minus the predicted service time
                 (prefill + one decode step), the wait the SLO still allows
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ridgeline.sizing.serving import ServingPoint
from ridgeline.sizing.workload import SLO, FleetOptions, Workload


@dataclass
class FleetPlan:
    feasible: bool
    reason: str = ""
    usable_rps_per_replica: float | None = None
    demand_rps: float | None = None
    fleet_concurrency: float | None = None
    replicas_for_rps: int | None = None
    replicas_for_concurrency: int | None = None
    replicas: int | None = None
    safety_factor: float = 1.2
    replicas_with_safety: int | None = None
    gpus_per_replica: int | None = None
    gpus: int | None = None
    redundancy: int = 1
    replicas_deployed: int | None = None
    gpus_deployed: int | None = None
    output_tokens_per_s_per_replica: float | None = None
    gpu_hourly: float | None = None
    utilization: float = 1.0
    cost_per_1m_output_tokens: float | None = None
    fleet_cost_per_hour: float | None = None
    cost_per_1m_output_tokens_at_peak: float | None = None
    max_queue_wait_s: float | None = None
    queue_depth_fleet: float | None = None
    queue_depth_per_replica: float | None = None
    breaker_threshold_fleet: int | None = None
    breaker_threshold_per_replica: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fleet_plan(point: ServingPoint | None, tp: int, pp: int, workload: Workload, slo: SLO,
               opts: FleetOptions, fleet_concurrency: float | None) -> FleetPlan:
    """Fleet size and economics from one replica's operating point (None: infeasible)."""
    if point is None or point.concurrency < 1 or point.rps <= 0:
        return FleetPlan(False, "no concurrency meets the SLO on one replica: no fleet size",
                         safety_factor=opts.safety_factor, redundancy=opts.redundancy,
                         utilization=slo.utilization, gpu_hourly=slo.gpu_hourly)
    per = tp * pp
    f = FleetPlan(True, safety_factor=opts.safety_factor, redundancy=opts.redundancy,
                  utilization=slo.utilization, gpu_hourly=slo.gpu_hourly, gpus_per_replica=per,
                  usable_rps_per_replica=point.rps,
                  output_tokens_per_s_per_replica=point.output_tokens_per_s)
    grow = 1 + workload.headroom
    needs = []
    if workload.peak_rps is not None:
        f.demand_rps = workload.peak_rps * grow
        f.replicas_for_rps = int(math.ceil(f.demand_rps / point.rps - 1e-9))
        needs.append(f.replicas_for_rps)
    if fleet_concurrency is not None:
        f.fleet_concurrency = fleet_concurrency * grow
        f.replicas_for_concurrency = int(math.ceil(f.fleet_concurrency / point.concurrency - 1e-9))
        needs.append(f.replicas_for_concurrency)
    if not needs:
        f.notes.append("no fleet-wide load given (--peak-rps or --users): sized as one replica")
        needs.append(1)
    f.replicas = max(1, *needs)
    f.replicas_with_safety = int(math.ceil(f.replicas * opts.safety_factor - 1e-9))
    f.gpus = f.replicas_with_safety * per
    f.replicas_deployed = f.replicas_with_safety + opts.redundancy
    f.gpus_deployed = f.replicas_deployed * per
    if slo.gpu_hourly is not None and point.output_tokens_per_s > 0:
        f.cost_per_1m_output_tokens = (slo.gpu_hourly * per
                                       / (point.output_tokens_per_s * 3600 * slo.utilization) * 1e6)
        f.fleet_cost_per_hour = slo.gpu_hourly * f.gpus_deployed
        if f.demand_rps:
            out_per_s = workload.peak_rps * workload.output_p50
            f.cost_per_1m_output_tokens_at_peak = f.fleet_cost_per_hour / (out_per_s * 3600) * 1e6
        if slo.utilization == 1.0:
            f.notes.append("cost at 100% utilization: pass --utilization (fleets typically "
                           "average 30-60%, field guide §9.2)")
    # circuit breaker (§9.4)
    service = point.prefill_p95_s + point.decode_step_p95_s
    wait = opts.max_queue_wait_s
    if wait is None and slo.ttft_s is not None:
        wait = max(0.0, slo.ttft_s - service)
    if wait is not None:
        f.max_queue_wait_s = wait
        rate = f.demand_rps if f.demand_rps is not None else point.rps * f.replicas_with_safety
        f.queue_depth_fleet = wait * rate
        f.queue_depth_per_replica = wait * rate / f.replicas_with_safety
        f.breaker_threshold_fleet = int(math.floor(opts.breaker_fraction * f.queue_depth_fleet))
        f.breaker_threshold_per_replica = int(math.floor(opts.breaker_fraction *
                                                         f.queue_depth_per_replica))
    return f
