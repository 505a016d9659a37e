"""The MoE expert-GEMM probe: exact work counts, the sweep and its waivers, CPU runs."""

import dataclasses

import pytest
import torch
from probe_helpers import CallingTimer, gpu_info, run_all

from ridgeline.device import cpu_device
from ridgeline.errors import Waived
from ridgeline.probes import DEFAULT_PROBES, REGISTRY, get_probe
from ridgeline.counts import moe as MC
from ridgeline.probes import moe as M
from ridgeline.probes.base import ProbeContext
from ridgeline.probes.gemv import RTOL
from ridgeline.probes.matmul import fast_accum_tolerance
from ridgeline.records import fit_ready
from ridgeline.runner import case_matches
from ridgeline.timing import FakeTimer, HostTimer


# --- work counts ----------------------------------------------------------------------

def test_work_counts_exact():
    E, K, N = 8, 4096, 14336
    # bf16: every expert's weight once + its routed rows in, bf16 rows out
    assert MC.weight_bytes(E, K, N, "bf16") == 939_524_096
    assert MC.bytes_read(E, 1, K, N, "bf16") == E * K * N * 2 + E * 1 * K * 2 == 939_589_632
    assert MC.bytes_read(E, 64, K, N, "bf16") == E * K * N * 2 + E * 64 * K * 2
    assert MC.bytes_written(E, 64, N) == E * 64 * N * 2
    assert MC.flops(E, 64, K, N) == 2 * E * 64 * K * N
    # fp8 W8A8: 1-byte weights and rows + fp32 per-token and per-channel scales, bf16 out
    assert MC.bytes_read(E, 16, K, N, "fp8_e4m3") == E * K * N + E * 16 * K + E * 16 * 4 + E * N * 4
    assert MC.bytes_read(E, 16, K, N, "fp8_e4m3", "tensorwise") == E * K * N + E * 16 * K + E * 8
    assert MC.scale_bytes(E, 16, N, "bf16") == 0
    assert MC.bytes_written(3, 5, 7) == 3 * 5 * 7 * 2


def test_counts_match_the_planners_expert_pricing():
    """`_moe_ops` prices an expert GEMM as loaded*h*n*wb + pairs*(h + n)*b bytes and
    2*pairs*h*n FLOPs; with every expert loaded and t tokens each (pairs = E*t) the
    probe's bf16 counts are exactly that, so measured/roofline is the planner's factor."""
    E, t, h, n, wb, b = 8, 37, 4096, 2 * 14336, 2, 2
    pairs = E * t
    assert MC.bytes_read(E, t, h, n, "bf16") + MC.bytes_written(E, t, n) == \
        E * h * n * wb + pairs * (h + n) * b
    assert MC.flops(E, t, h, n) == 2 * pairs * h * n


# --- the sweep ------------------------------------------------------------------------

def test_registered_after_gemv():
    assert REGISTRY["moe"] == "ridgeline.probes.moe:MoeProbe"
    assert DEFAULT_PROBES.index("moe") > DEFAULT_PROBES.index("gemv")


def test_gpu_sweep_covers_mixtral_shapes_tokens_dtypes_providers():
    ctx = ProbeContext(device=gpu_info(), timer=FakeTimer())
    probe = M.MoeProbe()
    cases = probe.cases(ctx)
    got = {(c["dtype"], c["provider"], c["k"], c["n"], c["tokens_per_expert"]) for c in cases
           if probe.waiver(c.params, ctx) is None}
    want = {(d, p, k, n, t) for d in ("bf16", "fp8_e4m3") for p in M.PROVIDERS
            for k, n in ((4096, 14336), (14336, 4096)) for t in (1, 4, 16, 64, 256, 1024)}
    assert got == want and all(c["experts"] == 8 for c in cases)
    quick = probe.cases(dataclasses.replace(ctx, quick=True))
    assert len(quick) <= len(cases) / 4


