"""Node and fleet acceptance: many profiles side by side, each device against the set's median
(or a reference profile), outliers named.

    fleet = load_fleet(["runs/"], reference=None)       # profiles found, loaded and checked
    result = fleet_summary(fleet, threshold=0.05)       # plain data: --json and fleet.json
    print_fleet(result)                                 # console tables and the verdict
    write_fleet(result, "fleet-out")                    # fleet.json, fleet.html, fleet_*.png

The command is `ridgeline fleet DIR_OR_FILE... [--reference REF] [--threshold 0.05] [--json]
[-o OUTDIR]` (ridgeline.commands.fleet); docs/fleet.md says how to read it.

Inputs: profile.json files, or folders searched recursively for profile.json (a torchrun run
writes DIR/<host>-<local_rank>/profile.json; profiles collected by hand work the same). Every
profile goes through roofline.profile.load_profile: one bad file stops the run with one line.

The quantities are ridgeline.reports.compare's (one extraction for both commands): memory
bandwidth per kernel, matmul TFLOP/s per dtype, host link, collectives' bus bandwidth and
alpha, the fitted model's bandwidth, peaks, latency (launch) floor, per-kernel overhead and
GEMM start-up. Per quantity, over the devices holding a value:

    median = median of the devices' values
    spread = (max - min) / median
    ratio  = device / median            (device / reference value with --reference)

A device deviates when |ratio - 1| > threshold; it is *worse* in the bad direction (lower
bandwidth or TFLOP/s, higher latency), *better* in the other. Exit code 1 when any device has
a measured ceiling worse beyond the threshold (a slow GPU), 0 otherwise. As in `compare`,
fitted model parameters are flagged but never fail the gate (they move with the fit), and a
ceiling that is unverified or noisy on the device or the reference (roofline.trust) is never
called worse: it is flagged with the direction it would have had and listed as NOT GATED.
The median is robust to a minority of slow devices, not to a majority: with two devices it
is their mean (a device 20% below the other sits 11% below the median), so give a known-good
profile as --reference for small sets.

Flagged beside the numbers, without changing the exit code: a PCIe link trained below its
maximum (topology.pcie_warnings on the device's link, from the profile's topology or its
telemetry), a device that throttled (records' throttle reasons, the telemetry at start), an
incomplete profile, untrusted ceilings, a quantity the other devices have and this one lacks,
a device model, driver, runtime or ridgeline method that differs from the rest of the set,
and unfinished runs (records.partial.jsonl without a profile.json) found in the folders.
Pure Python (no torch): the planner side.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from ridgeline import __version__
from ridgeline.errors import RidgelineError
from ridgeline.reports.compare import Quantity, judge, quantities
from ridgeline.roofline.trust import CeilingStatus, describe, untrusted_ceilings

FLEET_KIND = "ridgeline-fleet"
DEFAULT_THRESHOLD = 0.05
PROFILE_NAME = "profile.json"
FLEET_JSON, FLEET_HTML = "fleet.json", "fleet.html"
FIGURE_PREFIX = "fleet_"          # fleet_<quantity>.png: the only PNGs write_fleet replaces

# identity fields that should agree across a fleet, and how a flag names them
MATCHED_FIELDS = (("name", "device model"), ("driver", "driver"),
                  ("runtime", "CUDA/HIP runtime"), ("method_version", "ridgeline method"))
# telemetry's PCIe keys (telemetry.static_info) -> topology's (what pcie_warnings reads)
_TELEMETRY_PCIE = {"gen_current": "pcie_gen_current", "gen_max": "pcie_gen_max",
                   "width_current": "pcie_width_current", "width_max": "pcie_width_max"}


@dataclass(frozen=True)
class Member:
    """One profile of the set."""

    label: str              # short unique name: its folder under the argument given
    path: Path
    profile: dict[str, Any]


@dataclass(frozen=True)
class Fleet:
    members: list[Member]
    reference: Member | None = None
    notes: tuple[str, ...] = ()   # found while searching (unfinished runs)


# ------------------------------------------------------------------ finding and loading

def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _search(root: Path) -> tuple[list[Path], list[Path]]:
    """profile.json files under root, and folders holding an unfinished run but no profile."""
    from ridgeline.partial import PARTIAL_NAME

    try:
        found = sorted(p for p in root.rglob(PROFILE_NAME) if p.is_file())
        partial = sorted(p.parent for p in root.rglob(PARTIAL_NAME)
                         if not (p.parent / PROFILE_NAME).is_file())
    except OSError as exc:
        raise RidgelineError(f"cannot search {root}: {exc.strerror or exc}") from None
    return found, partial


def find_profiles(inputs: list[str | Path]) -> tuple[list[tuple[Path, str]], list[str]]:
    """(path, label) of every profile the arguments name, in order, each file once; and notes.

    A file is taken as given (it must exist); a folder is searched recursively and must hold
    at least one profile.json. The label is the profile's folder relative to the argument
    (a file: its folder when it is called profile.json, else its path as given); all labels
    fall back to the paths when two would read the same."""
    from ridgeline.errors import ProfileError

    found: list[tuple[Path, str]] = []
    notes: list[str] = []
    for arg in inputs:
        root = Path(arg)
        if root.is_dir():
            paths, unfinished = _search(root)
            if not paths:
                raise ProfileError(f"no {PROFILE_NAME} under {root}" + (
                    f" ({len(unfinished)} unfinished run(s): finish them with `ridgeline profile "
                    f"--resume {unfinished[0]}`)" if unfinished else ""))
            for p in paths:
                rel = p.parent.relative_to(root)
                found.append((p, rel.as_posix() if rel.parts else str(root)))
            notes += [f"{d} holds an unfinished run and no {PROFILE_NAME}: that device is not "
                      f"in the set (finish it with `ridgeline profile --resume {d}`)"
                      for d in unfinished]
        elif root.exists():
            named = root.name == PROFILE_NAME and root.parent != Path(".")
            found.append((root, str(root.parent if named else root)))
        else:
            raise ProfileError(f"profile not found: {root}")
    seen: set[Path] = set()
    unique = []
    for path, label in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((path, label))
    labels = [label for _, label in unique]
    if len(set(labels)) < len(labels):
        unique = [(path, str(path)) for path, _ in unique]
    return unique, notes


def load_fleet(inputs: list[str | Path], reference: str | Path | None = None) -> Fleet:
    """Find and load every profile (roofline.profile.load_profile: ProfileError, one line)."""
    from ridgeline.roofline.profile import load_profile

    found, notes = find_profiles(inputs)
    members = [Member(label, path, load_profile(path)) for path, label in found]
    ref = None
    if reference is not None:
        path = Path(reference)
        ref = Member(str(path), path, load_profile(path))
    return Fleet(members, ref, tuple(notes))


# ------------------------------------------------------------------ identity and device flags

def _device_index(device_id: Any) -> int | None:
    """'cuda:3' -> 3; 'cpu' -> None."""
    m = re.fullmatch(r"\w+:(\d+)", str(device_id or ""))
    return int(m.group(1)) if m else None


def _telemetry(profile: dict[str, Any]) -> dict[str, Any]:
    """The device's static telemetry (telemetry.static_info): the device's own copy over the
    one taken at the start of the run."""
    prov = _mapping(profile.get("provenance"))
    return {**_mapping(prov.get("telemetry_at_start")),
            **_mapping(_mapping(prov.get("device")).get("telemetry"))}


def identity(profile: dict[str, Any]) -> dict[str, Any]:
    """Who measured what: host, device id and index, model, PCI bus id, UUID and serial where
    the provenance records them, driver, runtime, ridgeline method, when."""
    from ridgeline.topology import normalize_pci_bus_id

    prov = _mapping(profile.get("provenance"))
    dev = _mapping(prov.get("device"))
    tele = _telemetry(profile)
    versions = _mapping(prov.get("versions"))

    def first(*keys: str) -> Any:
        for source in (dev, tele):
            for key in keys:
                if source.get(key) not in (None, ""):
                    return source[key]
        return None

    return {"host": prov.get("hostname"), "device_id": dev.get("id"),
            "device_index": _device_index(dev.get("id")), "name": dev.get("name"),
            "kind": dev.get("kind"), "pci_bus_id": normalize_pci_bus_id(dev.get("pci_bus_id")),
            "uuid": first("uuid"), "serial": first("serial"),
            "driver": first("driver_version") or versions.get("driver"),
            "runtime": dev.get("runtime_version") or versions.get("cuda") or versions.get("hip"),
            "method_version": profile.get("method_version"),
            "timestamp_utc": prov.get("timestamp_utc")}


def identity_text(ident: dict[str, Any]) -> str:
    """'node1 cuda:3, PCI 0000:18:00.0, UUID GPU-..., serial ...' (what is recorded)."""
    parts = [" ".join(str(ident[k]) for k in ("host", "device_id") if ident.get(k)) or "?"]
    for key, label in (("pci_bus_id", "PCI"), ("uuid", "UUID"), ("serial", "serial")):
        if ident.get(key):
            parts.append(f"{label} {ident[key]}")
    return ", ".join(parts)


def _pcie_link(profile: dict[str, Any], ident: dict[str, Any]) -> dict[str, Any] | None:
    """This device's PCIe link state: its entry in the profile's topology (which has the
    performance state), else its telemetry; None when neither records one."""
    from ridgeline.topology import normalize_pci_bus_id

    topo = _mapping(_mapping(profile.get("interconnect")).get("topology"))
    listed = topo.get("gpus")
    gpus = [g for g in listed if isinstance(g, dict)] if isinstance(listed, list) else []
    mine = [g for g in gpus if ident["pci_bus_id"]
            and normalize_pci_bus_id(g.get("pci_bus_id")) == ident["pci_bus_id"]]
    if not mine and len(gpus) == 1:
        mine = gpus
    link = _mapping(mine[0].get("pcie")) if mine else {}
    if not link:
        tele = _telemetry(profile)
        link = {k: tele.get(v) for k, v in _TELEMETRY_PCIE.items()}
    # only numbers reach the comparisons; a link with none recorded is no link state
    link = {k: v for k, v in link.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return link or None


def _throttle_flags(profile: dict[str, Any]) -> list[str]:
    from ridgeline.telemetry import THROTTLING_REASONS, throttle_reasons

    out = []
    records = profile.get("records")
    recs = [r for r in records if isinstance(r, dict) and r.get("throttled")] \
        if isinstance(records, list) else []
    if profile.get("throttled") or recs:
        seen = throttle_reasons(recs)
        reasons = sorted(set(seen) & THROTTLING_REASONS) or seen
        out.append(f"throttled during the run ({len(recs)} record(s)"
                   + (f": {', '.join(reasons)})" if reasons else ")"))
    at_start = _telemetry(profile).get("throttle_reasons")
    if isinstance(at_start, list):
        start = sorted({str(x) for x in at_start} & THROTTLING_REASONS)
        if start:
            out.append(f"throttling when the run started ({', '.join(start)})")
    return out


def _untrusted_text(untrusted: list[CeilingStatus]) -> str:
    """'noisy: bf16 matmul; unverified: read bandwidth'."""
    by_status: dict[str, list[str]] = {}
    for c in untrusted:
        by_status.setdefault(c.status, []).append(c.name)
    return "; ".join(f"{s}: {', '.join(names)}" for s, names in sorted(by_status.items()))


def device_flags(profile: dict[str, Any], ident: dict[str, Any],
                 untrusted: list[CeilingStatus]) -> list[str]:
    """What a device's own profile says is wrong with it (not its numbers against the set);
    `untrusted`: its untrusted_ceilings."""
    from ridgeline.topology import pcie_warnings

    flags = []
    if profile.get("complete") is False:
        flags.append("incomplete: " + str(profile.get("incomplete_reason")
                                          or "the sweep did not finish"))
    link = _pcie_link(profile, ident)
    if link:
        flags += [f"PCIe: {w}" for w in pcie_warnings(ident["device_index"] or 0, link)]
    flags += _throttle_flags(profile)
    if untrusted:
        flags.append(_untrusted_text(untrusted))
    flags += [f"flag: {f}" for f in _mapping(profile.get("ceilings")).get("flags") or []
              if isinstance(f, str)]
    return flags


def _mismatches(idents: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, list[str]]]:
    """Set-level lines for every identity field with more than one value in the set, and the
    per-device flags of the devices that differ from its most common value."""
    set_flags: list[str] = []
    per_device: dict[str, list[str]] = {label: [] for label in idents}
    for key, what in MATCHED_FIELDS:
        counts = Counter(str(i[key]) for i in idents.values() if i.get(key) is not None)
        if len(counts) < 2:
            continue
        common = counts.most_common(1)[0][0]
        set_flags.append(f"different {what} in the set: " + ", ".join(
            f"{value} ({n} device{'s' if n > 1 else ''})" for value, n in counts.most_common()))
        for label, i in idents.items():
            if i.get(key) is not None and str(i[key]) != common:
                per_device[label].append(f"{what} {i[key]}, unlike the set's {common}")
    return set_flags, per_device


def _reference_mismatches(ref: dict[str, Any], idents: dict[str, dict[str, Any]]) -> list[str]:
    """'the reference's device model is X; the set's is Y' for each field that differs."""
    out = []
    for key, what in MATCHED_FIELDS:
        counts = Counter(str(i[key]) for i in idents.values() if i.get(key) is not None)
        if ref.get(key) is not None and counts and str(ref[key]) not in counts:
            out.append(f"the reference's {what} is {ref[key]}; the set's is "
                       + ", ".join(counts))
    return out


# ------------------------------------------------------------------ the numbers

def _entry(label: str, q: Quantity | None, basis: Quantity | None, use_reference: bool,
           threshold: float) -> dict[str, Any]:
    """One device's value of one quantity against the basis (the median or the reference)."""
    e: dict[str, Any] = {"device": label, "value": q.value if q else None,
                         "status": q.status.status if q and q.status else None,
                         "ratio": None, "deviation": "", "flag": ""}
    if q is None:
        e["flag"] = "missing"          # the others have it; this device does not
    elif q.undetermined:
        e["flag"] = "not determined"   # the fit could not fix it: a ratio would be noise
    elif use_reference and (basis is None or basis.undetermined):
        e["flag"] = "not in reference" if basis is None else "not determined (reference)"
    elif basis is not None:  # quantities() gives a value to every determined quantity
        # compare's rule; the device's own status goes unnamed, the reference's is named
        e.update(judge(q, basis, threshold, ("", "reference ")))
    return e


