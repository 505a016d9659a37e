"""fit_model (roofline/model_fit.py): recovers a known model from records it generated."""

import copy
import dataclasses
import json
import math

import numpy as np
import pytest

from ridgeline.records import make_record, waived_record
from ridgeline.dtypes import BYTES as DTYPE_BYTES
from ridgeline.roofline.model import RooflineModel
from ridgeline.roofline import model_fit
from ridgeline.roofline.model_fit import fit_latency, fit_model, gemv_best, reference_dtype
from ridgeline.timing import Timing

H100_LIKE = {"kind": "cuda", "multiprocessors": 132}
SHEET = {"memory_bandwidth_GBps": 3350.0, "matmul_TFLOPS": {"bf16": 989.4, "fp8_e4m3": 1978.9}}


def _rec(t_s: float, graph: bool = False, **kw):
    timing = Timing([t_s * 1e3] * 5, "cuda-graph" if graph else "device-events",
                    launches_per_sample=16 if graph else 1)
    return make_record(timing=timing, validated=True, **kw)


GRAPH_OVERHEAD_US = 1.5


def synthetic_records(model: RooflineModel, dtypes=("bf16", "fp8_e4m3"), noise: float = 0.0,
                      seed: int = 0, gemv: bool = True, launch: bool = True, triton_gain=1.1):
    """Matmul (square + LLM shapes, event-timed: the model's overhead), gemv (torch and a faster
    triton, graph-timed: GRAPH_OVERHEAD_US) and launch records whose times come from `model`
    (times x lognormal noise)."""
    rng = np.random.default_rng(seed)
    in_graph = dataclasses.replace(model, overhead_us=GRAPH_OVERHEAD_US)

    def t_of(flops, moved, dtype, m, n, graph=False):
        t = (in_graph if graph else model).predict(flops, moved, dtype, m=m, n=n).time_s
        return t * float(np.exp(rng.normal(0.0, noise))) if noise else t

    recs = []
    for d in dtypes:
        e_in = DTYPE_BYTES[d]
        e_out = 2 if d.startswith("fp8") else e_in
        shapes = [(s, s, s, "square") for s in (256, 512, 1024, 2048, 3072, 4096, 6144, 8192)]
        shapes += [(m, n, k, "llm") for m in (16, 128, 512, 2048, 8192)
                   for k, n in ((4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672))]
        for m, n, k, kind in shapes:
            br, bw = (m * k + k * n) * e_in, m * n * e_out
            fl = 2.0 * m * n * k
            recs.append(_rec(t_of(fl, br + bw, d, m, n), probe="matmul", provider="torch", dtype=d,
                             bytes_read=br, bytes_written=bw, flops=fl, m=m, n=n, k=k,
                             shape_kind=kind))
    if gemv:
        for d in dtypes:
            wb = DTYPE_BYTES[d]
            for k, n in ((4096, 4096), (4096, 14336), (14336, 4096), (8192, 8192), (8192, 28672)):
                for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512):
                    br, bw = k * n * wb + b * k * 2, b * n * 2
                    fl = 2.0 * b * n * k
                    t = t_of(fl, br + bw, d, b, n, graph=True)
                    for provider, slow in (("triton", 1.0), ("torch", triton_gain)):
                        recs.append(_rec(t * slow, graph=True, probe="gemv", provider=provider,
                                         dtype=d,
                                         bytes_read=br, bytes_written=bw, flops=fl, batch=b, m=b,
                                         n=n, k=k, weight_bytes=k * n * wb))
    if launch:
        for mode, kernel, t in (("graph", "empty_graph", 2.5e-6),
                                ("graph", "torch_tiny_graph", 3.0e-6),
                                ("eager", "empty_eager", 6.0e-6),
                                ("eager", "torch_tiny_eager", 9.0e-6)):
            r = _rec(t, probe="launch", provider="torch", dtype="fp32", kernel=kernel)
            r["mode"] = mode
            recs.append(r)
    return recs


TRUE = RooflineModel(3000.0, {"bf16": 750.0, "fp8_e4m3": 1400.0},
                     {"bf16": 2e9, "fp8_e4m3": 4e9}, 2.5, overhead_us=4.0, overlap_p=3.0,
                     wave={"bf16": {"tile_m": 128, "tile_n": 256, "slots": 132}})


