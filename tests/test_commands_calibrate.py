"""`ridgeline calibrate` end to end, and `plan` / `simulate --engine` using what it writes."""

import json
import re
from pathlib import Path

import pytest
from test_sizing_calibrate import N, simulated_engine_results

from ridgeline.cli import build_parser, main
from ridgeline.sizing.engine import load_engine
from ridgeline.sizing.hardware import hardware_from_gpu_name
from ridgeline.sizing.models import load_model
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.simulation import OpenLoop, scheduler_for

ROOT = Path(__file__).resolve().parents[1]
BASE = ["--model", "llama-3.1-8b", "--gpu", "h100-sxm"]
PLAN = [*BASE, "--input-p95", "1024", "--output-p95", "128", "--concurrency", "8",
        "--ttft-slo", "2", "--itl-slo", "0.1", "--fast"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """vLLM results the simulator wrote with a 700 us step and a 2.5 ms request overhead."""
    folder = tmp_path_factory.mktemp("vllm-results")
    spec = load_model("llama-3.1-8b")
    hw = hardware_from_gpu_name("h100-sxm")
    bf16 = Precision("bf16", "bf16", "bf16")
    truth = load_engine("vllm").with_values(step_overhead_us=700.0, request_overhead_us=2500.0)
    simulated_engine_results(folder, (spec, hw, scheduler_for(spec, bf16, hw.memory_bytes)),
                             truth, [OpenLoop(r) for r in (3.0, 7.0, 12.0, 18.0)])
    return folder


@pytest.fixture(scope="module")
def engine_file(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "engine.json"
    assert main(["calibrate", str(results), *BASE, "--engine", "vllm", "--requests", str(N),
                 "-o", str(out)]) == 0
    return out


def test_json_has_the_errors_before_and_after(results, tmp_path, capsys):
    out = tmp_path / "engine.json"
    assert main(["calibrate", str(results), *BASE, "--engine", "vllm", "--requests", str(N),
                 "-o", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["error_before"] > 0.05 > 0.01 > d["error_after"]
    assert d["fitted"]["step_overhead_us"] == pytest.approx(700.0, rel=0.03)
    assert d["written"] == str(out) and d["k"] == 4 and len(d["points"]) == 4
    doc = json.loads(out.read_text())
    assert doc["fit"]["error_after"] == d["error_after"]
    assert doc["provenance"]["command_line"][0] == "ridgeline"
    assert doc["provenance"]["hardware"]["name"] == d["provenance"]["hardware"]["name"]


def test_text_output_names_the_errors_and_the_file(engine_file, results, capsys):
    assert engine_file.is_file()
    out = engine_file.parent / "again.json"
    assert main(["calibrate", str(results), *BASE, "--engine", "vllm", "--requests", str(N),
                 "-o", str(out)]) == 0
    text = capsys.readouterr()
    assert re.search(r"error before \(vllm engine\): [\d.]+%; after: [\d.]+% held out",
                     text.out)
    assert "fitted: step overhead" in text.out and f"wrote {out}" in text.err


def test_an_existing_engine_file_needs_force(engine_file, results, capsys):
    before = engine_file.read_text()
    argv = ["calibrate", str(results), *BASE, "--requests", "20", "-o", str(engine_file)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists: pass --force" in err
    assert engine_file.read_text() == before


def test_bad_input_is_one_line(results, tmp_path, capsys):
    few = sorted(results.glob("*.json"))[:2]
    assert main(["calibrate", *map(str, few), *BASE]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 3 measured points" in err
    assert main(["calibrate", str(results), *BASE, "--engine", "tensorflow"]) == 2
    assert "unknown engine 'tensorflow'" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "nothing"), *BASE]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_plan_and_simulate_use_the_engine_file_and_name_it(engine_file, capsys):
    fitted = json.loads(engine_file.read_text())["fit"]["values"]
    assert main(["plan", *PLAN, "--engine", str(engine_file), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    layer = plan["engine_layer"]
    assert layer["name"] == "vllm-calibrated" and str(engine_file) in layer["source"]
    assert layer["step_overhead_us"] == fitted["step_overhead_us"]
    assert any(n.startswith("engine layer: vllm-calibrated") for n in plan["notes"])
    assert main(["plan", *PLAN, "--json"]) == 0
    bare = json.loads(capsys.readouterr().out)
    assert bare["engine_layer"]["name"] == "none"
    # the fitted overheads make every step and every TTFT longer than the hardware alone
    assert plan["performance"]["decode_vs_batch"][0]["itl_s"] > \
        bare["performance"]["decode_vs_batch"][0]["itl_s"] + 600e-6
    assert plan["performance"]["ttft_vs_input"][0]["ttft_s"] > \
        bare["performance"]["ttft_vs_input"][0]["ttft_s"] + 2e-3

    sim = ["simulate", *BASE, "--input-p95", "1024", "--output-p95", "128", "--rps", "4",
           "--requests", "60"]
    assert main([*sim, "--engine", str(engine_file), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["engine_layer"]["name"] == "vllm-calibrated"
    assert main([*sim, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert d["points"][0]["ttft_s"]["p50"] > plain["points"][0]["ttft_s"]["p50"] + 2e-3
    assert main([*sim, "--engine", "sglang"]) == 0
    assert "engine layer: sglang" in capsys.readouterr().out


def test_documented_flags_exist():
    doc = (ROOT / "docs" / "engine.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    flags = {s for name in ("calibrate", "plan", "simulate")
             for a in sub[name]._actions for s in a.option_strings}
    documented = set(re.findall(r"(--[a-z][a-z0-9-]+)", doc))
    assert {"--engine", "--requests", "--force"} <= documented
    assert documented <= flags, documented - flags
    for name in re.findall(r"`ridgeline (\w+)", doc):
        assert name in sub, name
