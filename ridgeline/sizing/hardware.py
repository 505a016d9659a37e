"""The hardware a plan runs on: a measured profile, a bundled reference profile, or a datasheet.

    hw = hardware_from_profile(load_profile("profile.json"))       # source "measured"
    hw = hardware_from_gpu_name("h100-sxm")   # data/profiles/<sku>.json ("reference"), else the
                                              # datasheet entry ("datasheet"), labelled as such
    hw_ds = datasheet_hardware_for(hw)        # the same GPU's datasheet, for --compare-datasheet

A datasheet is derated: every matmul peak and the memory bandwidth are multiplied by the
published fraction that measured kernels reach (ridgeline.datasheets.achievable_fractions:
mamf-finder's best matmul, BabelStream-style bandwidth runs), and `Hardware.notes` and the
profile's model notes say by how much and from where ("derated: bf16 peak x0.803
(mamf-finder, <url>) ..."). `derate=False` (`--no-derate`) prices it at 100% of its peaks,
which real kernels do not reach, and says that instead. The vendor's own figures stay in
the profile's `datasheet` key. The --compare-datasheet twin is derated the same way.

Derating also brings the published kernel efficiencies (ridgeline.published_efficiency:
decode and prefill attention, MoE experts, from public kernel benchmarks of the SKU or of
the closest part of its generation) as the profile's `efficiency` section, each relative to
the derated roofline (so the derating is not counted twice); `Hardware.notes` names each
source ("kernel efficiency (published): decode attention ... from FlashInfer blog ...").
`derate=False` leaves them out too: they are published achievable fractions as well.

A measured ceiling that is not verified (roofline.trust: no plateau, too few
points, noisy) is named in `Hardware.warnings`; `ridgeline plan --profile`
refuses it unless --allow-unverified (`refuse_untrusted`). Datasheet profiles
record no status and are never refused.

A datasheet has no launch latency, no achieved bandwidth and no collective
timings; the stand-ins used for them are listed in `Hardware.notes` so every
output that uses them can say so:

    latency floor   ridgeline.roofline.model.DEFAULT_LATENCY_FLOOR_US per kernel
    all-reduce      bus bandwidth = NVLink/Infinity-Fabric bidirectional / 2 (one direction),
                    DATASHEET_ALLREDUCE_ALPHA_US start-up; PCIe-only parts: host-link estimate;
                    bridged PCIe cards (H100 NVL: pairs) beyond their `nvlink_domain_gpus`:
                    the ring crosses PCIe between the bridged groups, so its bus bandwidth
                    is the PCIe rate (the slowest link of a ring sets its pace)
    host link       PCIe Gen4 x16 = 32 GB/s, Gen5 x16 = 64 GB/s per direction (raw link rate)
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from ridgeline import datasheets, published_efficiency
from ridgeline.datasheets import Achievable
from ridgeline.errors import RidgelineError
from ridgeline.roofline.efficiency import efficiency_note
from ridgeline.roofline.interconnect import PLANNED_COLLECTIVES
from ridgeline.roofline.model import DEFAULT_LATENCY_FLOOR_US, RooflineModel
from ridgeline.roofline.sections import Ceilings, ModelSection
from ridgeline.roofline.trust import CeilingStatus, describe, untrusted_ceilings
from ridgeline.sizing.options import option

SOURCES = ("measured", "reference", "datasheet")
NOT_DERATED_NOTE = ("NOT derated (--no-derate): datasheet peaks at 100%, which real kernels do "
                    "not reach")
NOT_DERATED_EFFICIENCY_NOTE = ("kernel efficiency: published kernel efficiencies not applied "
                               "(--no-derate): attention and MoE priced at the roofline")
DATASHEET_ALLREDUCE_ALPHA_US = 10.0
_PCIE_GBPS = {"gen3": 16.0, "gen4": 32.0, "gen5": 64.0, "gen6": 128.0}


@dataclass
class Hardware:
    name: str
    memory_bytes: int
    model: RooflineModel
    profile: dict
    source: str                      # "measured" | "reference" | "datasheet"
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sku: str | None = None
    # a datasheet of this GPU (itself, or its --compare-datasheet twin) is derated
    derate_datasheet: bool = True

    @property
    def device_dtypes(self) -> dict[str, bool]:
        return dict((self.profile.get("provenance") or {}).get("device", {}).get("dtypes") or {})

    def summary(self) -> dict[str, Any]:
        m = self.model
        return {"name": self.name, "source": self.source, "sku": self.sku,
                "memory_bytes": self.memory_bytes, "bandwidth_GBps": m.bandwidth_GBps,
                "peak_TFLOPS": dict(m.peak_TFLOPS), "latency_floor_us": m.latency_floor_us,
                "allreduce_world_sizes": sorted(int(k) for k in (
                    (self.profile.get("interconnect") or {}).get("allreduce") or {})),
                "derated": self.derate_datasheet if self.source == "datasheet" else None,
                "notes": list(self.notes), "warnings": list(self.warnings)}


def untrusted_ceiling_text(profile: dict) -> str | None:
    """'copy bandwidth unverified: <reason>; bf16 matmul noisy' for the ceilings of a profile
    that are not verified (roofline.trust) and that the planner reads (a noisy all-to-all,
    which it does not price, never refuses a plan); None when all are (or none is recorded:
    datasheet)."""
    groups: dict[tuple[str, str | None], list[str]] = {}
    for c in untrusted_ceilings(profile):
        collective = c.name.split(" n=")[0] if " n=" in c.name else None
        if collective is not None and collective not in PLANNED_COLLECTIVES:
            continue
        groups.setdefault((c.status, c.reason), []).append(c.name)
    # one describe() line per ceiling, ceilings sharing a status and reason named together
    return "; ".join(describe(CeilingStatus(", ".join(names), None, "", status, reason, {}))
                     for (status, reason), names in groups.items()) or None


def hardware_from_profile(profile: dict, source: str = "measured", *,
                          refuse_untrusted: bool = False) -> Hardware:
    """Hardware from a loaded profile dict (see ridgeline.roofline.profile).

    Ceilings that are not verified (roofline.trust) are named in `warnings`; with
    `refuse_untrusted` (what `ridgeline plan --profile` does without --allow-unverified)
    they are a RidgelineError instead."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    from ridgeline.roofline.profile import device_memory_bytes, device_name

    untrusted = untrusted_ceiling_text(profile)
    if untrusted and refuse_untrusted:
        raise RidgelineError(f"the profile has ceilings that are not verified ({untrusted}): "
                             "re-measure them (`ridgeline profile`), or pass --allow-unverified "
                             "to plan with them anyway")
    model = RooflineModel.from_profile(profile)
    if source == "datasheet":
        model.source = "datasheet"
    hw = Hardware(device_name(profile), device_memory_bytes(profile), model, profile, source,
                  notes=list(model.notes))
    if hw.memory_bytes <= 0:
        raise RidgelineError(f"the profile of {hw.name} gives no device memory size")
    if source != "datasheet":
        if not profile.get("complete", True):
            hw.warnings.append("the profile is incomplete"
                               + (f" ({profile['incomplete_reason']})"
                                  if profile.get("incomplete_reason") else ""))
        if profile.get("throttled"):
            hw.warnings.append("the device throttled while it was profiled: ceilings may be low")
        if not ModelSection.of(profile).bandwidth_GBps:
            hw.warnings.append("the profile has no fitted roofline model: planning from raw "
                               "ceilings")
        if untrusted:
            hw.warnings.append(f"planning with ceilings that are not verified: {untrusted}")
        hw.notes.append(efficiency_note(profile))
    return hw


