"""Interconnect accounting, exact: nccl-tests busbw factors, sizes, counts, link bytes, patterns
(all-to-all's exchange check included)."""

from fractions import Fraction

import pytest
import torch

from ridgeline.probes import allreduce as ar
from ridgeline.probes import collective_worker as cw
from ridgeline.probes import host_link, p2p
from ridgeline.probes.patterns import (EXACT_INT_LIMIT, collective_modulus, fill_periodic,
                                       max_periodic_error, rank_tile_values, sum_is_exact,
                                       sum_tile_values)
from ridgeline.roofline.interconnect import busbw_factor, ring_steps

GiB, MiB, KiB = 2**30, 2**20, 2**10


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 8, 16, 64])
def test_busbw_factors_match_nccl_tests(n):
    # nccl-tests: all-reduce 2(n-1)/n, all-gather, reduce-scatter and all-to-all (n-1)/n,
    # broadcast/reduce 1
    def exact(c):
        return Fraction(busbw_factor(c, n)).limit_denominator(1000)

    assert exact("allreduce") == Fraction(2 * (n - 1), n)
    assert exact("all_gather") == Fraction(n - 1, n)
    assert exact("reduce_scatter") == Fraction(n - 1, n)
    assert exact("all_to_all") == Fraction(n - 1, n)
    assert busbw_factor("broadcast", n) == 1.0 and busbw_factor("reduce", n) == 1.0


def test_busbw_factor_known_values_and_bad_world():
    assert busbw_factor("allreduce", 8) == 1.75
    assert busbw_factor("allreduce", 2) == 1.0
    assert busbw_factor("all_gather", 8) == 0.875
    assert busbw_factor("reduce_scatter", 4) == 0.75
    assert busbw_factor("all_to_all", 8) == 0.875 and busbw_factor("all_to_all", 2) == 0.5
    with pytest.raises(ValueError):
        busbw_factor("allreduce", 0)


def test_algbw_and_busbw_from_time():
    # 1 GiB all-reduce on 8 ranks in 5 ms: algbw = size / t, busbw = algbw * 7/4
    t = 5e-3
    assert ar.algbw_GBps(GiB, t) == GiB / t / 1e9
    assert ar.busbw_GBps("allreduce", GiB, 8, t) == pytest.approx(GiB / t / 1e9 * 1.75, rel=1e-15)
    assert ar.busbw_GBps("all_gather", GiB, 8, t) == pytest.approx(GiB / t / 1e9 * 0.875, rel=1e-15)
    assert ar.busbw_GBps("all_to_all", GiB, 8, t) == pytest.approx(GiB / t / 1e9 * 0.875, rel=1e-15)


