"""The validation transformer against an independent float32 reference (CPU, small odd sizes)."""

from types import SimpleNamespace

import pytest
import torch

from ridgeline.validation.transformer import (DecoderModel, quantize_per_tensor, reference_layer,
                                              rms_norm)


def _spec(hidden=40, layers=2, heads=6, kv_heads=2, head_dim=10, inter=37, vocab=53, tied=False):
    return SimpleNamespace(name="odd", hidden_size=hidden, num_layers=layers,
                           num_attention_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                           intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tied)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _run_layer(model, layer_idx, x, cache, start):
    cos, sin = model._rotary(start + x.shape[1])  # full tables: the layer indexes by position
    return model.layers[layer_idx](x, cos, sin, cache.k[layer_idx], cache.v[layer_idx], start)


def _scaled_mm_runs_here() -> bool:
    try:
        a = torch.ones(16, 16).to(torch.float8_e4m3fn)
        one = torch.tensor(1.0)
        torch._scaled_mm(a, a.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        return True
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


@pytest.mark.parametrize("heads,kv_heads", [(6, 2), (3, 3), (5, 1)])
@pytest.mark.parametrize("gqa_native", [True, False])
def test_decode_step_matches_fp32_reference_and_appends_to_cache(heads, kv_heads, gqa_native):
    model = DecoderModel(_spec(heads=heads, kv_heads=kv_heads), "fp32", gqa_native=gqa_native,
                         seed=3)
    B, start, cap = 3, 7, 11
    cache = model.new_cache(B, cap, filled=start)
    k_before, v_before = cache.k[0].clone(), cache.v[0].clone()
    x = torch.randn(B, 1, 40)
    out = _run_layer(model, 0, x, cache, start)
    ref, k_all, v_all = reference_layer(model.layers[0], x, k_before, v_before, start, model.theta)
    assert out.shape == (B, 1, 40)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    # the new token's K/V (rotated K) landed at slot `start`; nothing else changed
    torch.testing.assert_close(cache.k[0][:, :, :start + 1], k_all, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(cache.v[0][:, :, :start + 1], v_all, atol=2e-5, rtol=2e-5)
    assert torch.equal(cache.k[0][:, :, :start], k_before[:, :, :start])
    assert torch.equal(cache.k[0][:, :, start + 1:], k_before[:, :, start + 1:])


@pytest.mark.parametrize("gqa_native", [True, False])
def test_prefill_is_causal_and_matches_reference(gqa_native):
    model = DecoderModel(_spec(), "fp32", gqa_native=gqa_native, seed=5)
    B, T = 2, 9
    cache = model.new_cache(B, T)
    x = torch.randn(B, T, 40)
    out = _run_layer(model, 0, x, cache, 0)
    ref, k_all, v_all = reference_layer(model.layers[0], x, cache.k[0], cache.v[0], 0, model.theta)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(cache.k[0], k_all, atol=2e-5, rtol=2e-5)
    # causality: changing the last token leaves the earlier outputs unchanged
    x2 = x.clone()
    x2[:, -1] += 1.0
    out2 = _run_layer(model, 0, x2, model.new_cache(B, T), 0)
    torch.testing.assert_close(out2[:, :-1], out[:, :-1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out2[:, -1], out[:, -1])


def test_decode_after_prefill_equals_prefill_of_one_more_token():
    """Rotary positions and the cache line up: prefill(T) then decode(1) == prefill(T+1)."""
    model = DecoderModel(_spec(), "fp32", seed=7)
    T = 6
    x = torch.randn(1, T + 1, 40)
    full = _run_layer(model, 0, x, model.new_cache(1, T + 1), 0)
    cache = model.new_cache(1, T + 1)
    _run_layer(model, 0, x[:, :T], cache, 0)
    last = _run_layer(model, 0, x[:, T:], cache, T)
    torch.testing.assert_close(last[:, 0], full[:, T], atol=2e-5, rtol=2e-5)


def test_bf16_layer_close_to_fp32_reference():
    model = DecoderModel(_spec(), "bf16", seed=11)
    cache = model.new_cache(3, 9, filled=8)
    k0, v0 = cache.k[0].clone(), cache.v[0].clone()
    x = torch.randn(3, 1, 40).to(torch.bfloat16)
    out = _run_layer(model, 0, x, cache, 8)
    ref, _, _ = reference_layer(model.layers[0], x, k0, v0, 8, model.theta)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert _rel(out, ref) < 2e-2


def test_fp8_linear_is_scaled_mm_on_column_major_weight():
    if not _scaled_mm_runs_here():
        pytest.skip("torch._scaled_mm does not run on this CPU build")
    spec = _spec(hidden=32, heads=2, kv_heads=1, head_dim=16, inter=48, vocab=29)
    model = DecoderModel(spec, "fp8", seed=13)
    cache = model.new_cache(2, 6, filled=5)
    k0, v0 = cache.k[0].clone(), cache.v[0].clone()
    x = torch.randn(2, 1, 32).to(torch.bfloat16)
    out = _run_layer(model, 0, x, cache, 5)
    lin = model.layers[0].qkv
    assert lin.weight.dtype == torch.float8_e4m3fn and lin.scale.dtype == torch.float32
    wt = lin.weight.t()
    assert wt.stride() == (1, wt.shape[0])  # column-major (K, N), as _scaled_mm wants
    ref, _, _ = reference_layer(model.layers[0], x, k0, v0, 5, model.theta)
    assert torch.isfinite(out).all()
    assert _rel(out, ref) < 0.1  # e4m3 weights and activations: ~3 significant bits


def test_quantize_per_tensor_round_trip():
    x = torch.randn(7, 33) * 5
    xq, scale = quantize_per_tensor(x, torch.float8_e4m3fn)
    assert xq.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32 and scale.dim() == 0
    assert float(xq.float().abs().max()) == pytest.approx(448.0)  # amax maps to the e4m3 max
    assert _rel(xq.float() * scale, x) < 0.05


def test_rms_norm_definition():
    x, w = torch.randn(5, 17), torch.randn(17)
    expected = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w
    torch.testing.assert_close(rms_norm(x, w, 1e-5), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tied", [False, True])
def test_model_forward_equals_reference_chain(tied):
    model = DecoderModel(_spec(tied=tied), "fp32", seed=17)
    B, start = 3, 5
    cache = model.new_cache(B, start + 1, filled=start)
    ks = [k.clone() for k in cache.k]
    vs = [v.clone() for v in cache.v]
    tokens = model.random_tokens(B, 1)
    logits = model.forward(tokens, cache)
    assert logits.shape == (B, 53)
    x = model.embed[tokens].float()
    for i, layer in enumerate(model.layers):
        x, _, _ = reference_layer(layer, x, ks[i], vs[i], start, model.theta)
    h = x[:, -1]
    h = h / torch.sqrt((h * h).mean(-1, keepdim=True) + model.eps)
    torch.testing.assert_close(logits, h @ model.lm_head.float().T, atol=1e-4, rtol=1e-4)
    assert (model.lm_head is model.embed) == tied


def test_forward_on_a_prefix_of_layers_and_head_only():
    model = DecoderModel(_spec(layers=3), "fp32", seed=19)
    tokens = model.random_tokens(2, 1)
    one = model.forward(tokens, model.new_cache(2, 4, filled=3, layers=1))
    assert one.shape == (2, 53)
    none = model.forward(tokens, model.new_cache(2, 4, filled=3, layers=0))
    torch.testing.assert_close(none, model.head_only(tokens))
    assert not torch.allclose(one, none)


def test_step_is_replayable_on_static_state():
    """The cache length does not advance: the same step twice gives the same logits."""
    model = DecoderModel(_spec(), "fp32", seed=23)
    cache = model.new_cache(2, 8, filled=7)
    tokens = model.random_tokens(2, 1)
    torch.testing.assert_close(model.forward(tokens, cache), model.forward(tokens, cache))


def test_cache_too_small_is_an_error():
    model = DecoderModel(_spec(), "fp32")
    with pytest.raises(ValueError):
        model.forward(model.random_tokens(1, 4), model.new_cache(1, 3))
