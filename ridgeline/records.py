"""Records: one measured (or waived) case as a flat dict, and their CSV form.

Units are in the field names (ms, GB = 1e9 bytes, TFLOP = 1e12 FLOP):

    bw_GBps = (bytes_read + bytes_written) / (time_ms_median * 1e-3) / 1e9
    TFLOPS  = flops / (time_ms_median * 1e-3) / 1e12

`status` is "ok" (measured and validated), "invalid" (measured, but the output
did not match the reference: never fitted), "waived" (cannot run here, with a
reason) or "failed" (an error, with its one-line reason).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:  # records are read by reports, which must not load the timing code
    from ridgeline.timing import Timing

CSV_LEAD_COLUMNS = [
    "probe", "provider", "kernel", "dtype", "status", "size_bytes", "m", "n", "k", "batch",
    "time_ms_median", "time_ms_p20", "time_ms_p80", "time_ms_min",
    "bw_GBps", "TFLOPS", "validated", "bytes_read", "bytes_written", "flops",
]


def make_record(
    *,
    probe: str,
    provider: str,
    dtype: str,
    timing: "Timing",
    validated: bool,
    bytes_read: float = 0,
    bytes_written: float = 0,
    flops: float = 0,
    kernel: str | None = None,
    telemetry: dict[str, Any] | None = None,
    max_abs_error: float | None = None,
    **shape: Any,
) -> dict[str, Any]:
    """A measured record; `shape` holds the case's named shape columns (m, n, k, size_bytes...)."""
    rec: dict[str, Any] = {"probe": probe, "provider": provider, "kernel": kernel, "dtype": dtype,
                           "status": "ok" if validated else "invalid"}
    rec.update(shape)
    rec.update(timing.stats())
    seconds = rec["time_ms_median"] * 1e-3
    moved = float(bytes_read) + float(bytes_written)
    rec.update({
        "bytes_read": float(bytes_read),
        "bytes_written": float(bytes_written),
        "flops": float(flops),
        "bw_GBps": moved / seconds / 1e9 if moved and seconds > 0 else None,
        "TFLOPS": flops / seconds / 1e12 if flops and seconds > 0 else None,
        "validated": bool(validated),
        "max_abs_error": max_abs_error,
    })
    if telemetry:
        rec.update(telemetry)
    return rec


def waived_record(probe: str, reason: str, *, provider: str = "", dtype: str = "",
                  status: str = "waived", **shape: Any) -> dict[str, Any]:
    """A case that could not run here: a result with its reason, never a crash."""
    rec = {"probe": probe, "provider": provider, "kernel": None, "dtype": dtype,
           "status": status, "validated": False, "reason": reason}
    rec.update(shape)
    return rec


def fit_ready(records: Iterable[dict[str, Any]], probe: str | None = None) -> list[dict[str, Any]]:
    """Records the fitter may use: measured and validated (an unvalidated one never is)."""
    return [r for r in records
            if r.get("status") == "ok" and r.get("validated") and (probe is None or r["probe"] == probe)]


def gemv_case_key(r: dict[str, Any]) -> tuple:
    """(dtype, batch, K, N): the providers of one decode GEMV case share it."""
    return (r["dtype"], int(r.get("batch") or r.get("m") or 1), int(r["k"]), int(r["n"]))


def fastest_per_case(records: Iterable[dict[str, Any]], probe: str,
                     key: Callable[[dict[str, Any]], tuple]) -> dict[tuple, list[dict[str, Any]]]:
    """Fit-ready timed records of a probe grouped by case, one per provider (its fastest
    attempt: a re-measured case has several), fastest first (best provider first)."""
    groups: dict[tuple, dict[Any, dict[str, Any]]] = {}
    for r in fit_ready(records, probe):
        if r.get("time_ms_median"):
            best = groups.setdefault(key(r), {})
            mine = best.get(r.get("provider"))
            if mine is None or r["time_ms_median"] < mine["time_ms_median"]:
                best[r.get("provider")] = r
    return {k: sorted(v.values(), key=lambda r: r["time_ms_median"])
            for k, v in sorted(groups.items())}


def to_dataframe(records: list[dict[str, Any]]):
    import pandas as pd

    df = pd.DataFrame.from_records(records)
    for col in CSV_LEAD_COLUMNS:
        if col not in df.columns:
            df[col] = None
    rest = [c for c in df.columns if c not in CSV_LEAD_COLUMNS]
    return df[CSV_LEAD_COLUMNS + rest]


def write_csv(records: list[dict[str, Any]], path: str | Path) -> Path:
    from ridgeline.outputs import atomic_write_text

    return atomic_write_text(Path(path), to_dataframe(records).to_csv(index=False))
