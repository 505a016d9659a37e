"""Every dtype ridgeline knows: names, aliases, widths. Defined here once; used by all.

Pure Python: importing this module imports no torch (`torch_dtype` imports it
when called), so the planner can use it on a laptop.

    canonical("bfloat16")            -> "bf16"
    bytes_per_element("int4")        -> 0.5       (bits / 8; whole bytes as int)
    planner_name("fp8_e4m3fnuz")     -> "fp8"     (the planner sizes storage, not formats)
    compute_dtype_for("fp8", peaks)  -> "fp8_e4m3fnuz" on an MI300 profile
    torch_dtype("fp8_e4m3")          -> torch.float8_e4m3fn (None if this torch lacks it)
    from_torch(torch.bfloat16)       -> "bf16"

Names. A canonical name is what records, profiles and plans store ("bf16",
"fp8_e4m3"). Aliases are the other spellings users and libraries write (torch's
"bfloat16", "float8_e4m3fn", vLLM's "e4m3", quantization schemes "awq"). Lookups
ignore case and surrounding spaces. A name not in the table raises UnknownDtype,
a RidgelineError listing what is known.

"fp8" is a dtype of its own: 8-bit float storage with the format left open (the
planner's unit). The measured formats are fp8_e4m3 (OCP, NVIDIA sm_89+, MI350)
and fp8_e4m3fnuz (MI300), plus the e5m2 pair.

Compute dtype. A matmul in dtype d runs at the measured rate of d, else of the
first of d's `computes_as` that was measured: W8A8 int8 runs on the fp8/int8
tensor-core rate, int4 weights are dequantized to bf16 (Hopper-class GPUs), an
fp8 format runs at the rate of the e4m3 format the device has.

Unit roundoff (rounding a real to the nearest value) is 2^-(mantissa_bits + 1):
bf16 2^-8, fp16 2^-11, fp32 2^-24; integers below 2^(mantissa_bits + 1) are exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ridgeline.errors import RidgelineError


class UnknownDtype(RidgelineError, ValueError):
    """A dtype name ridgeline does not know."""


@dataclass(frozen=True)
class DType:
    name: str                          # canonical
    bits: int                          # storage bits per element
    kind: str                          # "float" | "fp8" | "int"
    tensor_core: bool                  # a tensor-core (matrix unit) compute dtype
    torch_name: str | None             # attribute of the torch module; None: no torch dtype
    aliases: tuple[str, ...] = ()
    mantissa_bits: int | None = None   # explicit fraction bits (floats with a fixed format)
    computes_as: tuple[str, ...] = ()  # measured matmul dtypes serving it, in order

    @property
    def bytes(self) -> int | float:
        return self.bits // 8 if self.bits % 8 == 0 else self.bits / 8


_E4M3 = ("fp8_e4m3", "fp8_e4m3fnuz")  # the measured fp8 matmul formats: OCP first, then MI300

TABLE: tuple[DType, ...] = (
    DType("fp32", 32, "float", False, "float32", ("float32",), 23),
    # tf32: fp32 storage, the tensor cores' 10-bit-mantissa compute mode
    DType("tf32", 32, "float", True, "float32", (), 10),
    DType("fp16", 16, "float", True, "float16", ("float16", "half"), 10),
    DType("bf16", 16, "float", True, "bfloat16", ("bfloat16",), 7),
    DType("fp8", 8, "fp8", True, None, ("float8", "w8a8"), None, _E4M3),
    DType("fp8_e4m3", 8, "fp8", True, "float8_e4m3fn",
          ("e4m3", "fp8_e4m3fn", "float8_e4m3fn"), 3, ("fp8_e4m3fnuz",)),
    DType("fp8_e4m3fnuz", 8, "fp8", True, "float8_e4m3fnuz",
          ("e4m3fnuz", "float8_e4m3fnuz"), 3, ("fp8_e4m3",)),
    DType("fp8_e5m2", 8, "fp8", True, "float8_e5m2", ("e5m2", "float8_e5m2"), 2, _E4M3),
    DType("fp8_e5m2fnuz", 8, "fp8", True, "float8_e5m2fnuz",
          ("e5m2fnuz", "float8_e5m2fnuz"), 2, ("fp8_e4m3fnuz", "fp8_e4m3")),
    DType("int8", 8, "int", True, "int8", (), None, _E4M3),
    DType("uint8", 8, "int", False, "uint8"),
    # int4: GPTQ/AWQ-style weight-only quantization, dequantized to bf16 for the matmul
    DType("int4", 4, "int", False, None, ("awq", "gptq"), None, ("bf16",)),
)

BY_NAME: dict[str, DType] = {}
for _d in TABLE:
    for _n in (_d.name, *_d.aliases):
        assert _n not in BY_NAME, f"dtype name {_n!r} defined twice"
        BY_NAME[_n] = _d
del _d, _n

NAMES: tuple[str, ...] = tuple(d.name for d in TABLE)
FP8_FORMATS: tuple[str, ...] = tuple(d.name for d in TABLE if d.kind == "fp8" and d.torch_name)
# Every known name and alias -> bytes per element, for `.get(name, default)` lookups.
BYTES: Mapping[str, int | float] = {n: d.bytes for n, d in BY_NAME.items()}
# A matmul dtype no chain reaches falls back to the first of these the profile measured.
FALLBACK_COMPUTE = ("bf16", "fp16", "fp32")


def _key(name: Any) -> str:
    return str(name).strip().lower()


def find(name: Any) -> DType | None:
    """The table entry for a name or alias (any case); None when ridgeline does not know it."""
    return BY_NAME.get(_key(name))


def get(name: Any) -> DType:
    """The table entry for a name or alias; UnknownDtype when there is none."""
    d = find(name)
    if d is None:
        raise UnknownDtype(f"unknown dtype {name!r}: ridgeline knows {', '.join(NAMES)} "
                           "(and aliases such as bfloat16, half, e4m3, float8_e4m3fn)")
    return d


def canonical(name: Any) -> str:
    """"bfloat16" -> "bf16", "E4M3" -> "fp8_e4m3"; UnknownDtype when not known."""
    return get(name).name


def bytes_per_element(name: Any) -> int | float:
    """Storage bytes of one element: fp32 4, bf16 2, any fp8 1, int4 0.5."""
    return get(name).bytes


def planner_name(name: Any) -> str:
    """The planner's storage dtype: every fp8 format is "fp8"; other dtypes their canonical name."""
    d = get(name)
    return "fp8" if d.kind == "fp8" else d.name