def _bundled_profile(sku: str) -> dict | None:
    path = resources.files("ridgeline").joinpath(f"data/profiles/{sku}.json")
    if not path.is_file():
        return None
    from ridgeline.roofline.profile import validate_profile

    return validate_profile(json.loads(path.read_text()), where=f"bundled profile {sku}")


def _pcie_GBps(entry: dict[str, Any]) -> float | None:
    text = str(entry.get("pcie", "")).lower().replace(" ", "")
    for gen, bw in _PCIE_GBPS.items():
        if gen in text:
            return bw
    return None


def derating_note(fr: Achievable) -> str:
    """'derated: bf16, fp16 peak x0.803 (mamf-finder, <url>); ...; memory bandwidth x0.949
    (<source>, <url>)': each fraction once, with the dtypes it applies to."""
    groups: dict[tuple[float, str], list[str]] = {}
    for dtype, f in fr.matmul.items():  # a stand-in describes as the dtype it copies
        groups.setdefault((f.fraction, f.describe()), []).append(dtype)
    # the measured dtype first, the ones it stands in for after it
    parts = [f"{', '.join(sorted(dtypes, key=lambda d: fr.matmul[d].stand_in is not None))} "
             f"peak x{frac:.3g} ({text})" for (frac, text), dtypes in groups.items()]
    parts.append(f"memory bandwidth x{fr.bandwidth.fraction:.3g} ({fr.bandwidth.describe()})")
    stand_ins = sorted({f"{d} takes {f.stand_in}'s" for d, f in fr.matmul.items() if f.stand_in})
    tail = (f" ({'; '.join(stand_ins)}: no published measurement of those dtypes)"
            if stand_ins else "")
    return "derated: " + "; ".join(parts) + tail


