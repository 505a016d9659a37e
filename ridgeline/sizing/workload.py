"""Workload, SLO and planner options: the inputs of a plan, validated, from flags or a TOML file.

    ridgeline plan --workload chat.toml [--flags that override the file]

A workload file uses the command-line option names as keys (dashes or
underscores); tables only group them and their names are ignored:

    model = "llama-3.1-70b"
    [precision]
    weights = "fp8"
    kv = "fp8"
    [workload]
    input_p95 = 8192
    output_p95 = 512
    concurrency = 50          # per replica; or peak_rps / users x duty_cycle (fleet)
    peak_rps = 120
    [slo]
    ttft_slo = 2.0            # seconds
    itl_slo = 0.05            # seconds
    gpu_hourly = 2.5          # $ per GPU-hour
    utilization = 0.6
    [hardware]
    gpu = "h100-sxm"          # or profile = "profile.json"

Traffic (11-step method, step 3): concurrency is the number of requests in
flight. Given directly it is the target one replica must hold at the p95 context
(the field guide's worked example: 50 requests). Otherwise it is derived for
the whole fleet: users x duty cycle, or Little's law, peak RPS x E2E (E2E from
the predicted operating point). `headroom` is the explicit provisioning margin
applied to the peak load (max of expected growth and burst absorption).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ridgeline.errors import RidgelineError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class Workload:
    input_p95: int
    output_p95: int
    input_p50: int | None = None
    output_p50: int | None = None
    concurrency: int | None = None        # per replica, when given
    peak_rps: float | None = None         # fleet
    users: int | None = None              # fleet: users x duty cycle = requests in flight
    duty_cycle: float | None = None
    headroom: float = 0.0                 # provisioning headroom on the peak load

    def __post_init__(self) -> None:
        if self.input_p50 is None:
            object.__setattr__(self, "input_p50", self.input_p95)
        if self.output_p50 is None:
            object.__setattr__(self, "output_p50", self.output_p95)
        _positive_int("input-p95", self.input_p95)
        _positive_int("output-p95", self.output_p95)
        _positive_int("input-p50", self.input_p50)
        _positive_int("output-p50", self.output_p50)
        if self.input_p50 > self.input_p95:
            raise RidgelineError(f"--input-p50 ({self.input_p50}) exceeds --input-p95 "
                                 f"({self.input_p95})")
        if self.output_p50 > self.output_p95:
            raise RidgelineError(f"--output-p50 ({self.output_p50}) exceeds --output-p95 "
                                 f"({self.output_p95})")
        if self.concurrency is not None:
            _positive_int("concurrency", self.concurrency)
        if self.peak_rps is not None:
            _positive("peak-rps", self.peak_rps)
        if self.users is not None:
            _positive_int("users", self.users)
            if self.duty_cycle is None:
                raise RidgelineError("--users needs --duty-cycle (the share of time a user has a "
                                     "request in flight)")
        if self.duty_cycle is not None:
            if not (0 < self.duty_cycle <= 1):
                raise RidgelineError(f"--duty-cycle must be in (0, 1], got {self.duty_cycle}")
            if self.users is None:
                raise RidgelineError("--duty-cycle needs --users")
        _fraction_ge0("headroom", self.headroom)
        if self.concurrency is None and self.peak_rps is None and self.users is None:
            raise RidgelineError("no load given: pass --concurrency (per replica), --peak-rps, or "
                                 "--users with --duty-cycle")

    @property
    def concurrency_scope(self) -> str:
        return "replica" if self.concurrency is not None else "fleet"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SLO:
    ttft_s: float | None = None
    itl_s: float | None = None
    percentile: str = "p95"
    gpu_hourly: float | None = None       # $ per GPU-hour
    utilization: float = 1.0              # average fleet utilization (field guide §9.2)

    def __post_init__(self) -> None:
        if self.ttft_s is not None:
            _positive("ttft-slo", self.ttft_s)
        if self.itl_s is not None:
            _positive("itl-slo", self.itl_s)
        if self.percentile not in ("p50", "p90", "p95", "p99"):
            raise RidgelineError(f"--slo-percentile must be p50, p90, p95 or p99, got "
                                 f"{self.percentile!r}")
        hourly = self.gpu_hourly
        if hourly is not None and (not math.isfinite(hourly) or hourly < 0):
            raise RidgelineError(f"--gpu-hourly must be >= 0, got {self.gpu_hourly}")
        if not (0 < self.utilization <= 1):
            raise RidgelineError(f"--utilization must be in (0, 1], got {self.utilization}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FleetOptions:
    safety_factor: float = 1.2        # field guide §8.3: 1.2 stable traffic, 1.5 new or volatile
    redundancy: int = 1               # N+1 failure domain (N+2 for critical workloads)
    memory_headroom: float = 0.3      # field guide §2.6: 30-50% above the memory minimum
    breaker_fraction: float = 0.85    # field guide §9.4: trip at 80-90% of the safe depth
    max_queue_wait_s: float | None = None  # default: TTFT SLO minus the predicted service time

    def __post_init__(self) -> None:
        if not (math.isfinite(self.safety_factor) and self.safety_factor >= 1):
            raise RidgelineError(f"--safety-factor must be >= 1, got {self.safety_factor}")
        if self.redundancy < 0:
            raise RidgelineError(f"--redundancy must be >= 0, got {self.redundancy}")
        _fraction_ge0("memory-headroom", self.memory_headroom)
        if not (0 < self.breaker_fraction <= 1):
            raise RidgelineError(f"--breaker-fraction must be in (0, 1], got "
                                 f"{self.breaker_fraction}")
        if self.max_queue_wait_s is not None:
            _positive("max-queue-wait", self.max_queue_wait_s)


@dataclass(frozen=True)
class ParallelOptions:
    gpus_per_node: int = 8
    tp: int | None = None             # force a TP degree
    pp: int | None = None             # force a PP degree
    pp_microbatches: int | None = None  # default: PP

    def __post_init__(self) -> None:
        _positive_int("gpus-per-node", self.gpus_per_node)
        for name in ("tp", "pp", "pp_microbatches"):
            v = getattr(self, name)
            if v is not None:
                _positive_int(name.replace("_", "-"), v)
        if self.tp is not None and self.tp > self.gpus_per_node:
            raise RidgelineError(f"--tp {self.tp} exceeds --gpus-per-node {self.gpus_per_node}: "
                                 "TP stays inside a node (field guide §5.5)")


def _positive_int(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise RidgelineError(f"--{name} must be a positive whole number, got {v!r}")


def _positive(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise RidgelineError(f"--{name} must be a positive number, got {v!r}")


def _fraction_ge0(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise RidgelineError(f"--{name} must be >= 0, got {v!r}")


def load_workload_file(path: str | Path, known: set[str]) -> dict[str, Any]:
    """Options from a TOML workload file: {option dest: value}; RidgelineError on unknown keys."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RidgelineError(f"workload file not found: {path}") from None
    except OSError as exc:
        raise RidgelineError(f"cannot read workload file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RidgelineError(f"{path} is not valid TOML: {exc}") from None
    out: dict[str, Any] = {}

    def walk(table: dict[str, Any], where: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, f"{where}{key}.")
                continue
            dest = key.strip().replace("-", "_")
            if dest not in known:
                raise RidgelineError(f"{path}: unknown key {where}{key!r} (keys are the `ridgeline "
                                     f"plan` option names, e.g. input_p95, ttft_slo)")
            if dest in out:
                raise RidgelineError(f"{path}: {key!r} is given twice")
            out[dest] = value

    walk(data, "")
    return out
