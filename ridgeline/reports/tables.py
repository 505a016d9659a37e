"""Tables of a profile as plain rows, rendered to markdown, HTML or a rich console table.

    rows = ceilings_table(profile)           # Table(title, headers, rows)
    print(to_markdown(rows)); Console().print(to_rich(rows))

Every table is built once as data (strings already formatted, units in the
headers or cells) and rendered three ways, so the report, the HTML and the
console never disagree. Missing sections give empty tables, never errors.

    measured / datasheet = measured value / vendor peak   (shown as a percentage)

A measured ceiling is shown with its status (verified / unverified: reason /
noisy) and spread, read only through roofline.trust; a fitted fixed cost the
data did not determine reads "not determined", never a 1e-10 us figure.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from ridgeline.datasheets import matmul_peak_TFLOPS
from ridgeline.roofline.efficiency import CURVES
from ridgeline.roofline.interconnect import COLLECTIVES
from ridgeline.roofline.efficiency import SECTION as EFFICIENCY_SECTION
from ridgeline.roofline.model import undetermined_time
from ridgeline.roofline.sections import Ceilings, ModelSection
from ridgeline.roofline.trust import NOISY_SPREAD, CeilingStatus, ceiling_statuses


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def __bool__(self) -> bool:
        return bool(self.rows)


def fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    """A number with thousands separators and its unit; '-' when absent."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value and abs(value) < 1:  # CPU-sized rates: keep three significant digits
        text = f"{value:.3g}"
    else:
        text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip()


def pct(measured: float | None, reference: float | None) -> str:
    return f"{100.0 * measured / reference:.0f}%" if measured and reference else "-"


def _sheet(profile: dict[str, Any]) -> dict[str, Any]:
    return profile.get("datasheet") or {}


def ceiling_status_by_name(profile: dict[str, Any]) -> dict[str, CeilingStatus]:
    """{"copy bandwidth": CeilingStatus, "allreduce n=2": ...}: read only through roofline.trust."""
    return {c.name: c for c in ceiling_statuses(profile)}


def status_text(c: CeilingStatus | None) -> str:
    """'verified', 'unverified', 'noisy'; '-' where none is recorded (datasheet profiles).
    The reasons are long: they go under the table (`status_notes`), not in a cell."""
    return "-" if c is None else c.status


def status_notes(statuses: dict[str, CeilingStatus], names: list[str]) -> list[str]:
    """'copy bandwidth unverified: <reason>' for each untrusted ceiling among `names`."""
    from ridgeline.roofline.trust import describe

    return [describe(statuses[n]) for n in names if n in statuses and not statuses[n].trusted]


def _half_pct(rel: Any) -> str | None:
    if isinstance(rel, bool) or not isinstance(rel, (int, float)):
        return None
    half = 50.0 * rel  # a full relative range shown as +- half of it
    return f"±{half:.1f}%" if half < 10 else f"±{half:.0f}%"


def spread_text(c: CeilingStatus | None) -> str:
    """'±3% / ±2%': samples p20-p80, then across points (SPREAD_NOTE); '-' when none."""
    spread = c.spread if c else {}
    samples = _half_pct(spread.get("samples_p20_p80"))
    across = _half_pct(spread.get("across_points"))
    if samples and across:
        return f"{samples} / {across}"
    return samples or (f"- / {across}" if across else "-")


SPREAD_NOTE = ("spread: ± half of (p80 - p20) / median of the samples (worst point) / ± half "
               "of (max - min) / median across the sizes or shapes the ceiling comes from")