@pytest.fixture(scope="module")
def exact_fit():
    return fit_model(synthetic_records(TRUE), {}, SHEET, device=H100_LIKE)


def test_recovers_a_known_model_exactly(exact_fit):
    m = exact_fit
    assert m["bandwidth_GBps"] == pytest.approx(3000.0, rel=1e-3)
    # graph-timed gemv and event-timed matmul each get their overhead; the model uses graph
    assert m["overhead_us"] == pytest.approx(GRAPH_OVERHEAD_US, rel=1e-3)
    assert m["overhead"]["eager_us"] == pytest.approx(4.0, rel=1e-3)
    assert m["overhead"]["used"] == "graph"
    assert m["overlap_p"] == 3.0
    assert m["latency_floor_us"] == 2.5  # the fastest graph-replayed launch
    for d in ("bf16", "fp8_e4m3"):
        assert m["matmul"][d]["peak_TFLOPS"] == pytest.approx(TRUE.peak_TFLOPS[d], rel=1e-3)
        assert m["matmul"][d]["flops_half"] == pytest.approx(TRUE.flops_half[d], rel=1e-2)
    assert m["matmul"]["bf16"]["wave"] == {"tile_m": 128, "tile_n": 256, "slots": 132}
    assert "wave" not in m["matmul"]["fp8_e4m3"]
    # one streaming rate in the data: fp8's own was tried and did not pay
    assert m["bandwidth"]["per_dtype_tried"] == ["fp8_e4m3"]
    assert not any("bandwidth_GBps" in e for e in m["matmul"].values())
    fe = m["fit_error"]
    assert fe["meets_target"] and fe["matmul"]["worst"] < 1e-6 and fe["gemv"]["worst"] < 1e-6
    assert fe["matmul"]["n"] == 2 * (8 + 20) and fe["gemv"]["n"] == 2 * 50


def test_recovers_the_textbook_roofline():
    # no overhead, max(); floor = the launch records' graph floor
    true = RooflineModel(2000.0, {"bf16": 400.0}, {"bf16": 1e9}, 2.5)
    m = fit_model(synthetic_records(true, dtypes=("bf16",)), {}, None)
    assert m["overlap_p"] is None
    assert m["overhead"]["eager_us"] == 0.0  # no eager overhead in the data: stored as 0
    assert m["overhead_us"] == pytest.approx(GRAPH_OVERHEAD_US, rel=1e-3)
    assert m["bandwidth_GBps"] == pytest.approx(2000.0, rel=1e-3)
    assert m["matmul"]["bf16"]["peak_TFLOPS"] == pytest.approx(400.0, rel=1e-3)
    assert "wave" not in m["matmul"]["bf16"]  # no device given: no wave term tried


def test_terms_the_data_cannot_determine_are_stored_as_zero_with_a_note():
    # no eager overhead and no GEMM start-up: the fit runs both to its numerical floor
    true = RooflineModel(2000.0, {"bf16": 400.0}, {"bf16": 0.0}, 2.5)
    m = fit_model(synthetic_records(true, dtypes=("bf16",)), {}, None)
    assert m["overhead"]["eager_us"] == 0.0 and m["matmul"]["bf16"]["flops_half"] == 0.0
    assert m["undetermined"] == ["overhead.eager_us", "matmul.bf16.flops_half"]
    note = next(n for n in m["notes"] if n.startswith("not determined by the data"))
    assert "overhead.eager_us" in note and "matmul.bf16.flops_half" in note
    # what the data does determine is kept as fitted, and the fit still reproduces its records
    assert m["overhead_us"] == pytest.approx(GRAPH_OVERHEAD_US, rel=1e-3)
    assert m["fit_error"]["meets_target"]
    # without launch records the floor is the overhead: undetermined with it
    m = fit_model(synthetic_records(true, dtypes=("bf16",), launch=False, gemv=False), {}, None)
    assert m["latency_floor_us"] == 0.0 and m["overhead_us"] == 0.0
    assert {"overhead_us", "latency_floor_us"} <= set(m["undetermined"])


