"""Workload, SLO, fleet and parallelism options: the inputs of a plan, each defined once.

Each field is a planner option (sizing.options): its default and help live here and
the flags, workload-file keys and docs table derive from them. Construct by keyword:

    Workload(input_p95=8192, output_p95=512, concurrency=50, peak_rps=120)
    SLO(ttft_s=2.0, itl_s=0.05, gpu_hourly=2.5)

Traffic (11-step method, step 3): concurrency is the number of requests in
flight. Given directly it is the target one replica must hold at the p95 context
(the field guide's worked example: 50 requests). Otherwise it is derived for
the whole fleet: users x duty cycle, or Little's law, peak RPS x E2E (E2E from
the predicted operating point). `headroom` is the explicit provisioning margin
applied to the peak load (max of expected growth and burst absorption); the fleet
and the memory section are both sized for the load with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ridgeline.errors import RidgelineError
from ridgeline.sizing.options import check, option


@dataclass(frozen=True, kw_only=True)
class Workload:
    """Workload and load."""

    input_p95: int = option(help="p95 input tokens")
    output_p95: int = option(help="p95 output tokens")
    input_p50: int | None = option(None, "typical input tokens (default: the p95)")
    output_p50: int | None = option(None, "typical output tokens (default: the p95)")
    concurrency: int | None = option(None, "requests in flight one replica must hold (per "
                                           "replica; else --peak-rps or --users: fleet)")
    peak_rps: float | None = option(None, "fleet peak requests per second")
    users: int | None = option(None, "fleet users (with --duty-cycle: users x duty cycle in "
                                     "flight)")
    duty_cycle: float | None = option(None, "share of time a user has a request in flight")
    headroom: float = option(0.0, "provisioning headroom on the peak load (0.2 = +20%), for "
                                  "the fleet and the memory section")

    def __post_init__(self) -> None:
        if self.input_p50 is None:
            object.__setattr__(self, "input_p50", self.input_p95)
        if self.output_p50 is None:
            object.__setattr__(self, "output_p50", self.output_p95)
        check(self, "a positive whole number", "input_p95", "output_p95", "input_p50",
              "output_p50", "concurrency", "users")
        check(self, "a positive number", "peak_rps")
        check(self, "in (0, 1]", "duty_cycle")
        check(self, ">= 0", "headroom")
        if self.input_p50 > self.input_p95:
            raise RidgelineError(f"--input-p50 ({self.input_p50}) exceeds --input-p95 "
                                 f"({self.input_p95})")
        if self.output_p50 > self.output_p95:
            raise RidgelineError(f"--output-p50 ({self.output_p50}) exceeds --output-p95 "
                                 f"({self.output_p95})")
        if (self.users is None) != (self.duty_cycle is None):
            raise RidgelineError("--users and --duty-cycle go together (users x duty cycle = "
                                 "requests in flight)")
        if self.concurrency is None and self.peak_rps is None and self.users is None:
            raise RidgelineError("no load given: pass --concurrency (per replica), --peak-rps, or "
                                 "--users with --duty-cycle")

    @property
    def concurrency_scope(self) -> str:
        return "replica" if self.concurrency is not None else "fleet"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class SLO:
    """SLO and cost."""

    ttft_s: float | None = option(None, "TTFT target, seconds", flag="--ttft-slo")
    itl_s: float | None = option(None, "ITL (TPOT) target, seconds", flag="--itl-slo")
    percentile: str = option("p95", "percentile the SLO targets are quoted at: p50, p90, p95 "
                                    "or p99", flag="--slo-percentile")
    gpu_hourly: float | None = option(None, "$ per GPU-hour")
    utilization: float = option(1.0, "average fleet utilization for cost, (0, 1] (field "
                                     "guide §9.2)")

    def __post_init__(self) -> None:
        check(self, "a positive number", "ttft_s", "itl_s")
        check(self, ">= 0", "gpu_hourly")
        check(self, "in (0, 1]", "utilization")
        if self.percentile not in ("p50", "p90", "p95", "p99"):
            raise RidgelineError(f"--slo-percentile must be p50, p90, p95 or p99, got "
                                 f"{self.percentile!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class FleetOptions:
    """Fleet."""

    safety_factor: float = option(1.2, "capacity above the peak load (field guide §8.3: 1.2 "
                                       "stable traffic, 1.5 new or volatile)")
    redundancy: int = option(1, "spare replicas: N+1 (1) or N+2 (2) (11-step method)")
    memory_headroom: float = option(0.3, "headroom on the memory minimum (field guide §2.6: "
                                         "0.3-0.5)")
    breaker_fraction: float = option(0.85, "circuit breaker at this share of the safe queue "
                                           "depth (field guide §9.4: 0.8-0.9)")
    max_queue_wait_s: float | None = option(None, "max queue wait, s (default: TTFT SLO minus "
                                                  "the predicted service time)",
                                            flag="--max-queue-wait")

    def __post_init__(self) -> None:
        check(self, ">= 1", "safety_factor")
        check(self, "a whole number >= 0", "redundancy")
        check(self, ">= 0", "memory_headroom")
        check(self, "in (0, 1]", "breaker_fraction")
        check(self, "a positive number", "max_queue_wait_s")


@dataclass(frozen=True, kw_only=True)
class ParallelOptions:
    """Parallelism."""

    gpus_per_node: int = option(8, "GPUs per node (TP stays inside one)")
    tp: int | None = option(None, "force a TP degree (default: the planner chooses)")
    pp: int | None = option(None, "force a PP degree")
    pp_microbatches: int | None = option(None, "PP micro-batches m (default: PP)")

    def __post_init__(self) -> None:
        check(self, "a positive whole number", "gpus_per_node", "tp", "pp", "pp_microbatches")
        if self.tp is not None and self.tp > self.gpus_per_node:
            raise RidgelineError(f"--tp {self.tp} exceeds --gpus-per-node {self.gpus_per_node}: "
                                 "TP stays inside a node (field guide §5.5)")
