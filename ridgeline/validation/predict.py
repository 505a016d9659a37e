"""Predict what `ridgeline validate` measures, with the planner's equations, and score the error.

Pure Python (no torch). Two predictions per point:
- *profile*: ridgeline.sizing.latency.decode_step_time / prefill_time on
  hardware_from_profile(profile) (the measured roofline of this device);
- *datasheet*: the same equations on the vendor's peak bandwidth and tensor
  throughput (the profile's labelled `datasheet` entry, else the bundled one
  matched by device name) through the planner's hardware_from_datasheet: peak
  rates, no small-GEMM derating, an assumed per-kernel floor (labelled in its
  notes); None on the CPU, which has no datasheet.

Error of one point, and the summary of a phase:

    error = |predicted - measured| / measured
    median_error = median over the phase's points, worst_error = max

A point whose samples still scatter above roofline.trust.NOISY_SPREAD after re-measuring
(ridgeline.validation.measure) is kept in the statistics and marked `noisy`; the summary
counts them (`n_noisy`). The summary uses the primary mode of each phase: "graph" where it was measured
(how serving engines run), else "eager"; `summary_by_mode` has every mode.

Tensor parallelism (`validate --tp N`): the same equations with tp=N, whose
all-reduce term comes from the profile's interconnect section
(roofline.interconnect.tp_allreduce_time: the fit at N ranks, else the planner's
estimate, labelled in `allreduce_source`). Each point then also carries the
all-reduce share on both sides:

    predicted_allreduce_share = StepTime.allreduce_s / StepTime.time_s
    allreduce_share           = measured all-reduce time / measured step time

(measured as in ridgeline.validation.tp). A profile with nothing to price the
all-reduce from leaves the profile prediction empty (`no_prediction` says why);
the point is still measured.
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable

from ridgeline.errors import RidgelineError
from ridgeline.sizing.hardware import Hardware, hardware_from_datasheet
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
            context: int, tp: int = 1) -> StepTime:
    """decode: one step of `batch` sequences with `context` cached tokens; prefill: `context`
    input tokens per sequence; on `tp` tensor-parallel ranks.

    The measured prefill is one pass over the whole prompt, so the planner is asked for
    one pass too (max_batched_tokens = the prompt), not its default chunked schedule.
    """
    if phase == "decode":
        return decode_step_time(spec, precision, hw, batch, context, tp=tp)
    if phase == "prefill":
        return prefill_time(spec, precision, hw, batch, context, tp=tp,
                            max_batched_tokens=batch * context)
    raise ValueError(f"unknown phase {phase!r}")


def allreduce_availability(spec: Any, precision: Precision, hw: Hardware,
                           tp: int) -> tuple[str, str]:
    """(source, detail) of the all-reduce a TP=`tp` prediction on `hw` would use:
    "measured" (a fit at `tp` ranks), "estimated" (the planner's estimate from another
    world size or the host link), "datasheet", or "none" (nothing to price it from)."""
    import math

    from ridgeline.roofline.interconnect import tp_allreduce_time

    if tp <= 1:
        return "n/a", ""
    est = tp_allreduce_time(spec.hidden_size, 1, precision.base, tp, hw.profile)
    if not math.isfinite(est.time_s):
        return "none", est.detail
    return est.source, est.detail


def relative_error(predicted_s: float | None, measured_s: float) -> float | None:
    """|predicted - measured| / measured; None when there is no prediction."""
    if predicted_s is None:
        return None
    if not measured_s > 0:
        raise ValueError(f"measured time must be positive, got {measured_s!r}")
    return abs(predicted_s - measured_s) / measured_s


def datasheet_hardware(profile: dict[str, Any] | None, device: dict[str, Any]) -> Hardware | None:
    """The planner's datasheet Hardware for this device; None on the CPU or an unknown GPU.

    The entry is the profile's labelled `datasheet` when it has one, else the bundled
    entry whose pattern matches the device name (ridgeline.datasheets).
    """
    if device.get("kind") == "cpu":
        return None
    from ridgeline import datasheets

    entry = (profile or {}).get("datasheet")
    if not (isinstance(entry, dict) and entry.get("memory_bandwidth_GBps")
            and entry.get("matmul_TFLOPS")):
        entry = datasheets.lookup(str(device.get("name", "")))
    if not entry:
        return None
    entry = dict(entry)
    entry.setdefault("name", device.get("name", "?"))
    entry.setdefault("memory_bytes", device.get("memory_bytes", 0))
    return hardware_from_datasheet(entry)


def _predict_tp(spec: Any, precision: Precision, hw: Hardware, m: dict[str, Any],
                tp: int) -> tuple[StepTime | None, str | None]:
    """(prediction, None), or (None, why) when the planner cannot price TP=`tp` on `hw`
    (no all-reduce measurement and no host link): the point is still measured."""
    try:
        return predict(spec, precision, hw, m["phase"], m["batch"], m["context"], tp), None
    except RidgelineError as exc:
        return None, str(exc)


def score_point(m: dict[str, Any], spec: Any, precision: Precision, hw_profile: Hardware,
                hw_sheet: Hardware | None, tp: int = 1) -> dict[str, Any]:
    """One validation.json point from a measurement (phase, mode, batch, context, measured_s;
    with tp > 1 also allreduce_s, allreduce_share, no_allreduce_s, allreduce_alone_s)."""
    if tp > 1:
        pred, why = _predict_tp(spec, precision, hw_profile, m, tp)
        sheet = _predict_tp(spec, precision, hw_sheet, m, tp)[0] if hw_sheet is not None else None
    else:
        why = None
        pred = predict(spec, precision, hw_profile, m["phase"], m["batch"], m["context"])
        sheet = (predict(spec, precision, hw_sheet, m["phase"], m["batch"], m["context"])
                 if hw_sheet is not None else None)
    point = {
        "phase": m["phase"], "mode": m["mode"], "batch": int(m["batch"]),
        "context": int(m["context"]), "measured_s": float(m["measured_s"]),
        "predicted_profile_s": float(pred.time_s) if pred is not None else None,
        "predicted_datasheet_s": float(sheet.time_s) if sheet is not None else None,
        "error_profile": relative_error(pred.time_s if pred else None, m["measured_s"]),
        "error_datasheet": relative_error(sheet.time_s if sheet else None, m["measured_s"]),
        "bound": pred.bound if pred is not None else None,
        "bound_datasheet": sheet.bound if sheet is not None else None,
        "breakdown_profile_s": dict(pred.breakdown) if pred is not None else {},
        "layers_measured": int(m.get("layers_measured", 0)),
        "scaled": bool(m.get("scaled", False)),
        "finite": bool(m.get("finite", True)),
        "timing": m.get("timing"),
        "timing_head": m.get("head_timing"),  # the head alone, timed when the point is scaled
        "spread": m.get("spread"),              # (p80 - p20) / median of what was measured
        "noisy": bool(m.get("noisy", False)),   # still scattered after re-measuring: counted
        "attempts": int(m.get("attempts", 1)),
        "passes_s": m.get("passes_s"),          # each pass's time, when there were several
    }
    if tp > 1:
        point.update(tp_fields(m, pred, sheet, why, tp))
    return point


def tp_fields(m: dict[str, Any], pred: StepTime | None, sheet: StepTime | None,
              why: str | None, tp: int) -> dict[str, Any]:
    """The all-reduce on both sides of a TP point (seconds and shares of the step)."""
    def share(st: StepTime | None) -> float | None:
        return st.allreduce_s / st.time_s if st is not None and st.time_s > 0 else None

    return {
        "tp": int(tp),
        "allreduce_s": float(m["allreduce_s"]),
        "allreduce_share": float(m["allreduce_share"]),
        "measured_no_allreduce_s": float(m["no_allreduce_s"]),
        "allreduce_alone_s": m.get("allreduce_alone_s"),
        "predicted_allreduce_s": float(pred.allreduce_s) if pred is not None else None,
        "predicted_allreduce_share": share(pred),
        "allreduce_source": pred.allreduce_source if pred is not None else "none",
        "predicted_datasheet_allreduce_share": share(sheet),
        "no_prediction": why,
        "timing_no_allreduce": m.get("timing_no_allreduce"),
        "timing_allreduce_alone": m.get("timing_allreduce_alone"),
    }


def _stats(errors: list[float]) -> tuple[float | None, float | None]:
    if not errors:
        return None, None
    return float(statistics.median(errors)), float(max(errors))


def summarize_points(points: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """{median,worst}_error_{profile,datasheet} over the given points (finite ones only), and
    how many of them are noisy (kept in the statistics, counted so a reader can tell)."""
    pts = [p for p in points if p.get("finite", True)]
    med_p, worst_p = _stats([p["error_profile"] for p in pts if p["error_profile"] is not None])
    med_d, worst_d = _stats([p["error_datasheet"] for p in pts
                             if p.get("error_datasheet") is not None])
    return {"median_error_profile": med_p, "worst_error_profile": worst_p,
            "median_error_datasheet": med_d, "worst_error_datasheet": worst_d,
            "n_points": len(pts), "n_noisy": sum(bool(p.get("noisy")) for p in pts)}


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


def summarize_allreduce(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Per phase, over its primary mode's finite TP points: the median all-reduce share
    measured and predicted (and the median seconds of each)."""
    out: dict[str, Any] = {}
    for phase in PHASES:
        mode = primary_mode(points, phase)
        pts = [p for p in points if p["phase"] == phase and p["mode"] == mode
               and p.get("finite", True) and "allreduce_share" in p]
        if not pts:
            continue

        def med(key: str) -> float | None:
            vals = [p[key] for p in pts if p.get(key) is not None]
            return float(statistics.median(vals)) if vals else None

        out[phase] = {"mode": mode, "n_points": len(pts),
                      "median_share_measured": med("allreduce_share"),
                      "median_share_predicted": med("predicted_allreduce_share"),
                      "median_allreduce_s_measured": med("allreduce_s"),
                      "median_allreduce_s_predicted": med("predicted_allreduce_s"),
                      "allreduce_source": pts[0].get("allreduce_source")}
    return out
