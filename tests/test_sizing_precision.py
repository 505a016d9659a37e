"""ridgeline.sizing.precision: the int4 group size and zero point as precision options
(issue 13).

int4 weights cost 0.5 B + one fp16 scale per group + the group's zero point (none 0 B, int4
0.5 B, fp16/bf16 2 B); both options reach weight_bytes, memory and step times alike, the
plan's JSON, and are refused with one line when malformed or the weights are not int4.
Pure logic: no torch.
"""

import json

import pytest

from ridgeline import api
from ridgeline.cli import main
from ridgeline.errors import RidgelineError
from ridgeline.sizing.hardware import hardware_from_gpu_name
from ridgeline.sizing.latency import decode_step_time
from ridgeline.sizing.memory import weight_breakdown, weight_bytes
from ridgeline.sizing.models import load_model
from ridgeline.sizing.precision import (INT4_GROUP_SIZE, INT4_ZERO_POINT, SCALE_BYTES,
                                        ZERO_POINT_BYTES, Precision, PrecisionOptions,
                                        resolve_precision)

G32 = Precision("int4", "bf16", "bf16", int4_group_size=32)
G128 = Precision("int4", "bf16", "bf16")


def test_weight_bytes_follow_the_group_size():
    assert INT4_GROUP_SIZE == 128 and G128.int4_group_size == 128
    assert G32.weight_bytes == 0.5 + 2 / 32 == 0.5625
    assert G128.weight_bytes == 0.5 + SCALE_BYTES / 128
    assert Precision("int4", int4_group_size=1).weight_bytes == 2.5   # a scale per weight
    assert Precision("fp8", "fp8", "fp8").weight_bytes == 1.0         # no groups


def test_to_dict_carries_the_group_size_for_int4_weights_only():
    assert G32.to_dict()["int4_group_size"] == 32 and G32.to_dict()["weight_bytes"] == 0.5625
    assert G128.to_dict()["int4_group_size"] == 128
    assert "int4_group_size" not in Precision().to_dict()


@pytest.mark.parametrize("size", [0, -1, 1.5, "32", True, None])
def test_a_group_size_that_is_not_a_positive_whole_number_is_one_line(size):
    for make in (lambda: Precision("int4", int4_group_size=size),
                 lambda: PrecisionOptions(weights="int4", int4_group_size=size)):
        with pytest.raises(RidgelineError, match="--int4-group-size must be a positive whole") \
                as err:
            make()
        assert "\n" not in str(err.value) and repr(size) in str(err.value)


def test_the_group_size_applies_to_int4_weights_only():
    with pytest.raises(RidgelineError, match="--int4-group-size applies to int4 weights only"):
        Precision("bf16", int4_group_size=32)
    with pytest.raises(RidgelineError, match=r"int4 weights only \(the weights are fp8\)"):
        PrecisionOptions(weights="fp8", int4_group_size=64).resolve(None)
    assert Precision("bf16", int4_group_size=INT4_GROUP_SIZE) == Precision()   # the default


def test_resolving_keeps_the_group_size_through_a_weight_alias():
    p, _ = PrecisionOptions(weights="gptq", int4_group_size=32).resolve(None)
    assert p == G32 and p.weights == "int4"
    assert resolve_precision("int4", "auto", "auto", None)[0].int4_group_size == 128


