"""The attention probe: exact work counts, sweep and waivers, end-to-end runs on the CPU."""

import dataclasses
import math

import pytest
import torch
from probe_helpers import CallingTimer, gpu_info, run_all

from ridgeline.device import cpu_device
from ridgeline.errors import RidgelineError, Waived
from ridgeline.probes import DEFAULT_PROBES, get_probe
from ridgeline.counts import attention as AC
from ridgeline.probes import attention as A
from ridgeline.probes.base import ProbeContext
from ridgeline.probes.gemv import TRITON_ON_CPU
from ridgeline.records import fit_ready
from ridgeline.timing import FakeTimer, HostTimer

MiB = 2**20
FIELDS = ("probe", "kernel", "provider", "dtype", "batch", "context", "tokens", "q_heads",
          "kv_heads", "head_dim", "flops", "bytes_read", "bytes_written")
TINY_HEADS = {"q_heads": 6, "kv_heads": 2, "head_dim": 64}


# --- work counts ----------------------------------------------------------------------

def test_decode_work_counts_exact():
    # Llama-3 8B layer, 4 sequences at 8192 cached tokens, bf16
    assert AC.kv_cache_bytes(4, 8192, 8, 128, "bf16") == 134_217_728          # 4*8192*2*8*128*2
    assert AC.decode_bytes_read(4, 8192, 32, 8, 128, "bf16") == 134_217_728 + 32_768
    assert AC.decode_bytes_written(4, 32, 128, "bf16") == 32_768              # 4*32*128*2
    assert AC.decode_flops(4, 8192, 32, 128) == 536_870_912                    # 4*4*8192*32*128
    # odd sizes, and the element width from ridgeline.dtypes
    assert AC.decode_bytes_read(3, 37, 6, 2, 64, "fp16") == 3 * 37 * 2 * 2 * 64 * 2 + 3 * 6 * 64 * 2
    assert AC.decode_bytes_read(3, 37, 6, 2, 64, "fp32") == 3 * 37 * 2 * 2 * 64 * 4 + 3 * 6 * 64 * 4
    assert AC.decode_bytes_written(3, 6, 64, "fp32") == 3 * 6 * 64 * 4
    assert AC.decode_flops(3, 37, 6, 64) == 4 * 3 * 37 * 6 * 64


def test_prefill_work_counts_exact():
    # one 1024-token sequence, bf16: causal flops = 4*32*128*1024*1025/2
    assert AC.prefill_flops(1, 1024, 32, 128) == 8_598_323_200
    assert AC.prefill_bytes_read(1, 1024, 32, 8, 128, "bf16") == 12_582_912   # 1024*48*128*2
    assert AC.prefill_bytes_written(1, 1024, 32, 128, "bf16") == 8_388_608    # 1024*32*128*2
    assert AC.prefill_flops(3, 37, 6, 64) == 4 * 6 * 64 * 3 * 37 * 38 // 2
    assert AC.prefill_bytes_read(3, 37, 6, 2, 64, "fp16") == 3 * 37 * (2 * 2 + 6) * 64 * 2
    assert AC.prefill_bytes_written(3, 37, 6, 64, "fp32") == 3 * 37 * 6 * 64 * 4


def test_work_dispatches_by_kernel():
    assert AC.work("decode", 3, 37, 6, 2, 64, "bf16") == (
        AC.decode_flops(3, 37, 6, 64), AC.decode_bytes_read(3, 37, 6, 2, 64, "bf16"),
        AC.decode_bytes_written(3, 6, 64, "bf16"))
    assert AC.work("prefill", 3, 37, 6, 2, 64, "bf16") == (
        AC.prefill_flops(3, 37, 6, 64), AC.prefill_bytes_read(3, 37, 6, 2, 64, "bf16"),
        AC.prefill_bytes_written(3, 37, 6, 64, "bf16"))
    with pytest.raises(ValueError, match="unknown kernel"):
        AC.work("verify", 1, 1, 1, 1, 1, "bf16")


