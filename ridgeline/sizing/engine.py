"""The engine layer: what a serving engine adds on top of the hardware's roofline.

    eng = load_engine("vllm")          # a preset from ridgeline/data/engines.json (sourced)
    eng = load_engine("engine.json")   # a file written by `ridgeline calibrate`
    eng = load_engine("none")          # the hardware alone (the default: nothing added)
    decode_step_time(spec, p, hw, 32, 4096, engine=eng)    # latency.py / step_model.py use it

The hardware profile says what the device can do; the engine layer says what a serving
engine adds on top (DESIGN.md). They are fitted and stored apart: a profile never holds
engine numbers, an engine file never holds hardware numbers. Each field enters as:

    step_overhead_us      + once per engine step: scheduler, sampling bookkeeping, Python
                          between steps (an op "engine_step", group "engine", bound
                          "latency"; under PP, once per pipeline slot)
    request_overhead_us   + once per request to its TTFT and E2E (tokenization,
                          detokenization, request setup); never to ITL. A closed-loop
                          client waits it out before its next request
    allreduce             "nccl": the profile's all-reduce (measured, else estimated);
                          "one_shot": the custom all-reduce engines run on small messages,
                          for S <= one_shot_max_bytes[TP] bytes (and a one_shot_latency_us
                          for that TP, and NVLink at TP > 2):
                              t = one_shot_latency_us + (TP - 1) x S / busbw
                          (every rank reads each peer's whole message once, over its own
                          links; busbw = the profile's all-reduce bus bandwidth); larger
                          messages, or a TP with no limit or latency: nccl
    cuda_graphs           true: the profile's per-kernel overhead and latency floor as
                          fitted (graph replay, what the fit keeps); false: its eager ones
                          (model.overhead.eager_us, model.latency.eager_us)
    bandwidth_efficiency  x the fitted memory bandwidth    (the engine's kernels against
    compute_efficiency    x the fitted matmul peaks         the probes'; 1.0 = as the
    allreduce_efficiency  all-reduce time / this           probes measured)

The efficiency factors are what the probes cannot see; each defaults to 1.0 and no preset
changes one without a source. A preset's every value carries its source (URL + what it
says) or says there is none (docs/engine.md lists them). Pure Python: no torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from ridgeline.errors import RidgelineError
from ridgeline.roofline.interconnect import (CollectiveEstimate, collective_time,
                                             tp_allreduce_time)
from ridgeline.sizing.options import option

ENGINE_SCHEMA_VERSION = 1
ENGINE_KIND = "ridgeline-engine"
PRESETS_FILE = "data/engines.json"
NONE = "none"
ALLREDUCE_IMPLEMENTATIONS = ("nccl", "one_shot")
# the numbers of an engine, in file and output order (each a field of EngineProfile)
FIELDS = ("step_overhead_us", "request_overhead_us", "allreduce", "one_shot_latency_us",
          "one_shot_max_bytes", "cuda_graphs", "bandwidth_efficiency", "compute_efficiency",
          "allreduce_efficiency")
EFFICIENCIES = ("bandwidth_efficiency", "compute_efficiency", "allreduce_efficiency")


@dataclass(frozen=True)
class EngineProfile:
    """One serving engine's layer (see the module docstring for how each field enters)."""

    name: str = NONE
    source: str = "none: the hardware alone, no engine overheads"
    step_overhead_us: float = 0.0
    request_overhead_us: float = 0.0
    allreduce: str = "nccl"
    one_shot_latency_us: dict[int, float] = field(default_factory=dict)  # TP -> us
    one_shot_max_bytes: dict[int, int] = field(default_factory=dict)     # TP -> bytes (<=)
    cuda_graphs: bool = True
    bandwidth_efficiency: float = 1.0
    compute_efficiency: float = 1.0
    allreduce_efficiency: float = 1.0
    sources: dict[str, str] = field(default_factory=dict)  # field -> where its value is from
    description: str = ""

    def __post_init__(self) -> None:
        for name in ("step_overhead_us", "request_overhead_us"):
            v = getattr(self, name)
            if not _number(v) or v < 0:
                raise RidgelineError(f"engine {self.name}: {name} must be a number >= 0, got "
                                     f"{v!r}")
        for name in EFFICIENCIES:
            v = getattr(self, name)
            if not _number(v) or v <= 0:
                raise RidgelineError(f"engine {self.name}: {name} must be a number > 0, got "
                                     f"{v!r}")
        if self.allreduce not in ALLREDUCE_IMPLEMENTATIONS:
            raise RidgelineError(f"engine {self.name}: allreduce must be one of "
                                 f"{', '.join(ALLREDUCE_IMPLEMENTATIONS)}, got "
                                 f"{self.allreduce!r}")
        if not isinstance(self.cuda_graphs, bool):
            raise RidgelineError(f"engine {self.name}: cuda_graphs must be true or false, got "
                                 f"{self.cuda_graphs!r}")
        for name, positive in (("one_shot_latency_us", float), ("one_shot_max_bytes", int)):
            for tp, v in getattr(self, name).items():
                ok = isinstance(tp, int) and tp >= 2 and _number(v) and v > 0
                if not ok or (positive is int and not float(v).is_integer()):
                    raise RidgelineError(f"engine {self.name}: {name} maps TP degrees >= 2 to "
                                         f"positive {'whole ' if positive is int else ''}"
                                         f"numbers, got {tp!r}: {v!r}")

    # -- what it adds -----------------------------------------------------------------------
    @property
    def step_overhead_s(self) -> float:
        return self.step_overhead_us * 1e-6

    @property
    def request_overhead_s(self) -> float:
        return self.request_overhead_us * 1e-6

    @property
    def changes_hardware(self) -> bool:
        """Whether the roofline itself changes (eager overheads or an efficiency factor)."""
        return not self.cuda_graphs or self.bandwidth_efficiency != 1.0 \
            or self.compute_efficiency != 1.0

    def hardware(self, hw: Any) -> Any:
        """`hw` with the engine's kernel-level terms: eager overheads without CUDA graphs, the
        bandwidth and compute efficiency factors (the same object when nothing changes)."""
        if not self.changes_hardware:
            return hw
        m = hw.model
        changes: dict[str, Any] = {}
        notes: list[str] = []
        if not self.cuda_graphs:
            overhead_us, floor_us = eager_terms(hw.profile)
            if overhead_us is not None:
                changes["overhead_us"] = overhead_us
            if floor_us is not None:
                changes["latency_floor_us"] = floor_us
            if overhead_us is None and floor_us is None:
                notes.append(f"engine {self.name} runs eager, but the profile of {hw.name} has "
                             "no eager overhead or floor: the fitted (graph) ones are used")
        if self.bandwidth_efficiency != 1.0:
            changes["bandwidth_GBps"] = m.bandwidth_GBps * self.bandwidth_efficiency
            changes["bandwidth_by_dtype"] = {d: v * self.bandwidth_efficiency
                                             for d, v in m.bandwidth_by_dtype.items()}
        if self.compute_efficiency != 1.0:
            changes["peak_TFLOPS"] = {d: v * self.compute_efficiency
                                      for d, v in m.peak_TFLOPS.items()}
        model = replace(m, **changes, notes=list(m.notes) + notes)
        return replace(hw, model=model, notes=list(hw.notes) + notes)

    def tp_allreduce(self, hidden: int, tokens: int, dtype: str, tp: int,
                     profile: dict[str, Any]) -> CollectiveEstimate:
        """The two all-reduces of one layer (as latency.tp_allreduce_time) under this engine's
        implementation, labelled by the source of the bandwidth they use."""
        est = tp_allreduce_time(hidden, tokens, dtype, tp, profile)
        if tp <= 1 or est.source == "none" or not math.isfinite(est.time_s):
            return est
        if self.allreduce == "one_shot":
            one, why = self.one_shot_s(est.size_bytes, tp, profile)
            if one is not None:
                est = CollectiveEstimate(2 * one, est.source, f"2 x {why}")
        if self.allreduce_efficiency != 1.0:
            est = CollectiveEstimate(est.time_s / self.allreduce_efficiency, est.source,
                                     f"{est.detail} / {self.allreduce_efficiency:g} "
                                     "(all-reduce efficiency)")
        return est

    def one_shot_s(self, size_bytes: float, tp: int,
                   profile: dict[str, Any]) -> tuple[float | None, str]:
        """(seconds of one one-shot all-reduce, how) or (None, why it does not apply)."""
        limit = self.one_shot_max_bytes.get(tp)
        latency_us = self.one_shot_latency_us.get(tp)
        if limit is None or latency_us is None:
            return None, f"no one-shot limit and latency for TP={tp}"
        if size_bytes > limit:
            return None, f"{size_bytes:,.0f} B above the one-shot limit {limit:,} B"
        # the profile's all-reduce at this TP: its fit, else the nearest measured one's
        est = collective_time("allreduce", size_bytes, tp, profile)
        link = est.link
        if link is None or (link == "pcie" and tp > 2):
            return None, "one-shot needs GPUs joined by NVLink (none measured)"
        if not est.busbw_GBps:
            return None, "the profile's all-reduce has no bandwidth term"
        busbw = est.busbw_GBps * 1e9
        t = latency_us * 1e-6 + (tp - 1) * size_bytes / busbw
        return t, (f"one-shot ({self.name}): {latency_us:g} us + {tp - 1} x {size_bytes:,.0f} B "
                   f"/ busbw {busbw / 1e9:.0f} GB/s ({est.source} {link})")

    # -- what it says about itself ----------------------------------------------------------
    @property
    def is_none(self) -> bool:
        return self.name == NONE

    def unsourced(self) -> list[str]:
        """The fields whose value has no source (0 or 1.0 until calibrated)."""
        return [f for f in FIELDS if self.sources.get(f, "").startswith("no source")]

    def describe(self) -> str:
        """One line for the notes of a plan or a simulation."""
        if self.is_none:
            return "engine layer: none (the hardware alone: no engine step or request overhead)"
        parts = [f"step overhead {self.step_overhead_us:g} us",
                 f"request overhead {self.request_overhead_us:g} us",
                 f"all-reduce {self.allreduce.replace('_', '-')}",
                 f"CUDA graphs {'on' if self.cuda_graphs else 'off'}"]
        parts += [f"{f.replace('_', ' ')} {getattr(self, f):g}" for f in EFFICIENCIES
                  if getattr(self, f) != 1.0]
        missing = [f for f in self.unsourced() if f not in EFFICIENCIES]
        tail = f"; no source for {', '.join(missing)}" if missing else ""
        return f"engine layer: {self.name} [{self.source}]: {', '.join(parts)}{tail}"

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the values, where they come from (`source`, per field `sources`)."""
        out: dict[str, Any] = {"name": self.name, "source": self.source,
                               "description": self.description}
        for f in FIELDS:
            v = getattr(self, f)
            out[f] = {str(k): x for k, x in v.items()} if isinstance(v, dict) else v
        out["sources"] = dict(self.sources)
        return out

    def with_values(self, **values: Any) -> "EngineProfile":
        """A copy with some fields replaced (calibrate's candidates)."""
        return replace(self, **values)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


NO_ENGINE = EngineProfile()


def eager_terms(profile: dict[str, Any]) -> tuple[float | None, float | None]:
    """(eager per-kernel overhead, eager latency floor) in us from the fitted model; None
    where the profile has none (no eager records, a datasheet)."""
    from ridgeline.roofline.sections import ModelSection

    raw = ModelSection.of(profile).raw
    overhead = (raw.get("overhead") or {}).get("eager_us")
    floor = (raw.get("latency") or {}).get("eager_us")
    return (float(overhead) if _number(overhead) else None,
            float(floor) if _number(floor) and floor > 0 else None)


# -- reading presets and files ---------------------------------------------------------------

def _source_text(entry: dict[str, Any]) -> str:
    """'URL: what it says' (several joined by '; '), or 'no source: <note>'."""
    src = entry.get("source")
    items = src if isinstance(src, list) else ([src] if src else [])
    texts = []
    for s in items:
        if not isinstance(s, dict) or not isinstance(s.get("says"), str):
            raise ValueError("a source is {\"url\": ..., \"says\": ...}")
        texts.append(f"{s['url']}: {s['says']}" if s.get("url") else s["says"])
    if not texts:
        return "no source: " + str(entry.get("note") or "none given")
    return "; ".join(texts)


def _tp_map(value: Any, cast: type) -> dict[int, Any]:
    if not isinstance(value, dict):
        raise ValueError("must map TP degrees to numbers")
    out = {}
    for k, v in value.items():
        if not str(k).isdigit() or not _number(v):
            raise ValueError(f"{k!r}: {v!r} is not a TP degree and a number")
        out[int(k)] = cast(v)
    return out


def engine_from_entry(name: str, entry: dict[str, Any], source: str,
                      where: str) -> EngineProfile:
    """An EngineProfile from one engine's {field: {"value", "source", "note"}} table."""
    if not isinstance(entry, dict):
        raise RidgelineError(f"{where}: engine {name} is not a table of fields")
    unknown = sorted(set(entry) - set(FIELDS) - {"description"})
    if unknown:
        raise RidgelineError(f"{where}: engine {name} has unknown field(s) {', '.join(unknown)} "
                             f"(known: {', '.join(FIELDS)})")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for f in FIELDS:
        if f not in entry:
            sources[f] = "no source: not given (default)"
            continue
        item = entry[f]
        if not isinstance(item, dict) or "value" not in item:
            raise RidgelineError(f"{where}: engine {name}: {f} must be {{\"value\": ..., "
                                 "\"source\": ...}")
        v = item["value"]
        try:
            if f == "one_shot_latency_us":
                v = _tp_map(v, float)
            elif f == "one_shot_max_bytes":
                v = _tp_map(v, int)
            sources[f] = _source_text(item)
        except ValueError as exc:
            raise RidgelineError(f"{where}: engine {name}: {f}: {exc}") from None
        values[f] = float(v) if f.endswith(("_us", "_efficiency")) and _number(v) else v
    return EngineProfile(name=name, source=source, sources=sources,
                         description=str(entry.get("description", "")), **values)


def _presets_doc() -> dict[str, Any]:
    return json.loads(resources.files("ridgeline").joinpath(PRESETS_FILE).read_text())


def preset_names() -> list[str]:
    """The bundled engines, in file order, and "none"."""
    return list(_presets_doc()["engines"]) + [NONE]


def load_preset(name: str) -> EngineProfile:
    key = name.strip().lower()
    if key == NONE:
        return NO_ENGINE
    doc = _presets_doc()
    if key not in doc["engines"]:
        raise RidgelineError(f"unknown engine {name!r}: one of {', '.join(preset_names())}, or "
                             "an engine.json written by `ridgeline calibrate`")
    return engine_from_entry(key, doc["engines"][key], f"preset {key}, ridgeline/{PRESETS_FILE}",
                             f"ridgeline/{PRESETS_FILE}")


def read_engine_file(path: str | Path) -> EngineProfile:
    """An engine.json (`ridgeline calibrate -o`); RidgelineError with one line otherwise."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise RidgelineError(f"cannot read engine file {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RidgelineError(f"{path} is not an engine file (not JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("kind") != ENGINE_KIND:
        raise RidgelineError(f"{path} is not an engine file (kind {ENGINE_KIND!r} expected; "
                             "write one with `ridgeline calibrate -o`)")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > ENGINE_SCHEMA_VERSION:
        raise RidgelineError(f"{path}: engine schema_version {version!r} is not one this "
                             f"ridgeline reads (<= {ENGINE_SCHEMA_VERSION}): upgrade ridgeline")
    fit = doc.get("fit") or {}
    held = fit.get("error_after")
    how = (f", held-out error {held:.1%}" if _number(held) else "")
    name = str(doc.get("name") or path.stem)
    return engine_from_entry(name, doc.get("engine"),
                             f"file {path} (ridgeline calibrate{how})", str(path))


def load_engine(name_or_path: str | None) -> EngineProfile:
    """A preset by name (vllm, sglang, trtllm, none), else an engine.json path."""
    if name_or_path is None or not str(name_or_path).strip():
        return NO_ENGINE
    text = str(name_or_path).strip()
    if text.lower() in preset_names():
        return load_preset(text)
    path = Path(text)
    if path.suffix.lower() == ".json" or path.exists():
        if not path.is_file():
            raise RidgelineError(f"engine file not found: {path}")
        return read_engine_file(path)
    return load_preset(text)  # the unknown-name message


def entry_of(engine: EngineProfile, sources: dict[str, dict[str, Any]] | None = None
             ) -> dict[str, Any]:
    """The {field: {"value", "source"}} table of an engine (what a file stores); `sources`
    replaces the source of some fields (calibrate's fitted values)."""
    out: dict[str, Any] = {"description": engine.description} if engine.description else {}
    for f in FIELDS:
        v = getattr(engine, f)
        value = {str(k): x for k, x in sorted(v.items())} if isinstance(v, dict) else v
        if sources and f in sources:
            out[f] = {"value": value, "source": sources[f]}
            continue
        text = engine.sources.get(f, "no source: default")
        if text.startswith("no source"):
            out[f] = {"value": value, "source": None, "note": text.split(": ", 1)[-1]}
        else:
            out[f] = {"value": value, "source": {"url": None, "says": text}}
    return out


@dataclass(frozen=True, kw_only=True)
class EngineLayerOptions:
    """Serving engine layer."""

    engine: str = option(NONE, "serving engine on top of the hardware: vllm, sglang, trtllm "
                               "(bundled, sourced defaults), none (the hardware alone), or an "
                               "engine.json from `ridgeline calibrate`", metavar="NAME|FILE")

    def load(self) -> EngineProfile:
        return load_engine(self.engine)
