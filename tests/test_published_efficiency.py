"""Published kernel efficiencies (ridgeline.published_efficiency): the data file, the
conversion to efficiencies on a derated datasheet, and what the planner does with them."""

import copy

import pytest

from ridgeline import datasheets, published_efficiency as pe
from ridgeline.errors import RidgelineError
from ridgeline.roofline.efficiency import CURVES, Efficiency
from ridgeline.roofline.profile import validate_profile
from ridgeline.sizing.hardware import (datasheet_profile, hardware_from_gpu_name,
                                       hardware_from_profile)
from ridgeline.sizing.latency import decode_step_time, prefill_time
from ridgeline.sizing.models import load_model
from ridgeline.sizing.precision import Precision


# FlashInfer's Figure 9 layout (Llama-2-70B at TP 2): K and V of 4 heads x 128, 2 B each
FLASHINFER_KV_PER_TOKEN = 2 * 4 * 128 * 2


def _entries():
    for curve, by_sku in pe.load_published()["curves"].items():
        for sku, by_dtype in by_sku.items():
            for dtype, entry in by_dtype.items():
                yield curve, sku, dtype, entry


def test_the_file_parses_and_every_entry_names_its_source():
    data = pe.load_published()
    entries = list(_entries())
    assert {c for c, *_ in entries} == {"attention_decode", "attention_prefill", "moe"}
    for curve, sku, dtype, e in entries:
        src = e["source"]
        assert src["url"].startswith("https://") and src["where"] and src["name"], (curve, sku)
        assert e["conversion"] and e["provider"]
        assert e["axes"] == list(pe.SOURCE_AXES[curve])
        assert all(p["value"] > 0 for p in e["points"])
        if "github.com" in src["url"] and "/pull/" not in src["url"]:
            assert len(src["commit"]) == 40 and src["commit"] in src["url"]   # pinned
    assert set(data["not_found"]) and all(data["not_found"].values())


def test_every_sku_and_generation_member_is_a_datasheet_entry():
    data = pe.load_published()
    for gen, skus in data["generations"].items():
        for sku in skus:
            assert datasheets.by_sku(sku)["sku"] == sku, (gen, sku)
    listed = {s for skus in data["generations"].values() for s in skus}
    assert listed == {e["sku"] for e in datasheets.load_datasheets()}   # every part placed
    for _, sku, _, _ in _entries():
        assert pe.generation_of(sku) is not None


def test_a_sku_resolves_to_its_own_measurement_else_its_generation_else_none():
    assert pe.resolve("attention_decode", "h100-sxm5-80gb")[0] == "h100-sxm5-80gb"
    assert pe.resolve("attention_decode", "h200-sxm-141gb")[0] == "h100-sxm5-80gb"
    assert pe.resolve("attention_decode", "a100-sxm4-80gb")[0] == "a100-pcie-80gb"
    assert pe.resolve("moe", "a100-sxm4-80gb") is None       # no Ampere MoE measurement
    assert pe.resolve("attention_decode", "l40s") is None    # Ada: none
    assert pe.resolve("dequant", "h100-sxm5-80gb") is None


@pytest.mark.parametrize("broken, match", [
    (lambda d: d["curves"]["moe"]["h100-sxm5-80gb"]["bf16"]["source"].pop("url"), "url"),
    (lambda d: d["curves"].setdefault("attention", {}), "not a curve"),
    (lambda d: d["curves"]["moe"]["h100-sxm5-80gb"]["bf16"].update(axes=["batch"]), "axes"),
    (lambda d: d["curves"]["moe"]["h100-sxm5-80gb"]["bf16"]["points"][0].update(value=0),
     "positive"),
    (lambda d: d["curves"]["moe"].update({"h100": d["curves"]["moe"]["h100-sxm5-80gb"]}),
     "SKU"),
    # the source's element size must be its dtype's (and every `also` dtype's): fp8 is 1 B
    (lambda d: d["curves"]["attention_decode"]["h100-sxm5-80gb"]["fp16"]["also"].append("fp8"),
     "dtype_bytes 2 is not the element size of fp8"),
    (lambda d: d["curves"]["moe"]["h100-sxm5-80gb"]["bf16"]["shape"].pop("dtype_bytes"),
     "dtype_bytes None"),
])
def test_a_malformed_file_is_one_clear_error(broken, match):
    data = copy.deepcopy(pe.load_published())
    broken(data)
    with pytest.raises(RidgelineError, match=match):
        pe.check(data)


def test_the_datasheet_profile_carries_a_valid_efficiency_section():
    prof = datasheet_profile(datasheets.by_sku("h100-sxm5-80gb"))
    validate_profile(prof, where="datasheet profile")      # the measured profile's checks
    eff = Efficiency.of(prof)
    for curve, dtype in [("attention_decode", "bf16"), ("attention_decode", "fp16"),
                         ("attention_prefill", "bf16"), ("moe", "bf16")]:
        assert eff.has(curve, dtype), (curve, dtype)
    assert not eff.has("dequant", "int4")
    assert 0 < eff.factor("attention_decode", "bf16", batch=64,
                          kv_bytes_per_seq=1024 * FLASHINFER_KV_PER_TOKEN, q_per_kv=8) < 1
    # --no-derate: no published efficiency either
    bare = datasheet_profile(datasheets.by_sku("h100-sxm5-80gb"), derate=False)
    assert "efficiency" not in bare and Efficiency.of(bare).curves == {}