def test_launches_and_budgets():
    assert A.launches_per_sample(64, MiB, "cpu") == 1             # copies rotate across samples
    assert A.launches_per_sample(100, 2 * MiB, "cuda") == 100     # one rotation >= 16 launches
    assert A.launches_per_sample(2, 134 * MiB, "cuda") == 8       # 4 rounds pass 1 GiB first
    assert A.launches_per_sample(1, 34 * 2**30, "rocm") == 1      # a 34 GB cache: one launch
    assert A.launches_per_sample(3, MiB, "cuda") == 18            # >= 16, whole rotations
    assert A.timing_budget("cuda", quick=False) == {"warmup_ms": 10.0, "rep_ms": 40.0}
    assert A.timing_budget("cpu", quick=True)["min_reps"] == 3
    assert [A.prefill_batch(t, "cuda") for t in (128, 512, 2048, 8192, 9000)] == [64, 16, 4, 1, 1]
    assert A.prefill_batch(128, "cpu") == 1


# --- the sweep ------------------------------------------------------------------------

def test_registered_after_the_ceilings_it_is_priced_against():
    # after the ceilings it is priced against (the fitted model's matmul, gemv, launch floor)
    assert DEFAULT_PROBES.index("attention") > max(DEFAULT_PROBES.index(p)
                                                   for p in ("hbm", "matmul", "gemv", "launch"))
    assert isinstance(get_probe("attention"), A.AttentionProbe)


def test_gpu_sweep_grid_providers_and_dtypes():
    ctx = ProbeContext(device=gpu_info(), timer=FakeTimer())
    probe = A.AttentionProbe()
    cases = probe.cases(ctx)
    assert all(probe.waiver(c.params, ctx) is None for c in cases)
    decode = {(c["dtype"], c["provider"], c["batch"], c["context"]) for c in cases
              if c["kernel"] == "decode"}
    assert decode == {(d, p, b, s) for d in ("bf16", "fp16") for p in ("torch_sdpa", "triton")
                      for b in (1, 4, 16, 64, 256) for s in (512, 2048, 8192, 32768)}
    prefill = [c.params for c in cases if c["kernel"] == "prefill"]
    assert {(p["dtype"], p["provider"], p["tokens"], p["batch"]) for p in prefill} == {
        (d, "torch_sdpa", t, math.ceil(8192 / t)) for d in ("bf16", "fp16")
        for t in (128, 512, 2048, 8192)}
    assert all(p["context"] == p["tokens"] for p in prefill)
    assert all(c["tokens"] == 1 for c in cases if c["kernel"] == "decode")
    assert all((c["q_heads"], c["kv_heads"], c["head_dim"]) == (32, 8, 128) for c in cases)
    quick = probe.cases(dataclasses.replace(ctx, quick=True))
    assert {c["dtype"] for c in quick} == {"bf16"} and len(quick) < len(cases) / 5


def test_bf16_waived_once_per_provider_without_it():
    ctx = ProbeContext(device=gpu_info(cc="7.5", bf16=False, fp8=False), timer=FakeTimer())
    probe = A.AttentionProbe()
    bf16 = [c for c in probe.cases(ctx) if c["dtype"] == "bf16"]
    assert sorted((c["kernel"], c["provider"]) for c in bf16) == [
        ("decode", "torch_sdpa"), ("decode", "triton"), ("prefill", "torch_sdpa")]
    for c in bf16:
        with pytest.raises(Waived, match="bf16 is not supported"):
            probe.run(c, ctx)


def test_cpu_sweep_small_torch_only_within_its_cache_bound():
    probe = A.AttentionProbe()
    sweeps = ((False, (1, 4, 16), (256, 1024, 4096), (128, 512, 1024)),
              (True, (1, 8), (256, 1024), (128, 512)))
    for quick, batches, contexts, tokens in sweeps:
        ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(), quick=quick)
        cases = probe.cases(ctx)
        runnable = [c for c in cases if probe.waiver(c.params, ctx) is None]
        assert {(c["provider"], c["dtype"]) for c in runnable} == {("torch_sdpa", "bf16")}
        dims = (128,) if quick else A.CPU_HEAD_DIMS
        decode = {(c["batch"], c["context"]) for c in runnable
                  if c["kernel"] == "decode" and c["head_dim"] == 128}
        assert decode == {(b, s) for b in batches for s in contexts
                          if AC.kv_cache_bytes(b, s, 8, 128, "bf16") <= 64 * MiB}
        assert (1, 4096 if not quick else 1024) in decode and len(decode) >= 4
        # the full sweep measures every point at 2, 4 and 8 query heads per KV head (8 KV
        # heads) and at head_dim 128 and 64: CPU SDPA is compute-bound, so the ratio moves its
        # efficiency per KV byte, and the head size its efficiency per FLOP; at 64 the context
        # doubles, so each point holds the same KV bytes per sequence as at 128
        shapes = {(c["batch"], c["context"] * c["head_dim"] // 128, c["q_heads"] // c["kv_heads"],
                   c["head_dim"]) for c in runnable if c["kernel"] == "decode"}
        assert shapes == {(b, s, r, d) for b, s in decode
                          for r in ((4,) if quick else A.CPU_Q_PER_KV) for d in dims}
        assert {c["kv_heads"] for c in runnable} == {8}
        assert [(c["batch"], c["tokens"], c["head_dim"]) for c in runnable
                if c["kernel"] == "prefill"] == [(1, t, d) for t in tokens for d in dims]
        waived = [c for c in cases if c not in runnable]
        assert [(c["kernel"], c["provider"]) for c in waived] == [("decode", "triton")]
        assert probe.waiver(waived[0].params, ctx) == TRITON_ON_CPU


