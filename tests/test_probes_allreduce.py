"""The collective probe end to end on the CPU: 2 gloo processes, checked values, a fitted model.

Required in CI (not marked slow): the end-to-end run takes about 5 s, the fault
cases about 4 s each; every spawn is bounded by the probe's own watchdog.
Faults are injected through the worker's test-only `fault` option: a rank that
hangs, raises, or is SIGKILLed (a real kill of a real gloo process), or a
backend that lacks all-to-all.
"""

import pytest

from ridgeline.device import cpu_device
from ridgeline.probes.allreduce import AllReduceProbe, CollectiveError, build_config, spawn_world
from ridgeline.probes.base import ProbeContext
from ridgeline.roofline.interconnect import busbw_factor, tp_allreduce_time
from ridgeline.roofline.interconnect_fit import fit_interconnect
from ridgeline.roofline.trust import STATUSES
from ridgeline.timing import FakeTimer


def _ctx(**options):
    return ProbeContext(device=cpu_device(), timer=FakeTimer(), quick=True, options=options)


def test_two_process_gloo_sweep_checked_and_fitted():
    probe = AllReduceProbe()
    ctx = _ctx()
    assert probe.available(ctx) is None
    cases = probe.cases(ctx)
    assert [c["world_size"] for c in cases] == [2]
    records = probe.run(cases[0], ctx)
    measured = [r for r in records if r["status"] != "waived"]
    waived = [r for r in records if r["status"] == "waived"]
    assert {r["dtype"] for r in waived} == {"bf16"} and all(r["reason"] for r in waived)
    assert {r["probe"] for r in measured} == {"allreduce", "all_gather", "reduce_scatter",
                                              "all_to_all"}
    assert {r["probe"] for r in waived} == {"allreduce", "all_gather", "reduce_scatter",
                                            "all_to_all"}
    # every case was checked against the closed form, and passed
    assert all(r["status"] == "ok" and r["validated"] and r["max_abs_error"] == 0.0
               for r in measured)
    for r in measured:
        assert r["world_size"] == 2 and r["provider"] == "gloo" and r["link"] == "loopback"
        assert r["n_samples"] >= 5 and r["time_ms_min"] <= r["time_ms_median"] <= r["time_ms_p80"]
        t_s = r["time_ms_median"] * 1e-3
        assert r["algbw_GBps"] == pytest.approx(r["size_bytes"] / t_s / 1e9)
        assert r["busbw_GBps"] == pytest.approx(r["algbw_GBps"] * busbw_factor(r["probe"], 2))
    ar = sorted((r for r in measured if r["probe"] == "allreduce"), key=lambda r: r["size_bytes"])
    assert ar[0]["size_bytes"] == 4 and ar[-1]["size_bytes"] == 4 * 2**20 and len(ar) == 11
    ag_sizes = [r["size_bytes"] for r in measured if r["probe"] == "all_gather"]
    # 4 B rounds up to one fp32 per rank; sizes that round alike are measured once
    assert ag_sizes[0] == 8 and len(set(ag_sizes)) == len(ag_sizes)
    a2a = sorted((r for r in measured if r["probe"] == "all_to_all"), key=lambda r: r["size_bytes"])
    # nccl-tests' alltoall size: what each rank sends, one fp32 per peer at least; out of place
    assert [r["size_bytes"] for r in a2a] == [8] + [16 * 4**k for k in range(10)]
    assert all(r["kernel"] == "out_of_place" and r["size_bytes"] == r["count"] * 2 * 4
               and r["busbw_factor"] == 0.5 for r in a2a)

    inter = fit_interconnect(records, {"kind": "cpu"})
    fit = inter["allreduce"]["2"]
    assert fit["source"] == "measured" and fit["backend"] == "gloo" and fit["dtype"] == "fp32"
    assert fit["alpha_us"] >= 0 and fit["algbw_GBps"] > 0
    assert fit["busbw_GBps"] == pytest.approx(fit["algbw_GBps"])  # factor 1 at n=2
    # a shared 2-core machine may be noisy; the trust fields are there either way
    assert fit["status"] in STATUSES and (fit["reason"] is None) == (fit["status"] == "verified")
    assert (fit["size_min_bytes"], fit["size_max_bytes"], fit["n_points"]) == (4, 4 * 2**20, 11)
    assert set(inter) >= {"allreduce", "all_gather", "reduce_scatter", "all_to_all"}
    a2a_fit = inter["all_to_all"]["2"]
    assert a2a_fit["source"] == "measured" and a2a_fit["backend"] == "gloo"
    assert a2a_fit["busbw_GBps"] == pytest.approx(a2a_fit["algbw_GBps"] * 0.5)
    assert (a2a_fit["size_min_bytes"], a2a_fit["size_max_bytes"]) == (8, 4 * 2**20)
    est = tp_allreduce_time(256, 8, "fp32", 2, {"interconnect": inter})
    assert est.source == "measured" and est.time_s > 0


