"""Write a profile's report: report.md with PNG figures beside it, and a self-contained
report.html (the same content, figures embedded as base64 PNG).

    paths = write_report(profile, "ridgeline-out")   # [report.md, report.html, *.png]
    ridgeline report PROFILE.json [-o DIR]

The report is built once as a list of blocks (headings, paragraphs, lists,
tables, figures) and rendered twice, so markdown and HTML say the same thing.
Sections: status and provenance (a boxed warning listing every ceiling that is
not verified), ceilings (measured vs datasheet, status and spread), the
roofline chart, the fitted model and its error on its own records, bandwidth
vs working set, matmul vs size, decode GEMV vs batch, interconnect (when
measured), validation (when a validation.json is given), serving simulation
(when a simulation.json is given, or sits in the report's folder: written by
`ridgeline simulate -o DIR`). A section without data says so instead of failing.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ridgeline.reports import plots, tables
from ridgeline.reports.tables import Table, fmt
from ridgeline.roofline.sections import ModelSection
from ridgeline.roofline.trust import describe, untrusted_ceilings
from ridgeline.telemetry import throttle_reasons

SIMULATION_KIND = "ridgeline-simulation"
SIMULATION_JSON, SIMULATION_PNG = "simulation.json", "simulation.png"
_FIND = object()   # write_report's default: a simulation.json in the report's folder

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1180px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .8em 0; font-size: 90%; }
caption { font-weight: bold; text-align: left; padding: .3em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f2f2f2; }
td:nth-child(n+2) { font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; }
figure { margin: 1em 0; } figcaption { font-size: 90%; color: #555; }
.note { font-size: 85%; color: #555; }
.warn { color: #8a4b00; } .bad { color: #a00; font-weight: bold; } .ok { color: #060; }
.warnbox { border: 2px solid #c60; background: #fff4e5; padding: .3em 1em; margin: 1em 0; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


@dataclass
class Block:
    kind: str          # heading | para | list | table | figure | warning (text, items)
    content: Any
    level: int = 2


class Report:
    def __init__(self) -> None:
        self.blocks: list[Block] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(Block("heading", text, level))

    def para(self, text: str) -> None:
        self.blocks.append(Block("para", text))

    def items(self, items: list[str]) -> None:
        if items:
            self.blocks.append(Block("list", list(items)))

    def warning(self, text: str, items: list[str]) -> None:
        """A boxed warning with its list: what a reader must not miss."""
        self.blocks.append(Block("warning", (text, list(items))))

    def table(self, table: Table, empty: str | None = None) -> None:
        if table:
            self.blocks.append(Block("table", table))
        elif empty:
            self.para(empty)

    def figure(self, path: Path | None, caption: str, empty: str) -> None:
        if path is None:
            self.para(empty)
        else:
            self.blocks.append(Block("figure", (Path(path), caption)))

    def to_markdown(self) -> str:
        out: list[str] = []
        for b in self.blocks:
            if b.kind == "heading":
                out.append("#" * b.level + " " + b.content)
            elif b.kind == "para":
                out.append(b.content)
            elif b.kind == "list":
                out.append("\n".join(f"- {item}" for item in b.content))
            elif b.kind == "table":
                out.append(tables.to_markdown(b.content))
            elif b.kind == "figure":
                path, caption = b.content
                out.append(f"![{caption}]({path.name})\n\n*{caption}*")
            elif b.kind == "warning":
                text, items = b.content
                out.append("\n".join([f"> **WARNING: {text}**", ">"]
                                     + [f"> - {item}" for item in items]))
        return "\n\n".join(out) + "\n"

    def to_html(self, title: str) -> str:
        body: list[str] = []
        for b in self.blocks:
            if b.kind == "heading":
                body.append(f"<h{b.level}>{html.escape(b.content)}</h{b.level}>")
            elif b.kind == "para":
                body.append(f"<p>{html.escape(b.content)}</p>")
            elif b.kind == "list":
                lis = "".join(f"<li>{html.escape(i)}</li>" for i in b.content)
                body.append(f"<ul>{lis}</ul>")
            elif b.kind == "table":
                body.append(tables.to_html(b.content))
            elif b.kind == "warning":
                text, items = b.content
                lis = "".join(f"<li>{html.escape(i)}</li>" for i in items)
                body.append(f"<div class=\"warnbox\"><p class=\"warn\"><strong>WARNING: "
                            f"{html.escape(text)}</strong></p><ul>{lis}</ul></div>")
            elif b.kind == "figure":
                path, caption = b.content
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                alt = html.escape(caption)
                body.append(f"<figure><img alt=\"{alt}\" src=\"data:image/png;base64,{data}\">"
                            f"<figcaption>{alt}</figcaption></figure>")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
                + "\n".join(body) + "\n</body></html>\n")


def _provenance_items(profile: dict[str, Any]) -> list[str]:
    prov = profile.get("provenance") or {}
    dev = prov.get("device") or {}
    items = []
    cc = dev.get("compute_capability")
    arch = f"sm_{str(cc).replace('.', '')}" if cc else dev.get("gfx_arch") or "-"
    mem = dev.get("memory_bytes")
    l2 = dev.get("l2_cache_bytes")
    items.append(f"device: {dev.get('name', '?')} ({dev.get('id', '?')}, {dev.get('kind', '?')}), "
                 f"{fmt(mem / 2**30 if mem else None, 1, 'GiB')}, arch {arch}, "
                 f"{dev.get('multiprocessors') or '-'} SMs/CUs/cores, "
                 f"L2/LLC {fmt(l2 / 2**20 if l2 else None, 0, 'MiB')}")
    items.append(f"driver {dev.get('driver_version') or '-'}, "
                 f"runtime {dev.get('runtime_version') or '-'}"
                 + (f", PCI {dev['pci_bus_id']}" if dev.get("pci_bus_id") else ""))
    versions = prov.get("versions") or {}
    if versions:
        items.append("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if v))
    telemetry = prov.get("telemetry_at_start") or {}
    if telemetry:
        keys = [k for k in sorted(telemetry) if isinstance(telemetry[k], (int, float, str))][:14]
        items.append("telemetry at start: " + ", ".join(f"{k} {telemetry[k]}" for k in keys))
    cmd = prov.get("command_line")
    if cmd:
        items.append("command: " + (" ".join(map(str, cmd)) if isinstance(cmd, list) else str(cmd)))
    sweep = prov.get("sweep") or {}
    if sweep:
        items.append(f"sweep: probes {', '.join(sweep.get('probes') or []) or '-'}"
                     + (" (quick)" if sweep.get("quick") else ""))
    duration = prov.get("duration_s")
    items.append(f"measured {prov.get('timestamp_utc', '?')} on {prov.get('hostname', '?')}"
                 + (f" in {duration:.0f} s" if isinstance(duration, (int, float)) else "")
                 + f"; ridgeline {prov.get('ridgeline_version', '?')}, "
                   f"schema {profile.get('schema_version')}, "
                   f"method {profile.get('method_version')}")
    return items


def _status_items(profile: dict[str, Any]) -> list[str]:
    items = []
    if profile.get("complete"):
        items.append("complete: every planned case ran")
    else:
        reason = profile.get("incomplete_reason") or "the sweep did not finish"
        items.append(f"INCOMPLETE: {reason}")
    throttled: dict[str, list[dict[str, Any]]] = {}
    for r in profile.get("records") or []:
        if r.get("throttled"):
            throttled.setdefault(str(r.get("probe")), []).append(r)
    if profile.get("throttled") or throttled:
        items.append("WARNING: the device throttled during the run (clocks or power); "
                     "ceilings may be below what a cool device gives")
    for probe, recs in sorted(throttled.items()):
        reasons = throttle_reasons(recs)
        items.append(f"throttled: {len(recs)} {probe} record(s)"
                     + (f" ({', '.join(reasons)})" if reasons else ""))
    for w in profile.get("warnings") or []:
        items.append(f"warning: {w}")
    for flag in (profile.get("ceilings") or {}).get("flags") or []:
        items.append(f"flag: {flag}")
    return items


def _waived_table(profile: dict[str, Any]) -> Table:
    table = Table("Waived cases (could not run here)", ["probe", "provider", "dtype", "reason"])
    seen = set()
    for w in profile.get("waived") or []:
        row = (str(w.get("probe", "")), str(w.get("provider") or "-"), str(w.get("dtype") or "-"),
               str(w.get("reason", "")))
        if row not in seen:
            seen.add(row)
            table.rows.append(list(row))
    return table


def _gemv_wins(profile: dict[str, Any]) -> str | None:
    rows = ModelSection.of(profile).gemv_best_provider or []
    if not rows:
        return None
    wins: dict[str, dict[str, int]] = {}
    for r in rows:
        wins.setdefault(r["dtype"], {}).setdefault(r["provider"], 0)
        wins[r["dtype"]][r["provider"]] += 1
    return "Best decode GEMV provider, cases won: " + "; ".join(
        f"{d}: " + ", ".join(f"{p} {n}" for p, n in sorted(w.items(), key=lambda kv: -kv[1]))
        for d, w in sorted(wins.items()))


def load_simulation(path: str | Path, required: bool = False) -> dict[str, Any] | None:
    """A simulation.json (`ridgeline simulate -o DIR` or `--json`) as a dict; None when absent.
    Unreadable: one RidgelineError when `required`, else a dict {"error": why} that the report
    shows in place of the section (a broken side file must not cost the whole report)."""
    import json

    from ridgeline.errors import RidgelineError

    path = Path(path)
    if not path.is_file():
        if required:
            raise RidgelineError(f"simulation file not found: {path}")
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("kind") != SIMULATION_KIND \
                or not data.get("points"):
            raise ValueError(f"'kind' is not {SIMULATION_KIND!r} or it holds no points")
    except (OSError, ValueError) as exc:
        if required:
            raise RidgelineError(f"{path} is not a ridgeline simulation: {exc}") from None
        return {"error": f"{path.name} was not read: {exc}"}
    return data


def _simulation_section(rep: Report, sim: dict[str, Any], figure: Path | None,
                        failure: str | None, device: str) -> None:
    from ridgeline.reports.curve import curve_tables

    rep.heading("Serving simulation: the latency-throughput curve")
    if sim.get("error"):
        rep.para(f"No simulation shown: {sim['error']}")
        return
    hw, model, prec, sched = sim["hardware"], sim["model"], sim["precision"], sim["scheduler"]
    load = sim["load"]
    rep.para(f"{model['name']} (weights {prec['weights']}, KV {prec['kv_cache']}) at "
             f"TP={sim['tp']} on {hw['name']} [{sim['basis_label']}]: one replica of a "
             f"continuous-batching engine (vLLM v1 scheduler: {sched['max_num_batched_tokens']:,} "
             f"tokens a step, at most {sched['max_num_seqs']:,} sequences, "
             f"{sched['kv_tokens']:,} KV tokens), every step timed by the planner's step model; "
             f"{load['requests_per_point']:,} requests a load point. Written by `ridgeline "
             f"simulate` ({sim.get('ridgeline_version', '?')}).")
    if sim["basis"] == "measured" and hw.get("name") != device:
        rep.warning("this simulation ran on another device's profile",
                    [f"simulated on {hw['name']}, this report is of {device}"])
    elif sim["basis"] != "measured":
        rep.items([f"basis: {sim['basis_label']}, not this profile's measurements"])
    rep.para(sim.get("summary") or "")
    for t in curve_tables(sim, sim.get("measured") or []):
        rep.table(t)
    rep.figure(figure, "Simulated latency-throughput curve: output tokens/s, TTFT and ITL "
                       "(P50, P99) against load, SLOs dashed, knee dotted, SLO operating point "
                       "green", f"Figure not drawn: {failure}" if failure else
               "No simulation figure.")
    rep.items([f"note: {n}" for n in sim.get("notes") or []])


def build_report(profile: dict[str, Any], figures: dict[str, Path],
                 validation: dict[str, Any] | None = None,
                 failures: dict[str, str] | None = None,
                 simulation: dict[str, Any] | None = None) -> Report:
    failures = failures or {}
    rep = Report()
    name = plots._device_name(profile)
    rep.heading(f"ridgeline report: {name}", 1)
    rep.heading("Status and provenance")
    untrusted = untrusted_ceilings(profile)
    if untrusted:
        rep.warning(f"{len(untrusted)} ceiling(s) not verified: read them as estimates; "
                    "`ridgeline plan` refuses this profile unless given --allow-unverified",
                    [describe(c) for c in untrusted])
    rep.items(_status_items(profile))
    rep.items(_provenance_items(profile))
    rep.table(_waived_table(profile))

    rep.heading("Ceilings")
    rep.table(tables.ceilings_table(profile), "No measured ceilings in this profile.")

    caption = {k: c for k, (_f, c) in plots.FIGURES.items()}

    def figure(key: str, empty: str) -> None:
        if key in failures:
            empty = f"Figure not drawn: {failures[key]}"
        rep.figure(figures.get(key), caption[key], empty)

    rep.heading("Roofline")
    figure("roofline", "No roofline chart: the profile has no bandwidth or matmul ceiling.")

    rep.heading("Fitted roofline model")
    rep.table(tables.model_table(profile), "No fitted model in this profile.")
    rep.table(tables.fit_error_table(profile))
    notes = ModelSection.of(profile).notes or []
    rep.items([f"note: {n}" for n in notes])

    rep.heading("Memory bandwidth")
    figure("bandwidth_vs_size", "No validated hbm records.")
    rep.heading("Matmul throughput")
    figure("matmul_vs_size", "No validated matmul records.")
    rep.heading("Decode GEMV")
    figure("gemv_vs_batch", "No validated gemv records.")
    wins = _gemv_wins(profile)
    if wins:
        rep.para(wins)
    rep.table(tables.gemv_best_table(profile))
    if profile.get("efficiency"):
        rep.heading("Measured kernel efficiency")
        rep.table(tables.efficiency_table(profile))

    if profile.get("interconnect"):
        rep.heading("Interconnect")
        rep.table(tables.interconnect_table(profile),
                  "The interconnect section holds no fitted link.")
    if validation:
        rep.heading("Validation on a real transformer")
        for t in tables.validation_tables(validation):
            rep.table(t, f"{t.title}: none.")
    if simulation:
        _simulation_section(rep, simulation, figures.get("simulation"),
                            failures.get("simulation"), name)
    return rep


def write_report(profile: dict[str, Any], out_dir: str | Path,
                 validation: dict[str, Any] | None = None,
                 simulation: Any = _FIND) -> list[Path]:
    """Write out_dir/report.md, out_dir/report.html and the figures; returns every path written.

    simulation: a simulation dict (load_simulation), None for none, or by default the
    simulation.json in out_dir when there is one (with its curve drawn as simulation.png)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if simulation is _FIND:
        simulation = load_simulation(out / SIMULATION_JSON)
    figures: dict[str, Path] = {}
    failures: dict[str, str] = {}
    if simulation and not simulation.get("error"):
        try:
            from ridgeline.outputs import atomic_write_bytes
            from ridgeline.reports.curve import curve_png
            from ridgeline.sizing.simulation.run import chart_title

            figures["simulation"] = atomic_write_bytes(
                out / SIMULATION_PNG, curve_png(simulation, simulation.get("measured") or [],
                                                chart_title(simulation)))
        except Exception as exc:  # one broken figure must not cost the whole report
            first = str(exc).splitlines()[0] if str(exc) else ""
            failures["simulation"] = f"{type(exc).__name__}: {first}"
    for fig_name, (draw, _caption) in plots.FIGURES.items():
        try:
            path = draw(profile, out / f"{fig_name}.png")
        except Exception as exc:  # one broken figure must not cost the whole report
            first = str(exc).splitlines()[0] if str(exc) else ""
            failures[fig_name] = f"{type(exc).__name__}: {first}"
            continue
        if path is not None:
            figures[fig_name] = path
    rep = build_report(profile, figures, validation, failures, simulation)
    from ridgeline.outputs import atomic_write_text

    md = atomic_write_text(out / "report.md", rep.to_markdown())
    page = atomic_write_text(out / "report.html",
                             rep.to_html(f"ridgeline report: {plots._device_name(profile)}"))
    return [md, page, *figures.values()]