def test_bad_options_are_one_clear_error():
    probe = A.AttentionProbe()
    for opts, message in (({"q_heads": 6, "kv_heads": 4}, "multiple of kv_heads"),
                          ({"kernels": ["decode", "verify"]}, "unknown kernel")):
        with pytest.raises(RidgelineError, match=message):
            probe.cases(ProbeContext(device=cpu_device(), timer=FakeTimer(), options=opts))


# --- reference and check --------------------------------------------------------------

def _explicit(q, k, v, causal):
    """Per query row, per head: the textbook softmax(q.K^T / sqrt(d)) V in float64."""
    batch, hq, t_len, d = q.shape
    hkv, s_len = k.shape[1], k.shape[2]
    out = torch.zeros(batch, hq, t_len, d, dtype=torch.float64)
    for b in range(batch):
        for h in range(hq):
            g = h // (hq // hkv)
            for t in range(t_len):
                last = s_len - t_len + t if causal else s_len - 1
                s = k[b, g, :last + 1].double() @ q[b, h, t].double() / math.sqrt(d)
                out[b, h, t] = s.softmax(0) @ v[b, g, :last + 1].double()
    return out


@pytest.mark.parametrize("causal,t_len", [(False, 1), (True, 9), (True, 4)])
def test_reference_is_explicit_softmax_and_chunking_changes_nothing(causal, t_len):
    g = torch.Generator().manual_seed(t_len)
    s_len = 9
    q = torch.randn(2, 6, t_len, 8, generator=g)
    k, v = torch.randn(2, 2, s_len, 8, generator=g), torch.randn(2, 2, s_len, 8, generator=g)
    ref = A.attention_reference(q, k, v, causal)
    assert torch.allclose(ref.double(), _explicit(q, k, v, causal), rtol=1e-5, atol=1e-6)
    tiny = A.attention_reference(q, k, v, causal, max_bytes=1)   # one sequence, one row a chunk
    assert torch.allclose(tiny, ref, rtol=1e-6, atol=1e-7)


def test_check_tolerance():
    ref = torch.randn(4, 8, 1, 128, dtype=torch.float32)
    assert A.check_output(ref.to(torch.bfloat16), ref, A.RTOL["bf16"])[0]
    bad = ref.clone()
    bad[2, 5, 0, 7] += 0.1 * ref[2, 5].abs().max()
    assert not A.check_output(bad.to(torch.bfloat16), ref, A.RTOL["bf16"])[0]
    small = ref.clone()
    small[1, 3] *= 1e-3          # a row of small values is judged on its own scale
    wrong = small.clone()
    wrong[1, 3] *= 1.2
    assert not A.check_output(wrong, small, A.RTOL["bf16"])[0]
    nan = ref.clone()
    nan[0, 0, 0, 0] = float("nan")
    assert not A.check_output(nan, ref, A.RTOL["fp32"])[0]


# --- end to end on the CPU ------------------------------------------------------------

TINY = {**TINY_HEADS, "batches": [1, 3], "contexts": [37, 100], "prefill_tokens": [16, 33],
        "prefill_batch": 2}


