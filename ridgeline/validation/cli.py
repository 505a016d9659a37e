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
"""

from __future__ import annotations

import argparse
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ridgeline.errors import RidgelineError

DEFAULT_PROFILE = Path("ridgeline-out") / "profile.json"
DEFAULT_BATCHES = "1,8,32,128"
DEFAULT_CONTEXTS = "1024,4096"
DEFAULT_PREFILL = "128,1024,4096,16384"


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
    p.add_argument("--prefill", default=DEFAULT_PREFILL,
                   help=f"prefill input lengths at batch 1 (default {DEFAULT_PREFILL}; "
                        "'none' skips prefill)")
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


def run(args: argparse.Namespace) -> int:
    # parse and check everything a user can get wrong before touching the device
    batches = parse_int_list(args.batch, "--batch")
    contexts = parse_int_list(args.context, "--context", allow_none=True)
    prefills = parse_int_list(args.prefill, "--prefill", allow_none=True)
    layers_cap = parse_positive(args.layers, "--layers")
    rep_ms = parse_positive(args.rep_ms, "--rep-ms", float)
    if not contexts and not prefills:
        raise RidgelineError("nothing to measure: --context and --prefill are both 'none'")

    from ridgeline.roofline.profile import load_profile
    from ridgeline.sizing.hardware import hardware_from_profile
    from ridgeline.sizing.models import load_model
    from ridgeline.validation import predict as pr
    from ridgeline.validation.footprint import dims_from_spec, normalize_weights

    spec = load_model(args.model)
    weights = normalize_weights(args.weights)
    dims = dims_from_spec(spec, weights)
    profile_path = resolve_profile(args.profile)
    profile = load_profile(profile_path)
    hw = hardware_from_profile(profile)
    precision = pr.precision_for(weights)

    from ridgeline.device import get_device

    device = get_device(args.device)
    hw_sheet = pr.datasheet_hardware(profile, device.to_dict())
    from ridgeline.validation.measure import decode_points, prefill_points

    points = decode_points(batches, contexts) + prefill_points(prefills)
    # a planner error surfaces now, not after minutes of measuring
    for p in points[:1]:
        pr.predict(spec, precision, hw, p.phase, p.batch, p.context)

    out_dir = Path(args.output)
    from rich.console import Console

    err_console = Console(stderr=True)
    waiver = fp8_waiver(device) if weights == "fp8" else None
    if waiver:
        result = _result(args, spec, weights, device, profile, profile_path, dims, precision,
                         [], [], True, [f"all points waived: {waiver}"], None, 0, hw, hw_sheet)
        result["waived"] = waiver
        _finish(result, out_dir, args, err_console)
        return 0
    return _measure_and_report(args, spec, weights, dims, device, profile, profile_path, hw,
                               hw_sheet, precision, points, layers_cap, rep_ms, out_dir,
                               err_console)


def _measure_and_report(args, spec, weights, dims, device, profile, profile_path, hw, hw_sheet,
                        precision, points, layers_cap, rep_ms, out_dir, err_console) -> int:
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ridgeline.timing import make_timer
    from ridgeline.validation import measure as ms
    from ridgeline.validation.transformer import DecoderModel, sdpa_has_gqa

    notes: list[str] = []
    prof_dev = profile["provenance"]["device"]
    if prof_dev.get("name") != device.name:
        notes.append(f"the profile was measured on {prof_dev.get('name')!r}, this run is on "
                     f"{device.name!r}: the 'profile' predictions are for another device")
    gqa_native = sdpa_has_gqa()
    if not gqa_native and dims.heads != dims.kv_heads:
        notes.append(f"torch {torch.__version__} has no enable_gqa: KV heads are repeated per "
                     "query group, which adds memory traffic to attention")
    if weights == "fp8":
        notes.append("fp8: e4m3 weights with per-tensor scales; activations quantized per tensor "
                     "at run time (timed); embedding, LM head and KV cache stay bf16")
    timer = make_timer(device)
    graph = device.kind != "cpu"
    budget = ms.memory_budget(device, getattr(timer, "flush_bytes", 0))
    max_layers = min(dims.num_layers, layers_cap or dims.num_layers)
    plan = ms.plan_depth(dims, weights, points, budget, max_layers=max_layers, graph=graph,
                         gqa_native=gqa_native)
    if layers_cap and layers_cap < dims.num_layers:
        notes.append(f"--layers {layers_cap}: {min(layers_cap, dims.num_layers)} of "
                     f"{dims.num_layers} layers measured, times scaled to the full depth")
    elif plan.resident and min((n for n in plan.per_point.values() if n), default=plan.resident) \
            < dims.num_layers:
        notes.append("the full depth does not fit beside the KV cache of every point: the largest "
                     "points measure fewer layers and are scaled to the full depth")

    measured: list = []
    skipped: list = []
    interrupted = False
    console = Console_for(args)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=True,
                  disable=not err_console.is_terminal) as progress:
        task = progress.add_task(f"building {plan.resident} layers of {spec.name}", total=len(points))
        try:
            with torch.inference_mode():
                model = None
                if plan.resident:
                    model = DecoderModel(spec, weights, layers=plan.resident,
                                         device=ms.torch_device_of(device), seed=0,
                                         gfx_arch=device.gfx_arch, gqa_native=gqa_native)
                    model.prepare(max(p.kv_tokens for p in points))
                    bench = ms.Bench(model, device, timer, rep_ms=rep_ms)
                else:
                    bench = ms.NullBench(device, dims.num_layers)

                def on_result(p, _out) -> None:
                    progress.update(task, advance=1, description=p.label())

                progress.update(task, description=points[0].label())
                measured, skipped, interrupted = ms.run_points(bench, plan, points, on_result)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            model = bench = None  # noqa: F841 - release device memory before writing
    if interrupted:
        notes.append("interrupted (Ctrl-C): only the finished points are kept")
    result = _result(args, spec, weights, device, profile, profile_path, dims, precision,
                     measured, skipped, not interrupted, notes, timer.name, plan.resident, hw,
                     hw_sheet)
    _finish(result, out_dir, args, err_console, console)
    return 130 if interrupted else 0


def Console_for(args):
    from rich.console import Console

    return Console()


def _result(args, spec, weights, device, profile, profile_path, dims, precision, measured, skipped,
            complete, notes, timer_name, resident, hw, hw_sheet) -> dict[str, Any]:
    from dataclasses import asdict

    from ridgeline import __version__
    from ridgeline.validation import predict as pr
    from ridgeline.validation.output import VALIDATION_KIND, VALIDATION_SCHEMA_VERSION

    scored = [pr.score_point(m.to_dict(), spec, precision, hw, hw_sheet) for m in measured]
    summary, by_mode = pr.summarize(scored)
    if hw_sheet is None:
        notes = notes + [("no datasheet for the CPU" if device.kind == "cpu" else
                          f"no datasheet entry matches {device.name!r}")
                         + ": datasheet predictions are empty"]
    versions: dict[str, Any] = {"python": platform.python_version()}
    try:
        import torch

        versions.update(torch=torch.__version__, cuda=torch.version.cuda,
                        hip=getattr(torch.version, "hip", None))
    except ImportError:  # pragma: no cover
        pass
    layers_measured = min((m.layers_measured for m in measured), default=resident)
    return {
        "kind": VALIDATION_KIND,
        "schema_version": VALIDATION_SCHEMA_VERSION,
        "model": spec.name,
        "weights": weights,
        "precision": asdict(precision),
        "device": device.name,
        "device_id": device.id,
        "profile": str(profile_path),
        "profile_device": profile["provenance"]["device"].get("name"),
        "layers_measured": int(layers_measured),
        "layers_total": int(dims.num_layers),
        "scaled": any(m.scaled for m in measured),
        "complete": bool(complete),
        "points": scored,
        "summary": summary,
        "summary_by_mode": by_mode,
        "skipped": [s.to_dict() for s in skipped],
        "notes": list(notes),
        "datasheet": (hw_sheet.profile.get("datasheet") or {}).get("source") if hw_sheet else None,
        "provenance": {
            "ridgeline_version": __version__,
            "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command_line": ["ridgeline", *sys.argv[1:]] if sys.argv[0].endswith(
                ("ridgeline", "__main__.py")) else ["ridgeline", "validate"],
            "device": device.to_dict(),
            "versions": versions,
            "timer": timer_name,
            "rep_ms": float(args.rep_ms) if args.rep_ms else None,
        },
    }


def _finish(result: dict[str, Any], out_dir: Path, args, err_console, console=None) -> None:
    import json

    from ridgeline.validation.output import _clean, print_result, write_all

    written = write_all(result, out_dir)
    if args.json:
        print(json.dumps(_clean(result), indent=1))
    else:
        print_result(result, console or Console_for(args))
    err_console.print("wrote " + ", ".join(str(p) for p in written.values()))
