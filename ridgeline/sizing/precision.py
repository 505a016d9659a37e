"""Precision: weights, GEMM activations and the KV cache, each chosen separately.

    Precision(weights="fp8", activations="fp8", kv_cache="fp8")
    Precision(weights="int4", int4_group_size=32, int4_zero_point="fp16")  # gpt-fast's G=32

Bytes per element (field guide §2.1's table; fp8 added; ridgeline.dtypes holds
them): fp32 4, fp16/bf16 2, fp8/int8 1, int4 0.5. The planner names storage, not
formats: every fp8 format (fp8_e4m3, fp8_e4m3fnuz, fp8_e5m2, ...) is "fp8" here.
Group-quantized int4 (GPTQ/AWQ style) also stores one fp16 scale per group of
`int4_group_size` weights (`--int4-group-size`, default INT4_GROUP_SIZE = 128), and, for
asymmetric formats, a zero point per group (`--int4-zero-point`, ZERO_POINT_BYTES):

    weight_bytes(int4) = 0.5 + (SCALE_BYTES + ZERO_POINT_BYTES[zero]) / int4_group_size

    zero   B/group  stored as (who)                                     G=128       G=32
    none   0        nothing: symmetric (GPTQ sym repacked for Marlin)   0.515625    0.5625
    int4   0.5      `qzeros`, eight per int32 (AWQ, GPTQ)               0.51953125  0.578125
    fp16   2        bf16 in `scales_and_zeros` (gpt-fast, torchao       0.53125     0.625
                    tinygemm); "bf16" is an alias

GPTQ, AWQ and gpt-fast use powers of two from 32 to 128 (16-1024 exist); any whole number
>= 1 is accepted. The group size and the zero point apply to int4 weights only: a value
other than the default with other weights is an error. `to_dict` carries `int4_group_size`
and `int4_zero_point` only when the weights are int4. Memory (memory.py) and the step
times (latency.py) both read `weight_bytes`, so they agree.

Which parts are quantized (as in published FP8/INT4 checkpoints): the linear
layers of the transformer blocks. The embedding, the LM head, the MoE router and
the norms stay in the base dtype (the 16-bit activation dtype).

The GEMM compute dtype (which measured matmul ceiling applies) is the 8-bit
dtype when weights and activations are both 8-bit (W8A8 runs on the fp8/int8
tensor cores), else the 16-bit activation dtype (weight-only quantization
dequantizes to bf16/fp16 before the multiply; field guide §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ridgeline.dtypes import FP8_FORMATS, bytes_per_element, find, planner_name
from ridgeline.errors import RidgelineError
from ridgeline.sizing.options import option

# (fp32 is accepted everywhere for CPU runs; the GPU plans use the others)
WEIGHT_DTYPES = ("fp16", "bf16", "fp8", "int8", "int4", "fp32")
ACTIVATION_DTYPES = ("fp16", "bf16", "fp8", "int8", "fp32")
KV_DTYPES = ("fp16", "bf16", "fp8", "fp32")
WIDE = ("fp16", "bf16", "fp32")  # dtypes hidden states can live in
INT4_GROUP_SIZE = 128
SCALE_BYTES = 2.0  # one fp16 scale per int4 group
INT4_ZERO_POINT = "none"  # symmetric: no zero point stored
# bytes of one int4 group's zero point, by how it is stored (see the module docstring)
ZERO_POINT_BYTES = {"none": 0.0, "int4": float(bytes_per_element("int4")),
                    "fp16": float(bytes_per_element("fp16"))}

# bytes per element of every planner dtype (WEIGHT_DTYPES holds them all); memory.py reads it
BYTES = {d: float(bytes_per_element(d)) for d in WEIGHT_DTYPES}


def normalize_dtype(value: str, allowed: tuple[str, ...], what: str) -> str:
    """The planner's name of `value` (any alias in ridgeline.dtypes; fp8 formats -> "fp8")."""
    v = planner_name(value) if find(value) else str(value).strip().lower()
    if v not in allowed:
        raise RidgelineError(f"{what} dtype {value!r} is not one of {', '.join(allowed)}")
    return v


def dtype_bytes(dtype: str) -> float:
    return float(bytes_per_element(normalize_dtype(dtype, WEIGHT_DTYPES, "storage")))