def ceilings_table(profile: dict[str, Any]) -> Table:
    """Measured ceilings next to the datasheet, with measured/datasheet, status and spread."""
    ceil = Ceilings.of(profile)
    sheet = _sheet(profile)
    status = ceiling_status_by_name(profile)
    table = Table("Ceilings: measured against datasheet",
                  ["ceiling", "measured", "datasheet", "measured / datasheet", "status", "spread",
                   "where"])
    peak_bw = sheet.get("memory_bandwidth_GBps")
    for kernel, value in sorted(ceil.bandwidth_GBps.items()):
        if value is None:
            continue
        d = ceil.bandwidth_detail_of(kernel)
        where = d.get("provider") or "-"
        if d.get("plateau_min_bytes"):
            where += (f", {d.get('n_points', '?')} sizes from "
                      f"{d['plateau_min_bytes'] / 2**20:,.0f} MiB")
        name = f"{kernel} bandwidth"
        table.rows.append([name, fmt(value, 0, "GB/s"), fmt(peak_bw, 0, "GB/s"),
                           pct(value, peak_bw), status_text(status.get(name)),
                           spread_text(status.get(name)), where])
    for dtype, value in sorted(ceil.matmul_TFLOPS.items()):
        if value is None:
            continue
        d = ceil.matmul_detail_of(dtype)
        # a datasheet lists the fp8 rate once: fnuz (MI300) reads fp8_e4m3's, as the model does
        peak = matmul_peak_TFLOPS(sheet, dtype)
        where = (f"{d.get('provider') or '-'} M={d.get('m')} N={d.get('n')} K={d.get('k')}"
                 if d else "-")
        name = f"{dtype} matmul"
        table.rows.append([name, fmt(value, 1, "TFLOP/s"), fmt(peak, 1, "TFLOP/s"),
                           pct(value, peak), status_text(status.get(name)),
                           spread_text(status.get(name)), where])
    notes = [SPREAD_NOTE] if status else []
    if sheet:
        notes.append(f"datasheet: {sheet.get('name') or ''} ({sheet.get('source') or 'vendor'}), "
                     "not measured")
    else:  # no datasheet (the CPU, an unknown GPU): two empty columns only cost width
        table.title = "Ceilings: measured"
        table.headers = [h for i, h in enumerate(table.headers) if i not in (2, 3)]
        table.rows = [[c for i, c in enumerate(row) if i not in (2, 3)] for row in table.rows]
    table.note = "; ".join(notes)
    return table


def fitted_us(model: ModelSection, field: str, digits: int = 2) -> str:
    """A fitted fixed cost in us, or 'not determined' when the fit marked it so or it sits
    below what a timer resolves (profiles fitted before "undetermined" was recorded).
    `field` is "latency_floor_us", "overhead_us" or "overhead.<mode>_us"."""
    top, _, mode = field.partition(".")
    value = (model.overhead or {}).get(mode) if mode else getattr(model, top)
    if undetermined_time(value, field, model.undetermined or []):
        return "not determined"
    return fmt(value, digits, "us")


def model_table(profile: dict[str, Any]) -> Table:
    """Fitted roofline parameters per compute dtype, ridge points measured vs datasheet."""
    model = ModelSection.of(profile)
    table = Table("Fitted roofline model",
                  ["dtype", "peak (fit)", "best measured", "datasheet", "flops_half",
                   "ridge point (fit)", "ridge point (ceilings)", "ridge point (datasheet)",
                   "wave tiles"])
    ridge = model.ridge_point_FLOP_per_byte or {}
    for dtype, p in sorted(model.matmul.items()):
        r = ridge.get(dtype) or {}
        wave = p.get("wave")
        half = p.get("flops_half")
        undetermined = model.is_undetermined(f"matmul.{dtype}.flops_half")
        table.rows.append([
            dtype, fmt(p.get("peak_TFLOPS"), 1, "TFLOP/s"),
            fmt(p.get("best_measured_TFLOPS"), 1, "TFLOP/s"),
            fmt(p.get("datasheet_TFLOPS"), 1, "TFLOP/s"),
            "not determined" if undetermined else
            fmt(half / 1e9, 2, "GFLOP") if half is not None else "-",
            fmt(r.get("measured"), 0, "FLOP/B"), fmt(r.get("ceilings"), 0, "FLOP/B"),
            fmt(r.get("datasheet"), 0, "FLOP/B"),
            f"{wave['tile_m']}x{wave['tile_n']} on {wave['slots']}" if wave else "-"])
    if model.raw:
        bw = model.bandwidth or {}
        lat = model.latency or {}
        p = model.overlap_p
        # per-dtype streaming rates where the fit kept them; the shared one is the reference's
        own = model.own_bandwidths_GBps()
        per_dtype = "".join(f", {fmt(v, 0, 'GB/s')} for {d}" for d, v in sorted(own.items()))
        shared_for = f" for {bw.get('reference_dtype') or 'the other dtypes'}" if own else ""
        parts = [f"bandwidth {fmt(model.bandwidth_GBps, 0, 'GB/s')}{shared_for}{per_dtype} "
                 f"(from {bw.get('source', '-')}; "
                 f"gemv plateau {fmt(bw.get('gemv_plateau_GBps'), 0, 'GB/s')}, "
                 f"hbm read {fmt(bw.get('hbm_read_GBps'), 0, 'GB/s')})",
                 f"latency floor {fitted_us(model, 'latency_floor_us', 1)} "
                 f"(graph {fmt(lat.get('graph_us'), 1, 'us')}, "
                 f"eager {fmt(lat.get('eager_us'), 1, 'us')})",
                 f"per-kernel overhead {fitted_us(model, 'overhead_us')} "
                 f"(graph-timed records {fitted_us(model, 'overhead.graph_us')}, "
                 f"event-timed {fitted_us(model, 'overhead.eager_us')})",
                 f"overlap exponent p = {'inf (max)' if p is None else fmt(p, 1)}"]
        table.note = "; ".join(parts) + ". Form: " + str(model.form or "-")
    return table


