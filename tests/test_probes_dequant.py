"""The weight-only int8/int4 GEMV probe: exact work counts, the formats, the sweep, CPU runs."""

import dataclasses

import pytest
import torch
from probe_helpers import CallingTimer, gpu_info, run_all

from ridgeline.device import cpu_device
from ridgeline.errors import Waived
from ridgeline.probes import DEFAULT_PROBES, REGISTRY, get_probe
from ridgeline.probes import dequant as D
from ridgeline.probes.base import ProbeContext
from ridgeline.probes.gemv import TRITON_ON_CPU
from ridgeline.records import fit_ready
from ridgeline.runner import case_matches
from ridgeline.sizing.precision import INT4_GROUP_SIZE, Precision
from ridgeline.timing import FakeTimer, HostTimer


# --- work counts ----------------------------------------------------------------------

def test_work_counts_exact():
    K, N = 4096, 14336
    # int4: half a byte a weight + one fp16 scale per 128 weights along K + bf16 x
    assert D.bytes_read(1, N, K, "int4") == N * K // 2 + N * (K // 128) * 2 + K * 2 == 30_285_824
    assert D.bytes_read(16, N, K, "int4") == N * K // 2 + N * 32 * 2 + 16 * K * 2
    # int8 per channel: one fp16 scale per output channel (G = K)
    assert D.bytes_read(1, N, K, "int8") == N * K + N * 2 + K * 2 == 58_757_120
    assert D.bytes_read(64, 4096, 14336, "int8") == 4096 * 14336 + 4096 * 2 + 64 * 14336 * 2
    assert D.bytes_written(7, N) == 7 * N * 2
    assert D.flops(7, N, K) == 2 * 7 * N * K
    assert D.weight_bytes(N, K, "int4") == N * K // 2 and D.weight_bytes(N, K, "int8") == N * K
    assert D.scale_bytes(80, 300, 128) == 80 * 3 * 2        # a ragged last group has a scale
    assert D.group_size_for("int4", K) == INT4_GROUP_SIZE == 128
    assert D.group_size_for("int8", K) == K


def test_int4_weight_bytes_are_the_planners():
    """The probe's int4 weight + scale bytes are what the planner prices per weight."""
    n, k = 4096, 14336
    assert D.weight_bytes(n, k, "int4") + D.scale_bytes(n, k, INT4_GROUP_SIZE) == \
        Precision(weights="int4").weight_bytes * n * k


# --- the formats -----------------------------------------------------------------------

def test_pack_unpack_and_dequantize():
    g = torch.Generator().manual_seed(0)
    vals = torch.randint(-8, 8, (5, 12), generator=g)
    p = D.pack_int4(vals)
    assert p.dtype == torch.uint8 and p.shape == (5, 6)
    assert int(p[0, 0]) == (int(vals[0, 0]) + 8) | (int(vals[0, 1]) + 8) << 4   # low nibble first
    assert torch.equal(D.unpack_int4(p).long() - 8, vals)
    s = torch.rand(5, 3, generator=g).to(torch.float16)          # groups of 4, K = 12
    w = D.dequantize(p, s, 4, torch.float64)
    assert torch.equal(w, vals.double() * s.double().repeat_interleave(4, dim=1))
    # ragged last group: K = 12, G = 8 -> 2 groups, the second of 4
    s2 = s[:, :2].contiguous()
    w2 = D.dequantize(p, s2, 8, torch.float64)
    assert torch.equal(w2[:, 8:], vals[:, 8:].double() * s2[:, 1:].double())
    q8 = torch.randint(-127, 128, (5, 12), generator=g, dtype=torch.int8)
    s8 = torch.rand(5, generator=g).to(torch.float16)
    assert torch.equal(D.dequantize(q8, s8, 12, torch.float64), q8.double() * s8.double()[:, None])
    # the engine's bf16 path: the same weight within bf16 rounding (scale and product)
    wb = D.dequantize(p, s, 4, torch.bfloat16)
    assert wb.dtype == torch.bfloat16
    assert torch.allclose(wb.double(), w, rtol=2**-7, atol=0)