@dataclass(frozen=True)
class Precision:
    weights: str = "bf16"
    activations: str = "bf16"
    kv_cache: str = "bf16"
    int4_group_size: int = INT4_GROUP_SIZE
    int4_zero_point: str = INT4_ZERO_POINT

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", normalize_dtype(self.weights, WEIGHT_DTYPES, "weight"))
        object.__setattr__(self, "activations",
                           normalize_dtype(self.activations, ACTIVATION_DTYPES, "activation"))
        object.__setattr__(self, "kv_cache", normalize_dtype(self.kv_cache, KV_DTYPES, "KV cache"))
        check_int4_group_size(self.int4_group_size, self.weights)
        object.__setattr__(self, "int4_zero_point",
                           normalize_zero_point(self.int4_zero_point, self.weights))
        if self.activations in ("fp8", "int8") and self.weights != self.activations:
            raise RidgelineError(f"{self.activations} activations need {self.activations} weights "
                                 f"(W8A8); got {self.weights} weights")

    @property
    def base(self) -> str:
        """The dtype of hidden states, embeddings, LM head and norms (16-bit, or fp32 on a CPU)."""
        return self.activations if self.activations in WIDE else "bf16"

    @property
    def weight_bytes(self) -> float:
        """Bytes per quantized weight, int4 group scales and zero points included."""
        b = dtype_bytes(self.weights)
        if self.weights != "int4":
            return b
        return b + (SCALE_BYTES + ZERO_POINT_BYTES[self.int4_zero_point]) / self.int4_group_size

    @property
    def base_bytes(self) -> float:
        return dtype_bytes(self.base)

    @property
    def kv_bytes(self) -> float:
        return dtype_bytes(self.kv_cache)

    @property
    def gemm_dtype(self) -> str:
        """The matmul dtype whose measured ceiling applies (see module docstring)."""
        return self.activations if self.activations in ("fp8", "int8") else self.base

    def to_dict(self) -> dict[str, Any]:
        d = {"weights": self.weights, "activations": self.activations, "kv_cache": self.kv_cache,
             "gemm_dtype": self.gemm_dtype, "weight_bytes": self.weight_bytes,
             "kv_bytes": self.kv_bytes}
        if self.weights == "int4":  # meaningless for other weights (see the module docstring)
            d["int4_group_size"] = self.int4_group_size
            d["int4_zero_point"] = self.int4_zero_point
        return d


def check_int4_group_size(size: Any, weights: str | None = None) -> None:
    """RidgelineError (one line) unless `size` is a whole number >= 1, and, when the planner
    name of the weights is given, unless it is the default or the weights are int4."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise RidgelineError(f"--int4-group-size must be a positive whole number (weights per "
                             f"fp16 scale; GPTQ/AWQ use 32-128), got {size!r}")
    if weights is not None and weights != "int4" and size != INT4_GROUP_SIZE:
        raise RidgelineError(f"--int4-group-size applies to int4 weights only (the weights "
                             f"are {weights})")


def normalize_zero_point(value: Any, weights: str | None = None) -> str:
    """The table name of an int4 zero point ("bf16" -> "fp16"); RidgelineError (one line)
    unless it is one of ZERO_POINT_BYTES or an alias, and, when the planner name of the
    weights is given, unless it is the default or the weights are int4."""
    name = value.strip().lower() if isinstance(value, str) else None
    if name == "bf16":   # gpt-fast stores bf16 zeros: 2 bytes, as fp16
        name = "fp16"
    if name not in ZERO_POINT_BYTES:
        raise RidgelineError(f"--int4-zero-point must be one of {', '.join(ZERO_POINT_BYTES)} "
                             f"(bf16 = fp16), got {value!r}")
    if weights is not None and weights != "int4" and name != INT4_ZERO_POINT:
        raise RidgelineError(f"--int4-zero-point applies to int4 weights only (the weights "
                             f"are {weights})")
    return name


def device_supports(dtypes: dict[str, bool] | None, dtype: str) -> bool | None:
    """True/False from a profile's provenance.device.dtypes; None when the profile does not say."""
    if not dtypes:
        return None
    # fp8 storage: any fp8 format; else the dtype or a rate it runs on (int8: fp8_e4m3, fnuz)
    flags = FP8_FORMATS if dtype == "fp8" else (dtype, *getattr(find(dtype), "computes_as", ()))
    known = [f for f in flags if f in dtypes]
    if not known:
        return None if dtype not in ("fp8",) else False
    return any(bool(dtypes[f]) for f in known)