def test_mi300_sweeps_fnuz_and_old_gpus_waive_fp8_once_per_provider():
    ctx = ProbeContext(device=gpu_info(kind="rocm", gfx="gfx942"), timer=FakeTimer())
    assert {c["dtype"] for c in M.MoeProbe().cases(ctx)} == {"bf16", "fp8_e4m3fnuz"}
    ctx = ProbeContext(device=gpu_info(cc="8.0", fp8=False), timer=FakeTimer())
    probe = M.MoeProbe()
    fp8 = [c for c in probe.cases(ctx) if c["dtype"] == "fp8_e4m3"]
    assert sorted(c["provider"] for c in fp8) == sorted(M.PROVIDERS)
    for c in fp8:
        with pytest.raises(Waived, match="FP8 needs sm_89\\+"):
            probe.run(c, ctx)


def test_cpu_sweeps_are_small_bf16_and_fp8_is_one_waiver_per_provider():
    for quick in (True, False):
        ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(), quick=quick)
        probe = M.MoeProbe()
        cases = probe.cases(ctx)
        runnable = [c for c in cases if probe.waiver(c.params, ctx) is None]
        assert {c["dtype"] for c in runnable} == {"bf16"}
        assert len(runnable) <= (4 if quick else 12)
        assert max(MC.weight_bytes(c["experts"], c["k"], c["n"], "bf16") for c in runnable) \
            <= 8 * 2**20
        waived = [c for c in cases if c not in runnable]
        assert sorted(c["provider"] for c in waived) == sorted(M.PROVIDERS)
        assert all("FP8" in probe.waiver(c.params, ctx) for c in waived)


def test_missing_grouped_op_is_waived_with_the_torch_version(monkeypatch):
    monkeypatch.delattr(torch, "_grouped_mm", raising=False)
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer())
    reason = M.MoeProbe().waiver({"provider": "torch_grouped_mm", "dtype": "bf16",
                                  "experts": 8, "tokens_per_expert": 1, "k": 64, "n": 64}, ctx)
    assert reason == f"this torch ({torch.__version__}) has no torch._grouped_mm"


# --- end to end on the CPU ------------------------------------------------------------

TINY = {"shapes": [[96, 80]], "tokens": [1, 3], "experts": 3, "dtypes": ["bf16"],
        "max_copies": 3}


def test_end_to_end_fake_timer_records_carry_the_contract():
    if not hasattr(torch, "_grouped_mm"):
        pytest.skip("this torch has no torch._grouped_mm")
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(bw_GBps=1000, latency_us=5),
                       options=dict(TINY))
    probe = get_probe("moe")
    records, waived = run_all(probe, ctx)
    assert not waived and len(records) == 4
    assert {r["provider"] for r in records} == set(M.PROVIDERS)
    for r in records:
        E, t, k, n = r["experts"], r["tokens_per_expert"], r["k"], r["n"]
        br = E * k * n * 2 + E * t * k * 2
        bw = E * t * n * 2
        assert (r["probe"], r["kernel"], r["dtype"], r["status"], r["validated"]) == \
            ("moe", "grouped_gemm", "bf16", "ok", True)
        assert (E, k, n, r["m"]) == (3, 96, 80, t)
        assert (r["bytes_read"], r["bytes_written"], r["flops"]) == (br, bw, 2 * E * t * k * n)
        assert r["time_ms_median"] == pytest.approx(((br + bw) / 1e12 + 5e-6) * 1e3 * 1.02)
        assert r["TFLOPS"] == pytest.approx(r["flops"] / (r["time_ms_median"] * 1e-3) / 1e12)
        assert r["copies"] == 3 and r["launches_per_sample"] == 1 and r["rtol"] == RTOL["bf16"]
        assert r["rotation_bytes"] == 3 * MC.weight_bytes(E, k, n, "bf16")
        assert r["scale_kind"] is None and r["fast_accum"] is None
        assert [c for c in probe.cases(ctx) if case_matches(c, "moe", r)]   # resumable
    assert len(fit_ready(records, "moe")) == 4


