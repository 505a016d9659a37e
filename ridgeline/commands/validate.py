"""Predicted against measured: time a real transformer forward pass and score the planner.

    ridgeline validate --model llama-3.1-8b --weights bf16 --batch 1,8,32,128 --context 1024,4096
                       [--prefill 128,1024,4096,16384] [--profile P] [--layers N]
                       [--device cuda:0|cpu] [-o DIR] [--json]
    ridgeline validate --device cpu --model tiny        # runs anywhere, in seconds
    ridgeline validate --tp 4 --model llama-3.1-70b --layers 8   # 4 local GPUs, NCCL
    torchrun --nproc-per-node 4 -m ridgeline validate --tp 4 ...  # the same, under torchrun

Builds the model's decoder layers with random weights on the device, measures
decode steps (CUDA graphs and eager) and prefills, predicts both with the
planner's equations on the measured profile and on datasheet peaks, and writes
DIR/validation.json, DIR/validation.md and DIR/validation.png. Without
--profile it reads ./ridgeline-out/profile.json (made by `ridgeline profile`).
Ctrl-C keeps the finished points (the files are written marked incomplete).
-o is checked and locked before anything is measured (ridgeline.outputs): a
file, an unwritable folder or one already holding a validation.json (unless
--force) is one line; the files are written atomically. The run itself is
ridgeline.validation.run; this module parses the flags and prints.
--tp N shards the layers over N ranks (ridgeline.validation.tp), spawned here
(or started by torchrun), and adds the all-reduce share, measured and predicted,
to every point; a rank that dies or stays silent for --timeout-s is one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ridgeline.errors import RidgelineError
from ridgeline.validation import run as vrun
from ridgeline.validation.measure import DEFAULT_PASSES_CPU
from ridgeline.validation.run import (DEFAULT_PREFILL, DEFAULT_PREFILL_CPU,
                                      DEFAULT_RANK_TIMEOUT_S, Setup, Sweep, check_window, prepare,
                                      save, validate)

DEFAULT_PROFILE = Path("ridgeline-out") / "profile.json"
DEFAULT_BATCHES = "1,8,32,128"
DEFAULT_CONTEXTS = "1024,4096"


def _csv(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="llama-3.1-8b",
                   help="bundled model name (e.g. llama-3.1-8b, tiny) or a HF config.json path "
                        "(dense models; default llama-3.1-8b)")
    p.add_argument("--weights", default="bf16", help="bf16 | fp16 | fp8 (default bf16)")
    p.add_argument("--batch", default=DEFAULT_BATCHES,
                   help=f"decode batch sizes, comma-separated (default {DEFAULT_BATCHES})")
    p.add_argument("--context", default=DEFAULT_CONTEXTS,
                   help=f"tokens already in the KV cache at the decode step "
                        f"(default {DEFAULT_CONTEXTS}; 'none' skips decode)")
    p.add_argument("--prefill", default=None,
                   help=f"prefill input lengths at batch 1 (default {_csv(DEFAULT_PREFILL)}, on "
                        f"the CPU {_csv(DEFAULT_PREFILL_CPU)}; 'none' skips prefill)")
    p.add_argument("--profile", default=None, metavar="P",
                   help=f"profile.json to predict from (default ./{DEFAULT_PROFILE})")
    p.add_argument("--layers", default=None, metavar="N",
                   help="measure at most N decoder layers and scale to the full depth "
                        "(default: the full depth where it fits in memory)")
    p.add_argument("--device", default=None, help="cuda:N, rocm:N or cpu (default: first GPU, "
                                                  "else cpu)")
    p.add_argument("-o", "--output", default="ridgeline-out", metavar="DIR",
                   help="output folder (default ./ridgeline-out)")
    p.add_argument("--rep-ms", default="200", metavar="MS",
                   help="timing budget per point and mode in ms (default 200)")
    p.add_argument("--passes", default=None, metavar="N",
                   help=f"measure every point N times, in passes of alternating order, and "
                        f"quote each point's median (default {DEFAULT_PASSES_CPU} on the CPU, "
                        f"whose memory bandwidth moves over seconds; 1 on a GPU; --tp: 1)")
    p.add_argument("--tp", default=None, metavar="N",
                   help="tensor-parallel over N ranks (local GPUs, or N CPU ranks over gloo; "
                        "under torchrun, its WORLD_SIZE): sharded layers, real all-reduces, "
                        "the all-reduce share measured and predicted; 1: one device")
    p.add_argument("--timeout-s", default=None, metavar="S",
                   help=f"with --tp: a rank that makes no progress for S seconds stops the run "
                        f"(default {DEFAULT_RANK_TIMEOUT_S:g})")
    p.add_argument("--json", action="store_true", help="print validation.json instead of a table")
    p.add_argument("--force", action="store_true",
                   help="replace a validation already in DIR (other files are kept)")


def parse_int_list(text: str, flag: str, *, allow_none: bool = False) -> list[int]:
    """"1,8,32" -> [1, 8, 32]; positive integers only, one-line RidgelineError otherwise."""
    text = (text or "").strip()
    if allow_none and text.lower() in ("", "none", "0"):
        return []
    values = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = int(item)
        except ValueError:
            raise RidgelineError(f"{flag} takes comma-separated positive integers, got {item!r}") \
                from None
        if value < 1:
            raise RidgelineError(f"{flag} values must be positive integers, got {value}")
        values.append(value)
    if not values:
        raise RidgelineError(f"{flag} is empty")
    return sorted(set(values), key=values.index)


def parse_positive(text: str | None, flag: str, kind=int):
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise RidgelineError(f"{flag} takes a positive number, got {text!r}") from None
    if value <= 0:
        raise RidgelineError(f"{flag} must be positive, got {text}")
    return value


def resolve_profile(path: str | None) -> Path:
    if path:
        return Path(path)
    if DEFAULT_PROFILE.exists():
        return DEFAULT_PROFILE
    raise RidgelineError(f"no profile: ./{DEFAULT_PROFILE} does not exist; run `ridgeline profile` "
                         "on this device first, or pass --profile P")


def command_line(args: argparse.Namespace) -> list[str]:
    """The command as the user could re-run it (provenance)."""
    cmd = ["ridgeline", "validate", "--model", args.model, "--weights", args.weights,
           "--batch", args.batch, "--context", args.context]
    for flag, value in (("--prefill", args.prefill), ("--profile", args.profile),
                        ("--layers", args.layers), ("--device", args.device), ("-o", args.output),
                        ("--rep-ms", args.rep_ms), ("--passes", args.passes), ("--tp", args.tp),
                        ("--timeout-s", args.timeout_s)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + (["--json"] if args.json else []) + (["--force"] if args.force else [])


def run(args: argparse.Namespace) -> int:
    # everything a user can get wrong is checked before the device is touched
    batches = parse_int_list(args.batch, "--batch")
    contexts = parse_int_list(args.context, "--context", allow_none=True)
    prefills = (parse_int_list(args.prefill, "--prefill", allow_none=True)
                if args.prefill is not None else None)
    sweep = Sweep(batches=tuple(batches), contexts=tuple(contexts),
                  prefills=tuple(prefills) if prefills is not None else None,
                  layers_cap=parse_positive(args.layers, "--layers"),
                  rep_ms=parse_positive(args.rep_ms, "--rep-ms", float),
                  passes=parse_positive(args.passes, "--passes"))

    tp = parse_positive(args.tp, "--tp")
    timeout_s = parse_positive(args.timeout_s, "--timeout-s", float) or DEFAULT_RANK_TIMEOUT_S
    if tp is not None and tp > 1 and (sweep.passes or 1) > 1:
        raise RidgelineError("--passes applies to one device: a --tp run measures every point "
                             "once (its ranks would all have to repeat a pass together)")

    from ridgeline.outputs import prepare_output_dir

    setup = prepare(args.model, args.weights, resolve_profile(args.profile), command_line(args))
    check_window(setup.spec, sweep)
    if tp is not None and tp > 1:  # --tp 1 is the single-device run
        return _run_tp(args, setup, sweep, tp, timeout_s)
    # the output folder before the device: a refused -o costs nothing, not minutes of measuring
    with prepare_output_dir(args.output, force=args.force, what="validation") as out:
        result, code = _measure(setup, sweep, args.device)
        written = save(result, out)
        _print(result, written, as_json=args.json)
        return code


def _run_tp(args: argparse.Namespace, setup: Setup, sweep: Sweep, tp: int,
            timeout_s: float) -> int:
    """--tp N: spawn N local ranks, or be one rank of a torchrun launch."""
    from ridgeline.outputs import prepare_output_dir
    from ridgeline.ranks import launched_by_torchrun

    def open_output():
        return prepare_output_dir(args.output, force=args.force, what="validation")

    def show(result: dict[str, Any], written: dict[str, Path]) -> None:
        _print(result, written, as_json=args.json)

    if launched_by_torchrun():
        return vrun.validate_tp_torchrun(setup, sweep, tp, args.device, open_output=open_output,
                                         show=show, timeout_s=timeout_s)
    vrun.check_tp(setup, tp)  # before the output folder: a refused --tp costs nothing
    vrun.tp_device_kind(args.device, tp)
    with open_output() as out:
        try:
            result, code = _measure(setup, sweep, args.device, tp=tp, timeout_s=timeout_s)
        except vrun.TPFailure as exc:
            if not exc.result:
                raise
            written = save(exc.result, out)  # the finished points are not lost
            raise RidgelineError(f"{exc} (the {len(exc.result['points'])} finished point(s) are "
                                 f"in {written['json']}, marked incomplete)") from None
        show(result, save(result, out))
        return code


def _measure(setup: Setup, sweep: Sweep, device_id: str | None, *, tp: int | None = None,
             timeout_s: float = DEFAULT_RANK_TIMEOUT_S) -> tuple[dict[str, Any], int]:
    """validation.run.validate (or validate_tp) under a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = None

        def on_progress(description: str, done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = progress.add_task(description, total=total)
            progress.update(task, description=description, completed=done, total=total)

        if tp is not None:
            return vrun.validate_tp(setup, sweep, tp, device_id, on_progress, timeout_s=timeout_s)
        return validate(setup, sweep, device_id, on_progress)


def _print(result: dict[str, Any], written: dict[str, Path], *, as_json: bool) -> None:
    """The table (or the JSON) on stdout, the files written on stderr."""
    import json

    from rich.console import Console

    from ridgeline.validation.output import clean, print_result

    if as_json:
        print(json.dumps(clean(result), indent=1))
    else:
        print_result(result, Console())
    Console(stderr=True).print("wrote " + ", ".join(str(p) for p in written.values()))
