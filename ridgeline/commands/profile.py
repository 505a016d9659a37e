"""Measure a device and write DIR/profile.json, DIR/records.csv and the report.

    ridgeline profile [--device cuda:0|cpu] [--quick] [--probes hbm,matmul] [-o DIR] [--no-report]
                      [--force]
    ridgeline profile --resume DIR
    torchrun --nnodes N --nproc-per-node G -m ridgeline profile -o DIR [...] [--rank-timeout-s S]

Profiles the first GPU, or the CPU when there is none (and says so). The output
folder is checked and locked before the device is touched: one holding a
profile is refused unless --force. Ctrl-C keeps every finished case: the
profile is written marked incomplete; a killed run leaves
DIR/records.partial.jsonl. `--resume DIR` continues either with the run's own
device, probes and sweep, measuring only the cases not yet measured.

Under torchrun (WORLD_SIZE > 1) every rank profiles its own device (cuda:LOCAL_RANK, or
the CPU) into DIR/<host>-<local_rank>/, the group then measures the collectives and the
inter-node link into every rank's profile, and rank 0 writes DIR/fleet.json: see
ridgeline.fleet_run and docs/torchrun.md. WORLD_SIZE unset or 1: the run described above.

Exit status: 0 complete; 130 interrupted; 1 incomplete for another reason (a
failed case, a probe that produced no usable record); 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ridgeline.errors import RidgelineError
from ridgeline.probes import DEFAULT_PROBES, REGISTRY
from ridgeline.roofline.sections import ModelSection

DEFAULT_OUTPUT = "ridgeline-out"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None,
                   help="cuda:N (NVIDIA or AMD), rocm:N or cpu (default: first GPU, else cpu)")
    p.add_argument("--quick", action="store_true", help="a short sweep (seconds, not minutes)")
    p.add_argument("--probes", default=None,
                   help=f"comma-separated probes (default: {','.join(DEFAULT_PROBES)}; "
                        f"known: {','.join(REGISTRY)})")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help=f"output folder (default ./{DEFAULT_OUTPUT})")
    p.add_argument("--no-report", action="store_true", help="skip report.html/report.md")
    p.add_argument("--force", action="store_true",
                   help="replace a profile already in DIR (its records, report, figures and "
                        "validation are removed; other files are kept)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the killed or interrupted run in DIR: same device, probes and "
                        "sweep; only the cases not yet measured are run")
    p.add_argument("--rank-timeout-s", type=float, default=None, metavar="S",
                   help="under torchrun: how long the ranks wait for each other at each stage "
                        "before naming the ones that did not come (default 1800)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ridgeline.outputs import prepare_output_dir

    console = Console(stderr=True)
    if _under_torchrun():
        return _run_torchrun(args)
    if args.resume is not None:
        return _resume(args, console)
    from ridgeline.device import get_device
    from ridgeline.probes import parse_probe_list

    probes = parse_probe_list(args.probes)
    folder = Path(args.output or DEFAULT_OUTPUT)
    # the folder first: a refused -o costs nothing, not minutes of measuring
    with prepare_output_dir(folder, force=args.force, what="profile") as out:
        for note in out.notes:
            console.print(f"[yellow]warning: {note}[/yellow]")
        device = get_device(args.device)
        if args.device is None and device.kind == "cpu":
            console.print("[yellow]no GPU visible to torch: profiling the CPU[/yellow]")
        console.print(f"profiling [bold]{device.name}[/bold] ({device.id}); probes: "
                      f"{', '.join(probes)}" + (" (quick)" if args.quick else ""))
        _say_removed(out.clear(), console)
        profile = _measure(device, probes, folder, console, quick=args.quick,
                           write_report=not args.no_report)
        return _finish(profile, folder, console, write_report=not args.no_report)


def _under_torchrun() -> bool:
    from ridgeline.fleet_run import group_world_size

    return group_world_size() > 1


def _run_torchrun(args: argparse.Namespace) -> int:
    """One rank of a torchrun job (ridgeline.fleet_run does the work; this side measures with
    the progress bar and prints)."""
    from ridgeline.fleet_run import DEFAULT_RANK_TIMEOUT_S, GroupRequest, Hooks, run_group
    from ridgeline.probes import parse_probe_list

    if args.resume is not None:
        raise RidgelineError("--resume continues one device's run: run it without torchrun on "
                             "the rank's own folder (`ridgeline profile --resume "
                             "DIR/<host>-<local_rank>`)")
    req = GroupRequest(output=Path(args.output or DEFAULT_OUTPUT), force=args.force,
                       device=args.device, probes=parse_probe_list(args.probes),
                       quick=args.quick, write_report=not args.no_report,
                       timeout_s=(DEFAULT_RANK_TIMEOUT_S if args.rank_timeout_s is None
                                  else args.rank_timeout_s))

    def measure(device, probes: list[str], folder: Path, console, write_report: bool):
        return _measure(device, probes, folder, console, quick=args.quick,
                        write_report=write_report)

    return run_group(req, Hooks(measure=measure, report=_write_report, summary=print_summary,
                                exit_status=exit_status))


def _resume(args: argparse.Namespace, console) -> int:
    from ridgeline.outputs import PROTECTED, prepare_output_dir
    from ridgeline.partial import load_resume

    folder = Path(args.resume)
    if args.output is not None and Path(args.output).resolve() != folder.resolve():
        raise RidgelineError(f"--resume {folder} writes into {folder} itself; drop -o")
    if args.force:
        raise RidgelineError("--resume keeps the measured records; --force would discard them: "
                             "use one or the other")
    with prepare_output_dir(folder, force=False, what="profile", resume=True) as out:
        state = load_resume(folder)  # read under the lock: no writer is appending now
        if state.complete:
            console.print(f"{_esc(folder)}/profile.json is complete: nothing to resume")
            return 0
        device, probes, quick = _resume_settings(state, args, console)
        kept = [r for r in state.records if r.get("status") != "failed"]
        console.print(f"resuming {_esc(folder)} on [bold]{_esc(device.name)}[/bold] ({device.id}); probes: "
                      f"{', '.join(probes)}" + (" (quick)" if quick else "")
                      + f"; {len(kept)} record(s) kept from {_esc(state.source.name)}"
                      + (f", {len(state.records) - len(kept)} failed case(s) to retry"
                         if len(kept) < len(state.records) else "")
                      + (f", {state.skipped_lines} unreadable line(s) skipped (cut off when the "
                         "run was killed)" if state.skipped_lines else ""))
        _say_removed(out.clear(keep=PROTECTED), console)
        profile = _measure(device, probes, folder, console, quick=quick,
                           write_report=not args.no_report, options=state.options,
                           command_line=state.command_line, resume_records=state.records)
        return _finish(profile, folder, console, write_report=not args.no_report)


def _resume_settings(state, args: argparse.Namespace, console):
    """(device, probes, quick) of the run being continued; the flags may only repeat them."""
    from ridgeline.device import get_device
    from ridgeline.probes import parse_probe_list

    where = f"the run in {state.folder}"
    if state.probes is None:  # an older record log without a header: the flags must say
        if args.probes is None:  # never guess: the default sweep is the longest one
            raise RidgelineError(f"{state.source} does not record its settings (an older "
                                 "ridgeline wrote it): give the run's --probes, and its --device "
                                 "and --quick, with --resume")
        console.print(f"[yellow]{_esc(state.source)} does not record its settings: resuming with "
                      "this command line's --device, --probes and --quick[/yellow]")
    given = parse_probe_list(args.probes) if args.probes is not None else None
    if given is not None and state.probes is not None and given != list(state.probes):
        raise RidgelineError(f"{where} measured --probes {','.join(state.probes)}; --resume "
                             "continues that sweep: drop --probes")
    probes = list(state.probes) if state.probes is not None else \
        (given or parse_probe_list(None))
    if args.quick and state.quick is False:
        raise RidgelineError(f"{where} is a full sweep; --resume continues it: drop --quick")
    quick = bool(state.quick) if state.quick is not None else bool(args.quick)
    device = get_device(args.device if args.device is not None else state.device_id)
    if state.device_id is not None and device.id != state.device_id:
        raise RidgelineError(f"{where} measured {state.device_id}; --resume continues it there: "
                             "drop --device")
    if state.device_name and device.name != state.device_name:
        raise RidgelineError(f"{where} measured {state.device_name!r}, but {device.id} here is "
                             f"{device.name!r}: resume it on the machine that started it")
    return device, probes, quick


def _measure(device, probes: list[str], folder: Path, console, *, quick: bool,
             write_report: bool, options: dict[str, Any] | None = None,
             command_line: list[str] | None = None,
             resume_records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """run_profile under a progress bar; an OSError while writing becomes one line."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ridgeline.outputs import OutputError
    from ridgeline.partial import PARTIAL_NAME
    from ridgeline.runner import run_profile

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("planning", total=None)

            def on_progress(label: str, done: int, total: int) -> None:
                progress.update(task, description=label[:60], completed=done, total=total)

            profile = run_profile(device, probes, quick=quick, out_dir=folder, options=options,
                                  command_line=command_line or ["ridgeline", *sys.argv[1:]],
                                  on_progress=on_progress, resume_records=resume_records)
            if write_report:
                progress.update(task, description="writing the report")
                _write_report(profile, folder)
            return profile
    except OSError as exc:  # a full disk or a folder gone read-only mid-run
        partial = folder / PARTIAL_NAME
        kept = (f"; what was measured is in {partial}: make room, then run "
                f"`ridgeline profile --resume {folder}`"
                if partial.is_file() and partial.stat().st_size else "")
        raise OutputError(f"cannot write {exc.filename or folder}: {exc.strerror or exc}{kept}") \
            from None