def test_loop_and_grouped_compute_the_same_product():
    if not hasattr(torch, "_grouped_mm"):
        pytest.skip("this torch has no torch._grouped_mm")
    gen = torch.Generator().manual_seed(0)
    w, _ = M._make_experts(3, 40, 32, "bf16", gen, "cpu")
    xs = [torch.randn(3, 5, 32, generator=gen).to(torch.bfloat16)]
    offs = torch.tensor([5, 10, 15], dtype=torch.int32)
    pool = {"weights": [w], "scales": [None]}
    loop = M._bf16_calls("torch_loop", xs, pool, offs)[0](0)
    grouped = M._bf16_calls("torch_grouped_mm", xs, pool, offs)[0](0)
    ref = torch.einsum("etk,enk->etn", xs[0].double(), w.double())
    assert loop.shape == (3, 5, 40) and grouped.shape == (15, 40)
    for y in (loop, grouped.view(3, 5, 40)):
        assert torch.allclose(y.double(), ref, rtol=2**-7, atol=2**-7 * float(ref.abs().max()))


def test_host_timer_tiny_quick():
    ctx = ProbeContext(device=cpu_device(), timer=HostTimer(), quick=True,
                       options={"moe": {**TINY, "tokens": [2], "providers": ["torch_loop"],
                                        "warmup_ms": 1, "rep_ms": 2}})
    records, _ = run_all(get_probe("moe"), ctx)
    assert len(records) == 1
    r = records[0]
    assert r["timer"] == "host-clock" and r["status"] == "ok" and r["n_samples"] >= 3


def test_consecutive_calls_cycle_through_every_copy(monkeypatch):
    seen = []
    real = M._loop_mm

    def spy(x, w, mm=None):
        seen.append(w.data_ptr())
        return real(x, w, mm)
    monkeypatch.setattr(M, "_loop_mm", spy)
    ctx = ProbeContext(device=cpu_device(), timer=CallingTimer(4),
                       options={**TINY, "tokens": [2], "providers": ["torch_loop"]})
    probe = M.MoeProbe()
    [case] = probe.cases(ctx)
    ptrs = [w.data_ptr() for w in probe.pool(ctx, case.params)["weights"]]
    probe.run(case, ctx)
    assert len(set(ptrs)) == 3
    assert seen == [ptrs[0]] + [ptrs[i % 3] for i in range(4)]   # validation, then the ring
    assert len(probe.pools) == 0


def test_wrong_output_is_recorded_invalid(monkeypatch):
    real = M._loop_mm
    monkeypatch.setattr(M, "_loop_mm", lambda x, w, mm=None: real(x, w, mm) * 1.05)
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(),
                       options={**TINY, "tokens": [2], "providers": ["torch_loop"]})
    records, _ = run_all(M.MoeProbe(), ctx)
    assert [(r["status"], r["validated"]) for r in records] == [("invalid", False)]
    assert fit_ready(records, "moe") == []


def test_fp8_loop_runs_w8a8_and_the_grouped_refusal_is_waived_once(monkeypatch,
                                                                    scaled_mm_calls):
    """torch._scaled_mm also runs on the CPU: the fp8 loop path, its reference and bytes;
    torch._scaled_grouped_mm has no CPU kernel: a waiver with the op's own words, then
    the same waiver for the rest of the sweep without another try."""
    monkeypatch.setattr(M, "unsupported_reason", lambda dtype, device: None)
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(),
                       options={**TINY, "dtypes": ["fp8_e4m3"]})
    probe = M.MoeProbe()
    records, waived = run_all(probe, ctx)
    if not records:
        pytest.skip(f"this torch build: {waived}")
    assert len(records) == 2 and {r["provider"] for r in records} == {"torch_loop"}
    assert scaled_mm_calls and all(c.get("use_fast_accum") is True for c in scaled_mm_calls)
    for r in records:
        E, t, k, n = 3, r["tokens_per_expert"], 96, 80
        assert r["validated"] and r["fast_accum"] is True and r["act_dtype"] == "fp8_e4m3"
        assert r["rtol"] == RTOL["bf16"] + fast_accum_tolerance(k)
        assert r["bytes_read"] == MC.bytes_read(E, t, k, n, "fp8_e4m3", r["scale_kind"])
    grouped = [reason for p, reason in waived if p["provider"] == "torch_grouped_mm"]
    if hasattr(torch, "_scaled_grouped_mm"):
        assert len(grouped) == 2 and grouped[0] == grouped[1]
        assert grouped[0].startswith("torch._scaled_grouped_mm refused this case:")


