"""Published kernel efficiencies: what attention and MoE kernels reach on a GPU nobody profiled.

A measured profile carries kernel-efficiency curves (ridgeline.roofline.efficiency); a
datasheet has none, so a datasheet plan would price decode/prefill attention and MoE experts
at the bare roofline. This module turns public kernel benchmarks
(ridgeline/data/published_efficiency.json, each number with its source) into the same
section for a datasheet profile (sizing.hardware.datasheet_profile calls it):

    profile["efficiency"] = datasheet_efficiency(entry, model)   # model: its derated roofline
    efficiency_notes(profile["efficiency"], entry["sku"])       # one line per curve, sourced

One published point of a curve, on the part it was measured on (M), for target GPU T:

    flops, bytes = the counts of the point's shape by the curve's probe (probes.attention,
                   probes.moe: what a measured curve is relative to, and what sizing.latency
                   prices)
    t_M          = the published time (time_us), or bytes / (fraction x the source's peak
                   GB/s) (bandwidth_fraction), or the benchmark's FLOPs / TFLOP/s (TFLOPS)
    t_T          = t_M x raw(T) / raw(M),  raw(X) = max(flops / peak_X, bytes / bw_X) on X's
                   datasheet (a RooflineModel at 100%, no floor): the same share of the
                   binding peak (1 when T is M)
    efficiency   = model.predict(flops, bytes, dtype) / t_T

`model` is T's derated datasheet roofline (what the planner prices with), so the efficiency
is relative to the derated figures and the derating is not counted twice: the planner's time
t_roofline / efficiency is t_T. A SKU without its own measurement takes the measured part of
its vendor generation (the file's `generations`) whose datasheet bandwidth is closest, and
its note says so. Pure Python; tests: tests/test_published_efficiency.py.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any

from ridgeline import datasheets
from ridgeline.counts import attention, moe
from ridgeline.dtypes import bytes_per_element, find
from ridgeline.errors import RidgelineError
from ridgeline.roofline.efficiency import CURVES, kv_bytes_per_seq
from ridgeline.roofline.model import RooflineModel

DATA_FILE = "data/published_efficiency.json"
VALUE_KINDS = ("bandwidth_fraction", "TFLOPS", "time_us")
# the axes the sources publish their points on (the curve's own axes are derived from them:
# decode attention's KV bytes per sequence from the context and the source's head layout)
SOURCE_AXES = {"attention_decode": ("batch", "context"), "attention_prefill": ("tokens",),
               "moe": ("tokens_per_expert",), "dequant": ("batch",)}
_WHAT = {name: spec.what for name, spec in CURVES.items()}  # "decode attention", ...


@lru_cache(maxsize=1)
def load_published() -> dict[str, Any]:
    """The bundled file, checked (RidgelineError naming the entry on a malformed one)."""
    data = json.loads(resources.files("ridgeline").joinpath(DATA_FILE).read_text())
    check(data)
    return data


def _bad(where: str, what: str) -> RidgelineError:
    return RidgelineError(f"{DATA_FILE} {where}: {what}")


def check(data: dict[str, Any]) -> None:
    """Every entry names a known curve, a datasheet SKU in a generation, the curve's axes,
    positive points, a source with a URL, and the element size it was measured at
    (shape.dtype_bytes) equal to that of its dtype and of every dtype it stands for."""
    gens = data.get("generations")
    if not isinstance(gens, dict) or not gens:
        raise _bad("generations", "missing")
    for curve, by_sku in (data.get("curves") or {}).items():
        if curve not in CURVES:
            raise _bad(curve, f"not a curve ({', '.join(CURVES)})")
        for sku, by_dtype in by_sku.items():
            if datasheets.by_sku(sku) is None or datasheets.by_sku(sku)["sku"] != sku:
                raise _bad(f"{curve}.{sku}", "not a datasheet SKU")
            if generation_of(sku, gens) is None:
                raise _bad(f"{curve}.{sku}", "in no generation")
            for dtype, e in by_dtype.items():
                where = f"{curve}.{sku}.{dtype}"
                if list(e.get("axes") or []) != list(SOURCE_AXES[curve]):
                    raise _bad(where, f"axes must be {list(SOURCE_AXES[curve])}")
                kind = (e.get("value") or {}).get("kind")
                if kind not in VALUE_KINDS:
                    raise _bad(where, f"value kind must be one of {VALUE_KINDS}")
                src = e.get("source") or {}
                if not str(src.get("url", "")).startswith("https://") or not src.get("where"):
                    raise _bad(where, "needs a source with an https url and where")
                pts = e.get("points") or []
                if not pts or not all(isinstance(p.get("value"), (int, float))
                                      and p["value"] > 0 for p in pts):
                    raise _bad(where, "needs points with positive values")
                # the counts take element sizes from the dtype names (the entry's and those
                # it stands for); the source's own size must agree, or its bytes are miscounted
                size = (e.get("shape") or {}).get("dtype_bytes")
                for d in [dtype, *e.get("also", [])]:
                    known = find(d)
                    if known is None or size != known.bytes:
                        raise _bad(where, f"shape.dtype_bytes {size!r} is not the element size "
                                          f"of {d} ({known.bytes if known else 'unknown dtype'})")


def generation_of(sku: str, generations: dict[str, list[str]] | None = None) -> str | None:
    gens = generations if generations is not None else load_published()["generations"]
    return next((g for g, skus in gens.items() if sku in skus), None)


def resolve(curve: str, sku: str) -> tuple[str, dict[str, Any]] | None:
    """(measured SKU, {dtype: entry}) for `curve` on `sku`: its own measurement, else the
    measured part of the same generation with the closest datasheet bandwidth; None."""
    by_sku = load_published()["curves"].get(curve) or {}
    if sku in by_sku:
        return sku, by_sku[sku]
    gen = generation_of(sku)
    own = datasheets.by_sku(sku)
    peers = [s for s in by_sku if gen is not None and generation_of(s) == gen]
    if not peers or own is None:
        return None
    bw = float(own["memory_bandwidth_GBps"])
    best = min(peers, key=lambda s: abs(math.log(
        float(datasheets.by_sku(s)["memory_bandwidth_GBps"]) / bw)))
    return best, by_sku[best]


# -- one point: the probe's work, the measured time -----------------------------------------

def point_work(curve: str, shape: dict[str, Any], point: dict[str, Any], dtype: str
               ) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """(axis coordinates, [(flops, bytes) per kernel]) of one published point in `dtype`,
    counted as the curve's probe counts it (ridgeline.counts: the counts a measured curve's
    efficiencies are relative to, which sizing.latency prices). Decode: one kernel;
    prefill: causal, no prior cache; MoE: the gate/up and down GEMMs of the loaded experts."""
    if curve in ("attention_decode", "attention_prefill"):
        hq, hkv, d = shape["q_heads"], shape["kv_heads"], shape["head_dim"]
        if curve == "attention_decode":
            B, c = float(point["batch"]), float(point["context"])
            coords = {"batch": B, "q_per_kv": hq / hkv, "kv_bytes_per_seq": kv_bytes_per_seq(
                c, hkv, d, bytes_per_element(dtype)), "head_dim": float(d)}
            flops, read, written = attention.work("decode", B, c, hq, hkv, d, dtype)
        else:
            s = float(point["tokens"])
            coords = {"tokens": s, "head_dim": float(d)}
            flops, read, written = attention.work("prefill", float(shape["total_tokens"]) / s,
                                                  s, hq, hkv, d, dtype)
        return coords, [(flops, read + written)]
    if curve == "moe":
        m = float(point["batch"])
        e, k, h, ie = shape["experts"], shape["top_k"], shape["hidden"], shape["intermediate"]
        loaded = moe.expected_experts_loaded(e, k, m)
        t = m * k / loaded   # token rows per loaded expert

        def gemm(K: int, N: int) -> tuple[float, float]:
            return (moe.flops(loaded, t, K, N), moe.bytes_read(loaded, t, K, N, dtype)
                    + moe.bytes_written(loaded, t, N, dtype))
        return {"tokens_per_expert": t}, [gemm(h, 2 * ie), gemm(ie, h)]
    raise RidgelineError(f"no published work count for curve {curve!r}")


def measured_time_s(entry: dict[str, Any], point: dict[str, Any], dtype: str) -> float:
    """The published time of one point on the part it was measured on."""
    value, how, s = float(point["value"]), entry["value"], entry["shape"]
    if how["kind"] == "time_us":
        return value * 1e-6
    if how["kind"] == "bandwidth_fraction":
        # the bytes the source counts: those the kernel reads (KV and q), not the output
        read = attention.decode_bytes_read(float(point["batch"]), float(point["context"]),
                                           s["q_heads"], s["kv_heads"], s["head_dim"], dtype)
        return read / (value * float(how["peak_GBps"]) * 1e9)
    # TFLOPS, FLOPs as flash-attention's benchmark counts them (causal: half of 4 B s^2 H d)
    tokens = float(point["tokens"])
    batch = float(s["total_tokens"]) / tokens
    flops = 4.0 * batch * tokens ** 2 * s["q_heads"] * s["head_dim"] / 2.0
    return flops / (value * 1e12)


def _sheet_roofline(sheet: dict[str, Any]) -> RooflineModel:
    """A datasheet's roofline at 100% of its peaks and no floor: the share-of-peak yardstick."""
    peaks = {d: float(v) for d, v in (sheet.get("matmul_TFLOPS") or {}).items() if v}
    return RooflineModel(float(sheet["memory_bandwidth_GBps"]), peaks, latency_floor_us=0.0,
                         source="datasheet")


