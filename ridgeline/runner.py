"""Run probes on a device and turn their records into a fitted, saved profile.

    profile = run_profile(device, ["hbm", "matmul"], quick=True, out_dir="ridgeline-out")

Every case is one call of `probe.run`; what goes wrong in a case becomes a
record, not a crash: `Waived` (cannot run here), out of device memory (waived
with the reason), any other error ("failed", with its one-line reason). A probe
may grow its sweep from what it measured (`Probe.more_cases`: the hbm sweep goes
on until its rate is flat). Ctrl-C stops the sweep, and what was measured so far
is fitted and written with `complete: false`; so is a run with failed cases or
a probe that produced nothing usable (`unusable_probes`), with the reason.
Records are appended to DIR/records.partial.jsonl as they arrive (after a
header line, `partial_header`), so even a killed run leaves its measurements
behind, and `resume_records` continues it without re-measuring them. A fit
that raises is a warning: the records and the profile are written regardless.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from ridgeline.contention import ContentionMeter
from ridgeline.device import DeviceInfo
from ridgeline.errors import Waived
from ridgeline.probes import get_probe
from ridgeline.outputs import atomic_write_text
from ridgeline.partial import PARTIAL_NAME, partial_header
from ridgeline.probes.base import Case, ProbeContext
from ridgeline.records import fit_ready, waived_record, write_csv
from ridgeline.roofline.profile_fit import fit_profile
from ridgeline.roofline.profile import json_safe, new_profile, save_profile
from ridgeline.telemetry import Sampler, throttle_reasons
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


# Rounds of `Probe.more_cases` per probe: bounds an adaptive sweep that never settles.
MAX_ADAPTIVE_ROUNDS = 12


def case_matches(case: Case, probe_name: str, rec: dict[str, Any]) -> bool:
    """A record belongs to a case when it is of that probe and carries every case parameter."""
    return rec.get("probe") == probe_name and all(rec.get(k) == v for k, v in case.params.items())


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
    resume_records: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Measure, fit and save; returns the profile (also written to out_dir/profile.json).

    `resume_records`: records of an earlier, killed or interrupted run of the same
    sweep; every case they already cover (failed cases excepted) is kept, not re-run.
    """
    from ridgeline import datasheets

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    options = options or {}
    profile = new_profile(device.to_dict(), command_line=command_line, versions=versions,
                          sweep={"probes": list(probe_names), "quick": quick, "options": options},
                          telemetry_at_start=dict(device.telemetry))
    sheet = datasheets.lookup(device.name) if device.is_gpu else None
    if sheet:
        profile["datasheet"] = {"label": "vendor datasheet (not measured)", **sheet}
    timer = timer or make_timer(device)
    partial_path = out / PARTIAL_NAME
    earlier = [r for r in (resume_records or []) if r.get("status") != "failed"]
    # the log holds every kept record from the start: a resumed run killed again loses nothing
    header = partial_header(device.id, device.name, probe_names, quick, options, command_line)
    atomic_write_text(partial_path, "".join(json.dumps(json_safe(r), default=str) + "\n"
                                            for r in [header, *earlier]))
    records: list[dict[str, Any]] = []

    def keep(rec: dict[str, Any], logged: bool = False) -> None:
        records.append(rec)
        if not logged:
            with partial_path.open("a") as fh:
                fh.write(json.dumps(json_safe(rec), default=str) + "\n")

    sampler = Sampler(device)
    meter = ContentionMeter(device)
    mark = {"i": 0}

    def case_telemetry() -> dict[str, Any]:
        summary = sampler.summary(since=mark["i"])
        if summary.get("telemetry_samples", 0) == 0 and sampler.samples:
            summary = sampler.summary(since=len(sampler.samples) - 1)  # case shorter than a tick
        return {**summary, **meter.read()}

    # plan the whole sweep first so progress has a total
    plan: list[tuple[Any, ProbeContext, list[Case]]] = []
    for name in probe_names:
        probe = get_probe(name)
        ctx = ProbeContext(device=device, timer=timer, quick=quick, telemetry=case_telemetry,
                           options=options.get(name, {}))
        reason = probe.available(ctx)
        if reason:
            keep(waived_record(name, reason))
            profile["waived"].append({"probe": name, "reason": reason})
            continue
        plan.append((probe, ctx, probe.cases(ctx)))
    progress = {"done": 0, "total": sum(len(cases) for _, _, cases in plan), "resumed": 0}
    oom = _oom_types()

    def run_case(probe, ctx: ProbeContext, case: Case) -> None:
        done_before = [r for r in earlier if case_matches(case, probe.name, r)]
        if done_before:
            for rec in done_before:
                keep(rec, logged=True)
            progress["resumed"] += 1
            return
        if on_progress:
            on_progress(f"{probe.name} {case.label}", progress["done"], progress["total"])
        mark["i"] = sampler.mark()
        meter.start()
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

    interrupted = False
    sampler.start()
    try:
        for probe, ctx, cases in plan:
            for case in cases:
                run_case(probe, ctx, case)
                progress["done"] += 1
            for _ in range(MAX_ADAPTIVE_ROUNDS):  # an adaptive sweep grows to its plateau
                extra = probe.more_cases([r for r in records if r.get("probe") == probe.name],
                                         ctx)
                if not extra:
                    break
                progress["total"] += len(extra)
                for case in extra:
                    run_case(probe, ctx, case)
                    progress["done"] += 1
    except KeyboardInterrupt:
        interrupted = True
    finally:
        sampler.stop()
    if on_progress:
        on_progress("fitting", progress["done"], progress["total"])
    kept = {id(r) for r in records}
    records.extend(r for r in earlier if id(r) not in kept)  # resumed, not reached again: kept

    profile["records"] = records
    note_waived(profile, records)
    try:
        fit_profile(profile)
    except Exception as exc:  # the records are the product; a fit that breaks must not lose them
        profile["warnings"].append(f"the fit failed ({_one_line(exc)}): the records are saved, "
                                   "the ceilings and model are empty; report this with the "
                                   "profile attached")
    _judge(profile, records, [p.name for p, _, _ in plan], interrupted, progress)
    profile["provenance"]["duration_s"] = round(time.monotonic() - started, 2)
    save_profile(profile, out / "profile.json")
    write_csv(records, out / "records.csv")
    partial_path.unlink(missing_ok=True)
    return profile