def fit_error_table(profile: dict[str, Any]) -> Table:
    fe = ModelSection.of(profile).fit_error or {}
    target = fe.get("target") or {}
    table = Table("Fit error on the model's own records",
                  ["probe", "records", "median error", "worst error", "worst case"])
    for probe, e in sorted(fe.items()):
        if probe == "target" or not isinstance(e, dict) or "median" not in e:
            continue
        w = e.get("worst_case") or {}
        case = (f"{w.get('dtype')} M={w.get('m')} N={w.get('n')} K={w.get('k')} "
                f"({w.get('provider')}): measured {fmt(w.get('measured_ms'), 4, 'ms')}, "
                f"predicted {fmt(w.get('predicted_ms'), 4, 'ms')}" if w else "-")
        table.rows.append([probe, str(e.get("n", "-")), f"{100 * e['median']:.1f}%",
                           f"{100 * e['worst']:.1f}%", case])
    if target:
        verdict = "meets" if fe.get("meets_target") else "misses"
        table.note = (f"target: median <= {100 * target.get('median_max', 0):.0f}%, worst <= "
                      f"{100 * target.get('worst_max', 0):.0f}% ({verdict} it); "
                      f"{fe.get('statistic', '')}")
    return table


def efficiency_table(profile: dict[str, Any]) -> Table:
    """The measured kernel-efficiency curves (roofline.efficiency), one row per curve and dtype:
    the range of t_roofline / t_measured over the measured shapes, and where it is lowest."""
    section = profile.get(EFFICIENCY_SECTION) or {}
    table = Table("Measured kernel efficiency (roofline time / measured time)",
                  ["kernel", "dtype", "shapes", "efficiency min", "at", "efficiency max", "at",
                   "providers", "status"])
    for name, spec in CURVES.items():
        for dtype, curve in sorted((section.get(name) or {}).items()):
            points = [p for p in curve.get("points") or [] if isinstance(p, dict)
                      and isinstance(p.get("efficiency"), (int, float))]
            if not points:
                continue
            lo = min(points, key=lambda p: p["efficiency"])
            hi = max(points, key=lambda p: p["efficiency"])

            axes = curve.get("axes") or spec.axes  # as stored (a profile may predate an axis)

            def where(p: dict[str, Any]) -> str:
                def show(a: str, v: Any) -> str:
                    if not isinstance(v, (int, float)):
                        return f"{a}={v}"
                    if a == "kv_bytes_per_seq":
                        return f"KV {v / 2**20:.3g} MiB/seq"
                    return f"{a}={v:g}"
                return " ".join(show(a, p.get(a)) for a in axes)

            table.rows.append([spec.what, dtype, str(len(points)), f"{lo['efficiency']:.2f}",
                               where(lo), f"{hi['efficiency']:.2f}", where(hi),
                               ", ".join(curve.get("providers") or []), _curve_status(curve)])
    table.note = ("the planner divides these kernels' roofline times by the curve, "
                  "interpolated in log2 of the shape and held at its edges; above 1 is used as 1; "
                  "status: roofline.trust.curve_trust")
    return table


def _curve_status(curve: dict[str, Any]) -> str:
    """'verified', 'noisy', ... with how many shapes scattered, even when too few to flag it;
    'published' for a datasheet's published curve."""
    if curve.get("published"):
        return "published"
    status = str(curve.get("status") or "unverified (no status recorded)")
    spread = curve.get("spread") if isinstance(curve.get("spread"), dict) else {}
    noisy, n = spread.get("noisy_points"), spread.get("points")
    if isinstance(noisy, int) and isinstance(n, int) and noisy:
        status += f" ({noisy} of {n} shapes scatter > {NOISY_SPREAD:.0%})"
    return status


def gemv_best_table(profile: dict[str, Any]) -> Table:
    rows = ModelSection.of(profile).gemv_best_provider or []
    table = Table("Decode GEMV: best provider per case",
                  ["dtype", "K x N", "batch", "best provider", "time", "weight GB/s", "TFLOP/s",
                   "runner-up slower by"])
    for r in rows:
        slow = r.get("runner_up_slowdown")
        table.rows.append([r["dtype"], f"{r['k']}x{r['n']}", str(r["batch"]), r["provider"],
                           fmt(r.get("time_ms_median"), 4, "ms"), fmt(r.get("bw_GBps"), 0),
                           fmt(r.get("TFLOPS"), 2), f"{100 * (slow - 1):.0f}%" if slow else "-"])
    return table