def test_determined_terms_are_not_marked(exact_fit):
    assert exact_fit["undetermined"] == []
    assert not any("not determined" in n for n in exact_fit["notes"])


def test_noisy_records_stay_within_tolerance():
    m = fit_model(synthetic_records(TRUE, noise=0.03, seed=1), {}, SHEET, device=H100_LIKE)
    assert m["bandwidth_GBps"] == pytest.approx(3000.0, rel=0.03)
    assert m["overhead"]["eager_us"] == pytest.approx(4.0, rel=0.15)
    assert m["overhead_us"] == pytest.approx(GRAPH_OVERHEAD_US, rel=0.15)
    for d in ("bf16", "fp8_e4m3"):
        assert m["matmul"][d]["peak_TFLOPS"] == pytest.approx(TRUE.peak_TFLOPS[d], rel=0.05)
    fe = m["fit_error"]
    assert fe["matmul"]["median"] < 0.05 and fe["gemv"]["median"] < 0.05
    assert fe["meets_target"]


def test_invalid_waived_and_failed_records_are_refused(exact_fit):
    recs = synthetic_records(TRUE)
    junk = []
    for r in recs[::7]:
        bad = copy.deepcopy(r)
        bad["time_ms_median"] *= 50.0  # garbage times: must never move the fit
        bad["status"], bad["validated"] = "invalid", False
        junk.append(bad)
    ok_but_unvalidated = copy.deepcopy(recs[3])
    ok_but_unvalidated["time_ms_median"] *= 50.0
    ok_but_unvalidated["validated"] = False
    junk.append(ok_but_unvalidated)
    junk.append(waived_record("matmul", "FP8 needs sm_89+", provider="torch", dtype="fp8_e4m3",
                              m=4096, n=4096, k=4096))
    junk.append(waived_record("gemv", "out of memory", status="failed", provider="triton",
                              dtype="bf16", batch=1, n=4096, k=4096))
    m = fit_model(recs + junk, {}, SHEET, device=H100_LIKE)
    assert m["bandwidth_GBps"] == pytest.approx(exact_fit["bandwidth_GBps"], rel=1e-9)
    assert m["matmul"] == exact_fit["matmul"]
    assert m["fit_error"]["matmul"]["n"] == exact_fit["fit_error"]["matmul"]["n"]


def test_bandwidth_source_gemv_else_hbm():
    with_gemv = fit_model(synthetic_records(TRUE, dtypes=("bf16",)), {}, None)
    bw = with_gemv["bandwidth"]
    assert bw["source"] == "gemv" and bw["fitted"]
    assert bw["gemv_plateau_GBps"] is not None and bw["gemv_plateau"]["max_batch"] == 16
    assert bw["gemv_plateau"]["min_weight_bytes"] >= 64e6
    ceilings = {"memory_bandwidth_GBps": {"read": 2900.0, "copy": 2800.0}}
    no_gemv = fit_model(synthetic_records(TRUE, dtypes=("bf16",), gemv=False), ceilings, None)
    assert no_gemv["bandwidth_GBps"] == 2900.0  # held at the hbm read plateau
    assert no_gemv["bandwidth"]["source"] == "hbm" and not no_gemv["bandwidth"]["fitted"]
    assert no_gemv["bandwidth"]["gemv_plateau_GBps"] is None


def test_gemv_plateau_is_the_best_provider_median():
    recs = synthetic_records(TRUE, dtypes=("bf16",))
    rows = gemv_best(recs)
    assert all(r["provider"] == "triton" for r in rows)
    assert all(r["runner_up_slowdown"] == pytest.approx(1.1) for r in rows)
    big_small_batch = [r["bw_GBps"] for r in rows if r["batch"] <= 16 and r["weight_bytes"] >= 64e6]
    m = fit_model(recs, {}, None)
    assert m["bandwidth"]["gemv_plateau_GBps"] == pytest.approx(float(np.median(big_small_batch)))
    assert m["bandwidth"]["gemv_plateau"]["n_points"] == len(big_small_batch)
    table = m["gemv_best_provider"]
    assert len(table) == 50 and {"dtype", "batch", "k", "n", "provider"} <= set(table[0])
    assert "_record" not in table[0]


