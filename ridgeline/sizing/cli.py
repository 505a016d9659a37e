"""Size an LLM deployment from a measured profile: memory, latency, parallelism, fleet and cost.

    ridgeline plan --model llama-3.1-70b --weights fp8 --kv fp8 --input-p95 8192 \\
        --output-p95 512 --concurrency 50 --peak-rps 120 --ttft-slo 2 --itl-slo 0.05 \\
        --gpu-hourly 2.5 --profile profile.json [--json]
    ridgeline plan --workload chat.toml --gpu h100-sxm --compare-datasheet
    ridgeline plan --model llama-3.1-8b --gpu h100-sxm --static-batch 8 --input-len 1024 \\
        --output-len 128

Hardware: --profile (measured here), or --gpu NAME (a bundled reference profile
measured on another machine, else the datasheet, labelled as such everywhere).
The planner never imports torch or triton. Options: sizing.options (each defined
once, on its dataclass). Equations: docs/planning.md.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ridgeline.errors import RidgelineError
from ridgeline.roofline.profile import json_safe
from ridgeline.sizing.hardware import Hardware, HardwareOptions
from ridgeline.sizing.memory import EngineConfig
from ridgeline.sizing.models import ModelOptions
from ridgeline.sizing.options import add_option_groups, build, given, option_values
from ridgeline.sizing.plan import PlanInputs, ReportOptions
from ridgeline.sizing.precision import PrecisionOptions
from ridgeline.sizing.static_batch import StaticBatch
from ridgeline.sizing.workload import SLO, FleetOptions, ParallelOptions, Workload

# The option groups of `ridgeline plan`, in --help and docs order.
PLAN_GROUPS: tuple[type, ...] = (ModelOptions, PrecisionOptions, HardwareOptions, Workload, SLO,
                                 EngineConfig, ParallelOptions, FleetOptions, StaticBatch,
                                 ReportOptions)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_option_groups(p, PLAN_GROUPS)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def build_inputs(values: dict[str, Any]) -> tuple[PlanInputs, Hardware]:
    """(PlanInputs, Hardware) from option values; RidgelineError on any bad input."""
    spec, model_notes = build(ModelOptions, values).load()
    workload = build(Workload, values)
    hw = build(HardwareOptions, values).load()
    precision, notes = build(PrecisionOptions, values).resolve(hw.device_dtypes)
    inputs = PlanInputs(spec=spec, precision=precision, workload=workload, slo=build(SLO, values),
                        engine=build(EngineConfig, values),
                        parallel=build(ParallelOptions, values),
                        fleet=build(FleetOptions, values), notes=tuple(model_notes + notes))
    return inputs, hw


def run(args: argparse.Namespace) -> int:
    values = option_values(args, PLAN_GROUPS)
    if given(values, StaticBatch):
        return _static(values, args.json)
    from ridgeline.sizing.plan import compare_with_datasheet, infeasible, make_plan

    inputs, hw = build_inputs(values)
    plan = make_plan(inputs, hw)
    why = infeasible(plan)
    if why:
        raise RidgelineError(why)
    if build(ReportOptions, values).compare_datasheet:
        plan["comparison"] = compare_with_datasheet(inputs, hw, plan)
    if args.json:
        print(json.dumps(json_safe(plan), indent=1))
        return 0
    from ridgeline.sizing.render import print_plan

    print_plan(plan)
    return 0


def _static(values: dict[str, Any], as_json: bool) -> int:
    from ridgeline.sizing.static_batch import static_batch

    spec, notes = build(ModelOptions, values).load()
    run_ = build(StaticBatch, values)
    hw = build(HardwareOptions, values).load()
    precision, more = build(PrecisionOptions, values).resolve(hw.device_dtypes)
    result = static_batch(spec, precision, hw, run_, build(EngineConfig, values),
                          build(ParallelOptions, values))
    result.notes[:0] = notes + more
    out = {**result.to_dict(), "model": spec.summary(), "hardware": hw.summary(),
           "precision": precision.to_dict(), "warnings": list(hw.warnings)}
    if as_json:
        print(json.dumps(json_safe(out), indent=1))
        return 0
    from ridgeline.sizing.render import print_static_batch

    print_static_batch(out)
    return 0
