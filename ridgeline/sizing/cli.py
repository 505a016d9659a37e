"""Size an LLM deployment from a measured profile: memory, latency, parallelism, fleet and cost.

    ridgeline plan --model llama-3.1-70b --weights fp8 --kv fp8 --input-p95 8192 \\
        --output-p95 512 --concurrency 50 --peak-rps 120 --ttft-slo 2 --itl-slo 0.05 \\
        --gpu-hourly 2.5 --profile profile.json [--json]
    ridgeline plan --workload chat.toml --gpu h100-sxm --compare-datasheet

Hardware: --profile (measured here), or --gpu NAME (a bundled reference profile
measured on another machine, else the datasheet, labelled as such everywhere).
The planner never imports torch or triton. Equations: docs/planning.md.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from ridgeline.errors import RidgelineError
from ridgeline.roofline.profile import json_safe

# dest -> (type, default, help); None defaults are filled from the workload file or the library
_OPTIONS: list[tuple[str, Any, Any, str]] = [
    ("model", str, None, "bundled model name or a HF config.json path"),
    ("weights", str, "bf16", "weight dtype: fp16, bf16, fp8, int8, int4"),
    ("activations", str, "auto", "GEMM input dtype: fp16, bf16, fp8, int8 (auto: W8A8 for 8-bit "
                                  "weights when the GPU can, else 16-bit)"),
    ("kv", str, "auto", "KV cache dtype: fp16, bf16, fp8 (auto: the 16-bit activation dtype)"),
    ("input_p50", int, None, "typical input tokens (default: the p95)"),
    ("input_p95", int, None, "p95 input tokens"),
    ("output_p50", int, None, "typical output tokens (default: the p95)"),
    ("output_p95", int, None, "p95 output tokens"),
    ("concurrency", int, None, "requests in flight one replica must hold"),
    ("peak_rps", float, None, "fleet peak requests per second"),
    ("users", int, None, "fleet users (with --duty-cycle: users x duty cycle in flight)"),
    ("duty_cycle", float, None, "share of time a user has a request in flight"),
    ("headroom", float, 0.0, "provisioning headroom on the peak load (0.2 = +20%%)"),
    ("ttft_slo", float, None, "TTFT target, seconds"),
    ("itl_slo", float, None, "ITL (TPOT) target, seconds"),
    ("slo_percentile", str, "p95", "percentile the SLO targets are quoted at"),
    ("gpu_hourly", float, None, "$ per GPU-hour"),
    ("utilization", float, 1.0, "average fleet utilization for cost (0-1]"),
    ("profile", str, None, "measured profile.json"),
    ("gpu", str, None, "GPU name: bundled reference profile, else datasheet (e.g. h100-sxm)"),
    ("tp", int, None, "force a TP degree"),
    ("pp", int, None, "force a PP degree"),
    ("pp_microbatches", int, None, "PP micro-batches m (default: PP)"),
    ("gpus_per_node", int, 8, "GPUs per node (TP stays inside one)"),
    ("memory_fraction", float, 0.90, "usable share of GPU memory for the engine"),
    ("allocator_allowance", float, 0.05, "resident weights above the count (§2.1: 0.03-0.08)"),
    ("max_batched_tokens", int, 8192, "tokens per forward pass (chunked prefill budget)"),
    ("max_num_seqs", int, 256, "sequences sampled per step (logits memory)"),
    ("kv_block_tokens", int, 16, "paged KV block size in tokens"),
    ("activation_fraction", float, None, "activations as a fraction of weights (§2.3 rule of "
                                         "thumb: 0.2) instead of the estimate"),
    ("lora_adapters", int, 0, "LoRA adapters resident at once"),
    ("lora_rank", int, 16, "LoRA rank"),
    ("lora_targets", str, "all", "LoRA-adapted matrices: attention or all (attention + MLP)"),
    ("safety_factor", float, 1.2, "fleet safety factor (§8.3: 1.2-1.5)"),
    ("redundancy", int, 1, "spare replicas: N+1 (1) or N+2 (2)"),
    ("memory_headroom", float, 0.3, "headroom on the memory minimum (§2.6: 0.3-0.5)"),
    ("breaker_fraction", float, 0.85, "circuit breaker at this share of the safe queue depth"),
    ("max_queue_wait", float, None, "max queue wait, s (default: TTFT SLO - service time)"),
]
_FLAGS = ("compare_datasheet", "allow_unverified")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", metavar="FILE", help="TOML file with any of these options "
                   "(flags override it)")
    for dest, typ, default, help_text in _OPTIONS:
        shown = f" (default: {default})" if default is not None else ""
        p.add_argument("--" + dest.replace("_", "-"), dest=dest, type=typ, default=None,
                       help=help_text + shown.replace("%", "%%"))
    p.add_argument("--compare-datasheet", dest="compare_datasheet", action="store_true",
                   default=None, help="also plan on the GPU's datasheet and print the differences")
    p.add_argument("--allow-unverified", dest="allow_unverified", action="store_true",
                   default=None, help="plan on a --profile whose ceilings are not all verified "
                   "(no plateau, noisy), with a warning naming them; refused otherwise")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def _values(args: argparse.Namespace) -> dict[str, Any]:
    known = {d for d, *_ in _OPTIONS} | set(_FLAGS)
    values: dict[str, Any] = {d: default for d, _, default, _ in _OPTIONS}
    values.update({flag: False for flag in _FLAGS})
    if getattr(args, "workload", None):
        from ridgeline.sizing.workload import load_workload_file

        for key, v in load_workload_file(args.workload, known).items():
            typ = next((t for d, t, *_ in _OPTIONS if d == key), bool)
            values[key] = _coerce(key, v, typ)
    for key in known:
        v = getattr(args, key, None)
        if v is not None:
            values[key] = v
    return values


def _coerce(key: str, v: Any, typ: Any) -> Any:
    if typ is bool:
        if not isinstance(v, bool):
            raise RidgelineError(f"workload file: {key} must be true or false")
        return v
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if typ is int and isinstance(v, float) and v.is_integer():
        return int(v)
    if not isinstance(v, typ) or isinstance(v, bool):
        raise RidgelineError(f"workload file: {key} must be a {typ.__name__}, got {v!r}")
    return v


def build(values: dict[str, Any]):
    """(PlanInputs, Hardware) from option values; RidgelineError on any bad input."""
    from ridgeline.sizing.hardware import hardware_from_gpu_name, hardware_from_profile
    from ridgeline.sizing.memory import EngineConfig
    from ridgeline.sizing.models import load_model
    from ridgeline.sizing.plan import PlanInputs
    from ridgeline.sizing.precision import resolve_precision
    from ridgeline.sizing.workload import SLO, FleetOptions, ParallelOptions, Workload

    if values.get("model") is None:
        raise RidgelineError("no model: pass --model NAME (or a config.json path)")
    for key in ("input_p95", "output_p95"):
        if values.get(key) is None:
            raise RidgelineError(f"--{key.replace('_', '-')} is required")
    if values.get("profile") and values.get("gpu"):
        raise RidgelineError("give --profile or --gpu, not both")
    if values.get("profile"):
        from ridgeline.roofline.profile import load_profile

        hw = hardware_from_profile(load_profile(values["profile"]), source="measured",
                                   refuse_untrusted=not values["allow_unverified"])
    elif values.get("gpu"):
        hw = hardware_from_gpu_name(values["gpu"])
    else:
        raise RidgelineError("no hardware: pass --profile PROFILE.json (measured) or --gpu NAME")
    spec = load_model(values["model"])
    precision, notes = resolve_precision(values["weights"], values["activations"], values["kv"],
                                         hw.device_dtypes)
    for key in ("memory_fraction", "allocator_allowance", "activation_fraction"):
        v = values.get(key)
        bad_fraction = key == "memory_fraction" and v is not None and not 0 < v <= 1
        if v is not None and (not math.isfinite(v) or v < 0 or bad_fraction):
            raise RidgelineError(f"--{key.replace('_', '-')} out of range: {v}")
    for key in ("max_batched_tokens", "max_num_seqs", "kv_block_tokens", "lora_rank"):
        if values[key] < 1:
            raise RidgelineError(f"--{key.replace('_', '-')} must be >= 1")
    if values["lora_adapters"] < 0:
        raise RidgelineError("--lora-adapters must be >= 0")
    if values["lora_targets"] not in ("attention", "all"):
        raise RidgelineError("--lora-targets must be attention or all")
    engine = EngineConfig(values["memory_fraction"], values["allocator_allowance"],
                          values["max_batched_tokens"], values["max_num_seqs"],
                          values["kv_block_tokens"], values["activation_fraction"],
                          values["lora_adapters"], values["lora_rank"], values["lora_targets"])
    workload = Workload(values["input_p95"], values["output_p95"], values["input_p50"],
                        values["output_p50"], values["concurrency"], values["peak_rps"],
                        values["users"], values["duty_cycle"], values["headroom"])
    slo = SLO(values["ttft_slo"], values["itl_slo"], values["slo_percentile"], values["gpu_hourly"],
              values["utilization"])
    parallel = ParallelOptions(values["gpus_per_node"], values["tp"], values["pp"],
                               values["pp_microbatches"])
    fleet = FleetOptions(values["safety_factor"], values["redundancy"], values["memory_headroom"],
                         values["breaker_fraction"], values["max_queue_wait"])
    return PlanInputs(spec, precision, workload, slo, engine, parallel, fleet, tuple(notes)), hw


def run(args: argparse.Namespace) -> int:
    from ridgeline.sizing.plan import compare_with_datasheet, make_plan

    values = _values(args)
    inputs, hw = build(values)
    plan = make_plan(inputs, hw)
    if values.get("compare_datasheet"):
        plan["comparison"] = compare_with_datasheet(inputs, hw, plan)
    if args.json:
        print(json.dumps(json_safe(plan), indent=1))
        return 0
    from ridgeline.sizing.render import print_plan

    print_plan(plan)
    return 0