def _quantity_row(name: str, qs: list[Quantity | None], labels: list[str],
                  ref: Quantity | None, use_reference: bool, threshold: float) -> dict[str, Any]:
    proto = next(q for q in qs if q is not None)
    values = [q.value for q in qs if q is not None and q.value is not None]
    med = median(values) if values else None
    # the median as a quantity without a status of its own: only a reference's status is judged
    basis = ref if use_reference else (
        Quantity(med, proto.unit, proto.higher_is_better, proto.kind) if med else None)
    entries = [_entry(label, q, basis, use_reference, threshold)
               for label, q in zip(labels, qs)]
    return {"quantity": name, "kind": proto.kind, "unit": proto.unit,
            "higher_is_better": proto.higher_is_better, "n": len(values), "median": med,
            "min": min(values) if values else None, "max": max(values) if values else None,
            "spread": (max(values) - min(values)) / med if med else None,
            "reference": ref.value if ref else None,
            "reference_status": ref.status.status if ref and ref.status else None,
            "values": entries}


def _badness(row: dict[str, Any], ratio: float) -> float:
    """A ratio on one scale for every quantity: below 1 is worse."""
    return ratio if row["higher_is_better"] else 1.0 / ratio


def fleet_summary(fleet: Fleet, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Per quantity the median, spread and every device's ratio; per device its identity,
    flags and worst ceiling; the set's flags and the gate's verdict (plain data)."""
    members, ref_member = fleet.members, fleet.reference
    if not members:
        raise RidgelineError("no profiles to compare")
    use_reference = ref_member is not None
    labels = [m.label for m in members]
    per_device = [quantities(m.profile) for m in members]
    ref_q = quantities(ref_member.profile) if ref_member else {}
    names: list[str] = []
    for q in per_device:
        names += [n for n in q if n not in names]
    rows = [_quantity_row(n, [q.get(n) for q in per_device], labels, ref_q.get(n),
                          use_reference, threshold) for n in names]

    idents = {m.label: identity(m.profile) for m in members}
    set_flags, differs = _mismatches(idents)
    if ref_member:
        set_flags += _reference_mismatches(identity(ref_member.profile), idents)
    set_flags += list(fleet.notes)
    if len(members) == 1 and not use_reference:
        set_flags.append("one device: its ratio to the median is 1 by construction "
                         "(give --reference to judge it)")
    ref_path = ref_member.path.resolve() if ref_member else None
    devices = []
    for i, m in enumerate(members):
        mine = [(r, r["values"][i]) for r in rows]   # entries are in member order
        worse = [(r, e) for r, e in mine if e["flag"] == "worse" and r["kind"] == "ceiling"]
        ranked = [(_badness(r, e["ratio"]), r, e) for r, e in mine
                  if r["kind"] == "ceiling" and e["ratio"]]
        worst = min(ranked, key=lambda t: t[0]) if ranked else None
        missing = [r["quantity"] for r, e in mine if e["flag"] == "missing"]
        untrusted = untrusted_ceilings(m.profile)
        flags = device_flags(m.profile, idents[m.label], untrusted) + differs[m.label]
        if missing:
            flags.append("missing: " + ", ".join(missing))
        devices.append({
            "label": m.label, "path": str(m.path), "is_reference": m.path.resolve() == ref_path,
            "identity": idents[m.label], "identity_text": identity_text(idents[m.label]),
            "worse": [{"quantity": r["quantity"], "ratio": e["ratio"]} for r, e in worse],
            "worst_ceiling": ({"quantity": worst[1]["quantity"], "ratio": worst[2]["ratio"]}
                              if worst else None),
            "flags": flags,
            "untrusted": [describe(c) for c in untrusted]})
    not_gated = [{"device": e["device"], "quantity": r["quantity"], "untrusted": e["untrusted"],
                  "deviation": e["deviation"]}
                 for r in rows if r["kind"] == "ceiling"
                 for e in r["values"] if e["flag"] == "unverified"]
    failed = [d["label"] for d in devices if d["worse"]]
    return {"kind": FLEET_KIND, "ridgeline_version": __version__, "threshold": threshold,
            "basis": "reference" if use_reference else "median",
            "reference": ({"path": str(ref_member.path),
                           "identity": identity(ref_member.profile),
                           "identity_text": identity_text(identity(ref_member.profile))}
                          if ref_member else None),
            "n_devices": len(members), "quantities": rows, "devices": devices,
            "set_flags": set_flags, "not_gated": not_gated, "failed_devices": failed,
            "exit_code": 1 if failed else 0}


# ------------------------------------------------------------------ tables (console and HTML)

def _num(v: float | None, unit: str = "") -> str:
    from ridgeline.reports.tables import fmt

    if v is None:
        return "-"
    return fmt(v, 0 if abs(v) >= 100 else 2, unit)


def _basis_name(result: dict[str, Any]) -> str:
    return "the reference" if result["basis"] == "reference" else "the median"


def _entry_text(e: dict[str, Any]) -> str:
    """'node3 0.80' for a ratio cell naming its device."""
    return f"{e['device']} {e['ratio']:.3f}" if e["ratio"] is not None else f"{e['device']} -"


def _outside_text(row: dict[str, Any]) -> str:
    parts = []
    for flag in ("worse", "better", "unverified", "missing", "not in reference"):
        hits = [e for e in row["values"] if e["flag"] == flag]
        if not hits:
            continue
        if flag == "unverified":
            names = ", ".join(f"{e['device']} ({e['untrusted']}"
                              + (f", would be {e['deviation']}" if e["deviation"] else "") + ")"
                              for e in hits)
        elif flag in ("worse", "better"):
            names = ", ".join(_entry_text(e) for e in hits)
        else:
            names = ", ".join(e["device"] for e in hits)
        parts.append(f"{flag}: {names}")
    return "; ".join(parts) or "-"


def quantities_table(result: dict[str, Any]):
    """Per quantity: devices, median, spread, reference, worst and best device, who is out."""
    from ridgeline.reports.tables import Table

    by_ref = result["basis"] == "reference"
    headers = ["quantity", "kind", "devices", "median", "spread (max-min)/median"]
    headers += ["reference"] if by_ref else []
    headers += [f"worst / {'reference' if by_ref else 'median'}", "best", "outside threshold"]
    table = Table(f"{result['n_devices']} devices: each against {_basis_name(result)} "
                  f"(flagged beyond {result['threshold']:.0%})", headers)
    for r in result["quantities"]:
        rated = [e for e in r["values"] if e["ratio"]]
        ranked = sorted(rated, key=lambda e: _badness(r, e["ratio"]))
        row = [r["quantity"], r["kind"], str(r["n"]), _num(r["median"], r["unit"]),
               f"{100 * r['spread']:.1f}%" if r["spread"] is not None else "-"]
        if by_ref:
            row.append(_num(r["reference"], r["unit"])
                       + (f" ({r['reference_status']})" if r["reference_status"]
                          not in (None, "verified") else ""))
        row += [_entry_text(ranked[0]) if ranked else "-",
                _entry_text(ranked[-1]) if ranked else "-", _outside_text(r)]
        table.rows.append(row)
    table.note = ("ratio = device / " + ("reference" if by_ref else "median")
                  + "; worse = lower bandwidth or TFLOP/s, higher latency; measured ceilings "
                  "gate, fitted model parameters are flagged only")
    return table


def devices_table(result: dict[str, Any]):
    """Per device: its path, identity, model and driver, worst ceiling, flags."""
    from ridgeline.reports.tables import Table

    table = Table("Devices", ["device", "identity", "model / driver", "worst ceiling", "flags"])
    for d in result["devices"]:
        ident, worst = d["identity"], d["worst_ceiling"]
        flags = [("SLOW: " + ", ".join(f"{w['quantity']} {w['ratio']:.3f}" for w in d["worse"]))
                 ] if d["worse"] else []
        table.rows.append([d["label"] + (" (reference)" if d["is_reference"] else ""),
                           d["identity_text"],
                           f"{ident.get('name') or '?'} / {ident.get('driver') or '-'}",
                           f"{worst['quantity']} {worst['ratio']:.3f}" if worst else "-",
                           "; ".join(flags + d["flags"]) or "-"])
    return table


def ratio_table(result: dict[str, Any]):
    """Every device's ratio of every quantity (the HTML report's matrix)."""
    from ridgeline.reports.tables import Table

    rows = result["quantities"]
    table = Table(f"Ratio to {_basis_name(result)}: every device, every quantity",
                  ["device"] + [r["quantity"] for r in rows])
    for i, d in enumerate(result["devices"]):
        cells = []
        for r in rows:
            e = r["values"][i]
            text = f"{e['ratio']:.3f}" if e["ratio"] is not None else "-"
            if e["flag"]:
                text += f" ({e['flag']})"
            cells.append(text)
        table.rows.append([d["label"]] + cells)
    return table


def _slow_lines(result: dict[str, Any]) -> list[str]:
    """'node1-0 (read bandwidth 0.800)' for each device that fails the gate."""
    return [f"{d['label']} (" + ", ".join(f"{w['quantity']} {w['ratio']:.3f}" for w in d["worse"])
            + ")" for d in result["devices"] if d["worse"]]


def not_gated_text(result: dict[str, Any]) -> str:
    """How many ceiling values were not gated (unverified or noisy), naming those outside the
    threshold: the ones that would have been flagged."""
    entries = result["not_gated"]
    out = [f"{e['device']} {e['quantity']} ({e['untrusted']}, would be {e['deviation']})"
           for e in entries if e["deviation"]]
    return (f"{len(entries)} ceiling value(s) unverified or noisy on the device or the reference, "
            "neither passed nor failed (the devices' flags name them)"
            + (f"; outside the threshold among them: {', '.join(out)}" if out else ""))


def verdict(result: dict[str, Any]) -> str:
    """One line: which devices fail, or that none does."""
    basis, t = _basis_name(result), result["threshold"]
    if result["failed_devices"]:
        slow = _slow_lines(result)
        return (f"FAIL: {len(slow)} of {result['n_devices']} device(s) below {basis} beyond "
                f"{t:.0%}: " + "; ".join(slow))
    gated = "verified ceiling" if result["not_gated"] else "ceiling"
    return f"OK: no device has a {gated} worse than {basis} beyond {t:.0%}"


def print_fleet(result: dict[str, Any], console: Any = None) -> None:
    """The two tables, the set's flags, the NOT GATED line and the verdict."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table as RichTable

    console = console or Console()
    failed = set(result["failed_devices"])
    for table in (quantities_table(result), devices_table(result)):
        out = RichTable(title=escape(table.title), caption=escape(table.note) or None)
        for h in table.headers:
            out.add_column(escape(h))
        for row in table.rows:
            bad = (table.title == "Devices" and row[0].split(" (")[0] in failed) or \
                  (table.title != "Devices" and row[-1].startswith("worse"))
            out.add_row(*[escape(str(c)) for c in row], style="bold red" if bad else "")
        console.print(out)
    for line in result["set_flags"]:
        console.print("[yellow]SET[/yellow]: " + escape(line))
    if result["not_gated"]:
        console.print("[yellow]NOT GATED[/yellow]: " + escape(not_gated_text(result)))
    line = verdict(result)
    head, rest = line.split(":", 1)
    console.print(f"[{'bold red' if failed else 'green'}]{head}[/]:" + escape(rest))