def test_nccl_tests_size_convention():
    # all-reduce: size is the per-rank buffer; all-gather / reduce-scatter: the total buffer
    assert cw.per_rank_count("allreduce", GiB, 2, 8) == GiB // 2
    assert cw.size_bytes_of("allreduce", GiB // 2, 2, 8) == GiB
    count = cw.per_rank_count("all_gather", GiB, 4, 8)
    assert count == GiB // 32
    assert cw.buffer_elems("all_gather", count, 8) == GiB // 4
    assert cw.size_bytes_of("all_gather", count, 4, 8) == GiB
    rs_count = cw.per_rank_count("reduce_scatter", GiB, 2, 4)
    assert cw.size_bytes_of("reduce_scatter", rs_count, 2, 4) == GiB
    # too small to split: one element per rank, and the size is rounded up like nccl-tests does
    assert cw.per_rank_count("all_gather", 4, 4, 8) == 1
    assert cw.size_bytes_of("all_gather", 1, 4, 8) == 32
    assert cw.per_rank_count("allreduce", 4, 2, 2) == 2  # 4 B of bf16
    assert cw.layout("allreduce") == cw.layout("all_gather") == "in_place"


@pytest.mark.parametrize("n,elem", [(2, 4), (3, 2), (8, 2), (16, 4)])
def test_all_to_all_size_is_what_each_rank_sends(n, elem):
    # alltoall_perf: per-peer count = count / nranks, size = per-peer count x nranks x type size
    # (the total each rank sends, its own chunk included); busbw factor (n-1)/n
    for requested in (4, 1000, 3 * MiB + 5, GiB):
        per_peer = cw.per_rank_count("all_to_all", requested, elem, n)
        assert per_peer == max(1, requested // (elem * n))
        size = cw.size_bytes_of("all_to_all", per_peer, elem, n)
        assert size == per_peer * n * elem and size <= max(requested, n * elem)
        assert cw.buffer_elems("all_to_all", per_peer, n) * elem == size  # input; output alike
        # the bytes that leave each rank (n-1 peers) are busbw's share of size, to the byte
        assert Fraction(size) * Fraction(n - 1, n) == per_peer * (n - 1) * elem
    assert cw.size_bytes_of("all_to_all", cw.per_rank_count("all_to_all", GiB, 2, 8), 2, 8) == GiB
    assert cw.layout("all_to_all") == "out_of_place"  # nccl-tests has no in-place all-to-all


def test_collective_sizes():
    full = ar.collective_sizes(quick=False)
    assert full[0] == 4 and full[-1] == GiB and len(full) == 29
    assert all(b == 2 * a for a, b in zip(full, full[1:]))
    quick = ar.collective_sizes(quick=True)
    assert quick[0] == 4 and quick[-1] == 4 * MiB and len(quick) == 11
    assert all(b == 4 * a for a, b in zip(quick, quick[1:]))
    assert ar.collective_sizes(quick=False, max_bytes=3 * MiB)[-1] == 2 * MiB


def test_world_size_sweep():
    assert ar.sweep_world_sizes(1) == []
    assert ar.sweep_world_sizes(2) == [2]
    assert ar.sweep_world_sizes(8) == [2, 4, 8]
    assert ar.sweep_world_sizes(6) == [2, 4, 6]
    assert ar.sweep_world_sizes(16) == [2, 4, 8, 16]


def test_iteration_counts_same_for_same_estimate():
    assert cw.iteration_counts(1.0, 20.0, 100.0, 20, 200) == (20, 100)
    assert cw.iteration_counts(50.0, 20.0, 100.0, 20, 200) == (2, 20)      # min iterations hold
    assert cw.iteration_counts(0.001, 20.0, 100.0, 20, 200) == (200, 200)  # capped
    assert ring_steps("allreduce", 8) == 14 and ring_steps("all_gather", 8) == 7


def test_planned_cases_in_worker_order_rounded_once():
    config = ar.build_config("cpu", True, options={"sizes": [4, 8, 16, 64 * MiB],
                                                   "collectives": ["allreduce", "all_gather",
                                                                   "all_to_all"]},
                             max_bytes=32 * MiB)
    cases = [(c.collective, c.dtype, c.count, c.size_bytes) for c in cw.planned_cases(config, 4)]
    # all-gather over 4 ranks: 4 and 8 B both round up to one fp32 per rank (16 B), planned once;
    # all-to-all alike (one fp32 per peer); 64 MiB is over max_bytes
    assert cases == [("allreduce", "fp32", 1, 4), ("allreduce", "fp32", 2, 8),
                     ("allreduce", "fp32", 4, 16), ("all_gather", "fp32", 1, 16),
                     ("all_to_all", "fp32", 1, 16)]


def test_default_sweep_includes_all_to_all_last():
    for kind in ("cpu", "cuda", "rocm"):
        assert ar.build_config(kind, True)["collectives"] == [
            "allreduce", "all_gather", "reduce_scatter", "all_to_all"]


def test_cases_without_a_record_become_failed_records():
    config = ar.build_config("cpu", True, options={"sizes": [4, 1024, 65536]})
    done = [{"probe": "allreduce", "dtype": "fp32", "size_bytes": s, "status": "ok"}
            for s in (4, 1024)]
    failed = ar.missing_case_records(config, 2, done, "rank 1 died\n(signal SIGKILL)")
    # one record per case never measured, in the worker's order
    assert [(r["probe"], r["size_bytes"]) for r in failed] == [
        ("allreduce", 65536), ("all_gather", 8), ("all_gather", 1024), ("all_gather", 65536),
        ("reduce_scatter", 8), ("reduce_scatter", 1024), ("reduce_scatter", 65536),
        ("all_to_all", 8), ("all_to_all", 1024), ("all_to_all", 65536)]
    assert all(r["status"] == "failed" and r["world_size"] == 2 and r["provider"] == "gloo"
               and r["dtype"] == "fp32" and not r["validated"] for r in failed)
    assert failed[0]["reason"] == "allreduce n=2 fp32 stopped at 65536 B: rank 1 died (signal SIGKILL)"
    assert failed[1]["reason"] == ("all_gather n=2 fp32 not measured: the sweep stopped earlier, "
                                   "at allreduce fp32 65536 B")
    assert len({r["reason"] for r in failed}) == 4  # one reason per collective: a summary groups
    measured = done + [{"probe": c, "dtype": "fp32", "size_bytes": s, "status": "invalid"}
                       for c in ("allreduce", "all_gather", "reduce_scatter", "all_to_all")
                       for s in (65536, 8, 1024)]
    assert ar.missing_case_records(config, 2, measured, "unused") == []  # invalid is measured


def test_a_waived_all_to_all_leaves_no_case_missing():
    """A backend without all-to-all: one waived record per dtype stands for all its sizes."""
    config = ar.build_config("cpu", True, options={"sizes": [4, 1024],
                                                   "collectives": ["allreduce", "all_to_all"]})
    done = [{"probe": "allreduce", "dtype": "fp32", "size_bytes": s, "status": "ok"}
            for s in (4, 1024)]
    waived = {"probe": "all_to_all", "dtype": "fp32", "status": "waived", "world_size": 2,
              "reason": "all_to_all not supported by the gloo backend: ..."}
    assert ar.missing_case_records(config, 2, done + [waived], "exited") == []
    # without it, both all-to-all cases are named
    assert [(r["probe"], r["size_bytes"]) for r in
            ar.missing_case_records(config, 2, done, "exited")] == [("all_to_all", 8),
                                                                    ("all_to_all", 1024)]


@pytest.mark.parametrize("dtype,n", [("bf16", 2), ("bf16", 16), ("bf16", 17), ("bf16", 64),
                                     ("fp16", 64), ("fp32", 8)])
def test_all_to_all_tiles_tell_every_pair_apart(dtype, n):
    tiles = {(s, d): cw.all_to_all_tile_values(s, d, n, dtype) for s in range(n) for d in range(n)}
    span = EXACT_INT_LIMIT[dtype] + 1
    # every value is an integer the dtype holds exactly: a permutation check needs tolerance 0
    values = sorted({v for t in tiles.values() for v in t})
    assert values[0] >= 0 and values[-1] < span
    held = torch.tensor(values, dtype=cw.torch_dtype(dtype))
    assert held.tolist() == [float(v) for v in values]
    # two elements tell every pair apart; one does while n^2 <= span (bf16: n <= 16)
    assert len({tuple(t[:2]) for t in tiles.values()}) == n * n
    assert (len({t[0] for t in tiles.values()}) == n * n) == (n * n <= span)
    assert all(len(t) == cw.A2A_TILE_LEN for t in tiles.values())


def _exchange(inputs, count, perm=None):
    """What all_to_all_single does: out_r chunk k = in_k chunk r (perm: a wrong source map)."""
    n = len(inputs)
    src = perm or (lambda r, k: k)
    return [torch.cat([inputs[src(r, k)].narrow(0, r * count, count) for k in range(n)])
            for r in range(n)]


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("n,count", [(2, 1), (3, 7), (5, 37), (4, 251)])
def test_all_to_all_check_passes_the_exchange_and_nothing_else(dtype, n, count):
    dt = cw.torch_dtype(dtype)
    inputs = []
    for r in range(n):
        buf = torch.empty(cw.buffer_elems("all_to_all", count, n), dtype=dt)
        cw.fill_all_to_all_input(buf, r, n, count, dtype)
        inputs.append(buf)
    # chunk d of rank s's input holds the (s, d) tile, periodically
    tile = cw.all_to_all_tile_values(n - 1, 1, n, dtype)
    chunk = inputs[n - 1].narrow(0, count, count).tolist()
    assert chunk == [float(tile[i % len(tile)]) for i in range(count)]
    outs = _exchange(inputs, count)
    assert all(cw.all_to_all_error(outs[r], r, n, count, dtype) == 0.0 for r in range(n))
    # a chunk from the wrong source, an unwritten chunk, a chunk meant for another rank: caught
    swapped = _exchange(inputs, count, perm=lambda r, k: (k + 1) % n if r == 0 else k)
    assert cw.all_to_all_error(swapped[0], 0, n, count, dtype) > 0
    unwritten = outs[1].clone()
    unwritten.narrow(0, (n - 1) * count, count).fill_(cw.UNWRITTEN)
    assert cw.all_to_all_error(unwritten, 1, n, count, dtype) >= 1
    assert cw.all_to_all_error(outs[0], 1, n, count, dtype) > 0


def test_unsupported_backend_is_a_reason_other_errors_are_not():
    torch_says = RuntimeError("Backend gloo does not support alltoall_base")
    reason = cw.unsupported_reason(torch_says, "all_to_all", "gloo")
    assert reason == ("all_to_all not supported by the gloo backend: "
                      "Backend gloo does not support alltoall_base")
    assert cw.unsupported_reason(NotImplementedError(), "all_to_all", "mpi") == (
        "all_to_all not supported by the mpi backend: NotImplementedError")
    assert "\n" not in cw.unsupported_reason(RuntimeError("not implemented\nfor this"), "a", "b")
    # a real failure (a dead peer, a timeout) is not a waiver: the sweep reports it as failed
    assert cw.unsupported_reason(RuntimeError("Connection reset by peer"), "all_to_all",
                                 "gloo") is None


def test_host_link_and_p2p_work_counts():
    assert host_link.link_bytes("h2d", 4096) == 4096
    assert host_link.link_bytes("d2h", 4096) == 4096
    assert host_link.link_bytes("bidir", 4096) == 8192
    with pytest.raises(ValueError):
        host_link.link_bytes("sideways", 1)
    assert p2p.link_bytes(12345) == 12345
    assert p2p.gpu_pairs(8) == [(i, j) for i in range(8) for j in range(8) if i != j]
    assert len(p2p.gpu_pairs(8)) == 56 and p2p.gpu_pairs(1) == []


def test_host_link_sizes_bounded_by_memory():
    full = host_link.host_link_sizes(False, 80 * GiB, 512 * GiB)
    assert full[0] == 4 * KiB and full[-1] == GiB and len(full) == 10
    assert host_link.host_link_sizes(True, 80 * GiB, 512 * GiB)[-1] == 64 * MiB
    small = host_link.host_link_sizes(False, 1 * GiB, 512 * GiB)   # a quarter: 256 MiB
    assert small[-1] == 256 * MiB
    assert host_link.host_link_sizes(False, 80 * GiB, 100 * MiB)[-1] == 16 * MiB


@pytest.mark.parametrize("n,m", [(1, 1), (7, 3), (1823, 251), (250, 251), (252, 251)])
def test_periodic_fill_and_check(n, m):
    tile = (torch.arange(m) * 7 % 251).to(torch.uint8)
    buf = torch.empty(n, dtype=torch.uint8)
    fill_periodic(buf, tile)
    assert buf.tolist() == [int(tile[i % m]) for i in range(n)]
    assert max_periodic_error(buf, tile, chunk_elems=5) == 0.0
    buf[n - 1] += 1  # the last element of the tail is checked too
    assert max_periodic_error(buf, tile, chunk_elems=5) == 1.0


@pytest.mark.parametrize("w", [2, 3, 8, 64])
def test_closed_form_sum_matches_brute_force(w):
    m = collective_modulus("bf16", w)
    assert sum_is_exact("bf16", w, m)
    for phase in (0, 1, m - 1):
        expect = sum_tile_values(w, m, phase)
        brute = [sum(rank_tile_values(r, m)[(j + phase) % m] for r in range(w)) for j in range(m)]
        assert expect == brute
        assert max(expect) <= 256


def test_closed_form_sum_is_exact_in_bf16():
    w = 8
    m = collective_modulus("bf16", w)
    tiles = torch.stack([torch.tensor(rank_tile_values(r, m), dtype=torch.bfloat16)
                         for r in range(w)])
    assert tiles.sum(0).tolist() == [float(v) for v in sum_tile_values(w, m)]


class _FakeComm:
    """One rank of a group, in process: `dist` raises what a backend would; `others` is the
    flag the other ranks contribute to the agreement (MAX)."""

    def __init__(self, error=None, others=0.0):
        import types

        self.torch, self.device, self.backend = torch, torch.device("cpu"), "fake"
        self.sent = []

        def all_to_all_single(out, inp, group=None):
            if error is not None:
                raise error
            self.sent.append(inp.numel())
            out.copy_(inp)

        self.dist = types.SimpleNamespace(all_to_all_single=all_to_all_single)
        self.others = others

    def sync(self):
        pass

    def reduce(self, values, op, group):
        assert op == "max"
        return [max(values[0], self.others)]


def test_all_to_all_waiver_agrees_across_ranks_and_passes_real_failures_on():
    ok = _FakeComm()
    assert cw.all_to_all_waiver(ok, None, 3, {}) is None and ok.sent == [3]  # one elem per peer
    lacking = _FakeComm(RuntimeError("Backend fake does not support alltoall_base"))
    assert cw.all_to_all_waiver(lacking, None, 2, {}) == (
        "all_to_all not supported by the fake backend: Backend fake does not support alltoall_base")
    # another rank could not run it: every rank waives, so all skip the same cases (no deadlock)
    assert cw.all_to_all_waiver(_FakeComm(others=1.0), None, 2, {}) == (
        "all_to_all not supported by the fake backend on another rank")
    with pytest.raises(RuntimeError, match="Connection reset"):
        cw.all_to_all_waiver(_FakeComm(RuntimeError("Connection reset by peer")), None, 2, {})
