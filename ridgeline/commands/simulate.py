"""Simulate one serving replica under load: the latency-throughput curve, its knee and SLO point.

    ridgeline simulate --model llama-3.1-70b --weights fp8 --kv fp8 --gpu h100-sxm --tp 4 \\
        --input-p50 1000 --input-p95 4000 --output-p50 200 --output-p95 512 \\
        --ttft-slo 2 --itl-slo 0.1 [--rps 2 4 8 16] [--json] [--csv F] [--png F] [-o DIR]
    ridgeline simulate ... --concurrency 1 8 32 128 --measured vllm-results/ aiperf-artifacts/
    ridgeline simulate ... --trace azure_code.csv --replay-arrivals

A discrete-event simulation of a continuous-batching engine (vLLM v1's scheduler: token
budget, max sequences, chunked prefill, paged KV blocks from the memory plan, preemption by
recompute), every step timed by the planner's step model on the hardware (--profile
measured here, or --gpu: a reference profile or the datasheet, labelled as such). The
options it shares with `ridgeline plan` are plan's (one definition each). Prints the curve
as two tables and one line with the knee and the SLO operating point; --json, --csv, --png
and -o DIR (simulation.json/.csv/.png, which `ridgeline report` shows) write it.
Method and limits: docs/simulate.md.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from typing import Iterator

from ridgeline.sizing.options import add_option_groups, option_values
from ridgeline.sizing.simulation.options import SIMULATE_GROUPS


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_option_groups(p, SIMULATE_GROUPS)
    out = p.add_argument_group("Output")
    out.add_argument("--json", action="store_true",
                     help="print the result as JSON: the points, knee, operating point, "
                          "measured curves and what was simulated")
    out.add_argument("--csv", metavar="FILE", help="write the points (and the measured ones) "
                                                   "as CSV")
    out.add_argument("--png", metavar="FILE", help="write the chart: throughput and P50/P99 "
                                                   "TTFT and ITL against load")
    out.add_argument("-o", "--output", metavar="DIR",
                     help="write DIR/simulation.json, simulation.csv and simulation.png "
                          "(`ridgeline report` shows a simulation.json beside the profile)")


@contextmanager
def _progress(console) -> Iterator:
    """A progress bar on stderr while points are simulated (a terminal only: logs stay clean)."""
    if not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("simulating {task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("", total=1)

        def update(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        yield update


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ridgeline.roofline.profile import json_safe
    from ridgeline.sizing.render import print_simulation
    from ridgeline.sizing.simulation.run import (check_outputs, run_simulation,
                                                 setup_from_values, write_outputs)

    setup = setup_from_values(option_values(args, SIMULATE_GROUPS))
    check_outputs(csv=args.csv, png=args.png, out_dir=args.output)  # before minutes of work
    err = Console(stderr=True)
    with _progress(err) as update:
        result = run_simulation(setup, update)
    d = result.to_dict()
    written = write_outputs(d, csv=args.csv, png=args.png, out_dir=args.output)
    if args.json:
        print(json.dumps(json_safe(d), indent=1))
    else:
        print_simulation(d)
    for path in written:
        err.print(f"wrote {path}", highlight=False)
    if result.interrupted:
        err.print(f"interrupted: {len(d['points'])} load points kept", highlight=False)
        return 130
    return 0
