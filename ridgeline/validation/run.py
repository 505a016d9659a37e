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

Tensor parallelism (`--tp N`, ridgeline.validation.tp measures on the ranks):

    result, code = validate_tp(setup, sweep, tp=2, device_id="cpu")   # spawns 2 ranks
    code = validate_tp_torchrun(setup, sweep, 2, None, open_output=..., show=...)  # a rank

`validate_tp` starts N local ranks (ridgeline.ranks.spawn_ranks: env://, a watchdog
that names a rank that dies or hangs) and scores rank 0's report with the planner at
tp=N; a failed rank raises TPFailure (a RankError, one line) carrying the finished
points. `validate_tp_torchrun` is the same run when torchrun started this process as
one of the ranks: rank 0 locks the output folder first (the ranks agree on whether it
could), then every rank measures and rank 0 writes and prints.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ridgeline.errors import DeviceError, RidgelineError
from ridgeline.ranks import RankError

if TYPE_CHECKING:  # pragma: no cover - names for the annotations only
    from ridgeline.device import DeviceInfo
    from ridgeline.outputs import OutputDir
    from ridgeline.sizing.hardware import Hardware
    from ridgeline.sizing.models import ModelSpec
    from ridgeline.sizing.precision import Precision
    from ridgeline.validation.footprint import LayerDims
    from ridgeline.validation.measure import DepthPlan, Measured, Point, Skipped
    from ridgeline.validation.transformer import DecoderModel

DEFAULT_PREFILL = (128, 1024, 4096, 16384)
DEFAULT_PREFILL_CPU = (128, 1024, 4096)  # 16384 tokens of attention take minutes on a CPU
SUPPORTED_WEIGHTS = ("bf16", "fp16", "fp8")

# on_progress(description, points done, points in all): the command draws it
Progress = Callable[[str, int, int], None]
DEFAULT_RANK_TIMEOUT_S = 300.0     # --tp: a rank silent this long is hung
DEFAULT_STARTUP_TIMEOUT_S = 300.0  # --tp: importing torch and joining the group, per rank


@dataclass(frozen=True)
class Sweep:
    """The points to measure and how long to time each."""

    batches: tuple[int, ...]                 # decode batch sizes
    contexts: tuple[int, ...]                # tokens in the KV cache at the decode step; () none
    prefills: tuple[int, ...] | None = None  # prefill lengths at batch 1; None: the default
    layers_cap: int | None = None            # measure at most this many layers, scale the rest
    rep_ms: float = 200.0                    # timing budget per point and mode
    passes: int | None = None                # passes over every point; None: the device's

    def __post_init__(self) -> None:
        if not self.contexts and self.prefills == ():
            raise RidgelineError("nothing to measure: --context and --prefill are both 'none'")

    def passes_for(self, kind: str) -> int:
        """Passes over every point on a device of this kind (measure.py, "Passes")."""
        from ridgeline.validation.measure import DEFAULT_PASSES_CPU

        if self.passes is not None:
            return self.passes
        return DEFAULT_PASSES_CPU if kind == "cpu" else 1

    def prefills_for(self, kind: str) -> tuple[int, ...]:
        """The prefill lengths on a device of this kind ("cpu", "cuda", ...)."""
        if self.prefills is not None:
            return self.prefills
        return DEFAULT_PREFILL_CPU if kind == "cpu" else DEFAULT_PREFILL


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
    drift: dict[str, Any] | None = None   # ridgeline.validation.drift
    passes: int = 1              # passes over every point (measure.py, "Passes")


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


def profile_notes(setup: Setup, device: DeviceInfo) -> list[str]:
    """A note when the profile was measured on another device than this run's."""
    prof_name = setup.profile["provenance"]["device"].get("name")
    if prof_name == device.name:
        return []
    return [f"the profile was measured on {prof_name!r}, this run is on {device.name!r}: "
            "the profile predictions describe another device"]


