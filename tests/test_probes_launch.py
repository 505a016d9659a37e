"""The launch (latency-floor) probe: cases and waivers, end to end on the CPU, the tiny kernel."""

import pytest
import torch

from ridgeline.device import DeviceInfo, cpu_device
from ridgeline.errors import Waived
from ridgeline.probes import get_probe
from ridgeline.probes import launch as L
from ridgeline.probes.base import ProbeContext
from ridgeline.records import fit_ready
from ridgeline.timing import FakeTimer, HostTimer


def gpu_info() -> DeviceInfo:
    return DeviceInfo(id="cuda:0", kind="cuda", name="test gpu", memory_bytes=80 * 2**30,
                      multiprocessors=132, l2_cache_bytes=50 * 2**20, compute_capability="9.0")


def run_all(probe, ctx):
    records, waived = [], {}
    for case in probe.cases(ctx):
        try:
            records += probe.run(case, ctx)
        except Waived as w:
            waived[case["kernel"]] = w.reason
    return records, waived


def test_gpu_cases_graph_and_eager_for_triton_and_torch():
    ctx = ProbeContext(device=gpu_info(), timer=FakeTimer())
    probe = L.LaunchProbe()
    cases = probe.cases(ctx)
    assert [c["kernel"] for c in cases] == ["empty_graph", "empty_eager", "torch_tiny_graph",
                                            "torch_tiny_eager"]
    assert all(probe.waiver(c.params, ctx) is None for c in cases)
    assert {c["kernel"]: c["mode"] for c in cases}["empty_graph"] == "graph"


def test_cpu_runs_torch_tiny_eager_and_waives_triton_fake_timer():
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(latency_us=3.0))
    records, waived = run_all(get_probe("launch"), ctx)
    assert waived == {"empty_graph": L.TRITON_ON_CPU, "empty_eager": L.TRITON_ON_CPU}
    [r] = records
    assert (r["probe"], r["kernel"], r["provider"], r["mode"]) == ("launch", "torch_tiny_eager",
                                                                   "torch", "eager")
    assert r["status"] == "ok" and r["validated"] and r["launches_per_sample"] == 1
    assert (r["bytes_read"], r["bytes_written"], r["size_bytes"]) == (4, 4, 4)
    # FakeTimer: (8 bytes / 1 TB/s + 3 us) * 1.02 per launch
    assert r["time_ms_median"] == pytest.approx((8 / 1e12 + 3e-6) * 1e3 * 1.02)
    assert r["time_us_median"] == pytest.approx(r["time_ms_median"] * 1e3)
    assert fit_ready(records, "launch") == records


def test_cpu_host_timer_per_launch_time():
    ctx = ProbeContext(device=cpu_device(), timer=HostTimer(),
                       options={"launch": {"warmup_ms": 1, "rep_ms": 5}})
    [r], _ = run_all(L.LaunchProbe(), ctx)
    assert r["timer"] == "host-clock" and r["validated"]
    # a torch op on one element: dispatch-bound, between 100 ns and 10 ms on any CPU
    assert 1e-4 < r["time_ms_median"] < 10 and r["time_ms_min"] <= r["time_ms_median"]


def test_kernel_subset_option():
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(),
                       options={"kernels": ["torch_tiny_eager"]})
    assert [c["kernel"] for c in L.LaunchProbe().cases(ctx)] == ["torch_tiny_eager"]


def test_torch_graph_waived_on_cpu_if_asked():
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer())
    reason = L.LaunchProbe().waiver({"kernel": "torch_tiny_graph"}, ctx)
    assert reason == "CUDA graphs need a GPU"


def test_write_one_kernel_writes_one_element(kernel_device):
    from ridgeline.kernels.launch import write_one

    out = torch.zeros(3, device=kernel_device)
    write_one(out, 2.5)
    assert out.cpu().tolist() == [2.5, 0.0, 0.0]
    with pytest.raises(ValueError):
        write_one(torch.zeros(1, dtype=torch.float16, device=kernel_device), 1.0)


@pytest.mark.gpu
def test_gpu_launch_floor_end_to_end():
    from ridgeline.device import get_device
    from ridgeline.timing import make_timer

    dev = get_device("cuda:0")
    ctx = ProbeContext(device=dev, timer=make_timer(dev), options={"rep_ms": 20})
    records, waived = run_all(L.LaunchProbe(), ctx)
    by = {r["kernel"]: r for r in records}
    assert not waived and set(by) == set(L.KERNELS) and all(r["validated"] for r in records)
    assert by["empty_graph"]["launches_per_sample"] == L.GRAPH_LAUNCHES
    assert by["empty_graph"]["timer"] == "cuda-graph"
    # a launch inside a graph is cheaper than one from Python
    assert by["empty_graph"]["time_ms_median"] < by["empty_eager"]["time_ms_median"]
    assert 0 < by["empty_graph"]["time_ms_median"] < 0.05
