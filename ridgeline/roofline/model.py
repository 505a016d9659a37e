"""The roofline model of one device, read from a profile: predicts operation times.

Pure Python (no torch): the planner uses it.

    model = RooflineModel.from_profile(profile)
    model.predict(flops, bytes, dtype)       -> Prediction(time_s, bound, ceiling)
    model.predict_gemm(M, K, N, dtype)       # (M, K) x (K, N), weight bytes K*N*w

Functional form (parameters under profile["model"], fitted by roofline.fit):

    t = max(latency_floor_s, bytes / bw(bytes), flops / tput(dtype, flops))

    bw(bytes)         = bandwidth_GBps * 1e9   (sustained streaming plateau; small
                        transfers are covered by the latency floor)
    tput(dtype, f)    = peak_TFLOPS[dtype] * 1e12 * f / (f + flops_half[dtype])
                        (a small GEMM does not fill the machine: `flops_half` is the
                        work at which half the peak is reached)

When the profile has no fitted "model" section (an older or partial profile),
the model falls back to the measured ceilings (read bandwidth, best matmul per
dtype) with `flops_half = 0` and a 5 us floor, and says so in `notes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DTYPE_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "fp8_e4m3": 1,
               "fp8_e5m2": 1, "fp8_e4m3fnuz": 1, "int8": 1, "int4": 0.5}

# Which measured matmul dtype serves a compute dtype (int8 GEMMs run on the fp8/int8
# tensor-core rate; int4 weights are dequantized to bf16 on Hopper-class GPUs).
COMPUTE_DTYPE_ALIASES = {"fp8": "fp8_e4m3", "int8": "fp8_e4m3", "int4": "bf16",
                         "fp8_e4m3fnuz": "fp8_e4m3", "fp8_e5m2": "fp8_e4m3"}

DEFAULT_LATENCY_FLOOR_US = 5.0


@dataclass
class Prediction:
    time_s: float
    bound: str            # "memory" | "compute" | "latency"
    ceiling: str          # which ceiling set the time, e.g. "bandwidth 3050 GB/s"
    flops: float = 0.0
    bytes: float = 0.0


@dataclass
class RooflineModel:
    bandwidth_GBps: float
    peak_TFLOPS: dict[str, float]
    flops_half: dict[str, float] = field(default_factory=dict)
    latency_floor_us: float = DEFAULT_LATENCY_FLOOR_US
    source: str = "measured"          # "measured" | "datasheet"
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> "RooflineModel":
        fitted = profile.get("model") or {}
        ceilings = profile.get("ceilings") or {}
        notes: list[str] = []
        if fitted.get("bandwidth_GBps") and fitted.get("matmul"):
            peak = {d: float(p["peak_TFLOPS"]) for d, p in fitted["matmul"].items()
                    if p.get("peak_TFLOPS")}
            half = {d: float(p.get("flops_half", 0.0)) for d, p in fitted["matmul"].items()}
            return cls(float(fitted["bandwidth_GBps"]), peak, half,
                       float(fitted.get("latency_floor_us", DEFAULT_LATENCY_FLOOR_US)),
                       source=fitted.get("source", "measured"), notes=notes)
        bw_table = ceilings.get("memory_bandwidth_GBps") or {}
        bandwidth = bw_table.get("read") or bw_table.get("copy") or max(
            [v for v in bw_table.values() if v] or [0.0])
        peak = {d: float(v) for d, v in (ceilings.get("matmul_TFLOPS") or {}).items() if v}
        if not bandwidth or not peak:
            from ridgeline.errors import ProfileError

            raise ProfileError("the profile has no measured bandwidth or matmul ceiling to plan "
                               "with (run `ridgeline profile --probes hbm,matmul`)")
        notes.append("no fitted model in the profile: using raw ceilings and a "
                     f"{DEFAULT_LATENCY_FLOOR_US:g} us floor")
        return cls(float(bandwidth), peak, {}, DEFAULT_LATENCY_FLOOR_US, notes=notes)

    def compute_dtype(self, dtype: str) -> str:
        """The measured matmul dtype that serves `dtype` (ProfileError-free lookup)."""
        if dtype in self.peak_TFLOPS:
            return dtype
        alias = COMPUTE_DTYPE_ALIASES.get(dtype)
        if alias in self.peak_TFLOPS:
            return alias
        for fallback in ("bf16", "fp16", "fp32"):
            if fallback in self.peak_TFLOPS:
                return fallback
        return next(iter(self.peak_TFLOPS))

    def throughput_flops_per_s(self, dtype: str, flops: float) -> float:
        d = self.compute_dtype(dtype)
        peak = self.peak_TFLOPS[d] * 1e12
        half = self.flops_half.get(d, 0.0)
        return peak * flops / (flops + half) if half > 0 else peak

    def predict(self, flops: float, bytes_moved: float, dtype: str) -> Prediction:
        floor_s = self.latency_floor_us * 1e-6
        mem_s = bytes_moved / (self.bandwidth_GBps * 1e9) if bytes_moved else 0.0
        comp_s = flops / self.throughput_flops_per_s(dtype, flops) if flops else 0.0
        t = max(floor_s, mem_s, comp_s)
        if t == floor_s and floor_s >= max(mem_s, comp_s):
            return Prediction(t, "latency", f"latency floor {self.latency_floor_us:.1f} us",
                              flops, bytes_moved)
        if mem_s >= comp_s:
            return Prediction(t, "memory", f"bandwidth {self.bandwidth_GBps:.0f} GB/s",
                              flops, bytes_moved)
        d = self.compute_dtype(dtype)
        return Prediction(t, "compute", f"{d} matmul {self.peak_TFLOPS[d]:.1f} TFLOP/s",
                          flops, bytes_moved)

    def predict_gemm(self, M: int, K: int, N: int, dtype: str,
                     weight_dtype: str | None = None, act_dtype: str | None = None) -> Prediction:
        """(M, K) x (K, N): 2MKN FLOPs; bytes = weights K*N + activations in M*K + out M*N."""
        w_bytes = DTYPE_BYTES.get(weight_dtype or dtype, 2)
        a_bytes = DTYPE_BYTES.get(act_dtype or ("bf16" if DTYPE_BYTES.get(dtype, 2) < 2 else dtype), 2)
        flops = 2.0 * M * K * N
        moved = K * N * w_bytes + (M * K + M * N) * a_bytes
        return self.predict(flops, moved, dtype)

    def ridge_point(self, dtype: str) -> float:
        """FLOP/byte at which `dtype` turns from memory- to compute-bound."""
        d = self.compute_dtype(dtype)
        return self.peak_TFLOPS[d] * 1e12 / (self.bandwidth_GBps * 1e9)