def _point(section, curve, dtype, **axes):
    return next(p for p in section[curve][dtype]["points"]
                if all(p[a] == pytest.approx(v) for a, v in axes.items()))


def test_efficiency_is_relative_to_the_derated_roofline():
    """A memory-bound published fraction u of the source's peak becomes u x peak / (sheet
    bandwidth x derating fraction): the derating divides out, it is not counted twice."""
    sheet = datasheets.by_sku("h100-sxm5-80gb")
    f_bw = datasheets.achievable_fractions(sheet).bandwidth.fraction
    prof = datasheet_profile(sheet)
    u = 0.885  # Figure 9, H100 SXM, batch 64 x 8192
    p = _point(prof["efficiency"], "attention_decode", "bf16", batch=64,
               kv_bytes_per_seq=8192 * FLASHINFER_KV_PER_TOKEN)
    # q and the output add 32 x 128 x 2 B per sequence to ~16 MB of KV: under 0.1%
    assert p["efficiency"] == pytest.approx(u * 3352 / (sheet["memory_bandwidth_GBps"] * f_bw),
                                            rel=1e-3)
    # compute-bound prefill at 16k tokens: 616 TFLOP/s over the derated bf16 peak
    f_mm = datasheets.achievable_fractions(sheet).matmul["bf16"].fraction
    p = _point(prof["efficiency"], "attention_prefill", "bf16", tokens=16384)
    planner_over_fa = (16384 + 1) / 16384   # causal s(s+1)/2 against flash-attention's s^2/2
    assert p["efficiency"] == pytest.approx(
        616 / (sheet["matmul_TFLOPS"]["bf16"] * f_mm) * planner_over_fa, rel=1e-6)
    # MoE: the published time itself on the measured part, batch 1 = 1 token per expert
    p = _point(prof["efficiency"], "moe", "bf16", tokens_per_expert=1.0)
    assert p["time_ms"] == pytest.approx(0.14403)
    assert p["efficiency"] == pytest.approx(p["roofline_ms"] / p["time_ms"])


def test_another_part_of_the_generation_takes_the_same_share_of_its_peak():
    h100 = datasheets.by_sku("h100-sxm5-80gb")
    h200 = datasheets.by_sku("h200-sxm-141gb")
    f_bw = datasheets.achievable_fractions(h200).bandwidth.fraction
    p = _point(datasheet_profile(h200)["efficiency"], "attention_decode", "bf16",
               batch=64, kv_bytes_per_seq=8192 * FLASHINFER_KV_PER_TOKEN)
    share = 0.885 * 3352 / h100["memory_bandwidth_GBps"]     # of the H100 SXM's datasheet
    assert p["efficiency"] == pytest.approx(share / f_bw, rel=1e-3)
    # and its time is the H100's scaled by the bandwidth ratio
    q = _point(datasheet_profile(h100)["efficiency"], "attention_decode", "bf16",
               batch=64, kv_bytes_per_seq=8192 * FLASHINFER_KV_PER_TOKEN)
    assert p["time_ms"] == pytest.approx(
        q["time_ms"] * h100["memory_bandwidth_GBps"] / h200["memory_bandwidth_GBps"], rel=1e-9)


def test_notes_name_the_source_and_say_when_it_is_another_gpus():
    own = hardware_from_gpu_name("h100-sxm").notes
    decode = next(n for n in own if n.startswith("kernel efficiency (published): decode"))
    assert "FlashInfer" in decode and "https://" in decode and "not measured" not in decode
    h200 = hardware_from_gpu_name("h200").notes
    assert any("decode attention" in n and "not measured on this GPU" in n for n in h200)
    assert any("no measurement of weight-only dequantizing GEMV" in n for n in h200)
    l40s = hardware_from_gpu_name("l40s").notes
    assert sum("no measurement of" in n for n in l40s) == len(CURVES)
    bare = hardware_from_gpu_name("h100-sxm", derate=False).notes
    assert any("not applied (--no-derate)" in n for n in bare)
    assert not any(n.startswith("kernel efficiency (published)") for n in bare)


def _without_efficiency(hw):
    prof = copy.deepcopy(hw.profile)
    prof.pop("efficiency")
    return hardware_from_profile(prof, source="datasheet")


def test_the_planners_datasheet_steps_get_slower_with_it():
    hw = hardware_from_gpu_name("h100-sxm")
    bare = _without_efficiency(hw)
    p = Precision("bf16", "bf16", "bf16")
    spec = load_model("llama-3.1-8b")
    with_eff = decode_step_time(spec, p, hw, 64, 4096)
    without = decode_step_time(spec, p, bare, 64, 4096)
    assert with_eff.breakdown["attention"] > without.breakdown["attention"] * 1.05
    assert with_eff.time_s > without.time_s
    # everything but attention is priced the same
    assert with_eff.breakdown["gemm"] == pytest.approx(without.breakdown["gemm"])
    assert prefill_time(spec, p, hw, 1, 8192).time_s > prefill_time(spec, p, bare, 1, 8192).time_s
    moe = load_model("mixtral-8x7b")
    assert (decode_step_time(moe, p, hw, 8, 512, tp=2).breakdown["moe"]
            > decode_step_time(moe, p, bare, 8, 512, tp=2).breakdown["moe"])
