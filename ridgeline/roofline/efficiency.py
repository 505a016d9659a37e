"""Measured kernel efficiencies: the share of the roofline that attention, MoE expert GEMMs and
dequantizing GEMVs really get, as curves over their shape.

    profile["efficiency"] = fit_efficiency(records, profile)     # after ceilings and model
    eff = Efficiency.of(profile)
    eff.factor("attention_decode", "bf16", batch=64, kv_bytes_per_seq=2**24, q_per_kv=4)

One measured case of a curve's probe gives

    efficiency = t_roofline / t_measured,   t_roofline = RooflineModel.predict(flops, bytes, dtype)

with the work counts the probe recorded (the same counts ridgeline.sizing.latency prices)
and the profile's own fitted roofline model, so the planner's time for a kernel of that
kind is t_roofline / efficiency(shape). Each case keeps its fastest provider (an engine
runs its best kernel). An efficiency above 1 (the kernel beat the roofline model:
a cache, or a model fitted on other shapes) is stored as measured but used as 1: the
roofline stays a bound.

Curves (CURVES; the probe's record fields named by `axes`):

    attention_decode   attention probe, kernel "decode"   axes batch, kv_bytes_per_seq, q_per_kv,
                                                          head_dim
    attention_prefill  attention probe, kernel "prefill"  axes tokens, head_dim
    moe                moe probe, kernel "grouped_gemm"   axes tokens_per_expert
    dequant            dequant probe, kernel "gemv"       axes batch (dtype = weight dtype)

Decode attention's second axis is the K and V bytes each sequence holds, context x 2 x
kv_heads x head_dim x bytes per element, not its context in tokens: a decode kernel's
efficiency follows the bytes it streams per sequence and the sequences it spreads them
over, whatever the head layout (FlashInfer measures the same utilization for 64 x 1k MHA
as for 64 x 8k GQA with 8x fewer KV heads), so a curve measured on one layout prices another.
Its third, q_per_kv = q_heads / kv_heads, carries a compute-bound kernel (CPU SDPA), whose
efficiency per KV byte falls with the query heads each KV head serves; a curve measured at
one ratio (a GPU's, a published one) is held constant along it. head_dim, the last axis of
both attention curves, carries what the work counts cannot: a compute-bound kernel does
less per FLOP on shorter heads (CPU SDPA about 10-15% at 64 against 128); a curve measured at
one head size is held constant along it, and a profile written before the axis existed
keeps its stored axes (the planner passes head_dim; a curve without that axis ignores it).

Each is stored per dtype (the record's `dtype`; the roofline is priced in its
`compute_dtype` where the record has one, as the weight-only dequant records do):

    {"attention_decode": {"bf16": {"axes": ["batch", "kv_bytes_per_seq"], "providers": [...],
                                   "points": [{"batch": 1, "kv_bytes_per_seq": 2097152,
                                               "efficiency": 0.31, "spread": 0.04,
                                               "time_ms": .., "roofline_ms": .., "provider": ..},
                                              ...],
                                   "status": "verified", "reason": None, "spread": {...}}}}

`spread` of a point is its samples' (p80 - p20) / median; a curve's status, reason and
spread say whether it can be planned from (roofline.trust.curve_trust: noisy when more than
a quarter of its shapes scatter above 10%), and the planner refuses an untrusted curve
as it refuses an untrusted ceiling (`--allow-unverified`).

Between measured points a curve is interpolated linearly in log2 of every axis over the
grid of measured values (multilinear); outside it, it is held at the edge (the nearest
measured shape). A grid corner that was not measured (a failed or skipped case) is left out
of the interpolation and the remaining corners reweighted; with none left the nearest
measured point (in log2 distance) is used. Pure Python: the planner reads it without numpy.
Tests: tests/test_roofline_efficiency.py.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ridgeline import dtypes
from ridgeline.records import fastest_per_case
from ridgeline.roofline.sections import positive
from ridgeline.roofline.trust import curve_trust, sample_spread


def kv_bytes_per_seq(context: float, kv_heads: float, head_dim: float, kv_bytes: float) -> float:
    """K and V bytes one sequence holds: context x 2 x kv_heads x head_dim x bytes."""
    return context * 2.0 * kv_heads * head_dim * kv_bytes


def _decode_axes(r: dict[str, Any]) -> dict[str, float]:
    return {"batch": float(r["batch"]),
            "kv_bytes_per_seq": kv_bytes_per_seq(float(r["context"]), float(r["kv_heads"]),
                                                 float(r["head_dim"]),
                                                 dtypes.bytes_per_element(str(r["dtype"]))),
            "q_per_kv": float(r["q_heads"]) / float(r["kv_heads"]),
            "head_dim": float(r["head_dim"])}


def _prefill_axes(r: dict[str, Any]) -> dict[str, float]:
    return {"tokens": float(r["tokens"]), "head_dim": float(r["head_dim"])}


@dataclass(frozen=True)
class CurveSpec:
    probe: str
    kernel: str
    axes: tuple[str, ...]
    what: str  # in words, for notes and reports
    # the axis values of a record (default: its fields of the same names)
    coordinates: Callable[[dict[str, Any]], dict[str, float]] | None = None

    def coordinates_of(self, r: dict[str, Any]) -> dict[str, float]:
        if self.coordinates is not None:
            return self.coordinates(r)
        return {a: float(r[a]) for a in self.axes}


CURVES: dict[str, CurveSpec] = {
    "attention_decode": CurveSpec("attention", "decode",
                                  ("batch", "kv_bytes_per_seq", "q_per_kv", "head_dim"),
                                  "decode attention", _decode_axes),
    "attention_prefill": CurveSpec("attention", "prefill", ("tokens", "head_dim"),
                                   "prefill attention", _prefill_axes),
    "moe": CurveSpec("moe", "grouped_gemm", ("tokens_per_expert",), "MoE expert GEMMs"),
    "dequant": CurveSpec("dequant", "gemv", ("batch",), "weight-only dequantizing GEMV"),
}
SECTION = "efficiency"
# A query more than this factor outside a curve's measured range on an axis is named in the
# plan's notes (held at the edge there); within it, holding the edge is routine.
EXTRAPOLATION_FACTOR = 2.0


def _show(axis: str, v: float) -> str:
    return f"{v / 2**20:.3g} MiB" if axis == "kv_bytes_per_seq" else f"{v:g}"


def _case_key(r: dict[str, Any], spec: CurveSpec) -> tuple | None:
    try:
        coords = spec.coordinates_of(r)
        return (str(r["dtype"]),) + tuple(coords[a] for a in spec.axes)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def fit_efficiency(records: Iterable[dict[str, Any]], profile: dict[str, Any]) -> dict[str, Any]:
    """profile["efficiency"] from the validated records of the curves' probes; {} when there
    are none. `profile` must already hold its fitted "model" (or "ceilings")."""
    from ridgeline.roofline.model import RooflineModel

    records = list(records)
    if not any(r.get("probe") in {s.probe for s in CURVES.values()} for r in records):
        return {}
    model = RooflineModel.from_profile(profile)
    out: dict[str, Any] = {}
    for name, spec in CURVES.items():
        mine = [r for r in records if r.get("kernel") == spec.kernel
                and _case_key(r, spec) is not None]
        cases = fastest_per_case(mine, spec.probe, lambda r: _case_key(r, spec))
        providers: dict[str, set[str]] = {}
        for key, group in cases.items():
            providers.setdefault(key[0], set()).update(str(r.get("provider")) for r in group)
        curves: dict[str, Any] = {}
        for key, group in cases.items():
            dtype, r = key[0], group[0]  # the fastest provider of the case
            moved = float(r.get("bytes_read") or 0) + float(r.get("bytes_written") or 0)
            compute = str(r.get("compute_dtype") or dtype)
            roof_s = model.predict(float(r.get("flops") or 0), moved, compute).time_s
            measured_s = float(r["time_ms_median"]) * 1e-3
            point = {a: v for a, v in zip(spec.axes, key[1:])}
            point.update({"efficiency": roof_s / measured_s, "time_ms": measured_s * 1e3,
                          "roofline_ms": roof_s * 1e3, "provider": r.get("provider"),
                          "spread": sample_spread(r)})
            curve = curves.setdefault(dtype, {"axes": list(spec.axes), "points": [],
                                              "providers": sorted(providers[dtype])})
            curve["points"].append(point)
        for curve in curves.values():
            curve.update(curve_trust([p["spread"] for p in curve["points"]]))
        if curves:
            out[name] = curves
    return out


@dataclass(frozen=True)
class Curve:
    """One dtype's measured efficiency over its axes (see the module docstring)."""
    axes: tuple[str, ...]
    points: tuple[tuple[tuple[float, ...], float], ...]   # (log2 coordinates, efficiency)

    @classmethod
    def of(cls, data: Any) -> "Curve | None":
        if not isinstance(data, dict) or not isinstance(data.get("axes"), list):
            return None
        axes = tuple(str(a) for a in data["axes"])
        pts = []
        for p in data.get("points") or []:
            if not isinstance(p, dict) or not positive(p.get("efficiency")):
                continue
            if all(positive(p.get(a)) for a in axes):
                pts.append((tuple(math.log2(float(p[a])) for a in axes), float(p["efficiency"])))
        return cls(axes, tuple(pts)) if pts and axes else None

    @functools.cached_property
    def _grids(self) -> list[list[float]]:
        """Per axis, the measured log2 values, ascending (at() runs in the simulator's loop)."""
        return [sorted({c[i] for c, _ in self.points}) for i in range(len(self.axes))]

    @functools.cached_property
    def _table(self) -> dict[tuple[float, ...], float]:
        return dict(self.points)

    def grid(self, axis: str) -> list[float]:
        """The measured values along `axis`, ascending."""
        return [2.0 ** x for x in self._grids[self.axes.index(axis)]]

    def beyond(self, **coords: float) -> list[str]:
        """The axes on which `coords` lie more than EXTRAPOLATION_FACTOR outside the measured
        range, in words ("batch 512 (measured 1-16)"): there the curve is held at its edge,
        a guess a plan must own up to."""
        out = []
        for a, grid in zip(self.axes, self._grids):
            v = coords.get(a)
            if not positive(v):
                continue
            lo, hi = 2.0 ** grid[0], 2.0 ** grid[-1]
            if float(v) > hi * EXTRAPOLATION_FACTOR or float(v) < lo / EXTRAPOLATION_FACTOR:
                out.append(f"{a} {_show(a, float(v))} (measured {_show(a, lo)}-{_show(a, hi)})")
        return out

    def at(self, **coords: float) -> float:
        """The measured efficiency at these coordinates (interpolated, held at the edges)."""
        q = []
        for a, grid in zip(self.axes, self._grids):
            v = coords.get(a)
            if v is None and len(grid) == 1:   # measured at one value: held constant along it
                q.append(grid[0])
                continue
            if not positive(v):
                raise ValueError(f"efficiency curve needs {a} > 0, got {v!r}")
            q.append(math.log2(float(v)))
        table = self._table
        brackets = []  # per axis: (lo, hi, weight of hi)
        for grid, x in zip(self._grids, q):
            x = min(max(x, grid[0]), grid[-1])
            hi = next((g for g in grid if g >= x), grid[-1])
            lo = max((g for g in grid if g <= x), default=grid[0])
            brackets.append((lo, hi, 0.0 if hi == lo else (x - lo) / (hi - lo)))
        total = weight = 0.0
        for corner in range(1 << len(q)):
            coord, w = [], 1.0
            for i, (lo, hi, t) in enumerate(brackets):
                upper = corner >> i & 1
                coord.append(hi if upper else lo)
                w *= t if upper else 1.0 - t
            e = table.get(tuple(coord))
            if e is not None and w > 0:
                total += w * e
                weight += w
        if weight > 0:
            return total / weight
        # no measured corner around the query: the nearest measured shape
        return min(self.points, key=lambda p: sum((a - b) ** 2 for a, b in zip(p[0], q)))[1]