# ------------------------------------------------------------------ files: json, charts, html

def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "quantity"


def fleet_chart(result: dict[str, Any], row: dict[str, Any], path: Path) -> Path | None:
    """One quantity across devices: a bar per device, the basis and its threshold band;
    worse red (orange: a fitted parameter, not gated), better green, unverified yellow."""
    from ridgeline.reports.plots import _figure, _save

    shown = [e for e in row["values"] if e["value"] is not None]
    if not shown:
        return None
    n, t = len(shown), result["threshold"]
    fig, ax = _figure(max(6.0, min(24.0, 2.5 + 0.4 * n)), 4.8)
    colors = {"worse": "tab:red" if row["kind"] == "ceiling" else "tab:orange",
              "better": "tab:green", "unverified": "gold"}
    ax.bar(range(n), [e["value"] for e in shown],
           color=[colors.get(e["flag"], "tab:blue") for e in shown])
    by_ref = result["basis"] == "reference"
    basis = row["reference"] if by_ref else row["median"]
    if basis:
        ax.axhspan(basis * (1 - t), basis * (1 + t), color="gray", alpha=0.18,
                   label=f"within {t:.0%}")
        ax.axhline(basis, color="black", lw=1.2,
                   label=f"{'reference' if by_ref else 'median'} {_num(basis, row['unit'])}")
    if by_ref and row["median"]:
        ax.axhline(row["median"], color="black", lw=1, ls="--", alpha=0.6,
                   label=f"median {_num(row['median'], row['unit'])}")
    ax.set_xticks(range(n), [e["device"] for e in shown], rotation=45 if n > 4 else 0,
                  ha="right" if n > 4 else "center", fontsize=7)
    ax.set_ylabel(f"{row['quantity']} ({row['unit']})")
    ax.set_title(f"{row['quantity']} across {n} devices ({row['kind']}; "
                 f"{'higher' if row['higher_is_better'] else 'lower'} is better)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not on, bars
    ax.grid(True, axis="y", alpha=0.25)
    return _save(fig, path)


def _figure_names(result: dict[str, Any]) -> list[str]:
    names, seen = [], set()
    for r in result["quantities"]:
        name = stem = f"{FIGURE_PREFIX}{_slug(r['quantity'])}"
        i = 2
        while name in seen:
            name, i = f"{stem}_{i}", i + 1
        seen.add(name)
        names.append(f"{name}.png")
    return names


def _old_figures(folder: Path) -> list[Path]:
    """The charts an earlier fleet.json in this folder lists (ours to replace, nothing else)."""
    try:
        old = json.loads((folder / FLEET_JSON).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict) or old.get("kind") != FLEET_KIND:
        return []
    return [folder / n for n in old.get("figures") or [] if isinstance(n, str)
            and re.fullmatch(rf"{FIGURE_PREFIX}[a-z0-9_]+\.png", n)]


def build_fleet_report(result: dict[str, Any], figures: dict[str, Path],
                       failures: dict[str, str]):
    """The HTML report's blocks (reports.render.Report)."""
    from ridgeline.reports.render import Report

    rep = Report()
    rep.heading(f"ridgeline fleet: {result['n_devices']} devices", 1)
    line = verdict(result)
    if result["failed_devices"]:
        rep.warning(f"{len(result['failed_devices'])} of {result['n_devices']} device(s) worse "
                    f"than {_basis_name(result)} beyond {result['threshold']:.0%}",
                    _slow_lines(result))
    rep.items([line] + [f"set: {f}" for f in result["set_flags"]]
              + ([f"not gated: {not_gated_text(result)}"] if result["not_gated"] else [])
              + ([f"reference: {result['reference']['path']} "
                  f"({result['reference']['identity_text']})"] if result["reference"] else []))
    rep.heading("Quantities across devices")
    rep.table(quantities_table(result), "No quantity in these profiles.")
    rep.heading("Devices")
    rep.table(devices_table(result))
    rep.table(ratio_table(result))
    rep.heading("Charts")
    for r in result["quantities"]:
        key = r["quantity"]
        rep.figure(figures.get(key), f"{key} across devices against {_basis_name(result)}",
                   f"{key}: figure not drawn: {failures[key]}" if key in failures
                   else f"{key}: no device has a value.")
    return rep


def write_fleet(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """OUTDIR/fleet.json, a fleet_<quantity>.png per quantity and OUTDIR/fleet.html, each
    written atomically under the folder's lock (ridgeline.outputs). Derived data: rewritten
    freely; the charts an earlier fleet.json listed are removed first, nothing else."""
    from ridgeline.outputs import DirLock, OutputError, atomic_write_text, make_folder, remove_file
    from ridgeline.roofline.profile import json_safe

    folder = make_folder(out_dir)
    with DirLock(folder):
        for p in _old_figures(folder):
            remove_file(p)
        figures: dict[str, Path] = {}
        failures: dict[str, str] = {}
        for r, name in zip(result["quantities"], _figure_names(result)):
            try:
                path = fleet_chart(result, r, folder / name)
            except OutputError:
                raise
            except Exception as exc:  # one broken chart must not cost the report
                first = str(exc).splitlines()[0] if str(exc) else ""
                failures[r["quantity"]] = f"{type(exc).__name__}: {first}"
                continue
            if path is not None:
                figures[r["quantity"]] = path
        stored = dict(result, figures=[p.name for p in figures.values()])
        written = [atomic_write_text(folder / FLEET_JSON,
                                     json.dumps(json_safe(stored), indent=1) + "\n")]
        page = build_fleet_report(result, figures, failures).to_html(
            f"ridgeline fleet: {result['n_devices']} devices")
        written.append(atomic_write_text(folder / FLEET_HTML, page))
    return written + list(figures.values())
