"""Probes: one module per measurement, found through REGISTRY (name -> "module:Class").

Modules are imported only when a probe is asked for, so `import ridgeline.probes`
touches neither hardware nor torch.
"""

from __future__ import annotations

import importlib
import importlib.util

from ridgeline.errors import RidgelineError

REGISTRY: dict[str, str] = {
    "hbm": "ridgeline.probes.hbm:HbmProbe",
    "matmul": "ridgeline.probes.matmul:MatmulProbe",
    "gemv": "ridgeline.probes.gemv:GemvProbe",
    "attention": "ridgeline.probes.attention:AttentionProbe",
    "moe": "ridgeline.probes.moe:MoeProbe",
    "dequant": "ridgeline.probes.dequant:DequantProbe",
    "launch": "ridgeline.probes.launch:LaunchProbe",
    "host_link": "ridgeline.probes.host_link:HostLinkProbe",
    "p2p": "ridgeline.probes.p2p:P2PProbe",
    "allreduce": "ridgeline.probes.allreduce:AllReduceProbe",
}

# What `ridgeline profile` runs when --probes is not given, in this order.
# The roofline's own ceilings first (a run cut short by a time limit keeps them), then the
# kernel-efficiency probes that are priced against them, then the multi-device ones.
DEFAULT_PROBES: tuple[str, ...] = ("hbm", "matmul", "gemv", "launch", "host_link", "attention",
                                   "moe", "dequant", "p2p", "allreduce")


def parse_probe_list(text: str | None) -> list[str]:
    """Probe names from "hbm,matmul" in the order given, duplicates dropped; None: the defaults.

    An empty or blank string is an error, not "everything": `--probes "$LIST"` with an
    unset variable must not start an hour-long full sweep."""
    if text is None:
        return [p for p in DEFAULT_PROBES if _importable(p)]
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not names:
        raise RidgelineError(f"--probes {text!r} names no probe; known: {', '.join(REGISTRY)}")
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise RidgelineError(f"unknown probe(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    return names


def _importable(name: str) -> bool:
    module = REGISTRY[name].split(":")[0]
    return importlib.util.find_spec(module) is not None


def get_probe(name: str):
    """Instantiate the probe registered under `name`."""
    if name not in REGISTRY:
        raise RidgelineError(f"unknown probe {name!r}; known: {', '.join(REGISTRY)}")
    module_name, cls_name = REGISTRY[name].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)()
