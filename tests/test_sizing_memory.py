"""The capacity axis: weights, KV cache, activations, LoRA and GPU counts, to the byte."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ridgeline.sizing.memory import (EngineConfig, activation_bytes, kv_bytes_per_token,
                                     kv_cache_bytes, kv_elements_per_token_layer,
                                     kv_tokens_per_request, lora_adapter_bytes, memory_plan,
                                     replica_memory, stage_layers, stage_weight_bytes, weight_bytes)
from ridgeline.sizing.models import ModelSpec, load_model
from ridgeline.sizing.precision import Precision

FP16 = Precision("fp16", "fp16", "fp16")
FP8 = Precision("fp8", "fp8", "fp8")
H100 = 80e9


def test_llama_3_70b_kv_cache_fp16():
    spec = load_model("llama-3.1-70b")
    assert kv_bytes_per_token(spec, FP16) == 2 * 80 * 8 * 128 * 2 == 327_680
    kv = kv_cache_bytes(spec, FP16, concurrency=50, context_tokens=8192)
    assert kv == 50 * 8192 * 327_680 == 134_217_728_000  # 134.2 GB, not the field guide's 104 GB
    assert kv_cache_bytes(spec, FP8, 50, 8192) == kv / 2


def test_mla_kv_is_the_latent():
    spec = load_model("deepseek-v3")
    assert kv_bytes_per_token(spec, "bf16") == (512 + 64) * 61 * 2 == 70_272
    # the latent is not split by TP: every rank holds all of it
    assert kv_elements_per_token_layer(spec, tp=8) == 576


def test_kv_heads_split_then_replicate():
    spec = load_model("llama-3.1-70b")  # 8 KV heads
    assert kv_elements_per_token_layer(spec, tp=4) == 2 * 128 * 2
    assert kv_elements_per_token_layer(spec, tp=8) == 2 * 128 * 1
    assert kv_elements_per_token_layer(spec, tp=16) == 2 * 128 * 1  # one head per rank, replicated


def test_kv_blocks_and_sliding_window():
    spec = load_model("tiny")
    assert kv_tokens_per_request(spec, 8193, block_tokens=16) == 8208
    assert kv_tokens_per_request(spec, 8192, block_tokens=16) == 8192
    windowed = ModelSpec(**{**spec.__dict__, "sliding_window": 4096})
    assert kv_tokens_per_request(windowed, 10_000, block_tokens=16) == 4096


def test_weights_fp16_are_params_times_two():
    spec = load_model("llama-3.1-70b")
    assert weight_bytes(spec, FP16) == spec.param_count() * 2 == 141_107_412_992


def test_weights_fp8_keep_embedding_head_and_norms_16_bit():
    spec = load_model("llama-3.1-70b")
    h, v = 8192, 128256
    other = 2 * v * h + (2 * 80 + 1) * h          # embedding, head, norms
    linear = spec.param_count() - other
    assert weight_bytes(spec, FP8) == linear * 1 + other * 2
    int4 = Precision("int4", "bf16", "bf16")
    assert weight_bytes(spec, int4) == linear * (0.5 + 2 / 128) + other * 2  # + fp16 group scales


def test_tp_shards_everything_but_the_norms():
    spec = load_model("llama-3.1-70b")
    norms = (2 * 80 + 1) * 8192 * 2
    total = weight_bytes(spec, FP16)
    assert stage_weight_bytes(spec, FP16, 0, 1, tp=8) == (total - norms) / 8 + norms


def test_pp_stages_partition_the_layers():
    spec = load_model("deepseek-v3")
    stages = [stage_layers(spec, s, 4) for s in range(4)]
    assert sum(sum(s.values()) for s in stages) == 61
    assert stages[0]["dense"] == 3 and all(s["dense"] == 0 for s in stages[1:])
    per_stage = [stage_weight_bytes(spec, FP8, s, 4, tp=1) for s in range(4)]
    assert math.isclose(sum(per_stage), weight_bytes(spec, FP8))


def test_lora_adapter_bytes_tiny():
    spec = load_model("tiny")
    r = 8
    per_layer = (r * (256 + 256) + 2 * r * (256 + 128) + r * (256 + 256)  # q, k, v, o
                 + 2 * r * (256 + 512) + r * (512 + 256))                 # gate, up, down
    assert lora_adapter_bytes(spec, Precision(), r, "all") == 2 * per_layer * 2
    attn_only = r * (256 + 256) + 2 * r * (256 + 128) + r * (256 + 256)
    assert lora_adapter_bytes(spec, Precision(), r, "attention") == 2 * attn_only * 2


def test_activation_estimate_tiny():
    spec = load_model("tiny")
    per_token = 2 * (2 * 256 + max((4 + 2 * 2) * 64 + 4 * 64, 3 * 512))
    logits = 256 * 1024 * 4
    assert activation_bytes(spec, Precision(), EngineConfig()) == 8192 * per_token + logits
    rule = EngineConfig(activation_fraction=0.2)
    assert activation_bytes(spec, Precision(), rule) == 0.2 * weight_bytes(spec, Precision())


def test_min_and_recommended_gpus():
    spec = load_model("llama-3.1-70b")
    engine = EngineConfig()
    m = memory_plan(spec, FP16, engine, H100, concurrency=50, context_tokens=8192, headroom=0.3)
    total = (weight_bytes(spec, FP16) * 1.05 + 134_217_728_000
             + activation_bytes(spec, FP16, engine))
    assert math.isclose(m.total_bytes, total)
    assert m.usable_bytes_per_gpu == 0.9 * H100
    assert m.min_gpus == math.ceil(total / (0.9 * H100)) == 4
    assert m.recommended_gpus == math.ceil(total * 1.3 / (0.9 * H100))


def test_replica_capacity_is_what_fits_on_the_fullest_gpu():
    spec = load_model("llama-3.1-70b")
    engine = EngineConfig()
    r = replica_memory(spec, FP8, engine, H100, tp=4, pp=1, concurrency=50, context_tokens=8704)
    per_request = 8704 * 2 * 128 * 2 * 80 * 1  # 2 KV heads per rank, fp8
    assert r.kv_bytes_per_request == per_request
    assert r.max_concurrency == int((r.usable_bytes - r.fixed_bytes) // per_request)
    assert r.fits == (r.fixed_bytes + 50 * per_request <= r.usable_bytes)


MODELS = st.sampled_from(["tiny", "llama-3.1-8b", "llama-3.1-70b", "mixtral-8x7b", "deepseek-v3",
                          "qwen2.5-72b"])


@settings(max_examples=40, deadline=None)
@given(MODELS, st.integers(1, 500), st.integers(1, 65536), st.sampled_from(["fp16", "bf16"]))
def test_fp8_never_needs_more_memory_than_fp16(name, concurrency, context, wide):
    spec = load_model(name)
    engine = EngineConfig()
    wide_p = Precision(wide, wide, wide)
    for narrow in (Precision("fp8", "fp8", "fp8"), Precision("fp8", wide, wide),
                   Precision(wide, wide, "fp8"), Precision("int4", wide, "fp8")):
        a = memory_plan(spec, narrow, engine, H100, concurrency, context, headroom=0.3)
        b = memory_plan(spec, wide_p, engine, H100, concurrency, context, headroom=0.3)
        assert a.total_bytes <= b.total_bytes and a.min_gpus <= b.min_gpus


@settings(max_examples=40, deadline=None)
@given(MODELS, st.integers(1, 2000), st.integers(1, 2000), st.integers(1, 32768),
       st.sampled_from([1, 2, 4, 8]))
def test_more_concurrency_never_needs_fewer_gpus(name, c1, c2, context, tp):
    lo, hi = sorted((c1, c2))
    spec = load_model(name)
    engine = EngineConfig()
    a = memory_plan(spec, FP8, engine, H100, lo, context, headroom=0.3)
    b = memory_plan(spec, FP8, engine, H100, hi, context, headroom=0.3)
    assert a.min_gpus <= b.min_gpus and a.recommended_gpus <= b.recommended_gpus
    ra = replica_memory(spec, FP8, engine, H100, tp, 1, lo, context)
    rb = replica_memory(spec, FP8, engine, H100, tp, 1, hi, context)
    assert ra.max_concurrency == rb.max_concurrency   # capacity does not depend on the target
    assert rb.fits <= ra.fits                         # what fits hi also fits lo
