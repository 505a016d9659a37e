"""Render a validation result: console table, validation.json, validation.md, validation.png.

The result dict is the validation.json document (kind "ridgeline-validation"):
model, weights, device, profile, layers_measured, layers_total, scaled, points
(phase, mode, batch, context, measured_s, predicted_profile_s,
predicted_datasheet_s, error_profile, error_datasheet, bound, ...), summary
(per phase: median/worst error against the profile and the datasheet), plus
summary_by_mode, skipped points with their reasons, notes and provenance.
A TP run (`tp` > 1) adds to each point the all-reduce on both sides (allreduce_s,
allreduce_share measured; predicted_allreduce_s, predicted_allreduce_share,
allreduce_source) and `summary_allreduce`; its table gains the two share columns.
read_validation reads one back (`ridgeline report` includes it).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from ridgeline.outputs import atomic_write_bytes, atomic_write_text
from ridgeline.roofline.profile import json_safe
from ridgeline.validation import drift

VALIDATION_KIND = "ridgeline-validation"
VALIDATION_SCHEMA_VERSION = 1


def read_validation(path: Path) -> dict[str, Any]:
    """A validation.json as a dict; OSError when unreadable, ValueError when it is not one."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("kind") != VALIDATION_KIND:
        raise ValueError(f"'kind' is not {VALIDATION_KIND!r}")
    return data


def point_label(p: dict[str, Any]) -> str:
    if p["phase"] == "decode":
        return f"decode b={p['batch']} ctx={p['context']}"
    return f"prefill b={p['batch']} in={p['context']}"


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1.0:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def fmt_error(err: float | None) -> str:
    return "-" if err is None else f"{100 * err:.1f}%"


def fmt_share(share: float | None, seconds: float | None) -> str:
    """An all-reduce share of the step and its time: "23.1% (41.2 us)"."""
    if share is None:
        return "-"
    return f"{100 * share:.1f}% ({fmt_time(seconds)})"


def is_tp(result: dict[str, Any]) -> bool:
    return int(result.get("tp") or 1) > 1


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """point, mode, measured, predicted (profile), error, predicted (datasheet), error, bound;
    a TP run adds the all-reduce share measured (after measured) and predicted (after
    the profile prediction)."""
    rows = []
    tp = is_tp(result)
    for p in result["points"]:
        label = (point_label(p) + (" *" if p.get("scaled") else "")
                 + ("" if p.get("finite", True) else " (non-finite)")
                 + (" (noisy)" if p.get("noisy") else ""))
        row = [label, p["mode"], fmt_time(p["measured_s"]),
               fmt_time(p["predicted_profile_s"]),
               fmt_error(p["error_profile"]), fmt_time(p["predicted_datasheet_s"]),
               fmt_error(p["error_datasheet"]), p.get("bound") or "-"]
        if tp:  # shares only (the seconds are in the JSON and the summary lines)
            row.insert(3, fmt_error(p.get("allreduce_share")))
            row.insert(5, fmt_error(p.get("predicted_allreduce_share")))
        rows.append(row)
    return rows


TABLE_COLUMNS = ["point", "mode", "measured", "predicted (profile)", "error",
                 "predicted (datasheet)", "error", "bound"]
TP_TABLE_COLUMNS = ["point", "mode", "measured", "all-reduce share", "predicted (profile)",
                    "all-reduce share (predicted)", "error", "predicted (datasheet)", "error",
                    "bound"]


def columns(result: dict[str, Any]) -> list[str]:
    return TP_TABLE_COLUMNS if is_tp(result) else TABLE_COLUMNS


def tp_suffix(result: dict[str, Any]) -> str:
    """", TP=2 (nccl)" after a TP run's title; nothing otherwise."""
    return f", TP={result['tp']} ({result.get('backend') or '?'})" if is_tp(result) else ""


