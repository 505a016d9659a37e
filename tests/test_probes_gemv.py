"""The decode GEMV probe: exact work counts, sweep and waivers, end-to-end runs on the CPU;
also the rotation rules it shares with the other rotating probes (ridgeline.probes.rotation)."""

import dataclasses
import math

import pytest
import torch
from probe_helpers import CallingTimer, gpu_info, run_all

from ridgeline.device import cpu_device
from ridgeline.errors import Waived
from ridgeline.probes import get_probe
from ridgeline.probes import gemv as G
from ridgeline.probes import rotation as R
from ridgeline.probes.base import ProbeContext
from ridgeline.probes.matmul import fast_accum_tolerance
from ridgeline.records import fit_ready
from ridgeline.timing import FakeTimer, HostTimer

MB = 10**6


# --- work counts ----------------------------------------------------------------------

def test_work_counts_exact():
    K, N = 4096, 14336
    assert G.weight_bytes(N, K, "bf16") == 117_440_512
    assert G.bytes_read(1, 4096, 4096, "bf16") == 4096 * 4096 * 2 + 4096 * 2
    assert G.bytes_read(16, N, K, "fp16", act_dtype="fp16") == N * K * 2 + 16 * K * 2
    # fp8 weights, bf16 activations (Triton, weight-only): + N fp32 scales
    assert G.bytes_read(16, N, K, "fp8_e4m3") == N * K + 16 * K * 2 + N * 4
    # W8A8 (torch._scaled_mm, rowwise): fp8 activations + a per-token scale
    assert G.bytes_read(16, N, K, "fp8_e4m3", act_dtype="fp8_e4m3") == \
        N * K + 16 * K + N * 4 + 16 * 4
    assert G.bytes_read(16, N, K, "fp8_e4m3", "fp8_e4m3", scales="per_tensor") == N * K + 16 * K + 8
    assert G.bytes_read(3, 1023, 1000, "fp32", act_dtype="fp32") == 1023 * 1000 * 4 + 3 * 1000 * 4
    assert G.bytes_written(3, 1023) == 3 * 1023 * 2
    assert G.bytes_written(3, 1023, "fp32") == 3 * 1023 * 4
    assert G.flops(3, 1023, 1000) == 2 * 3 * 1023 * 1000


def test_rotation_copies():
    w = 4096 * 4096 * 2                                        # 33.5 MB
    assert R.rotation_copies(w, 50 * 2**20, 80 * 2**30) == math.ceil(4 * 50 * 2**20 / w) == 7
    assert R.rotation_copies(8192 * 28672 * 2, 50 * 2**20, 80 * 2**30) == 1   # already >> L2
    assert R.rotation_copies(w, 50 * 2**20, 3 * w) == 1        # half of free memory holds one
    assert R.rotation_copies(w, 50 * 2**20, w) == 0            # not even one: the probe waives
    assert R.rotation_copies(w, 50 * 2**20, 80 * 2**30, max_copies=3) == 3
    assert R.rotation_copies(w, 50 * 2**20, 80 * 2**30, factor=8) == 13


def test_launches_cycle_all_copies():
    assert G.launches_per_sample(5, "cpu") == 5                # a CPU sample: one rotation
    for copies in (1, 2, 6, 16, 20):
        launches = G.launches_per_sample(copies, "cuda")
        assert launches % copies == 0 and launches >= 16 and launches - copies < 16
        # the one-call-a-sample probes differ on the CPU only
        assert R.launches_per_sample(copies, "cuda", cpu_whole_rotation=False) == launches
    assert R.launches_per_sample(5, "cpu", cpu_whole_rotation=False) == 1


def test_cache_bytes():
    assert R.cache_bytes_for(gpu_info(l2=50 * 2**20)) == 50 * 2**20
    assert R.cache_bytes_for(gpu_info(l2=None)) == R.DEFAULT_CACHE_BYTES
    mi300 = gpu_info(kind="rocm", gfx="gfx942", l2=4 * 2**20)
    assert R.cache_bytes_for(mi300) == 256 * 2**20             # Infinity Cache, not the L2
    assert G.fp8_name(mi300) == "fp8_e4m3fnuz" and G.fp8_name(gpu_info()) == "fp8_e4m3"


# --- the sweep ------------------------------------------------------------------------