def datasheet_profile(entry: dict[str, Any], *, derate: bool = True) -> dict[str, Any]:
    """A profile-shaped dict built only from a datasheet entry (labelled "datasheet" throughout):
    its peaks x the published achievable fractions (`derate`, the default), or at 100%."""
    from ridgeline.roofline.profile import new_profile

    peaks = {d: float(v) for d, v in (entry.get("matmul_TFLOPS") or {}).items() if v}
    device = {"name": entry["name"], "kind": "datasheet",
              "memory_bytes": int(entry["memory_bytes"]),
              "dtypes": {d: True for d in peaks}}
    prof = new_profile(device, command_line=[], versions={})
    prof["complete"] = True
    bandwidth = float(entry["memory_bandwidth_GBps"])
    model_notes = [NOT_DERATED_NOTE]
    if derate:
        fr = datasheets.achievable_fractions(entry)
        peaks = {d: v * fr.matmul[d].fraction for d, v in peaks.items()}
        bandwidth *= fr.bandwidth.fraction
        model_notes = [derating_note(fr)]
    prof["ceilings"] = Ceilings({"read": bandwidth}, dict(peaks)).to_dict()
    section = ModelSection.datasheet(bandwidth, peaks, DEFAULT_LATENCY_FLOOR_US)
    prof["model"] = replace(section, notes=model_notes).to_dict()
    if derate:  # published kernel efficiencies, relative to this derated roofline
        efficiency = published_efficiency.datasheet_efficiency(
            entry, RooflineModel.from_profile(prof))
        if efficiency:
            prof["efficiency"] = efficiency
    inter: dict[str, Any] = {}
    link_bidir = (entry.get("nvlink_GBps_bidirectional")
                  or entry.get("infinity_fabric_GBps_bidirectional"))
    pcie = _pcie_GBps(entry)
    if link_bidir:
        fit = {"alpha_us": DATASHEET_ALLREDUCE_ALPHA_US, "busbw_GBps": float(link_bidir) / 2,
               "link": "nvlink" if entry.get("nvlink_GBps_bidirectional") else "xgmi",
               "source": "datasheet"}
        domain = entry.get("nvlink_domain_gpus") or 8
        over_pcie = {**fit, "busbw_GBps": pcie, "link": "pcie"} if pcie else None
        inter["allreduce"] = {str(n): dict(fit if n <= domain else over_pcie)
                              for n in (2, 4, 8) if n <= domain or over_pcie}
    if pcie:
        inter["host_link_GBps"] = {"h2d": pcie, "d2h": pcie, "source": "datasheet"}
    prof["interconnect"] = inter
    prof["datasheet"] = dict(entry)
    return prof


def _datasheet_notes(entry: dict[str, Any], model_notes: list[str]) -> list[str]:
    notes = [f"datasheet figures ({entry.get('source', 'vendor datasheet')}), not measured",
             *model_notes,
             f"latency floor: an assumed {DEFAULT_LATENCY_FLOOR_US:g} us per kernel (no launch "
             "measurement)"]
    if entry.get("nvlink_GBps_bidirectional") or entry.get("infinity_fabric_GBps_bidirectional"):
        notes.append(f"all-reduce: bus bandwidth = half the bidirectional link rate, "
                     f"{DATASHEET_ALLREDUCE_ALPHA_US:g} us start-up (assumed)")
        domain = entry.get("nvlink_domain_gpus")
        if domain:
            joined = "pairs" if domain == 2 else f"groups of {domain}"
            notes.append(f"NVLink bridges join {joined} only: at TP > {domain} the all-reduce "
                         f"ring crosses PCIe ({_pcie_GBps(entry) or 0:g} GB/s per direction)")
    else:
        notes.append("all-reduce: no GPU-GPU link on the datasheet; estimated over the PCIe "
                     "host link")
    return notes


def hardware_from_datasheet(entry: dict[str, Any], *, derate: bool = True) -> Hardware:
    """Hardware from a datasheet entry, derated by its published achievable fractions unless
    `derate` is False (RidgelineError when the entry has none: never a silent 100%)."""
    prof = datasheet_profile(entry, derate=derate)
    hw = hardware_from_profile(prof, source="datasheet")
    hw.notes = _datasheet_notes(entry, ModelSection.of(prof).notes or [])
    hw.notes += (published_efficiency.efficiency_notes(prof.get("efficiency"), entry.get("sku"))
                 if derate else [NOT_DERATED_EFFICIENCY_NOTE])
    hw.sku = entry.get("sku")
    hw.derate_datasheet = derate
    return hw