def test_make_weight_shapes_and_dtypes():
    gen = torch.Generator().manual_seed(1)
    q, s = D.make_weight(80, 256, "int4", gen, "cpu")
    assert (q.dtype, q.shape, s.dtype, s.shape) == (torch.uint8, (80, 128), torch.float16, (80, 2))
    q, s = D.make_weight(80, 256, "int8", gen, "cpu")
    assert (q.dtype, q.shape, s.dtype, s.shape) == (torch.int8, (80, 256), torch.float16, (80,))
    assert int(q.min()) >= -127 and bool((s > 0).all())


# --- the sweep ------------------------------------------------------------------------

def test_registered_after_gemv():
    assert REGISTRY["dequant"] == "ridgeline.probes.dequant:DequantProbe"
    assert DEFAULT_PROBES.index("dequant") > DEFAULT_PROBES.index("gemv")


def test_gpu_sweep_covers_shapes_batches_dtypes_providers():
    ctx = ProbeContext(device=gpu_info(), timer=FakeTimer())
    probe = D.DequantProbe()
    cases = probe.cases(ctx)
    got = {(c["dtype"], c["provider"], c["k"], c["n"], c["batch"]) for c in cases}
    want = {(d, p, k, n, b) for d in ("int8", "int4") for p in ("torch_dequant", "triton")
            for k, n in D.LLM_SHAPES for b in (1, 2, 4, 8, 16, 32, 64)}
    assert got == want and len(cases) == len(want)
    assert all(probe.waiver(c.params, ctx) is None for c in cases)
    assert all(c["group_size"] == (128 if c["dtype"] == "int4" else c["k"]) for c in cases)
    quick = probe.cases(dataclasses.replace(ctx, quick=True))
    assert len(quick) < len(cases) / 4


def test_cpu_sweeps_are_small_and_waive_triton_once_per_dtype():
    for quick in (True, False):
        ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(), quick=quick)
        probe = D.DequantProbe()
        cases = probe.cases(ctx)
        runnable = [c for c in cases if probe.waiver(c.params, ctx) is None]
        assert {c["provider"] for c in runnable} == {"torch_dequant"}
        assert len(runnable) <= (4 if quick else 12)
        assert max(c["n"] * c["k"] for c in runnable) <= 2048 * 2048
        waived = [c for c in cases if c not in runnable]
        assert sorted(c["dtype"] for c in waived) == ["int4", "int8"]
        assert all(probe.waiver(c.params, ctx) == TRITON_ON_CPU for c in waived)


def test_int4_needs_k_a_multiple_of_the_group():
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer())
    reason = D.DequantProbe().waiver({"provider": "torch_dequant", "dtype": "int4", "k": 1000,
                                      "n": 64, "batch": 1}, ctx)
    assert "multiple of 128" in reason


# --- end to end on the CPU ------------------------------------------------------------

TINY = {"shapes": [[256, 80]], "batches": [1, 3], "max_copies": 3}