def test_hung_rank_ends_with_a_clear_error():
    config = build_config("cpu", True, options={
        "fault": {"rank": 1, "kind": "hang", "hang_s": 120}, "sizes": [4],
        "collectives": ["allreduce"]})
    with pytest.raises(CollectiveError) as err:
        spawn_world(config, 2, timeout_s=1.5, startup_timeout_s=60)
    msg = str(err.value)
    assert "hung" in msg and "rank 1: 'test hang: sleeping'" in msg and "killed all ranks" in msg


def test_dead_rank_fails_the_case_and_skips_larger_worlds():
    probe = AllReduceProbe()
    ctx = _ctx(fault={"rank": 1, "kind": "raise"}, sizes=[4], collectives=["allreduce"],
               world_sizes=[2, 4])
    recs = probe.run(probe.cases(ctx)[0], ctx)
    failed = [r for r in recs if r["status"] == "failed"]
    assert len(failed) == 1 and "rank 1 died" in failed[0]["reason"]
    assert "test failure injected on rank 1" in failed[0]["reason"]
    assert failed[0]["reason"].startswith("allreduce n=2 fp32 stopped at 4 B: ")
    later = probe.run(probe.cases(ctx)[1], ctx)  # world size 4 holds rank 1 too: not retried
    skipped = [r for r in later if r["status"] == "failed"]
    assert [(r["probe"], r["size_bytes"]) for r in skipped] == [("allreduce", 4)]
    assert skipped[0]["reason"] == ("allreduce n=4 fp32 not measured: skipped: world size 2 "
                                    "failed at allreduce fp32 4 B")


def test_killed_worker_is_a_failed_record_naming_where_it_died():
    """The issue-9 run: a worker SIGKILLed in the all-gather sweep must not become a fit."""
    probe = AllReduceProbe()
    ctx = _ctx(fault={"rank": 1, "kind": "kill", "at": ["all_gather", 16384]},
               sizes=[4, 1024, 16384, 65536])
    recs = probe.run(probe.cases(ctx)[0], ctx)
    ok = {(r["probe"], r["size_bytes"]) for r in recs if r["status"] == "ok"}
    assert ok == {("allreduce", 4), ("allreduce", 1024), ("allreduce", 16384),
                  ("allreduce", 65536), ("all_gather", 8), ("all_gather", 1024)}
    failed = [r for r in recs if r["status"] == "failed"]
    # nothing silently dropped: every case not measured is a failed record
    assert [(r["probe"], r["size_bytes"]) for r in failed] == [
        ("all_gather", 16384), ("all_gather", 65536), ("reduce_scatter", 8),
        ("reduce_scatter", 1024), ("reduce_scatter", 16384), ("reduce_scatter", 65536),
        ("all_to_all", 8), ("all_to_all", 1024), ("all_to_all", 16384), ("all_to_all", 65536)]
    died = failed[0]
    assert died["world_size"] == 2 and died["reason"].startswith(
        "all_gather n=2 fp32 stopped at 16384 B: ")
    assert "rank 1 died (signal SIGKILL)" in died["reason"] and "\n" not in died["reason"]
    assert all("stopped earlier, at all_gather fp32 16384 B" in r["reason"] for r in failed[1:])
    # the two all-gather points that exist are not a bandwidth: the fit says so
    fit = fit_interconnect(recs, {"kind": "cpu"})["all_gather"]["2"]
    assert fit["status"] == "unverified" and "sweep incomplete" in fit["reason"]
    assert fit["size_max_bytes"] == 1024


def test_backend_without_all_to_all_is_waived_not_a_crash():
    """The worker asks the backend on the group; one that lacks the collective (simulated with
    torch's own message) gives a waived record per dtype, and the rest of the sweep runs."""
    probe = AllReduceProbe()
    ctx = _ctx(fault={"kind": "no_all_to_all"}, sizes=[4, 1024],
               collectives=["all_to_all", "allreduce"])
    recs = probe.run(probe.cases(ctx)[0], ctx)
    a2a = [r for r in recs if r["probe"] == "all_to_all" and r["dtype"] == "fp32"]
    assert len(a2a) == 1 and a2a[0]["status"] == "waived" and a2a[0]["world_size"] == 2
    assert a2a[0]["reason"] == ("all_to_all not supported by the gloo backend: Backend gloo does "
                                "not support alltoall_base (test)")
    assert not [r for r in recs if r["status"] == "failed"]  # nothing counted as missing
    ok = [(r["probe"], r["size_bytes"]) for r in recs if r["status"] == "ok"]
    assert ok == [("allreduce", 4), ("allreduce", 1024)]  # the sweep went on after the waiver
    assert "all_to_all" not in fit_interconnect(recs, {"kind": "cpu"})