def _write_report(profile: dict[str, Any], folder: Path) -> None:
    """The report beside the profile; its failure is a warning saved into profile.json."""
    from ridgeline.reports.render import write_report
    from ridgeline.roofline.profile import save_profile

    try:
        write_report(profile, folder)
    except Exception as exc:  # the profile is the product; a report failure must not lose it
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        profile["warnings"].append(f"report not written: {type(exc).__name__}: {first}")
        save_profile(profile, folder / "profile.json")


def _esc(text: object) -> str:
    """A path or name printed through rich: '[' in it must not read as markup."""
    from rich.markup import escape

    return escape(str(text))


def _say_removed(removed: list[Path], console) -> None:
    if removed:
        console.print(f"removed the old {_esc(', '.join(p.name for p in removed))} from "
                      f"{_esc(removed[0].parent)}")


def interrupted(profile: dict[str, Any]) -> bool:
    """Stopped by the user (Ctrl-C), as against incomplete for another reason."""
    if isinstance(profile.get("interrupted"), bool):
        return profile["interrupted"]
    return str(profile.get("incomplete_reason") or "").startswith("interrupted")


def exit_status(profile: dict[str, Any]) -> int:
    """0 complete; 130 interrupted; 1 incomplete otherwise or a probe with nothing usable."""
    if interrupted(profile):
        return 130
    if not profile.get("complete") or profile.get("unusable_probes"):
        return 1
    return 0