def interconnect_table(profile: dict[str, Any]) -> Table:
    ic = profile.get("interconnect") or {}
    status = ceiling_status_by_name(profile)
    table = Table("Interconnect", ["what", "ranks", "bandwidth", "alpha", "link", "source",
                                   "status"])
    host = ic.get("host_link_GBps") or {}
    for direction in sorted(k for k, v in host.items() if isinstance(v, (int, float))):
        table.rows.append([f"host link {direction}", "-", fmt(host[direction], 1, "GB/s"), "-",
                           "PCIe/host", str(host.get("source", "measured")), "-"])
    for name in COLLECTIVES:
        per_world = ic.get(name)
        if not isinstance(per_world, dict):
            continue
        # world sizes as numbers: 2, 4, 8, 16 (not "16" before "2")
        for world, fit in sorted(per_world.items(),
                                 key=lambda kv: (not str(kv[0]).isdigit(), int(kv[0])
                                                 if str(kv[0]).isdigit() else 0, str(kv[0]))):
            if not isinstance(fit, dict):
                continue
            table.rows.append([name, str(world), fmt(fit.get("busbw_GBps"), 1, "GB/s busbw"),
                               fmt(fit.get("alpha_us"), 1, "us"), str(fit.get("link", "-")),
                               str(fit.get("source", "-")),
                               status_text(status.get(f"{name} n={world}"))])
    p2p = ic.get("p2p") if isinstance(ic.get("p2p"), dict) else {}
    for pair in p2p.get("pairs") or []:
        if isinstance(pair, dict):
            table.rows.append([f"p2p {pair.get('src')} -> {pair.get('dst')}", "2",
                               fmt(pair.get("bw_GBps"), 1, "GB/s"),
                               fmt(pair.get("latency_us"), 1, "us"), str(pair.get("path") or "-"),
                               str(p2p.get("source", "measured")), "-"])
    inter = ic.get("inter_node_GBps")
    if isinstance(inter, (int, float)) and not isinstance(inter, bool):
        table.rows.append(["inter-node link", "2", fmt(inter, 1, "GB/s"), "-", "between nodes",
                           "measured", "-"])
    if isinstance(ic.get("all_to_all"), dict) and ic["all_to_all"]:
        table.note = ("all_to_all (expert parallelism's collective) is measured, not used by the "
                      "planner yet: expert parallelism is not modelled")
    return table


def validation_tables(validation: dict[str, Any]) -> list[Table]:
    """Summary per phase and every measured point of a validation.json."""
    summary = Table("Validation summary: predicted against measured",
                    ["phase", "median error (profile)", "worst error (profile)",
                     "median error (datasheet)", "worst error (datasheet)"])
    keys = ("median_error_profile", "worst_error_profile", "median_error_datasheet",
            "worst_error_datasheet")
    for phase, s in sorted((validation.get("summary") or {}).items()):
        if isinstance(s, dict):
            summary.rows.append([phase] + [f"{100 * s[k]:.1f}%" if s.get(k) is not None else "-"
                                           for k in keys])
    v = validation
    summary.note = (f"model {v.get('model', '-')}, weights {v.get('weights', '-')}, "
                    f"device {v.get('device', '-')}, layers measured "
                    f"{v.get('layers_measured', '-')}/{v.get('layers_total', '-')}"
                    + (" (scaled to the full depth)" if v.get("scaled") else ""))
    points = Table("Validation points", ["phase", "mode", "batch", "context", "measured",
                                         "predicted (profile)", "error", "predicted (datasheet)",
                                         "error (datasheet)", "bound"])
    for p in validation.get("points") or []:
        def ms(v):
            return fmt(v * 1e3, 3, "ms") if isinstance(v, (int, float)) else "-"

        def err(v):
            return f"{100 * v:+.1f}%" if isinstance(v, (int, float)) else "-"

        points.rows.append([str(p.get("phase")), str(p.get("mode")), str(p.get("batch")),
                            str(p.get("context")), ms(p.get("measured_s")),
                            ms(p.get("predicted_profile_s")),
                            err(p.get("error_profile")), ms(p.get("predicted_datasheet_s")),
                            err(p.get("error_datasheet")), str(p.get("bound", "-"))])
    return [summary, points]


# ---------------------------------------------------------------- renderings

def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.headers) + " |",
             "|" + "|".join("---" for _ in table.headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"*{_md_cell(table.note)}*"]
    return "\n".join(lines)


def to_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in table.rows)
    note = f"<p class=\"note\">{html.escape(table.note)}</p>" if table.note else ""
    return (f"<table><caption>{html.escape(table.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>{note}")


def to_rich(table: Table):
    from rich.table import Table as RichTable

    out = RichTable(title=table.title, caption=table.note or None)
    for h in table.headers:
        out.add_column(h)
    for row in table.rows:
        out.add_row(*[str(c) for c in row])
    return out
