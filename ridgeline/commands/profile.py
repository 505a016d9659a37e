"""Measure a device and write DIR/profile.json, DIR/records.csv and the report.

    ridgeline profile [--device cuda:0|cpu] [--quick] [--probes hbm,matmul] [-o DIR] [--no-report]

Profiles the first GPU, or the CPU when there is none (and says so). Ctrl-C
keeps every finished case: the profile is written marked incomplete.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ridgeline.probes import DEFAULT_PROBES, REGISTRY


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None,
                   help="cuda:N (NVIDIA or AMD), rocm:N or cpu (default: first GPU, else cpu)")
    p.add_argument("--quick", action="store_true", help="a short sweep (seconds, not minutes)")
    p.add_argument("--probes", default=None,
                   help=f"comma-separated probes (default: {','.join(DEFAULT_PROBES)}; "
                        f"known: {','.join(REGISTRY)})")
    p.add_argument("-o", "--output", default="ridgeline-out", metavar="DIR",
                   help="output folder (default ./ridgeline-out)")
    p.add_argument("--no-report", action="store_true", help="skip report.html/report.md")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ridgeline.device import get_device
    from ridgeline.probes import parse_probe_list
    from ridgeline.runner import run_profile

    console = Console(stderr=True)
    probes = parse_probe_list(args.probes)
    device = get_device(args.device)
    if args.device is None and device.kind == "cpu":
        console.print("[yellow]no GPU visible to torch: profiling the CPU[/yellow]")
    console.print(f"profiling [bold]{device.name}[/bold] ({device.id}); probes: {', '.join(probes)}"
                  + (" (quick)" if args.quick else ""))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("planning", total=None)

        def on_progress(label: str, done: int, total: int) -> None:
            progress.update(task, description=label[:60], completed=done, total=total)

        profile = run_profile(device, probes, quick=args.quick, out_dir=args.output,
                              command_line=["ridgeline", *sys.argv[1:]], on_progress=on_progress,
                              write_report=not args.no_report)
    print_summary(profile, Console())
    console.print(f"wrote {args.output}/profile.json and {args.output}/records.csv"
                  + ("" if args.no_report else f" and {args.output}/report.html"))
    return 0 if profile["complete"] else 130


def _num(value: float) -> str:
    """Three significant figures, thousands separated: 3,050 / 789.6 / 0.0842."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _pct(measured: float | None, sheet: float | None) -> str:
    return f"{100 * measured / sheet:.0f}%" if measured and sheet else "-"


def summary_rows(profile: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(ceiling, measured, datasheet, measured/datasheet, where) rows of the summary table."""
    rows = []
    ceil = profile["ceilings"]
    sheet = profile.get("datasheet") or {}
    for kernel, value in ceil.get("memory_bandwidth_GBps", {}).items():
        d = ceil.get("memory_bandwidth_detail", {}).get(kernel, {})
        peak = sheet.get("memory_bandwidth_GBps")
        where = f"{d.get('provider', '?')}, median of {d.get('n_points', '?')} sizes " \
                f">= {(d.get('plateau_min_bytes') or 0) / 2**20:.0f} MiB"
        rows.append((f"{kernel} bandwidth", f"{_num(value)} GB/s",
                     f"{peak:,.0f} GB/s" if peak else "-", _pct(value, peak), where))
    for dtype, value in ceil.get("matmul_TFLOPS", {}).items():
        d = ceil.get("matmul_detail", {}).get(dtype, {})
        peak = (sheet.get("matmul_TFLOPS") or {}).get(dtype)
        rows.append((f"{dtype} matmul", f"{_num(value)} TFLOP/s",
                     f"{peak:,.1f} TFLOP/s" if peak else "-", _pct(value, peak),
                     f"{d.get('provider')} M={d.get('m')} N={d.get('n')} K={d.get('k')}"))
    model = profile.get("model") or {}
    if model.get("latency_floor_us"):
        rows.append(("latency floor", f"{model['latency_floor_us']:.1f} us", "-", "-",
                     "per kernel, from the launch probe"))
    ic = profile.get("interconnect") or {}
    for direction, value in (ic.get("host_link_GBps") or {}).items():
        if isinstance(value, (int, float)):
            rows.append((f"host link {direction}", f"{_num(value)} GB/s", "-", "-", "pinned"))
    for world, fit in sorted((ic.get("allreduce") or {}).items()):
        rows.append((f"all-reduce n={world}", f"{_num(fit.get('busbw_GBps') or 0)} GB/s busbw", "-",
                     "-", f"alpha {fit.get('alpha_us', 0):.1f} us, {fit.get('source', '')}"))
    return rows


def print_summary(profile: dict[str, Any], console) -> None:
    from rich.table import Table

    dev = profile["provenance"]["device"]
    table = Table(title=f"ridgeline profile: {dev['name']}")
    for col in ("ceiling", "measured", "datasheet", "measured/datasheet", "where"):
        table.add_column(col, justify="right" if col in ("measured", "datasheet",
                                                          "measured/datasheet") else "left")
    for row in summary_rows(profile):
        table.add_row(*row)
    console.print(table)
    if profile.get("datasheet"):
        console.print(f"datasheet: {profile['datasheet'].get('source')}")
    fit_error = (profile.get("model") or {}).get("fit_error") or {}
    for probe, err in fit_error.items():
        if isinstance(err, dict) and err.get("median") is not None:
            console.print(f"model fit error on {probe} records: median {100 * err['median']:.1f}%, "
                          f"worst {100 * err.get('worst', 0):.1f}%")
    waived = profile.get("waived") or []
    if waived:
        reasons: dict[str, set[str]] = {}
        for w in waived:
            reasons.setdefault(w["reason"], set()).add(f"{w['probe']}"
                                                       + (f" {w['dtype']}" if w.get("dtype") else ""))
        for reason, what in reasons.items():
            console.print(f"[dim]waived: {', '.join(sorted(what))}: {reason}[/dim]")
    for warning in profile.get("warnings", []):
        console.print(f"[yellow]warning: {warning}[/yellow]")
    if not profile["complete"]:
        console.print(f"[red]incomplete: {profile.get('incomplete_reason')}[/red]")
