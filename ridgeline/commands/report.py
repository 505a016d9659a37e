"""Render a profile as report.html (self-contained) and report.md with PNG figures.

    ridgeline report PROFILE.json [-o DIR] [--validation VALIDATION.json]

DIR defaults to the profile's folder. A validation.json beside the profile
(written by `ridgeline validate`) is picked up and rendered as its own section.

A report is derived data, so DIR goes through the same checks as every output
(ridgeline.outputs) but needs no --force: a report already there is rewritten
(its old figures removed, so none is left beside the new report), while a
folder holding another profile.json than PROFILE.json is refused, since the
report would sit beside the wrong measurements. A file, an unwritable folder,
a folder locked by a running `ridgeline profile`, or a full disk is one line.
The rendering is ridgeline.reports.render.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ridgeline.errors import RidgelineError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", metavar="PROFILE.json",
                   help="a profile written by `ridgeline profile`")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="output folder (default: the profile's folder)")
    p.add_argument("--validation", default=None, metavar="FILE",
                   help="a validation.json to include "
                        "(default: validation.json beside the profile)")


def load_validation(path: Path, required: bool = False) -> dict[str, Any] | None:
    """A validation.json as a dict; None (with a warning) when absent or unreadable,
    unless `required` (given with --validation): then one RidgelineError."""
    from ridgeline.validation.output import read_validation

    if not path.exists():
        if required:
            raise RidgelineError(f"validation file not found: {path}")
        return None
    try:
        return read_validation(path)
    except (OSError, ValueError) as exc:
        if required:
            raise RidgelineError(f"{path} is not a ridgeline validation file: {exc}") from None
        print(f"ridgeline report: warning: ignoring {path}: {exc}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    from ridgeline.outputs import OutputError, prepare_output_dir
    from ridgeline.partial import PARTIAL_NAME
    from ridgeline.reports.render import write_report
    from ridgeline.roofline.profile import load_profile

    profile_path = Path(args.profile)
    if profile_path.name == PARTIAL_NAME:
        raise RidgelineError(f"{profile_path} is the record log of an unfinished run, not a "
                             "profile: finish it with `ridgeline profile --resume "
                             f"{profile_path.parent}`")
    profile = load_profile(profile_path)
    if args.validation:
        validation = load_validation(Path(args.validation), required=True)
    else:
        validation = load_validation(profile_path.parent / "validation.json")
    folder = Path(args.output) if args.output else profile_path.parent
    with prepare_output_dir(folder, force=False, what="report",
                            input_profile=profile_path) as out:
        try:
            paths = write_report(profile, out.path, validation)
        except OSError as exc:  # a full disk mid-report: one line
            raise OutputError(f"cannot write {exc.filename or folder}: "
                              f"{exc.strerror or exc}") from None
        out.clear(keep=tuple(p.name for p in paths))  # figures this profile no longer draws
    print(f"wrote {paths[1]} (self-contained) and {paths[0]} with {len(paths) - 2} figures")
    return 0
