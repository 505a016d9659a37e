"""Host-link and p2p copy cases on CPU tensors under the fake timer; waivers on the CPU device."""

import pytest
import torch

from ridgeline.device import cpu_device
from ridgeline.probes.base import ProbeContext
from ridgeline.probes.host_link import (HostLinkProbe, measure_copy, pattern_mismatch,
                                         pattern_tile)
from ridgeline.probes.p2p import P2PProbe, measure_p2p
from ridgeline.timing import FakeTimer

CPU = torch.device("cpu")
SPREAD_MEDIAN = 1.02  # FakeTimer's samples are base x linspace(0.98, 1.06, 11)


def _ctx():
    return ProbeContext(device=cpu_device(), timer=FakeTimer(), quick=True)


def test_cpu_device_waives_host_link_and_p2p():
    assert HostLinkProbe().available(_ctx()) == "the CPU device has no host link"
    assert "p2p waived" in P2PProbe().available(_ctx())


@pytest.mark.parametrize("direction,moved", [("h2d", 1), ("d2h", 1), ("bidir", 2)])
def test_copy_record_accounting(direction, moved):
    size = 1823 * 3  # odd: the pattern tail is checked too
    timer = FakeTimer(bw_GBps=10.0, latency_us=0.0)
    rec = measure_copy(direction, "pinned", size, CPU, timer)
    assert rec["probe"] == "host_link" and rec["status"] == "ok" and rec["validated"]
    assert rec["direction"] == direction and rec["memory"] == "pinned" and rec["size_bytes"] == size
    assert rec["link_bytes"] == moved * size
    t_s = moved * size / 10e9 * SPREAD_MEDIAN
    assert rec["time_ms_median"] == pytest.approx(t_s * 1e3, rel=1e-9)
    assert rec["bw_GBps"] == pytest.approx(10.0 / SPREAD_MEDIAN, rel=1e-9)  # link bytes / time
    assert rec["bw_GBps_per_direction"] == pytest.approx(10.0 / SPREAD_MEDIAN / moved, rel=1e-9)
    assert rec["latency_us"] == pytest.approx(t_s * 1e6, rel=1e-9)
    assert rec["host_memory_pinned"] is False  # no pinned memory without a GPU


def test_broken_copy_is_invalid(monkeypatch):
    """A source that does not hold the pattern the check expects: the copy is reported invalid."""
    import ridgeline.probes.patterns as patterns

    real = patterns.fill_periodic
    monkeypatch.setattr(patterns, "fill_periodic", lambda buf, tile: real(buf, tile.roll(1)))
    rec = measure_copy("h2d", "pageable", 4096, CPU, FakeTimer())
    assert rec["status"] == "invalid" and not rec["validated"] and rec["max_abs_error"] > 0


def _patterned(n, salt=3):
    from ridgeline.probes.patterns import fill_periodic

    buf = torch.empty(n, dtype=torch.uint8)
    fill_periodic(buf, pattern_tile(salt))
    return buf


@pytest.mark.parametrize("n", [1, 250, 251, 8 * 251 + 5, 10_007, 3 * 8 * 251 * 8 + 13])
def test_pattern_check_accepts_exact_patterns(n):
    # blocks of 8 x 251 bytes: many blocks, a ragged last one, a buffer shorter than one block
    assert pattern_mismatch(_patterned(n), pattern_tile(3), block_bytes=8 * 251) == 0.0
    assert pattern_mismatch(_patterned(n), pattern_tile(3)) == 0.0


@pytest.mark.parametrize("where", [0, 2007, 2008, 9_999, 10_006])
def test_pattern_check_finds_one_wrong_byte_anywhere_and_its_size(where):
    buf = _patterned(10_007)
    buf[where] = (int(buf[where]) + 7) % 256
    expect = abs(int(buf[where]) - int(pattern_tile(3)[where % 251]))
    assert pattern_mismatch(buf, pattern_tile(3), block_bytes=8 * 251) == float(expect) > 0
    assert pattern_mismatch(buf, pattern_tile(5)) > 0        # another pattern is not accepted


def test_pattern_check_of_an_unaligned_view_compares_bytes():
    buf = _patterned(4096 + 3)
    view = buf[3:]                                  # storage offset 3: no 8-byte words
    tile = pattern_tile(3).roll(-3)                 # the pattern as seen from byte 3
    assert pattern_mismatch(view, tile, block_bytes=8 * 251) == 0.0
    view[100] += 1
    assert pattern_mismatch(view, tile, block_bytes=8 * 251) == 1.0


def test_p2p_record():
    timer = FakeTimer(bw_GBps=300.0, latency_us=0.0)
    rec = measure_p2p(0, 1, 4099, CPU, CPU, timer, path="nvlink", path_code="NV18", p2p_access=True)
    assert rec["probe"] == "p2p" and rec["validated"] and (rec["src"], rec["dst"]) == (0, 1)
    assert rec["path"] == "nvlink" and rec["path_code"] == "NV18"
    assert rec["bw_GBps"] == pytest.approx(300.0 / SPREAD_MEDIAN, rel=1e-9)


def test_host_link_cases_without_pageable_bidir():
    probe = HostLinkProbe()
    ctx = _ctx()
    ctx.options["sizes"] = [4096, 65536]
    cases = probe.cases(ctx)
    assert cases[0].params == {"kind": "topology"}
    kinds = {(c["direction"], c["memory"]) for c in cases[1:]}
    assert kinds == {("h2d", "pinned"), ("d2h", "pinned"), ("bidir", "pinned"),
                     ("h2d", "pageable"), ("d2h", "pageable")}
    assert len(cases) == 1 + 5 * 2
    topo = probe.run(cases[0], ctx)[0]
    assert topo["probe"] == "topology" and topo["status"] == "info" and "topology" in topo