def is_fp8(name: Any) -> bool:
    """Whether `name` is an 8-bit float (any format); False for names ridgeline does not know."""
    d = find(name)
    return d is not None and d.kind == "fp8"


def unit_roundoff(name: Any) -> float:
    """2^-(mantissa_bits + 1): the relative error of rounding one value to `name`."""
    d = get(name)
    if d.mantissa_bits is None:
        raise UnknownDtype(f"{d.name} has no fixed float format (no unit roundoff)")
    return 2.0 ** -(d.mantissa_bits + 1)


def compute_dtype_for(name: Any, measured: Iterable[str], *, fallback: bool = True) -> str | None:
    """The measured matmul dtype that serves a matmul in `name`.

    `name` itself (as given, then canonical) if measured, else the first of its
    `computes_as` measured (fp8 -> fp8_e4m3 -> fp8_e4m3fnuz; int4 -> bf16). With
    `fallback`, then the first of FALLBACK_COMPUTE measured, then any measured dtype.
    None when nothing fits. A name ridgeline does not know only gets the fallback.
    """
    have = list(measured)
    d = find(name)
    chain = (name,) + ((d.name, *d.computes_as) if d else ())
    if fallback:
        chain += FALLBACK_COMPUTE
    hit = next((c for c in chain if c in have), None)
    return hit if hit is not None or not fallback else next(iter(have), None)


def fp8_format(device_dtypes: Mapping[str, bool] | None) -> str | None:
    """The e4m3 format a device computes in: "fp8_e4m3" (OCP), else "fp8_e4m3fnuz" (MI300);
    None if neither. From its dtype flags (DeviceInfo.dtypes, provenance.device.dtypes)."""
    flags = device_dtypes or {}
    return next((f for f in _E4M3 if flags.get(f)), None)


def torch_dtype(name: Any):
    """The torch.dtype of `name` (torch imported here, on first use); None when this torch build
    lacks it (float8 before torch 2.1). UnknownDtype for a name with no torch dtype (fp8, int4)."""
    d = get(name)
    if d.torch_name is None:
        hint = " (name a format: fp8_e4m3 or fp8_e4m3fnuz)" if d.kind == "fp8" else ""
        raise UnknownDtype(f"{d.name} has no torch dtype{hint}")
    import torch

    return getattr(torch, d.torch_name, None)


def from_torch(dtype: Any) -> str:
    """The canonical name of a torch.dtype (torch.float32 -> "fp32", not tf32); UnknownDtype
    for one ridgeline does not know. Needs no torch import: reads str(dtype)."""
    attr = str(dtype).removeprefix("torch.")
    d = next((d for d in TABLE if d.torch_name == attr), None)
    if d is None:
        raise UnknownDtype(f"unknown torch dtype {dtype}: ridgeline knows "
                           f"{', '.join(sorted({d.torch_name for d in TABLE if d.torch_name}))}")
    return d.name
