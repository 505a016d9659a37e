"""Predicted against measured: time a real transformer forward pass and score the planner.

    ridgeline validate --model llama-3.1-8b --weights bf16 --batch 1,8,32,128 --context 1024,4096
                       [--prefill 128,1024,4096,16384] [--profile P] [--layers N]
                       [--device cuda:0|cpu] [-o DIR] [--json]
    ridgeline validate --device cpu --model tiny        # runs anywhere, in seconds

Builds the model's decoder layers with random weights on the device, measures
decode steps (CUDA graphs and eager) and prefills, predicts both with the
planner's equations on the measured profile and on datasheet peaks, and writes
DIR/validation.json, DIR/validation.md and DIR/validation.png. Without
--profile it reads ./ridgeline-out/profile.json (made by `ridgeline profile`).
Ctrl-C keeps the finished points (the files are written marked incomplete).
-o is checked and locked before anything is measured (ridgeline.outputs): a
file, an unwritable folder or one already holding a validation.json (unless
--force) is one line; the files are written atomically.
"""

from __future__ import annotations

import argparse
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ridgeline.errors import RidgelineError

DEFAULT_PROFILE = Path("ridgeline-out") / "profile.json"
DEFAULT_BATCHES = "1,8,32,128"
DEFAULT_CONTEXTS = "1024,4096"
DEFAULT_PREFILL = "128,1024,4096,16384"
DEFAULT_PREFILL_CPU = "128,1024,4096"  # 16384 tokens of attention take minutes on a CPU
SUPPORTED_WEIGHTS = ("bf16", "fp16", "fp8")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="llama-3.1-8b",
                   help="bundled model name (e.g. llama-3.1-8b, tiny) or a HF config.json path "
                        "(dense models; default llama-3.1-8b)")
    p.add_argument("--weights", default="bf16", help="bf16 | fp16 | fp8 (default bf16)")
    p.add_argument("--batch", default=DEFAULT_BATCHES,
                   help=f"decode batch sizes, comma-separated (default {DEFAULT_BATCHES})")
    p.add_argument("--context", default=DEFAULT_CONTEXTS,
                   help=f"tokens already in the KV cache at the decode step "
                        f"(default {DEFAULT_CONTEXTS}; 'none' skips decode)")
    p.add_argument("--prefill", default=None,
                   help=f"prefill input lengths at batch 1 (default {DEFAULT_PREFILL}, on the CPU "
                        f"{DEFAULT_PREFILL_CPU}; 'none' skips prefill)")
    p.add_argument("--profile", default=None, metavar="P",
                   help=f"profile.json to predict from (default ./{DEFAULT_PROFILE})")
    p.add_argument("--layers", default=None, metavar="N",
                   help="measure at most N decoder layers and scale to the full depth "
                        "(default: the full depth where it fits in memory)")
    p.add_argument("--device", default=None, help="cuda:N, rocm:N or cpu (default: first GPU, "
                                                  "else cpu)")
    p.add_argument("-o", "--output", default="ridgeline-out", metavar="DIR",
                   help="output folder (default ./ridgeline-out)")
    p.add_argument("--rep-ms", default="200", metavar="MS",
                   help="timing budget per point and mode in ms (default 200)")
    p.add_argument("--json", action="store_true", help="print validation.json instead of a table")
    p.add_argument("--force", action="store_true",
                   help="replace a validation already in DIR (other files are kept)")


def parse_int_list(text: str, flag: str, *, allow_none: bool = False) -> list[int]:
    """"1,8,32" -> [1, 8, 32]; positive integers only, one-line RidgelineError otherwise."""
    text = (text or "").strip()
    if allow_none and text.lower() in ("", "none", "0"):
        return []
    values = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = int(item)
        except ValueError:
            raise RidgelineError(f"{flag} takes comma-separated positive integers, got {item!r}") \
                from None
        if value < 1:
            raise RidgelineError(f"{flag} values must be positive integers, got {value}")
        values.append(value)
    if not values:
        raise RidgelineError(f"{flag} is empty")
    return sorted(set(values), key=values.index)


def parse_positive(text: str | None, flag: str, kind=int):
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise RidgelineError(f"{flag} takes a positive number, got {text!r}") from None
    if value <= 0:
        raise RidgelineError(f"{flag} must be positive, got {text}")
    return value


def resolve_profile(path: str | None) -> Path:
    if path:
        return Path(path)
    if DEFAULT_PROFILE.exists():
        return DEFAULT_PROFILE
    raise RidgelineError(f"no profile: ./{DEFAULT_PROFILE} does not exist; run `ridgeline profile` "
                         "on this device first, or pass --profile P")


