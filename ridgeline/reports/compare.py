"""Compare a node's profile against a reference profile: ceilings and fitted parameters.

    compare_profiles(node, reference, threshold)   # rows and the gate's verdict (plain data)
    print_comparison(result)                        # the console table and the verdict

The command is `ridgeline compare PROFILE.json REFERENCE.json [--threshold 0.10] [--json]`
(ridgeline.commands.compare).

ratio = node / reference for every quantity both profiles hold. A quantity
deviates when |ratio - 1| > threshold; it is *worse* when it deviates in the
bad direction (lower bandwidth or TFLOP/s, higher latency). Exit code 1 when
any measured ceiling (memory bandwidth per kernel, matmul TFLOP/s per dtype,
interconnect bandwidth) is worse than the reference beyond the threshold, 0
otherwise: usable as a fleet acceptance gate. Fitted model parameters are
shown and flagged but do not fail the gate (they move with the fit, not only
with the hardware).

Ceilings carry both sides' status (roofline.trust). A ceiling unverified or
noisy on either side is never called better or worse: it is flagged
"unverified" (with the direction it would have had), neither passes nor
fails the gate, and one line lists every such ceiling ("NOT GATED: ...").
A fitted fixed cost that either side's fit could not determine (listed in
its model's "undetermined", or below RESOLVABLE_TIME_US) gets no ratio:
"not determined".
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ridgeline.reports.tables import ceiling_status_by_name
from ridgeline.roofline.model import undetermined_time
from ridgeline.roofline.sections import Ceilings, ModelSection
from ridgeline.roofline.trust import CeilingStatus

DEFAULT_THRESHOLD = 0.10


class Quantity(NamedTuple):
    value: float | None        # None: not determined by the fit (see `undetermined`)
    unit: str
    higher_is_better: bool
    kind: str                  # "ceiling" | "fitted"
    status: CeilingStatus | None = None   # ceilings: from roofline.trust; None: none recorded
    undetermined: bool = False


def _number(value: Any) -> float | None:
    """A positive number, else None (absent, null, zero)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _fitted_us(value: Any, field: str, undetermined: list[str]) -> tuple[float | None, bool]:
    """A fitted fixed cost and whether it is undetermined: marked so by the fit, or below what a
    timer resolves (1e-10 us noise in profiles fitted before the mark existed)."""
    v = _number(value)
    if undetermined_time(v, field, undetermined):
        return None, True
    return v, False


def quantities(profile: dict[str, Any]) -> dict[str, Quantity]:
    """name -> Quantity for every comparable number of a profile (compare and
    reports.fleet read profiles through this one extraction)."""
    out: dict[str, Quantity] = {}
    status = ceiling_status_by_name(profile)

    def ceiling(name: str, value: Any, unit: str, trust_name: str | None = None) -> None:
        if _number(value) is not None:
            out[name] = Quantity(_number(value), unit, True, "ceiling",
                                 status.get(trust_name or name))

    def fitted(name: str, value: Any, unit: str, higher: bool, undetermined: bool = False) -> None:
        if undetermined or _number(value) is not None:
            out[name] = Quantity(_number(value), unit, higher, "fitted", None, undetermined)

    ceil = Ceilings.of(profile)
    for kernel, v in ceil.bandwidth_GBps.items():
        ceiling(f"{kernel} bandwidth", v, "GB/s")
    for dtype, v in ceil.matmul_TFLOPS.items():
        ceiling(f"{dtype} matmul", v, "TFLOP/s")
    ic = profile.get("interconnect") or {}
    for direction, v in (ic.get("host_link_GBps") or {}).items():
        ceiling(f"host link {direction}", v, "GB/s")
    for name, per_world in ic.items():
        if name in ("host_link_GBps", "topology") or not isinstance(per_world, dict):
            continue
        for world, fit in per_world.items():
            if isinstance(fit, dict):
                ceiling(f"{name} n={world} busbw", fit.get("busbw_GBps"), "GB/s",
                        trust_name=f"{name} n={world}")
                alpha, undetermined = _fitted_us(fit.get("alpha_us"), "", [])
                fitted(f"{name} n={world} alpha", alpha, "us", False, undetermined)
    model = ModelSection.of(profile)
    marked = [m for m in model.undetermined or [] if isinstance(m, str)]
    fitted("model bandwidth", model.bandwidth_GBps, "GB/s", True)
    for label, field in (("model latency floor", "latency_floor_us"),
                         ("model per-kernel overhead", "overhead_us")):
        value, undetermined = _fitted_us(getattr(model, field), field, marked)
        fitted(label, value, "us", False, undetermined)
    for dtype, p in model.matmul.items():
        if not isinstance(p, dict):
            continue
        fitted(f"model {dtype} peak", p.get("peak_TFLOPS"), "TFLOP/s", True)
        peak, half = _number(p.get("peak_TFLOPS")), _number(p.get("flops_half"))
        # flops_half as the time it costs (flops_half / peak): comparable across devices
        startup = half / (peak * 1e12) * 1e6 if peak and half else None
        value, undetermined = _fitted_us(startup, f"matmul.{dtype}.flops_half", marked)
        fitted(f"model {dtype} GEMM start-up", value, "us", False, undetermined)
    return out


def _status_name(q: Quantity | None) -> str | None:
    return q.status.status if q and q.status else None


