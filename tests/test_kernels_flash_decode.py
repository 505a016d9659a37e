"""The flash-decoding kernel against its float32 reference, at odd sizes.

Runs under the Triton interpreter on CPU tensors when no GPU is present
(tests/conftest.py sets TRITON_INTERPRET=1), on the GPU otherwise; the
`gpu`-marked tests add Llama shapes, offsets past 2**31 and CUDA-graph capture.
"""

import math

import pytest
import torch
from probe_helpers import assert_graph_replays_eager, assert_input_error, build_ahead_of_time

from ridgeline.kernels import flash_decode as K
from ridgeline.kernels.flash_decode import (
    MAX_SPLITS, DecodeConfig, FlashDecodeInputError, flash_decode, flash_decode_reference,
    num_splits_for, resolve_config, split_plan,
)


def make_inputs(batch, q_heads, kv_heads, context, head_dim, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, q_heads, head_dim, generator=g).to(dtype)
    k = torch.randn(batch, kv_heads, context, head_dim, generator=g).to(dtype)
    v = torch.randn(batch, kv_heads, context, head_dim, generator=g).to(dtype)
    return q.to(device), k.to(device), v.to(device)


def assert_close_to_reference(out, q, k, v):
    """Within one output ulp of the fp32 reference (bf16: 2**-7, fp16: 2**-10) of |ref| plus
    the row's rms: the output is rounded once, and on a GPU the softmax weights P are rounded
    to the input dtype before P.V, an error relative to the row's magnitude, not the element's."""
    ref = flash_decode_reference(q, k, v)
    assert out.shape == ref.shape and out.dtype == q.dtype
    ulp = 2**-7 if q.dtype == torch.bfloat16 else 2**-10
    row_rms = ref.pow(2).mean(dim=-1, keepdim=True).sqrt()
    err = (out.float() - ref).abs()
    bound = ulp * (ref.abs() + row_rms)
    assert bool(torch.isfinite(out).all())
    assert bool((err <= bound).all()), f"max err {err.max():.3g}, worst {(err / bound).max():.3g}"


@pytest.mark.parametrize("batch,q_heads,kv_heads,context,head_dim,splits,block_n", [
    (3, 6, 2, 37, 64, 1, 16),      # one split: the first kernel writes the output, ragged tile
    (3, 6, 2, 100, 64, 3, 16),     # three splits of 48, 48, 4 tokens
    (3, 6, 2, 100, 64, 2, 32),     # another tile: two splits of 64 and 36
    (2, 5, 5, 33, 48, 2, 16),      # MHA (G = 1), head_dim not a power of two (masked D)
    (1, 8, 1, 200, 64, 4, 16),     # MQA (G = 8)
    (2, 4, 2, 7, 64, 1, 16),       # a context shorter than one tile
])
def test_matches_reference_at_odd_sizes(kernel_device, batch, q_heads, kv_heads, context,
                                        head_dim, splits, block_n):
    q, k, v = make_inputs(batch, q_heads, kv_heads, context, head_dim, torch.bfloat16,
                          kernel_device, seed=context)
    cfg = DecodeConfig(block_n=block_n, num_splits=splits)
    assert resolve_config(q, k, cfg).num_splits == splits
    assert_close_to_reference(flash_decode(q, k, v, config=cfg), q, k, v)


def test_fp16_and_split_count_agree(kernel_device):
    q, k, v = make_inputs(3, 6, 2, 100, 64, torch.float16, kernel_device, seed=1)
    one = flash_decode(q, k, v, config=DecodeConfig(block_n=16, num_splits=1))
    four = flash_decode(q, k, v, config=DecodeConfig(block_n=16, num_splits=4))
    assert_close_to_reference(one, q, k, v)
    assert_close_to_reference(four, q, k, v)
    # deterministic: the same launch gives the same bits
    assert torch.equal(four, flash_decode(q, k, v, config=DecodeConfig(block_n=16, num_splits=4)))


def test_strided_cache_layout(kernel_device):
    """A (B, S, Hkv, D) cache passed as its (B, Hkv, S, D) view: the kernel follows the strides."""
    q, k, v = make_inputs(2, 6, 3, 45, 64, torch.bfloat16, kernel_device, seed=2)
    k_bshd, v_bshd = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
    cfg = DecodeConfig(block_n=16, num_splits=2)
    strided = flash_decode(q, k_bshd.transpose(1, 2), v_bshd.transpose(1, 2), config=cfg)
    assert torch.equal(strided, flash_decode(q, k, v, config=cfg))
    assert_close_to_reference(strided, q, k, v)