def test_memory_and_decode_step_grow_by_the_same_weight_byte_ratio():
    """Llama-2-70B int4 at batch 1 reads its quantized weights once a step: G=32 adds the
    same bytes to the step that it adds to the stored weights, and the GEMV time (memory
    bound) grows by the weight-byte ratio; embedding, head and attention do not move."""
    spec, hw = load_model("llama-2-70b"), hardware_from_gpu_name("a100-sxm4-80gb")
    ratio = G32.weight_bytes / G128.weight_bytes                 # 0.5625 / 0.515625
    m32, m128 = weight_breakdown(spec, G32), weight_breakdown(spec, G128)
    assert m32["quantized_linear"] == pytest.approx(ratio * m128["quantized_linear"], rel=1e-12)
    assert m32["embedding_and_head"] == m128["embedding_and_head"]
    extra = weight_bytes(spec, G32) - weight_bytes(spec, G128)
    assert extra == pytest.approx(m32["quantized_linear"] - m128["quantized_linear"])

    s32, s128 = (decode_step_time(spec, p, hw, 1, 128) for p in (G32, G128))
    assert s32.bytes - s128.bytes == pytest.approx(extra, rel=1e-9)
    assert s32.breakdown["gemm"] == pytest.approx(ratio * s128.breakdown["gemm"], rel=2e-3)
    for group in ("attention", "lm_head", "elementwise"):
        assert s32.breakdown[group] == s128.breakdown[group]
    assert 1 < s32.time_s / s128.time_s < ratio                  # latency floors do not grow


def test_the_api_takes_the_group_size_in_precision_options():
    step = api.decode_step("llama-3.1-8b", "h100-sxm", batch=1, context_tokens=256,
                           precision=api.PrecisionOptions(weights="int4", int4_group_size=32))
    assert step.precision["int4_group_size"] == 32 and step.precision["weight_bytes"] == 0.5625
    default = api.decode_step("llama-3.1-8b", "h100-sxm", batch=1, context_tokens=256,
                              precision="int4")
    assert default.precision["int4_group_size"] == 128 and default.bytes < step.bytes


PLAN = ["plan", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--input-p95", "1000",
        "--output-p95", "200", "--concurrency", "4", "--fast"]


def test_the_cli_option_reaches_the_plans_json(capsys):
    plans = {}
    for extra in ([], ["--int4-group-size", "32"]):
        assert main([*PLAN, "--weights", "int4", *extra, "--json"]) == 0
        plans[tuple(extra)] = json.loads(capsys.readouterr().out)
    g128, g32 = plans[()], plans[("--int4-group-size", "32")]
    assert g32["precision"]["int4_group_size"] == 32 and g32["precision"]["weight_bytes"] == 0.5625
    assert g128["precision"]["int4_group_size"] == 128
    q32, q128 = (p["memory"]["weights_detail"]["quantized_linear"] for p in (g32, g128))
    assert q32 == pytest.approx(q128 * 0.5625 / 0.515625, rel=1e-12)


@pytest.mark.parametrize("argv, message", [
    (["--weights", "int4", "--int4-group-size", "0"], "--int4-group-size must be a positive"),
    (["--weights", "int4", "--int4-group-size", "-1"], "--int4-group-size must be a positive"),
    (["--weights", "bf16", "--int4-group-size", "32"],
     "--int4-group-size applies to int4 weights only"),
    (["--int4-group-size", "64"], "--int4-group-size applies to int4 weights only"),
    (["--weights", "int4", "--int4-zero-point", "int8"],
     "--int4-zero-point must be one of none, int4, fp16"),
    (["--weights", "bf16", "--int4-zero-point", "fp16"],
     "--int4-zero-point applies to int4 weights only"),
    (["--int4-zero-point", "int4"], "--int4-zero-point applies to int4 weights only"),
])
def test_bad_group_sizes_and_zero_points_exit_non_zero_with_one_line(capsys, argv, message):
    assert main([*PLAN, *argv]) != 0
    out = capsys.readouterr()
    err = out.err.strip()
    assert len(err.splitlines()) == 1 and message in err and not out.out, err


