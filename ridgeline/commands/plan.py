"""Size an LLM deployment from a measured profile: memory, latency, parallelism, fleet and cost.

    ridgeline plan --model llama-3.1-70b --weights fp8 --kv fp8 --input-p95 8192 \\
        --output-p95 512 --concurrency 50 --peak-rps 120 --ttft-slo 2 --itl-slo 0.05 \\
        --gpu-hourly 2.5 --profile profile.json [--json]
    ridgeline plan --workload chat.toml --gpu h100-sxm --compare-datasheet
    ridgeline plan --model llama-3.1-8b --gpu h100-sxm --static-batch 8 --input-len 1024 \\
        --output-len 128

Hardware: --profile (measured here), or --gpu NAME (a bundled reference profile
measured on another machine, else the datasheet, labelled as such everywhere).
The planner never imports torch or triton. Options: sizing.plan_options (each
defined once, on its dataclass). Equations: docs/planning.md.
"""

from __future__ import annotations

import argparse
import json

from ridgeline.sizing.options import add_option_groups, given, option_values
from ridgeline.sizing.plan_options import PLAN_GROUPS
from ridgeline.sizing.static_batch import StaticBatch


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_option_groups(p, PLAN_GROUPS)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args: argparse.Namespace) -> int:
    from ridgeline.sizing import plan_options

    values = option_values(args, PLAN_GROUPS)
    static = given(values, StaticBatch)
    out = plan_options.static_batch_plan(values) if static else plan_options.plan(values)
    if args.json:
        from ridgeline.roofline.profile import json_safe

        print(json.dumps(json_safe(out), indent=1))
        return 0
    from ridgeline.sizing.render import print_plan, print_static_batch

    (print_static_batch if static else print_plan)(out)
    return 0