# -- the section ---------------------------------------------------------------------------

def curve_points(curve: str, entry: dict[str, Any], measured_sku: str,
                 target: dict[str, Any], model: Any, dtype: str) -> list[dict[str, Any]]:
    """fit_efficiency-shaped points of one entry for the target datasheet and its model."""
    raw_t, raw_m = _sheet_roofline(target), _sheet_roofline(datasheets.by_sku(measured_sku))
    out = []
    for p in entry["points"]:
        coords, work = point_work(curve, entry["shape"], p, dtype)
        t_t = measured_time_s(entry, p, dtype)
        if target.get("sku") != measured_sku:
            t_t *= (sum(raw_t.predict(f, by, dtype).time_s for f, by in work)
                    / sum(raw_m.predict(f, by, dtype).time_s for f, by in work))
        roof_s = sum(model.predict(f, by, dtype).time_s for f, by in work)
        out.append({**{a: coords[a] for a in CURVES[curve].axes},
                    "efficiency": roof_s / t_t, "time_ms": t_t * 1e3,
                    "roofline_ms": roof_s * 1e3, "provider": entry.get("provider")})
    return out


def datasheet_efficiency(target: dict[str, Any], model: Any) -> dict[str, Any]:
    """profile["efficiency"] for a datasheet entry from the published measurements of its SKU,
    else of its generation ({} when there are none); `model` is its derated roofline."""
    sku = str(target.get("sku") or "")
    section: dict[str, Any] = {}
    for curve in CURVES:
        found = resolve(curve, sku) if sku else None
        if found is None:
            continue
        measured_sku, by_dtype = found
        curves: dict[str, Any] = {}
        for dtype, e in by_dtype.items():
            for d in [dtype, *e.get("also", [])]:
                curves[d] = {"axes": list(CURVES[curve].axes), "providers": [e["provider"]],
                             "points": curve_points(curve, e, measured_sku, target, model, d),
                             "source": dict(e["source"]), "measured_on": measured_sku,
                             "published": True}
        section[curve] = curves
    return section


def efficiency_notes(section: dict[str, Any] | None, sku: str | None) -> list[str]:
    """One line per curve for Hardware.notes: where a published curve comes from (and that it
    was not measured on this GPU when another part's stands in), or that there is none."""
    notes = []
    for curve in CURVES:
        by_dtype = (section or {}).get(curve) or {}
        if not by_dtype:
            notes.append(f"kernel efficiency (published): no measurement of {_WHAT[curve]} "
                         "found for this GPU generation: priced at the roofline (optimistic)")
            continue
        first = next(iter(by_dtype.values()))
        src, measured = first.get("source") or {}, str(first.get("measured_on") or "")
        sheet = datasheets.by_sku(measured) if measured else None
        on = sheet["name"] if sheet else measured or "another GPU"
        mine = "" if measured == sku else ", not measured on this GPU"
        notes.append(f"kernel efficiency (published): {_WHAT[curve]} ({', '.join(by_dtype)}) "
                     f"from {src.get('name', '?')}, {src.get('url', '?')}, measured on "
                     f"{on}{mine}")
    return notes
