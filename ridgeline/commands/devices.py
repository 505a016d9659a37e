"""List every accelerator torch can see (CUDA, ROCm) and the CPU, with capabilities.

    ridgeline devices [--json]

With GPUs present a topology section follows (ridgeline.topology): the path
between every GPU pair (NVLink, PCIe switch, through the CPU), PCIe link
generation and width current/max, NVLink links up, P2P access, and warnings
for links trained below their max. In --json each GPU carries its own
"topology" entry (its PCIe and NVLink links, and its row of the path and P2P
matrices).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _gib(n: int | None) -> str:
    return f"{n / 2**30:.1f} GiB" if n else "?"


def _topology(devices) -> dict | None:
    """The GPUs' topology in torch order, or None without GPUs (never fails the command)."""
    gpus = [d for d in devices if d.is_gpu]
    if not gpus:
        return None
    try:
        from ridgeline.topology import gpu_topology

        return gpu_topology([d.pci_bus_id for d in gpus])
    except Exception as exc:  # topology is informative: report, do not crash
        return {"source": "none", "note": f"topology not read: {exc}", "gpus": [], "paths": [],
                "path_kind": [], "p2p": {}, "warnings": []}


def _gpu_row(topo: dict, i: int) -> dict:
    """GPU i's part of the topology: its links and its row of each matrix."""
    def row(matrix):
        return matrix[i] if matrix and i < len(matrix) else None

    gpus = topo.get("gpus") or []
    return {"source": topo.get("source"),
            **({k: v for k, v in gpus[i].items() if k != "index"} if i < len(gpus) else {}),
            "paths": row(topo.get("paths")), "path_kind": row(topo.get("path_kind")),
            "p2p": {k: row(v) for k, v in (topo.get("p2p") or {}).items()},
            "warnings": [w for w in topo.get("warnings") or [] if w.startswith(f"GPU {i}:")]}


def run(args: argparse.Namespace) -> int:
    from ridgeline.device import list_devices

    devices = list_devices()
    topo = _topology(devices)
    if args.json:
        out = [d.to_dict() for d in devices]
        if topo is not None:
            for i, d in enumerate(x for x in out if x["kind"] in ("cuda", "rocm")):
                d["topology"] = _gpu_row(topo, i)
        print(json.dumps(out, indent=1, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ridgeline devices")
    for col in ("id", "name", "memory", "SMs/CUs/cores", "L2/LLC", "arch", "dtypes",
                "driver / runtime", "clocks & power", "PCIe / NVLink"):
        table.add_column(col)
    for d in devices:
        t = d.telemetry or {}
        arch = d.compute_capability and f"sm_{d.compute_capability.replace('.', '')}" or d.gfx_arch or "-"
        dtypes = ",".join(k for k, v in d.dtypes.items() if v)
        clocks = "-"
        if t.get("sm_clock_max_MHz"):
            clocks = (f"SM {t.get('sm_clock_MHz')}/{t.get('sm_clock_max_MHz')} MHz, "
                      f"mem {t.get('mem_clock_MHz')}/{t.get('mem_clock_max_MHz')} MHz, "
                      f"limit {t.get('power_limit_W')} W")
        link = "-"
        if t.get("pcie_gen_max"):
            link = (f"Gen{t.get('pcie_gen_current')}/{t.get('pcie_gen_max')} "
                    f"x{t.get('pcie_width_current')}/{t.get('pcie_width_max')}, "
                    f"NVLink up {t.get('nvlink_links_up', 0)}")
        table.add_row(d.id, d.name, _gib(d.memory_bytes), str(d.multiprocessors or "-"),
                      _gib(d.l2_cache_bytes) if d.l2_cache_bytes and d.l2_cache_bytes >= 2**30
                      else (f"{d.l2_cache_bytes / 2**20:.0f} MiB" if d.l2_cache_bytes else "?"),
                      arch, dtypes, f"{d.driver_version or '-'} / {d.runtime_version or '-'}",
                      clocks, link)
    Console().print(table)
    for d in devices:
        for note in d.notes:
            print(f"{d.id}: {note}")
        if d.telemetry.get("note"):
            print(f"{d.id}: {d.telemetry['note']}")
    if topo is not None:
        from ridgeline.topology import format_topology

        print("\ntopology")
        for line in format_topology(topo):
            print("  " + line)
    return 0
