"""Node and fleet acceptance: every device of a set of profiles against the set's median.

    ridgeline fleet DIR_OR_FILE... [--reference REF] [--threshold 0.05] [--json] [-o OUTDIR]

Reads profile.json files, or folders searched recursively for profile.json (a torchrun
run's DIR/<host>-<local_rank>/profile.json), and prints per ceiling the median across
devices, the spread and each device's ratio to the median (or to REF), each device named
by its path and identity (host, device, PCI bus id, UUID/serial where recorded), with its
flags: slow ceiling, PCIe link below its maximum, throttling, untrusted ceilings, a
different model or driver. Exit code 1 when any device has a measured ceiling worse than
the median (or REF) beyond the threshold, 0 otherwise; a bad input is one line and exit 2.
-o OUTDIR also writes fleet.json, fleet.html and a PNG per quantity. The work is
ridgeline.reports.fleet; docs/fleet.md says how to read it.
"""

from __future__ import annotations

import argparse
import json
import sys

from ridgeline.reports.fleet import DEFAULT_THRESHOLD


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="DIR_OR_FILE",
                   help="profile.json files, or folders searched recursively for profile.json")
    p.add_argument("--reference", default=None, metavar="REF",
                   help="a reference profile: each device's ratio is to it instead of the "
                        "set's median")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"relative deviation that is flagged (default {DEFAULT_THRESHOLD:g}, "
                        "i.e. 5 percent)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-o", "--output", default=None, metavar="OUTDIR",
                   help="also write OUTDIR/fleet.json, OUTDIR/fleet.html and a PNG chart "
                        "per quantity")


def run(args: argparse.Namespace) -> int:
    from ridgeline.errors import RidgelineError
    from ridgeline.reports.fleet import fleet_summary, load_fleet, print_fleet, write_fleet
    from ridgeline.roofline.profile import json_safe

    if not 0 < args.threshold < 1:
        raise RidgelineError(f"--threshold {args.threshold} is not a fraction such as 0.05")
    result = fleet_summary(load_fleet(args.inputs, args.reference), args.threshold)
    written = write_fleet(result, args.output) if args.output else []
    if args.json:
        print(json.dumps(json_safe(result), indent=1))
    else:
        print_fleet(result)
    if written:
        # stdout stays pure JSON under --json
        print(f"wrote {written[1]} (self-contained), {written[0]} and {len(written) - 2} "
              "charts", file=sys.stderr if args.json else sys.stdout)
    return result["exit_code"]