def test_latency_floors_graph_and_eager():
    recs = synthetic_records(TRUE, dtypes=("bf16",))
    lat = fit_latency(recs)
    assert lat["graph_us"] == pytest.approx(2.5) and lat["eager_us"] == pytest.approx(6.0)
    assert lat["kernels"]["torch_tiny_graph"] == {"mode": "graph", "provider": "torch",
                                                  "time_us": pytest.approx(3.0)}
    assert lat["kernels"]["torch_tiny_eager"]["time_us"] == pytest.approx(9.0)
    # mode inferred from the timer when the record does not say
    r = _rec(3e-6, probe="launch", provider="torch", dtype="fp32", kernel="empty")
    r["timer"] = "cuda-graph"
    assert fit_latency([r])["graph_us"] == pytest.approx(3.0)
    r2 = _rec(7e-6, probe="launch", provider="torch", dtype="fp32", kernel="empty")
    assert fit_latency([r2])["eager_us"] == pytest.approx(7.0)
    assert fit_latency([r2])["graph_us"] is None


def test_without_launch_records_the_floor_is_the_overhead():
    m = fit_model(synthetic_records(TRUE, dtypes=("bf16",), launch=False), {}, None)
    assert m["latency_floor_us"] == m["overhead_us"] == m["overhead"]["graph_us"]
    assert m["overhead"]["eager_us"] > m["overhead_us"]
    # matmul only (one timing mode): the eager overhead is the model's
    m = fit_model(synthetic_records(TRUE, dtypes=("bf16",), launch=False, gemv=False),
                  {"memory_bandwidth_GBps": {"read": 3000.0}}, None, device=H100_LIKE)
    assert m["overhead"] == {"graph_us": None, "eager_us": pytest.approx(4.0, rel=1e-3),
                             "used": "eager"}
    assert m["latency_floor_us"] == m["overhead_us"]
    assert "overhead" in m["latency"]["floor_source"]


def test_ridge_points_measured_and_datasheet(exact_fit):
    model = RooflineModel.from_profile({"model": exact_fit})
    for d in ("bf16", "fp8_e4m3"):
        r = exact_fit["ridge_point_FLOP_per_byte"][d]
        peak = exact_fit["matmul"][d]["peak_TFLOPS"]
        assert r["measured"] == peak * 1e12 / (exact_fit["bandwidth_GBps"] * 1e9)
        assert r["measured"] == model.ridge_point(d)
        assert r["datasheet"] == SHEET["matmul_TFLOPS"][d] * 1e12 / (3350.0 * 1e9)
        assert r["ceilings"] is None  # no ceilings given to this fit
    ceilings = {"memory_bandwidth_GBps": {"read": 2900.0}, "matmul_TFLOPS": {"bf16": 700.0}}
    m = fit_model(synthetic_records(TRUE, dtypes=("bf16",)), ceilings, None)
    assert m["ridge_point_FLOP_per_byte"]["bf16"]["ceilings"] == 700.0 * 1e12 / (2900.0 * 1e9)


def test_fitted_model_predicts_like_the_truth(exact_fit):
    model = RooflineModel.from_profile({"model": exact_fit})
    truth = dataclasses.replace(TRUE, overhead_us=GRAPH_OVERHEAD_US)  # the model is graph-mode
    for M, K, N in ((1, 8192, 8192), (64, 4096, 14336), (4096, 4096, 4096), (16384, 8192, 28672)):
        for d in ("bf16", "fp8_e4m3"):
            got, want = model.predict_gemm(M, K, N, d), truth.predict_gemm(M, K, N, d)
            assert got.time_s == pytest.approx(want.time_s, rel=1e-3)
            assert got.bound == want.bound
    assert model.predict_gemm(1, 8192, 8192, "bf16").bound == "memory"
    assert model.predict_gemm(8192, 8192, 8192, "bf16").bound == "compute"
    assert model.predict_gemm(16, 64, 64, "bf16").bound == "latency"


def test_nothing_to_fit_gives_no_model():
    m = fit_model([waived_record("matmul", "no GPU", dtype="fp8_e4m3")], {}, None)
    assert "bandwidth_GBps" not in m and "matmul" not in m and m["notes"]
    # the planner then falls back to the ceilings
    prof = {"model": m, "ceilings": {"memory_bandwidth_GBps": {"read": 100.0},
                                     "matmul_TFLOPS": {"fp32": 1.0}}}
    assert RooflineModel.from_profile(prof).bandwidth_GBps == 100.0


