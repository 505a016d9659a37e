"""Alpha-beta fit of collectives (all-to-all too), host-link plateau, p2p table, topology."""

import json

import numpy as np
import pytest
from profile_fixtures import synthetic_profile

from ridgeline.errors import ProfileError
from ridgeline.roofline.interconnect import busbw_factor, collective_time
from ridgeline.roofline.interconnect_fit import (BW_DOMINANCE, alpha_beta_fit, bandwidth_sizes,
                                                 fit_interconnect, plateau)
from ridgeline.roofline.profile import load_profile, save_profile
from ridgeline.roofline.trust import NOISY_SPREAD, ceiling_statuses

SIZES = [4 * 2**k for k in range(29)]  # 4 B .. 1 GiB


def _rec(probe, size, t_s, *, n=8, dtype="bf16", status="ok", link="nvlink", provider="nccl",
         spread=0.02):
    algbw = size / t_s / 1e9
    t_ms = t_s * 1e3
    return {"probe": probe, "provider": provider, "dtype": dtype, "status": status,
            "validated": status == "ok", "size_bytes": size, "world_size": n, "link": link,
            "nodes": 1, "time_ms_median": t_ms, "time_ms_p20": t_ms * (1 - spread / 2),
            "time_ms_p80": t_ms * (1 + spread / 2), "algbw_GBps": algbw,
            "busbw_GBps": algbw * busbw_factor(probe, n)}


def _allreduce_fit(recs):
    return fit_interconnect(recs, {"kind": "cpu"})["allreduce"]["2"]


# gloo over loopback as measured on the 2-core CPU box: ~40 us latency, ~1.2 GB/s
GLOO_ALPHA_S, GLOO_BW = 40e-6, 1.2e9
CPU_SIZES = [4 * 4**k for k in range(11)]  # the CPU sweep: 4 B .. 4 MiB, x4


def _gloo(sizes, spread=lambda size: 0.02):
    return [_rec("allreduce", s, GLOO_ALPHA_S + s / GLOO_BW, n=2, dtype="fp32", provider="gloo",
                 link="loopback", spread=spread(s)) for s in sizes]


def test_fit_recovers_exact_parameters():
    alpha, bw = 12e-6, 185e9
    fit = alpha_beta_fit(SIZES, [alpha + s / bw for s in SIZES])
    assert fit["alpha_s"] == pytest.approx(alpha, rel=1e-6)
    assert fit["algbw_Bps"] == pytest.approx(bw, rel=1e-6)
    assert fit["fit_error_worst"] < 1e-6 and fit["n_points"] == len(SIZES)


def test_fit_is_robust_to_noise_and_a_protocol_bump():
    rng = np.random.default_rng(1823)
    alpha, bw = 25e-6, 40e9
    times = []
    for s in SIZES:
        t = (alpha + s / bw) * (1 + 0.02 * rng.standard_normal())
        if 64 * 2**10 <= s <= 1 * 2**20:
            t *= 1.4  # a mid-size protocol switch the line must not follow
        times.append(t)
    fit = alpha_beta_fit(SIZES, times)
    assert fit["alpha_s"] == pytest.approx(alpha, rel=0.05)
    assert fit["algbw_Bps"] == pytest.approx(bw, rel=0.03)
    assert fit["fit_error_worst"] > 0.3  # the bump is reported, not hidden
    assert fit["fit_error_median"] < 0.05


def test_fit_keeps_alpha_non_negative():
    fit = alpha_beta_fit([2**20, 2**24, 2**28], [2**20 / 1e10 * 0.9, 2**24 / 1e10, 2**28 / 1e10])
    assert fit["alpha_s"] >= 0.0 and fit["algbw_Bps"] > 0
    with pytest.raises(ValueError):
        alpha_beta_fit([4, 4], [1e-5, 1e-5])