def depth_notes(plan: DepthPlan, layers_cap: int | None, num_layers: int) -> list[str]:
    """Why fewer layers than the model has are measured (measure.DepthPlan), if they are."""
    if layers_cap and layers_cap < num_layers:
        return [f"--layers {layers_cap}: at most {layers_cap} of {num_layers} layers "
                "measured, times scaled to the full depth"]
    if min((n for n in plan.per_point.values() if n), default=num_layers) < num_layers:
        return ["the full depth does not fit beside every point's KV cache: points marked * "
                "measure fewer layers and are scaled to the full depth"]
    return []


def ops_note(model: DecoderModel) -> str:
    """What runs the elementwise work of a built DecoderModel."""
    return "elementwise work: " + (
        "fused Triton kernels (10 kernels per layer)" if model.ops.name == "triton"
        else "PyTorch ops (more kernels per layer than a serving engine)")


def validate(setup: Setup, sweep: Sweep, device_id: str | None = None,
             on_progress: Progress | None = None) -> tuple[dict[str, Any], int]:
    """Detect the device, measure and score every point: (the document, exit code 0 or 130)."""
    from ridgeline.device import get_device
    from ridgeline.validation import predict as pr
    from ridgeline.validation.measure import Skipped, decode_points, prefill_points

    device = get_device(device_id)
    hw_sheet = pr.datasheet_hardware(setup.profile, device.to_dict())
    points = (decode_points(list(sweep.batches), list(sweep.contexts))
              + prefill_points(list(sweep.prefills_for(device.kind))))
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
    from ridgeline.validation import drift
    from ridgeline.validation import measure as ms
    from ridgeline.validation.transformer import DecoderModel, sdpa_has_gqa

    spec, weights, dims = setup.spec, setup.weights, setup.dims
    notes = profile_notes(setup, device)
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
    notes += depth_notes(plan, layers_cap, dims.num_layers)

    passes = sweep.passes_for(device.kind)
    total = len(points) * passes
    say = on_progress or (lambda description, done, total: None)
    say(f"building {plan.resident} layer(s) of {spec.name}", 0, total)
    done = 0

    def on_result(p: Point, _results: list) -> None:
        nonlocal done
        done += 1
        say(p.label() + (f" (pass {1 + (done - 1) // len(points)} of {passes})"
                         if passes > 1 else ""), done, total)

    out = Measurement(notes=notes, timer_name=timer.name, resident=plan.resident, passes=passes)
    references = drift.references(setup.profile, weights)
    try:
        with torch.inference_mode():
            if references:
                say("timing the profile's reference GEMV and matmul again", 0, total)
            before = drift.time_references(references, device, timer)
            bench = model = None
            if plan.resident:
                model = DecoderModel(spec, weights, layers=plan.resident,
                                     device=torch_device(device), gfx_arch=device.gfx_arch,
                                     gqa_native=gqa_native)
                model.prepare(max(p.kv_tokens for p in points))
                notes.extend(model.notes)
                notes.append(ops_note(model))
                bench = ms.Bench(model, device, timer, rep_ms=sweep.rep_ms)
            out.measured, out.skipped, out.interrupted = ms.run_points(
                points, plan, modes, bench.run_point if bench else None,
                cpu=device.kind == "cpu", on_result=on_result, passes=passes)
            bench = model = None   # the weights go before the reference's copies come
            ms.release_memory(device)
            if references:
                after = ([[] for _ in references] if out.interrupted
                         else drift.time_references(references, device, timer))
                out.drift = drift.summarize(references, before, after)
                notes.extend(line for line in (drift.note(out.drift), drift.spread_note(out.drift))
                             if line)
    except KeyboardInterrupt:  # while building the model or timing the reference
        out.interrupted = True
    if out.interrupted:
        notes.append("interrupted (Ctrl-C): only the finished points are kept")
    return out


