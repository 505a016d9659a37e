"""GPU topology: NVLink links, PCIe link state, P2P capability, and the path between GPU pairs.

Read from NVML on NVIDIA (nvidia-ml-py), from amdsmi on AMD where installed;
where neither is readable the result says so (source "none") instead of
guessing. Nothing runs at import time.

    topo = gpu_topology()                    # GPUs in torch order, or NVML order without torch
    topo["paths"][i][j]       # nvidia-smi topo -m codes: X, NV18, PIX, PXB, PHB, NODE, SYS
    topo["path_kind"][i][j]   # "nvlink" | "xgmi" | "pcie_switch" | "cpu" | "unknown"
    topo["warnings"]      # e.g. a PCIe link trained below its max width

Path kinds: NVLink (direct or through NVSwitch), PCIe through one or more
switches (PIX, PXB), or through the CPU (PHB: the host bridge, NODE: across
host bridges of one NUMA node, SYS: across sockets).

A PCIe link trained below its max width, or a slot that caps the generation
below what the GPU supports, is a warning (a common fault on new nodes).
GPUs lower the link generation when idle, so a low *current* generation is a
warning only when the GPU is in its active performance state (P0).

    ridgeline devices          # prints this as a topology section
"""

from __future__ import annotations

import re
from typing import Any, Callable

# nvmlGpuTopologyLevel_t -> nvidia-smi topo -m code
_LEVEL_CODE = {0: "PIX", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}
_CODE_KIND = {"PIX": "pcie_switch", "PXB": "pcie_switch", "PHB": "cpu", "NODE": "cpu", "SYS": "cpu"}
# Worst-first ranking used to label a group of GPUs by its slowest pair.
_KIND_RANK = {"nvlink": 0, "xgmi": 1, "pcie_switch": 2, "cpu": 3, "unknown": 4}

_AUTO = object()