def test_fit_interconnect_per_collective_and_world_size():
    recs = []
    truth = {("allreduce", 2): (8e-6, 90e9), ("allreduce", 8): (20e-6, 200e9),
             ("all_gather", 8): (10e-6, 300e9), ("reduce_scatter", 8): (11e-6, 290e9)}
    for (coll, n), (a, bw) in truth.items():
        recs += [_rec(coll, s, a + s / bw, n=n) for s in SIZES]
    # fp32 at n=8 is slower: the bf16 entry is the one the planner reads, fp32 sits in by_dtype
    recs += [_rec("allreduce", s, 30e-6 + s / 150e9, n=8, dtype="fp32") for s in SIZES]
    # an unvalidated record never counts
    recs.append(_rec("allreduce", 2**30, 1.0, n=8, status="invalid"))
    inter = fit_interconnect(recs, {"kind": "cuda"})
    e = inter["allreduce"]["8"]
    assert e["dtype"] == "bf16" and e["source"] == "measured" and e["backend"] == "nccl"
    assert e["link"] == "nvlink"
    assert e["alpha_us"] == pytest.approx(20.0, rel=1e-6)
    assert e["algbw_GBps"] == pytest.approx(200.0, rel=1e-6)
    assert e["busbw_GBps"] == pytest.approx(200.0 * 1.75, rel=1e-6)
    assert (e["size_min_bytes"], e["size_max_bytes"], e["n_points"]) == (4, 2**30, len(SIZES))
    assert e["status"] == "verified" and e["reason"] is None
    assert e["by_dtype"]["fp32"]["algbw_GBps"] == pytest.approx(150.0, rel=1e-6)
    assert inter["allreduce"]["2"]["busbw_GBps"] == pytest.approx(90.0, rel=1e-6)  # factor 1 at n=2
    assert inter["all_gather"]["8"]["busbw_GBps"] == pytest.approx(300.0 * 0.875, rel=1e-6)
    assert inter["reduce_scatter"]["8"]["alpha_us"] == pytest.approx(11.0, rel=1e-6)
    for key in ("alpha_us", "busbw_GBps", "algbw_GBps", "link", "source", "dtype", "backend",
                "fit_error_median", "fit_error_worst"):
        assert key in e


def test_host_link_plateau_p2p_and_topology():
    def hl(direction, memory, size, bw):
        return {"probe": "host_link", "status": "ok", "validated": True, "direction": direction,
                "memory": memory, "size_bytes": size, "bw_GBps": bw,
                "time_ms_median": size / bw / 1e6}

    ramp = [(4096, 2.0), (2**20, 30.0), (2**24, 52.0), (2**28, 55.0), (2**30, 54.0)]
    recs = [hl("h2d", "pinned", s, b) for s, b in ramp]
    recs += [hl("d2h", "pinned", s, b * 0.95) for s, b in ramp]
    recs += [hl("bidir", "pinned", s, b * 1.8) for s, b in ramp]
    recs += [hl("h2d", "pageable", s, b * 0.4) for s, b in ramp]
    recs += [{"probe": "p2p", "status": "ok", "validated": True, "src": 0, "dst": 1,
              "size_bytes": s, "bw_GBps": b * 7, "time_ms_median": s / (b * 7) / 1e6,
              "path": "nvlink",
              "path_code": "NV18"} for s, b in ramp]
    recs.append({"probe": "topology", "status": "info", "validated": False,
                 "topology": {"source": "nvml", "gpus": [{"index": 0}]}})
    inter = fit_interconnect(recs, {"kind": "cuda"})
    host = inter["host_link_GBps"]
    assert host["h2d"] == pytest.approx(54.0)  # median of 52, 55, 54 (within 10% of the best)
    assert host["d2h"] == pytest.approx(54.0 * 0.95)
    assert host["bidir"] == pytest.approx(54.0 * 1.8)
    assert host["source"] == "measured" and host["memory"] == "pinned"
    assert host["pageable"]["h2d"] == pytest.approx(54.0 * 0.4)
    assert host["latency_us"]["h2d"] == pytest.approx(4096 / 2.0 / 1e3)
    pair = inter["p2p"]["pairs"][0]
    assert (pair["src"], pair["dst"], pair["path"]) == (0, 1, "nvlink")
    assert inter["topology"]["source"] == "nvml"
    assert "allreduce" not in inter  # no collective measured: nothing made up


def test_plateau():
    assert plateau([1.0, 50.0, 54.0, 55.0]) == 54.0
    assert plateau([]) is None


