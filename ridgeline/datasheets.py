"""Vendor datasheet peaks (bundled data/datasheets.json), and the share of them kernels reach.

Every entry names its source; values are dense tensor-core rates and GB = 1e9.
They sit under a profile's separate `datasheet` key and are never fitted.

Each entry also carries `achievable`: the published fraction of its matmul peak (per
dtype) and of its memory bandwidth that measured kernels reach (mamf-finder's best
matmul, BabelStream-style bandwidth runs), each with its source. A plan from a datasheet
prices the part at datasheet x fraction (sizing.hardware), never at 100% unless told:

    fr = achievable_fractions(by_sku("h100-sxm"))
    fr.matmul["bf16"].fraction        # 0.803: mamf-finder's 794.5 of 989 TFLOP/s
    fr.bandwidth.fraction             # 0.949: BabelStream Dot, 3.18 of 3.35 TB/s

Resolution, so that no dtype is ever left at a silent 1.0: an item {"from": sku, "why"}
takes that entry's fraction (a part with no published measurement borrows the closest
measured part's, and the note says so); a dtype without a fraction of its own takes the
fraction of a dtype with the same datasheet peak (the same tensor-core rate: fp16 =
bf16, int8 = fp8 on Hopper), else bf16's. An entry that cannot be resolved is an error.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any

from ridgeline.errors import RidgelineError


@lru_cache(maxsize=1)
def load_datasheets() -> list[dict[str, Any]]:
    text = resources.files("ridgeline").joinpath("data/datasheets.json").read_text()
    return json.loads(text)["entries"]


def lookup(device_name: str) -> dict[str, Any] | None:
    """The datasheet entry whose `match` regex matches a device name, else None.

    The match must start a word: "GB200" and "GH200" are other parts than the B200 and
    the H200 their names contain, and have no entry.
    """
    for entry in load_datasheets():
        if re.search(r"(?<![A-Za-z0-9])(?:" + entry["match"] + ")", device_name,
                     flags=re.IGNORECASE):
            return entry
    return None


def by_sku(sku: str) -> dict[str, Any] | None:
    """Entry by sku ("h100-sxm5-80gb") or a loose alias ("h100-sxm", "h100", "mi300x")."""
    sku = sku.lower().strip()
    entries = load_datasheets()
    for entry in entries:
        if entry["sku"] == sku:
            return entry
    prefixed = [e for e in entries if e["sku"].startswith(sku)]
    # "h200" means the SXM part unless the NVL one is asked for by name
    prefixed.sort(key=lambda e: ("sxm" not in e["sku"], len(e["sku"])))
    return prefixed[0] if prefixed else None


def known_names() -> list[str]:
    """Every sku and the short names by_sku accepts for it ("h100-sxm5-80gb", "h100-sxm", ...)."""
    names = []
    for entry in load_datasheets():
        parts = entry["sku"].split("-")
        names += ["-".join(parts[:i]) for i in range(len(parts), 0, -1)]
    return list(dict.fromkeys(names))


def suggest(name: str, n: int = 3) -> list[str]:
    """Close known names for a GPU name that matched none (difflib)."""
    return difflib.get_close_matches(name.lower().strip(), known_names(), n=n, cutoff=0.5)


def matmul_peak_TFLOPS(entry: dict[str, Any] | None, dtype: str) -> float | None:
    """The datasheet's matmul peak for a measured dtype: its own entry, else the one it
    computes as (fp8_e4m3fnuz on MI300 -> the sheet's fp8_e4m3); None when the sheet has none."""
    from ridgeline.dtypes import compute_dtype_for

    table = {d: v for d, v in ((entry or {}).get("matmul_TFLOPS") or {}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0}
    key = compute_dtype_for(dtype, table, fallback=False)
    return float(table[key]) if key else None


# -- achievable fractions ------------------------------------------------------------------

# the dtype whose fraction another one takes when neither has its own, in this order
_STAND_IN_ORDER = ("bf16", "fp16", "fp8_e4m3", "fp8_e4m3fnuz", "int8", "tf32", "fp32")


@dataclass(frozen=True)
class Fraction:
    """A published share of a datasheet figure that measured kernels reach."""

    fraction: float
    source: str                    # the source's short name ("mamf-finder")
    url: str
    measured: str                  # what was measured, its numbers quoted
    measured_on: str | None = None  # another part, when the measurement is not of this one
    default: str | None = None     # why another entry's fraction stands in ("from")
    stand_in: str | None = None    # the dtype whose fraction this dtype takes

    def describe(self) -> str:
        """'mamf-finder, <url>' with what makes it a default, if anything (a stand-in's is
        its dtype's: sizing.hardware.derating_note names the dtypes that take another's)."""
        parts = [f"{self.source}, {self.url}"]
        if self.measured_on:
            parts.append(f"measured on {self.measured_on}")
        if self.default:
            parts.append(f"default: {self.default}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Achievable:
    """The resolved fractions of one datasheet entry: every matmul dtype and the bandwidth."""

    matmul: dict[str, Fraction]
    bandwidth: Fraction


def _bad(entry: dict[str, Any], what: str) -> RidgelineError:
    return RidgelineError(f"datasheet entry {entry.get('sku') or entry.get('name', '?')!r}: "
                          f"{what} (ridgeline/data/datasheets.json 'achievable')")


def _item(entry: dict[str, Any], item: Any, key: str | None, depth: int = 0) -> Fraction:
    """One fraction item: {fraction, source, measured_on?} or {from: sku, why} (followed)."""
    if not isinstance(item, dict):
        raise _bad(entry, f"no achievable fraction for {key or 'memory bandwidth'}")
    if "from" in item:
        other = next((e for e in load_datasheets() if e["sku"] == item["from"]), None)
        if other is None or depth > 4:
            raise _bad(entry, f"'from' names no datasheet entry: {item['from']!r}")
        ach = other.get("achievable") or {}
        inner = ach.get("memory_bandwidth") if key is None else (ach.get("matmul") or {})
        if key is not None:
            inner = inner if "from" in inner else inner.get(key)
        got = _item(other, inner, key, depth + 1)
        why = f"{other['name']}'s, {item.get('why') or 'no measurement of this part'}"
        return replace(got, default=why)
    f, src = item.get("fraction"), item.get("source") or {}
    if not (isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1):
        raise _bad(entry, f"fraction of {key or 'memory bandwidth'} must be in (0, 1], got {f!r}")
    if not (src.get("url") and src.get("name") and src.get("measured")):
        raise _bad(entry, f"the fraction of {key or 'memory bandwidth'} needs a source with "
                          "name, url and what was measured")
    return Fraction(float(f), src["name"], src["url"], src["measured"], item.get("measured_on"))


def achievable_fractions(entry: dict[str, Any]) -> Achievable:
    """Every matmul dtype's and the bandwidth's fraction of `entry` (see the module docstring).

    An entry without `achievable` (a datasheet copied into an older profile) takes the
    bundled entry of the same sku; RidgelineError when nothing resolves.
    """
    ach = entry.get("achievable")
    if not isinstance(ach, dict):
        bundled = by_sku(str(entry.get("sku") or "")) if entry.get("sku") else None
        if bundled is None or bundled["sku"] != entry.get("sku"):
            raise _bad(entry, "no published achievable fractions")
        ach = bundled["achievable"]
    peaks = {d: v for d, v in (entry.get("matmul_TFLOPS") or {}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0}
    mm = ach.get("matmul") or {}
    own: dict[str, Fraction] = {}
    for dtype in peaks:
        if "from" in mm:
            item = mm
        elif dtype in mm:
            item = mm[dtype]
        else:
            continue
        try:
            own[dtype] = _item(entry, item, dtype)
        except RidgelineError:
            if "from" in mm:  # the other entry has no fraction of this dtype: a stand-in below
                continue
            raise
    matmul = dict(own)
    for dtype, peak in peaks.items():
        if dtype in matmul:
            continue
        same_rate = [d for d in _STAND_IN_ORDER if d in own and peaks.get(d) == peak]
        stand_in = same_rate[0] if same_rate else ("bf16" if "bf16" in own else None)
        if stand_in is None:
            raise _bad(entry, f"no achievable fraction for {dtype} and no bf16 one to stand in")
        matmul[dtype] = replace(own[stand_in], stand_in=stand_in)
    return Achievable({d: matmul[d] for d in peaks},  # the entry's own dtype order
                      _item(entry, ach.get("memory_bandwidth"), None))