def normalize_pci_bus_id(text: Any) -> str | None:
    """'00000000:18:00.0' (NVML) and '0000:18:00.0' (torch) -> '0000:18:00.0'."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    m = re.search(r"([0-9a-fA-F]+):([0-9a-fA-F]+):([0-9a-fA-F]+)\.([0-7])", str(text))
    if not m:
        return None
    dom, bus, dev, fn = m.groups()
    return f"{int(dom, 16):04x}:{int(bus, 16):02x}:{int(dev, 16):02x}.{fn}"


def _const(nvml, name: str, default: int) -> int:
    value = getattr(nvml, name, default)
    if isinstance(value, tuple):  # some nvidia-ml-py versions define constants as 1-tuples
        value = value[0]
    return int(value)


def _try(fn: Callable | None, *args, default=None):
    if fn is None:
        return default
    try:
        return fn(*args)
    except Exception:
        return default


def load_nvml():
    """The initialised pynvml module, or None (no library, no driver, not NVIDIA)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def torch_gpu_pci_ids() -> list[str | None] | None:
    """PCI bus ids of the GPUs torch sees, in torch order; None when torch sees none."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        out: list[str | None] = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            bus = getattr(p, "pci_bus_id", None)
            dom, dev = getattr(p, "pci_domain_id", 0), getattr(p, "pci_device_id", 0)
            out.append(None if bus is None else f"{dom:04x}:{bus:02x}:{dev:02x}.0")
        return out
    except Exception:
        return None


def _torch_p2p(n: int) -> list[list[bool | None]] | None:
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return _matrix(n, torch.cuda.can_device_access_peer)
    except Exception:
        return None


def _matrix(n: int, fn: Callable[[int, int], Any]) -> list[list[bool | None]]:
    return [[None if i == j else bool(fn(i, j)) for j in range(n)] for i in range(n)]


def _empty(source: str, note: str | None) -> dict[str, Any]:
    return {"source": source, "note": note, "gpus": [], "paths": [], "path_kind": [],
            "p2p": {}, "warnings": []}


def gpu_topology(pci_bus_ids: list[str | None] | None = None, *, nvml: Any = _AUTO,
                 can_access_peer: Callable[[int, int], bool] | None | Any = _AUTO
                 ) -> dict[str, Any]:
    """Topology of the GPUs (torch order when `pci_bus_ids` is given or torch sees GPUs).

    `nvml` and `can_access_peer` may be injected (tests); by default NVML is
    loaded if present and torch's `can_device_access_peer` gives the P2P matrix.
    """
    if pci_bus_ids is None:
        pci_bus_ids = torch_gpu_pci_ids()
    if nvml is _AUTO:
        nvml = load_nvml()
    if nvml is None:
        topo = _amdsmi_topology(pci_bus_ids)
        if topo is None:
            topo = _empty("none",
                          "NVML not available (not NVIDIA, or no driver): topology not read")
            if pci_bus_ids:
                topo["gpus"] = [{"index": i, "pci_bus_id": p} for i, p in enumerate(pci_bus_ids)]
    else:
        topo = nvml_topology(nvml, pci_bus_ids)
    n = len(topo["gpus"])
    if can_access_peer is _AUTO:
        matrix = _torch_p2p(n) if n and pci_bus_ids is not None else None
    elif can_access_peer is not None:
        matrix = _matrix(n, can_access_peer)
    else:
        matrix = None
    if matrix is not None:
        topo["p2p"]["torch"] = matrix
    return topo


def _handles(nvml, pci_bus_ids: list[str | None] | None) -> list[Any]:
    if pci_bus_ids is None:
        count = _try(nvml.nvmlDeviceGetCount, default=0) or 0
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    out = []
    by_pci = getattr(nvml, "nvmlDeviceGetHandleByPciBusId", None)
    for i, pci in enumerate(pci_bus_ids):
        h = None
        if pci and by_pci is not None:
            # NVML wants the 8-digit domain form on some versions, accepts 4 on others
            for form in (pci, "0000" + pci):
                h = _try(by_pci, form.encode())
                if h is None:
                    h = _try(by_pci, form)
                if h is not None:
                    break
        out.append(h if h is not None else nvml.nvmlDeviceGetHandleByIndex(i))
    return out


def _pci_of(nvml, h) -> str | None:
    info = _try(nvml.nvmlDeviceGetPciInfo, h)
    return normalize_pci_bus_id(getattr(info, "busId", None)) if info is not None else None


def _pcie(nvml, h) -> dict[str, Any]:
    return {
        "gen_current": _try(nvml.nvmlDeviceGetCurrPcieLinkGeneration, h),
        "gen_max": _try(nvml.nvmlDeviceGetMaxPcieLinkGeneration, h),  # the link's: GPU and slot
        "gen_gpu_max": _try(getattr(nvml, "nvmlDeviceGetGpuMaxPcieLinkGeneration", None), h),
        "width_current": _try(nvml.nvmlDeviceGetCurrPcieLinkWidth, h),
        "width_max": _try(nvml.nvmlDeviceGetMaxPcieLinkWidth, h),
        "pstate": _try(getattr(nvml, "nvmlDeviceGetPerformanceState", None), h),
    }


def pcie_warnings(index: int, pcie: dict[str, Any]) -> list[str]:
    """Warnings for a PCIe link running below what it should (pure: tested on dicts)."""
    out = []
    wc, wm = pcie.get("width_current"), pcie.get("width_max")
    gc, gm, gg = pcie.get("gen_current"), pcie.get("gen_max"), pcie.get("gen_gpu_max")
    if wc and wm and wc < wm:
        out.append(f"GPU {index}: PCIe link trained at x{wc}, below its max x{wm} "
                   f"(reseat the card or check the riser: host-link bandwidth drops in proportion)")
    if gm and gg and gm < gg:
        out.append(f"GPU {index}: the slot limits PCIe to Gen{gm}; the GPU supports Gen{gg}")
    pstate = pcie.get("pstate")
    if gc and gm and gc < gm and pstate in (0, None):
        out.append(f"GPU {index}: PCIe link at Gen{gc}, below its max Gen{gm}"
                   + (" while active (P0)" if pstate == 0 else
                      " (performance state unknown: GPUs lower the link speed when idle; "
                      "the host_link probe shows whether it holds under load)"))
    return out


def _nvlinks(nvml, h, pci_to_index: dict[str, int]) -> list[dict[str, Any]]:
    links = []
    max_links = _const(nvml, "NVML_NVLINK_MAX_LINKS", 18)
    switch_type = _const(nvml, "NVML_NVLINK_DEVICE_TYPE_SWITCH", 2)
    gpu_type = _const(nvml, "NVML_NVLINK_DEVICE_TYPE_GPU", 0)
    for link in range(max_links):
        try:
            state = nvml.nvmlDeviceGetNvLinkState(h, link)
        except Exception:
            break  # links are numbered contiguously: the first error ends the list
        version = _try(getattr(nvml, "nvmlDeviceGetNvLinkVersion", None), h, link)
        remote = _try(getattr(nvml, "nvmlDeviceGetNvLinkRemotePciInfo", None), h, link)
        remote_pci = normalize_pci_bus_id(getattr(remote, "busId", None))
        rtype = _try(getattr(nvml, "nvmlDeviceGetNvLinkRemoteDeviceType", None), h, link)
        kinds = {gpu_type: "gpu", switch_type: "switch"}
        kind = None if rtype is None else kinds.get(rtype, "unknown")
        peer = pci_to_index.get(remote_pci) if remote_pci else None
        if kind is None and peer is not None:
            kind = "gpu"
        links.append({"link": link, "state": "up" if state == 1 else "down", "version": version,
                      "remote_pci_bus_id": remote_pci, "remote_type": kind, "peer": peer})
    return links


def nvml_topology(nvml, pci_bus_ids: list[str | None] | None = None) -> dict[str, Any]:
    """Topology from an initialised NVML module (real or a test double)."""
    topo = _empty("nvml", None)
    try:
        handles = _handles(nvml, pci_bus_ids)
    except Exception as exc:
        topo["source"] = "none"
        topo["note"] = f"NVML could not enumerate the GPUs: {exc}"
        return topo
    n = len(handles)
    pcis = [_pci_of(nvml, h) for h in handles]
    if pci_bus_ids is not None:
        pcis = [normalize_pci_bus_id(p) or q for p, q in zip(pci_bus_ids, pcis)]
    pci_to_index = {p: i for i, p in enumerate(pcis) if p}
    for i, h in enumerate(handles):
        name = _try(nvml.nvmlDeviceGetName, h)
        pcie = _pcie(nvml, h)
        links = _nvlinks(nvml, h, pci_to_index)
        up = [ln for ln in links if ln["state"] == "up"]
        topo["gpus"].append({
            "index": i, "name": name.decode() if isinstance(name, bytes) else name,
            "pci_bus_id": pcis[i], "pcie": pcie, "nvlink": links, "nvlink_up": len(up),
            "nvlink_version": max((ln["version"] or 0 for ln in up), default=None) or None,
        })
        topo["warnings"].extend(pcie_warnings(i, pcie))
        down = [ln["link"] for ln in links if ln["state"] != "up"]
        if up and down:
            topo["warnings"].append(f"GPU {i}: NVLink link(s) {down} down while {len(up)} are up")
    read_idx = _const(nvml, "NVML_P2P_CAPS_INDEX_READ", 0)
    nvlink_idx = _const(nvml, "NVML_P2P_CAPS_INDEX_NVLINK", 2)
    ok = _const(nvml, "NVML_P2P_STATUS_OK", 0)
    get_p2p = getattr(nvml, "nvmlDeviceGetP2PStatus", None)

    def status(i, j, idx):
        if i == j:
            return None
        s = _try(get_p2p, handles[i], handles[j], idx)
        return None if s is None else s == ok

    topo["p2p"]["nvml_read"] = [[status(i, j, read_idx) for j in range(n)] for i in range(n)]
    topo["p2p"]["nvml_nvlink"] = [[status(i, j, nvlink_idx) for j in range(n)] for i in range(n)]
    for i in range(n):
        codes, kinds = [], []
        for j in range(n):
            if i == j:
                codes.append("X")
                kinds.append("self")
                continue
            code = _pair_code(nvml, topo, handles, i, j)
            codes.append(code)
            kinds.append("nvlink" if code.startswith("NV") else _CODE_KIND.get(code, "unknown"))
        topo["paths"].append(codes)
        topo["path_kind"].append(kinds)
    return topo


def _pair_code(nvml, topo, handles, i: int, j: int) -> str:
    gi, gj = topo["gpus"][i], topo["gpus"][j]
    direct = sum(1 for ln in gi["nvlink"] if ln["state"] == "up" and ln["peer"] == j)
    if direct:
        return f"NV{direct}"
    to_switch_i, to_switch_j = (sum(1 for ln in g["nvlink"]
                                    if ln["state"] == "up" and ln["remote_type"] == "switch")
                                for g in (gi, gj))
    if to_switch_i and to_switch_j:  # NVSwitch: every GPU on the fabric reaches every other
        return f"NV{min(to_switch_i, to_switch_j)}"
    if topo["p2p"]["nvml_nvlink"][i][j]:
        return "NV"
    level = _try(getattr(nvml, "nvmlDeviceGetTopologyCommonAncestor", None), handles[i], handles[j])
    return _LEVEL_CODE.get(level, "?") if level is not None else "?"


def _amdsmi_topology(pci_bus_ids: list[str | None] | None) -> dict[str, Any] | None:
    """XGMI / PCIe paths between AMD GPUs from amdsmi, or None when amdsmi is absent."""
    try:
        import amdsmi

        amdsmi.amdsmi_init()
        handles = amdsmi.amdsmi_get_processor_handles()
    except Exception:
        return None
    if pci_bus_ids is not None:
        handles = handles[: len(pci_bus_ids)]
    topo = _empty("amdsmi", None)
    n = len(handles)
    for i in range(n):
        pcie = _try(amdsmi.amdsmi_get_pcie_info, handles[i]) or {}
        static, metric = pcie.get("pcie_static", {}), pcie.get("pcie_metric", {})
        p = {"gen_current": None, "gen_max": None, "gen_gpu_max": None,
             "width_current": metric.get("pcie_width"), "width_max": static.get("max_pcie_width"),
             "pstate": None}
        topo["gpus"].append({"index": i, "pci_bus_id": pci_bus_ids[i] if pci_bus_ids else None,
                             "pcie": p, "nvlink": [], "nvlink_up": 0})
        topo["warnings"].extend(pcie_warnings(i, p))
    for i in range(n):
        codes, kinds = [], []
        for j in range(n):
            if i == j:
                codes.append("X")
                kinds.append("self")
                continue
            info = _try(amdsmi.amdsmi_topo_get_link_type, handles[i], handles[j]) or {}
            text = str(info.get("type", "")).upper()
            kind = "xgmi" if "XGMI" in text else ("cpu" if "PCI" in text else "unknown")
            codes.append({"xgmi": f"XGMI{info.get('hops', '')}", "cpu": "PHB"}.get(kind, "?"))
            kinds.append(kind)
        topo["paths"].append(codes)
        topo["path_kind"].append(kinds)
    return topo


def pair_kind(topo: dict[str, Any], i: int, j: int) -> str:
    """Path kind between GPUs i and j ("unknown" when the topology could not be read)."""
    try:
        return topo["path_kind"][i][j]
    except (KeyError, IndexError, TypeError):
        return "unknown"


def group_link(topo: dict[str, Any], indices: list[int]) -> str:
    """The slowest path kind among a group of GPUs: what bounds a ring or tree collective."""
    kinds = [pair_kind(topo, i, j) for i in indices for j in indices if i < j]
    if not kinds:
        return "unknown"
    return max(kinds, key=lambda k: _KIND_RANK.get(k, 4))


def format_topology(topo: dict[str, Any]) -> list[str]:
    """Text lines for `ridgeline devices`: the path matrix, links per GPU, warnings."""
    lines: list[str] = []
    if topo.get("note"):
        lines.append(topo["note"])
    gpus = topo.get("gpus") or []
    if topo.get("paths"):
        header = "      " + " ".join(f"GPU{j:<4d}" for j in range(len(gpus)))
        lines.append(header)
        for i, row in enumerate(topo["paths"]):
            lines.append(f"GPU{i:<3d}" + " ".join(f"{c:<7s}" for c in row))
        lines.append("NV#: NVLink (# links)  PIX/PXB: PCIe switch(es)  "
                     "PHB/NODE/SYS: through the CPU")
    for g in gpus:
        p = g.get("pcie") or {}
        if p.get("gen_max") or p.get("width_max"):
            text = (f"GPU{g['index']}: PCIe Gen{p.get('gen_current')}/{p.get('gen_max')} "
                    f"x{p.get('width_current')}/{p.get('width_max')} (current/max)")
            if g.get("nvlink"):
                text += (f", NVLink {g.get('nvlink_up', 0)}/{len(g['nvlink'])} up"
                         + (f" (v{g['nvlink_version']})" if g.get("nvlink_version") else ""))
            lines.append(text)
    torch_p2p = (topo.get("p2p") or {}).get("torch")
    if torch_p2p and len(torch_p2p) > 1:
        denied = [f"{i}->{j}" for i, row in enumerate(torch_p2p)
                  for j, v in enumerate(row) if v is False]
        lines.append(f"P2P access denied: {', '.join(denied)}" if denied
                     else "P2P access: all pairs")
    for w in topo.get("warnings") or []:
        lines.append(f"warning: {w}")
    return lines