def test_small_sizes_only_are_unverified():
    """The issue-9 sweep: a worker died after 16 KiB; the points hold a latency, not a bandwidth."""
    fit = _allreduce_fit(_gloo([s for s in CPU_SIZES if s <= 16384]))
    assert fit["status"] == "unverified" and fit["n_bandwidth_points"] == 0
    assert fit["reason"].startswith("bandwidth term not shown") and "16384 B" in fit["reason"]
    assert (fit["size_min_bytes"], fit["size_max_bytes"]) == (4, 16384)
    assert fit["spread"]["across_points"] is None


def test_full_cpu_sweep_is_verified_with_its_spread():
    fit = _allreduce_fit(_gloo(CPU_SIZES))
    assert fit["status"] == "verified" and fit["reason"] is None
    assert fit["busbw_GBps"] == pytest.approx(1.2, rel=1e-6)
    # 256 KiB (218 us), 1 MiB and 4 MiB have a size term over 4 x 40 us; 64 KiB (55 us) does not
    assert fit["n_bandwidth_points"] == 3
    assert fit["spread"]["samples_p20_p80"] == pytest.approx(0.02)
    assert fit["spread"]["across_points"] == pytest.approx(0.0, abs=1e-9)


def test_dominance_rule_at_its_edge():
    # largest size's term just under 4 x alpha: unverified; just over: verified
    top = BW_DOMINANCE * GLOO_ALPHA_S * GLOO_BW
    sizes = [4 * 2**k for k in range(20) if 4 * 2**k < top * 0.9]
    assert _allreduce_fit(_gloo(sizes))["status"] == "unverified"
    assert _allreduce_fit(_gloo(sizes + [int(top * 1.1)]))["status"] == "verified"


def test_scattered_samples_at_bandwidth_sizes_are_noisy():
    fit = _allreduce_fit(_gloo(CPU_SIZES, spread=lambda s: 0.4 if s == 4**11 else 0.02))
    assert fit["status"] == "noisy" and fit["spread"]["samples_p20_p80"] == pytest.approx(0.4)
    assert "40%" in fit["reason"] and "4194304 B" in fit["reason"]


def test_latency_jitter_at_small_sizes_is_not_noise():
    fit = _allreduce_fit(_gloo(CPU_SIZES, spread=lambda s: 5.0 if s < 2**16 else 0.02))
    assert fit["status"] == "verified"
    assert fit["spread"]["samples_p20_p80"] < NOISY_SPREAD


def test_a_failed_sweep_is_unverified_even_where_the_points_show_bandwidth():
    recs = _gloo([s for s in CPU_SIZES if s <= 2**20])
    recs.append({"probe": "allreduce", "status": "failed", "world_size": 2, "dtype": "fp32",
                 "validated": False, "reason": "allreduce n=2 fp32 stopped at 4194304 B: ...",
                 "size_bytes": 4 * 2**20})
    fit = _allreduce_fit(recs)
    assert fit["status"] == "unverified" and fit["n_bandwidth_points"] == 2
    assert fit["reason"].startswith("sweep incomplete: 1 size(s) from 4194304 B not measured")


def test_clamped_alpha_cannot_verify_a_flat_sweep():
    # With alpha clamped to 0 every size passes "size term >= 4 x alpha"; the measured rise
    # over the smallest size's time (>= 5x) is what keeps a flat sweep from showing bandwidth.
    times = [40e-6] * 8 + [44e-6, 52e-6]
    recs = [_rec("allreduce", s, t, n=2, dtype="fp32") for s, t in zip(CPU_SIZES, times)]
    assert bandwidth_sizes(recs, alpha_s=0.0, algbw_Bps=1e9) == []
    rising = recs + [_rec("allreduce", 4 * 2**20, 400e-6, n=2, dtype="fp32")]
    assert [r["size_bytes"] for r in bandwidth_sizes(rising, 0.0, 1e9)] == [4 * 2**20]
    assert _allreduce_fit(recs)["status"] == "unverified"


def test_trust_reads_the_fit_status():
    fit = _allreduce_fit(_gloo(CPU_SIZES[:6]))
    (c,) = ceiling_statuses({"interconnect": {"allreduce": {"2": fit}}})
    assert (c.name, c.status, c.reason) == ("allreduce n=2", "unverified", fit["reason"])