def test_end_to_end_fake_timer_records_carry_the_contract():
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(bw_GBps=1000, latency_us=5),
                       options=dict(TINY))
    probe = get_probe("dequant")
    records, waived = run_all(probe, ctx)
    assert len(records) == 4 and {p["provider"] for p, _ in waived} == {"triton"}
    for r in records:
        b, n, k, d = r["batch"], r["n"], r["k"], r["dtype"]
        g = 128 if d == "int4" else 256
        br = n * k * (0.5 if d == "int4" else 1) + n * (k // g) * 2 + b * k * 2
        assert (r["probe"], r["kernel"], r["provider"], r["status"], r["validated"]) == \
            ("dequant", "gemv", "torch_dequant", "ok", True)
        assert (r["compute_dtype"], r["act_dtype"], r["group_size"], r["m"]) == \
            ("bf16", "bf16", g, b)
        assert r["bytes_read"] == br == D.bytes_read(b, n, k, d)
        assert r["bytes_written"] == b * n * 2 and r["flops"] == 2 * b * n * k
        # the FakeTimer got exactly the recorded work
        assert r["time_ms_median"] == pytest.approx(((br + b * n * 2) / 1e12 + 5e-6) * 1e3 * 1.02)
        assert r["copies"] == 3 and r["launches_per_sample"] == 1
        assert r["rotation_bytes"] == 3 * (D.weight_bytes(n, k, d) + D.scale_bytes(n, k, g))
        assert r["max_abs_error"] is not None and r["config"] is None
        assert [c for c in probe.cases(ctx) if case_matches(c, "dequant", r)]   # resumable
    assert len(fit_ready(records, "dequant")) == 4


def test_host_timer_tiny_quick():
    ctx = ProbeContext(device=cpu_device(), timer=HostTimer(), quick=True,
                       options={"dequant": {"shapes": [[256, 48]], "batches": [2],
                                            "providers": ["torch_dequant"], "max_copies": 4,
                                            "warmup_ms": 1, "rep_ms": 2}})
    records, _ = run_all(get_probe("dequant"), ctx)
    assert [r["dtype"] for r in records] == ["int8", "int4"]
    for r in records:
        assert r["timer"] == "host-clock" and r["status"] == "ok" and r["validated"]
        assert r["time_ms_median"] > 0 and r["n_samples"] >= 3


def test_consecutive_calls_cycle_through_every_copy(monkeypatch):
    seen = []
    real = D.dequantize

    def spy(q, scale, group, dtype):
        if dtype == torch.bfloat16:   # the provider's calls, not the fp64 reference
            seen.append(q.data_ptr())
        return real(q, scale, group, dtype)
    monkeypatch.setattr(D, "dequantize", spy)
    ctx = ProbeContext(device=cpu_device(), timer=CallingTimer(5),
                       options={"shapes": [[256, 48]], "batches": [2], "dtypes": ["int4"],
                                "providers": ["torch_dequant"], "max_copies": 3})
    probe = D.DequantProbe()
    [case] = probe.cases(ctx)
    ptrs = [q.data_ptr() for q in probe.pool(ctx, case.params)["weights"]]
    [rec] = probe.run(case, ctx)
    # validation reads copy 0; then every timed call takes the next copy, round the ring
    assert len(set(ptrs)) == 3 and rec["copies"] == 3
    assert seen == [ptrs[0]] + [ptrs[i % 3] for i in range(5)]
    assert len(probe.pools) == 0   # freed after its shape's last case


def test_wrong_output_is_recorded_invalid(monkeypatch):
    real = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda a, b: real(a, b) * 1.05)
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(),
                       options={"shapes": [[256, 48]], "batches": [2], "dtypes": ["int8"],
                                "providers": ["torch_dequant"], "max_copies": 2})
    records, _ = run_all(D.DequantProbe(), ctx)
    assert [(r["status"], r["validated"]) for r in records] == [("invalid", False)]
    assert fit_ready(records, "dequant") == []


def test_triton_provider_through_the_interpreter(monkeypatch):
    """The fused kernel end to end (Triton's interpreter on the CPU): config chosen before
    timing under the quick budget, output validated, recorded with its config."""
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(), quick=True,
                       options={"shapes": [[256, 80]], "batches": [3], "providers": ["triton"],
                                "max_copies": 2})
    probe = D.DequantProbe()
    monkeypatch.setattr(probe, "waiver", lambda params, ctx: None)   # the CPU waives Triton
    records, _ = run_all(probe, ctx)
    assert [r["dtype"] for r in records] == ["int8", "int4"]
    for r in records:
        assert r["validated"] and r["tune_budget"] == "quick" and r["config"].startswith("BN")


def test_memory_too_small_waives(monkeypatch):
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(),
                       options={"shapes": [[256, 48]], "batches": [1], "dtypes": ["int8"]})
    monkeypatch.setattr(ctx, "free_memory_bytes", lambda: 1000)
    probe = D.DequantProbe()
    [case] = probe.cases(ctx)[:1]
    with pytest.raises(Waived, match="GB free"):
        probe.run(case, ctx)


# --- on a GPU -------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_probe_small_sweep_validates_every_provider():
    from ridgeline.device import get_device
    from ridgeline.timing import make_timer

    dev = get_device("cuda:0")
    ctx = ProbeContext(device=dev, timer=make_timer(dev), quick=True,
                       options={"shapes": [[4096, 4096]], "batches": [1, 16, 64], "rep_ms": 20})
    records, waived = run_all(D.DequantProbe(), ctx)
    bad = [r for r in records if not r["validated"]]
    assert len(records) == 12 and not bad and not waived, (bad, waived)
    assert all(r["timer"] == "cuda-graph" and r["launches_per_sample"] >= 16 for r in records)
    assert all(r["rotation_bytes"] >= 4 * r["cache_bytes"] for r in records)
