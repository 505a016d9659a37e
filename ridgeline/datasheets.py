"""Vendor datasheet peaks (bundled data/datasheets.json), for comparison only.

Every entry names its source; values are dense tensor-core rates and GB = 1e9.
They sit under a profile's separate `datasheet` key and are never fitted.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any


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