def _all_to_all_sweep():
    """all-to-all beside all-reduce at n = 2 and 8 (bf16, then a slower fp32 at n = 8)."""
    recs = [_rec("allreduce", s, 20e-6 + s / 200e9, n=8) for s in SIZES]
    recs += [_rec("all_to_all", s, 30e-6 + s / 120e9, n=8) for s in SIZES]
    recs += [_rec("all_to_all", s, 9e-6 + s / 80e9, n=2) for s in SIZES]
    recs += [_rec("all_to_all", s, 35e-6 + s / 100e9, n=8, dtype="fp32") for s in SIZES]
    # a backend without it at n = 4: a waived record, never a fit
    recs.append({"probe": "all_to_all", "status": "waived", "validated": False, "dtype": "bf16",
                 "world_size": 4, "reason": "all_to_all not supported by the x backend: ..."})
    return recs


def test_all_to_all_is_fitted_and_stored_beside_the_others():
    inter = fit_interconnect(_all_to_all_sweep(), {"kind": "cuda"})
    assert set(inter) == {"allreduce", "all_to_all"}
    assert sorted(inter["all_to_all"]) == ["2", "8"]  # n = 4 was waived: no entry made up
    e = inter["all_to_all"]["8"]
    assert e["alpha_us"] == pytest.approx(30.0, rel=1e-6)
    assert e["algbw_GBps"] == pytest.approx(120.0, rel=1e-6)
    assert e["busbw_GBps"] == pytest.approx(120.0 * 7 / 8, rel=1e-6)  # nccl-tests (n-1)/n
    assert inter["all_to_all"]["2"]["busbw_GBps"] == pytest.approx(80.0 / 2, rel=1e-6)
    assert e["dtype"] == "bf16" and e["by_dtype"]["fp32"]["algbw_GBps"] == pytest.approx(100.0)
    assert e["status"] == "verified" and e["source"] == "measured" and e["link"] == "nvlink"
    # the all-reduce fit is untouched by the all-to-all records beside it
    assert inter["allreduce"]["8"]["algbw_GBps"] == pytest.approx(200.0, rel=1e-6)
    # the model answers when asked directly (the planner does not ask: no EP model yet)
    est = collective_time("all_to_all", 2**26, 8, {"interconnect": inter})
    assert est.source == "measured" and est.time_s == pytest.approx(30e-6 + 2**26 / 120e9)
    names = {c.name for c in ceiling_statuses({"interconnect": inter})}
    assert {"all_to_all n=2", "all_to_all n=8", "allreduce n=8"} <= names


def test_the_interconnect_table_shows_all_to_all_and_says_it_is_not_planned():
    from ridgeline.reports.tables import interconnect_table

    inter = fit_interconnect(_all_to_all_sweep(), {"kind": "cuda"})
    table = interconnect_table({"interconnect": inter})
    rows = {(r[0], r[1]): r for r in table.rows}
    a2a = rows[("all_to_all", "8")]
    assert (a2a[2], a2a[3], a2a[4], a2a[5]) == ("105.0 GB/s busbw", "30.0 us", "nvlink", "measured")
    assert ("all_to_all", "4") not in rows and ("allreduce", "8") in rows
    assert "not used by the planner" in table.note
    del inter["all_to_all"]
    assert interconnect_table({"interconnect": inter}).note == ""


def test_a_profile_with_all_to_all_passes_its_checks(tmp_path):
    path = synthetic_profile(tmp_path / "p.json")
    profile = load_profile(path)
    profile["interconnect"].update(fit_interconnect(_all_to_all_sweep(), {"kind": "cuda"}))
    loaded = load_profile(save_profile(profile, tmp_path / "with_a2a.json"))
    assert loaded["interconnect"]["all_to_all"]["8"]["busbw_GBps"] == pytest.approx(105.0)
    # keyed by world size like every collective the reports sort and the planner looks up
    profile["interconnect"]["all_to_all"]["eight"] = profile["interconnect"]["all_to_all"].pop("8")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(profile))
    with pytest.raises(ProfileError, match="'interconnect.all_to_all.eight' is not keyed by"):
        load_profile(bad)
