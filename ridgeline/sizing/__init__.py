"""Sizing: the LLM serving equations evaluated on a measured profile (pure Python, no torch).

    from ridgeline.sizing import load_model, Precision, hardware_from_gpu_name
    from ridgeline.sizing.plan import PlanInputs, make_plan

Modules, one job each: options (each planner option defined once, on its dataclass:
flags, workload-file keys and the docs table derive from it), models (shapes and
parameter counts), precision (bytes per element), hardware (profile / reference
profile / datasheet), memory (capacity axis), latency (step times on the roofline),
serving (one replica under load), parallelism (TP/PP choice), fleet (replicas, cost,
breaker), workload (workload, SLO, fleet and parallelism options), plan (the method,
in order), static_batch (one batch run to completion), plan_options (the option groups
of `ridgeline plan`, PLAN_GROUPS, and the inputs they build), render (output). The
stable Python API over them: ridgeline.api. Equations and the field-guide sections
they implement: docs/planning.md.
"""

from ridgeline.sizing.hardware import Hardware, hardware_from_gpu_name, hardware_from_profile
from ridgeline.sizing.latency import StepTime, decode_step_time, prefill_time
from ridgeline.sizing.models import ModelSpec, load_model
from ridgeline.sizing.precision import Precision

__all__ = ["Hardware", "ModelSpec", "Precision", "StepTime", "decode_step_time",
           "hardware_from_gpu_name", "hardware_from_profile", "load_model", "prefill_time"]
