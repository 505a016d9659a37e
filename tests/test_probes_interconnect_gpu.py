"""Interconnect on real GPUs (skipped without one): validated copies, topology, a 2-GPU all-reduce."""

import pytest
import torch

from ridgeline.device import get_device
from ridgeline.probes.base import ProbeContext
from ridgeline.timing import make_timer

pytestmark = pytest.mark.gpu
MiB = 2**20


def _gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.parametrize("direction,memory", [("h2d", "pinned"), ("d2h", "pinned"),
                                              ("bidir", "pinned"), ("h2d", "pageable")])
def test_host_link_copies_validate(direction, memory):
    from ridgeline.probes.host_link import measure_copy

    dev = get_device("cuda:0")
    rec = measure_copy(direction, memory, 64 * MiB + 4099, torch.device("cuda:0"), make_timer(dev))
    assert rec["validated"] and rec["status"] == "ok"
    assert rec["host_memory_pinned"] is (memory == "pinned")
    # a floor any PCIe Gen3 x8 link clears; the real check is against nvbandwidth (docs)
    assert rec["bw_GBps"] > 2.0


def test_topology_reads_every_gpu():
    from ridgeline.topology import gpu_topology

    topo = gpu_topology()
    if topo["source"] == "none":
        pytest.skip(topo["note"])
    assert len(topo["gpus"]) == _gpus()
    assert all(row[i] == "X" for i, row in enumerate(topo["paths"]))


@pytest.mark.skipif(_gpus() < 2, reason="needs two GPUs")
def test_p2p_and_allreduce_on_two_gpus():
    from ridgeline.probes.allreduce import AllReduceProbe
    from ridgeline.probes.p2p import P2PProbe

    dev = get_device("cuda:0")
    ctx = ProbeContext(device=dev, timer=make_timer(dev), quick=True,
                       options={"world_sizes": [2], "sizes": [4, 4096, 4 * MiB]})
    p2p = P2PProbe()
    assert p2p.available(ctx) is None
    recs = p2p.run(p2p.cases(ctx)[0], ctx)
    assert recs[0]["validated"] and recs[0]["path"] != "unknown"
    probe = AllReduceProbe()
    assert probe.available(ctx) is None
    recs = probe.run(probe.cases(ctx)[0], ctx)
    assert recs and all(r["validated"] for r in recs)
    assert {r["dtype"] for r in recs} == {"bf16", "fp32"}


@pytest.mark.skipif(_gpus() != 1, reason="the one-GPU waiver needs exactly one GPU")
def test_one_gpu_waives_allreduce_and_p2p():
    from ridgeline.probes.allreduce import AllReduceProbe
    from ridgeline.probes.p2p import P2PProbe

    dev = get_device("cuda:0")
    ctx = ProbeContext(device=dev, timer=make_timer(dev))
    assert AllReduceProbe().available(ctx) == "one GPU: all-reduce waived"
    assert P2PProbe().available(ctx) == "one GPU: p2p waived"
