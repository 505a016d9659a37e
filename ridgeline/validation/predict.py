"""Predict what `ridgeline validate` measures, with the planner's equations, and score the error.

Pure Python (no torch). Two predictions per point:
- *profile*: ridgeline.sizing.latency.decode_step_time / prefill_time on
  hardware_from_profile(profile) (the measured roofline of this device);
- *datasheet*: the same equations on the vendor's peak bandwidth and tensor
  throughput (the profile's labelled `datasheet` entry, else the bundled one
  matched by device name), with no latency floor and no small-GEMM derating;
  None on the CPU, which has no datasheet.

Error of one point, and the summary of a phase:

    error = |predicted - measured| / measured
    median_error = median over the phase's points, worst_error = max

The summary uses the primary mode of each phase: "graph" where it was measured
(how serving engines run), else "eager"; `summary_by_mode` has every mode.
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable

from ridgeline.sizing.hardware import Hardware, hardware_from_profile
from ridgeline.sizing.latency import StepTime, decode_step_time, prefill_time
from ridgeline.sizing.precision import Precision

PHASES = ("decode", "prefill")
SUMMARY_KEYS = ("median_error_profile", "worst_error_profile", "median_error_datasheet",
                "worst_error_datasheet")


def precision_for(weights: str) -> Precision:
    """What the validation model runs: fp8 weights with fp8 activations into the GEMMs
    (quantized at run time); the KV cache and everything else stays 16-bit."""
    if weights == "fp8":
        return Precision(weights="fp8", activations="fp8", kv_cache="bf16")
    return Precision(weights=weights, activations=weights, kv_cache=weights)


def predict(spec: Any, precision: Precision, hw: Hardware, phase: str, batch: int,
            context: int) -> StepTime:
    """decode: one step of `batch` sequences with `context` cached tokens; prefill: `context` inputs."""
    if phase == "decode":
        return decode_step_time(spec, precision, hw, batch, context)
    if phase == "prefill":
        return prefill_time(spec, precision, hw, batch, context)
    raise ValueError(f"unknown phase {phase!r}")


def relative_error(predicted_s: float | None, measured_s: float) -> float | None:
    """|predicted - measured| / measured; None when there is no prediction."""
    if predicted_s is None:
        return None
    if not measured_s > 0:
        raise ValueError(f"measured time must be positive, got {measured_s!r}")
    return abs(predicted_s - measured_s) / measured_s


def datasheet_hardware(profile: dict[str, Any] | None, device: dict[str, Any]) -> Hardware | None:
    """Hardware from datasheet peaks for this device; None on the CPU or an unknown GPU."""
    if device.get("kind") == "cpu":
        return None
    from ridgeline import datasheets
    from ridgeline.roofline.model import RooflineModel

    entry = (profile or {}).get("datasheet") or datasheets.lookup(str(device.get("name", "")))
    if not entry or not entry.get("memory_bandwidth_GBps") or not entry.get("matmul_TFLOPS"):
        return None
    peaks = {k: float(v) for k, v in entry["matmul_TFLOPS"].items() if v}
    # a datasheet planner: peak rates, every GEMM at full speed, no per-kernel floor
    model = RooflineModel(float(entry["memory_bandwidth_GBps"]), peaks, {}, 0.0,
                          source="datasheet",
                          notes=[f"datasheet: {entry.get('source', entry.get('name', '?'))}"])
    sheet_profile = {"kind": "ridgeline-profile", "schema_version": 1, "complete": True,
                     "provenance": {"device": {"name": entry.get("name", device.get("name")),
                                               "memory_bytes": entry.get("memory_bytes")
                                               or device.get("memory_bytes", 0)}},
                     "ceilings": {"memory_bandwidth_GBps": {"read": float(entry["memory_bandwidth_GBps"])},
                                  "matmul_TFLOPS": peaks},
                     "model": {}, "interconnect": {}, "datasheet": entry, "records": []}
    return Hardware(name=str(entry.get("name", device.get("name"))),
                    memory_bytes=int(entry.get("memory_bytes") or device.get("memory_bytes", 0)),
                    model=model, profile=sheet_profile, source="datasheet")


def score_point(m: dict[str, Any], spec: Any, precision: Precision, hw_profile: Hardware,
                hw_sheet: Hardware | None) -> dict[str, Any]:
    """One validation.json point from a measurement dict (phase, mode, batch, context, measured_s)."""
    pred = predict(spec, precision, hw_profile, m["phase"], m["batch"], m["context"])
    sheet = (predict(spec, precision, hw_sheet, m["phase"], m["batch"], m["context"])
             if hw_sheet is not None else None)
    return {
        "phase": m["phase"], "mode": m["mode"], "batch": int(m["batch"]),
        "context": int(m["context"]), "measured_s": float(m["measured_s"]),
        "predicted_profile_s": float(pred.time_s),
        "predicted_datasheet_s": float(sheet.time_s) if sheet is not None else None,
        "error_profile": relative_error(pred.time_s, m["measured_s"]),
        "error_datasheet": relative_error(sheet.time_s if sheet else None, m["measured_s"]),
        "bound": pred.bound,
        "bound_datasheet": sheet.bound if sheet is not None else None,
        "breakdown_profile_s": dict(pred.breakdown),
        "layers_measured": int(m.get("layers_measured", 0)),
        "scaled": bool(m.get("scaled", False)),
        "finite": bool(m.get("finite", True)),
        "timing": m.get("timing"),
    }


def _stats(errors: list[float]) -> tuple[float | None, float | None]:
    if not errors:
        return None, None
    return float(statistics.median(errors)), float(max(errors))


def summarize_points(points: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """{median,worst}_error_{profile,datasheet} over the given points (finite ones only)."""
    pts = [p for p in points if p.get("finite", True)]
    med_p, worst_p = _stats([p["error_profile"] for p in pts if p["error_profile"] is not None])
    med_d, worst_d = _stats([p["error_datasheet"] for p in pts
                             if p.get("error_datasheet") is not None])
    return {"median_error_profile": med_p, "worst_error_profile": worst_p,
            "median_error_datasheet": med_d, "worst_error_datasheet": worst_d,
            "n_points": len(pts)}


def primary_mode(points: list[dict[str, Any]], phase: str) -> str | None:
    modes = {p["mode"] for p in points if p["phase"] == phase}
    return "graph" if "graph" in modes else ("eager" if "eager" in modes else None)


def summarize(points: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary per phase over its primary mode, summary per "phase/mode")."""
    summary: dict[str, Any] = {}
    by_mode: dict[str, Any] = {}
    for phase in PHASES:
        mode = primary_mode(points, phase)
        chosen = [p for p in points if p["phase"] == phase and p["mode"] == mode]
        summary[phase] = {**summarize_points(chosen), "mode": mode}
        for m in sorted({p["mode"] for p in points if p["phase"] == phase}):
            by_mode[f"{phase}/{m}"] = summarize_points(
                [p for p in points if p["phase"] == phase and p["mode"] == m])
    return summary, by_mode
