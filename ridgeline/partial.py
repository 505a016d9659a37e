"""The record log of a running profile, and what `ridgeline profile --resume DIR` continues.

    DIR/records.partial.jsonl   line 1: partial_header(...)  {"kind": "ridgeline-partial",
                                        device_id, device_name, probes, quick, options,
                                        command_line}
                                then one record per line, appended as each case finishes

The runner writes it while measuring and deletes it once profile.json is
written, so its presence means a run did not finish. `read_partial_records`
skips a truncated last line (a killed run); `load_resume` finds the run's
settings and records in the log, or in an incomplete profile.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ridgeline.errors import RidgelineError

PARTIAL_NAME = "records.partial.jsonl"
PARTIAL_KIND = "ridgeline-partial"


class PartialError(RidgelineError):
    """An unfinished run cannot be read or resumed."""


def partial_header(device_id: str, device_name: str, probe_names: list[str], quick: bool,
                   options: dict[str, Any], command_line: list[str] | None) -> dict[str, Any]:
    """First line of records.partial.jsonl: what `--resume` needs to continue the run."""
    return {"kind": PARTIAL_KIND, "device_id": device_id, "device_name": device_name,
            "probes": list(probe_names), "quick": quick, "options": options,
            "command_line": list(command_line or [])}


@dataclass
class PartialRecords:
    """What records.partial.jsonl holds: its header (None in older files), the records,
    and how many lines could not be read (a killed run truncates its last line)."""

    path: Path
    header: dict[str, Any] | None
    records: list[dict[str, Any]]
    skipped_lines: int = 0


def read_partial_records(path: str | Path) -> PartialRecords:
    """Read a record log line by line, skipping lines that are not whole JSON objects."""
    path = Path(path)
    try:
        # a kill can cut a UTF-8 character in half: replace it, that line is skipped anyway
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise PartialError(f"cannot read {path}: {exc.strerror or exc}") from None
    header = None
    records: list[dict[str, Any]] = []
    skipped = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if not isinstance(item, dict):
            skipped += 1
        elif item.get("kind") == PARTIAL_KIND:
            header = header or item
        else:
            records.append(item)
    return PartialRecords(path, header, records, skipped)


@dataclass
class ResumeState:
    """What `profile --resume DIR` continues: the run's settings and the records kept."""

    folder: Path
    source: Path                      # records.partial.jsonl or profile.json
    records: list[dict[str, Any]]
    device_id: str | None = None      # None: the source does not say (an older partial file)
    device_name: str | None = None
    probes: list[str] | None = None
    quick: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)
    command_line: list[str] | None = None
    skipped_lines: int = 0
    complete: bool = False            # the folder holds a finished profile: nothing to do


def load_resume(folder: str | Path) -> ResumeState:
    """The unfinished run in `folder`: records.partial.jsonl (a killed run) first, else an
    incomplete profile.json (an interrupted one); one-line PartialError when neither."""
    folder = Path(folder)
    partial = folder / PARTIAL_NAME
    profile_path = folder / "profile.json"
    if partial.is_file():
        part = read_partial_records(partial)
        h = part.header or {}
        return ResumeState(folder, partial, part.records, device_id=h.get("device_id"),
                           device_name=h.get("device_name"), probes=h.get("probes"),
                           quick=h.get("quick"), options=h.get("options") or {},
                           command_line=h.get("command_line") or None,
                           skipped_lines=part.skipped_lines)
    if profile_path.is_file():
        from ridgeline.roofline.profile import load_profile

        profile = load_profile(profile_path)
        prov = profile["provenance"]
        sweep = prov.get("sweep") or {}
        device = prov.get("device") or {}
        return ResumeState(folder, profile_path, list(profile.get("records") or []),
                           device_id=device.get("id"), device_name=device.get("name"),
                           probes=sweep.get("probes"), quick=sweep.get("quick"),
                           options=sweep.get("options") or {},
                           command_line=prov.get("command_line") or None,
                           complete=bool(profile.get("complete")))
    raise PartialError(f"{folder} holds no unfinished run ({PARTIAL_NAME} or an incomplete "
                      "profile.json): nothing to resume")