class CaptureFails(FakeTimer):
    """A timer whose graph capture fails, as it does for an op that syncs with the host."""

    def __init__(self):
        super().__init__()
        self.asked = []

    def time(self, fn, *, launches_per_sample=1, **kwargs):
        self.asked.append(launches_per_sample)
        if launches_per_sample > 1:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        return super().time(fn, launches_per_sample=launches_per_sample, **kwargs)


def test_graph_capture_failure_is_timed_call_by_call_and_said(monkeypatch):
    monkeypatch.setattr(M, "launches_per_sample", lambda copies, kind: 16)   # as on a GPU
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    timer = CaptureFails()
    ctx = ProbeContext(device=cpu_device(), timer=timer,
                       options={**TINY, "tokens": [2], "providers": ["torch_loop"]})
    records, _ = run_all(M.MoeProbe(), ctx)
    [r] = records
    assert timer.asked == [16, 1] and r["launches_per_sample"] == 1 and r["validated"]
    assert r["timing_note"].startswith("not graph-capturable (CUDA error: operation not")


def test_other_timer_errors_are_not_hidden(monkeypatch):
    class Broken(FakeTimer):
        def time(self, fn, **kwargs):
            raise RuntimeError("illegal memory access")
    ctx = ProbeContext(device=cpu_device(), timer=Broken(),
                       options={**TINY, "tokens": [2], "providers": ["torch_loop"]})
    probe = M.MoeProbe()
    with pytest.raises(RuntimeError, match="illegal memory access"):
        probe.run(probe.cases(ctx)[0], ctx)
    assert len(probe.pools) == 0


def test_a_case_waived_when_planned_leaves_the_pool_to_its_runnable_cases(monkeypatch):
    """Without torch._grouped_mm its (one) waived case must not count as a run of the shape:
    the torch_loop cases build the experts once and free them after the last of them."""
    monkeypatch.delattr(torch, "_grouped_mm", raising=False)
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(), options={**TINY, "tokens": [1, 2]})
    probe = M.MoeProbe()
    builds = []
    real = probe.build_pool

    def counted(ctx, params):
        builds.append(params["tokens_per_expert"])
        return real(ctx, params)
    monkeypatch.setattr(probe, "build_pool", counted)
    cases = probe.cases(ctx)
    assert [c["provider"] for c in cases] == ["torch_loop", "torch_grouped_mm", "torch_loop"]
    held = []
    for case in cases:
        try:
            probe.run(case, ctx)
        except Waived:
            assert case["provider"] == "torch_grouped_mm"
        held.append(len(probe.pools))
    assert builds == [1] and held == [1, 1, 0]


def test_memory_too_small_waives(monkeypatch):
    ctx = ProbeContext(device=cpu_device(), timer=FakeTimer(), options=dict(TINY))
    monkeypatch.setattr(ctx, "free_memory_bytes", lambda: 1000)
    probe = M.MoeProbe()
    with pytest.raises(Waived, match="GB free"):
        probe.run(probe.cases(ctx)[0], ctx)


# --- on a GPU -------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_probe_small_sweep_validates_every_provider():
    from ridgeline.device import get_device
    from ridgeline.probes.gemv import fp8_name
    from ridgeline.timing import make_timer

    dev = get_device("cuda:0")
    ctx = ProbeContext(device=dev, timer=make_timer(dev), quick=True,
                       options={"shapes": [[4096, 14336]], "tokens": [1, 64],
                                "dtypes": ["bf16", fp8_name(dev)], "rep_ms": 20})
    records, waived = run_all(M.MoeProbe(), ctx)
    bad = [r for r in records if not r["validated"]]
    assert records and not bad, bad
    assert any(r["provider"] == "torch_loop" for r in records)
    assert all(r["timer"] == "cuda-graph" and r["launches_per_sample"] >= 16 for r in records)
    assert all(r["rotation_bytes"] >= 4 * r["cache_bytes"] for r in records)
    print("waived:", waived)