def _row(name: str, a: Quantity | None, b: Quantity | None, threshold: float) -> dict[str, Any]:
    """One row: node (a) against reference (b)."""
    unit, higher, kind = (b or a).unit, (b or a).higher_is_better, (b or a).kind  # type: ignore
    row: dict[str, Any] = {"quantity": name, "kind": kind, "unit": unit, "higher_is_better": higher,
                           "node": a.value if a else None, "reference": b.value if b else None,
                           "node_status": _status_name(a), "reference_status": _status_name(b),
                           "ratio": None, "deviation": "", "flag": ""}
    if not (a and b):
        row["flag"] = "only in reference" if b else "only in node"
        return row
    if a.undetermined or b.undetermined:
        # a term the data could not fix has no value to divide: a ratio would be noise
        row["flag"] = "not determined (" + " and ".join(
            side for side, q in (("node", a), ("reference", b)) if q.undetermined) + ")"
        return row
    row.update(judge(a, b, threshold, ("node ", "reference ")))
    return row


def judge(a: Quantity, b: Quantity, threshold: float,
          sides: tuple[str, str]) -> dict[str, Any]:
    """a (a node, a device) against b (the reference, the set's median), both with a value:
    ratio = a / b; deviation "worse" (the bad direction) or "better" when |ratio - 1| >
    threshold, else ""; flag "unverified" when either side's ceiling is not trusted, with
    "untrusted" naming each such side's status after its prefix in `sides`, else the deviation.
    compare's rows and reports.fleet's entries are judged by this one rule."""
    ratio = a.value / b.value  # type: ignore[operator]
    deviation = ""
    if abs(ratio - 1.0) > threshold:
        deviation = "worse" if (ratio < 1.0 if b.higher_is_better else ratio > 1.0) else "better"
    out: dict[str, Any] = {"ratio": ratio, "deviation": deviation, "flag": deviation}
    untrusted = [f"{side}{q.status.status}" for side, q in zip(sides, (a, b))
                 if q.status and not q.status.trusted]
    if untrusted:
        # never called better or worse silently; the gate neither passes nor fails on it
        out["flag"] = "unverified"
        out["untrusted"] = ", ".join(untrusted)
    return out


def compare_profiles(node: dict[str, Any], reference: dict[str, Any],
                     threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Rows (quantity, node, reference, ratio, statuses, flag) and the gate's verdict."""
    a, b = quantities(node), quantities(reference)
    rows = [_row(name, a.get(name), b.get(name), threshold)
            for name in list(b) + [n for n in a if n not in b]]
    worse = [r["quantity"] for r in rows if r["flag"] == "worse" and r["kind"] == "ceiling"]
    unverified = [f"{r['quantity']} ({r['untrusted']}"
                  + (f", would be {r['deviation']}" if r["deviation"] else "") + ")"
                  for r in rows if r["flag"] == "unverified"]

    def name(p: dict[str, Any]) -> str:
        return str(((p.get("provenance") or {}).get("device") or {}).get("name", "?"))

    return {"node_device": name(node), "reference_device": name(reference), "threshold": threshold,
            "rows": rows, "worse_ceilings": worse, "unverified_ceilings": unverified,
            "exit_code": 1 if worse else 0}


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"


def _with_unit(v: float | None, unit: str) -> str:
    return f"{_fmt(v)} {unit}" if v is not None else "-"


def _status_cell(r: dict[str, Any]) -> str:
    if not (r["node_status"] or r["reference_status"]):
        return "-"
    return f"{r['node_status'] or '-'} / {r['reference_status'] or '-'}"


def _flag_cell(r: dict[str, Any]) -> str:
    if r["flag"] == "unverified" and r["deviation"]:
        return f"unverified (would be {r['deviation']})"
    return r["flag"]


def print_comparison(result: dict[str, Any], console: Any = None) -> None:
    """The comparison as a console table, then the NOT GATED line and the gate's verdict."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    threshold = result["threshold"]
    table = Table(title=escape(f"{result['node_device']} vs reference {result['reference_device']} "
                               f"(flag beyond {threshold:.0%})"))
    for col in ("quantity", "kind", "node", "reference", "node / reference",
                "status (node / reference)", "flag"):
        numeric = col in ("node", "reference", "node / reference")
        table.add_column(col, justify="right" if numeric else "left")
    for r in result["rows"]:
        style = {"worse": "bold red", "better": "green", "unverified": "yellow"}.get(r["flag"], "")
        cells = [r["quantity"], r["kind"], _with_unit(r["node"], r["unit"]),
                 _with_unit(r["reference"], r["unit"]),
                 f"{r['ratio']:.3f}" if r["ratio"] is not None else "-", _status_cell(r),
                 _flag_cell(r)]
        table.add_row(*[escape(c) for c in cells], style=style)
    console.print(table)
    if result["unverified_ceilings"]:
        console.print("[yellow]NOT GATED[/yellow]: unverified or noisy on either side, neither "
                      "passed nor failed: " + escape(", ".join(result["unverified_ceilings"])))
    gated = "verified ceiling" if result["unverified_ceilings"] else "ceiling"
    if result["worse_ceilings"]:
        console.print("[bold red]FAIL[/bold red]: worse than the reference beyond "
                      f"{threshold:.0%}: " + escape(", ".join(result["worse_ceilings"])))
    else:
        console.print(f"OK: no {gated} worse than the reference beyond {threshold:.0%}")
