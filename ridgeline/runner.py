"""Run probes on a device and turn their records into a fitted, saved profile.

    profile = run_profile(device, ["hbm", "matmul"], quick=True, out_dir="ridgeline-out")

Every case is one call of `probe.run`; what goes wrong in a case becomes a
record, not a crash: `Waived` (cannot run here), out of device memory (waived
with the reason), any other error ("failed", with its one-line reason). Ctrl-C
stops the sweep, and what was measured so far is fitted and written with
`complete: false`. Records are also appended to DIR/records.partial.jsonl as
they arrive, so even a killed run leaves its measurements behind.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from ridgeline.device import DeviceInfo
from ridgeline.errors import Waived
from ridgeline.probes import get_probe
from ridgeline.probes.base import ProbeContext
from ridgeline.records import waived_record, write_csv
from ridgeline.roofline.fit import fit_profile
from ridgeline.roofline.profile import new_profile, save_profile
from ridgeline.telemetry import Sampler
from ridgeline.timing import Timer, make_timer


def _oom_types() -> tuple[type, ...]:
    import torch

    types = [t for t in (getattr(torch, "OutOfMemoryError", None),
                         getattr(torch.cuda, "OutOfMemoryError", None)) if t]
    return tuple(types) or (MemoryError,)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def _release_memory(device: DeviceInfo) -> None:
    if device.is_gpu:
        import torch

        torch.cuda.empty_cache()


def run_profile(
    device: DeviceInfo,
    probe_names: list[str],
    *,
    quick: bool = False,
    out_dir: str | Path = "ridgeline-out",
    timer: Timer | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    command_line: list[str] | None = None,
    versions: dict[str, Any] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    write_report: bool = True,
) -> dict[str, Any]:
    """Measure, fit and save; returns the profile (also written to out_dir/profile.json)."""
    from ridgeline import datasheets

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    profile = new_profile(device.to_dict(), command_line=command_line, versions=versions,
                          sweep={"probes": list(probe_names), "quick": quick,
                                 "options": options or {}},
                          telemetry_at_start=dict(device.telemetry))
    sheet = datasheets.lookup(device.name) if device.is_gpu else None
    if sheet:
        profile["datasheet"] = {"label": "vendor datasheet (not measured)", **sheet}
    timer = timer or make_timer(device)
    options = options or {}
    partial_path = out / "records.partial.jsonl"
    partial_path.write_text("")
    records: list[dict[str, Any]] = []

    def keep(rec: dict[str, Any]) -> None:
        records.append(rec)
        with partial_path.open("a") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")

    # plan the whole sweep first so progress has a total
    plan: list[tuple[Any, ProbeContext, list]] = []
    sampler = Sampler(device)
    mark = {"i": 0}

    def case_telemetry() -> dict[str, Any]:
        summary = sampler.summary(since=mark["i"])
        if summary.get("telemetry_samples", 0) == 0 and sampler.samples:
            summary = sampler.summary(since=len(sampler.samples) - 1)  # case shorter than a tick
        return summary

    for name in probe_names:
        probe = get_probe(name)
        ctx = ProbeContext(device=device, timer=timer, quick=quick, telemetry=case_telemetry,
                           options=options.get(name, {}))
        reason = probe.available(ctx)
        if reason:
            rec = waived_record(name, reason)
            keep(rec)
            profile["waived"].append({"probe": name, "reason": reason})
            continue
        plan.append((probe, ctx, probe.cases(ctx)))
    total = sum(len(cases) for _, _, cases in plan)
    done = 0
    interrupted = False
    oom = _oom_types()
    sampler.start()
    try:
        for probe, ctx, cases in plan:
            for case in cases:
                if on_progress:
                    on_progress(f"{probe.name} {case.label}", done, total)
                mark["i"] = sampler.mark()
                try:
                    for rec in probe.run(case, ctx):
                        keep(rec)
                except Waived as w:
                    keep(waived_record(probe.name, w.reason, **case.params))
                except oom as exc:
                    _release_memory(device)
                    keep(waived_record(probe.name, f"out of device memory: {_one_line(exc)}",
                                       **case.params))
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # a broken case is a result; the sweep goes on
                    _release_memory(device)
                    keep(waived_record(probe.name, _one_line(exc), status="failed", **case.params))
                done += 1
    except KeyboardInterrupt:
        interrupted = True
    finally:
        sampler.stop()
    if on_progress:
        on_progress("fitting", done, total)

    profile["records"] = records
    for rec in records:
        if rec.get("status") in ("waived", "failed") and rec.get("reason"):
            entry = {"probe": rec["probe"], "provider": rec.get("provider", ""),
                     "dtype": rec.get("dtype", ""), "status": rec["status"], "reason": rec["reason"]}
            if entry not in profile["waived"]:
                profile["waived"].append(entry)
    fit_profile(profile)
    profile["throttled"] = any(r.get("throttled") for r in records)
    if profile["throttled"]:
        reasons = sorted({x for r in records if r.get("throttled")
                          for x in (r.get("throttle_reasons") or "").split(",") if x})
        profile["warnings"].append("the device throttled during the run (" + ", ".join(reasons)
                                   + "): ceilings may be below what the card can do")
    invalid = [r for r in records if r.get("status") == "invalid"]
    if invalid:
        profile["warnings"].append(f"{len(invalid)} case(s) failed validation and were not fitted")
    profile["warnings"].extend(profile["ceilings"].get("flags", []))
    profile["complete"] = not interrupted
    profile["incomplete_reason"] = ("interrupted by the user after "
                                    f"{done} of {total} cases") if interrupted else None
    profile["provenance"]["duration_s"] = round(time.monotonic() - started, 2)
    save_profile(profile, out / "profile.json")
    write_csv(records, out / "records.csv")
    partial_path.unlink(missing_ok=True)
    if write_report:
        _write_report(profile, out)
    return profile


def _write_report(profile: dict[str, Any], out: Path) -> None:
    try:
        from ridgeline.reports.render import write_report
    except ImportError:
        profile["warnings"].append("report not written: ridgeline.reports is not available")
        return
    try:
        write_report(profile, out)
    except Exception as exc:  # the profile is the product; a report failure must not lose it
        profile["warnings"].append(f"report not written: {_one_line(exc)}")
