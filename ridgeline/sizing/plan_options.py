"""The options of `ridgeline plan` and what their values become: the planner's inputs.

    PLAN_GROUPS              the option groups, in --help and docs order (each option is a
                             field of one of these dataclasses; sizing.options derives the
                             flags, workload-file keys and docs table from them)
    build_inputs(values)     -> (PlanInputs, Hardware), for make_plan
    plan(values)             the plan (plain data), with the datasheet comparison when asked
    static_batch_plan(values)  the --static-batch result (plain data)

`values` is sizing.options.option_values(args, PLAN_GROUPS): the workload file, then the
flags over it. Every bad input is one RidgelineError; nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

from ridgeline.errors import RidgelineError
from ridgeline.sizing.engine import EngineLayerOptions
from ridgeline.sizing.hardware import Hardware, HardwareOptions
from ridgeline.sizing.memory import EngineConfig
from ridgeline.sizing.models import ModelOptions
from ridgeline.sizing.options import build
from ridgeline.sizing.plan import PlanInputs, PlanMethod
from ridgeline.sizing.precision import PrecisionOptions
from ridgeline.sizing.static_batch import StaticBatch
from ridgeline.sizing.workload import SLO, FleetOptions, ParallelOptions, Workload

# The option groups of `ridgeline plan`, in --help and docs order.
PLAN_GROUPS: tuple[type, ...] = (ModelOptions, PrecisionOptions, HardwareOptions, Workload, SLO,
                                 EngineConfig, EngineLayerOptions, ParallelOptions, FleetOptions,
                                 StaticBatch, PlanMethod)


def build_inputs(values: dict[str, Any]) -> tuple[PlanInputs, Hardware]:
    """(PlanInputs, Hardware) from option values; RidgelineError on any bad input."""
    spec, model_notes = build(ModelOptions, values).load()
    workload = build(Workload, values)
    hw = build(HardwareOptions, values).load()
    precision, notes = build(PrecisionOptions, values).resolve(hw.device_dtypes)
    inputs = PlanInputs(spec=spec, precision=precision, workload=workload, slo=build(SLO, values),
                        engine=build(EngineConfig, values),
                        engine_profile=build(EngineLayerOptions, values).load(),
                        parallel=build(ParallelOptions, values),
                        fleet=build(FleetOptions, values), method=build(PlanMethod, values),
                        notes=tuple(model_notes + notes))
    return inputs, hw


def plan(values: dict[str, Any]) -> dict[str, Any]:
    """The plan; RidgelineError when no layout serves the workload."""
    from ridgeline.sizing.plan import compare_with_datasheet, infeasible, make_plan

    inputs, hw = build_inputs(values)
    result = make_plan(inputs, hw)
    why = infeasible(result)
    if why:
        raise RidgelineError(why)
    if inputs.method.compare_datasheet:
        result["comparison"] = cmp = compare_with_datasheet(inputs, hw, result)
        # say which datasheet the comparison is against: derated (what a --gpu plan prices)
        # or the vendor's 100% (--no-derate)
        cmp["datasheet_basis"] = ("datasheet x published achievable fractions (what a --gpu "
                                  "plan prices; --no-derate: 100% of peak)"
                                  if cmp["datasheet"]["derated"] else
                                  "datasheet at 100% of peak (--no-derate)")
        how = [n for n in cmp["datasheet"]["notes"] if n.startswith(("derated:", "NOT derated"))]
        result["notes"].append(f"--compare-datasheet compares against the "
                               f"{cmp['datasheet_basis']}" + "".join(f"; {n}" for n in how))
    return result


def static_batch_plan(values: dict[str, Any]) -> dict[str, Any]:
    """One static batch (--static-batch): its times, with the model, hardware and precision."""
    from ridgeline.sizing.static_batch import static_batch

    spec, notes = build(ModelOptions, values).load()
    batch = build(StaticBatch, values)
    layer = build(EngineLayerOptions, values).load()   # --engine: as plan and simulate use it
    hw = build(HardwareOptions, values).load()
    precision, more = build(PrecisionOptions, values).resolve(hw.device_dtypes)
    result = static_batch(spec, precision, hw, batch, build(EngineConfig, values),
                          build(ParallelOptions, values), engine_layer=layer)
    result.notes[:0] = notes + more
    return {**result.to_dict(), "model": spec.summary(), "hardware": hw.summary(),
            "precision": precision.to_dict(), "warnings": list(hw.warnings)}
