"""Command line: `ridgeline <command>`, one module of ridgeline.commands each (COMMANDS below).

Each subcommand is one module of ridgeline.commands exposing `add_arguments(parser)`
and `run(args) -> int`, imported lazily, so `ridgeline plan` never imports torch.
`python -m ridgeline` (ridgeline/__main__.py) runs the same main().
Errors a user can act on (RidgelineError) print as one line and exit 2; a reader
that closes the pipe early (`ridgeline devices --json | head -1`) ends it quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ridgeline import __version__
from ridgeline.errors import RidgelineError

# name -> (module, one-line help); every module is ridgeline.commands.<name>
COMMANDS: dict[str, tuple[str, str]] = {
    "devices": ("ridgeline.commands.devices",
                "list accelerators and the CPU with capabilities"),
    "profile": ("ridgeline.commands.profile",
                "measure this device and write profile.json"),
    "report": ("ridgeline.commands.report",
               "render a profile as HTML/markdown with the roofline chart"),
    "compare": ("ridgeline.commands.compare",
                "compare a profile against a reference profile"),
    "fleet": ("ridgeline.commands.fleet",
              "many devices' profiles against their median: outliers, slow GPUs, bad links"),
    "plan": ("ridgeline.commands.plan",
             "size an LLM deployment from a measured profile"),
    "simulate": ("ridgeline.commands.simulate",
                 "simulate one serving replica under load: the latency-throughput curve, "
                 "its knee and SLO point"),
    "calibrate": ("ridgeline.commands.calibrate",
                  "fit the engine layer (step and request overhead) from real serving "
                  "benchmarks, the hardware held fixed"),
    "validate": ("ridgeline.commands.validate",
                 "predicted against measured on a real transformer"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ridgeline",
        description="Measure the roofline an accelerator really delivers; size LLM inference from it.")
    parser.add_argument("--version", action="version", version=f"ridgeline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("ridgeline"):
                continue  # a command whose module is not part of this build
            raise
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip()
                           .split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


# What `pip install ridgeline[measure]` adds; the planner, report and compare need none of it.
MEASURE_MODULES = ("torch", "triton", "pynvml")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe must raise here, not in the interpreter's exit flush
        return code
    except RidgelineError as exc:
        print(f"ridgeline {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"ridgeline {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 1  # what Python exits with on EPIPE; the reader has what it wanted
    except ModuleNotFoundError as exc:
        if exc.name not in MEASURE_MODULES:
            raise
        print(f"ridgeline {args.command}: error: measuring needs {exc.name}, which is not "
              "installed: install the torch build for your GPU (or `pip install torch` for the "
              "CPU), then `pip install 'ridgeline[measure]'`", file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    """The reader of stdout went away (`| head -1`): point stdout at /dev/null so the
    interpreter's flush at exit does not raise a second BrokenPipeError (Python docs,
    "Note on SIGPIPE")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (captured in tests): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)

