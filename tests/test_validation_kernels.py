"""The fused Triton kernels of the validation transformer against its PyTorch ops.

On a machine without a GPU, conftest sets TRITON_INTERPRET=1 and the kernels run
on CPU tensors under the interpreter (small odd sizes: it is slow).
"""

from types import SimpleNamespace

import pytest
import torch

from ridgeline.device import get_device
from ridgeline.validation.transformer import DecoderModel, check_fused_ops, fp8_dtype_for


def _spec(hidden=40, heads=6, kv_heads=2, head_dim=10, inter=37, vocab=29, layers=2):
    return SimpleNamespace(name="odd", hidden_size=hidden, num_layers=layers,
                           num_attention_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                           intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_check_fused_ops_passes(kernel_device, dtype):
    fp8 = torch.float8_e4m3fn  # the interpreter converts to e4m3 on the CPU
    if kernel_device != "cpu":
        info = get_device("cuda:0")
        fp8 = (fp8_dtype_for(torch.device("cuda:0"), info.gfx_arch)
               if info.supports("fp8_e4m3") or info.supports("fp8_e4m3fnuz") else None)
    assert check_fused_ops(torch.device(kernel_device), dtype, fp8) is None


@pytest.mark.parametrize("batch,context", [(3, 6), (1, 0)])
def test_fused_model_equals_torch_ops_model(kernel_device, batch, context):
    """Same seed, same weights: the fused and the PyTorch step give the same logits and cache."""
    dev = torch.device(kernel_device)
    fused = DecoderModel(_spec(), "fp32", device=dev, seed=31, fused=True)
    plain = DecoderModel(_spec(), "fp32", device=dev, seed=31, fused=False)
    assert fused.ops.name == "triton" and plain.ops.name == "torch"
    T = 1 if context else 7  # decode over a filled cache, or a prefill
    cf = fused.new_cache(batch, context + T, filled=context)
    cp = plain.new_cache(batch, context + T, filled=context)
    torch.testing.assert_close(cf.k[1], cp.k[1])  # identical random state so far
    tokens = fused.random_tokens(batch, T)
    lf, lp = fused.forward(tokens, cf), plain.forward(tokens, cp)
    torch.testing.assert_close(lf, lp, atol=1e-4, rtol=1e-4)
    for a, b in zip(cf.k + cf.v, cp.k + cp.v):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert torch.equal(fused.sampled, lf.argmax(-1))
