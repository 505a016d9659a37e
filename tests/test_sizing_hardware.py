"""Hardware descriptions: GPU names, datasheet fabrics, dtypes a GPU can store."""

import pytest

from ridgeline import datasheets
from ridgeline.errors import RidgelineError
from ridgeline.roofline.interconnect import collective_time
from ridgeline.sizing.hardware import hardware_from_gpu_name
from ridgeline.sizing.models import load_model
from ridgeline.sizing.plan import PlanInputs, make_plan
from ridgeline.sizing.precision import Precision, resolve_precision
from ridgeline.sizing.workload import Workload


@pytest.mark.parametrize("name, suggestion", [("gb200", "b200"), ("gh200", "h200")])
def test_unknown_gpu_names_are_errors_with_suggestions(name, suggestion):
    with pytest.raises(RidgelineError, match=f"unknown GPU '{name}'") as exc:
        hardware_from_gpu_name(name)
    assert "did you mean" in str(exc.value) and suggestion in str(exc.value)


def test_device_names_match_datasheets_only_on_a_whole_name():
    assert datasheets.lookup("NVIDIA GB200") is None
    assert datasheets.lookup("NVIDIA GH200 480GB") is None
    assert datasheets.lookup("NVIDIA H100 80GB HBM3")["sku"] == "h100-sxm5-80gb"
    assert datasheets.lookup("NVIDIA H200")["sku"] == "h200-sxm-141gb"
    assert datasheets.lookup("NVIDIA B200")["sku"] == "b200"


def test_h100_nvl_bridges_join_pairs_only():
    hw = hardware_from_gpu_name("h100-nvl")
    size = 64e6
    pair = collective_time("allreduce", size, 2, hw.profile)
    quad = collective_time("allreduce", size, 4, hw.profile)
    assert "nvlink" in pair.detail and "pcie" in quad.detail
    # a ring of 4 crosses PCIe (Gen5 x16: 64 GB/s per direction) between the pairs
    assert quad.time_s == pytest.approx(10e-6 + size / (64e9 / 1.5), rel=1e-6)
    assert quad.time_s > 5 * pair.time_s
    assert any("pairs" in n for n in hw.notes)
    # an SXM part keeps its NVSwitch fabric at every size
    sxm = hardware_from_gpu_name("h100-sxm")
    assert "nvlink" in collective_time("allreduce", size, 8, sxm.profile).detail


def test_fp8_kv_cache_is_allowed_where_fp8_matmuls_are_not():
    a100 = hardware_from_gpu_name("a100-sxm4")
    p, notes = resolve_precision("bf16", "auto", "fp8", a100.device_dtypes)
    assert p.kv_cache == "fp8" and p.gemm_dtype == "bf16"
    assert any("fp8 KV" in n for n in notes)
    work = Workload(input_p95=1000, output_p95=200, concurrency=8)
    spec = load_model("llama-3.1-8b")
    plan = make_plan(PlanInputs(spec=spec, precision=p, workload=work), a100)
    assert plan["memory"]["kv_bytes_per_token"] == 32 * 8 * 128 * 2 * 1
    with pytest.raises(RidgelineError, match="activation dtype fp8"):   # W8A8 still needs fp8 MMA
        resolve_precision("fp8", "fp8", "auto", a100.device_dtypes)
    with pytest.raises(RidgelineError, match="activation dtype fp8"):
        make_plan(PlanInputs(spec=spec, precision=Precision("fp8", "fp8", "fp8"), workload=work),
                  a100)
