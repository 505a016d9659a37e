"""The fused dequantizing GEMV (int8 per channel, int4 per group) against an fp64 reference.

Runs under the Triton interpreter on CPU tensors when no GPU is present
(tests/conftest.py sets TRITON_INTERPRET=1), on the GPU otherwise. Sizes are odd:
N not a multiple of any block, K not a multiple of BLOCK_K, int4 K not a multiple
of the group (a ragged last group).
"""

import math

import pytest
import torch
from probe_helpers import assert_graph_replays_eager, assert_input_error

from ridgeline.kernels import dequant_gemv as D
from ridgeline.kernels.dequant_gemv import (
    DequantGemvInputError, candidate_configs, dequant_gemv, select_config,
)
from ridgeline.kernels.gemv import MAX_SPLIT_K, GemvConfig
from ridgeline.probes.dequant import dequantize, pack_int4


def make_inputs(batch, n, k, kind, device, group=None, seed=0):
    """bf16 x; int8 (N, K) or packed int4 (N, K/2) weights with fp16 scales of varied size."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, k, generator=g).to(torch.bfloat16)
    if kind == "int8":
        q = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
        s = torch.rand(n, generator=g) * 0.02 + 0.001
    else:
        q = pack_int4(torch.randint(-8, 8, (n, k), generator=g))
        s = torch.rand(n, math.ceil(k / group), generator=g) * 0.2 + 0.01
    return x.to(device), q.to(device), s.to(torch.float16).to(device)


def assert_close_to_reference(y, x, q, s, group):
    """One bf16 output ulp of the fp64 reference from the same quantized operands, plus an
    absolute term for outputs near zero (accumulation order; grows like sqrt(K))."""
    ref = x.double() @ dequantize(q, s, group, torch.float64).t()
    assert y.shape == ref.shape and y.dtype == x.dtype
    rms = ref.pow(2).mean().sqrt()
    err = (y.double() - ref).abs()
    bound = 2**-7 * (ref.abs() + 1e-3 * math.sqrt(x.shape[1] / 1024) * rms)
    assert bool((err <= bound).all()), f"max err {err.max():.3g}, worst {(err / bound).max():.3g}"


CASES = [   # (batch, n, k, kind, group)
    (3, 301, 1000, "int8", None),
    (1, 301, 1000, "int8", None),
    (17, 45, 250, "int8", None),
    (3, 301, 1000, "int4", 128),
    (1, 301, 1000, "int4", 128),     # ragged last group: 1000 = 7 x 128 + 104
    (5, 77, 96, "int4", 32),         # N and K smaller than one block
    (17, 45, 256, "int4", 64),       # two batch tiles
]


@pytest.mark.parametrize("batch,n,k,kind,group", CASES)
def test_default_config_matches_reference(kernel_device, batch, n, k, kind, group):
    x, q, s = make_inputs(batch, n, k, kind, kernel_device, group)
    assert_close_to_reference(dequant_gemv(x, q, s, group_size=group), x, q, s, group)


@pytest.mark.parametrize("batch,cfg", [
    (1, GemvConfig(64, 64, 1, split_k=3)),       # CUDA-core path, split K
    (3, GemvConfig(32, 64, 16, split_k=3)),      # tensor-core path, split K
    (1, GemvConfig(64, 32, 16, split_k=1)),      # B = 1 on the tensor-core path
    (3, GemvConfig(16, 32, 16, split_k=MAX_SPLIT_K)),   # more splits than K blocks
])
@pytest.mark.parametrize("kind,group", [("int8", None), ("int4", 64)])
def test_paths_and_split_k_match_reference(kernel_device, batch, cfg, kind, group):
    x, q, s = make_inputs(batch, 93, 202, kind, kernel_device, group, seed=1)
    y = dequant_gemv(x, q, s, group_size=group, config=cfg)
    assert_close_to_reference(y, x, q, s, group)


def test_int4_nibble_order_and_group_scales_are_honoured(kernel_device):
    """One nonzero weight at a time: the kernel must find it at its own k with its group's
    scale (a swapped nibble or a wrong group reads another x or another scale)."""
    k, group = 64, 32
    x = torch.arange(1, k + 1, dtype=torch.float32).to(torch.bfloat16)[None, :]   # x[k] = k + 1
    for col in (0, 1, 30, 33, 63):
        vals = torch.zeros(2, k, dtype=torch.int64)
        vals[1, col] = -3
        s = torch.tensor([[1.0, 1.0], [0.5, 4.0]], dtype=torch.float16)
        q = pack_int4(vals)
        y = dequant_gemv(x.to(kernel_device), q.to(kernel_device), s.to(kernel_device),
                         group_size=group).float().cpu()
        want = -3 * (col + 1) * (0.5 if col < group else 4.0)
        assert y[0, 0] == 0 and y[0, 1] == pytest.approx(want, rel=2**-8)


def _bad(device):
    bf = torch.bfloat16
    x = torch.randn(2, 64, device=device).to(bf)
    q8 = torch.zeros(32, 64, dtype=torch.int8, device=device)
    s8 = torch.ones(32, dtype=torch.float16, device=device)
    q4 = torch.zeros(32, 32, dtype=torch.uint8, device=device)
    s4 = torch.ones(32, 2, dtype=torch.float16, device=device)
    return [
        ((x[0], q8, s8, None), "x must be (B, K)"),
        ((x.float(), q8, s8, None), "activations must be bf16 or fp16"),
        ((x, q8.float(), s8, None), "int8 (per channel) or uint8-packed int4"),
        ((x, q8[:, :60], s8, None), "must be (32, 64)"),
        ((x, q8, s8.float(), None), "scales must be fp16 of shape (32,)"),
        ((x, q4, s4, None), "int4 needs group_size"),
        ((x, q4, s4, 48), "power of two"),
        ((x, q4, s4[:, :1], 32), "shape (32, 2)"),
        ((x[:, :63], q4, s4, 32), "must be even"),
        ((x, q8.t().contiguous().t(), s8, None), "contiguous along K"),
        ((x[:, :0], q8[:, :0], s8, None), "empty problem"),
    ]


@pytest.mark.parametrize("index", range(11))
def test_bad_inputs_raise_actionable_errors(kernel_device, index):
    (x, q, s, group), message = _bad(kernel_device)[index]
    assert_input_error(DequantGemvInputError, message, dequant_gemv, x, q, s, group_size=group)


def test_forced_config_is_checked(kernel_device):
    x, q, s = make_inputs(2, 32, 128, "int4", kernel_device, 32)
    with pytest.raises(DequantGemvInputError, match="needs B=1"):
        dequant_gemv(x, q, s, group_size=32, config=GemvConfig(16, 32, 1))
    with pytest.raises(DequantGemvInputError, match="must divide group_size=32"):
        dequant_gemv(x, q, s, group_size=32, config=GemvConfig(16, 64, 16))
    with pytest.raises(DequantGemvInputError, match="split_k"):
        dequant_gemv(x, q, s, group_size=32, config=GemvConfig(16, 32, 16, split_k=99))


@pytest.mark.parametrize("batch", [1, 2, 16, 17, 33, 64, 512])
@pytest.mark.parametrize("n,k", [(4096, 4096), (14336, 4096), (4096, 14336)])
@pytest.mark.parametrize("group", [None, 128])
def test_candidate_configs_fit_the_group_and_the_paths(batch, n, k, group):
    for budget in ("quick", "default", "full"):
        cands = candidate_configs(batch, n, k, group, sm_count=132, budget=budget)
        assert cands and len(cands) == len(set(cands))
        for c in cands:
            if c.block_b == 1:   # the CUDA-core path reads W once per batch row
                assert batch == 1
            else:
                assert min(c.block_n, c.block_k, c.block_b) >= 16
            if group:
                assert group % c.block_k == 0 and c.block_k >= D.MIN_DOT_K
            assert 1 <= c.split_k <= MAX_SPLIT_K and (c.split_k == 1 or batch <= 16)
        if budget == "quick":
            assert len(cands) == 1
    assert candidate_configs(batch, n, k, group, budget="default") == \
        candidate_configs(batch, n, k, group, budget="full")[:len(
            candidate_configs(batch, n, k, group, budget="default"))]
    with pytest.raises(ValueError, match="budget"):
        candidate_configs(batch, n, k, group, budget="huge")


def test_select_config_takes_the_first_candidate_untimed_off_gpu(kernel_device, monkeypatch):
    if kernel_device != "cpu":
        pytest.skip("on a GPU the candidates are timed")
    monkeypatch.setattr(D, "_TUNED", {})
    timed = []
    monkeypatch.setattr(D, "_time_candidates", lambda *a, **k: timed.append(a))
    x, q, s = make_inputs(3, 64, 256, "int4", "cpu", 128)
    cfg = select_config(x, q, s, 128)
    assert cfg == candidate_configs(3, 64, 256, 128, sm_count=1)[0] and timed == []


# --- on a GPU -------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3, 16, 64])
@pytest.mark.parametrize("kind,group", [("int8", None), ("int4", 128)])
@pytest.mark.parametrize("n,k", [(4096, 4096), (1023, 1024)])
def test_gpu_tuned_matches_reference(batch, kind, group, n, k):
    x, q, s = make_inputs(batch, n, k, kind, "cuda", group, seed=batch)
    y = dequant_gemv(x, q, s, group_size=group)
    torch.cuda.synchronize()
    assert_close_to_reference(y, x, q, s, group)


@pytest.mark.gpu
def test_gpu_cuda_graph_capture_replays_the_same_result():
    x, q, s = make_inputs(1, 4096, 4096, "int4", "cuda", 128)
    assert_graph_replays_eager(lambda: dequant_gemv(x, q, s, group_size=128))