@dataclass(frozen=True, kw_only=True)
class HardwareOptions:
    """Hardware."""

    profile: str | None = option(None, "measured profile.json (from `ridgeline profile`)",
                                 exclusive="hardware", metavar="FILE")
    gpu: str | None = option(None, "GPU name: a bundled reference profile, else its datasheet "
                                   "(e.g. h100-sxm, h100-nvl, a100-sxm4, mi300x)",
                             exclusive="hardware", metavar="NAME")
    allow_unverified: bool = option(False, "plan on a --profile whose ceilings are not all "
                                           "verified (no plateau, noisy), with a warning naming "
                                           "them; refused otherwise")
    no_derate: bool = option(False, "price a datasheet (--gpu without a reference profile, and "
                                    "--compare-datasheet) at 100% of its peak TFLOP/s and "
                                    "bandwidth instead of x the published achievable fractions")

    def __post_init__(self) -> None:
        if self.profile and self.gpu:
            raise RidgelineError("give --profile or --gpu, not both")
        if not (self.profile or self.gpu):
            raise RidgelineError("no hardware: pass --profile PROFILE.json (measured) or "
                                 "--gpu NAME")

    def load(self) -> Hardware:
        if self.gpu:
            return hardware_from_gpu_name(self.gpu, derate=not self.no_derate)
        from ridgeline.roofline.profile import load_profile

        hw = hardware_from_profile(load_profile(self.profile), source="measured",
                                   refuse_untrusted=not self.allow_unverified)
        hw.derate_datasheet = not self.no_derate
        return hw


def hardware_from_gpu_name(name: str, *, derate: bool = True) -> Hardware:
    """Bundled reference profile (data/profiles/<sku>.json), else the datasheet, labelled
    (derated by its published achievable fractions unless `derate` is False).

    An unknown name is an error with the closest known names, never another part.
    """
    entry = datasheets.by_sku(name) or datasheets.lookup(name)
    skus = [name.lower().strip()] + ([entry["sku"]] if entry else [])
    for sku in skus:
        prof = _bundled_profile(sku)
        if prof is not None:
            hw = hardware_from_profile(prof, source="reference")
            hw.sku = sku
            hw.derate_datasheet = derate
            hw.warnings.insert(0, f"bundled reference profile of {hw.name}: measured on another "
                                  "machine, not this one; profile your own GPUs for a plan you can "
                                  "trust (`ridgeline profile`)")
            return hw
    if entry is None:
        close = datasheets.suggest(name)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        known = ", ".join(e["sku"] for e in datasheets.load_datasheets())
        raise RidgelineError(f"unknown GPU {name!r}: no reference profile or datasheet entry; "
                             f"{hint}(known: {known})")
    hw = hardware_from_datasheet(entry, derate=derate)
    how = ("x the published fractions real kernels reach (see the notes)" if derate else
           "at 100% (--no-derate), which real kernels do not reach")
    hw.warnings.insert(0, f"no measured profile of {entry['name']}: planning from its DATASHEET "
                          f"peaks {how}; every number below is labelled 'datasheet'")
    return hw


def datasheet_hardware_for(hw: Hardware, *, derate: bool | None = None) -> Hardware:
    """The datasheet twin of `hw` (for --compare-datasheet), derated as `hw.derate_datasheet`
    says (or `derate`): the comparison is against what a datasheet plan would price, and its
    notes say so. RidgelineError when no datasheet is known."""
    derate = hw.derate_datasheet if derate is None else derate
    if hw.source == "datasheet" and derate == hw.derate_datasheet:
        return hw
    entry = hw.profile.get("datasheet")
    if not (isinstance(entry, dict) and entry.get("memory_bandwidth_GBps")
            and entry.get("matmul_TFLOPS")):
        entry = (datasheets.by_sku(hw.sku) if hw.sku else None) or datasheets.lookup(hw.name)
    if entry is None:
        raise RidgelineError(f"no datasheet entry matches {hw.name!r}: cannot compare against a "
                             "datasheet")
    entry = copy.deepcopy(entry)
    entry.setdefault("name", hw.name)
    entry.setdefault("memory_bytes", hw.memory_bytes)
    return hardware_from_datasheet(entry, derate=derate)
