"""Measured kernel efficiencies (ridgeline.roofline.efficiency): the fit from probe records,
the interpolation, the checks, and how the planner prices with them. No torch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ridgeline.errors import ProfileError, RidgelineError
from ridgeline.roofline.efficiency import Curve, Efficiency, efficiency_note, fit_efficiency
from ridgeline.roofline.model import RooflineModel
from ridgeline.roofline.profile import load_profile
from ridgeline.sizing.hardware import hardware_from_profile
from ridgeline.sizing.latency import decode_step_time, prefill_time
from ridgeline.sizing.models import load_model
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.step_model import StepModel
from tests.profile_fixtures import synthetic_profile


def _record(probe, kernel, provider, time_ms, flops, moved, *, validated=True, **shape):
    return {"probe": probe, "kernel": kernel, "provider": provider, "dtype": "bf16",
            "status": "ok" if validated else "invalid", "validated": validated,
            "time_ms_median": time_ms, "flops": flops, "bytes_read": moved * 0.75,
            "bytes_written": moved * 0.25, **shape}


def _profile_dict(tmp_path, efficiency=None):
    prof = load_profile(synthetic_profile(tmp_path / "p.json"))
    if efficiency is not None:
        prof["efficiency"] = efficiency
    return prof


def test_fit_divides_the_roofline_time_by_the_measured_time_fastest_provider(tmp_path):
    prof = _profile_dict(tmp_path)
    model = RooflineModel.from_profile(prof)
    flops, moved = 4.0 * 8 * 4096 * 32 * 128, 8 * 4096 * 2 * 8 * 128 * 2.0
    roof_ms = model.predict(flops, moved, "bf16").time_s * 1e3
    shape = dict(batch=8, context=4096, q_heads=32, kv_heads=8, head_dim=128)
    records = [
        _record("attention", "decode", "torch_sdpa", 4 * roof_ms, flops, moved, **shape),
        _record("attention", "decode", "triton", 2 * roof_ms, flops, moved, **shape),
        # an unvalidated record is never fitted, however fast
        _record("attention", "decode", "bad", roof_ms / 10, flops, moved, validated=False,
                **shape),
        _record("gemv", None, "torch", 1.0, 1.0, 1.0, batch=1),  # another probe: ignored
    ]
    eff = fit_efficiency(records, prof)
    curve = eff["attention_decode"]["bf16"]
    assert curve["axes"] == ["batch", "kv_bytes_per_seq", "q_per_kv", "head_dim"]
    assert curve["providers"] == ["torch_sdpa", "triton"]
    (point,) = curve["points"]
    assert point["provider"] == "triton"
    # the KV bytes each sequence holds: context x 2 x kv_heads x head_dim x 2 B (bf16)
    assert (point["batch"], point["kv_bytes_per_seq"], point["q_per_kv"], point["head_dim"]) == (
        8, 4096 * 2 * 8 * 128 * 2, 4.0, 128)
    assert point["efficiency"] == pytest.approx(0.5)
    assert point["roofline_ms"] == pytest.approx(roof_ms)
    assert set(eff) == {"attention_decode"}


def test_fit_prices_weight_only_records_in_their_compute_dtype(tmp_path):
    prof = _profile_dict(tmp_path)
    model = RooflineModel.from_profile(prof)
    flops, moved = 2.0 * 4 * 4096 * 4096, 4096 * 4096 * 0.5 + 4096 * 32 * 2.0
    roof_ms = model.predict(flops, moved, "bf16").time_s * 1e3
    rec = _record("dequant", "gemv", "triton", roof_ms / 0.8, flops, moved, batch=4)
    rec.update(dtype="int4", compute_dtype="bf16")
    eff = fit_efficiency([rec], prof)
    assert eff["dequant"]["int4"]["points"][0]["efficiency"] == pytest.approx(0.8)


def test_no_curve_probe_records_no_section(tmp_path):
    assert fit_efficiency([_record("gemv", None, "torch", 1.0, 1.0, 1.0, batch=1)],
                          _profile_dict(tmp_path)) == {}


KV_PER_TOKEN = 2 * 8 * 128 * 2  # llama-3.1-8b bf16: K and V bytes per cached token


def _grid_curve(values):
    """A (batch, kv_bytes_per_seq) curve from {(batch, context of llama-3.1-8b): efficiency}."""
    return {"axes": ["batch", "kv_bytes_per_seq"],
            "points": [{"batch": b, "kv_bytes_per_seq": c * KV_PER_TOKEN, "efficiency": e}
                       for (b, c), e in values.items()]}


def _tokens_curve(values):
    return {"axes": ["batch", "context"],
            "points": [{"batch": b, "context": c, "efficiency": e} for (b, c), e in values.items()]}


def test_interpolation_is_multilinear_in_log2_and_held_at_the_edges():
    curve = Curve.of(_tokens_curve({(1, 1024): 0.2, (1, 4096): 0.6, (16, 1024): 0.4,
                                    (16, 4096): 0.8}))
    assert curve.at(batch=1, context=1024) == pytest.approx(0.2)
    assert curve.at(batch=1, context=2048) == pytest.approx(0.4)   # halfway in log2
    assert curve.at(batch=4, context=2048) == pytest.approx(0.5)   # the centre of the square
    assert curve.at(batch=1000, context=10**6) == pytest.approx(0.8)  # held at the corner
    assert curve.at(batch=1, context=1) == pytest.approx(0.2)
    assert curve.grid("context") == [1024.0, 4096.0]


def test_a_missing_corner_is_left_out_and_a_lone_point_is_the_nearest():
    curve = Curve.of(_tokens_curve({(1, 1024): 0.2, (1, 4096): 0.6, (16, 1024): 0.4}))
    # (16, 4096) failed: the three measured corners, reweighted
    assert curve.at(batch=4, context=2048) == pytest.approx((0.2 + 0.6 + 0.4) / 3)
    # the nearest measured shape in log2: (16, 1024) is 2 doublings away, (1, 4096) 4
    assert curve.at(batch=16, context=4096) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        curve.at(batch=0, context=1)


def test_factor_is_capped_at_one_and_none_when_not_measured():
    eff = Efficiency.of({"efficiency": {"attention_prefill": {"bf16": {
        "axes": ["tokens"], "points": [{"tokens": 128, "efficiency": 1.7}]}}}})
    assert eff.factor("attention_prefill", "bf16", tokens=500) == 1.0
    assert eff.factor("attention_prefill", "fp16", tokens=500) is None
    assert eff.factor("moe", "bf16", tokens_per_expert=4) is None
    assert Efficiency.of({}).curves == {}


def test_malformed_efficiency_section_is_one_line(tmp_path):
    path = synthetic_profile(tmp_path / "p.json")
    data = json.loads(path.read_text())
    data["efficiency"] = {"attention_decode": {"bf16": {"axes": ["batch", "kv_bytes_per_seq"],
                                                        "points": [{"batch": 1,
                                                                    "kv_bytes_per_seq": 2**20,
                                                                    "efficiency": -0.5}]}}}
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"efficiency\.attention_decode\.bf16\.points\[0\]"
                                           r"\.efficiency.*negative"):
        load_profile(path)


HALF = {"attention_decode": {"bf16": _grid_curve({(1, 512): 0.5, (1, 8192): 0.25,
                                                  (64, 512): 0.5, (64, 8192): 0.25})},
        "attention_prefill": {"bf16": {"axes": ["tokens"],
                                       "points": [{"tokens": 128, "efficiency": 0.5},
                                                  {"tokens": 8192, "efficiency": 0.5}]}}}


def _attention_s(step):
    return sum(op.total_s for op in step.ops if op.name == "attention")


def test_the_planner_divides_attention_by_the_measured_efficiency(tmp_path):
    spec, p = load_model("llama-3.1-8b"), Precision()
    bare = hardware_from_profile(_profile_dict(tmp_path))
    measured = hardware_from_profile(_profile_dict(tmp_path, HALF))
    # context 8192 (8191 cached + the new token) sits at the 0.25 edge
    a, b = decode_step_time(spec, p, bare, 8, 8191), decode_step_time(spec, p, measured, 8, 8191)
    assert _attention_s(b) == pytest.approx(4 * _attention_s(a))
    assert b.time_s - a.time_s == pytest.approx(3 * _attention_s(a))
    a, b = prefill_time(spec, p, bare, 1, 2048), prefill_time(spec, p, measured, 1, 2048)
    assert b.breakdown["attention"] > a.breakdown["attention"]
    assert b.time_s > a.time_s
    assert "decode attention (bf16)" in efficiency_note(measured.profile)
    assert any("not measured, priced at the roofline (optimistic): decode attention" in n
               for n in bare.notes)


def test_the_step_model_prices_decode_attention_as_the_planner_does(tmp_path):
    spec, p = load_model("llama-3.1-8b"), Precision()
    hw = hardware_from_profile(_profile_dict(tmp_path, HALF))
    sm = StepModel(spec, p, hw, 1)
    for batch, ctx in ((1, 100), (8, 2000), (64, 8191)):
        expected = decode_step_time(spec, p, hw, batch, ctx).time_s
        assert sm.step_s(batch, batch * (ctx + 1)) == pytest.approx(expected, rel=1e-9)
    # the vectorized run equals its steps one by one
    run = sm.decode_steps_s(16, 16 * 1000, 16, 50)
    one = [sm.step_s(16, 16 * 1000 + 16 * j) for j in range(50)]
    np.testing.assert_allclose(run, one, rtol=1e-12)
    # prefill: a single chunk is prefill_time of one prompt
    assert sm.step_s(0, 0, [(2048, 0)]) == pytest.approx(
        prefill_time(spec, p, hw, 1, 2048).time_s, rel=1e-9)
    assert math.isfinite(sm.decode_attention_s(4, 4 * 300))


def test_the_report_shows_each_curve_with_its_range():
    from ridgeline.reports.tables import efficiency_table

    table = efficiency_table({"efficiency": HALF})
    rows = {(r[0], r[1]): r for r in table.rows}
    decode = rows[("decode attention", "bf16")]
    # 8192 and 512 tokens of 4 KiB of K and V each
    assert decode[2:7] == ["4", "0.25", "batch=1 KV 32 MiB/seq", "0.50", "batch=1 KV 2 MiB/seq"]
    assert ("prefill attention", "bf16") in rows
    assert not efficiency_table({})


def test_decode_attention_is_priced_at_the_models_query_heads_per_kv_head(tmp_path):
    """A compute-bound decode kernel (CPU SDPA) gets less of the roofline the more query
    heads share a KV head: the curve's q_per_kv axis, read at the model's own ratio per rank."""
    def curve(eff_by_ratio):
        return {"axes": ["batch", "kv_bytes_per_seq", "q_per_kv"],
                "points": [{"batch": b, "kv_bytes_per_seq": kv, "q_per_kv": r, "efficiency": e}
                           for r, e in eff_by_ratio.items() for b in (1, 64)
                           for kv in (2**20, 2**26)]}
    prof = _profile_dict(tmp_path, {"attention_decode": {"bf16": curve({2: 0.4, 8: 0.1})}})
    hw = hardware_from_profile(prof)
    spec, p = load_model("llama-3.1-8b"), Precision()           # 32 / 8 heads: ratio 4
    bare = hardware_from_profile(_profile_dict(tmp_path))
    ratio4 = _attention_s(decode_step_time(spec, p, hw, 8, 2000))
    roof = _attention_s(decode_step_time(spec, p, bare, 8, 2000))
    assert ratio4 == pytest.approx(roof / 0.25)                 # halfway in log2 from 2 to 8
    # at TP=4 a rank holds 8 query heads and 2 KV heads: ratio 4 again
    sm = StepModel(spec, p, hw, 4)
    assert sm.step_s(8, 8 * 2001) == pytest.approx(
        decode_step_time(spec, p, hw, 8, 2000, tp=4).time_s, rel=1e-9)


def _timed(rec, spread):
    """`rec` with samples spread (p80 - p20) / median = `spread` around its median."""
    med = rec["time_ms_median"]
    return {**rec, "time_ms_p20": med * (1 - spread / 2), "time_ms_p80": med * (1 + spread / 2)}


def _prefill_records(spreads):
    return [_timed(_record("attention", "prefill", "torch_sdpa", 1.0 + i, 1e9, 1e6,
                           tokens=128 * 2**i, head_dim=128), s)
            for i, s in enumerate(spreads)]


def test_curve_trust_counts_the_shapes_that_scatter():
    from ridgeline.roofline.trust import curve_trust

    quiet = curve_trust([0.02, 0.03, 0.04, 0.05])
    assert quiet["status"] == "verified" and quiet["reason"] is None
    assert quiet["spread"] == {"samples_p20_p80": 0.05, "median_samples_p20_p80": 0.04,
                               "noisy_points": 0, "points": 4}
    # one disturbed shape of four is a quarter: named in the spread, the curve still verified
    one = curve_trust([0.02, 0.03, 0.04, 0.30])
    assert one["status"] == "verified" and one["spread"]["noisy_points"] == 1
    two = curve_trust([0.02, 0.03, 0.25, 0.30])
    assert two["status"] == "noisy"
    assert "2 of 4 shape(s) scatter above 10%" in two["reason"] and "worst 30%" in two["reason"]
    assert curve_trust([0.02])["status"] == "unverified"
    assert "one shape" in curve_trust([0.02])["reason"]
    assert curve_trust([0.02, None])["status"] == "unverified"


def test_the_fit_labels_each_curve_with_its_trust(tmp_path):
    prof = _profile_dict(tmp_path)
    eff = fit_efficiency(_prefill_records([0.02, 0.04, 0.03]), prof)
    curve = eff["attention_prefill"]["bf16"]
    assert [p["spread"] for p in curve["points"]] == pytest.approx([0.02, 0.04, 0.03])
    assert curve["status"] == "verified"
    assert curve["spread"]["samples_p20_p80"] == pytest.approx(0.04)
    noisy = fit_efficiency(_prefill_records([0.02, 0.4, 0.3]), prof)["attention_prefill"]["bf16"]
    assert noisy["status"] == "noisy"


def test_a_noisy_curve_is_refused_by_the_planner_and_flagged_in_the_report(tmp_path):
    from ridgeline.reports.tables import efficiency_table
    from ridgeline.roofline.trust import untrusted_ceilings

    prof = _profile_dict(tmp_path)
    prof["efficiency"] = fit_efficiency(_prefill_records([0.02, 0.4, 0.3]), prof)
    (flagged,) = [c for c in untrusted_ceilings(prof) if "efficiency" in c.name]
    assert flagged.name == "prefill attention bf16 efficiency" and flagged.status == "noisy"
    with pytest.raises(RidgelineError, match="prefill attention bf16 efficiency noisy"):
        hardware_from_profile(prof, refuse_untrusted=True)
    hw = hardware_from_profile(prof)  # --allow-unverified plans, and says why
    assert any("prefill attention bf16 efficiency noisy" in w for w in hw.warnings + hw.notes)
    (row,) = efficiency_table(prof).rows
    assert row[-1] == "noisy (2 of 3 shapes scatter > 10%)"
    # the checks accept what the fit wrote
    path = tmp_path / "fitted.json"
    path.write_text(json.dumps(prof))
    assert load_profile(path)["efficiency"]["attention_prefill"]["bf16"]["status"] == "noisy"


def test_a_shape_far_beyond_the_measured_range_is_named_in_the_notes(tmp_path):
    spec, p = load_model("llama-3.1-8b"), Precision()
    hw = hardware_from_profile(_profile_dict(tmp_path, HALF))   # batch 1-64, 512-8192 tokens
    inside = decode_step_time(spec, p, hw, 100, 8191)           # within 2x of the edges
    assert not any("held at its measured edge" in n for n in inside.notes)
    far = decode_step_time(spec, p, hw, 256, 40000)
    (note,) = [n for n in far.notes if "held at its measured edge" in n]
    assert note.startswith("decode attention efficiency held at its measured edge")
    assert "batch 256 (measured 1-64)" in note
    # 40001 tokens x 4 KiB of K and V
    assert "kv_bytes_per_seq 156 MiB (measured 2 MiB-32 MiB)" in note
    curve = Curve.of(HALF["attention_prefill"]["bf16"])
    assert curve.beyond(tokens=100) == [] and curve.beyond(tokens=32) == [
        "tokens 32 (measured 128-8192)"]


def test_attention_is_priced_at_the_models_head_dim(tmp_path):
    """Curves measured at two head sizes price each model at its own; one measured at a single
    head size holds it (and a caller that gives none gets it)."""
    def decode(eff_by_dim):
        return {"axes": ["batch", "kv_bytes_per_seq", "q_per_kv", "head_dim"],
                "points": [{"batch": b, "kv_bytes_per_seq": kv, "q_per_kv": 2, "head_dim": d,
                            "efficiency": e} for d, e in eff_by_dim.items() for b in (1, 64)
                           for kv in (2**18, 2**26)]}

    def prefill(eff_by_dim):
        return {"axes": ["tokens", "head_dim"],
                "points": [{"tokens": t, "head_dim": d, "efficiency": e}
                           for d, e in eff_by_dim.items() for t in (64, 8192)]}

    two = {"attention_decode": {"bf16": decode({64: 0.1, 128: 0.4})},
           "attention_prefill": {"bf16": prefill({64: 0.2, 128: 0.5})}}
    one = {"attention_decode": {"bf16": decode({128: 0.4})},
           "attention_prefill": {"bf16": prefill({128: 0.5})}}
    tiny, p = load_model("tiny"), Precision()                    # head_dim 64, 4 / 2 heads
    bare = hardware_from_profile(_profile_dict(tmp_path))
    roof_d = _attention_s(decode_step_time(tiny, p, bare, 8, 300))
    roof_p = prefill_time(tiny, p, bare, 1, 300).breakdown["attention"]
    hw = hardware_from_profile(_profile_dict(tmp_path, two))
    assert _attention_s(decode_step_time(tiny, p, hw, 8, 300)) == pytest.approx(roof_d / 0.1)
    assert prefill_time(tiny, p, hw, 1, 300).breakdown["attention"] == pytest.approx(
        roof_p / 0.2, rel=1e-6)
    held = hardware_from_profile(_profile_dict(tmp_path, one))
    assert _attention_s(decode_step_time(tiny, p, held, 8, 300)) == pytest.approx(roof_d / 0.4)
    assert Efficiency.of({"efficiency": one}).factor(
        "attention_decode", "bf16", batch=8, kv_bytes_per_seq=2**20, q_per_kv=2) == 0.4
    with pytest.raises(ValueError, match="head_dim"):
        Efficiency.of({"efficiency": two}).factor(
            "attention_decode", "bf16", batch=8, kv_bytes_per_seq=2**20, q_per_kv=2)
    # the simulator's step model prices them as the planner does
    sm = StepModel(tiny, p, hw, 1)
    assert sm.step_s(8, 8 * 301) == pytest.approx(
        decode_step_time(tiny, p, hw, 8, 300).time_s, rel=1e-9)
    assert sm.step_s(0, 0, [(300, 0)]) == pytest.approx(prefill_time(tiny, p, hw, 1, 300).time_s,
                                                       rel=1e-9)