def note_waived(profile: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """List each waived or failed record's reason once in profile["waived"]."""
    for rec in records:
        if rec.get("status") in ("waived", "failed") and rec.get("reason"):
            entry = {"probe": rec["probe"], "provider": rec.get("provider", ""),
                     "dtype": rec.get("dtype", ""), "status": rec["status"],
                     "reason": rec["reason"]}
            if entry not in profile["waived"]:
                profile["waived"].append(entry)


def _judge(profile: dict[str, Any], records: list[dict[str, Any]], ran: list[str],
           interrupted: bool, progress: dict[str, int]) -> None:
    """complete, incomplete_reason, unusable_probes and warnings from what the run produced."""
    from ridgeline.contention import causes
    from ridgeline.roofline.trust import NOISY, describe, untrusted_ceilings

    profile["throttled"] = any(r.get("throttled") for r in records)
    if profile["throttled"]:
        profile["warnings"].append("the device throttled during the run ("
                                   + ", ".join(throttle_reasons(records))
                                   + "): ceilings may be below what the card can do")
    invalid = [r for r in records if r.get("status") == "invalid"]
    if invalid:
        profile["warnings"].append(f"{len(invalid)} case(s) failed validation and were not fitted")
    profile["warnings"].extend((profile.get("ceilings") or {}).get("flags", []))
    missing = []
    failed: dict[str, int] = {}
    for r in records:
        if r.get("status") == "failed":
            failed[r["probe"]] = failed.get(r["probe"], 0) + 1
    for probe, n in failed.items():
        missing.append(f"{n} {probe} case(s) failed")
    unusable = [name for name in ran if not fit_ready(records, name)]
    for name in unusable:
        missing.append(f"{name} produced no usable record")
    if interrupted:
        missing.insert(0, f"interrupted by the user after {progress['done']} of "
                          f"{progress['total']} cases")
    profile["unusable_probes"] = unusable
    profile["interrupted"] = interrupted
    profile["complete"] = not missing
    profile["incomplete_reason"] = "; ".join(missing) if missing else None
    if missing and not interrupted:
        profile["warnings"].append("incomplete: " + "; ".join(missing))
    if progress.get("resumed"):
        profile["provenance"]["resumed_cases"] = progress["resumed"]
    untrusted = untrusted_ceilings(profile)
    for c in untrusted:
        profile["warnings"].append(f"ceiling {describe(c)}")
    if any(c.status == NOISY for c in untrusted):
        why = causes(records)
        profile["warnings"].append("noisy ceilings: " + ("; ".join(why) if why else
                                   "no cause visible to ridgeline (CPU load, steal time and GPU "
                                   "processes looked normal)") + ": re-run on a quiet machine")
