"""RooflineModel (roofline/model.py): the functional form, bound classification, ridge points."""

import math

import pytest

from ridgeline.errors import ProfileError
from ridgeline.roofline.model import RooflineModel, smooth_max, wave_factor


def textbook(**kw) -> RooflineModel:
    # 2000 GB/s, bf16 500 TFLOP/s with no size effect, 4 us floor
    return RooflineModel(2000.0, {"bf16": 500.0, "fp8_e4m3": 1000.0}, {}, 4.0, **kw)


def test_positional_constructor_keeps_the_textbook_roofline():
    m = textbook()
    flops, moved = 2.0 * 4096**3, 3 * 4096**2 * 2
    expect = max(4e-6, moved / 2000e9, flops / 500e12)
    assert m.predict(flops, moved, "bf16").time_s == pytest.approx(expect, rel=1e-12)


def test_bound_classification_at_known_points():
    m = textbook()
    # decode GEMV, 8192x8192 bf16 at batch 1: 134 MB -> 67 us, memory-bound
    p = m.predict_gemm(1, 8192, 8192, "bf16")
    assert p.bound == "memory"
    assert p.time_s == pytest.approx((8192 * 8192 + 8192 + 8192) * 2 / 2000e9)
    assert "2000 GB/s" in p.ceiling
    # 8192^3 GEMM: 1.1 TFLOP -> 2.2 ms, compute-bound on bf16
    p = m.predict_gemm(8192, 8192, 8192, "bf16")
    assert p.bound == "compute" and p.time_s == pytest.approx(2.0 * 8192**3 / 500e12)
    # a 64x64x64 GEMM is below the 4 us floor
    p = m.predict_gemm(64, 64, 64, "bf16")
    assert p.bound == "latency" and p.time_s == 4e-6
    # fp8 weights run on the fp8 rate: half the bf16 compute time
    assert m.predict_gemm(8192, 8192, 8192, "fp8_e4m3").time_s == pytest.approx(
        m.predict_gemm(8192, 8192, 8192, "bf16").time_s / 2)


def test_overhead_adds_and_classifies_tiny_kernels_as_latency():
    m = textbook(overhead_us=3.0)
    moved = 200e6  # 100 us of streaming
    assert m.predict(0, moved, "bf16").time_s == pytest.approx(3e-6 + 100e-6)
    tiny = m.predict(1e3, 1e3, "bf16")  # 0.5 ns of streaming
    assert tiny.bound == "latency" and "floor" in tiny.ceiling
    assert tiny.time_s == 4e-6  # floor 4 us > 3 us + 0.5 ns
    # overhead above the floor: still latency-bound, but the overhead sets the time
    tiny = textbook(overhead_us=6.0).predict(1e3, 1e3, "bf16")
    assert tiny.bound == "latency" and "overhead" in tiny.ceiling
    assert tiny.time_s == pytest.approx(6e-6 + 0.5e-9)


def test_flops_half_is_a_startup_cost():
    m = RooflineModel(2000.0, {"bf16": 500.0}, {"bf16": 1e9}, 0.0)
    f = 1e9  # half the peak at flops_half
    assert m.throughput_flops_per_s("bf16", f) == pytest.approx(250e12)
    assert m.predict(f, 0, "bf16").time_s == pytest.approx((f + 1e9) / 500e12)


def test_gemm_startup_counts_as_latency():
    # 2 us of GEMM start-up (flops_half / peak), no floor, no overhead
    m = RooflineModel(2000.0, {"bf16": 500.0}, {"bf16": 1e9}, 0.0)
    small = m.predict_gemm(16, 64, 64, "bf16")  # 0.26 ns of work vs 2 us of start-up
    assert small.bound == "latency" and "start-up 2.0 us" in small.ceiling
    big = m.predict_gemm(4096, 4096, 4096, "bf16")
    assert big.bound == "compute" and big.time_s == pytest.approx((2 * 4096**3 + 1e9) / 500e12)


def test_smooth_max_properties():
    assert smooth_max(3.0, 4.0, None) == 4.0
    assert smooth_max(3.0, 4.0, math.inf) == 4.0
    assert smooth_max(3.0, 4.0, 1.0) == pytest.approx(7.0)
    assert smooth_max(3.0, 4.0, 2.0) == pytest.approx(5.0)
    assert smooth_max(0.0, 0.0, 2.0) == 0.0
    for p in (1.5, 3.0, 10.0):
        v = smooth_max(3.0, 4.0, p)
        assert 4.0 < v < 7.0 and v == pytest.approx(smooth_max(4.0, 3.0, p))
    assert smooth_max(1e-300, 1e300, 50.0) == pytest.approx(1e300)  # no overflow