def test_output_is_plain_json(exact_fit):
    text = json.dumps(exact_fit, allow_nan=False)
    back = json.loads(text)
    model = RooflineModel.from_profile({"model": back})
    assert model.predict_gemm(1, 4096, 4096, "bf16").time_s > 0
    assert back["fit_error"]["target"] == {"median_max": 0.05, "worst_max": 0.15}
    assert math.isfinite(back["overhead_us"])


# -- per-dtype streaming bandwidth ---------------------------------------------------------

# fp32 GEMVs stream at half the bf16 rate (as on the CPU: 5-8 GB/s against 10-16 GB/s)
TWO_RATES = RooflineModel(3000.0, {"bf16": 750.0, "fp32": 60.0}, {"bf16": 2e9, "fp32": 2e8},
                          2.5, overhead_us=4.0, overlap_p=3.0, bandwidth_by_dtype={"fp32": 1500.0})
DECODE_SHAPES = [(b, k, n) for b in (1, 2, 4, 8, 16) for k, n in ((4096, 4096), (8192, 28672))]


def _worst_bf16_gemv_error(fitted: dict, truth: RooflineModel) -> float:
    model = RooflineModel.from_profile({"model": fitted})
    truth = dataclasses.replace(truth, overhead_us=GRAPH_OVERHEAD_US)  # the model is graph-mode
    return max(abs(model.predict_gemm(b, k, n, "bf16").time_s
                   / truth.predict_gemm(b, k, n, "bf16").time_s - 1.0) for b, k, n in DECODE_SHAPES)


def test_a_dtype_that_streams_slower_gets_its_own_bandwidth(monkeypatch):
    recs = synthetic_records(TWO_RATES, dtypes=("bf16", "fp32"), noise=0.03, seed=2)
    m = fit_model(recs, {}, None)
    assert m["bandwidth_GBps"] == pytest.approx(3000.0, rel=0.03)  # the reference's: bf16
    assert m["matmul"]["fp32"]["bandwidth_GBps"] == pytest.approx(1500.0, rel=0.03)
    assert "bandwidth_GBps" not in m["matmul"]["bf16"]
    bw = m["bandwidth"]
    assert bw["reference_dtype"] == "bf16" and bw["per_dtype_tried"] == ["fp32"]
    assert bw["per_dtype_GBps"] == {"bf16": m["bandwidth_GBps"],
                                    "fp32": m["matmul"]["fp32"]["bandwidth_GBps"]}
    assert _worst_bf16_gemv_error(m, TWO_RATES) < 0.05
    # the ridge point of fp32 is on its own bandwidth
    ridge = m["ridge_point_FLOP_per_byte"]["fp32"]["measured"]
    assert ridge == pytest.approx(m["matmul"]["fp32"]["peak_TFLOPS"] * 1e12
                                  / (m["matmul"]["fp32"]["bandwidth_GBps"] * 1e9))
    # one shared bandwidth (the term never tried) is dragged down by fp32: bf16 priced slow
    monkeypatch.setattr(model_fit, "MIN_GEMV_FOR_OWN_BANDWIDTH", 10**9)
    shared = fit_model(recs, {}, None)
    assert shared["bandwidth"]["per_dtype_tried"] == []
    assert "per_dtype_GBps" not in shared["bandwidth"]
    assert shared["bandwidth_GBps"] < 0.95 * m["bandwidth_GBps"]
    assert _worst_bf16_gemv_error(shared, TWO_RATES) > 0.10


@pytest.mark.parametrize("noise", [0.0, 0.03])
def test_a_per_dtype_bandwidth_that_does_not_pay_is_not_kept(noise):
    one_rate = dataclasses.replace(TWO_RATES, bandwidth_by_dtype={})
    m = fit_model(synthetic_records(one_rate, dtypes=("bf16", "fp32"), noise=noise, seed=3),
                  {}, None)
    assert m["bandwidth"]["per_dtype_tried"] == ["fp32"]  # tried, and it did not pay
    assert "per_dtype_GBps" not in m["bandwidth"]
    assert not any("bandwidth_GBps" in e for e in m["matmul"].values())
    assert m["bandwidth_GBps"] == pytest.approx(3000.0, rel=0.03)
    assert RooflineModel.from_profile({"model": m}).bandwidth_by_dtype == {}


