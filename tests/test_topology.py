"""Topology: NVML absent or broken handled; NVLink / PCIe / P2P parsing on an NVML double."""

import json
from types import SimpleNamespace

import pytest

from ridgeline import topology as T


class NVMLError(Exception):
    pass


class FakeNVML:
    """Three GPUs: 0 and 1 joined by two NVLinks, 2 on PCIe only (PIX to 0, SYS to 1)."""

    NVML_NVLINK_MAX_LINKS = 18
    NVML_NVLINK_DEVICE_TYPE_GPU = 0
    NVML_NVLINK_DEVICE_TYPE_SWITCH = 2
    NVML_P2P_CAPS_INDEX_READ = (0,)  # as some nvidia-ml-py versions spell it
    NVML_P2P_CAPS_INDEX_NVLINK = 2
    NVML_P2P_STATUS_OK = 0

    def __init__(self, switch=False):
        self.pci = ["00000000:18:00.0", "00000000:2A:00.0", "00000000:3B:00.0"]
        self.switch = switch
        self.pcie = [dict(gc=5, gm=5, gg=5, wc=16, wm=16, ps=0),
                     dict(gc=5, gm=5, gg=5, wc=8, wm=16, ps=0),     # trained at x8: a fault
                     dict(gc=1, gm=4, gg=5, wc=16, wm=16, ps=8)]    # idle Gen1; slot caps at Gen4
        self.links = {0: 2, 1: 2, 2: 0}

    def _h(self, h):
        return h

    def nvmlDeviceGetCount(self):
        return 3

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetHandleByPciBusId(self, bus):
        bus = bus.decode() if isinstance(bus, bytes) else bus
        for i, p in enumerate(self.pci):
            if T.normalize_pci_bus_id(p) == T.normalize_pci_bus_id(bus) and len(bus) == len(p):
                return i
        raise NVMLError("not found")

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=self.pci[h].encode())

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h):
        return self.pcie[h]["gc"]

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h):
        return self.pcie[h]["gm"]

    def nvmlDeviceGetGpuMaxPcieLinkGeneration(self, h):
        return self.pcie[h]["gg"]

    def nvmlDeviceGetCurrPcieLinkWidth(self, h):
        return self.pcie[h]["wc"]

    def nvmlDeviceGetMaxPcieLinkWidth(self, h):
        return self.pcie[h]["wm"]

    def nvmlDeviceGetPerformanceState(self, h):
        return self.pcie[h]["ps"]

    def nvmlDeviceGetNvLinkState(self, h, link):
        if link >= self.links[h]:
            raise NVMLError("not supported")
        return 1

    def nvmlDeviceGetNvLinkVersion(self, h, link):
        return 4

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h, link):
        if self.switch:
            return SimpleNamespace(busId=b"00000000:99:00.0")
        return SimpleNamespace(busId=self.pci[1 - h].encode())

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, h, link):
        return 2 if self.switch else 0

    def nvmlDeviceGetP2PStatus(self, a, b, idx):
        assert isinstance(idx, int)  # the 1-tuple constant must be unwrapped
        if idx == 2:
            return 0 if {a, b} == {0, 1} else 1
        return 0

    def nvmlDeviceGetTopologyCommonAncestor(self, a, b):
        levels = {frozenset({0, 1}): 30, frozenset({0, 2}): 10, frozenset({1, 2}): 50}
        return levels[frozenset({a, b})]


def test_nvml_absent_is_reported_not_raised():
    topo = T.gpu_topology([], nvml=None, can_access_peer=None)
    assert topo["source"] == "none" and "NVML" in topo["note"]
    assert topo["paths"] == [] and topo["warnings"] == []
    assert T.group_link(topo, [0, 1]) == "unknown"
    assert T.format_topology(topo)[0].startswith("NVML not available")
    json.dumps(topo)  # goes into profiles as is


def test_default_call_on_a_machine_without_nvml_or_gpu():
    topo = T.gpu_topology()
    assert topo["source"] in ("none", "nvml", "amdsmi")
    json.dumps(topo)


def test_broken_nvml_enumeration():
    class Broken:
        def nvmlDeviceGetHandleByIndex(self, i):
            raise NVMLError("driver/library version mismatch")

    topo = T.gpu_topology(["0000:18:00.0"], nvml=Broken(), can_access_peer=None)
    assert topo["source"] == "none" and "mismatch" in topo["note"]


