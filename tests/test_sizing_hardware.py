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


# -- derated datasheets (issue 13) -----------------------------------------------------------

@pytest.mark.parametrize("entry", datasheets.load_datasheets(), ids=lambda e: e["sku"])
def test_every_datasheet_resolves_a_sourced_fraction_for_every_peak(entry):
    fr = datasheets.achievable_fractions(entry)
    assert set(fr.matmul) == {d for d, v in entry["matmul_TFLOPS"].items() if v}
    for f in [*fr.matmul.values(), fr.bandwidth]:
        assert 0.3 < f.fraction < 1            # below the sheet, never a silent 1.0
        assert f.url.startswith("https://") and f.source and f.measured
    # the dtypes measured on this part or borrowed with a reason, never left out
    ach = entry["achievable"]
    for item in [ach["memory_bandwidth"], *(ach["matmul"].values() if "from" not in
                                            ach["matmul"] else [ach["matmul"]])]:
        assert "fraction" in item or ("from" in item and item["why"])


def test_a_datasheet_is_priced_at_its_published_fractions_and_says_so():
    entry = datasheets.by_sku("h100-sxm")
    fr = datasheets.achievable_fractions(entry)
    hw = hardware_from_gpu_name("h100-sxm")
    for dtype, peak in entry["matmul_TFLOPS"].items():
        assert hw.model.peak_TFLOPS[dtype] == pytest.approx(peak * fr.matmul[dtype].fraction)
    assert hw.model.bandwidth_GBps == pytest.approx(3350 * 0.949)
    assert fr.matmul["bf16"].fraction == 0.803 and fr.matmul["fp8_e4m3"].fraction == 0.709
    # the same-rate dtype stands in where none was measured: fp16 = bf16, int8 = fp8
    assert fr.matmul["fp16"].stand_in == "bf16" and fr.matmul["int8"].stand_in == "fp8_e4m3"
    assert fr.matmul["int8"].fraction == 0.709
    (note,) = [n for n in hw.notes if n.startswith("derated: ")]
    assert note.startswith("derated: bf16, fp32, tf32, fp16 peak x0.803 (mamf-finder, "
                           "https://github.com/stas00/ml-engineering/")
    assert "; fp8_e4m3, int8 peak x0.709 (mamf-finder, " in note
    assert "memory bandwidth x0.949 (Azure AI-benchmarking-guide BabelStream" in note
    assert "int8 takes fp8_e4m3's" in note
    assert hw.profile["model"]["notes"] == [note]       # the profile's model section too
    assert hw.profile["datasheet"]["memory_bandwidth_GBps"] == 3350   # the vendor's, apart
    assert hw.summary()["derated"] is True and "published fractions" in hw.warnings[0]


def test_no_derate_prices_the_sheet_at_100_percent_and_says_so():
    hw = hardware_from_gpu_name("h100-sxm", derate=False)
    assert hw.model.bandwidth_GBps == 3350 and hw.model.peak_TFLOPS["bf16"] == 989.4
    assert any(n.startswith("NOT derated") for n in hw.notes)
    assert hw.summary()["derated"] is False and "at 100%" in hw.warnings[0]


def test_a_part_without_a_measurement_borrows_the_closest_and_the_note_says_so():
    nvl = hardware_from_gpu_name("h100-nvl")
    (note,) = [n for n in nvl.notes if n.startswith("derated: ")]
    assert "default: NVIDIA H100 SXM5 80GB's, no published matmul measurement of the H100 NVL" \
        in note
    sxm = datasheets.achievable_fractions(datasheets.by_sku("h100-sxm"))
    assert nvl.model.bandwidth_GBps == pytest.approx(3900 * sxm.bandwidth.fraction)
    # the MI325X: its own bf16, the MI300X's fp8 and bandwidth
    fr = datasheets.achievable_fractions(datasheets.by_sku("mi325x"))
    assert fr.matmul["bf16"].fraction == 0.604 and fr.matmul["bf16"].default is None
    assert fr.matmul["fp8_e4m3"].default.startswith("AMD Instinct MI300X 192GB's")


def test_an_entry_without_fractions_is_an_error_never_100_percent():
    from ridgeline.sizing.hardware import hardware_from_datasheet

    entry = {k: v for k, v in datasheets.by_sku("h100-sxm").items() if k != "achievable"}
    # a datasheet copied into an older profile: the bundled fractions of its sku
    assert hardware_from_datasheet(entry).model.bandwidth_GBps == pytest.approx(3350 * 0.949)
    unknown = {**entry, "sku": "x100", "name": "X100"}
    with pytest.raises(RidgelineError, match="'x100': no published achievable fractions"):
        hardware_from_datasheet(unknown)
    assert hardware_from_datasheet(unknown, derate=False).model.bandwidth_GBps == 3350
    bad = {**unknown, "achievable": {"matmul": {"bf16": {"fraction": 1.5, "source": {}}},
                                     "memory_bandwidth": {"from": "nope"}}}
    with pytest.raises(RidgelineError, match="must be in"):
        datasheets.achievable_fractions(bad)


def test_no_derate_is_a_plan_option_and_a_workload_key(tmp_path):
    import argparse

    from ridgeline.sizing.hardware import HardwareOptions, datasheet_hardware_for
    from ridgeline.sizing.options import add_option_groups, build, option_values
    from ridgeline.sizing.plan_options import PLAN_GROUPS

    parser = argparse.ArgumentParser()
    add_option_groups(parser, PLAN_GROUPS)
    hw = build(HardwareOptions, option_values(
        parser.parse_args(["--gpu", "h100-sxm", "--no-derate"]), PLAN_GROUPS)).load()
    assert hw.model.bandwidth_GBps == 3350
    (tmp_path / "w.toml").write_text('[hardware]\ngpu = "h100-sxm"\nno_derate = true\n')
    values = option_values(parser.parse_args(["--workload", str(tmp_path / "w.toml")]),
                           PLAN_GROUPS)
    assert build(HardwareOptions, values).load().model.bandwidth_GBps == 3350
    # the --compare-datasheet twin follows the same choice
    derated = build(HardwareOptions, {"gpu": "h100-sxm"}).load()
    assert datasheet_hardware_for(derated) is derated
    assert datasheet_hardware_for(derated, derate=False).model.bandwidth_GBps == 3350
