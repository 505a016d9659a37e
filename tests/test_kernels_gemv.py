"""The decode GEMV kernel against its torch reference, at odd sizes.

Runs under the Triton interpreter on CPU tensors when no GPU is present
(tests/conftest.py sets TRITON_INTERPRET=1), on the GPU otherwise; the
`gpu`-marked tests add tuned configs, LLM shapes and CUDA-graph capture.
"""

import math
from dataclasses import replace

import pytest
import torch
from probe_helpers import assert_graph_replays_eager, assert_input_error, build_ahead_of_time

from ridgeline.kernels import gemv as K
from ridgeline.kernels.gemv import (
    FP8_DTYPES, MAX_SPLIT_K, GemvConfig, GemvInputError, batch_bucket, candidate_configs,
    gemv, gemv_reference, select_config,
)

FP8 = torch.float8_e4m3fn


def abs_tolerance_fraction(k: int) -> float:
    """Absolute term of the bound as a fraction of rms(ref), in output ulps: 1e-3 at
    K = 1024, growing like sqrt(K) (random-walk accumulation-order differences)."""
    return 1e-3 * math.sqrt(k / 1024)


def make_inputs(batch, n, k, wdtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    act = torch.float16 if wdtype == torch.float16 else torch.bfloat16
    x = torch.randn(batch, k, generator=g).to(act)
    w32 = torch.randn(n, k, generator=g)
    if wdtype in FP8_DTYPES:
        fmax = torch.finfo(wdtype).max
        scale = w32.abs().amax(dim=1) / fmax                 # per output channel, fp32
        w = (w32 / scale[:, None]).clamp(-fmax, fmax).to(wdtype)
        return x.to(device), w.to(device), scale.to(device)
    return x.to(device), w32.to(wdtype).to(device), None


def assert_close_to_reference(y, x, w, scale):
    """Within one output ulp of the fp32 reference (bf16: 2**-7, fp16: 2**-10), plus an
    absolute term for outputs near zero, where the kernel's and the reference's fp32 sums
    differ only by accumulation order: that difference grows like sqrt(K) x rms(ref)."""
    ref = (x.float() @ w.float().t())
    if scale is not None:
        ref = ref * scale[None, :]
    assert y.shape == ref.shape and y.dtype == x.dtype
    ulp = 2**-7 if x.dtype == torch.bfloat16 else 2**-10
    rms = ref.pow(2).mean().sqrt()
    err = (y.float() - ref).abs()
    bound = ulp * (ref.abs() + abs_tolerance_fraction(x.shape[1]) * rms)
    worst = (err / bound).max()
    assert bool((err <= bound).all()), f"max err {err.max():.3g}, worst err/bound {worst:.3g}"


@pytest.mark.parametrize("batch,n,k,wdtype", [
    (3, 1023, 1000, torch.bfloat16),
    (1, 1023, 1000, torch.bfloat16),
    (3, 1023, 1000, FP8),
    (1, 1023, 1000, FP8),
    (3, 1023, 1000, torch.float16),
    (5, 77, 96, torch.bfloat16),       # N and K smaller than one block
])
def test_default_config_matches_reference(kernel_device, batch, n, k, wdtype):
    x, w, scale = make_inputs(batch, n, k, wdtype, kernel_device)
    y = gemv(x, w, scale)
    assert_close_to_reference(y, x, w, scale)


@pytest.mark.parametrize("batch,cfg,k", [
    (1, GemvConfig(128, 128, 1, split_k=3), 1000),      # CUDA-core path, ragged K
    (1, GemvConfig(128, 128, 1, split_k=2), 1024),      # CUDA-core path, even K
    (3, GemvConfig(64, 128, 16, split_k=3), 1000),      # tensor-core path, ragged K
    (3, GemvConfig(64, 128, 16, split_k=4), 1024),      # even K; the last split gets no block
    (1, GemvConfig(64, 128, 16, split_k=2), 1000),      # B = 1 on the tensor-core path
])
@pytest.mark.parametrize("wdtype", [torch.bfloat16, FP8])
def test_split_k_and_paths_match_reference(kernel_device, batch, cfg, k, wdtype):
    x, w, scale = make_inputs(batch, 301, k, wdtype, kernel_device, seed=1)
    y = gemv(x, w, scale, config=cfg)
    assert_close_to_reference(y, x, w, scale)


def test_split_k_is_deterministic(kernel_device):
    x, w, scale = make_inputs(3, 130, 1000, FP8, kernel_device, seed=2)
    cfg = GemvConfig(64, 64, 16, split_k=4)
    assert torch.equal(gemv(x, w, scale, config=cfg), gemv(x, w, scale, config=cfg))


@pytest.mark.parametrize("batch,cfg", [
    (37, GemvConfig(32, 32, 32)),       # two batch tiles share each weight tile
    (130, None),                        # default large-batch config, partial last tile
])
def test_several_batch_tiles(kernel_device, batch, cfg):
    x, w, scale = make_inputs(batch, 77, 96, torch.bfloat16, kernel_device, seed=3)
    assert_close_to_reference(gemv(x, w, scale, config=cfg), x, w, scale)


def test_scale_applies_to_16_bit_weights(kernel_device):
    x, w, _ = make_inputs(2, 50, 64, torch.bfloat16, kernel_device, seed=4)
    scale = torch.linspace(0.5, 2.0, 50, device=kernel_device)
    assert_close_to_reference(gemv(x, w, scale), x, w, scale)


def test_reference_is_fp32_x_dequantized_weight():
    x, w, scale = make_inputs(2, 5, 7, FP8, "cpu", seed=5)
    expect = torch.zeros(2, 5, dtype=torch.float64)
    for b in range(2):
        for n in range(5):
            dot = sum(float(x[b, kk]) * float(w[n, kk]) for kk in range(7))
            expect[b, n] = dot * float(scale[n])
    ref = gemv_reference(x, w, scale, out_dtype=torch.float32)
    assert torch.allclose(ref.double(), expect, rtol=1e-5, atol=1e-5)
    assert gemv_reference(x, w, scale).dtype == torch.bfloat16


def _bad(kernel_device):
    bf, dev = torch.bfloat16, kernel_device
    x = torch.randn(2, 64, device=dev).to(bf)
    w = torch.randn(32, 64, device=dev).to(bf)
    w8 = w.to(FP8)
    s = torch.ones(32, device=dev)
    return [
        ((x[0], w, None), "x must be (B, K)"),
        ((x, w[:, :60], None), "K=64 but w has K=60"),
        ((x.float(), w, None), "activations must be bf16 or fp16"),
        ((x, w.half(), None), "must match the activations"),
        ((x, w.float(), None), "weights must be bf16, fp16 or fp8"),
        ((x, w8, None), "need a per-output-channel fp32 scale"),
        ((x, w8, s[:31]), "shape (32,)"),
        ((x, w8, s.double()), "contiguous fp32"),
        ((x, w.t().contiguous().t(), None), "contiguous along K"),
        ((x[:, :0], w[:, :0], None), "empty problem"),
    ]


@pytest.mark.parametrize("index", range(10))
def test_bad_inputs_raise_actionable_errors(kernel_device, index):
    args, message = _bad(kernel_device)[index]
    assert_input_error(GemvInputError, message, gemv, *args)


def test_forced_config_is_checked(kernel_device):
    x, w, _ = make_inputs(2, 32, 64, torch.bfloat16, kernel_device)
    with pytest.raises(GemvInputError, match="needs B=1"):
        gemv(x, w, config=GemvConfig(16, 64, 1))
    with pytest.raises(GemvInputError, match="split_k"):
        gemv(x, w, config=GemvConfig(16, 64, 16, split_k=MAX_SPLIT_K + 1))


def test_batch_bucket():
    assert [batch_bucket(b) for b in (1, 2, 3, 4, 5, 16, 17, 512)] == [1, 2, 4, 4, 8, 16, 32, 512]


@pytest.mark.parametrize("batch", [1, 2, 3, 16, 17, 33, 64, 65, 512])
@pytest.mark.parametrize("n,k", [(4096, 4096), (14336, 4096), (4096, 14336), (1023, 1000)])
def test_candidate_configs_are_launchable(batch, n, k):
    """Every candidate: power-of-two blocks, tensor-core tiles >= 16, split-K only at decode
    batch sizes with >= 4 K steps per split, pipelined tiles within H100 shared memory."""
    cands = candidate_configs(batch, n, k, sm_count=132)
    assert cands and len(cands) == len(set(cands)) and len(cands) <= 12
    for c in cands:
        for v in (c.block_n, c.block_k, c.block_b):
            assert v & (v - 1) == 0
        if c.block_b == 1:
            assert batch == 1        # the CUDA-core path reads W once per batch tile
        else:
            assert min(c.block_n, c.block_k, c.block_b) >= 16
            smem = (c.block_n + c.block_b) * c.block_k * 2 * c.num_stages
            assert smem <= 227 * 1024
        assert 1 <= c.split_k <= MAX_SPLIT_K
        if c.split_k > 1:
            assert batch <= 16 and -(-k // c.split_k) >= 4 * c.block_k
    assert any(c.block_b == 1 for c in cands) == (batch == 1)
    if batch <= 16 and n <= 4096 and k >= 4096:
        assert any(c.split_k > 1 for c in cands), "B<=16 on a 4096-wide output should try split-K"


def test_select_config_uses_the_first_candidate_untimed_off_gpu(kernel_device):
    x, w, _ = make_inputs(3, 64, 128, torch.bfloat16, kernel_device)
    x4 = torch.cat([x, x[:1]])
    cfg = select_config(x, w)
    if kernel_device == "cpu":  # the interpreter takes the first candidate, untimed
        assert cfg == candidate_configs(3, 64, 128)[0]
    assert select_config(x4, w) == cfg   # B=3 and B=4 share the tuning class


def test_tolerance_absolute_term_grows_with_sqrt_k():
    assert abs_tolerance_fraction(1024) == pytest.approx(1e-3)
    assert abs_tolerance_fraction(4096) == pytest.approx(2e-3)


# --- tuning budgets and sharing across shapes (no GPU: the timing is faked) --------------

SM = 132  # H100 SXM / H200


@pytest.fixture
def fake_tuner(monkeypatch):
    """Pretend to be on a GPU with SM SMs; the fake timer picks the last candidate."""
    calls = []

    def fake_time(cands, x, w, scale, *budget_ms):
        calls.append((x.shape[0], tuple(w.shape), len(cands)))
        return cands[-1]
    monkeypatch.setattr(K, "_TUNED", {})
    monkeypatch.setattr(K, "_can_time", lambda x: True)
    monkeypatch.setattr(K, "sm_count", lambda device: SM)
    monkeypatch.setattr(K, "_time_candidates", fake_time)
    return calls


def _meta(batch, n, k):
    """(B, K) activations and an (N, K) weight on the meta device: shapes without memory."""
    return (torch.empty(batch, k, dtype=torch.bfloat16, device="meta"),
            torch.empty(n, k, dtype=torch.bfloat16, device="meta"))


def test_tuning_is_shared_across_shapes_of_a_class(fake_tuner):
    first = K.select_config(*_meta(3, 4096, 4096))
    assert len(fake_tuner) == 1
    # same batch row (<= 16), same class (narrow N for a 64-wide tile, short K): no new timing
    same_row = K.select_config(*_meta(16, 4096, 4096))
    wider = K.select_config(*_meta(8, 14336, 4096))
    assert len(fake_tuner) == 1
    # the winner (last candidate: a split-K variant) keeps its tile; the split is re-derived
    assert first == same_row and first.split_k == K.split_for(first, 3, 4096, 4096, SM) == 8
    assert replace(wider, split_k=1) == replace(first, split_k=1)
    assert wider.split_k == K.split_for(first, 8, 14336, 4096, SM) == 4
    # another batch row, a long K, or another weight dtype: tuned again
    K.select_config(*_meta(1, 4096, 4096))
    K.select_config(*_meta(32, 4096, 4096))
    K.select_config(*_meta(3, 4096, 14336))
    x, w = _meta(3, 4096, 4096)
    K.select_config(x, w.to(FP8), torch.empty(4096, device="meta"))
    assert len(fake_tuner) == 5


def test_quick_budget_times_nothing_and_applies_the_split_rule(fake_tuner):
    cfg = K.select_config(*_meta(1, 4096, 4096), budget="quick")
    assert fake_tuner == []
    row0 = candidate_configs(1, 4096, 4096, SM, budget="full")[0]
    assert replace(cfg, split_k=1) == row0 and cfg.split_k == K.split_for(row0, 1, 4096, 4096, SM)
    assert candidate_configs(1, 4096, 4096, SM, budget="quick") == [cfg]


def test_precompile_compiles_every_candidate_without_launching_and_never_raises(monkeypatch):
    seen = []

    def fake_launch(x, w, scale, cfg, warmup=False):
        seen.append((cfg, warmup))
        if cfg.split_k > 1:
            raise RuntimeError("out of shared memory")   # a candidate this GPU cannot build
    monkeypatch.setattr(K, "_launch", fake_launch)
    monkeypatch.setattr(K.os, "cpu_count", lambda: 4)
    cands = candidate_configs(3, 4096, 4096, SM)
    K.precompile(cands, *_meta(3, 4096, 4096), None)
    assert sorted(map(str, (c for c, _ in seen))) == sorted(map(str, cands))
    assert all(warmup for _, warmup in seen)


@pytest.mark.parametrize("batch", [1, 4, 16, 32, 64, 512])
def test_default_budget_is_a_prefix_of_the_full_list(batch):
    full = candidate_configs(batch, 4096, 4096, SM, budget="full")
    default = candidate_configs(batch, 4096, 4096, SM, budget="default")
    assert default == full[:len(default)] and len(default) < len(full)
    with pytest.raises(ValueError, match="budget"):
        candidate_configs(batch, 4096, 4096, SM, budget="huge")


def test_gpu_profile_sweep_tunes_few_classes():
    """The default GEMV sweep on an H100/H200 (5 LLM shapes x 10 batches x 2 weight dtypes)
    tunes 13 classes per weight dtype and times 44 candidates for them, against
    100 shapes and 518 candidates when every (shape, batch) was tuned with the full list."""
    from ridgeline.probes.gemv import BATCHES, LLM_SHAPES

    classes = {}
    for k, n in LLM_SHAPES:
        for b in BATCHES:
            key = (K.batch_class(b), K.shape_class(b, n, k, SM))
            classes.setdefault(key, len(candidate_configs(b, n, k, SM, budget="default")))
    assert len(classes) == 13 and sum(classes.values()) == 44
    old = sum(len(candidate_configs(b, n, k, SM, budget="full")) for k, n in LLM_SHAPES
              for b in BATCHES)
    assert old == 259   # x 2 weight dtypes = the 518 candidates issue 10 counted


# --- on a GPU -------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3, 16, 64, 512])
@pytest.mark.parametrize("wdtype", [torch.bfloat16, torch.float16, FP8])
@pytest.mark.parametrize("n,k", [(4096, 4096), (1023, 1000)])
def test_gpu_tuned_matches_reference(batch, wdtype, n, k):
    if wdtype in FP8_DTYPES and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 needs sm_89+")
    x, w, scale = make_inputs(batch, n, k, wdtype, "cuda", seed=batch)
    y = gemv(x, w, scale)
    torch.cuda.synchronize()
    assert_close_to_reference(y, x, w, scale)


@pytest.mark.gpu
def test_gpu_cuda_graph_capture_replays_the_same_result():
    x, w, scale = make_inputs(1, 4096, 4096, torch.bfloat16, "cuda")
    assert_graph_replays_eager(lambda: gemv(x, w, scale))


# --- ahead-of-time compile for a GPU target (no GPU needed) ---------------------------

_AOT_SCRIPT = r'''
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from ridgeline.kernels import gemv as G

def build(fn, sig, consts, warps, stages):
    sig = dict(sig, **{k: "constexpr" for k in consts})
    div = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k in sig
           if sig[k] != "constexpr" and k not in ("B", "n_splits")}
    src = triton.compiler.ASTSource(fn=fn, constexprs=consts, signature=sig, attrs=div)
    target = GPUTarget("cuda", 90, 32)
    opts = triton.compiler.make_backend(target).parse_options({"num_warps": warps,
                                                              "num_stages": stages})
    return triton.compile(src, target=target, options=opts.__dict__)

base = {"x_ptr": "*bf16", "scale_ptr": "*fp32", "B": "i32", "N": "i32", "K": "i32",
        "K_SPLIT": "i32", "stride_xb": "i32", "stride_wn": "i32", "stride_ob": "i32",
        "stride_os": "i32"}
out = {}
fma = build(G._gemv_kernel, dict(base, w_ptr="*bf16", out_ptr="*bf16"),
            dict(HAS_SCALE=False, IS_SPLIT=False, EVEN_K=True, UPCAST_DOT=False, BLOCK_B=1,
                 BLOCK_N=16, BLOCK_K=512), 4, 3)
out["fma"] = {"ptx": fma.asm["ptx"], "shared": fma.metadata.shared}
mma = build(G._gemv_kernel, dict(base, w_ptr="*fp8e4nv", out_ptr="*fp32"),
            dict(HAS_SCALE=True, IS_SPLIT=True, EVEN_K=True, UPCAST_DOT=False, BLOCK_B=16,
                 BLOCK_N=64, BLOCK_K=256), 4, 4)
out["mma"] = {"ptx": mma.asm["ptx"], "shared": mma.metadata.shared}
red = build(G.splitk_reduce_kernel, {"part_ptr": "*fp32", "scale_ptr": "*fp32", "y_ptr": "*bf16",
            "B": "i32", "N": "i32", "stride_yb": "i32", "n_splits": "i32"},
            dict(HAS_SCALE=True, BLOCK=1024), 4, 3)
out["reduce"] = {"ptx": red.asm["ptx"]}
json.dump(out, sys.stdout)
'''


@pytest.mark.slow
def test_kernel_compiles_for_sm90_with_wide_loads_and_tensor_cores():
    """Compile both paths for an H100 with Triton's bundled ptxas (no GPU needed): 16-byte
    weight loads on the CUDA-core path, tensor-core MMAs on the fp8 split-K path, and the
    split-K reduction with its runtime split count."""
    built = build_ahead_of_time(_AOT_SCRIPT)
    assert "evict_first" in built["fma"]["ptx"] and ".v4.b32" in built["fma"]["ptx"]
    assert "mma" in built["mma"]["ptx"] and "e4m3" in built["mma"]["ptx"]
    assert built["mma"]["shared"] <= 227 * 1024
    assert ".entry" in built["reduce"]["ptx"]   # one reduction for every split count