def test_gpu_full_sweep_covers_llm_shapes_batches_providers():
    ctx = ProbeContext(device=gpu_info(), timer=FakeTimer())
    probe = G.GemvProbe()
    cases = probe.cases(ctx)
    got = {(c["dtype"], c["provider"], c["k"], c["n"], c["batch"]) for c in cases}
    for dtype, providers in (("bf16", ("torch", "triton")),
                             ("fp8_e4m3", ("torch_scaled_mm", "triton"))):
        for k, n in [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 8192), (8192, 28672)]:
            for b in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]:
                for p in providers:
                    assert (dtype, p, k, n, b) in got
    assert all(probe.waiver(c.params, ctx) is None for c in cases)
    quick = probe.cases(dataclasses.replace(ctx, quick=True))
    assert len({(c["k"], c["n"]) for c in quick}) == 2 and len(quick) < len(cases) / 5


def test_fp8_waived_without_sm89_once_per_provider():
    ctx = ProbeContext(device=gpu_info(cc="8.0", fp8=False), timer=FakeTimer())
    probe = G.GemvProbe()
    fp8 = [c for c in probe.cases(ctx) if c["dtype"] == "fp8_e4m3"]
    assert sorted(c["provider"] for c in fp8) == ["torch_scaled_mm", "triton"]
    for c in fp8:
        with pytest.raises(Waived, match="FP8 needs sm_89\\+"):
            probe.run(c, ctx)


def test_scaled_mm_waived_on_shapes_not_multiple_of_16():
    ctx = ProbeContext(device=gpu_info(), timer=FakeTimer())
    reason = G.GemvProbe().waiver({"provider": "torch_scaled_mm", "dtype": "fp8_e4m3", "k": 1000,
                                   "n": 1024, "batch": 1}, ctx)
    assert "multiples of 16" in reason


def test_cpu_quick_sweep_small_torch_only():
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(), quick=True)
    probe = G.GemvProbe()
    cases = probe.cases(ctx)
    runnable = [c for c in cases if probe.waiver(c.params, ctx) is None]
    assert {c["provider"] for c in runnable} == {"torch"}
    assert {c["dtype"] for c in runnable} == {"bf16", "fp32"}
    assert max(G.weight_bytes(c["n"], c["k"], c["dtype"]) for c in runnable) <= 64 * MB
    waived = {(c["dtype"], c["provider"]): probe.waiver(c.params, ctx)
              for c in cases if c not in runnable}
    assert waived[("bf16", "triton")] == G.TRITON_ON_CPU
    assert "FP8" in waived[("fp8_e4m3", "torch_scaled_mm")]
    assert len(waived) == len([c for c in cases if c not in runnable])   # one per pair


# --- end to end on the CPU ------------------------------------------------------------

TINY = {"shapes": [[96, 80]], "batches": [1, 3], "dtypes": ["bf16", "fp32"]}


def test_end_to_end_fake_timer_records():
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(bw_GBps=1000, latency_us=5),
                       options=dict(TINY))
    records, waived = run_all(get_probe("gemv"), ctx)
    assert len(records) == 4 and {r["provider"] for r in records} == {"torch"}
    assert {p["provider"] for p, _ in waived} == {"triton"}
    for r in records:
        b, n, k, d = r["batch"], r["n"], r["k"], r["dtype"]
        br, bw = G.bytes_read(b, n, k, d, act_dtype=d), G.bytes_written(b, n, d)
        assert (r["probe"], r["kernel"], r["status"], r["validated"]) == \
            ("gemv", "gemv", "ok", True)
        assert (r["m"], r["bytes_read"], r["bytes_written"]) == (b, br, bw)
        assert r["flops"] == 2 * b * n * k and r["weight_bytes"] == G.weight_bytes(n, k, d)
        assert r["act_dtype"] == r["out_dtype"] == d
        # the FakeTimer got exactly the recorded work: median = (bytes / 1 TB/s + 5 us) * 1.02
        assert r["time_ms_median"] == pytest.approx(((br + bw) / 1e12 + 5e-6) * 1e3 * 1.02)
        assert r["bw_GBps"] == pytest.approx((br + bw) / (r["time_ms_median"] * 1e-3) / 1e9)
        seconds = r["time_ms_median"] * 1e-3
        assert r["weight_bw_GBps"] == pytest.approx(r["weight_bytes"] / seconds / 1e9)
        assert r["TFLOPS"] == pytest.approx(r["flops"] / (r["time_ms_median"] * 1e-3) / 1e12)
        assert r["copies"] >= 1 and r["launches_per_sample"] == r["copies"]
        assert r["rotation_bytes"] == r["copies"] * r["weight_bytes"]
        assert r["rotation_bytes"] >= 2 * r["cache_bytes"] or r["copies"] == 1
        assert r["max_abs_error"] is not None and r["config"] is None
    assert len(fit_ready(records, "gemv")) == 4