def fp8_waiver(device) -> str | None:
    """Why fp8 weights cannot run on this device, or None."""
    if device.supports("fp8_e4m3") or device.supports("fp8_e4m3fnuz"):
        return None
    if device.kind == "cpu":
        return "fp8 weights need a GPU with fp8 tensor cores (sm_89+ or MI300); the CPU has none"
    return (f"{device.name} has no fp8 tensor cores (NVIDIA needs sm_89+, AMD MI300 or newer); "
            "torch._scaled_mm cannot run here")


def command_line(args: argparse.Namespace) -> list[str]:
    """The command as the user could re-run it (provenance)."""
    cmd = ["ridgeline", "validate", "--model", args.model, "--weights", args.weights,
           "--batch", args.batch, "--context", args.context]
    for flag, value in (("--prefill", args.prefill), ("--profile", args.profile),
                        ("--layers", args.layers), ("--device", args.device), ("-o", args.output),
                        ("--rep-ms", args.rep_ms)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + (["--json"] if args.json else []) + (["--force"] if args.force else [])


def run(args: argparse.Namespace) -> int:
    # everything a user can get wrong is checked before the device is touched
    batches = parse_int_list(args.batch, "--batch")
    contexts = parse_int_list(args.context, "--context", allow_none=True)
    prefills = (parse_int_list(args.prefill, "--prefill", allow_none=True)
                if args.prefill is not None else None)
    layers_cap = parse_positive(args.layers, "--layers")
    rep_ms = parse_positive(args.rep_ms, "--rep-ms", float)
    if not contexts and prefills == []:
        raise RidgelineError("nothing to measure: --context and --prefill are both 'none'")

    from ridgeline.outputs import prepare_output_dir
    from ridgeline.roofline.profile import load_profile
    from ridgeline.sizing.hardware import hardware_from_profile
    from ridgeline.sizing.models import load_model
    from ridgeline.validation import predict as pr
    from ridgeline.validation.footprint import dims_from_spec, normalize_weights

    spec = load_model(args.model)
    weights = normalize_weights(args.weights)
    if weights not in SUPPORTED_WEIGHTS:
        raise RidgelineError(f"--weights {args.weights}: validate runs "
                             f"{', '.join(SUPPORTED_WEIGHTS)} (what the planner sizes)")
    dims = dims_from_spec(spec, weights)
    profile_path = resolve_profile(args.profile)
    profile = load_profile(profile_path)
    hw = hardware_from_profile(profile)
    precision = pr.precision_for(weights)
    ctx = dict(args=args, spec=spec, weights=weights, dims=dims, profile=profile,
               profile_path=profile_path, hw=hw, precision=precision)
    # the output folder before the device: a refused -o costs nothing, not minutes of measuring
    with prepare_output_dir(args.output, force=args.force, what="validation") as out:
        return _validate(ctx, out, batches, contexts, prefills, layers_cap, rep_ms)


def _validate(ctx: dict[str, Any], out, batches: list[int], contexts: list[int],
              prefills: list[int] | None, layers_cap: int | None, rep_ms: float) -> int:
    """Detect the device, measure every point and write the result into the locked `out`."""
    from ridgeline.device import get_device
    from ridgeline.validation import predict as pr
    from ridgeline.validation.measure import decode_points, prefill_points

    args, spec, precision, hw = ctx["args"], ctx["spec"], ctx["precision"], ctx["hw"]
    device = get_device(args.device)
    if prefills is None:
        prefills = parse_int_list(DEFAULT_PREFILL_CPU if device.kind == "cpu" else DEFAULT_PREFILL,
                                  "--prefill")
    hw_sheet = pr.datasheet_hardware(ctx["profile"], device.to_dict())
    points = decode_points(batches, contexts) + prefill_points(prefills)
    # a planner error surfaces now, not after minutes of measuring
    pr.predict(spec, precision, hw, points[0].phase, points[0].batch, points[0].context)

    ctx.update(device=device, hw_sheet=hw_sheet)
    waiver = fp8_waiver(device) if ctx["weights"] == "fp8" else None
    if waiver:
        from ridgeline.validation.measure import Skipped

        skipped = [Skipped(p.phase, "all", p.batch, p.context, waiver) for p in points]
        result = build_result(ctx, [], skipped, complete=True, notes=[f"fp8 waived: {waiver}"],
                              timer_name=None, resident=0)
        result["waived"] = waiver
        finish(result, out, args)
        return 0
    measured, skipped, interrupted, notes, timer_name, resident = measure_points(
        ctx, points, layers_cap, rep_ms)
    result = build_result(ctx, measured, skipped, complete=not interrupted, notes=notes,
                          timer_name=timer_name, resident=resident)
    finish(result, out, args)
    return 130 if interrupted else 0


def measure_points(ctx: dict[str, Any], points: list, layers_cap: int | None, rep_ms: float):
    """Plan the depth, build the model, time every point with a progress bar (Ctrl-C safe)."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ridgeline.device import torch_device
    from ridgeline.timing import make_timer
    from ridgeline.validation import measure as ms
    from ridgeline.validation.transformer import DecoderModel, sdpa_has_gqa

    spec, weights, dims, device = ctx["spec"], ctx["weights"], ctx["dims"], ctx["device"]
    notes: list[str] = []
    prof_name = ctx["profile"]["provenance"]["device"].get("name")
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

    err_console = Console(stderr=True)
    measured, skipped, interrupted = [], [], False
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task(f"building {plan.resident} layer(s) of {spec.name}",
                                 total=len(points))

        def on_result(p, _results) -> None:
            progress.update(task, advance=1, description=p.label())

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
                    bench = ms.Bench(model, device, timer, rep_ms=rep_ms)
                measured, skipped, interrupted = ms.run_points(
                    points, plan, modes, bench.run_point if bench else None,
                    cpu=device.kind == "cpu", on_result=on_result)
        except KeyboardInterrupt:  # while building the model: nothing measured yet
            interrupted = True
    if interrupted:
        notes.append("interrupted (Ctrl-C): only the finished points are kept")
    return measured, skipped, interrupted, notes, timer.name, plan.resident


def build_result(ctx: dict[str, Any], measured: list, skipped: list, *, complete: bool,
                 notes: list[str], timer_name: str | None, resident: int) -> dict[str, Any]:
    """The validation.json document (see ridgeline.validation.output)."""
    from dataclasses import asdict

    from ridgeline import __version__
    from ridgeline.validation import predict as pr
    from ridgeline.validation.output import VALIDATION_KIND, VALIDATION_SCHEMA_VERSION

    args, device, hw_sheet = ctx["args"], ctx["device"], ctx["hw_sheet"]
    scored = [pr.score_point(m.to_dict(), ctx["spec"], ctx["precision"], ctx["hw"], hw_sheet)
              for m in measured]
    summary, by_mode = pr.summarize(scored)
    notes = list(notes) + [f"profile: {w}" for w in ctx["hw"].warnings]
    if hw_sheet is None:
        notes.append(("the CPU has no datasheet" if device.kind == "cpu" else
                      f"no datasheet entry matches {device.name!r}")
                     + ": datasheet predictions are empty")
    versions: dict[str, Any] = {"python": platform.python_version()}
    try:
        import torch

        versions.update(torch=torch.__version__, cuda=torch.version.cuda,
                        hip=getattr(torch.version, "hip", None))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return {
        "kind": VALIDATION_KIND,
        "schema_version": VALIDATION_SCHEMA_VERSION,
        "model": ctx["spec"].name,
        "weights": ctx["weights"],
        "precision": asdict(ctx["precision"]),
        "device": device.name,
        "device_id": device.id,
        "profile": str(ctx["profile_path"]),
        "profile_device": ctx["profile"]["provenance"]["device"].get("name"),
        "layers_measured": int(min((m.layers_measured for m in measured), default=resident)),
        "layers_total": int(ctx["dims"].num_layers),
        "scaled": any(m.scaled for m in measured),
        "complete": bool(complete),
        "points": scored,
        "summary": summary,
        "summary_by_mode": by_mode,
        "skipped": [s.to_dict() for s in skipped],
        "notes": notes,
        "datasheet_source": (hw_sheet.profile.get("datasheet") or {}).get("source")
        if hw_sheet else None,
        "provenance": {
            "ridgeline_version": __version__,
            "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command_line": command_line(args),
            "device": device.to_dict(),
            "versions": versions,
            "timer": timer_name,
            "statistic": "median of samples",
        },
    }


def finish(result: dict[str, Any], out, args: argparse.Namespace) -> None:
    """Write the three files into the locked OutputDir `out`, remove the old ones this run
    did not rewrite (a stale validation.png), then print the table (or the JSON)."""
    import json

    from rich.console import Console

    from ridgeline.validation.output import clean, print_result, write_all

    # new files first, stale ones after: a failed write leaves the old validation intact
    written = write_all(result, out.path)
    out.clear(keep=tuple(p.name for p in written.values()))
    if args.json:
        print(json.dumps(clean(result), indent=1))
    else:
        print_result(result, Console())
    Console(stderr=True).print("wrote " + ", ".join(str(p) for p in written.values()))