def test_overlap_slows_the_ridge_region_only():
    m = textbook(overlap_p=2.0)
    ridge = m.ridge_point("bf16")
    moved = 1e9
    at_ridge = m.predict(ridge * moved, moved, "bf16")
    assert at_ridge.time_s == pytest.approx(math.sqrt(2) * moved / 2000e9)
    far = m.predict(ridge * moved * 100, moved, "bf16")  # 100x past the ridge
    assert far.bound == "compute"
    assert far.time_s == pytest.approx(ridge * moved * 100 / 500e12, rel=1e-3)


def test_wave_factor_exact_values():
    wave = {"tile_m": 128, "tile_n": 128, "slots": 4}
    # 2 x 3 = 6 tiles on 4 slots: 2 waves of 4 tiles = 8 tiles of work for 6
    assert wave_factor(256, 384, wave) == pytest.approx(8 / 6)
    assert wave_factor(256, 256, wave) == 1.0                     # 4 tiles, one full wave
    assert wave_factor(200, 256, wave) == pytest.approx(256 / 200)  # padding of M
    assert wave_factor(128, 256, wave) == 1.0                     # 2 tiles < 4 slots
    assert wave_factor(64, 4096, wave) == 1.0                     # skinny M: no tiling term
    assert wave_factor(4096, 4096, None) == 1.0


def test_wave_term_only_with_a_shape():
    # a slow compute roof (ridge 5 FLOP/B) so the GEMM below is compute-bound
    wave = {"bf16": {"tile_m": 128, "tile_n": 128, "slots": 4}}
    m = RooflineModel(2000.0, {"bf16": 10.0}, {}, 0.0, wave=wave)
    M, K, N = 256, 8192, 384
    plain = RooflineModel(2000.0, {"bf16": 10.0}, {}, 0.0).predict_gemm(M, K, N, "bf16")
    waved = m.predict_gemm(M, K, N, "bf16")
    assert plain.bound == waved.bound == "compute"
    assert waved.time_s == pytest.approx(plain.time_s * 8 / 6)
    # predict() without m, n has no shape: no wave term
    assert m.predict(plain.flops, plain.bytes, "bf16").time_s == pytest.approx(plain.time_s)


def test_ridge_point_is_peak_over_bandwidth():
    m = textbook()
    assert m.ridge_point("bf16") == 500.0 * 1e12 / (2000.0 * 1e9)
    assert m.ridge_point("fp8") == m.ridge_point("fp8_e4m3")


def test_compute_dtype_aliases():
    m = RooflineModel(1000.0, {"bf16": 100.0, "fp8_e4m3fnuz": 200.0})
    assert m.compute_dtype("fp8_e4m3") == "fp8_e4m3fnuz"
    assert m.compute_dtype("fp8") == "fp8_e4m3fnuz"      # fp8 -> e4m3 -> fnuz (MI300)
    assert m.compute_dtype("int4") == "bf16"
    assert m.compute_dtype("fp32") == "bf16"             # fallback


def test_from_profile_reads_the_fitted_section():
    fitted = {"bandwidth_GBps": 3000.0, "latency_floor_us": 2.5, "overhead_us": 4.0,
              "overlap_p": 3.0, "notes": ["n"],
              "matmul": {"bf16": {"peak_TFLOPS": 700.0, "flops_half": 2e9,
                                  "wave": {"tile_m": 128, "tile_n": 256, "slots": 132}}}}
    m = RooflineModel.from_profile({"model": fitted})
    assert (m.bandwidth_GBps, m.latency_floor_us) == (3000.0, 2.5)
    assert (m.overhead_us, m.overlap_p) == (4.0, 3.0)
    assert m.peak_TFLOPS == {"bf16": 700.0} and m.flops_half == {"bf16": 2e9}
    assert m.wave["bf16"]["slots"] == 132 and m.notes == ["n"]
    # a zero floor is a value, not a missing one
    zero = RooflineModel.from_profile({"model": {**fitted, "latency_floor_us": 0.0}})
    assert zero.latency_floor_us == 0.0
    # overlap None = hard max
    assert RooflineModel.from_profile({"model": {**fitted, "overlap_p": None}}).overlap_p is None


