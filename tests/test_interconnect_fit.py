"""Alpha-beta fit of collectives, host-link plateau, p2p table, topology pass-through."""

import numpy as np
import pytest

from ridgeline.roofline.interconnect import busbw_factor
from ridgeline.roofline.interconnect_fit import alpha_beta_fit, fit_interconnect, plateau

SIZES = [4 * 2**k for k in range(29)]  # 4 B .. 1 GiB


def _rec(probe, size, t_s, *, n=8, dtype="bf16", status="ok", link="nvlink", provider="nccl"):
    algbw = size / t_s / 1e9
    return {"probe": probe, "provider": provider, "dtype": dtype, "status": status,
            "validated": status == "ok", "size_bytes": size, "world_size": n, "link": link,
            "nodes": 1, "time_ms_median": t_s * 1e3, "algbw_GBps": algbw,
            "busbw_GBps": algbw * busbw_factor(probe, n)}


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
    assert e["max_size_bytes"] == 2**30
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
