"""Interconnect accounting, exact: nccl-tests busbw factors, sizes, counts, link bytes, patterns."""

from fractions import Fraction

import pytest
import torch

from ridgeline.probes import allreduce as ar
from ridgeline.probes import collective_worker as cw
from ridgeline.probes import host_link, p2p
from ridgeline.probes.patterns import (collective_modulus, fill_periodic, max_periodic_error,
                                       rank_tile_values, sum_is_exact, sum_tile_values)
from ridgeline.roofline.interconnect import busbw_factor, ring_steps

GiB, MiB, KiB = 2**30, 2**20, 2**10


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 8, 16, 64])
def test_busbw_factors_match_nccl_tests(n):
    # nccl-tests: all-reduce 2(n-1)/n, all-gather and reduce-scatter (n-1)/n, broadcast/reduce 1
    def exact(c):
        return Fraction(busbw_factor(c, n)).limit_denominator(1000)

    assert exact("allreduce") == Fraction(2 * (n - 1), n)
    assert exact("all_gather") == Fraction(n - 1, n)
    assert exact("reduce_scatter") == Fraction(n - 1, n)
    assert busbw_factor("broadcast", n) == 1.0 and busbw_factor("reduce", n) == 1.0


def test_busbw_factor_known_values_and_bad_world():
    assert busbw_factor("allreduce", 8) == 1.75
    assert busbw_factor("allreduce", 2) == 1.0
    assert busbw_factor("all_gather", 8) == 0.875
    assert busbw_factor("reduce_scatter", 4) == 0.75
    with pytest.raises(ValueError):
        busbw_factor("allreduce", 0)


def test_algbw_and_busbw_from_time():
    # 1 GiB all-reduce on 8 ranks in 5 ms: algbw = size / t, busbw = algbw * 7/4
    t = 5e-3
    assert ar.algbw_GBps(GiB, t) == GiB / t / 1e9
    assert ar.busbw_GBps("allreduce", GiB, 8, t) == pytest.approx(GiB / t / 1e9 * 1.75, rel=1e-15)
    assert ar.busbw_GBps("all_gather", GiB, 8, t) == pytest.approx(GiB / t / 1e9 * 0.875, rel=1e-15)


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
                                                   "collectives": ["allreduce", "all_gather"]},
                             max_bytes=32 * MiB)
    cases = [(c.collective, c.dtype, c.count, c.size_bytes) for c in cw.planned_cases(config, 4)]
    # all-gather over 4 ranks: 4 and 8 B both round up to one fp32 per rank (16 B), planned once;
    # 64 MiB is over max_bytes
    assert cases == [("allreduce", "fp32", 1, 4), ("allreduce", "fp32", 2, 8),
                     ("allreduce", "fp32", 4, 16), ("all_gather", "fp32", 1, 16)]


def test_cases_without_a_record_become_failed_records():
    config = ar.build_config("cpu", True, options={"sizes": [4, 1024, 65536]})
    done = [{"probe": "allreduce", "dtype": "fp32", "size_bytes": s, "status": "ok"}
            for s in (4, 1024)]
    failed = ar.missing_case_records(config, 2, done, "rank 1 died\n(signal SIGKILL)")
    # one record per case never measured, in the worker's order
    assert [(r["probe"], r["size_bytes"]) for r in failed] == [
        ("allreduce", 65536), ("all_gather", 8), ("all_gather", 1024), ("all_gather", 65536),
        ("reduce_scatter", 8), ("reduce_scatter", 1024), ("reduce_scatter", 65536)]
    assert all(r["status"] == "failed" and r["world_size"] == 2 and r["provider"] == "gloo"
               and r["dtype"] == "fp32" and not r["validated"] for r in failed)
    assert failed[0]["reason"] == "allreduce n=2 fp32 stopped at 65536 B: rank 1 died (signal SIGKILL)"
    assert failed[1]["reason"] == ("all_gather n=2 fp32 not measured: the sweep stopped earlier, "
                                   "at allreduce fp32 65536 B")
    assert len({r["reason"] for r in failed}) == 3  # one reason per collective: a summary groups
    measured = done + [{"probe": c, "dtype": "fp32", "size_bytes": s, "status": "invalid"}
                       for c in ("allreduce", "all_gather", "reduce_scatter")
                       for s in (65536, 8, 1024)]
    assert ar.missing_case_records(config, 2, measured, "unused") == []  # invalid is measured


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
