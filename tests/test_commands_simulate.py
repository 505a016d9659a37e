"""`ridgeline simulate` end to end: JSON, tables, files, traces, measured curves, bad input,
agreement with `ridgeline plan` at low load, and the report's simulation section."""

import argparse
import csv
import io
import json
import re
import sys
from pathlib import Path

import pytest
from profile_fixtures import UNVERIFIED, VERIFIED
from profile_fixtures import synthetic_profile as fixture_profile

from ridgeline.commands import simulate as simulate_cmd
from ridgeline.errors import RidgelineError
from ridgeline.reports.curve import CSV_COLUMNS
from ridgeline.sizing.options import add_option_groups, option_values, options_markdown
from ridgeline.sizing.simulation.options import DEFAULT_GRID, SIMULATE_GROUPS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
MEASURED = DATA / "measured"
# Llama-3.1-8B bf16 on the H100 datasheet: the measured fixtures' model, fast to simulate
BASE = ["--model", "llama-3.1-8b", "--gpu", "h100-sxm"]
FIXED = ["--input-p95", "1024", "--output-p95", "128"]           # p50 = p95: fixed lengths
SPREAD = ["--input-p50", "800", "--input-p95", "3000", "--output-p50", "100",
          "--output-p95", "300"]


def main(argv):
    """ridgeline.cli.main(["simulate", ...]) once the command is in its table; until then the
    same thing by hand: the command's parser, its run, a RidgelineError as one line."""
    from ridgeline import cli

    if "simulate" in cli.COMMANDS:
        return cli.main(["simulate", *argv])
    parser = argparse.ArgumentParser(prog="ridgeline simulate")
    simulate_cmd.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return simulate_cmd.run(args)
    except RidgelineError as exc:
        print(f"ridgeline simulate: error: {exc}", file=sys.stderr)
        return exc.exit_code