def test_end_to_end_host_timer_tiny():
    ctx = ProbeContext(device=cpu_device(), timer=HostTimer(), quick=True,
                       options={"gemv": {"shapes": [[64, 48]], "batches": [1, 2],
                                         "dtypes": ["bf16"], "max_copies": 4,
                                         "warmup_ms": 1, "rep_ms": 2}})
    records, _ = run_all(get_probe("gemv"), ctx)
    assert [r["batch"] for r in records] == [1, 2]
    for r in records:
        assert r["timer"] == "host-clock" and r["status"] == "ok"
        assert r["time_ms_median"] > 0 and r["n_samples"] >= 3 and r["copies"] == 4


def test_each_sample_cycles_through_every_copy(monkeypatch):
    seen = []
    real = torch.matmul

    def spy(a, b):
        seen.append(b.data_ptr())
        return real(a, b)

    w_bytes = G.weight_bytes(48, 64, "bf16")
    dev = dataclasses.replace(cpu_device(), l2_cache_bytes=3 * w_bytes // 2)   # 2x cache = 3 copies
    ctx = ProbeContext(device=dev, timer=CallingTimer(),   # one sample, as a graph replays it
                       options={"shapes": [[64, 48]], "batches": [2], "dtypes": ["bf16"],
                                "providers": ["torch"]})
    probe = G.GemvProbe()
    [case] = probe.cases(ctx)
    monkeypatch.setattr(torch, "matmul", spy)
    [rec] = probe.run(case, ctx)
    assert rec["copies"] == 3 and rec["launches_per_sample"] == 3
    sample = seen[1:]                                   # after the validation call
    assert len(sample) == 3 and len(set(sample)) == 3   # one sample reads every copy once
    assert len(probe.pools) == 0                   # the last case of its shape frees the weights


def test_wrong_output_is_recorded_invalid(monkeypatch):
    real = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda a, b: real(a, b) * 1.05)
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(),
                       options={"shapes": [[64, 48]], "batches": [2], "dtypes": ["bf16"]})
    records, _ = run_all(G.GemvProbe(), ctx)
    assert [(r["status"], r["validated"]) for r in records] == [("invalid", False)]
    assert fit_ready(records, "gemv") == []


def test_check_tolerance():
    ref = torch.randn(4, 300, dtype=torch.float64) * 30
    assert G.check_output(ref.to(torch.bfloat16), ref, G.RTOL["bf16"])[0]
    bad = ref.clone()
    bad[2, 7] += 0.1 * ref.abs().max()
    assert not G.check_output(bad.to(torch.bfloat16), ref, G.RTOL["bf16"])[0]
    nan = ref.clone()
    nan[0, 0] = float("nan")
    assert not G.check_output(nan, ref, G.RTOL["fp32"])[0]


def test_memory_too_small_waives(monkeypatch):
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(),
                       options={"shapes": [[64, 48]], "batches": [1], "dtypes": ["fp32"]})
    monkeypatch.setattr(ctx, "free_memory_bytes", lambda: 1000)
    probe = G.GemvProbe()
    [case] = probe.cases(ctx)[:1]
    with pytest.raises(Waived, match="GB free"):
        probe.run(case, ctx)


def test_fp8_weights_quantized_per_channel():
    w8, scale = G._make_weight(33, 40, "fp8_e4m3", torch.Generator().manual_seed(0), "cpu")
    assert w8.dtype == torch.float8_e4m3fn and scale.shape == (33,) and scale.dtype == torch.float32
    assert torch.isfinite(w8.float()).all() and (scale > 0).all()
    assert torch.equal(w8.float().abs().amax(dim=1), torch.full((33,), 448.0))