def test_sm_scale(kernel_device):
    q, k, v = make_inputs(2, 4, 2, 40, 64, torch.bfloat16, kernel_device, seed=3)
    out = flash_decode(q, k, v, sm_scale=0.3, config=DecodeConfig(block_n=16, num_splits=2))
    ref = flash_decode_reference(q, k, v, sm_scale=0.3)
    assert (out.float() - ref).abs().max() <= 2**-7 * (ref.abs().max() + 1e-3)
    assert (ref - flash_decode_reference(q, k, v)).abs().max() > 1e-2   # the scale mattered


def test_reference_is_explicit_softmax_per_query_head():
    q, k, v = make_inputs(2, 4, 2, 5, 3, torch.float32, "cpu", seed=4)
    ref = flash_decode_reference(q, k, v)
    for b in range(2):
        for h in range(4):
            g = h // 2   # query heads 0, 1 read KV head 0; 2, 3 read KV head 1
            s = [sum(float(q[b, h, d]) * float(k[b, g, t, d]) for d in range(3)) / math.sqrt(3)
                 for t in range(5)]
            w = [math.exp(x - max(s)) for x in s]
            expect = [sum(w[t] * float(v[b, g, t, d]) for t in range(5)) / sum(w)
                      for d in range(3)]
            assert torch.allclose(ref[b, h].double(), torch.tensor(expect, dtype=torch.float64),
                                  rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("context", [1, 7, 16, 37, 100, 1000, 32768])
@pytest.mark.parametrize("block_n", [16, 64])
@pytest.mark.parametrize("want", [1, 2, 3, 4, 33, MAX_SPLITS])
def test_split_plan_covers_the_context_with_no_empty_split(context, block_n, want):
    chunk, splits = split_plan(context, want, block_n)
    assert chunk % block_n == 0 and 1 <= splits <= want
    assert (splits - 1) * chunk < context <= splits * chunk   # the last split holds >= 1 token
    # the smallest aligned chunk that needs no more than `want` splits: as many as fit
    assert chunk == block_n or math.ceil(context / (chunk - block_n)) > want
    if context >= want * block_n and want <= 4:
        assert splits == want


def test_num_splits_fills_the_gpu_at_small_batch_only():
    # Llama-3 8B shape on an H100/H200 (132 SMs): 8 programs at B = 1 -> ~2 per SM
    assert num_splits_for(1, 8, 32768, 132) == 33
    assert num_splits_for(16, 8, 32768, 132) == 3
    assert num_splits_for(64, 8, 32768, 132) == 1           # 512 programs already
    assert num_splits_for(1, 8, 512, 132) == 2              # >= 4 tiles of 64 per split
    assert num_splits_for(1, 8, 100, 132) == 1
    assert num_splits_for(1, 1, 10**6, 132) == MAX_SPLITS
    assert num_splits_for(3, 2, 37, 1) == 1                 # the interpreter: one "SM"


def test_auto_config_is_resolved_to_the_launched_split_count(kernel_device):
    q, k, _ = make_inputs(2, 4, 2, 40, 64, torch.bfloat16, kernel_device)
    cfg = resolve_config(q, k, DecodeConfig(block_n=16, num_splits=8))
    assert cfg.num_splits == 3 and str(cfg) == "BN16 SPLITS3 w4 s2"   # 40 tokens: 3 tiles
    auto = resolve_config(q, k)
    assert auto.num_splits == split_plan(40, num_splits_for(2, 2, 40, K.sm_count(
        str(q.device)), 64), 64)[1]


def _bad(kernel_device):
    bf, dev = torch.bfloat16, kernel_device
    q, k, v = make_inputs(2, 4, 2, 8, 16, bf, dev)
    return [
        ((q[0], k, v), "q must be (B, Hq, D)"),
        ((q, k, v[:, :, :5]), "differ"),
        ((q[:1], k, v), "does not match the cache"),
        ((q[:, :3], k, v), "not a multiple of"),
        ((q.float(), k.float(), v.float()), "must all be bf16 or all fp16"),
        ((q, k.half(), v), "must all be bf16 or all fp16"),
        ((q, k.transpose(2, 3).contiguous().transpose(2, 3), v), "contiguous along D"),
        ((q, k[:, :, :0], v[:, :, :0]), "empty problem"),
        (("q", k, v), "torch tensors"),
    ]


@pytest.mark.parametrize("index", range(9))
def test_bad_inputs_raise_actionable_errors(kernel_device, index):
    args, message = _bad(kernel_device)[index]
    assert_input_error(FlashDecodeInputError, message, flash_decode, *args)


def test_bad_configs_are_refused(kernel_device):
    q, k, v = make_inputs(2, 4, 2, 8, 16, torch.bfloat16, kernel_device)
    with pytest.raises(FlashDecodeInputError, match="block_n"):
        flash_decode(q, k, v, config=DecodeConfig(block_n=48))
    with pytest.raises(FlashDecodeInputError, match="num_splits"):
        flash_decode(q, k, v, config=DecodeConfig(num_splits=MAX_SPLITS + 1))


# --- on a GPU -------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("batch,context", [(1, 32768), (4, 8192), (64, 2048), (256, 512)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_llama_shapes_match_reference_and_sdpa(batch, context, dtype):
    q, k, v = make_inputs(batch, 32, 8, context, 128, dtype, "cuda", seed=batch)
    out = flash_decode(q, k, v)
    torch.cuda.synchronize()
    assert_close_to_reference(out, q, k, v)


@pytest.mark.gpu
def test_gpu_offsets_past_2_31_elements():
    """B*Hkv*S*D > 2**31: the last sequence's cache lies beyond any int32 offset."""
    batch, kv_heads, context, d = 130, 8, 16384, 128
    assert batch * kv_heads * context * d > 2**31
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(batch, 32, d, device="cuda", generator=gen, dtype=torch.bfloat16)
    k = torch.randn(batch, kv_heads, context, d, device="cuda", generator=gen,
                    dtype=torch.bfloat16)
    v = torch.randn_like(k)
    out = flash_decode(q, k, v)
    for b in (0, batch - 1):
        assert_close_to_reference(out[b:b + 1], q[b:b + 1], k[b:b + 1], v[b:b + 1])


@pytest.mark.gpu
def test_gpu_cuda_graph_capture_replays_the_same_result():
    q, k, v = make_inputs(1, 32, 8, 4096, 128, torch.bfloat16, "cuda")
    assert_graph_replays_eager(lambda: flash_decode(q, k, v))


# --- ahead-of-time compile for a GPU target (no GPU needed) ---------------------------

_AOT_SCRIPT = r'''
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from ridgeline.kernels import flash_decode as F

RUNTIME = ("S", "CHUNK", "n_splits")

def build(fn, sig, consts, warps, stages):
    sig = dict(sig, **{k: "constexpr" for k in consts})
    div = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k in sig
           if sig[k] != "constexpr" and k not in RUNTIME and k != "qk_scale"}
    src = triton.compiler.ASTSource(fn=fn, constexprs=consts, signature=sig, attrs=div)
    target = GPUTarget("cuda", 90, 32)
    opts = triton.compiler.make_backend(target).parse_options({"num_warps": warps,
                                                              "num_stages": stages})
    return triton.compile(src, target=target, options=opts.__dict__)

ints = ["S", "CHUNK", "n_splits", "stride_qb", "stride_qh", "stride_kb", "stride_kh", "stride_ks",
        "stride_vb", "stride_vh", "stride_vs", "stride_ob", "stride_oh"]
sig = {"q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "out_ptr": "*fp32",
       "m_ptr": "*fp32", "l_ptr": "*fp32", "qk_scale": "fp32", **{k: "i32" for k in ints}}
consts = dict(HQ=32, HKV=8, G=4, D=128, IS_SPLIT=True, UPCAST_DOT=False, BLOCK_G=16,
              BLOCK_N=64, BLOCK_D=128)
split = build(F._split_kernel, sig, consts, 4, 2)
red = build(F._reduce_kernel, {"acc_ptr": "*fp32", "m_ptr": "*fp32", "l_ptr": "*fp32",
            "out_ptr": "*bf16", "n_splits": "i32", "stride_ob": "i32", "stride_oh": "i32"},
            dict(HQ=32, D=128, BLOCK_D=128), 4, 1)
json.dump({"split": {"ptx": split.asm["ptx"], "shared": split.metadata.shared},
           "reduce": {"ptx": red.asm["ptx"]}}, sys.stdout)
'''


@pytest.mark.slow
def test_kernel_compiles_for_sm90_with_tensor_cores():
    """Compile the split kernel and the reduction for an H100 with Triton's bundled ptxas
    (no GPU needed): bf16 tensor-core MMAs for q.K and P.V, K and V tiles streamed with
    16-byte asynchronous copies marked evict-first, within H100 shared memory."""
    built = build_ahead_of_time(_AOT_SCRIPT)
    ptx = built["split"]["ptx"]
    assert "mma" in ptx and "bf16" in ptx and "evict_first" in ptx
    assert "cp.async.cg.shared.global" in ptx   # 16-byte asynchronous copies, pipelined
    assert built["split"]["shared"] <= 227 * 1024
    assert ".entry" in built["reduce"]["ptx"]