def test_a_workload_file_takes_the_group_size(capsys, tmp_path):
    toml = tmp_path / "w.toml"
    toml.write_text('weights = "int4"\nint4_group_size = 64\n')
    assert main([*PLAN, "--workload", str(toml), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"]["int4_group_size"] == 64


# -- the zero point per group -----------------------------------------------------------------

@pytest.mark.parametrize("zero, group, expected", [
    ("none", 32, 0.5625), ("none", 128, 0.515625),
    ("int4", 32, 0.578125), ("int4", 128, 0.51953125),    # AWQ/GPTQ qzeros: 4 bits a group
    ("fp16", 32, 0.625), ("fp16", 128, 0.53125),          # gpt-fast: a bf16 zero a group
])
def test_weight_bytes_add_the_zero_point_per_group(zero, group, expected):
    p = Precision("int4", int4_group_size=group, int4_zero_point=zero)
    assert p.weight_bytes == expected
    assert p.weight_bytes == 0.5 + (SCALE_BYTES + ZERO_POINT_BYTES[zero]) / group
    assert ZERO_POINT_BYTES == {"none": 0.0, "int4": 0.5, "fp16": 2.0}


def test_the_default_is_no_zero_point_and_changes_nothing():
    assert INT4_ZERO_POINT == "none" and G128.int4_zero_point == "none"
    assert Precision("int4", int4_zero_point="none") == G128
    assert PrecisionOptions(weights="int4").resolve(None)[0] == G128
    assert resolve_precision("int4", "auto", "auto", None)[0].int4_zero_point == "none"


@pytest.mark.parametrize("alias", ["bf16", "BF16", " fp16 ", "Fp16"])
def test_bf16_is_an_alias_of_fp16_zero_points(alias):
    p = Precision("int4", int4_group_size=32, int4_zero_point=alias)
    assert p.int4_zero_point == "fp16" and p.weight_bytes == 0.625
    assert p == Precision("int4", int4_group_size=32, int4_zero_point="fp16")
    r, _ = PrecisionOptions(weights="int4", int4_group_size=32, int4_zero_point=alias).resolve(None)
    assert r == p


def test_to_dict_carries_the_zero_point_for_int4_weights_only():
    d = Precision("int4", int4_group_size=32, int4_zero_point="bf16").to_dict()
    assert d["int4_zero_point"] == "fp16" and d["weight_bytes"] == 0.625
    assert G128.to_dict()["int4_zero_point"] == "none"
    assert "int4_zero_point" not in Precision().to_dict()
    assert "int4_zero_point" not in Precision("fp8", "fp8", "fp8").to_dict()


@pytest.mark.parametrize("zero", ["int8", "fp8", "", "zero", None, 2, 0.5, True])
def test_an_unknown_zero_point_is_one_line_naming_the_choices(zero):
    for make in (lambda: Precision("int4", int4_zero_point=zero),
                 lambda: PrecisionOptions(weights="int4", int4_zero_point=zero)):
        with pytest.raises(RidgelineError, match=r"--int4-zero-point must be one of none, "
                                                 r"int4, fp16 \(bf16 = fp16\)") as err:
            make()
        assert "\n" not in str(err.value) and repr(zero) in str(err.value)


def test_the_zero_point_applies_to_int4_weights_only():
    with pytest.raises(RidgelineError, match=r"--int4-zero-point applies to int4 weights only "
                                             r"\(the weights are bf16\)"):
        Precision("bf16", int4_zero_point="fp16")
    with pytest.raises(RidgelineError, match=r"int4 weights only \(the weights are fp8\)"):
        PrecisionOptions(weights="fp8", int4_zero_point="int4").resolve(None)
    assert Precision("bf16", int4_zero_point="none") == Precision()     # the default
    assert Precision("int8", "bf16", int4_zero_point=INT4_ZERO_POINT).weight_bytes == 1.0


def test_memory_and_decode_step_grow_by_the_zero_point_byte_ratio():
    """gpt-fast's bf16 zero at G=32 adds 2 B per 32 weights to the stored int4 layers and to
    the bytes every decode step reads, and nothing else; the GEMV time (memory bound) grows by
    the weight-byte ratio 0.625 / 0.5625; an AWQ-style int4 zero adds a quarter of that."""
    spec, hw = load_model("llama-2-70b"), hardware_from_gpu_name("a100-sxm4-80gb")
    zp = {z: Precision("int4", "bf16", "bf16", 32, z) for z in ("none", "int4", "fp16")}
    ratio = zp["fp16"].weight_bytes / zp["none"].weight_bytes            # 0.625 / 0.5625
    m = {z: weight_breakdown(spec, p) for z, p in zp.items()}
    assert m["fp16"]["quantized_linear"] == pytest.approx(
        ratio * m["none"]["quantized_linear"], rel=1e-12)
    assert m["fp16"]["embedding_and_head"] == m["none"]["embedding_and_head"]
    extra = weight_bytes(spec, zp["fp16"]) - weight_bytes(spec, zp["none"])
    assert extra == pytest.approx(m["fp16"]["quantized_linear"] - m["none"]["quantized_linear"])
    quarter = weight_bytes(spec, zp["int4"]) - weight_bytes(spec, zp["none"])
    assert quarter == pytest.approx(extra / 4, rel=1e-12)             # 0.5 B vs 2 B a group

    s = {z: decode_step_time(spec, p, hw, 1, 128) for z, p in zp.items()}
    assert s["fp16"].bytes - s["none"].bytes == pytest.approx(extra, rel=1e-9)
    assert s["fp16"].breakdown["gemm"] == pytest.approx(ratio * s["none"].breakdown["gemm"],
                                                       rel=2e-3)
    for group in ("attention", "lm_head", "elementwise"):
        assert s["fp16"].breakdown[group] == s["none"].breakdown[group]
    assert s["none"].time_s < s["int4"].time_s < s["fp16"].time_s
    assert 1 < s["fp16"].time_s / s["none"].time_s < ratio           # latency floors do not grow


def test_the_api_takes_the_zero_point_in_precision_options():
    def step(**zero):
        return api.decode_step("llama-3.1-8b", "h100-sxm", batch=1, context_tokens=256,
                               precision=api.PrecisionOptions(weights="int4", int4_group_size=32,
                                                              **zero))
    gptfast, sym = step(int4_zero_point="bf16").precision, step().precision
    assert gptfast["int4_zero_point"] == "fp16" and gptfast["weight_bytes"] == 0.625
    assert sym["int4_zero_point"] == "none" and sym["weight_bytes"] == 0.5625
    assert step().bytes < step(int4_zero_point="int4").bytes < step(int4_zero_point="fp16").bytes


@pytest.mark.parametrize("zero, name, weight", [("fp16", "fp16", 0.625), ("bf16", "fp16", 0.625),
                                                ("int4", "int4", 0.578125)])
def test_the_cli_zero_point_reaches_the_plans_json(capsys, zero, name, weight):
    plans = {}
    for extra in ([], ["--int4-zero-point", zero]):
        assert main([*PLAN, "--weights", "int4", "--int4-group-size", "32", *extra, "--json"]) == 0
        plans[bool(extra)] = json.loads(capsys.readouterr().out)
    sym, asym = plans[False], plans[True]
    assert asym["precision"]["int4_zero_point"] == name
    assert asym["precision"]["weight_bytes"] == weight
    assert sym["precision"]["int4_zero_point"] == "none"
    assert sym["precision"]["weight_bytes"] == 0.5625
    q_asym, q_sym = (p["memory"]["weights_detail"]["quantized_linear"] for p in (asym, sym))
    assert q_asym == pytest.approx(q_sym * weight / 0.5625, rel=1e-12)


def test_a_workload_file_takes_the_zero_point(capsys, tmp_path):
    toml = tmp_path / "w.toml"
    toml.write_text('weights = "int4"\nint4_group_size = 32\nint4-zero-point = "bf16"\n')
    assert main([*PLAN, "--workload", str(toml), "--json"]) == 0
    precision = json.loads(capsys.readouterr().out)["precision"]
    assert precision["int4_zero_point"] == "fp16" and precision["weight_bytes"] == 0.625


def test_plan_simulate_and_calibrate_take_the_flag():
    from ridgeline.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("plan", "simulate", "calibrate"):
        flags = {s for a in sub[command]._actions for s in a.option_strings}
        assert {"--int4-group-size", "--int4-zero-point"} <= flags, command
