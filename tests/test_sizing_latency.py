"""The performance axis: step times priced kernel by kernel on a profile's roofline."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ridgeline.errors import RidgelineError
from ridgeline.roofline.interconnect import tp_allreduce_time
from ridgeline.roofline.profile import new_profile
from ridgeline.sizing.hardware import hardware_from_profile
from ridgeline.sizing.latency import (decode_step_time, expected_experts_loaded, prefill_time,
                                      valid_tp)
from ridgeline.sizing.memory import weight_bytes
from ridgeline.sizing.models import load_model
from ridgeline.sizing.parallelism import pp_bubble
from ridgeline.sizing.precision import Precision

BF16 = Precision()
FP8 = Precision("fp8", "fp8", "fp8")


def profile(bw=3000.0, bf16=720.0, fp8=1350.0, floor_us=3.0, busbw=360.0, alpha_us=10.0,
            allreduce=True, host_link=None):
    """A plausible H100-like profile (pass versions={} so no torch is imported)."""
    dev = {"name": "Test GPU 80GB", "kind": "cuda", "memory_bytes": 80_000_000_000,
           "dtypes": {"fp32": True, "fp16": True, "bf16": True, "fp8_e4m3": True}}
    p = new_profile(dev, command_line=["test"], versions={})
    p["complete"] = True
    p["ceilings"] = {"memory_bandwidth_GBps": {"read": bw},
                     "matmul_TFLOPS": {"bf16": bf16, "fp16": bf16, "fp8_e4m3": fp8}}
    p["model"] = {"bandwidth_GBps": bw, "latency_floor_us": floor_us, "source": "measured",
                  "matmul": {"bf16": {"peak_TFLOPS": bf16, "flops_half": 0.0},
                             "fp16": {"peak_TFLOPS": bf16, "flops_half": 0.0},
                             "fp8_e4m3": {"peak_TFLOPS": fp8, "flops_half": 0.0}}}
    inter = {}
    if allreduce:
        inter["allreduce"] = {str(n): {"alpha_us": alpha_us, "busbw_GBps": busbw, "link": "nvlink",
                                       "source": "measured"} for n in (2, 4, 8)}
    if host_link:
        inter["host_link_GBps"] = {"h2d": host_link, "d2h": host_link, "source": "measured"}
    p["interconnect"] = inter
    return p


def hw(**kw):
    return hardware_from_profile(profile(**kw))


def test_decode_at_batch_one_streams_the_weights():
    spec = load_model("llama-3.1-8b")
    step = decode_step_time(spec, BF16, hw(floor_us=0.001), batch=1, context_tokens=16)
    # every weight but the embedding table (a row gather) is read once
    streamed = weight_bytes(spec, BF16) - spec.vocab_size * spec.hidden_size * 2
    assert step.bound == "memory"
    assert streamed / 3000e9 <= step.time_s <= 1.01 * streamed / 3000e9


def test_decode_attention_is_kv_bytes_over_bandwidth():
    spec = load_model("llama-3.1-70b")
    batch, ctx = 32, 8000
    step = decode_step_time(spec, FP8, hw(), batch, ctx, tp=4)
    attn = next(op for op in step.ops if op.name == "attention")
    kv = batch * (ctx + 1) * 2 * 2 * 128 * 1   # 2 KV heads per rank, fp8
    q_out = batch * 2 * 16 * 128 * 2           # q in and out, 16 heads per rank, bf16
    assert attn.bytes == kv + q_out
    assert attn.bound == "memory"
    assert math.isclose(attn.time_s, (kv + q_out) / 3000e9)
    assert attn.count == 80


def test_prefill_is_compute_bound_flops_over_throughput():
    spec = load_model("llama-3.1-8b")
    s = 4096
    t = prefill_time(spec, BF16, hw(), batch=1, input_tokens=s)
    gemm_flops = 2 * s * (spec.active_param_count(include_embedding=False) - spec.vocab_size *
                          spec.hidden_size)   # LM head on the last token only
    attn_flops = 32 * 4 * 32 * 128 * s * (s + 1) / 2
    assert t.bound == "compute"
    lower = (gemm_flops + attn_flops) / 720e12
    assert lower <= t.time_s <= 1.15 * lower


def test_long_prompts_are_chunked_and_attend_to_earlier_chunks():
    spec = load_model("llama-3.1-8b")
    one = prefill_time(spec, BF16, hw(), 1, 16384, max_batched_tokens=16384)
    chunked = prefill_time(spec, BF16, hw(), 1, 16384, max_batched_tokens=4096)
    assert any("4 passes" in n for n in chunked.notes)
    assert math.isclose(chunked.flops, one.flops, rel_tol=1e-3)  # same work, split


def test_expected_experts_loaded():
    assert expected_experts_loaded(8, 2, 1) == pytest.approx(2.0)
    assert expected_experts_loaded(8, 2, 2) == pytest.approx(8 * (1 - 0.75 ** 2))
    assert expected_experts_loaded(256, 8, 32) == pytest.approx(256 * (1 - (1 - 8 / 256) ** 32))
    assert expected_experts_loaded(256, 8, 10_000) == pytest.approx(256)


def test_moe_decode_reads_only_the_loaded_experts():
    spec = load_model("mixtral-8x7b")
    step = decode_step_time(spec, BF16, hw(floor_us=0.001), 1, 16, tp=1)
    gate_up = next(op for op in step.ops if op.name == "experts.gate_up")
    assert step.experts_loaded == pytest.approx(2.0)
    assert gate_up.bytes == pytest.approx(2 * 4096 * 2 * 14336 * 2 + 2 * (4096 + 2 * 14336) * 2)


def test_per_step_floor_is_latency_floor_times_kernels():
    spec = load_model("tiny")
    step = decode_step_time(spec, BF16, hw(floor_us=7.0), 1, 10)
    assert step.kernels > 10
    assert step.floor_s == pytest.approx(step.kernels * 7e-6)
    assert step.time_s >= step.floor_s
    assert step.bound == "latency"


def test_tp_allreduce_comes_from_the_interconnect_model_and_is_labelled():
    spec = load_model("llama-3.1-70b")
    h = hw()
    step = decode_step_time(spec, BF16, h, 16, 1000, tp=4)
    one = tp_allreduce_time(8192, 16, "bf16", 4, h.profile)
    assert step.allreduce_source == "measured"
    assert step.breakdown["allreduce"] == pytest.approx(80 * one.time_s)
    est = decode_step_time(spec, BF16, hw(allreduce=False, host_link=25.0), 16, 1000, tp=4)
    assert est.allreduce_source == "estimated"
    assert any("estimated" in n for n in est.notes)
    with pytest.raises(RidgelineError, match="all-reduce"):
        decode_step_time(spec, BF16, hw(allreduce=False), 16, 1000, tp=4)


def test_pipeline_bubble_and_gpipe_step():
    assert pp_bubble(4, 4) == pytest.approx(3 / 7)   # field guide §5.2's 43%
    assert pp_bubble(1, 8) == 0
    spec = load_model("llama-3.1-70b")
    step = decode_step_time(spec, BF16, hw(), 64, 1000, tp=8, pp=2, microbatches=4)
    assert step.pp_bubble == pytest.approx(1 / 5)
    stage = sum(op.total_s for op in step.ops)
    assert step.time_s == pytest.approx((4 + 2 - 1) * stage)


def test_invalid_tp_is_refused():
    spec = load_model("tiny")  # 4 heads, 2 KV heads
    assert valid_tp(spec, 8) is not None and valid_tp(spec, 2) is None
    with pytest.raises(RidgelineError, match="heads"):
        decode_step_time(spec, BF16, hw(), 1, 10, tp=8)


def test_itl_grows_with_batch_and_context():
    spec = load_model("llama-3.1-8b")
    h = hw()
    times = [decode_step_time(spec, FP8, h, b, 4096).time_s for b in (1, 4, 16, 64, 256)]
    assert times == sorted(times)
    long, short = (decode_step_time(spec, FP8, h, 16, c).time_s for c in (8192, 512))
    assert long > short


def test_decode_gemms_turn_compute_bound_near_the_ridge():
    spec = load_model("llama-3.1-70b")
    h = hw(floor_us=0.001)

    def bound(b):
        step = decode_step_time(spec, FP8, h, b, 1)
        return next(op.bound for op in step.ops if op.name == "gate_up_proj")

    ridge = 1350e12 / 3000e9        # FLOP/byte; a decode GEMM does ~2B FLOP per weight byte
    assert bound(int(ridge / 2 * 0.8)) == "memory"
    assert bound(int(ridge / 2 * 1.3)) == "compute"


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["tiny", "llama-3.1-8b", "mixtral-8x7b", "deepseek-v3"]),
       st.integers(1, 512), st.integers(0, 32768), st.sampled_from([1, 2, 4, 8]),
       st.floats(1, 3), st.floats(1, 3), st.floats(1, 3), st.floats(0.3, 1))
def test_a_faster_profile_never_predicts_slower_itl(name, batch, context, tp, bw_x, tflops_x,
                                                     link_x, floor_x):
    spec = load_model(name)
    if valid_tp(spec, tp):
        tp = 1
    slow = hw()
    fast = hw(bw=3000 * bw_x, bf16=720 * tflops_x, fp8=1350 * tflops_x, busbw=360 * link_x,
              floor_us=3.0 * floor_x, alpha_us=10.0 * floor_x)
    prec = FP8 if name != "tiny" else BF16
    a = decode_step_time(spec, prec, slow, batch, context, tp=tp).time_s
    b = decode_step_time(spec, prec, fast, batch, context, tp=tp).time_s
    assert b <= a * (1 + 1e-12)
    pa = prefill_time(spec, prec, slow, 1, max(1, context % 9000), tp=tp).time_s
    pb = prefill_time(spec, prec, fast, 1, max(1, context % 9000), tp=tp).time_s
    assert pb <= pa * (1 + 1e-12)


def test_int4_weight_bytes_include_the_group_scales_as_the_memory_plan_counts_them():
    """The latency path reads what memory.py stores: 0.5 B per weight + one fp16 scale per
    group of INT4_GROUP_SIZE (issue 13: it used to read 0.5 B only)."""
    from ridgeline.sizing.hardware import hardware_from_gpu_name
    from ridgeline.sizing.precision import INT4_GROUP_SIZE, SCALE_BYTES

    spec = load_model("llama-3.1-8b")
    p = Precision(weights="int4", activations="bf16", kv_cache="bf16")
    step = decode_step_time(spec, p, hardware_from_gpu_name("h100-sxm"), 4, 1000)
    op = next(o for o in step.ops if o.name == "down_proj")
    k, n = spec.intermediate_size, spec.hidden_size
    per_weight = 0.5 + SCALE_BYTES / INT4_GROUP_SIZE
    assert p.weight_bytes == per_weight
    assert op.bytes == pytest.approx(k * n * per_weight + (4 * k + 4 * n) * 2)
