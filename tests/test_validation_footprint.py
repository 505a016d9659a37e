"""Byte accounting of the validation model, depth planning, and scaling to the full depth."""

from types import SimpleNamespace

import pytest

from ridgeline.errors import RidgelineError
from ridgeline.sizing.models import load_model
from ridgeline.validation import footprint as fp
from ridgeline.validation.measure import (DepthPlan, Point, Skipped, decode_points, plan_depth,
                                          prefill_points, run_points, scale_to_depth)
from ridgeline.validation.transformer import DecoderModel


def _tensor_bytes(model: DecoderModel) -> tuple[int, int]:
    """(bytes of all layer tensors, bytes of embedding + LM head + final norm) as allocated."""
    layer = 0
    for lyr in model.layers:
        layer += lyr.attn_norm.nbytes + lyr.mlp_norm.nbytes
        for lin in (lyr.qkv, lyr.o, lyr.gate_up, lyr.down):
            layer += lin.weight.nbytes + (lin.scale.nbytes * 2 if lin.scale is not None else 0)
    head = model.embed.nbytes + model.final_norm.nbytes
    if model.lm_head is not model.embed:
        head += model.lm_head.nbytes
    return layer, head


def test_tiny_bytes_by_hand():
    d = fp.dims_from_spec(load_model("tiny"))
    # q 4*64=256, kv 2*64=128: QKV 256x512, O 256x256, gate+up 256x1024, down 512x256
    assert d.linear_params() == 256 * 512 + 256 * 256 + 256 * 1024 + 512 * 256 == 589824
    assert fp.weight_bytes_per_layer(d, "bf16") == 589824 * 2 + 2 * 256 * 2
    assert fp.weight_bytes_per_layer(d, "fp8") == 589824 + 2 * 256 * 2 + 4 * 2 * 4
    assert fp.head_bytes(d, "bf16") == 2 * 1024 * 256 * 2 + 256 * 2
    assert fp.kv_bytes_per_layer(d, "bf16", batch=3, tokens=17) == 2 * 3 * 2 * 17 * 64 * 2


@pytest.mark.parametrize("name", ["tiny", "llama-3.1-8b", "mistral-7b"])
def test_weight_bytes_agree_with_the_planner_param_count(name):
    spec = load_model(name)
    d = fp.dims_from_spec(spec)
    total = d.num_layers * fp.weight_bytes_per_layer(d, "bf16") + fp.head_bytes(d, "bf16")
    assert total == 2 * spec.param_count()


@pytest.mark.parametrize("weights", ["bf16", "fp32", "fp8"])
@pytest.mark.parametrize("tied", [False, True])
def test_allocated_model_matches_the_count(weights, tied):
    spec = load_model("tiny")
    spec = SimpleNamespace(**{k: getattr(spec, k) for k in (
        "name", "hidden_size", "num_layers", "num_attention_heads", "num_kv_heads", "head_dim",
        "intermediate_size", "vocab_size")}, tie_word_embeddings=tied)
    model = DecoderModel(spec, weights)
    layer_bytes, head = _tensor_bytes(model)
    d = model.d
    assert layer_bytes == d.num_layers * fp.weight_bytes_per_layer(d, weights)
    assert head == fp.head_bytes(d, weights)
    cache = model.new_cache(3, 11)
    assert sum(t.nbytes for t in cache.k + cache.v) == \
        d.num_layers * fp.kv_bytes_per_layer(d, weights, 3, 11)


def test_layers_that_fit_boundary_is_exact():
    d = fp.dims_from_spec(load_model("tiny"))
    w = fp.weight_bytes_per_layer(d, "bf16")
    kv = fp.kv_bytes_per_layer(d, "bf16", 4, 101)
    fixed = fp.head_bytes(d, "bf16") + fp.workspace_bytes(d, "bf16", 4, 1, 101)
    kwargs = dict(batch=4, q_tokens=1, kv_tokens=101, max_layers=40)
    assert fp.layers_that_fit(d, "bf16", fixed + 7 * (w + kv), **kwargs) == 7
    assert fp.layers_that_fit(d, "bf16", fixed + 7 * (w + kv) - 1, **kwargs) == 6
    assert fp.layers_that_fit(d, "bf16", fixed + (w + kv) - 1, **kwargs) == 0
    assert fp.layers_that_fit(d, "bf16", 1e15, **kwargs) == 40
    # with 5 layers resident, only KV comes on top
    room = fixed + 5 * w + 3 * kv
    kwargs["max_layers"] = 5
    assert fp.layers_that_fit(d, "bf16", room, resident_layers=5, **kwargs) == 3


