"""hbm and matmul probes on the CPU device: accounting, validation, waivers, records."""

import pytest

from ridgeline.device import cpu_device
from ridgeline.errors import Waived
from ridgeline.probes import DEFAULT_PROBES, REGISTRY, get_probe, parse_probe_list
from ridgeline.probes.base import Case, ProbeContext
from ridgeline.probes.hbm import bytes_moved, sweep_sizes
from ridgeline.probes.matmul import matmul_bytes, matmul_flops, unsupported_reason
from ridgeline.timing import FakeTimer, HostTimer

MiB = 2**20


@pytest.fixture(scope="module")
def cpu():
    return cpu_device()


def test_hbm_byte_counts_are_babelstream_counts():
    n = 1000
    assert bytes_moved("copy", n) == (4000, 4000)
    assert bytes_moved("read", n) == (4000, 0)
    assert bytes_moved("write", n) == (0, 4000)
    assert bytes_moved("triad", n) == (8000, 4000)
    assert bytes_moved("read", 8192, provider="triton") == (32768, 8)  # + two fp32 partials


def test_hbm_sweep_spans_cache_to_many_times_cache_within_free_memory():
    sizes = sweep_sizes(50 * MiB, 80 * 2**30, quick=False, is_gpu=True)
    assert min(sizes) < 50 * MiB and max(sizes) >= 32 * 50 * MiB
    assert sizes == sorted(sizes) and all(s % (3 * 4096) == 0 for s in sizes)
    capped = sweep_sizes(50 * MiB, 1 * 2**30, quick=False, is_gpu=True)
    assert max(capped) <= 0.4 * 2**30


def test_hbm_cases_run_validated_on_cpu_with_real_timer(cpu):
    ctx = ProbeContext(cpu, HostTimer(1 * MiB), quick=True,
                       options={"sizes": [3 * 4096 * 7], "providers": ["torch", "numpy"]})
    probe = get_probe("hbm")
    cases = probe.cases(ctx)
    assert {c["provider"] for c in cases} == {"torch", "numpy"}
    assert not any(c["provider"] == "numpy" and c["kernel"] == "triad" for c in cases)
    for case in cases:
        (rec,) = probe.run(case, ctx)
        assert rec["status"] == "ok" and rec["validated"], rec
        assert rec["bw_GBps"] > 0
        assert rec["bytes_read"] + rec["bytes_written"] == pytest.approx(
            rec["bw_GBps"] * 1e9 * rec["time_ms_median"] * 1e-3)


def test_hbm_triton_provider_is_waived_on_cpu(cpu):
    ctx = ProbeContext(cpu, FakeTimer(), quick=True)
    with pytest.raises(Waived, match="need a GPU"):
        get_probe("hbm").run(Case({"kernel": "copy", "provider": "triton", "size_bytes": 3 * 4096}), ctx)


def test_matmul_work_counts():
    assert matmul_flops(3, 5, 7) == 210
    assert matmul_bytes(3, 5, 7, "bf16") == ((21 + 35) * 2, 15 * 2)
    assert matmul_bytes(16, 32, 64, "fp8_e4m3") == ((16 * 64 + 64 * 32), 16 * 32 * 2)  # bf16 out


def test_matmul_dtype_waivers_give_reasons(cpu):
    assert "FP8" in unsupported_reason("fp8_e4m3", cpu)
    assert "TF32" in unsupported_reason("tf32", cpu)
    assert unsupported_reason("fp32", cpu) is None


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_matmul_validates_against_fp32_reference_on_cpu(cpu, dtype):
    ctx = ProbeContext(cpu, FakeTimer(), quick=True)
    (rec,) = get_probe("matmul").run(Case({"dtype": dtype, "shape_kind": "llm", "m": 17,
                                           "n": 33, "k": 129}), ctx)
    assert rec["validated"] and rec["relative_error"] < 2e-2
    assert rec["flops"] == 2 * 17 * 33 * 129
    assert rec["TFLOPS"] == pytest.approx(rec["flops"] / (rec["time_ms_median"] * 1e-3) / 1e12)


@pytest.fixture
def fp8_on_cpu(monkeypatch, scaled_mm_calls):
    """torch._scaled_mm also runs on the CPU: let the probe take fp8 there (calls spied)."""
    from ridgeline.probes import matmul as M

    monkeypatch.setattr(M, "unsupported_reason", lambda dtype, device: None)
    return scaled_mm_calls


@pytest.mark.parametrize("m", [1, 3, 16])
def test_matmul_fp8_runs_any_m_with_fast_accum(cpu, fp8_on_cpu, m):
    """torch needs only K and N multiples of 16: the decode point M=1 is measured, and every
    fp8 GEMM runs with use_fast_accum=True (as serving engines run forward passes)."""
    calls = fp8_on_cpu
    ctx = ProbeContext(cpu, FakeTimer(), quick=True)
    (rec,) = get_probe("matmul").run(Case({"dtype": "fp8_e4m3", "shape_kind": "llm", "m": m,
                                           "n": 48, "k": 64}), ctx)
    assert calls and all(c.get("use_fast_accum") is True for c in calls)
    assert rec["fast_accum"] is True and rec["provider"] == "torch_scaled_mm"
    assert rec["validated"] and rec["relative_error"] <= rec["relative_tolerance"]
    assert rec["flops"] == 2 * m * 48 * 64


@pytest.mark.parametrize("n,k", [(40, 64), (48, 72)])
def test_matmul_fp8_waived_when_k_or_n_not_multiple_of_16(cpu, fp8_on_cpu, n, k):
    with pytest.raises(Waived, match="K and N to be multiples of 16"):
        get_probe("matmul").run(Case({"dtype": "fp8_e4m3", "shape_kind": "llm", "m": 1, "n": n,
                                      "k": k}), ProbeContext(cpu, FakeTimer(), quick=True))


def test_matmul_tolerance_widens_with_k_for_fast_accumulated_fp8_only():
    from ridgeline.probes.matmul import RELATIVE_TOLERANCE, fast_accum_tolerance, tolerance

    assert fast_accum_tolerance(1024) == fast_accum_tolerance(4096) == pytest.approx(2e-2)
    assert fast_accum_tolerance(16384) == pytest.approx(8e-2)
    fp8_tol = RELATIVE_TOLERANCE["fp8_e4m3"]
    assert tolerance("fp8_e4m3", 16384, True) == pytest.approx(fp8_tol + 8e-2)
    assert tolerance("fp8_e4m3", 16384, False) == RELATIVE_TOLERANCE["fp8_e4m3"]
    assert tolerance("bf16", 16384, True) == RELATIVE_TOLERANCE["bf16"]


def test_matmul_records_fast_accum_only_for_fp8(cpu):
    ctx = ProbeContext(cpu, FakeTimer(), quick=True)
    (rec,) = get_probe("matmul").run(Case({"dtype": "bf16", "shape_kind": "llm", "m": 3,
                                           "n": 16, "k": 32}), ctx)
    assert rec["fast_accum"] is None


def test_registry_lists_default_probes_and_rejects_unknown():
    assert set(DEFAULT_PROBES) <= set(REGISTRY)
    assert parse_probe_list("hbm, matmul") == ["hbm", "matmul"]
    from ridgeline.errors import RidgelineError

    with pytest.raises(RidgelineError, match="unknown probe"):
        parse_probe_list("hbm,nope")