def build_result(setup: Setup, device: DeviceInfo, hw_sheet: Hardware | None,
                 measurement: Measurement, *, complete: bool, tp: int = 1) -> dict[str, Any]:
    """The validation.json document (see ridgeline.validation.output)."""
    from ridgeline import __version__
    from ridgeline.validation import predict as pr
    from ridgeline.validation.output import VALIDATION_KIND, VALIDATION_SCHEMA_VERSION

    measured = measurement.measured
    scored = [pr.score_point(m.to_dict(), setup.spec, setup.precision, setup.hw, hw_sheet, tp)
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
    doc = {
        "kind": VALIDATION_KIND,
        "schema_version": VALIDATION_SCHEMA_VERSION,
        "model": setup.spec.name,
        "weights": setup.weights,
        "precision": asdict(setup.precision),
        "device": device.name,
        "device_id": device.id,
        "tp": int(tp),
        "profile": str(setup.profile_path),
        "profile_device": setup.profile["provenance"]["device"].get("name"),
        "layers_measured": int(min((m.layers_measured for m in measured),
                                   default=measurement.resident)),
        "layers_total": int(setup.dims.num_layers),
        "scaled": any(m.scaled for m in measured),
        "complete": bool(complete),
        "points": scored,
        "summary": summary,
        "drift": measurement.drift,
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
            "statistic": "median of samples" + (f", median of {measurement.passes} passes"
                                                 if measurement.passes > 1 else ""),
            "passes": measurement.passes,
        },
    }
    if tp > 1:
        doc["summary_allreduce"] = pr.summarize_allreduce(scored)
    return doc


def save(result: dict[str, Any], out: OutputDir) -> dict[str, Path]:
    """validation.png/.json/.md into the locked `out`, then the old files this run did not
    rewrite (a stale validation.png) removed: a failed write leaves the old validation intact."""
    from ridgeline.validation.output import write_all

    written = write_all(result, out.path)
    out.clear(keep=tuple(p.name for p in written.values()))
    return written


# ----------------------------------------------------------------- tensor parallelism

class TPFailure(RankError):
    """A rank died or hung; `result` is the document of the points finished before (or None)."""

    def __init__(self, message: str, result: dict[str, Any] | None = None):
        super().__init__(message)
        self.result = result


def check_tp(setup: Setup, tp: int) -> None:
    """One line when `tp` ranks cannot shard this model as engines do."""
    from ridgeline.validation.tp import tp_problem

    why = tp_problem(setup.dims, tp, setup.weights)
    if why:
        raise RidgelineError(f"--tp {tp}: {setup.spec.name} cannot be sharded: {why}")


def tp_device_kind(device_id: str | None, tp: int, *, spawn: bool = True) -> str:
    """"cpu" or "cuda" (NVIDIA or AMD) for a TP run; rank r runs on GPU r (LOCAL_RANK).

    An index other than 0, or fewer GPUs than ranks to spawn, is one line.
    """
    from ridgeline.device import gpu_count

    if device_id:
        spec = device_id.strip().lower()
        if spec == "cpu":
            return "cpu"
        m = re.fullmatch(r"(cuda|rocm|hip|gpu)(?::(\d+))?", spec)
        if not m:
            raise DeviceError(f"unknown device {device_id!r}: use cpu, cuda:N (NVIDIA or AMD) "
                              "or rocm:N")
        if m.group(2) and int(m.group(2)) != 0:
            raise RidgelineError(f"--tp {tp} runs rank r on GPU r (LOCAL_RANK under torchrun): "
                                 f"give --device {m.group(1)}, not {device_id}")
    count = gpu_count()
    if not device_id and count == 0:
        return "cpu"
    if count == 0:
        raise DeviceError(f"no GPU is visible to torch ({device_id} requested); try --device cpu")
    if spawn and count < tp:
        raise RidgelineError(f"--tp {tp} needs {tp} GPUs on this node, torch sees {count} "
                             "(run under torchrun to span nodes, or --device cpu)")
    return "cuda"