@dataclass(frozen=True)
class Efficiency:
    """profile["efficiency"], read: {curve name: {dtype: Curve}}."""
    curves: dict[str, dict[str, Curve]]

    @classmethod
    def of(cls, profile: dict[str, Any] | None) -> "Efficiency":
        section = (profile or {}).get(SECTION)
        curves: dict[str, dict[str, Curve]] = {}
        if isinstance(section, dict):
            for name in CURVES:
                by_dtype = section.get(name)
                if isinstance(by_dtype, dict):
                    parsed = {d: c for d, c in ((d, Curve.of(v)) for d, v in by_dtype.items())
                              if c is not None}
                    if parsed:
                        curves[name] = parsed
        return cls(curves)

    def has(self, name: str, dtype: str) -> bool:
        return dtype in self.curves.get(name, {})

    def curve(self, name: str, dtype: str) -> Curve | None:
        return self.curves.get(name, {}).get(dtype)

    def factor(self, name: str, dtype: str, **coords: float) -> float | None:
        """Efficiency in (0, 1] to divide a roofline time by; None when not measured."""
        curve = self.curve(name, dtype)
        return None if curve is None else min(1.0, curve.at(**coords))


def efficiency_note(profile: dict[str, Any] | None) -> str:
    """One line for a plan's notes: which kernel kinds are priced at a measured efficiency
    and which at the bare roofline (an optimistic bound)."""
    eff = Efficiency.of(profile)
    have = [f"{CURVES[n].what} ({', '.join(sorted(eff.curves[n]))})" for n in CURVES
            if n in eff.curves]
    missing = [CURVES[n].what for n in CURVES if n not in eff.curves]
    parts = []
    if have:
        parts.append("priced at measured efficiency: " + "; ".join(have))
    if missing:
        parts.append("not measured, priced at the roofline (optimistic): " + ", ".join(missing))
    return "kernel efficiency: " + "; ".join(parts)
