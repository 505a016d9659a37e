"""One validation run: measure the points on the device, predict them, score, build the document.

    setup = prepare("llama-3.1-8b", "bf16", Path("profile.json"), command_line)
    sweep = Sweep(batches=(1, 8), contexts=(1024,), prefills=None)   # None: the device's default
    result, code = validate(setup, sweep, device_id=None, on_progress=None)
    save(result, out)       # validation.json/.md/.png into a locked ridgeline.outputs.OutputDir

`prepare` checks every input (model, weights, profile) before the device is touched;
`validate` detects the device, builds the model's decoder layers, times every point
(measure.py), predicts each with the planner's equations on the profile and on
datasheet peaks (predict.py) and returns the validation.json document (output.py)
with the exit code: 0, or 130 when Ctrl-C stopped it (the finished points are kept,
the document marked incomplete). fp8 on a device without fp8 tensor cores is a
waived result, not an error. The command (`ridgeline validate`) is
ridgeline.commands.validate; torch is imported only when points are measured.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ridgeline.errors import RidgelineError

if TYPE_CHECKING:  # pragma: no cover - names for the annotations only
    from ridgeline.device import DeviceInfo
    from ridgeline.outputs import OutputDir
    from ridgeline.sizing.hardware import Hardware
    from ridgeline.sizing.models import ModelSpec
    from ridgeline.sizing.precision import Precision
    from ridgeline.validation.footprint import LayerDims
    from ridgeline.validation.measure import Measured, Point, Skipped

DEFAULT_PREFILL = (128, 1024, 4096, 16384)
DEFAULT_PREFILL_CPU = (128, 1024, 4096)  # 16384 tokens of attention take minutes on a CPU
SUPPORTED_WEIGHTS = ("bf16", "fp16", "fp8")

# on_progress(description, points done, points in all): the command draws it
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Sweep:
    """The points to measure and how long to time each."""

    batches: tuple[int, ...]                 # decode batch sizes
    contexts: tuple[int, ...]                # tokens in the KV cache at the decode step; () none
    prefills: tuple[int, ...] | None = None  # prefill lengths at batch 1; None: the default
    layers_cap: int | None = None            # measure at most this many layers, scale the rest
    rep_ms: float = 200.0                    # timing budget per point and mode

    def __post_init__(self) -> None:
        if not self.contexts and self.prefills == ():
            raise RidgelineError("nothing to measure: --context and --prefill are both 'none'")

    def prefills_for(self, device: DeviceInfo) -> tuple[int, ...]:
        if self.prefills is not None:
            return self.prefills
        return DEFAULT_PREFILL_CPU if device.kind == "cpu" else DEFAULT_PREFILL


@dataclass(frozen=True)
class Setup:
    """What is validated against what; every field checked before the device is touched."""

    spec: ModelSpec
    weights: str                 # normalized: bf16 | fp16 | fp8
    dims: LayerDims
    precision: Precision
    profile: dict[str, Any]
    profile_path: Path
    hw: Hardware                 # the planner's hardware from the profile
    command_line: tuple[str, ...] = ()   # provenance: the command as the user could re-run it


@dataclass
class Measurement:
    """What measure_points returns: the finished points, the skipped ones and why."""

    measured: list[Measured] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    timer_name: str | None = None
    resident: int = 0            # layers built on the device


def prepare(model: str, weights: str, profile_path: Path,
            command_line: tuple[str, ...] | list[str] = ()) -> Setup:
    """Load the model spec and the profile and check the weights; RidgelineError otherwise."""
    from ridgeline.roofline.profile import load_profile
    from ridgeline.sizing.hardware import hardware_from_profile
    from ridgeline.sizing.models import load_model
    from ridgeline.validation.footprint import dims_from_spec, normalize_weights
    from ridgeline.validation.predict import precision_for

    spec = load_model(model)
    normalized = normalize_weights(weights)
    if normalized not in SUPPORTED_WEIGHTS:
        raise RidgelineError(f"--weights {weights}: validate runs "
                             f"{', '.join(SUPPORTED_WEIGHTS)} (what the planner sizes)")
    dims = dims_from_spec(spec, normalized)
    profile = load_profile(profile_path)
    return Setup(spec=spec, weights=normalized, dims=dims, precision=precision_for(normalized),
                 profile=profile, profile_path=Path(profile_path),
                 hw=hardware_from_profile(profile), command_line=tuple(command_line))


def check_window(spec: ModelSpec, sweep: Sweep) -> None:
    """Every decode context and prompt within the model's context window, as `plan`
    requires: a point past it is not a step the model can run (a context equal to the
    window is the last decode step, attending over the full window)."""
    window = spec.max_position_embeddings
    if not window:
        return
    too_long = [(flag, n) for flag, values in (("--context", sweep.contexts),
                                               ("--prefill", sweep.prefills or ()))
                for n in values if n > window]
    if too_long:
        flag, n = too_long[0]
        raise RidgelineError(f"{flag} {n} runs past {spec.name}'s context window of {window} "
                             "tokens (plan refuses the same)")


def fp8_waiver(device: DeviceInfo) -> str | None:
    """Why fp8 weights cannot run on this device, or None."""
    if device.supports("fp8_e4m3") or device.supports("fp8_e4m3fnuz"):
        return None
    if device.kind == "cpu":
        return "fp8 weights need a GPU with fp8 tensor cores (sm_89+ or MI300); the CPU has none"
    return (f"{device.name} has no fp8 tensor cores (NVIDIA needs sm_89+, AMD MI300 or newer); "
            "torch._scaled_mm cannot run here")


def validate(setup: Setup, sweep: Sweep, device_id: str | None = None,
             on_progress: Progress | None = None) -> tuple[dict[str, Any], int]:
    """Detect the device, measure and score every point: (the document, exit code 0 or 130)."""
    from ridgeline.device import get_device
    from ridgeline.validation import predict as pr
    from ridgeline.validation.measure import Skipped, decode_points, prefill_points

    device = get_device(device_id)
    hw_sheet = pr.datasheet_hardware(setup.profile, device.to_dict())
    points = (decode_points(list(sweep.batches), list(sweep.contexts))
              + prefill_points(list(sweep.prefills_for(device))))
    # a planner error surfaces now, not after minutes of measuring
    pr.predict(setup.spec, setup.precision, setup.hw, points[0].phase, points[0].batch,
               points[0].context)

    waiver = fp8_waiver(device) if setup.weights == "fp8" else None
    if waiver:
        skipped = [Skipped(p.phase, "all", p.batch, p.context, waiver) for p in points]
        result = build_result(setup, device, hw_sheet,
                              Measurement(skipped=skipped, notes=[f"fp8 waived: {waiver}"]),
                              complete=True)
        result["waived"] = waiver
        return result, 0
    measurement = measure_points(setup, device, points, sweep, on_progress)
    result = build_result(setup, device, hw_sheet, measurement,
                          complete=not measurement.interrupted)
    return result, 130 if measurement.interrupted else 0


def measure_points(setup: Setup, device: DeviceInfo, points: list[Point], sweep: Sweep,
                   on_progress: Progress | None = None) -> Measurement:
    """Plan the depth, build the model, time every point (Ctrl-C keeps the finished ones)."""
    import torch

    from ridgeline.device import torch_device
    from ridgeline.timing import make_timer
    from ridgeline.validation import measure as ms
    from ridgeline.validation.transformer import DecoderModel, sdpa_has_gqa

    spec, weights, dims = setup.spec, setup.weights, setup.dims
    notes: list[str] = []
    prof_name = setup.profile["provenance"]["device"].get("name")
    if prof_name != device.name:
        notes.append(f"the profile was measured on {prof_name!r}, this run is on {device.name!r}: "
                     "the profile predictions describe another device")
    gqa_native = sdpa_has_gqa()
    if not gqa_native and dims.heads != dims.kv_heads:
        notes.append(f"torch {torch.__version__} has no enable_gqa: KV heads are repeated per "
                     "query group, which adds memory traffic to attention")
    if weights == "fp8":
        notes.append("fp8: e4m3 weights with per-tensor scales; activations quantized per tensor "
                     "at run time (timed); embedding, LM head and KV cache stay bf16")
    timer = make_timer(device)
    modes = ms.modes_for(device)
    budget = ms.memory_budget(device, getattr(timer, "flush_bytes", 0))
    layers_cap = sweep.layers_cap
    max_layers = min(dims.num_layers, layers_cap or dims.num_layers)
    plan = ms.plan_depth(dims, weights, points, budget, max_layers=max_layers,
                         graph="graph" in modes, gqa_native=gqa_native)
    fewest = min((n for n in plan.per_point.values() if n), default=dims.num_layers)
    if layers_cap and layers_cap < dims.num_layers:
        notes.append(f"--layers {layers_cap}: at most {layers_cap} of {dims.num_layers} layers "
                     "measured, times scaled to the full depth")
    elif fewest < dims.num_layers:
        notes.append("the full depth does not fit beside every point's KV cache: points marked * "
                     "measure fewer layers and are scaled to the full depth")

    say = on_progress or (lambda description, done, total: None)
    say(f"building {plan.resident} layer(s) of {spec.name}", 0, len(points))
    done = 0

    def on_result(p: Point, _results: list) -> None:
        nonlocal done
        done += 1
        say(p.label(), done, len(points))

    out = Measurement(notes=notes, timer_name=timer.name, resident=plan.resident)
    try:
        with torch.inference_mode():
            bench = None
            if plan.resident:
                model = DecoderModel(spec, weights, layers=plan.resident,
                                     device=torch_device(device), gfx_arch=device.gfx_arch,
                                     gqa_native=gqa_native)
                model.prepare(max(p.kv_tokens for p in points))
                notes.extend(model.notes)
                notes.append("elementwise work: " + (
                    "fused Triton kernels (10 kernels per layer)" if model.ops.name == "triton"
                    else "PyTorch ops (more kernels per layer than a serving engine)"))
                bench = ms.Bench(model, device, timer, rep_ms=sweep.rep_ms)
            out.measured, out.skipped, out.interrupted = ms.run_points(
                points, plan, modes, bench.run_point if bench else None,
                cpu=device.kind == "cpu", on_result=on_result)
    except KeyboardInterrupt:  # while building the model: nothing measured yet
        out.interrupted = True
    if out.interrupted:
        notes.append("interrupted (Ctrl-C): only the finished points are kept")
    return out


def build_result(setup: Setup, device: DeviceInfo, hw_sheet: Hardware | None,
                 measurement: Measurement, *, complete: bool) -> dict[str, Any]:
    """The validation.json document (see ridgeline.validation.output)."""
    from ridgeline import __version__
    from ridgeline.validation import predict as pr
    from ridgeline.validation.output import VALIDATION_KIND, VALIDATION_SCHEMA_VERSION

    measured = measurement.measured
    scored = [pr.score_point(m.to_dict(), setup.spec, setup.precision, setup.hw, hw_sheet)
              for m in measured]
    summary, by_mode = pr.summarize(scored)
    notes = list(measurement.notes) + [f"profile: {w}" for w in setup.hw.warnings]
    if hw_sheet is None:
        notes.append(("the CPU has no datasheet" if device.kind == "cpu" else
                      f"no datasheet entry matches {device.name!r}")
                     + ": datasheet predictions are empty")
    versions: dict[str, Any] = {"python": platform.python_version()}
    try:
        import torch

        versions.update(torch=torch.__version__, cuda=torch.version.cuda,
                        hip=getattr(torch.version, "hip", None))
    except ImportError:  # pragma: no cover - measuring needs torch
        pass
    return {
        "kind": VALIDATION_KIND,
        "schema_version": VALIDATION_SCHEMA_VERSION,
        "model": setup.spec.name,
        "weights": setup.weights,
        "precision": asdict(setup.precision),
        "device": device.name,
        "device_id": device.id,
        "profile": str(setup.profile_path),
        "profile_device": setup.profile["provenance"]["device"].get("name"),
        "layers_measured": int(min((m.layers_measured for m in measured),
                                   default=measurement.resident)),
        "layers_total": int(setup.dims.num_layers),
        "scaled": any(m.scaled for m in measured),
        "complete": bool(complete),
        "points": scored,
        "summary": summary,
        "summary_by_mode": by_mode,
        "skipped": [s.to_dict() for s in measurement.skipped],
        "notes": notes,
        "datasheet_source": (hw_sheet.profile.get("datasheet") or {}).get("source")
        if hw_sheet else None,
        "provenance": {
            "ridgeline_version": __version__,
            "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command_line": list(setup.command_line),
            "device": device.to_dict(),
            "versions": versions,
            "timer": measurement.timer_name,
            "statistic": "median of samples",
        },
    }


def save(result: dict[str, Any], out: OutputDir) -> dict[str, Path]:
    """validation.png/.json/.md into the locked `out`, then the old files this run did not
    rewrite (a stale validation.png) removed: a failed write leaves the old validation intact."""
    from ridgeline.validation.output import write_all

    written = write_all(result, out.path)
    out.clear(keep=tuple(p.name for p in written.values()))
    return written