def _finish(profile: dict[str, Any], folder: Path, console, *, write_report: bool) -> int:
    from rich.console import Console

    print_summary(profile, Console())
    shown = _esc(folder)
    report = write_report and (folder / "report.html").is_file()  # a failed report is a warning
    console.print(f"wrote {shown}/profile.json and {shown}/records.csv"
                  + (f" and {shown}/report.html" if report else ""))
    status = exit_status(profile)
    unusable = profile.get("unusable_probes") or []
    if unusable:
        print(f"ridgeline profile: no usable record from {', '.join(unusable)}", file=sys.stderr)
    if status == 130 or (status == 1 and not profile.get("complete")):
        console.print(f"continue it with: ridgeline profile --resume {shown}")
    return status


def print_summary(profile: dict[str, Any], console) -> None:
    """The ceilings table (the report's own), interconnect, fit error, waivers and warnings."""
    from ridgeline.reports.tables import ceilings_table, interconnect_table, to_rich

    dev = profile["provenance"]["device"]
    table = ceilings_table(profile)
    table.title = f"ridgeline profile: {dev['name']}"
    console.print(to_rich(table))
    links = interconnect_table(profile)
    if links:
        console.print(to_rich(links))
    model = ModelSection.of(profile)
    floor = model.latency_floor_us
    if floor:
        console.print(f"latency floor: {floor:.1f} us per kernel (launch probe)")
    fit_error = model.raw.get("fit_error") or {}
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