def test_end_to_end_fake_timer_records():
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(bw_GBps=1000, peak_TFLOPS=100,
                                                            latency_us=5), options=dict(TINY))
    records, waived = run_all(get_probe("attention"), ctx)
    assert len(records) == 6 and {r["provider"] for r in records} == {"torch_sdpa"}
    assert [p["provider"] for p, _ in waived] == ["triton"]
    for r in records:
        assert all(r[f] is not None for f in FIELDS)
        kernel, b, s = r["kernel"], r["batch"], r["context"]
        fl, br, bw = AC.work(kernel, b, s, 6, 2, 64, "bf16")
        assert (r["probe"], r["status"], r["validated"], r["dtype"]) == \
            ("attention", "ok", True, "bf16")
        assert (r["q_heads"], r["kv_heads"], r["head_dim"]) == (6, 2, 64)
        assert r["tokens"] == (1 if kernel == "decode" else s)
        assert (r["flops"], r["bytes_read"], r["bytes_written"]) == (fl, br, bw)
        # the FakeTimer got exactly the recorded work: median = roofline time + 5 us, x 1.02
        roofline_s = max((br + bw) / 1e12, fl / 1e14)
        assert r["time_ms_median"] == pytest.approx((roofline_s + 5e-6) * 1e3 * 1.02)
        seconds = r["time_ms_median"] * 1e-3
        assert r["bw_GBps"] == pytest.approx((br + bw) / seconds / 1e9)
        assert r["kv_bytes"] == AC.kv_cache_bytes(b, s, 2, 64, "bf16")
        assert r["kv_bw_GBps"] == pytest.approx(r["kv_bytes"] / seconds / 1e9)
        assert r["causal"] == (kernel == "prefill") and r["gqa"] in ("native", "repeat")
        assert r["copies"] >= 1 and r["rotation_bytes"] == r["copies"] * br
        assert r["rotation_bytes"] >= 2 * r["cache_bytes"] or r["copies"] == 1
        assert r["max_abs_error"] is not None and r["launches_per_sample"] == 1
    assert {(r["kernel"], r["batch"], r["context"]) for r in records} == {
        ("decode", 1, 37), ("decode", 1, 100), ("decode", 3, 37), ("decode", 3, 100),
        ("prefill", 2, 16), ("prefill", 2, 33)}
    assert len(fit_ready(records, "attention")) == 6


def test_end_to_end_host_timer_tiny():
    ctx = ProbeContext(device=cpu_device(), timer=HostTimer(), quick=True,
                       options={"attention": {**TINY_HEADS, "batches": [2], "contexts": [64],
                                              "prefill_tokens": [24], "max_copies": 3,
                                              "warmup_ms": 1, "rep_ms": 2}})
    records, _ = run_all(get_probe("attention"), ctx)
    assert [r["kernel"] for r in records] == ["decode", "prefill"]
    for r in records:
        assert r["timer"] == "host-clock" and r["status"] == "ok" and r["validated"]
        assert r["time_ms_median"] > 0 and r["n_samples"] >= 3 and r["copies"] == 3


def test_successive_calls_walk_every_copy(monkeypatch):
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append(k.data_ptr())
        return real(q, k, v, **kwargs)

    copy = AC.decode_bytes_read(2, 64, 6, 2, 64, "bf16")
    dev = dataclasses.replace(cpu_device(), l2_cache_bytes=3 * copy // 2)   # 2x cache = 3 copies
    ctx = ProbeContext(device=dev, timer=CallingTimer(6),   # one call a sample on the CPU
                       options={**TINY_HEADS, "kernels": ["decode"], "batches": [2],
                                "contexts": [64], "providers": ["torch_sdpa"]})
    probe = A.AttentionProbe()
    [case] = probe.cases(ctx)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    [rec] = probe.run(case, ctx)
    assert rec["copies"] == 3
    timed = seen[1:]                                   # after the validation call
    assert len(timed) == 6 and len(set(timed)) == 3   # each copy twice, in turn
    assert timed[:3] == timed[3:]
    assert len(probe.pools) == 0                       # the case's last provider frees them


def test_wrong_output_is_recorded_invalid(monkeypatch):
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: real(*a, **k) * 1.05)
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(),
                       options={**TINY_HEADS, "kernels": ["decode"], "batches": [2],
                                "contexts": [40]})
    records, _ = run_all(A.AttentionProbe(), ctx)
    assert [(r["status"], r["validated"]) for r in records] == [("invalid", False)]
    assert fit_ready(records, "attention") == []


def test_memory_too_small_waives(monkeypatch):
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(),
                       options={**TINY_HEADS, "kernels": ["prefill"], "prefill_tokens": [64]})
    monkeypatch.setattr(ctx, "free_memory_bytes", lambda: 1000)
    probe = A.AttentionProbe()
    [case] = probe.cases(ctx)
    with pytest.raises(Waived, match="GB free is less"):
        probe.run(case, ctx)


