"""Fit the engine layer (per-step and per-request overhead) from real serving benchmarks.

    ridgeline calibrate vllm-results/ --model llama-3.1-8b --profile profile.json \\
        --engine vllm -o engine.json [--json]
    ridgeline plan ... --engine engine.json         # then plan and simulate with it

Each measured point (`vllm bench serve --save-result` JSON, AIPerf exports) is predicted by
the serving simulation on this hardware, model and precision (the options are plan's); the
engine's step and request overheads are fitted to minimize the relative error, scored on
held-out points (k-fold, k = min(5, points)). Prints the error before (the --engine given,
default none) and after, and writes engine.json (versioned, with the fit and its inputs).
Method: sizing.calibrate; docs/engine.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ridgeline.sizing.options import add_option_groups, option_values


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ridgeline.sizing.calibrate import CALIBRATE_GROUPS

    p.add_argument("results", nargs="+", metavar="RESULT",
                   help="vllm bench serve --save-result JSON files and AIPerf "
                        "profile_export_aiperf.json/.csv files or folders (3 points at least)")
    add_option_groups(p, CALIBRATE_GROUPS)
    out = p.add_argument_group("Output")
    out.add_argument("-o", "--output", metavar="FILE",
                     help="write the fitted engine here (engine.json, for plan/simulate --engine)")
    out.add_argument("--force", action="store_true", help="replace an existing -o file")
    out.add_argument("--json", action="store_true",
                     help="print the calibration as JSON (error_before, error_after, folds, "
                          "points)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ridgeline.roofline.profile import json_safe
    from ridgeline.sizing.calibrate import (CALIBRATE_GROUPS, calibrate_from_values,
                                            check_output, write_engine_file)

    check_output(args.output, args.force)  # before minutes of simulation
    values = option_values(args, CALIBRATE_GROUPS)
    result = calibrate_from_values(values, args.results, ["ridgeline", *sys.argv[1:]])
    written = write_engine_file(result, args.output) if args.output else None
    if args.json:
        d = result.to_dict()
        d["written"] = str(written) if written else None
        print(json.dumps(json_safe(d), indent=1))
    else:
        print_calibration(result.to_dict(), Console())
    if written and not args.json:
        Console(stderr=True).print(f"wrote {written}", highlight=False)
    return 0


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v * 1e3:,.2f}"


def _pct(v: float) -> str:
    return f"{v:.1%}"


def print_calibration(d: dict[str, Any], console: Any) -> None:
    """The points (measured against predicted before and after), the fit and its errors."""
    from rich.markup import escape
    from rich.table import Table

    base = d["base_engine"]
    t = Table(title=f"measured against simulated (engine {base} before, fitted after)",
              title_justify="left")
    for col in ("load", "tool", "TTFT P50 ms", "before", "after", "ITL P50 ms", "before",
                "after", "error before", "error after (held out)"):
        t.add_column(col, justify="left" if col in ("load", "tool") else "right")
    for p in d["points"]:
        unit = "req/s" if p["load"] == "rps" else "clients"
        m, b, a = p["measured"], p["predicted_before"], p["predicted_after"]
        t.add_row(f"{p['value']:g} {unit}", p["tool"], _ms(m.get("ttft_s.p50")),
                  _ms(b.get("ttft_s.p50")), _ms(a.get("ttft_s.p50")), _ms(m.get("itl_s.p50")),
                  _ms(b.get("itl_s.p50")), _ms(a.get("itl_s.p50")), _pct(p["error_before"]),
                  _pct(p["error_after"]))
    console.print(t)
    f = d["fitted"]
    how = "" if d["request_overhead_fitted"] else " (not determined: kept)"
    console.print(f"fitted: step overhead {f['step_overhead_us']:,.1f} us, request overhead "
                  f"{f['request_overhead_us']:,.1f} us{how}, on {len(d['points'])} points "
                  f"(k-fold, k={d['k']})", highlight=False)
    console.print(f"error before ({escape(base)} engine): {_pct(d['error_before'])}; after: "
                  f"{_pct(d['error_after'])} held out ({_pct(d['error_after_in_sample'])} in "
                  "sample)", highlight=False)
    hw = d["provenance"].get("hardware", {})
    console.print(f"[dim]hardware held fixed: {escape(str(hw.get('name')))} "
                  f"({escape(str(hw.get('source')))}), TP={d['provenance'].get('tp')}; error = "
                  f"mean |predicted - measured| / measured over "
                  f"{escape(', '.join(d['compared']))}[/dim]")
    for n in d["notes"]:
        console.print(f"[dim]note: {escape(n)}[/dim]")
