"""Compare a node's profile against a reference profile: ceilings and fitted parameters.

    ridgeline compare PROFILE.json REFERENCE.json [--threshold 0.10] [--json]

Exit code 1 when any measured ceiling is worse than the reference beyond the
threshold, 0 otherwise: usable as a fleet acceptance gate. What is compared,
and when a ceiling is called worse or left ungated: ridgeline.reports.compare.
"""

from __future__ import annotations

import argparse
import json

from ridgeline.reports.compare import DEFAULT_THRESHOLD


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", metavar="PROFILE.json", help="the node's profile")
    p.add_argument("reference", metavar="REFERENCE.json", help="the reference profile")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"relative deviation that is flagged (default {DEFAULT_THRESHOLD:g}, "
                        "i.e. 10 percent)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def run(args: argparse.Namespace) -> int:
    from ridgeline.errors import RidgelineError
    from ridgeline.reports.compare import compare_profiles, print_comparison
    from ridgeline.roofline.profile import load_profile

    if not 0 < args.threshold < 10:
        raise RidgelineError(f"--threshold {args.threshold} is not a fraction such as 0.10")
    result = compare_profiles(load_profile(args.profile), load_profile(args.reference),
                              args.threshold)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_comparison(result)
    return result["exit_code"]