def title(result: dict[str, Any]) -> str:
    return f"{result['model']} {result['weights']} on {result['device']}" + tp_suffix(result)


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for phase, s in result["summary"].items():
        if not s.get("n_points"):
            continue
        noisy = f", {s['n_noisy']} noisy" if s.get("n_noisy") else ""
        line = (f"{phase} ({s.get('mode')}, {s['n_points']} points{noisy}): profile error median "
                f"{fmt_error(s['median_error_profile'])}, "
                f"worst {fmt_error(s['worst_error_profile'])}")
        if s.get("median_error_datasheet") is not None:
            line += (f"; datasheet error median {fmt_error(s['median_error_datasheet'])}, "
                     f"worst {fmt_error(s['worst_error_datasheet'])}")
        lines.append(line)
    return lines + allreduce_lines(result)


def allreduce_lines(result: dict[str, Any]) -> list[str]:
    """A TP run's all-reduce share per phase, measured and predicted (none otherwise)."""
    return [f"{phase} all-reduce ({a.get('mode')}, {a['n_points']} points): share of "
            f"the step measured median "
            f"{fmt_share(a['median_share_measured'], a['median_allreduce_s_measured'])}, "
            f"predicted median "
            f"{fmt_share(a['median_share_predicted'], a['median_allreduce_s_predicted'])}"
            f" [{a.get('allreduce_source')}]"
            for phase, a in (result.get("summary_allreduce") or {}).items()]


def print_result(result: dict[str, Any], console) -> None:
    from rich.table import Table

    cols = columns(result)
    table = Table(title=f"ridgeline validate: {title(result)}")
    for i, col in enumerate(cols):
        table.add_column(col, justify="left" if i in (0, 1, len(cols) - 1) else "right")
    for row in table_rows(result):
        table.add_row(*row)
    console.print(table)
    if result.get("scaled"):
        console.print(f"* measured {result['layers_measured']} of {result['layers_total']} layers "
                      "where marked, scaled to the full depth")
    for line in summary_lines(result):
        console.print(line)
    for line in drift.lines(result.get("drift")):
        console.print(line[2:])   # without the markdown bullet
    for s in result.get("skipped", []):
        console.print(f"[dim]skipped: {point_label(s)} {s['mode']}: {s['reason']}[/dim]")
    for note in result.get("notes", []):
        console.print(f"[yellow]note: {note}[/yellow]")


clean = json_safe  # kept as this module's name for callers


def write_json(result: dict[str, Any], path: Path) -> Path:
    # atomic: a Ctrl-C or a full disk never leaves half a file
    return atomic_write_text(path, json.dumps(clean(result), indent=1, allow_nan=False) + "\n")


def write_markdown(result: dict[str, Any], path: Path) -> Path:
    prov = result.get("provenance", {})
    heading = f"{result['model']} ({result['weights']}) on {result['device']}" + tp_suffix(result)
    out = [f"# Validation: {heading}", "",
           f"- profile: `{result['profile']}`",
           f"- layers: {result['layers_measured']} of {result['layers_total']} measured"
           + (" (scaled to the full depth where marked *)" if result["scaled"] else ""),
           f"- timer: {prov.get('timer', '?')}; statistic: "
           f"{prov.get('statistic', 'median of samples')}",
           f"- command: `{' '.join(prov.get('command_line', []))}`",
           f"- when: {prov.get('timestamp_utc', '?')}; "
           f"ridgeline {prov.get('ridgeline_version', '?')}"
           f"; torch {prov.get('versions', {}).get('torch', '?')}",
           *drift.lines(result.get("drift")),
           "", "error = |predicted - measured| / measured", ""]
    if not result.get("complete", True):
        out += ["**Incomplete** (interrupted): only the finished points are shown.", ""]
    out += ["## Summary", "", "| phase | mode | points | profile median | profile worst | "
            "datasheet median | datasheet worst |", "|---|---|---:|---:|---:|---:|---:|"]
    for phase, s in result["summary"].items():
        noisy = f" ({s['n_noisy']} noisy)" if s.get("n_noisy") else ""
        out.append(f"| {phase} | {s.get('mode') or '-'} | {s.get('n_points', 0)}{noisy} | "
                   f"{fmt_error(s['median_error_profile'])} | "
                   f"{fmt_error(s['worst_error_profile'])} | "
                   f"{fmt_error(s['median_error_datasheet'])} | "
                   f"{fmt_error(s['worst_error_datasheet'])} |")
    cols = columns(result)
    out += ["", "## Points", "", "| " + " | ".join(cols) + " |",
            "|---|---|" + "---:|" * (len(cols) - 3) + "---|"]
    for row in table_rows(result):
        out.append("| " + " | ".join(row) + " |")
    if result.get("summary_allreduce"):
        out += ["", "all-reduce share = all-reduce time / step time: measured as the step's time "
                "less the same step with its all-reduces as no-ops; predicted as the planner's "
                "StepTime.allreduce_s / time_s"]
        out += [f"- {line}" for line in allreduce_lines(result)]
    if result.get("skipped"):
        out += ["", "## Skipped", ""]
        out += [f"- {point_label(s)} {s['mode']}: {s['reason']}" for s in result["skipped"]]
    if result.get("notes"):
        out += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    if result.get("plot"):
        out += ["", f"![predicted against measured]({result['plot']})"]
    return atomic_write_text(path, "\n".join(out) + "\n")


