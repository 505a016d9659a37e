"""The options `ridgeline simulate` adds to plan's: lengths, load, SLO percentiles, measured curves.

Each is a field of one of these dataclasses (sizing.options: the flag, workload-file key and
docs row derive from it), shared with plan's groups where the meaning is the same:

    SIMULATE_GROUPS   model, precision, hardware (plan's groups), then LengthOptions,
                      LoadOptions, SLO (plan's) and CurveSLO, EngineConfig,
                      EngineLayerOptions (--engine) and ParallelOptions (plan's),
                      MeasuredOptions
    CurveSLO          the percentiles the SLOs are checked at on a simulated curve; `plan`
                      has them too (its method group inherits this one)

Plan's Workload is not a simulate group: simulate's --concurrency is a list of closed-loop
client counts, plan's one per-replica target, and a simulation needs no fleet load. The
length flags are Workload's own (sizing.options.option_like), optional here because a
--trace can give the lengths instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ridgeline.errors import RidgelineError
from ridgeline.sizing.engine import EngineLayerOptions
from ridgeline.sizing.hardware import HardwareOptions
from ridgeline.sizing.memory import EngineConfig
from ridgeline.sizing.models import ModelOptions
from ridgeline.sizing.options import check, flag_of, option, option_like
from ridgeline.sizing.precision import PrecisionOptions
from ridgeline.sizing.workload import SLO, ParallelOptions, Workload

PERCENTILES = ("p50", "p95", "p99")      # what a simulated point keeps (SimPoint's Stat)
DEFAULT_REQUESTS = 10_000                # per load point: about 3 s for a 12-point sweep
# the default rps axis, as fractions of the replica's capacity (sweep.capacity_rps)
DEFAULT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)


def simulated_percentile(percentile: str) -> tuple[str, str | None]:
    """(the percentile a simulated point is checked at, a note when it is not the one asked):
    the points keep P50, P95 and P99, so a P90 target is checked at P95 (conservative)."""
    if percentile in PERCENTILES:
        return percentile, None
    if percentile == "p90":
        return "p95", "a P90 SLO is checked at the simulated P95 (the points keep P50, P95 and " \
                      "P99): conservative"
    raise RidgelineError(f"percentile must be p50, p95 or p99, got {percentile!r}")


@dataclass(frozen=True, kw_only=True)
class CurveSLO:
    """SLO percentiles on the simulated curve."""

    ttft_percentile: str = option("p99", "percentile the TTFT SLO is checked at on the "
                                         "simulated curve: p50, p95 or p99")
    itl_percentile: str | None = option(None, "percentile the ITL SLO is checked at on the "
                                              "simulated curve (default: --slo-percentile; "
                                              "p90 is checked at p95)")

    def __post_init__(self) -> None:
        for name in ("ttft_percentile", "itl_percentile"):
            v = getattr(self, name)
            if v is not None and v not in PERCENTILES:
                raise RidgelineError(f"{flag_of(CurveSLO, name)} must be p50, p95 or p99, got "
                                     f"{v!r}")

    def resolve(self, slo: SLO) -> tuple[str, str, list[str]]:
        """(TTFT percentile, ITL percentile, notes) for checking `slo` on simulated points."""
        itl, note = (self.itl_percentile, None) if self.itl_percentile else \
            simulated_percentile(slo.percentile)
        return self.ttft_percentile, itl, [note] if note and slo.itl_s is not None else []


@dataclass(frozen=True, kw_only=True)
class LengthOptions:
    """Request lengths (a lognormal through the percentiles, or a trace)."""

    input_p95: int | None = option_like(Workload, "input_p95", None,
                                        suffix=" (required unless --trace)")
    output_p95: int | None = option_like(Workload, "output_p95", None,
                                         suffix=" (required unless --trace)")
    input_p50: int | None = option_like(Workload, "input_p50", None)
    output_p50: int | None = option_like(Workload, "output_p50", None)
    input_p99: int | None = option(None, "p99 input tokens (the lognormal is fitted to p95 "
                                         "and p99 together)")
    output_p99: int | None = option(None, "p99 output tokens")
    trace: str | None = option(None, "request lengths (and arrival times) from a CSV or JSONL "
                                     "trace (Azure LLM inference, ShareGPT-derived, OpenAI-style "
                                     "columns), replayed in order", metavar="FILE")
    replay_arrivals: bool = option(False, "replay the trace's own arrival times (rescaled to "
                                          "each --rps; as recorded without --rps)")

    def __post_init__(self) -> None:
        check(self, "a positive whole number", "input_p95", "output_p95", "input_p50",
              "output_p50", "input_p99", "output_p99")
        lengths = [n for n in ("input_p95", "output_p95", "input_p50", "output_p50",
                               "input_p99", "output_p99") if getattr(self, n) is not None]
        if self.trace is not None:
            if lengths:
                raise RidgelineError(f"--trace gives the lengths: drop "
                                     f"{flag_of(LengthOptions, lengths[0])}")
            return
        if self.replay_arrivals:
            raise RidgelineError("--replay-arrivals needs a --trace with arrival times")
        if self.input_p95 is None or self.output_p95 is None:
            raise RidgelineError("no request lengths: pass --input-p95 and --output-p95 (with "
                                 "--input-p50/--output-p50 for a distribution), or --trace FILE")
        for what in ("input", "output"):
            p50, p95, p99 = (getattr(self, f"{what}_p{q}") for q in (50, 95, 99))
            if p50 is not None and p50 > p95:
                raise RidgelineError(f"--{what}-p50 ({p50}) exceeds --{what}-p95 ({p95})")
            if p99 is not None and p99 < p95:
                raise RidgelineError(f"--{what}-p99 ({p99}) is below --{what}-p95 ({p95})")


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """Simulated load (one replica)."""

    rps: tuple[float, ...] | None = option(None, "open loop: request rates to simulate, "
                                                 "requests/s (a list sweeps; default: 10%-120% "
                                                 "of the replica's capacity)", metavar="RPS")
    concurrency: tuple[int, ...] | None = option(None, "closed loop: clients, each sending its "
                                                       "next request when its last one ends (a "
                                                       "list sweeps; not plan's per-replica "
                                                       "target)", metavar="N")
    arrival_cv: float | None = option(None, "open loop: coefficient of variation of the gaps "
                                            "between arrivals (gamma): 1 Poisson (default), "
                                            "> 1 bursty, 0 evenly spaced")
    burstiness: float | None = option(None, "open loop: vllm bench serve's --burstiness b "
                                            "instead of --arrival-cv (CV = 1/sqrt(b))")
    think_time: float = option(0.0, "closed loop: seconds a client waits between a response "
                                    "and its next request")
    requests: int | None = option(None, f"requests per load point (default: {DEFAULT_REQUESTS:,}; "
                                        "with --trace, its length)")
    seed: int = option(0, "random seed of the lengths and arrivals (the same requests at "
                          "every load point)")
    first_chunk_admission: bool = option(False, "admit a request when its first chunk's KV "
                                                "blocks are free, as vLLM before "
                                                "scheduler_reserve_full_isl (default: the whole "
                                                "prompt's)")

    def __post_init__(self) -> None:
        if self.rps is not None and self.concurrency is not None:
            raise RidgelineError("give --rps (open loop) or --concurrency (closed loop), not both")
        for r in self.rps or ():
            if not (math.isfinite(r) and r > 0):
                raise RidgelineError(f"--rps must be positive numbers, got {r:g}")
        for c in self.concurrency or ():
            if c < 1:
                raise RidgelineError(f"--concurrency must be whole numbers >= 1, got {c}")
        if self.arrival_cv is not None and self.burstiness is not None:
            raise RidgelineError("give --arrival-cv or --burstiness, not both")
        check(self, ">= 0", "arrival_cv", "think_time")
        check(self, "a positive number", "burstiness")
        check(self, "a positive whole number", "requests")
        check(self, "a whole number >= 0", "seed")
        if self.concurrency is not None and (self.arrival_cv is not None
                                             or self.burstiness is not None):
            raise RidgelineError("--arrival-cv and --burstiness shape open-loop arrivals: they "
                                 "do not apply to --concurrency")
        if self.think_time and self.concurrency is None:
            raise RidgelineError("--think-time applies to a closed loop: give --concurrency")

    @property
    def cv(self) -> float:
        """The arrival CV: --arrival-cv, or 1 / sqrt(--burstiness), else 1 (Poisson)."""
        if self.burstiness is not None:
            return 1.0 / math.sqrt(self.burstiness)
        return 1.0 if self.arrival_cv is None else self.arrival_cv


@dataclass(frozen=True, kw_only=True)
class MeasuredOptions:
    """Measured curve beside the simulated one."""

    measured: tuple[str, ...] | None = option(None, "vllm bench serve --save-result JSON files "
                                                    "and AIPerf profile_export_aiperf.json/.csv "
                                                    "files or folders: their points on the same "
                                                    "table and chart", metavar="FILE")


# The option groups of `ridgeline simulate`, in --help and docs order.
SIMULATE_GROUPS: tuple[type, ...] = (ModelOptions, PrecisionOptions, HardwareOptions,
                                     LengthOptions, LoadOptions, SLO, CurveSLO, EngineConfig,
                                     EngineLayerOptions, ParallelOptions, MeasuredOptions)