def run_json(capsys, argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# -- the JSON the issue asks for ------------------------------------------------------------

def test_json_points_and_littles_law_on_every_point(capsys):
    d = run_json(capsys, [*BASE, *SPREAD, "--rps", "2", "8,16", "--requests", "600",
                          "--ttft-slo", "1", "--itl-slo", "0.05"])
    assert d["kind"] == "ridgeline-simulation" and d["basis"] == "datasheet"
    assert d["basis_label"] == "DATASHEET" and "DATASHEET" in d["summary"]
    assert [p["rps"] for p in d["points"]] == [2.0, 8.0, 16.0]
    assert d["measured"] == [] and d["tp"] == 1 and d["load"]["requests_per_point"] == 600
    for p in d["points"]:
        for key in ("ttft_s", "itl_s", "e2e_s"):
            assert set(p[key]) == {"mean", "p50", "p95", "p99"}
            assert p[key]["p50"] <= p[key]["p95"] <= p[key]["p99"]
        assert p["requests"] == 600 and p["output_tokens_per_s"] > 0
        # Little's law: requests in the system = throughput x mean E2E
        assert p["mean_concurrency"] == pytest.approx(p["request_throughput"] * p["e2e_s"]["mean"],
                                                      rel=0.02)
    # latency percentiles do not fall as the load rises (same requests at every point)
    p99 = [p["ttft_s"]["p99"] for p in d["points"]]
    assert p99 == sorted(p99)
    assert d["slo"] == {"ttft_s": 1.0, "ttft_percentile": "p99", "itl_s": 0.05,
                        "itl_percentile": "p95"}
    assert d["lengths"]["kind"] == "lognormal" and d["lengths"]["input_p50"] == 800


def test_default_grid_is_fractions_of_the_capacity(capsys):
    d = run_json(capsys, [*BASE, *FIXED, "--requests", "300"])
    cap = d["load"]["capacity_rps"]
    assert cap > 0 and d["load"]["default_grid"]
    assert [p["rps"] for p in d["points"]] == pytest.approx([f * cap for f in DEFAULT_GRID])
    assert d["operating_point"] is None and "no SLO given" in d["summary"]
    # past the capacity the throughput stops growing with the offered load
    top = d["points"][-1]
    assert top["request_throughput"] < 0.95 * top["rps"]


def test_closed_loop_sweep(capsys):
    d = run_json(capsys, [*BASE, *FIXED, "--concurrency", "1", "4", "16", "--requests", "200",
                          "--think-time", "0.5"])
    assert [p["concurrency"] for p in d["points"]] == [1, 4, 16]
    assert d["load"]["kind"] == "concurrency" and d["load"]["think_s"] == 0.5
    assert d["load"]["capacity_rps"] is None
    # requests in the system never exceed the clients
    assert all(p["mean_concurrency"] <= p["concurrency"] + 1e-9 for p in d["points"])


# -- agreement with the planner at low load -------------------------------------------------

def test_low_load_agrees_with_plans_prefill_and_batch_one_step(capsys):
    """At very low load, TTFT P50 is plan's prefill of the prompt and ITL P50 is plan's decode
    step at batch 1 (within 2%): the two commands price the same steps."""
    from ridgeline.cli import main as cli_main

    sim = run_json(capsys, [*BASE, *FIXED, "--rps", "0.02", "--requests", "150"])
    assert cli_main(["plan", *BASE, *FIXED, "--concurrency", "1", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    perf = plan["performance"]
    prefill = next(r["ttft_s"] for r in perf["ttft_vs_input"] if r["input_tokens"] == 1024)
    step = next(r["itl_s"] for r in perf["decode_vs_batch"] if r["batch"] == 1)
    p = sim["points"][0]
    assert p["mean_batch"] < 1.05                        # the requests barely overlap
    assert p["ttft_s"]["p50"] == pytest.approx(prefill, rel=0.02)
    assert p["itl_s"]["p50"] == pytest.approx(step, rel=0.02)


# -- console output and files ---------------------------------------------------------------

def test_console_tables_summary_and_basis(capsys):
    argv = [*BASE, *SPREAD, "--rps", "4", "12", "24", "48", "--requests", "400",
            "--ttft-slo", "0.5", "--gpu-hourly", "3"]
    d = run_json(capsys, argv)
    op = d["operating_point"]
    assert op["limit"] == "TTFT SLO" and op["load"] == 24.0    # 48 req/s is past capacity
    p = d["points"][op["index"]]
    assert d["cost_per_1m_output_tokens"] == pytest.approx(3 / (p["output_tokens_per_s"] * 3600)
                                                           * 1e6)
    assert main(argv) == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    assert re.search(r"Latency against load \(ms\)\s+\[DATASHEET\]", out)
    assert "TP=1: the lowest TP whose KV cache holds the longest request" in flat
    assert d["summary"] in flat and "SLO operating point 24 req/s" in d["summary"]
    assert f"operating point: {d['cost_per_1m_output_tokens']:,.3f}" in flat


def test_csv_png_and_output_folder(capsys, tmp_path):
    csv_path, png_path, folder = tmp_path / "c.csv", tmp_path / "c.png", tmp_path / "out"
    assert main([*BASE, *SPREAD, "--rps", "4", "16", "--requests", "200", "--csv", str(csv_path),
                 "--png", str(png_path), "-o", str(folder), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert list(rows[0]) == CSV_COLUMNS and [float(r["load"]) for r in rows] == [4.0, 16.0]
    assert float(rows[0]["ttft_p99_s"]) == pytest.approx(d["points"][0]["ttft_s"]["p99"])
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((folder / "simulation.json").read_text())
    assert saved["points"] == d["points"] and saved["kind"] == "ridgeline-simulation"
    assert (folder / "simulation.csv").read_text() == csv_path.read_text()
    assert (folder / "simulation.png").read_bytes()[:4] == b"\x89PNG"


# -- traces ----------------------------------------------------------------------------------

def test_trace_lengths_are_replayed_in_order(capsys):
    d = run_json(capsys, [*BASE, "--trace", str(DATA / "azure_llm_trace_sample.csv"),
                          "--rps", "1", "--requests", "50"])
    from ridgeline.sizing.simulation import read_trace

    trace = read_trace(DATA / "azure_llm_trace_sample.csv")
    n = len(trace.input_tokens)
    assert d["lengths"]["kind"] == "trace" and d["lengths"]["rows"] == n
    expected = sum(int(trace.input_tokens[i % n]) for i in range(50)) / 50
    assert d["lengths"]["mean_input"] == pytest.approx(expected)
    assert any("cycled" in note for note in d["notes"])


def test_trace_arrival_times_as_recorded_and_rescaled(capsys):
    path = str(DATA / "timed_requests_sample.jsonl")   # arrivals 0.5, 1.5, 1.0 s: sorted
    recorded = run_json(capsys, [*BASE, "--trace", path, "--replay-arrivals"])
    (p,) = recorded["points"]
    assert p["requests"] == 3 and p["rps"] == pytest.approx(2 / 1.0)   # 3 requests over 1 s
    scaled = run_json(capsys, [*BASE, "--trace", path, "--replay-arrivals", "--rps", "4", "8"])
    assert [q["rps"] for q in scaled["points"]] == [4.0, 8.0]
    assert scaled["lengths"]["replay_arrivals"] is True


# -- measured curves -------------------------------------------------------------------------

def test_measured_vllm_points_beside_the_simulated_ones(capsys, tmp_path):
    csv_path = tmp_path / "both.csv"
    d = run_json(capsys, [*BASE, "--input-p95", "1024", "--output-p95", "128", "--rps", "2", "8",
                          "16", "32", "--requests", "300", "--measured", str(MEASURED / "vllm"),
                          "--csv", str(csv_path)])
    (m,) = d["measured"]
    assert m["tool"] == "vLLM" and [p["rps"] for p in m["points"]] == [2.0, 8.0, 16.0, 32.0]
    sources = [r["source"] for r in csv.DictReader(io.StringIO(csv_path.read_text()))]
    assert sources.count("simulated") == 4 and sources.count("measured (vLLM)") == 4
    assert main([*BASE, *FIXED, "--rps", "2", "8", "--requests", "200", "--measured",
                 str(MEASURED / "aiperf")]) == 0
    out = capsys.readouterr().out
    assert "AIPerf" in out and "sim" in out


def test_measured_closed_loop_needs_a_closed_loop(capsys):
    d = run_json(capsys, [*BASE, *FIXED, "--concurrency", "4", "16", "--requests", "100",
                          "--measured", str(MEASURED / "vllm_concurrency")])
    assert [p["concurrency"] for p in d["measured"][0]["points"]] == [4, 16]
    assert main([*BASE, *FIXED, "--rps", "4", "--measured",
                 str(MEASURED / "vllm_concurrency")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--concurrency" in err


# -- bad input: one line, exit 2 --------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    ([*BASE, *FIXED, "--rps", "abc"], "--rps takes numbers"),
    ([*BASE, *FIXED, "--rps", "0"], "--rps must be positive"),
    ([*BASE, *FIXED, "--rps", "2", "--concurrency", "4"], "not both"),
    ([*BASE, *FIXED, "--rps", "2", "2"], "twice"),
    ([*BASE, "--rps", "2"], "no request lengths"),
    ([*BASE, "--trace", "nope.csv"], "trace file not found"),
    ([*BASE, "--trace", str(DATA / "sharegpt_lengths_sample.jsonl"), "--replay-arrivals"],
     "no arrival times"),
    ([*BASE, *FIXED, "--replay-arrivals"], "needs a --trace"),
    ([*BASE, "--trace", str(DATA / "azure_llm_trace_sample.csv"), "--input-p95", "9"],
     "--trace gives the lengths"),
    ([*BASE, *FIXED, "--pp", "2"], "PP = 1"),
    ([*BASE, *FIXED, "--tp", "3"], "--tp 3"),
    (["--model", "llama-3.1-70b", "--gpu", "h100-sxm", *FIXED, "--tp", "1"], "raise --tp"),
    ([*BASE, "--input-p50", "900", "--input-p95", "800", "--output-p95", "10"], "exceeds"),
    ([*BASE, *FIXED, "--ttft-percentile", "p90"], "--ttft-percentile must be"),
    ([*BASE, *FIXED, "--arrival-cv", "2", "--burstiness", "0.5"], "not both"),
    ([*BASE, *FIXED, "--concurrency", "4", "--burstiness", "0.5"], "do not apply"),
    ([*BASE, *FIXED, "--think-time", "1"], "closed loop"),
    ([*BASE, *FIXED, "--measured", "missing-results/"], "no such file"),
    ([*BASE, *FIXED, "--csv", "no/such/folder/c.csv"], "no folder"),
    ([*BASE, *FIXED, "--requests", "0"], "--requests must be"),
    (["--model", "llama-2-7b", "--gpu", "h100-sxm", "--input-p95", "4000", "--output-p95",
      "512"], "context window"),
    (["--model", "tiny", *FIXED], "no hardware"),
    (["--gpu", "h100-sxm", *FIXED], "--model is required"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


def test_an_unverified_profile_is_refused_as_plan_refuses_it(capsys, tmp_path):
    path = str(synthetic_profile(tmp_path / "profile.json", verified=False))
    assert main(["--model", "llama-3.1-8b", "--profile", path, *FIXED, "--rps", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--allow-unverified" in err
    d = run_json(capsys, ["--model", "llama-3.1-8b", "--profile", path, "--allow-unverified",
                          *FIXED, "--rps", "1", "--requests", "50"])
    assert d["basis"] == "measured" and any("verified" in w for w in d["warnings"])


# -- the workload file and list options ------------------------------------------------------

def test_list_options_from_a_workload_file(tmp_path):
    toml = tmp_path / "w.toml"
    toml.write_text('model = "tiny"\ngpu = "h100-sxm"\n[load]\nrps = [1, 2.5]\n'
                    'measured = ["a.json", "b"]\n')
    parser = argparse.ArgumentParser()
    add_option_groups(parser, SIMULATE_GROUPS)
    values = option_values(parser.parse_args(["--workload", str(toml)]), SIMULATE_GROUPS)
    assert values["rps"] == (1.0, 2.5) and values["measured"] == ("a.json", "b")
    over = option_values(parser.parse_args(["--workload", str(toml), "--rps", "3,4", "5"]),
                         SIMULATE_GROUPS)
    assert over["rps"] == (3.0, 4.0, 5.0)
    toml.write_text('rps = ["fast"]\n')
    with pytest.raises(RidgelineError, match="rps takes numbers"):
        option_values(parser.parse_args(["--workload", str(toml)]), SIMULATE_GROUPS)


# -- the report shows a simulation written beside the profile --------------------------------

def synthetic_profile(path, verified=True):
    return fixture_profile(path, read_status=VERIFIED if verified else UNVERIFIED)


def test_report_has_a_simulation_section_from_simulate_o(capsys, tmp_path):
    from ridgeline.reports.render import load_simulation, write_report
    from ridgeline.roofline.profile import load_profile

    folder = tmp_path / "run"
    folder.mkdir()
    profile = synthetic_profile(folder / "profile.json")
    assert main(["--model", "llama-3.1-8b", "--profile", str(profile), *FIXED, "--rps", "2", "8",
                 "--requests", "100", "--ttft-slo", "1", "-o", str(folder)]) == 0
    summary = json.loads((folder / "simulation.json").read_text())["summary"]
    capsys.readouterr()
    paths = write_report(load_profile(profile), folder)
    md = (folder / "report.md").read_text()
    assert "## Serving simulation: the latency-throughput curve" in md
    assert summary in md and "Latency against load (ms)" in md
    assert folder / "simulation.png" in paths and "simulation.png" in md
    html = (folder / "report.html").read_text()
    assert "Serving simulation" in html and html.count("data:image/png;base64") >= 1
    # no simulation.json: no section; a broken one: the section says why
    other = tmp_path / "other"
    write_report(load_profile(profile), other)
    assert "Serving simulation" not in (other / "report.md").read_text()
    (other / "simulation.json").write_text("{not json")
    write_report(load_profile(profile), other)
    assert "No simulation shown: simulation.json was not read" in (other / "report.md").read_text()
    with pytest.raises(RidgelineError, match="not a ridgeline simulation"):
        load_simulation(other / "simulation.json", required=True)


# -- progress, Ctrl-C, and the sweep it mirrors -----------------------------------------------

def test_sweep_loads_matches_sweep_reports_progress_and_keeps_points_on_ctrl_c(monkeypatch):
    from ridgeline.sizing.hardware import hardware_from_gpu_name
    from ridgeline.sizing.models import load_model
    from ridgeline.sizing.precision import Precision
    from ridgeline.sizing.simulation import (LognormalLengths, OpenLoop, make_requests,
                                             scheduler_for, sweep)
    from ridgeline.sizing.simulation import run as run_mod
    from ridgeline.sizing.step_model import StepModel

    spec, prec, hw = load_model("llama-3.1-8b"), Precision(), hardware_from_gpu_name("h100-sxm")
    sm, sched = StepModel(spec, prec, hw), scheduler_for(spec, prec, hw.memory_bytes)
    reqs = make_requests(LognormalLengths(500, 2000, 100, 300), 300, seed=1)
    rates = [3.0, 9.0, 27.0]
    calls = []
    got, stopped = run_mod.sweep_loads(sm, sched, reqs, [OpenLoop(r) for r in rates],
                                       ttft_slo_s=0.5, itl_slo_s=None, ttft_percentile="p99",
                                       itl_percentile="p95",
                                       progress=lambda *a: calls.append(a))
    ref = sweep(sm, sched, reqs, rps=rates, ttft_slo_s=0.5, itl_percentile="p95")
    assert not stopped and got.to_dict() == ref.to_dict()
    assert [c[0] for c in calls] == [0, 1, 2, 3] and calls[-1][2] == "done"

    real = run_mod.simulate
    seen = []

    def interrupted(*a, **k):
        seen.append(1)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "simulate", interrupted)
    kept, stopped = run_mod.sweep_loads(sm, sched, reqs, [OpenLoop(r) for r in rates],
                                        ttft_slo_s=None, itl_slo_s=None,
                                        ttft_percentile="p99", itl_percentile="p95")
    assert stopped and [p.value for p in kept.points] == rates[:2]


# -- docs ------------------------------------------------------------------------------------

def test_simulate_docs_options_table_is_the_fields():
    doc = (ROOT / "docs" / "simulate.md").read_text()
    table = doc.split("<!-- options:begin", 1)[1].split("-->", 1)[1]
    table = table.split("<!-- options:end -->", 1)[0].strip()
    assert table == options_markdown(SIMULATE_GROUPS)
    parser = argparse.ArgumentParser()
    simulate_cmd.add_arguments(parser)
    flags = {s for a in parser._actions for s in a.option_strings}
    usage = doc.split("## Usage", 1)[1].split("## In `ridgeline plan`", 1)[0]
    usage = usage.replace(table, "")        # the table's help texts quote other tools' flags
    documented = set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*|-o)(?![\w-])", usage))
    assert {"--rps", "--concurrency", "--trace", "--measured", "--json", "-o"} <= documented
    assert documented <= flags, documented - flags
    planning = (ROOT / "docs" / "planning.md").read_text()
    assert "`--fast`" in planning and "`--sim-requests`" in planning