def tp_notes(setup: Setup, tp: int) -> list[str]:
    """Where the predicted all-reduce comes from, said up front (and kept in the notes)."""
    from ridgeline.validation import predict as pr

    source, detail = pr.allreduce_availability(setup.spec, setup.precision, setup.hw, tp)
    if source == "measured":
        return [f"predicted all-reduce: the profile's fit for {tp} ranks ({detail})"]
    if source == "none":
        return [f"the profile has no all-reduce fit for {tp} ranks and nothing to estimate one "
                f"from ({detail}): measured only, no profile prediction"]
    return [f"the profile has no all-reduce fit for {tp} ranks: the predictions use the "
            f"planner's estimate ({source}: {detail})"]


def tp_job(setup: Setup, sweep: Sweep, kind: str, *, pg_timeout_s: float,
           fault: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every rank runs (ridgeline.validation.tp.run_rank), as plain JSON."""
    return {"spec": asdict(setup.spec), "weights": setup.weights, "device_kind": kind,
            "batches": list(sweep.batches), "contexts": list(sweep.contexts),
            "prefills": list(sweep.prefills_for(kind)), "layers_cap": sweep.layers_cap,
            "rep_ms": sweep.rep_ms, "pg_timeout_s": float(pg_timeout_s), "fault": fault}


def tp_result(setup: Setup, report: dict[str, Any], tp: int, *, complete: bool,
              notes: list[str]) -> dict[str, Any]:
    """The validation.json document of a TP run from rank 0's report (see tp.run_rank)."""
    from ridgeline.device import DeviceInfo
    from ridgeline.validation import predict as pr
    from ridgeline.validation.measure import Skipped
    from ridgeline.validation.tp import TPMeasured

    device = DeviceInfo(**report["device"])
    hw_sheet = pr.datasheet_hardware(setup.profile, report["device"])
    all_notes = list(notes) + profile_notes(setup, device)
    all_notes.append(
        f"TP={tp} over {report.get('backend', '?')}: every step timed with its all-reduces, then "
        "with them as no-ops; measured all-reduce = the difference (ridgeline.validation.tp)")
    all_notes += report.get("notes", [])
    measurement = Measurement(
        measured=[TPMeasured(**m) for m in report.get("measured", [])],
        skipped=[Skipped(**s) for s in report.get("skipped", [])],
        interrupted=bool(report.get("interrupted")), notes=all_notes,
        timer_name=report.get("timer"), resident=int(report.get("resident") or 0))
    if measurement.interrupted:
        all_notes.append("interrupted: only the finished points are kept")
    result = build_result(setup, device, hw_sheet, measurement, complete=complete, tp=tp)
    result["backend"] = report.get("backend")
    result["check_error"] = report.get("check_error")
    if report.get("waived"):
        result["waived"] = report["waived"]
    return result


def _read_report(workdir: Path) -> dict[str, Any] | None:
    """Rank 0's report; after a failure, what it had written: meta.json and the points."""
    final = workdir / "report.json"
    if final.exists():
        return json.loads(final.read_text())
    meta = workdir / "meta.json"
    if not meta.exists():
        return None
    report = json.loads(meta.read_text())
    points = workdir / "points.jsonl"
    lines = points.read_text().splitlines() if points.exists() else []
    for line in lines:
        if line.strip():
            rec = json.loads(line)
            kind = rec.pop("kind")
            report["measured" if kind == "measured" else "skipped"].append(rec)
    report["interrupted"] = True
    return report


def validate_tp(setup: Setup, sweep: Sweep, tp: int, device_id: str | None = None,
                on_progress: Progress | None = None, *,
                timeout_s: float = DEFAULT_RANK_TIMEOUT_S,
                startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
                fault: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:
    """Spawn `tp` local ranks, measure every point on them, score at TP=`tp`:
    (the document, 0 or 130 after Ctrl-C). TPFailure (one line) when a rank dies or hangs.

    `fault` is test-only (ridgeline.validation.tp.inject_fault).
    """
    from ridgeline.ranks import spawn_ranks

    check_tp(setup, tp)
    kind = tp_device_kind(device_id, tp, spawn=True)
    notes = tp_notes(setup, tp)
    workdir = Path(tempfile.mkdtemp(prefix="ridgeline-tp-"))
    job = tp_job(setup, sweep, kind, fault=fault,
                 pg_timeout_s=max(timeout_s, startup_timeout_s) + 60.0)
    (workdir / "job.json").write_text(json.dumps(job))

    def poll() -> None:
        if on_progress is None:
            return
        try:
            st = json.loads((workdir / "status.json").read_text())
        except (OSError, ValueError):
            return
        on_progress(st["description"], st["done"], st["total"])

    try:
        try:
            spawn_ranks(["-m", "ridgeline.validation.tp", str(workdir / "job.json")], tp,
                        workdir, device_kind=kind, timeout_s=timeout_s,
                        startup_timeout_s=startup_timeout_s, what=f"--tp {tp}", on_poll=poll)
        except KeyboardInterrupt:
            report = _read_report(workdir)
            if report is None:
                raise
            report["interrupted"] = True
            return tp_result(setup, report, tp, complete=False, notes=notes), 130
        except RankError as exc:
            report = _read_report(workdir)
            partial = None
            if report is not None and report.get("measured"):
                partial = tp_result(setup, report, tp, complete=False,
                                    notes=notes + [f"stopped: {exc}"])
            raise TPFailure(str(exc), partial) from None
        report = _read_report(workdir)
        if report is None:
            raise TPFailure(f"--tp {tp}: the ranks exited without a report")
        return tp_result(setup, report, tp, complete=not report.get("interrupted"), notes=notes), \
            (130 if report.get("interrupted") else 0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def validate_tp_torchrun(setup: Setup, sweep: Sweep, tp: int, device_id: str | None, *,
                         open_output: Callable[[], Any],
                         show: Callable[[dict[str, Any], dict[str, Path]], None],
                         timeout_s: float = DEFAULT_RANK_TIMEOUT_S) -> int:
    """This process is one rank of a torchrun launch of `ridgeline validate --tp N`.

    open_output() -> a context manager of the locked OutputDir (rank 0 enters it before
    anything is measured; a refused folder is one line on every rank); rank 0 then writes
    the files and calls show(result, written). Returns the exit code.
    """
    from ridgeline.ranks import Progress, RankGroup
    from ridgeline.validation.tp import run_rank

    world = int(os.environ["WORLD_SIZE"])
    if world != tp:
        raise RidgelineError(f"--tp {tp} under torchrun needs WORLD_SIZE {tp}, got {world} "
                             f"(torchrun --nproc-per-node {tp} ...)")
    check_tp(setup, tp)
    kind = tp_device_kind(device_id, tp, spawn=False)
    notes = tp_notes(setup, tp)
    job = tp_job(setup, sweep, kind, pg_timeout_s=timeout_s)
    group = RankGroup(kind)
    group.init(timeout_s)
    try:
        with ExitStack() as stack:
            out, refused = None, None
            if group.rank == 0:
                try:
                    out = stack.enter_context(open_output())
                except RidgelineError as exc:
                    refused = str(exc)
            refusals = [r for r in group.share(refused) if r]
            if refusals:
                raise RidgelineError(refusals[0])
            report = run_rank(job, group, Progress(None, group.rank))
            group.barrier()
            if group.rank != 0:
                return 0
            code = 130 if report["interrupted"] else 0
            result = tp_result(setup, report, tp, complete=code == 0, notes=notes)
            show(result, save(result, out))
            return code
    finally:
        group.close()