def test_scaled_mm_provider_w8a8_on_a_cpu_that_claims_fp8(scaled_mm_calls):
    """torch._scaled_mm also runs on the CPU: exercise the W8A8 path, its reference and bytes."""
    dev = dataclasses.replace(cpu_device(), dtypes={**cpu_device().dtypes, "fp8_e4m3": True})
    ctx = ProbeContext(device=dev, timer=FakeTimer(),
                       options={"shapes": [[96, 80]], "batches": [3], "dtypes": ["fp8_e4m3"],
                                "providers": ["torch_scaled_mm"]})
    probe = G.GemvProbe()
    [case] = probe.cases(ctx)
    calls = scaled_mm_calls
    try:
        [r] = probe.run(case, ctx)
    except Waived as w:
        pytest.skip(f"this torch build: {w.reason}")
    # as serving engines run forward passes, and said so in the record
    assert calls and all(c.get("use_fast_accum") is True for c in calls)
    assert r["fast_accum"] is True and r["rtol"] == G.RTOL["bf16"] + fast_accum_tolerance(96)
    assert r["validated"] and r["act_dtype"] == "fp8_e4m3" and r["out_dtype"] == "bf16"
    per_tensor = r["scale_kind"] == "tensorwise"
    assert r["bytes_read"] == G.bytes_read(3, 80, 96, "fp8_e4m3", "fp8_e4m3",
                                           scales="per_tensor" if per_tensor else "per_channel")


def test_timing_budgets_keep_the_gpu_sweep_short():
    assert G.timing_budget("cuda", quick=False) == {"warmup_ms": 10.0, "rep_ms": 40.0}
    assert G.timing_budget("rocm", quick=True) == {"warmup_ms": 5.0, "rep_ms": 15.0}
    assert G.timing_budget("cpu", quick=True)["min_reps"] == 3
    assert G.timing_budget("cpu", quick=False) == {}          # the timer's own defaults


def test_tune_budget_follows_quick_unless_told():
    ctx = ProbeContext(device=gpu_info(), timer=FakeTimer())
    assert G.tune_budget(ctx) == "default"
    assert G.tune_budget(dataclasses.replace(ctx, quick=True)) == "quick"
    assert G.tune_budget(dataclasses.replace(ctx, options={"gemv": {"tune": "full"}})) == "full"


def test_triton_provider_runs_the_config_it_selected(monkeypatch):
    """Under the interpreter (tests/conftest.py), the Triton provider end to end: the config is
    chosen once, before timing, under the tuning budget, and recorded with it."""
    from ridgeline.kernels import gemv as K

    chosen = []
    real_select = K.select_config

    def spy(x, w, scale=None, budget="default"):
        chosen.append(budget)
        return real_select(x, w, scale, budget)
    monkeypatch.setattr(K, "select_config", spy)
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(), quick=True,
                       options={"shapes": [[96, 80]], "batches": [3], "dtypes": ["bf16"],
                                "providers": ["triton"], "max_copies": 2})
    probe = G.GemvProbe()
    monkeypatch.setattr(probe, "waiver", lambda params, ctx: None)   # the CPU waives Triton
    [case] = probe.cases(ctx)
    [r] = probe.run(case, ctx)
    assert chosen == ["quick"] and r["tune_budget"] == "quick" and r["fast_accum"] is None
    assert r["validated"] and r["config"] == str(real_select(
        torch.empty(3, 96, dtype=torch.bfloat16), torch.empty(80, 96, dtype=torch.bfloat16),
        None, "quick"))


# --- on a GPU -------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_probe_small_sweep_validates_every_provider():
    from ridgeline.device import get_device
    from ridgeline.timing import make_timer

    dev = get_device("cuda:0")
    ctx = ProbeContext(device=dev, timer=make_timer(dev),
                       options={"shapes": [[4096, 4096]], "batches": [1, 16, 128],
                                "dtypes": ["bf16", G.fp8_name(dev)], "rep_ms": 20})
    records, waived = run_all(G.GemvProbe(), ctx)
    bad = [r for r in records if not r["validated"]]
    assert records and not bad, bad
    assert all(r["timer"] == "cuda-graph" and r["launches_per_sample"] >= 16 for r in records)
    assert all(r["rotation_bytes"] >= 4 * r["cache_bytes"] for r in records)
