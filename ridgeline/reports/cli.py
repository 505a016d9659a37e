"""Render a profile as report.html (self-contained) and report.md with PNG figures.

    ridgeline report PROFILE.json [-o DIR] [--validation VALIDATION.json]

DIR defaults to the profile's folder. A validation.json beside the profile
(written by `ridgeline validate`) is picked up and rendered as its own section.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ridgeline.errors import RidgelineError

VALIDATION_KIND = "ridgeline-validation"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", metavar="PROFILE.json",
                   help="a profile written by `ridgeline profile`")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="output folder (default: the profile's folder)")
    p.add_argument("--validation", default=None, metavar="FILE",
                   help="a validation.json to include "
                        "(default: validation.json beside the profile)")


def load_validation(path: Path, required: bool = False) -> dict[str, Any] | None:
    """A validation.json as a dict; None (with a warning) when absent or unreadable."""
    if not path.exists():
        if required:
            raise RidgelineError(f"validation file not found: {path}")
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("kind") != VALIDATION_KIND:
            raise ValueError(f"'kind' is not {VALIDATION_KIND!r}")
    except (OSError, ValueError) as exc:
        if required:
            raise RidgelineError(f"{path} is not a ridgeline validation file: {exc}") from None
        print(f"ridgeline report: warning: ignoring {path}: {exc}", file=sys.stderr)
        return None
    return data


def run(args: argparse.Namespace) -> int:
    from ridgeline.reports.render import write_report
    from ridgeline.roofline.profile import load_profile

    profile_path = Path(args.profile)
    profile = load_profile(profile_path)
    out = Path(args.output) if args.output else profile_path.parent
    if args.validation:
        validation = load_validation(Path(args.validation), required=True)
    else:
        validation = load_validation(profile_path.parent / "validation.json")
    paths = write_report(profile, out, validation)
    print(f"wrote {paths[1]} (self-contained) and {paths[0]} with {len(paths) - 2} figures")
    return 0
