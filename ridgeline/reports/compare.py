"""Compare a node's profile against a reference profile: ceilings and fitted parameters.

    ridgeline compare PROFILE.json REFERENCE.json [--threshold 0.10] [--json]

ratio = node / reference for every quantity both profiles hold. A quantity
deviates when |ratio - 1| > threshold; it is *worse* when it deviates in the
bad direction (lower bandwidth or TFLOP/s, higher latency). Exit code 1 when
any measured ceiling (memory bandwidth per kernel, matmul TFLOP/s per dtype,
interconnect bandwidth) is worse than the reference beyond the threshold, 0
otherwise: usable as a fleet acceptance gate. Fitted model parameters are
shown and flagged but do not fail the gate (they move with the fit, not only
with the hardware).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

DEFAULT_THRESHOLD = 0.10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", metavar="PROFILE.json", help="the node's profile")
    p.add_argument("reference", metavar="REFERENCE.json", help="the reference profile")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"relative deviation that is flagged (default {DEFAULT_THRESHOLD:g}, "
                        "i.e. 10 percent)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _quantities(profile: dict[str, Any]) -> dict[str, tuple[float, str, bool, str]]:
    """name -> (value, unit, higher_is_better, kind) for every comparable number."""
    out: dict[str, tuple[float, str, bool, str]] = {}

    def put(name: str, value: Any, unit: str, higher: bool, kind: str) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            out[name] = (float(value), unit, higher, kind)

    ceil = profile.get("ceilings") or {}
    for kernel, v in (ceil.get("memory_bandwidth_GBps") or {}).items():
        put(f"{kernel} bandwidth", v, "GB/s", True, "ceiling")
    for dtype, v in (ceil.get("matmul_TFLOPS") or {}).items():
        put(f"{dtype} matmul", v, "TFLOP/s", True, "ceiling")
    ic = profile.get("interconnect") or {}
    for direction, v in (ic.get("host_link_GBps") or {}).items():
        put(f"host link {direction}", v, "GB/s", True, "ceiling")
    for name, per_world in ic.items():
        if name in ("host_link_GBps", "topology") or not isinstance(per_world, dict):
            continue
        for world, fit in per_world.items():
            if isinstance(fit, dict):
                put(f"{name} n={world} busbw", fit.get("busbw_GBps"), "GB/s", True, "ceiling")
                put(f"{name} n={world} alpha", fit.get("alpha_us"), "us", False, "fitted")
    model = profile.get("model") or {}
    put("model bandwidth", model.get("bandwidth_GBps"), "GB/s", True, "fitted")
    put("model latency floor", model.get("latency_floor_us"), "us", False, "fitted")
    put("model per-kernel overhead", model.get("overhead_us"), "us", False, "fitted")
    for dtype, p in (model.get("matmul") or {}).items():
        put(f"model {dtype} peak", p.get("peak_TFLOPS"), "TFLOP/s", True, "fitted")
        if p.get("peak_TFLOPS") and p.get("flops_half"):
            # flops_half as the time it costs (flops_half / peak): comparable across devices
            startup_us = p["flops_half"] / (p["peak_TFLOPS"] * 1e12) * 1e6
            put(f"model {dtype} GEMM start-up", startup_us if startup_us > 1e-3 else None, "us",
                False, "fitted")
    return out


def compare_profiles(node: dict[str, Any], reference: dict[str, Any],
                     threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Rows of (quantity, node, reference, ratio, flag) and the gate's verdict."""
    a, b = _quantities(node), _quantities(reference)
    rows = []
    for name in list(b) + [n for n in a if n not in b]:
        va, vb = a.get(name), b.get(name)
        unit, higher, kind = (vb or va)[1:]  # type: ignore[index]
        row: dict[str, Any] = {"quantity": name, "kind": kind, "unit": unit,
                               "higher_is_better": higher,
                               "node": va[0] if va else None, "reference": vb[0] if vb else None,
                               "ratio": None, "flag": ""}
        if va and vb:
            ratio = va[0] / vb[0]
            row["ratio"] = ratio
            if abs(ratio - 1.0) > threshold:
                worse = ratio < 1.0 if higher else ratio > 1.0
                row["flag"] = "worse" if worse else "better"
        else:
            row["flag"] = "only in reference" if vb else "only in node"
        rows.append(row)
    worse = [r["quantity"] for r in rows if r["flag"] == "worse" and r["kind"] == "ceiling"]

    def name(p: dict[str, Any]) -> str:
        return str(((p.get("provenance") or {}).get("device") or {}).get("name", "?"))

    return {"node_device": name(node), "reference_device": name(reference), "threshold": threshold,
            "rows": rows, "worse_ceilings": worse, "exit_code": 1 if worse else 0}


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"


def run(args: argparse.Namespace) -> int:
    from ridgeline.errors import RidgelineError
    from ridgeline.roofline.profile import load_profile

    if not 0 < args.threshold < 10:
        raise RidgelineError(f"--threshold {args.threshold} is not a fraction such as 0.10")
    result = compare_profiles(load_profile(args.profile), load_profile(args.reference),
                              args.threshold)
    if args.json:
        print(json.dumps(result, indent=1))
        return result["exit_code"]
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{result['node_device']} vs reference {result['reference_device']} "
                        f"(flag beyond {args.threshold:.0%})")
    for col in ("quantity", "kind", "node", "reference", "node / reference", "flag"):
        numeric = col in ("node", "reference", "node / reference")
        table.add_column(col, justify="right" if numeric else "left")
    for r in result["rows"]:
        style = {"worse": "bold red", "better": "green"}.get(r["flag"], "")
        table.add_row(r["quantity"], r["kind"], f"{_fmt(r['node'])} {r['unit']}",
                      f"{_fmt(r['reference'])} {r['unit']}",
                      f"{r['ratio']:.3f}" if r["ratio"] is not None else "-", r["flag"],
                      style=style)
    console.print(table)
    if result["worse_ceilings"]:
        console.print("[bold red]FAIL[/bold red]: worse than the reference beyond "
                      f"{args.threshold:.0%}: " + ", ".join(result["worse_ceilings"]))
    else:
        console.print(f"OK: no ceiling worse than the reference beyond {args.threshold:.0%}")
    return result["exit_code"]
