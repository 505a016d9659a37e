"""The roofline model of one device, read from a profile: predicts operation times.

Pure Python (no torch, no numpy): the planner uses it.

    model = RooflineModel.from_profile(profile)
    model.predict(flops, bytes, dtype)       -> Prediction(time_s, bound, ceiling, flops, bytes)
    model.predict_gemm(M, K, N, dtype)       # (M, K) x (K, N), weight bytes K*N*w
    model.ridge_point(dtype)                 # FLOP/byte = peak / bandwidth(dtype)
    model.bandwidth_for(dtype)               # GB/s that prices the bytes of `dtype`

Functional form (parameters under profile["model"], fitted by roofline.model_fit):

    t      = max(latency_floor, overhead + smax_p(t_mem, t_comp))
    t_mem  = bytes / bandwidth(dtype)
    t_comp = w(M, N) * flops / tput(dtype, flops)
    tput(dtype, f) = peak_TFLOPS[dtype] * f / (f + flops_half[dtype])
    smax_p(a, b)   = (a^p + b^p)^(1/p)          (p = overlap_p; None means max(a, b))

- `bandwidth_GBps`: sustained streaming bandwidth (GB = 1e9 B/s), fitted on decode
  GEMVs of the reference dtype (profile["model"]["bandwidth"]["reference_dtype"]).
- `bandwidth(dtype)`: `matmul[dtype]["bandwidth_GBps"]` where the fit gave that compute
  dtype its own weight-streaming rate (`bandwidth_by_dtype`: a CPU streams fp32 GEMVs at
  half its bf16 rate, a GPU fp8 GEMV through torch._scaled_mm worse than bf16), else
  `bandwidth_GBps`. Looked up by compute_dtype(dtype), as the peaks are.
- `flops_half`: the work at which a GEMM reaches half the peak (a small GEMM
  does not fill the machine); note flops / tput = (flops + flops_half) / peak,
  i.e. a fixed compute start-up cost of flops_half / peak seconds.
- `overhead_us`: fixed per-kernel cost added to every kernel (start-up, tail,
  ramp of the memory pipeline); `latency_floor_us`: no kernel is faster than it.
- bound: "latency" when the floor sets the time or the fixed costs (overhead +
  GEMM start-up) outweigh the work-proportional part; else "memory" when
  t_mem >= t_comp, else "compute".
- `overlap_p`: how well memory and compute overlap. Real kernels near the ridge
  point run slower than max(t_mem, t_comp); p = 1 is no overlap (sum), p -> inf
  perfect overlap (the textbook roofline).
- `w(M, N)` (wave quantization, optional per dtype, predict_gemm only): a GEMM
  tiled in (tile_m x tile_n) output tiles over `slots` concurrent tiles runs in
  whole waves, w = ceil(tiles / slots) * slots * tile_m * tile_n / (M * N);
  applied only when M >= tile_m, N >= tile_n and tiles >= slots (below that the
  libraries split K and fill the machine anyway), else w = 1.

With overhead 0, p None and no wave term this is exactly the textbook roofline
max(floor, bytes / bw, flops / tput). When the profile has no fitted "model"
section (an older or partial profile), the model falls back to the measured
ceilings (read bandwidth, best matmul per dtype) with `flops_half = 0` and a
5 us floor, and says so in `notes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ridgeline import dtypes
from ridgeline.roofline.sections import Ceilings, ModelSection


DEFAULT_LATENCY_FLOOR_US = 5.0
# A fixed cost (overhead, GEMM start-up, floor) below this is not resolved by any timer we
# use (device events tick at ~0.5 us): a fitted value under it is noise, not a measurement.
RESOLVABLE_TIME_US = 0.01


def undetermined_time(value: Any, field: str, marked: list[str]) -> bool:
    """A fitted fixed cost the data did not determine: listed so by the fit (`marked`), or a
    positive value below what a timer resolves (profiles fitted before the list existed)."""
    noise = (isinstance(value, (int, float)) and not isinstance(value, bool)
             and 0 < value < RESOLVABLE_TIME_US)
    return field in marked or noise


@dataclass
class Prediction:
    time_s: float
    bound: str            # "memory" | "compute" | "latency"
    ceiling: str          # which ceiling set the time, e.g. "bandwidth 3050 GB/s"
    flops: float = 0.0
    bytes: float = 0.0


def smooth_max(a: float, b: float, p: float | None) -> float:
    """(a^p + b^p)^(1/p); p None (or inf) is max(a, b). Scaled so large p cannot overflow."""
    hi = max(a, b)
    if p is None or math.isinf(p) or hi <= 0:
        return hi
    lo = min(a, b)
    return hi * (1.0 + (lo / hi) ** p) ** (1.0 / p)


def wave_factor(M: int, N: int, wave: dict[str, Any] | None) -> float:
    """Compute inflation of a (M x N)-output GEMM run in whole waves of tiles (>= 1)."""
    if not wave:
        return 1.0
    tm, tn, slots = int(wave["tile_m"]), int(wave["tile_n"]), int(wave["slots"])
    if M < tm or N < tn or slots <= 0:
        return 1.0
    tiles = math.ceil(M / tm) * math.ceil(N / tn)
    if tiles < slots:
        return 1.0
    return math.ceil(tiles / slots) * slots * tm * tn / (M * N)


@dataclass
class RooflineModel:
    bandwidth_GBps: float
    peak_TFLOPS: dict[str, float]
    flops_half: dict[str, float] = field(default_factory=dict)
    latency_floor_us: float = DEFAULT_LATENCY_FLOOR_US
    source: str = "measured"          # "measured" | "datasheet"
    notes: list[str] = field(default_factory=list)
    overhead_us: float = 0.0          # fixed per-kernel cost (added)
    overlap_p: float | None = None    # None: t = max(t_mem, t_comp)
    wave: dict[str, dict[str, Any]] = field(default_factory=dict)  # dtype -> tile_m, tile_n, slots
    # compute dtype -> its own streaming GB/s; a dtype not here streams at bandwidth_GBps
    bandwidth_by_dtype: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> "RooflineModel":
        fitted = ModelSection.of(profile)
        notes: list[str] = []
        matmul = fitted.matmul
        peak = fitted.peaks_TFLOPS()
        if fitted.bandwidth_GBps and peak:
            half = {d: float(p.get("flops_half") or 0.0) for d, p in matmul.items()}
            wave = {d: dict(p["wave"]) for d, p in matmul.items() if p.get("wave")}
            own_bw = fitted.own_bandwidths_GBps()
            floor = fitted.latency_floor_us
            return cls(float(fitted.bandwidth_GBps), peak, half,
                       float(floor) if floor is not None else DEFAULT_LATENCY_FLOOR_US,
                       source=fitted.source or "measured", notes=list(fitted.notes or []),
                       overhead_us=float(fitted.overhead_us or 0.0),
                       overlap_p=float(fitted.overlap_p) if fitted.overlap_p else None, wave=wave,
                       bandwidth_by_dtype=own_bw)
        ceilings = Ceilings.of(profile)
        bw_table = ceilings.bandwidth_GBps
        bandwidth = bw_table.get("read") or bw_table.get("copy") or max(
            [v for v in bw_table.values() if v] or [0.0])
        peak = {d: float(v) for d, v in ceilings.matmul_TFLOPS.items() if v}
        if not bandwidth or not peak:
            from ridgeline.errors import ProfileError

            missing = " and ".join(what for what, have in (("memory bandwidth", bandwidth),
                                                           ("matmul", peak)) if not have)
            raise ProfileError(f"the profile has no {missing} ceiling to plan with (none "
                               "measured, or stored as null): run `ridgeline profile --probes "
                               "hbm,matmul`")
        lacks = ("the fitted model lacks a bandwidth or a matmul peak"
                 if fitted.bandwidth_GBps or matmul else "no fitted model in the profile")
        notes.append(f"{lacks}: using raw ceilings and a {DEFAULT_LATENCY_FLOOR_US:g} us floor")
        return cls(float(bandwidth), peak, {}, DEFAULT_LATENCY_FLOOR_US, notes=notes)

    def compute_dtype(self, dtype: str) -> str:
        """The measured matmul dtype that serves `dtype` (ProfileError-free lookup)."""
        return dtypes.compute_dtype_for(dtype, self.peak_TFLOPS)  # fp8 -> e4m3 -> fnuz, bf16

    def bandwidth_for(self, dtype: str) -> float:
        """GB/s that streams the bytes of a `dtype` operation: its compute dtype's own, if
        the fit kept one, else the shared bandwidth_GBps."""
        return self.bandwidth_by_dtype.get(self.compute_dtype(dtype), self.bandwidth_GBps)

    def throughput_flops_per_s(self, dtype: str, flops: float) -> float:
        d = self.compute_dtype(dtype)
        peak = self.peak_TFLOPS[d] * 1e12
        half = self.flops_half.get(d, 0.0)
        return peak * flops / (flops + half) if half > 0 else peak

    def predict(self, flops: float, bytes_moved: float, dtype: str, *,
                m: int | None = None, n: int | None = None) -> Prediction:
        """Time of an operation of `flops` and `bytes_moved`; m, n (output shape) enable the
        wave-quantization term of a GEMM."""
        floor_s = self.latency_floor_us * 1e-6
        overhead_s = self.overhead_us * 1e-6
        d = self.compute_dtype(dtype)
        bw_GBps = self.bandwidth_for(d)
        mem_s = bytes_moved / (bw_GBps * 1e9) if bytes_moved else 0.0
        comp_s = flops / self.throughput_flops_per_s(dtype, flops) if flops else 0.0
        has_shape = m is not None and n is not None
        w = wave_factor(int(m), int(n), self.wave.get(d)) if has_shape else 1.0
        comp_s *= w
        # the GEMM start-up part of comp_s: (flops + flops_half) / peak = work + start-up
        startup_s = w * self.flops_half.get(d, 0.0) / (self.peak_TFLOPS[d] * 1e12) if flops else 0.0
        work_s = overhead_s + smooth_max(mem_s, comp_s, self.overlap_p)
        t = max(floor_s, work_s)
        if floor_s >= work_s:
            return Prediction(t, "latency", f"latency floor {self.latency_floor_us:.1f} us",
                              flops, bytes_moved)
        if overhead_s + startup_s >= max(mem_s, comp_s - startup_s):
            # fixed costs dominate: more work would barely change the time
            return Prediction(t, "latency", f"per-kernel overhead {self.overhead_us:.1f} us"
                              + (f" + GEMM start-up {startup_s * 1e6:.1f} us" if startup_s else ""),
                              flops, bytes_moved)
        if mem_s >= comp_s:
            own = f"{d} " if d in self.bandwidth_by_dtype else ""
            return Prediction(t, "memory", f"{own}bandwidth {bw_GBps:.0f} GB/s",
                              flops, bytes_moved)
        return Prediction(t, "compute", f"{d} matmul {self.peak_TFLOPS[d]:.1f} TFLOP/s",
                          flops, bytes_moved)

    def predict_gemm(self, M: int, K: int, N: int, dtype: str,
                     weight_dtype: str | None = None, act_dtype: str | None = None,
                     weight_bytes: float | None = None) -> Prediction:
        """(M, K) x (K, N): 2MKN FLOPs; bytes = weights K*N + activations in M*K + out M*N.

        `weight_bytes` (per weight) overrides the width of `weight_dtype`: quantized weights
        carry their scales (int4: one fp16 scale per group)."""
        width = dtypes.BYTES.get    # a dtype ridgeline does not know counts as 16-bit
        w_bytes = weight_bytes if weight_bytes is not None else width(weight_dtype or dtype, 2)
        a_default = "bf16" if width(dtype, 2) < 2 else dtype  # fp8/int GEMMs: bf16 acts
        a_bytes = width(act_dtype or a_default, 2)
        flops = 2.0 * M * K * N
        moved = K * N * w_bytes + (M * K + M * N) * a_bytes
        return self.predict(flops, moved, dtype, m=M, n=N)

    def ridge_point(self, dtype: str) -> float:
        """FLOP/byte at which `dtype` turns from memory- to compute-bound."""
        d = self.compute_dtype(dtype)
        return self.peak_TFLOPS[d] * 1e12 / (self.bandwidth_for(d) * 1e9)
