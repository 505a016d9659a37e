#!/usr/bin/env python3
"""The targets of issue 10 as one table: measured value, goal, result, ceiling status.

    python3 scripts/gpu_targets.py --profile DIR/profile/profile.json \
        [--quick-profile DIR/quick/profile.json] [--steps DIR/steps.tsv] \
        [--validate bf16=DIR/validate-bf16/validation.json] [--validate fp8=...] \
        [--matmul-sweep DIR/bench/matmul_sweep.json] [--json targets.json]

scripts/gpu_run.sh prints this table last. It reads files only (the profiles,
validation.json, the large-shape matmul sweep written by
benchmarks/bench_matmul.py, the script's step times) and imports neither torch
nor ridgeline, so it runs on any machine against copied-back results.

Targets (H200; H100 SXM where the goal differs, in brackets):
    HBM read >= 4.4 TB/s [3.15], copy >= 4.2 TB/s [2.9], ridgeline's copy >= 0.97 x
    torch's copy (the hbm probe measures both in the same run);
    bf16 matmul >= 780 TFLOP/s, fp8 >= 1400, each >= 0.98 x the best torch.matmul /
    torch._scaled_mm of the large-shape sweep (the mamf-finder method);
    decode GEMV at B = 1..16 on weights >= 64 MB at >= 90% of the read ceiling (per
    weight dtype, the best provider of each point, the worst point quoted);
    fp8 weights >= 1.8 x bf16 tokens/s at B = 1 (weights >= 64 MB, the worst shape);
    default profile <= 90 s, --quick <= 20 s on an H100/H200 (wall clock of the
    script's step when known, else the profile's own duration_s);
    validate (Llama-3.1-8B shape, bf16 and fp8): decode median error <= 10%,
    prefill <= 15%.
Results: "pass", "FAIL", "not measured" (its input is missing), "n/a" (no
absolute goal for this device). The status column is the ceiling's own status
from the profile (verified / unverified / noisy) where there is one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# absolute goals per device family (issue 10); matmul is the same on H100 SXM and H200
BANDWIDTH_GOALS_GBPS = {"h200": {"read": 4400.0, "copy": 4200.0},
                        "h100": {"read": 3150.0, "copy": 2900.0}}
MATMUL_GOALS_TFLOPS = {"h200": {"bf16": 780.0, "fp8": 1400.0},
                       "h100": {"bf16": 780.0, "fp8": 1400.0}}
COPY_VS_TORCH = 0.97
MATMUL_VS_SWEEP = 0.98
GEMV_OF_READ = 0.90
GEMV_MIN_WEIGHT_BYTES = 64e6
GEMV_MAX_BATCH = 16
FP8_SPEEDUP_AT_B1 = 1.8
DEFAULT_PROFILE_S = 90.0
QUICK_PROFILE_S = 20.0
VALIDATE_MEDIAN_ERROR = {"decode": 0.10, "prefill": 0.15}

PASS, FAIL, NOT_MEASURED, NA = "pass", "FAIL", "not measured", "n/a"


@dataclass
class Target:
    """One row of the table."""

    name: str
    measured: str                 # formatted, "-" when not measured
    goal: str
    result: str                   # PASS | FAIL | NOT_MEASURED | NA
    status: str = "-"             # the ceiling's status in the profile, where there is one
    note: str = ""                # where the number comes from
    value: float | None = None    # the measured number (JSON)


# --- inputs ----------------------------------------------------------------------------

def load_json(path: str | Path | None) -> dict[str, Any] | None:
    """The document at `path`, or None when it is absent or unreadable (a target not measured)."""
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_steps(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """{step: {"result", "wall_s"}} from the script's steps.tsv (name, result, seconds)."""
    out: dict[str, dict[str, Any]] = {}
    if not path or not Path(path).exists():
        return out
    for line in Path(path).read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            try:
                out[parts[0]] = {"result": parts[1], "wall_s": float(parts[2])}
            except ValueError:
                continue
    return out