@pytest.mark.parametrize("fp8_GBps", [2000.0, 2800.0])
def test_the_wave_term_is_still_found_beside_a_per_dtype_bandwidth(fp8_GBps):
    # a GPU whose fp8 GEMVs stream slower than bf16's (torch._scaled_mm), bf16 GEMMs in waves;
    # 7% slower (2800) pays only once the wave term is in: the retry after the wave search
    truth = dataclasses.replace(TRUE, bandwidth_by_dtype={"fp8_e4m3": fp8_GBps})
    m = fit_model(synthetic_records(truth), {}, SHEET, device=H100_LIKE)
    assert m["bandwidth_GBps"] == pytest.approx(3000.0, rel=1e-3)
    assert m["matmul"]["fp8_e4m3"]["bandwidth_GBps"] == pytest.approx(fp8_GBps, rel=1e-3)
    assert m["matmul"]["bf16"]["wave"] == {"tile_m": 128, "tile_n": 256, "slots": 132}
    assert m["fit_error"]["gemv"]["worst"] < 1e-6 and m["fit_error"]["matmul"]["worst"] < 1e-6


def test_the_reference_dtype_has_the_most_gemv_cases_then_bf16_then_by_name():
    def items(**counts):
        return [{"probe": "gemv", "cdtype": d} for d, n in counts.items() for _ in range(n)]

    assert reference_dtype(items(fp32=5, bf16=4)) == "fp32"
    assert reference_dtype(items(fp32=4, bf16=4)) == "bf16"
    assert reference_dtype(items(fp32=4, fp16=4)) == "fp16"
    assert reference_dtype([{"probe": "matmul", "cdtype": "bf16"}]) is None
    # no gemv records: the bandwidth is the hbm plateau, no dtype gets its own
    m = fit_model(synthetic_records(TWO_RATES, dtypes=("bf16", "fp32"), gemv=False),
                  {"memory_bandwidth_GBps": {"read": 2900.0}}, None)
    assert m["bandwidth"]["reference_dtype"] is None and m["bandwidth"]["per_dtype_tried"] == []


def test_the_numpy_mirror_is_the_model():
    # _predict (the fit's inner loop) and RooflineModel.predict must agree for every record:
    # per-dtype bandwidth ratios, both overheads, flops_half, overlap p and the wave term
    recs = synthetic_records(TRUE)
    dtypes = ["bf16", "fp8_e4m3"]
    items = model_fit._fit_items(model_fit._best_matmul(recs), gemv_best(recs), dtypes)
    pts = model_fit._Points(items, dtypes)
    wave = {"bf16": {"tile_m": 128, "tile_n": 128, "slots": 132}}
    bw, ratio = 2500e9, {"bf16": 1.0, "fp8_e4m3": 0.6}
    ovh = {"graph": 1.5e-6, "eager": 4.0e-6}
    peak, half = {"bf16": 700e12, "fp8_e4m3": 1300e12}, {"bf16": 2e9, "fp8_e4m3": 5e9}
    theta = np.log([bw, ovh["graph"], ovh["eager"]]
                   + [v for d in dtypes for v in (peak[d], half[d])] + [ratio[d] for d in dtypes])
    floor_s = 2.5e-6
    for p in (None, 1.0, 3.0):
        got = model_fit._predict(theta, pts, floor_s, p, pts.wave_factors(wave))
        model = RooflineModel(bw / 1e9, {d: v / 1e12 for d, v in peak.items()}, half, 2.5,
                              overlap_p=p, wave=wave,
                              bandwidth_by_dtype={"fp8_e4m3": bw * ratio["fp8_e4m3"] / 1e9})
        for i, it in enumerate(items):
            m = dataclasses.replace(model, overhead_us=ovh[it["mode"]] * 1e6)
            want = m.predict(it["flops"], it["bytes"], it["dtype"], m=it["m"], n=it["n"]).time_s
            assert got[i] == pytest.approx(want, rel=1e-12)
