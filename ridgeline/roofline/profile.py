"""The profile file: versioned JSON joining measurement to planning.

Layout (schema_version 1); units are in key names:

    {
      "kind": "ridgeline-profile", "schema_version": 1, "method_version": "...",
      "complete": true, "incomplete_reason": null,
      "provenance": {ridgeline_version, timestamp_utc, command_line, hostname,
                     device: {...DeviceInfo...}, versions: {python, torch, triton,
                     cuda, hip, nccl, numpy, driver}, telemetry_at_start: {...},
                     sweep: {probes, quick}, duration_s},
      "ceilings": {
        "memory_bandwidth_GBps": {"copy": .., "read": .., "write": .., "triad": ..},
        "memory_bandwidth_detail": {"copy": {"provider", "plateau_min_bytes", "n_points"}},
        "matmul_TFLOPS": {"fp32": .., "tf32": .., "fp16": .., "bf16": .., "fp8_e4m3": ..},
        "matmul_detail": {"bf16": {"provider", "m", "n", "k", "time_ms_median"}},
      },
      "model": {...fitted roofline model, see roofline.model...},
      "interconnect": {...alpha-beta collectives and host link, see roofline.interconnect...},
      "datasheet": {...vendor peaks, labelled, never mixed with measured...} | null,
      "throttled": false, "warnings": [...], "waived": [{probe, provider, dtype, reason}],
      "records": [...every record...]
    }

`load_profile` validates this (structure and every value the planner and the
reports read: roofline.profile_checks) and gives one clear error for a malformed
file, one from a newer schema, or the records.partial.jsonl of an interrupted run.
"""

from __future__ import annotations

import json
import math
import platform
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ridgeline import METHOD_VERSION, SCHEMA_VERSION, __version__
from ridgeline.errors import ProfileError
from ridgeline.roofline.profile_checks import check_values
from ridgeline.roofline.sections import Ceilings

PROFILE_KIND = "ridgeline-profile"


def software_versions() -> dict[str, Any]:
    """Versions of everything that shapes a number (imports torch: measurement side only)."""
    import numpy

    out: dict[str, Any] = {"python": platform.python_version(), "numpy": numpy.__version__}
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = torch.version.cuda
        out["hip"] = getattr(torch.version, "hip", None)
        try:
            nccl = torch.cuda.nccl.version() if torch.cuda.is_available() else None
            out["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
        except Exception:
            out["nccl"] = None
    except ImportError:
        out["torch"] = None
    try:
        import triton

        out["triton"] = triton.__version__
    except Exception:
        out["triton"] = None
    return out


def new_profile(device: dict[str, Any], *, command_line: list[str] | None = None,
                sweep: dict[str, Any] | None = None,
                telemetry_at_start: dict[str, Any] | None = None,
                versions: dict[str, Any] | None = None) -> dict[str, Any]:
    """An empty profile with its provenance filled in."""
    return {
        "kind": PROFILE_KIND,
        "schema_version": SCHEMA_VERSION,
        "method_version": METHOD_VERSION,
        "complete": False,
        "incomplete_reason": None,
        "provenance": {
            "ridgeline_version": __version__,
            "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command_line": list(command_line if command_line is not None else sys.argv),
            "hostname": socket.gethostname(),
            "device": device,
            "versions": versions if versions is not None else software_versions(),
            "telemetry_at_start": telemetry_at_start or {},
            "sweep": sweep or {},
            "duration_s": None,
        },
        "ceilings": Ceilings({}, {}).to_dict(),
        "model": {},
        "interconnect": {},
        "datasheet": None,
        "throttled": False,
        "warnings": [],
        "waived": [],
        "records": [],
    }


def json_safe(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null so other tools can read the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item())
    return value


def save_profile(profile: dict[str, Any], path: str | Path) -> Path:
    """Write atomically (ridgeline.outputs): a Ctrl-C or a full disk never leaves half a file."""
    from ridgeline.outputs import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(json_safe(profile), indent=1, allow_nan=False) + "\n")


def _require(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ProfileError(f"malformed profile ({where}): {what}")


def validate_profile(data: Any, where: str = "profile") -> dict[str, Any]:
    """Check the header, then every value (roofline.profile_checks); raise ProfileError with
    one clear sentence, naming the field, on the first problem."""
    _require(isinstance(data, dict), where, "top level is not a JSON object")
    _require(data.get("kind") == PROFILE_KIND, where,
             f"'kind' is {data.get('kind')!r}, expected {PROFILE_KIND!r}")
    version = data.get("schema_version")
    _require(isinstance(version, int) and not isinstance(version, bool), where,
             "'schema_version' missing or not an integer")
    if version > SCHEMA_VERSION:
        raise ProfileError(f"{where} has schema_version {version}, newer than this ridgeline "
                           f"({__version__}) reads ({SCHEMA_VERSION}): upgrade ridgeline")
    _require(version >= 1, where, f"schema_version {version} is not valid")
    check_values(data, where)
    return data


def _partial_records_error(path: Path) -> ProfileError:
    return ProfileError(f"{path} holds the partial records of an interrupted run (JSON lines), "
                        f"not a profile: run `ridgeline profile --resume {path.parent}` "
                        "to finish it")


def _is_json_lines(text: str) -> bool:
    """Several JSON objects, one per line: what the runner appends while it measures."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        return False
    try:
        return all(isinstance(json.loads(ln), dict) for ln in lines[:2])
    except json.JSONDecodeError:
        return False


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read and validate a profile; ProfileError (one line) on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ProfileError(f"profile not found: {path}") from None
    except IsADirectoryError:
        raise ProfileError(f"{path} is a folder: give its profile.json") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{path} is not a text file (not a profile)") from None
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror}") from None
    if path.name.endswith(".jsonl") or _is_json_lines(text):
        raise _partial_records_error(path)
    if not text.strip():
        raise ProfileError(f"{path} is empty (a run killed while writing it?)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise ProfileError(f"{path} nests too deeply to be a profile") from None
    return validate_profile(data, where=str(path))


def device_memory_bytes(profile: dict[str, Any]) -> int:
    return int(profile["provenance"]["device"]["memory_bytes"])


def device_name(profile: dict[str, Any]) -> str:
    return str(profile["provenance"]["device"]["name"])