def unsupported(precision: Precision, device_dtypes: dict[str, bool] | None,
                device: str = "this GPU") -> str | None:
    """Why `device` cannot run `precision` (one line), or None when it can.

    GEMM inputs need the device's matmul path in that dtype. A KV cache in fp8 is only
    stored in fp8: the attention kernel converts it to the 16-bit dtype on load, so any
    GPU can hold one (vLLM's fp8 KV cache runs on A100); a 16-bit KV dtype must be one the
    device computes in.
    """
    for what, dt in (("activation", precision.activations), ("KV cache", precision.kv_cache)):
        if what == "KV cache" and dt == "fp8":
            continue
        if device_supports(device_dtypes, dt) is False:
            have = ", ".join(k for k, v in (device_dtypes or {}).items() if v) or "none listed"
            return f"{what} dtype {dt} is not supported by {device} (its profile lists {have})"
    return None


def require_supported(precision: Precision, device_dtypes: dict[str, bool] | None,
                      device: str = "this GPU") -> None:
    """RidgelineError (the one line of `unsupported`) when `device` cannot run `precision`."""
    why = unsupported(precision, device_dtypes, device)
    if why:
        raise RidgelineError(why)


def device_notes(precision: Precision, device_dtypes: dict[str, bool] | None) -> list[str]:
    """What the device does with a precision it holds but does not compute in."""
    if precision.kv_cache == "fp8" and device_supports(device_dtypes, "fp8") is False:
        return [f"fp8 KV cache on a GPU without fp8 matmuls: stored in fp8, converted to "
                f"{precision.base} in the attention kernel (as vLLM does on A100)"]
    return []


@dataclass(frozen=True, kw_only=True)
class PrecisionOptions:
    """Precision."""

    weights: str = option("bf16", f"weight dtype: {', '.join(WEIGHT_DTYPES)}", metavar="DTYPE")
    activations: str = option("auto", f"GEMM input dtype: {', '.join(ACTIVATION_DTYPES)} (auto: "
                                      "W8A8 for 8-bit weights when the GPU can, else 16-bit)",
                              metavar="DTYPE")
    kv: str = option("auto", f"KV cache dtype: {', '.join(KV_DTYPES)} (auto: the 16-bit "
                             "activation dtype); fp8 needs no fp8 matmul", metavar="DTYPE")
    int4_group_size: int = option(INT4_GROUP_SIZE, "int4 weights per fp16 scale (GPTQ/AWQ "
                                                   "group size; gpt-fast's checkpoints: 32); "
                                                   "int4 weights only", metavar="N")
    int4_zero_point: str = option(INT4_ZERO_POINT, "int4 zero point per group: none "
                                                   "(symmetric), int4 (AWQ/GPTQ qzeros, 0.5 B), "
                                                   "fp16 (gpt-fast/torchao, 2 B; bf16 alias); "
                                                   "int4 weights only",
                                  metavar="{none,int4,fp16}")

    def __post_init__(self) -> None:
        check_int4_group_size(self.int4_group_size)  # the weights are checked when resolved
        normalize_zero_point(self.int4_zero_point)

    def resolve(self, device_dtypes: dict[str, bool] | None) -> tuple[Precision, list[str]]:
        return resolve_precision(self.weights, self.activations, self.kv, device_dtypes,
                                 self.int4_group_size, self.int4_zero_point)


def resolve_precision(weights: str, activations: str | None, kv_cache: str | None,
                      device_dtypes: dict[str, bool] | None,
                      int4_group_size: int = INT4_GROUP_SIZE,
                      int4_zero_point: str = INT4_ZERO_POINT) -> tuple[Precision, list[str]]:
    """Fill defaults and check them against the device; returns (precision, notes).

    Defaults: 16-bit weights compute in their own dtype; fp8/int8 weights run W8A8
    when the device has the 8-bit tensor-core path, else weight-only in bf16; int4 is
    weight-only (bf16). The KV cache defaults to the 16-bit base dtype.
    """
    notes: list[str] = []
    w = normalize_dtype(weights, WEIGHT_DTYPES, "weight")
    if activations in (None, "", "auto"):
        if w in WIDE:
            activations = w
        elif w in ("fp8", "int8") and device_supports(device_dtypes, w) is not False:
            activations = w
        else:
            activations = "bf16"
            if w in ("fp8", "int8"):
                notes.append(f"the device has no {w} matmul: {w} weights run weight-only "
                             f"(dequantized to bf16)")
    a = normalize_dtype(activations, ACTIVATION_DTYPES, "activation")
    if kv_cache in (None, "", "auto"):
        kv_cache = a if a in WIDE else "bf16"
    precision = Precision(w, a, normalize_dtype(kv_cache, KV_DTYPES, "KV cache"), int4_group_size,
                          int4_zero_point)
    require_supported(precision, device_dtypes)
    return precision, notes + device_notes(precision, device_dtypes)