def write_plot(result: dict[str, Any], path: Path) -> Path | None:
    """Predicted against measured (log-log) with y = x; o = profile, x = datasheet."""
    points = [p for p in result["points"] if p.get("finite", True)]
    if not points:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Figure + Agg canvas, not pyplot: no global state, no GUI backend, a faster import
    fig = Figure(figsize=(6.4, 5.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=0.93)
    colors = {"decode": "tab:blue", "prefill": "tab:orange"}
    values = []
    for phase in ("decode", "prefill"):
        for mode, fill in (("graph", True), ("eager", False)):
            sel = [p for p in points if p["phase"] == phase and p["mode"] == mode]
            if not sel:
                continue
            prof = [p for p in sel if p.get("predicted_profile_s")]  # TP: may have none
            xs = [p["measured_s"] * 1e3 for p in prof]
            ys = [p["predicted_profile_s"] * 1e3 for p in prof]
            values += xs + ys
            if prof:
                ax.scatter(xs, ys, marker="o", s=36, label=f"{phase} {mode}: profile",
                           facecolors=colors[phase] if fill else "none", edgecolors=colors[phase])
            ds = [(p["measured_s"] * 1e3, p["predicted_datasheet_s"] * 1e3) for p in sel
                  if p.get("predicted_datasheet_s")]
            if ds:
                values += [v for pair in ds for v in pair]
                ax.scatter([a for a, _ in ds], [b for _, b in ds], marker="x", s=36,
                           color=colors[phase], alpha=0.9 if fill else 0.5,
                           label=f"{phase} {mode}: datasheet")
    values = [v for v in values if v > 0]
    if not values:
        return None
    lo, hi = min(values) / 1.5, max(values) * 1.5
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="predicted = measured")
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="grey", alpha=0.15,
                    label="within 10%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured time (ms, median)")
    ax.set_ylabel("predicted time (ms)")
    ax.set_title(title(result), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    buf = io.BytesIO()  # rendered in memory, then written atomically like the other two files
    fig.savefig(buf, format="png", dpi=120)
    return atomic_write_bytes(path, buf.getvalue())


def write_all(result: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """validation.png, .json and .md in out_dir (created, checked and locked beforehand by
    ridgeline.outputs.prepare_output_dir)."""
    written: dict[str, Path] = {}
    plot = write_plot(result, out_dir / "validation.png")
    if plot:
        result["plot"] = plot.name
        written["png"] = plot
    written["json"] = write_json(result, out_dir / "validation.json")
    written["md"] = write_markdown(result, out_dir / "validation.md")
    return written