def test_plan_depth_scales_only_the_points_that_need_it():
    d = fp.dims_from_spec(load_model("llama-3.1-8b"))
    points = decode_points([1, 128], [1024, 4096]) + prefill_points([128])
    plan = plan_depth(d, "bf16", points, 75 * 2**30, max_layers=32, graph=True)
    assert plan.resident == 32
    assert plan.per_point[Point("decode", 1, 1024)] == 32
    big = plan.per_point[Point("decode", 128, 4096)]
    assert 0 < big < 32  # 128 x 4097 tokens of KV (~69 GB at 32 layers) does not fit beside 16 GB
    assert fp.step_bytes(d, "bf16", 32, 128, 1, 4097, graph=True) > 75 * 2**30
    # too little memory for anything: every point skipped with a reason
    none = plan_depth(d, "bf16", points, 2**30, max_layers=32, graph=True)
    assert none.resident == 0 and all(n == 0 for n in none.per_point.values())
    assert all("does not fit" in r for r in none.reasons.values())


def test_refuses_what_it_cannot_build():
    with pytest.raises(RidgelineError, match="dense"):
        fp.dims_from_spec(load_model("mixtral-8x7b"))
    with pytest.raises(RidgelineError, match="latent|dense"):
        fp.dims_from_spec(load_model("deepseek-v3"))
    odd = SimpleNamespace(name="odd", hidden_size=40, num_layers=1, num_attention_heads=4,
                          num_kv_heads=2, head_dim=10, intermediate_size=36, vocab_size=50)
    with pytest.raises(RidgelineError, match="multiple of 16"):
        fp.dims_from_spec(odd, "fp8")
    assert fp.dims_from_spec(odd, "bf16").qkv_size == 80
    with pytest.raises(RidgelineError, match="--weights"):
        fp.normalize_weights("int3")
    assert fp.normalize_weights("FP8_E4M3") == "fp8"


def test_weight_names_and_widths_come_from_the_dtype_table():
    for spelling, kind in (("bfloat16", "bf16"), ("half", "fp16"), ("float32", "fp32"),
                           ("e4m3", "fp8"), ("float8_e4m3fn", "fp8"), ("fp8_e4m3fnuz", "fp8")):
        assert fp.normalize_weights(spelling) == kind
    for other in ("fp8_e5m2", "int8", "int4", "tf32"):  # formats the validation model cannot run
        with pytest.raises(RidgelineError, match="unknown --weights"):
            fp.normalize_weights(other)
    assert [fp.weight_width_bytes(w) for w in fp.WEIGHT_KINDS] == [2, 2, 1, 4]
    assert [fp.act_dtype(w) for w in fp.WEIGHT_KINDS] == ["bf16", "fp16", "bf16", "fp32"]
    assert [fp.act_width_bytes(w) for w in fp.WEIGHT_KINDS] == [2, 2, 2, 4]


def test_scale_to_depth_arithmetic():
    # head 1 ms, 2 of 8 layers took 5 ms in all: layers 4 ms -> 16 ms at full depth, + head
    assert scale_to_depth(5e-3, 1e-3, 2, 8) == pytest.approx(17e-3, rel=1e-12)
    assert scale_to_depth(5e-3, 1e-3, 8, 8) == 5e-3


def test_run_points_keeps_finished_points_on_ctrl_c():
    points = prefill_points([3, 5, 7])
    plan = DepthPlan(2, {p: 2 for p in points}, {})
    calls = []

    def run_point(p, layers, modes):
        calls.append(p)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return [Skipped(p.phase, m, p.batch, p.context, "fake") for m in modes]

    measured, skipped, interrupted = run_points(points, plan, ["eager"], run_point, cpu=True)
    assert interrupted and len(calls) == 2
    assert [s.context for s in skipped if s.mode == "eager"] == [3]
    assert sum(s.mode == "graph" for s in skipped) == 3  # CPU: graph waived for every point
