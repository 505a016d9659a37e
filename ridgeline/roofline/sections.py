"""Typed views of a profile's "ceilings" and "model" sections: the one reader and writer.

Pure Python (no torch, no numpy): the planner and the reports use it.

    c = Ceilings.of(profile)               # missing section or null values: empty / None
    c.bandwidth_GBps["read"]               # GB/s (GB = 1e9); None where not measured
    c.bandwidth_detail_of("copy")          # {} when the profile has no detail for it
    profile["ceilings"] = c.to_dict()      # the schema_version 1 layout, key for key

    m = ModelSection.of(profile)           # the fitted roofline model (roofline.model)
    m.peaks_TFLOPS()                       # {dtype: fitted peak} for positive peaks only
    m.own_bandwidths_GBps()                # {dtype: its own streaming GB/s} where fitted
    ModelSection.datasheet(bw, peaks, floor).to_dict()   # a model from vendor numbers

Values are kept as stored (an int stays an int) so that of() then to_dict() writes the
same JSON; a null detail or flags list reads as absent. Keys this module does not
know are kept (`extra`, `raw`) and written back in their place. Checking the values is
roofline.profile_checks' job; these views only give them names and types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CEILING_KEYS = ("memory_bandwidth_GBps", "memory_bandwidth_detail", "matmul_TFLOPS",
                "matmul_detail", "flags", "plateau_rule")


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Ceilings:
    """profile["ceilings"]: measured ceilings (roofline.ceilings writes them)."""
    bandwidth_GBps: dict[str, float | None]                  # kernel -> plateau GB/s
    matmul_TFLOPS: dict[str, float | None]                   # dtype -> best TFLOP/s
    bandwidth_detail: dict[str, dict[str, Any]] | None = None  # kernel -> provider, status...
    matmul_detail: dict[str, dict[str, Any]] | None = None     # dtype -> provider, m, n, k...
    flags: list[str] | None = None                           # ceilings above the datasheet
    plateau_rule: str | None = None                          # the rule, in words
    extra: dict[str, Any] = field(default_factory=dict)      # keys not named above

    @classmethod
    def of(cls, profile: dict[str, Any] | None) -> "Ceilings":
        ceil = _mapping((profile or {}).get("ceilings"))
        bw_detail, mm_detail = ceil.get("memory_bandwidth_detail"), ceil.get("matmul_detail")
        flags = ceil.get("flags")
        return cls(_mapping(ceil.get("memory_bandwidth_GBps")), _mapping(ceil.get("matmul_TFLOPS")),
                   dict(bw_detail) if isinstance(bw_detail, dict) else None,
                   dict(mm_detail) if isinstance(mm_detail, dict) else None,
                   list(flags) if isinstance(flags, list) else None, ceil.get("plateau_rule"),
                   {k: v for k, v in ceil.items() if k not in CEILING_KEYS})

    def to_dict(self) -> dict[str, Any]:
        values = (self.bandwidth_GBps, self.bandwidth_detail, self.matmul_TFLOPS,
                  self.matmul_detail, self.flags, self.plateau_rule)
        out = {k: v for k, v in zip(CEILING_KEYS, values)
               if v is not None or k in ("memory_bandwidth_GBps", "matmul_TFLOPS")}
        out.update(self.extra)
        return out

    def bandwidth_detail_of(self, kernel: str) -> dict[str, Any]:
        return _mapping((self.bandwidth_detail or {}).get(kernel))

    def matmul_detail_of(self, dtype: str) -> dict[str, Any]:
        return _mapping((self.matmul_detail or {}).get(dtype))

    def first_bandwidth_GBps(self, kernels: tuple[str, ...] = ("read", "copy")) -> float | None:
        """The first of `kernels` with a measured (non-zero) bandwidth, as a float."""
        for kernel in kernels:
            if self.bandwidth_GBps.get(kernel):
                return float(self.bandwidth_GBps[kernel])  # type: ignore[arg-type]
        return None


# The model section's keys, in the order the fit writes them.
MODEL_KEYS = ("source", "form", "bandwidth_GBps", "latency_floor_us", "overhead_us", "overhead",
              "overlap_p", "matmul", "bandwidth", "latency", "ridge_point_FLOP_per_byte",
              "fit_error", "gemv_best_provider", "undetermined", "notes")


@dataclass(frozen=True)
class ModelSection:
    """profile["model"]: the fitted roofline model. roofline.model_fit.fit_model builds one,
    datasheet() the vendor-number twin; both write it through to_dict(), the one writer.

    The fields after `notes` are the fit's detail, read by the reports and compare:
    `bandwidth` (where the bandwidth came from: gemv plateau, hbm read; the reference dtype
    whose rate bandwidth_GBps is, and each dtype's when some got their own), `latency` (launch
    floors), `overhead` (per-kernel overhead per timing mode), `ridge_point_FLOP_per_byte`
    ({dtype: {measured, ceilings, datasheet}}), `fit_error` (the model on its own records),
    `gemv_best_provider` (rows), `undetermined` (fitted terms the data did not determine)."""
    bandwidth_GBps: float | None = None  # the reference dtype's (bandwidth.reference_dtype)
    matmul: dict[str, dict[str, Any]] = field(default_factory=dict)  # dtype -> peak_TFLOPS,
    latency_floor_us: float | None = None       # flops_half, wave?, bandwidth_GBps?, ...
    source: str | None = None           # "measured" | "datasheet"
    overhead_us: float | None = None
    overlap_p: float | None = None      # None: t = max(t_mem, t_comp)
    notes: list[str] | None = None
    form: str | None = None
    overhead: dict[str, Any] | None = None
    bandwidth: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    ridge_point_FLOP_per_byte: dict[str, dict[str, Any]] | None = None
    fit_error: dict[str, Any] | None = None
    gemv_best_provider: list[dict[str, Any]] | None = None
    undetermined: list[str] | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # the section as stored (key order)

    @classmethod
    def of(cls, profile: dict[str, Any] | None) -> "ModelSection":
        model = _mapping((profile or {}).get("model"))

        def listed(key: str) -> list[Any] | None:
            v = model.get(key)
            return list(v) if isinstance(v, list) else None

        def mapped(key: str) -> dict[str, Any] | None:
            v = model.get(key)
            return dict(v) if isinstance(v, dict) else None

        return cls(model.get("bandwidth_GBps"), _mapping(model.get("matmul")),
                   model.get("latency_floor_us"), model.get("source"), model.get("overhead_us"),
                   model.get("overlap_p"), listed("notes"), model.get("form"),
                   mapped("overhead"), mapped("bandwidth"), mapped("latency"),
                   mapped("ridge_point_FLOP_per_byte"), mapped("fit_error"),
                   listed("gemv_best_provider"), listed("undetermined"), model)

    @classmethod
    def datasheet(cls, bandwidth_GBps: float, peaks_TFLOPS: dict[str, float],
                  latency_floor_us: float) -> "ModelSection":
        """The model a datasheet gives: its peaks, no GEMM start-up, a default floor."""
        return cls(float(bandwidth_GBps),
                   {d: {"peak_TFLOPS": v, "flops_half": 0.0} for d, v in peaks_TFLOPS.items()},
                   latency_floor_us, "datasheet")

    def to_dict(self) -> dict[str, Any]:
        """The JSON section: the stored keys in their place, new ones in MODEL_KEYS order;
        an unset (None) field is left out unless the stored section had it, except a
        model's overlap_p, whose null is a value (t = max(t_mem, t_comp))."""
        out = dict(self.raw)
        for key in MODEL_KEYS:
            value = getattr(self, key)
            if key in out and out[key] is None and not value:
                continue  # a null stays null (of() reads a null matmul as {})
            if (key in out or (value is not None and value != {})
                    or (key == "overlap_p" and self.bandwidth_GBps is not None)):
                out[key] = value
        return out

    def peaks_TFLOPS(self) -> dict[str, float]:
        """{dtype: fitted peak} for the dtypes with a positive peak."""
        return {d: float(p["peak_TFLOPS"]) for d, p in self.matmul.items()
                if isinstance(p, dict) and positive(p.get("peak_TFLOPS"))}

    def own_bandwidths_GBps(self) -> dict[str, float]:
        """{dtype: GB/s} for the dtypes the fit gave their own streaming bandwidth (a positive
        matmul[dtype]["bandwidth_GBps"] beside a positive peak); the others use bandwidth_GBps."""
        peaks = self.peaks_TFLOPS()
        return {d: float(p["bandwidth_GBps"]) for d, p in self.matmul.items()
                if d in peaks and positive(p.get("bandwidth_GBps"))}

    def is_undetermined(self, name: str) -> bool:
        """Whether the fit marked `name` (e.g. "matmul.bf16.flops_half") as not determined."""
        return name in (self.undetermined or [])


def positive(v: Any) -> bool:
    """A positive number (a bool is not one)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
