"""List every accelerator torch can see (CUDA, ROCm) and the CPU, with capabilities.

    ridgeline devices [--json]
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _gib(n: int | None) -> str:
    return f"{n / 2**30:.1f} GiB" if n else "?"


def run(args: argparse.Namespace) -> int:
    from ridgeline.device import list_devices

    devices = list_devices()
    if args.json:
        print(json.dumps([d.to_dict() for d in devices], indent=1, default=str))
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
    return 0