def test_from_profile_falls_back_to_ceilings_and_refuses_empty():
    prof = {"model": {}, "ceilings": {"memory_bandwidth_GBps": {"read": 900.0, "copy": 800.0},
                                      "matmul_TFLOPS": {"fp32": 20.0}}}
    m = RooflineModel.from_profile(prof)
    assert m.bandwidth_GBps == 900.0 and m.peak_TFLOPS == {"fp32": 20.0} and m.notes
    with pytest.raises(ProfileError):
        RooflineModel.from_profile({"model": {}, "ceilings": {}})


def test_a_dtype_with_its_own_bandwidth_streams_at_it():
    # bf16 at the shared 2000 GB/s, fp8 (any alias) at its own 1000 GB/s
    m = textbook(bandwidth_by_dtype={"fp8_e4m3": 1000.0})
    moved = 200e6
    assert m.bandwidth_for("bf16") == 2000.0 and m.bandwidth_for("fp8") == 1000.0
    assert m.bandwidth_for("int4") == 2000.0  # served by bf16: the shared bandwidth
    assert m.predict(0, moved, "bf16").time_s == pytest.approx(moved / 2000e9)
    fp8 = m.predict(0, moved, "fp8")
    assert fp8.time_s == pytest.approx(moved / 1000e9)
    assert fp8.bound == "memory" and fp8.ceiling == "fp8_e4m3 bandwidth 1000 GB/s"
    assert m.predict(0, moved, "bf16").ceiling == "bandwidth 2000 GB/s"
    assert m.predict_gemm(1, 8192, 8192, "fp8_e4m3").time_s == pytest.approx(
        (8192 * 8192 * 1 + 2 * 8192 * 2) / 1000e9)
    assert m.ridge_point("fp8") == 1000.0 * 1e12 / (1000.0 * 1e9)
    assert m.ridge_point("bf16") == 500.0 * 1e12 / (2000.0 * 1e9)


FITTED = {"bandwidth_GBps": 3000.0, "latency_floor_us": 2.5, "overhead_us": 4.0, "overlap_p": 3.0,
          "matmul": {"bf16": {"peak_TFLOPS": 700.0, "flops_half": 2e9},
                     "fp32": {"peak_TFLOPS": 60.0, "flops_half": 1e8}}}


def _by_hand(flops, moved, bw_GBps, peak_TFLOPS, half):
    """The documented form, written out: max(floor, overhead + smax_3(t_mem, t_comp))."""
    return max(2.5e-6, 4e-6 + smooth_max(moved / (bw_GBps * 1e9),
                                         (flops + half) / (peak_TFLOPS * 1e12), 3.0))


def test_an_old_model_section_predicts_as_before_and_a_new_field_only_moves_its_dtype():
    import copy

    old = RooflineModel.from_profile({"model": FITTED})
    assert old.bandwidth_by_dtype == {}
    new_section = copy.deepcopy(FITTED)
    new_section["matmul"]["fp32"]["bandwidth_GBps"] = 1500.0
    new = RooflineModel.from_profile({"model": new_section})
    assert new.bandwidth_by_dtype == {"fp32": 1500.0}
    for flops, moved in ((2.0 * 8192 * 8192, 8192 * 8192 * 2.0), (2.0 * 4096**3, 3 * 4096**2 * 2.0),
                         (1e3, 1e3)):
        bf16 = _by_hand(flops, moved, 3000.0, 700.0, 2e9)
        assert old.predict(flops, moved, "bf16").time_s == pytest.approx(bf16, rel=1e-12)
        assert new.predict(flops, moved, "bf16").time_s == old.predict(flops, moved, "bf16").time_s
        assert old.predict(flops, moved, "fp32").time_s == pytest.approx(
            _by_hand(flops, moved, 3000.0, 60.0, 1e8), rel=1e-12)
        assert new.predict(flops, moved, "fp32").time_s == pytest.approx(
            _by_hand(flops, moved, 1500.0, 60.0, 1e8), rel=1e-12)
    # a per-dtype bandwidth beside no peak, or null, is not used
    new_section["matmul"]["fp8_e4m3"] = {"peak_TFLOPS": None, "bandwidth_GBps": 900.0}
    new_section["matmul"]["bf16"]["bandwidth_GBps"] = None
    assert RooflineModel.from_profile({"model": new_section}).bandwidth_by_dtype == {"fp32": 1500.0}