def device_family(profile: dict[str, Any] | None) -> str | None:
    """'h200', 'h100' (SXM, HBM3) or None: which absolute goals apply."""
    name = str(((profile or {}).get("provenance") or {}).get("device", {}).get("name", ""))
    upper = name.upper()
    if "H200" in upper:
        return "h200"
    if "H100" in upper and "PCIE" not in upper:
        return "h100"
    return None


def device_name(profile: dict[str, Any] | None) -> str:
    return str(((profile or {}).get("provenance") or {}).get("device", {}).get("name", "?"))


# --- formatting -------------------------------------------------------------------------

def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _judge(value: float | None, goal: float | None, at_most: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_MEASURED
    if goal is None:
        return NA
    ok = value <= goal if at_most else value >= goal
    return PASS if ok else FAIL


def _row(name: str, value: float | None, goal: float | None, unit: str, *, at_most: bool = False,
         status: str = "-", note: str = "", percent: bool = False, ratio: bool = False) -> Target:
    def fmt(v: float) -> str:
        if percent:
            return f"{100 * v:.1f}%"
        if ratio:
            return f"{v:.3f}x"
        return f"{_num(v)} {unit}".strip()
    measured = "-" if value is None else fmt(value)
    goal_text = "-" if goal is None else ("<= " if at_most else ">= ") + fmt(goal)
    return Target(name, measured, goal_text, _judge(value, goal, at_most), status, note, value)


def _status(detail: Any) -> str:
    return str(detail.get("status") or "-") if isinstance(detail, dict) else "-"


# --- the targets ------------------------------------------------------------------------

def bandwidth_targets(profile: dict[str, Any] | None) -> list[Target]:
    """HBM read and copy against the device's goals; ridgeline's copy against torch's."""
    ceil = (profile or {}).get("ceilings") or {}
    bw = ceil.get("memory_bandwidth_GBps") or {}
    detail = ceil.get("memory_bandwidth_detail") or {}
    goals = BANDWIDTH_GOALS_GBPS.get(device_family(profile) or "", {})
    rows = []
    for kernel in ("read", "copy"):
        d = detail.get(kernel) or {}
        rows.append(_row(f"HBM {kernel} bandwidth", bw.get(kernel), goals.get(kernel), "GB/s",
                         status=_status(d), note=f"provider {d.get('provider', '-')}"))
    per = (detail.get("copy") or {}).get("per_provider_GBps") or {}
    statuses = (detail.get("copy") or {}).get("per_provider_status") or {}
    ours = "triton" if "triton" in per else None
    torch_copy = per.get("torch")
    ratio = per[ours] / torch_copy if ours and torch_copy and per.get(ours) else None
    note = (f"triton {_num(per[ours])} / torch {_num(torch_copy)} GB/s" if ratio
            else "needs the triton and torch copy plateaus of one run")
    rows.append(_row("copy: ridgeline / torch copy", ratio, COPY_VS_TORCH, "", ratio=True,
                     status=statuses.get("triton", "-"), note=note))
    return rows


def _fp8_key(tflops: dict[str, Any]) -> str | None:
    return next((k for k in ("fp8_e4m3", "fp8_e4m3fnuz") if k in tflops), None)


def matmul_targets(profile: dict[str, Any] | None, sweep: dict[str, Any] | None) -> list[Target]:
    """bf16 and fp8 matmul ceilings against the goals and against the large-shape sweep."""
    ceil = (profile or {}).get("ceilings") or {}
    mm = ceil.get("matmul_TFLOPS") or {}
    detail = ceil.get("matmul_detail") or {}
    goals = MATMUL_GOALS_TFLOPS.get(device_family(profile) or "", {})
    best = (sweep or {}).get("best") or {}
    rows = []
    for label, key in (("bf16", "bf16"), ("fp8", _fp8_key(mm) or _fp8_key(best) or "fp8_e4m3")):
        d = detail.get(key) or {}
        where = f"M={d.get('m')} N={d.get('n')} K={d.get('k')}" if d else ""
        rows.append(_row(f"{label} matmul", mm.get(key), goals.get(label), "TFLOP/s",
                         status=_status(d), note=where))
        ref = (best.get(key) or {}).get("TFLOPS")
        ratio = mm[key] / ref if mm.get(key) and ref else None
        b = best.get(key) or {}
        note = (f"sweep best {_num(ref)} at M={b.get('m')} N={b.get('n')} K={b.get('k')}, "
                f"{(sweep or {}).get('n_shapes', {}).get(key, '?')} shapes" if ratio
                else "needs the large-shape sweep (benchmarks/bench_matmul.py)")
        rows.append(_row(f"{label} matmul / best torch (sweep)", ratio, MATMUL_VS_SWEEP, "",
                         ratio=True, note=note))
    return rows


def _gemv_best(profile: dict[str, Any] | None) -> dict[tuple, dict[str, Any]]:
    """{(dtype, k, n, batch): the validated gemv record of the fastest provider}."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in (profile or {}).get("records") or []:
        if r.get("probe") != "gemv" or r.get("status") != "ok" or not r.get("validated"):
            continue
        if not r.get("time_ms_median") or not r.get("bw_GBps"):
            continue
        key = (r.get("dtype"), r.get("k"), r.get("n"), r.get("batch"))
        if key not in best or r["time_ms_median"] < best[key]["time_ms_median"]:
            best[key] = r
    return best


def gemv_targets(profile: dict[str, Any] | None) -> list[Target]:
    """Decode GEMV bandwidth against the read ceiling, and fp8 against bf16 at B=1."""
    read = ((profile or {}).get("ceilings") or {}).get("memory_bandwidth_GBps", {}).get("read")
    best = _gemv_best(profile)
    rows = []
    dtypes = sorted({k[0] for k in best if str(k[0]).startswith("fp8")}) or ["fp8_e4m3"]
    for dtype in ["bf16", *dtypes]:
        points = [r for (d, _k, _n, b), r in best.items() if d == dtype and 1 <= b <= GEMV_MAX_BATCH
                  and (r.get("weight_bytes") or 0) >= GEMV_MIN_WEIGHT_BYTES]
        worst = min(points, key=lambda r: r["bw_GBps"]) if points and read else None
        note = (f"worst K={worst['k']} N={worst['n']} B={worst['batch']} ({worst['provider']}) "
                f"{_num(worst['bw_GBps'])} of {_num(read)} GB/s, {len(points)} points"
                if worst else "needs gemv records on weights >= 64 MB and a read ceiling")
        rows.append(_row(f"GEMV {dtype} B=1..{GEMV_MAX_BATCH}, W>=64MB: of read", worst and
                         worst["bw_GBps"] / read, GEMV_OF_READ, "", percent=True, note=note))
    fp8 = dtypes[0]
    ratios = []
    for (d, k, n, b), r in best.items():
        other = best.get((fp8, k, n, b))
        big = (r.get("weight_bytes") or 0) >= GEMV_MIN_WEIGHT_BYTES
        if d == "bf16" and b == 1 and other and big:
            ratios.append((r["time_ms_median"] / other["time_ms_median"], k, n))
    worst_ratio = min(ratios) if ratios else None
    note = (f"worst K={worst_ratio[1]} N={worst_ratio[2]}, {len(ratios)} shapes" if worst_ratio
            else "needs bf16 and fp8 gemv records at B=1")
    rows.append(_row("GEMV fp8 / bf16 tokens/s at B=1", worst_ratio and worst_ratio[0],
                     FP8_SPEEDUP_AT_B1, "", ratio=True, note=note))
    return rows


def _profile_time(profile: dict[str, Any] | None, wall_s: float | None, quick: bool
                  ) -> tuple[float | None, str]:
    prov = (profile or {}).get("provenance") or {}
    sweep = prov.get("sweep") or {}
    if profile is None or bool(sweep.get("quick")) != quick:
        return None, "no such profile in this run"
    duration = prov.get("duration_s")
    probes = ",".join(sweep.get("probes") or []) or "?"
    note = f"profile duration_s {duration}; probes {probes}"
    if not profile.get("complete", True):
        note += "; INCOMPLETE"
    return (wall_s if wall_s is not None else duration), note


def time_targets(profile: dict[str, Any] | None, quick_profile: dict[str, Any] | None,
                 steps: dict[str, dict[str, Any]]) -> list[Target]:
    """Wall time of the default and the --quick profile (the script's step when known).

    The goals are for an H100/H200 (other devices: n/a, the time still shown).
    """
    on_target = device_family(profile or quick_profile) is not None
    rows = []
    for name, prof, step, quick, goal in (
            ("default profile time", profile, "profile", False, DEFAULT_PROFILE_S),
            ("quick profile time", quick_profile or profile, "quick", True, QUICK_PROFILE_S)):
        wall = steps.get(step, {}).get("wall_s")
        if prof is profile and step == "quick":
            wall = steps.get("profile", {}).get("wall_s")  # the main profile was the quick one
        value, note = _profile_time(prof, wall, quick)
        if value is not None and wall is not None:
            note = f"wall clock of the step; {note}"
        rows.append(_row(name, value, goal if on_target else None, "s", at_most=True,
                         note=note))
    return rows


def validate_targets(validations: dict[str, dict[str, Any] | None]) -> list[Target]:
    """Median prediction error of decode and prefill, per weight dtype."""
    rows = []
    for weights in ("bf16", "fp8"):
        result = validations.get(weights)
        for phase, goal in VALIDATE_MEDIAN_ERROR.items():
            s = ((result or {}).get("summary") or {}).get(phase) or {}
            value = s.get("median_error_profile")
            note = (f"{result.get('model')}, {s.get('n_points')} points, worst "
                    f"{100 * s['worst_error_profile']:.1f}%"
                    if result and s.get("worst_error_profile") is not None
                    else "needs validation.json")
            rows.append(_row(f"validate {weights} {phase} median error", value, goal, "",
                             at_most=True, percent=True, note=note))
    return rows


def all_targets(profile, quick_profile=None, sweep=None, validations=None, steps=None
                ) -> list[Target]:
    return (bandwidth_targets(profile) + matmul_targets(profile, sweep) + gemv_targets(profile)
            + time_targets(profile, quick_profile, steps or {})
            + validate_targets(validations or {}))


def render(targets: list[Target], device: str) -> str:
    """The table, its last line a count of the results."""
    head = ("target", "measured", "goal", "result", "status", "from")
    rows = [head] + [(t.name, t.measured, t.goal, t.result, t.status, t.note) for t in targets]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = [f"== targets (issue 10) on {device}"]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1])
    counts = {k: sum(t.result == k for t in targets) for k in (PASS, FAIL, NOT_MEASURED, NA)}
    lines.append("targets: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return "\n".join(lines)


def _parse_validate(items: list[str]) -> dict[str, dict[str, Any] | None]:
    out = {}
    for item in items:
        weights, _, path = item.partition("=")
        out[weights] = load_json(path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", help="profile.json of the run (the default, full profile)")
    p.add_argument("--quick-profile", help="profile.json of the --quick run")
    p.add_argument("--steps", help="steps.tsv of scripts/gpu_run.sh (name, result, seconds)")
    p.add_argument("--validate", action="append", default=[], metavar="WEIGHTS=PATH",
                   help="validation.json per weight dtype, e.g. bf16=DIR/validation.json")
    p.add_argument("--matmul-sweep", help="matmul_sweep.json of benchmarks/bench_matmul.py")
    p.add_argument("--json", help="also write the targets as JSON here")
    args = p.parse_args(argv)
    profile = load_json(args.profile)
    targets = all_targets(profile, load_json(args.quick_profile), load_json(args.matmul_sweep),
                          _parse_validate(args.validate), read_steps(args.steps))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name(profile),
                                               "targets": [asdict(t) for t in targets]},
                                              indent=1) + "\n")
    print(render(targets, device_name(profile)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