def test_triton_provider_runs_under_the_interpreter(monkeypatch):
    """The Triton provider end to end on CPU tensors (tests/conftest.py sets TRITON_INTERPRET):
    its config is chosen before timing and recorded, its output validated."""
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(), quick=True,
                       options={**TINY_HEADS, "kernels": ["decode"], "batches": [3],
                                "contexts": [100], "providers": ["triton"], "max_copies": 2,
                                "block_n": 16, "num_splits": 3})
    probe = A.AttentionProbe()
    monkeypatch.setattr(probe, "waiver", lambda params, ctx: None)   # the CPU waives Triton
    [case] = probe.cases(ctx)
    [r] = probe.run(case, ctx)
    assert r["validated"] and r["provider"] == "triton" and r["gqa"] == "kernel"
    assert r["num_splits"] == 3 and r["config"] == "BN16 SPLITS3 w4 s2"
    assert r["bytes_read"] == AC.decode_bytes_read(3, 100, 6, 2, 64, "bf16")


class CpuTensorsContext(ProbeContext):
    """A GPU's sweep and rules, its tensors on the CPU (the Triton kernel interpreted)."""

    @property
    def torch_device(self):
        return torch.device("cpu")

    def free_memory_bytes(self) -> int:
        return 8 * 2**30


def test_gpu_rules_end_to_end_on_cpu_tensors():
    ctx = CpuTensorsContext(device=gpu_info(l2=MiB), timer=FakeTimer(),
                            options={**TINY_HEADS, "batches": [3], "contexts": [100],
                                     "prefill_tokens": [40], "prefill_batch": 2,
                                     "dtypes": ["fp16"], "block_n": 16})
    records, waived = run_all(A.AttentionProbe(), ctx)
    assert not waived and [(r["kernel"], r["provider"]) for r in records] == [
        ("decode", "torch_sdpa"), ("decode", "triton"), ("prefill", "torch_sdpa")]
    for r in records:
        assert r["validated"] and r["dtype"] == "fp16"
        assert r["rotation_bytes"] >= 4 * MiB                        # the GPU factor
        assert r["launches_per_sample"] % r["copies"] == 0
        assert r["launches_per_sample"] >= 16 or \
            r["launches_per_sample"] * r["bytes_read"] >= A.MIN_SAMPLE_BYTES
    sdpa, triton, _ = records
    assert sdpa["copies"] == triton["copies"] and sdpa["bytes_read"] == triton["bytes_read"]
    assert triton["num_splits"] == 1 and triton["config"] == "BN16 SPLITS1 w4 s2"  # 1 "SM"


# --- on a GPU -------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_probe_small_sweep_validates_every_provider():
    from ridgeline.device import get_device
    from ridgeline.timing import make_timer

    dev = get_device("cuda:0")
    ctx = ProbeContext(device=dev, timer=make_timer(dev),
                       options={"batches": [1, 64], "contexts": [512, 8192],
                                "prefill_tokens": [512], "dtypes": ["bf16"], "rep_ms": 20})
    records, waived = run_all(A.AttentionProbe(), ctx)
    bad = [r for r in records if not r["validated"]]
    assert len(records) == 9 and not bad and not waived, (bad, waived)
    assert all(r["rotation_bytes"] >= 4 * r["cache_bytes"] or r["copies"] == 1 for r in records)
    assert all(r["launches_per_sample"] % r["copies"] == 0 for r in records)
    small = [r for r in records if r["kernel"] == "decode" and r["batch"] == 1
             and r["context"] == 512]
    assert all(r["timer"] == "cuda-graph" and r["launches_per_sample"] >= 16 for r in small)


@pytest.mark.slow
def test_cli_quick_cpu_profile_of_attention(tmp_path, capsys):
    """`ridgeline profile --device cpu --quick --probes attention` end to end (~5-10 s)."""
    import json

    from ridgeline.cli import main

    out = tmp_path / "out"
    assert main(["profile", "--device", "cpu", "--quick", "--probes", "attention", "--no-report",
                 "-o", str(out)]) == 0, capsys.readouterr().err
    records = json.loads((out / "profile.json").read_text())["records"]
    ok = fit_ready(records, "attention")
    assert {r["kernel"] for r in ok} == {"decode", "prefill"} and len(ok) >= 5
    assert all(all(r.get(f) is not None for f in FIELDS) for r in ok)