def test_nvlink_pcie_and_paths_from_nvml():
    nvml = FakeNVML()
    ids = ["0000:18:00.0", "0000:2a:00.0", "0000:3b:00.0"]  # torch's 4-digit domain form
    topo = T.gpu_topology(ids, nvml=nvml, can_access_peer=lambda i, j: {i, j} != {1, 2})
    assert topo["source"] == "nvml"
    g0 = topo["gpus"][0]
    assert g0["nvlink_up"] == 2 and g0["nvlink_version"] == 4
    assert [ln["peer"] for ln in g0["nvlink"]] == [1, 1]
    assert topo["gpus"][2]["nvlink"] == []
    assert topo["paths"] == [["X", "NV2", "PIX"], ["NV2", "X", "SYS"], ["PIX", "SYS", "X"]]
    assert topo["path_kind"][0][2] == "pcie_switch" and topo["path_kind"][1][2] == "cpu"
    assert T.group_link(topo, [0, 1]) == "nvlink"
    assert T.group_link(topo, [0, 2]) == "pcie_switch"
    assert T.group_link(topo, [0, 1, 2]) == "cpu"
    assert topo["p2p"]["nvml_nvlink"][0][1] is True and topo["p2p"]["nvml_nvlink"][0][2] is False
    assert topo["p2p"]["torch"][1][2] is False and topo["p2p"]["torch"][0][0] is None
    warnings = " ".join(topo["warnings"])
    assert "GPU 1: PCIe link trained at x8, below its max x16" in warnings
    assert "GPU 2: the slot limits PCIe to Gen4" in warnings
    assert "GPU 2: PCIe link at Gen1" not in warnings  # idle (P8): power saving, not a fault
    lines = "\n".join(T.format_topology(topo))
    assert "NV2" in lines and "P2P access denied: 1->2, 2->1" in lines


def test_nvswitch_links_make_every_pair_nvlink():
    nvml = FakeNVML(switch=True)
    nvml.links = {0: 18, 1: 18, 2: 0}
    topo = T.gpu_topology(None, nvml=nvml, can_access_peer=None)
    assert topo["paths"][0][1] == "NV18"
    assert topo["gpus"][0]["nvlink"][0]["remote_type"] == "switch"
    assert topo["paths"][0][2] == "PIX"


@pytest.mark.parametrize("pcie,expect", [
    ({"gen_current": 5, "gen_max": 5, "width_current": 16, "width_max": 16, "pstate": 0}, []),
    ({"gen_current": 3, "gen_max": 5, "width_current": 16, "width_max": 16, "pstate": 0},
     ["GPU 0: PCIe link at Gen3, below its max Gen5 while active (P0)"]),
    ({"gen_current": 1, "gen_max": 5, "width_current": 16, "width_max": 16, "pstate": 8}, []),
    ({"gen_current": None, "gen_max": None, "width_current": None, "width_max": None}, []),
])
def test_pcie_warnings(pcie, expect):
    assert T.pcie_warnings(0, pcie) == expect


def test_normalize_pci_bus_id():
    assert T.normalize_pci_bus_id("00000000:18:00.0") == "0000:18:00.0"
    assert T.normalize_pci_bus_id(b"0000:2A:00.0") == "0000:2a:00.0"
    assert T.normalize_pci_bus_id("garbage") is None and T.normalize_pci_bus_id(None) is None


def test_devices_json_keeps_its_list_shape(capsys):
    from argparse import Namespace

    from ridgeline.commands import devices

    assert devices.run(Namespace(json=True)) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out, list) and out[-1]["kind"] == "cpu" and "topology" not in out[-1]


def test_devices_gpu_row():
    from ridgeline.commands.devices import _gpu_row

    topo = T.gpu_topology(None, nvml=FakeNVML(), can_access_peer=None)
    row = _gpu_row(topo, 1)
    assert row["paths"] == ["NV2", "X", "SYS"] and row["nvlink_up"] == 2
    assert len(row["warnings"]) == 1
    assert row["warnings"][0].startswith("GPU 1: PCIe link trained at x8, below its max x16")
