"""`ridgeline plan` end to end: JSON on a synthetic profile, datasheet fallback, errors, TOML."""

import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from profile_fixtures import VERIFIED, synthetic_profile  # noqa: F401 (VERIFIED: tests below)

from ridgeline.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
ISSUE_ARGS = ["--model", "llama-3.1-70b", "--weights", "fp8", "--kv", "fp8", "--input-p95", "8192",
              "--output-p95", "512", "--concurrency", "50", "--peak-rps", "120", "--ttft-slo", "2",
              "--itl-slo", "0.05", "--gpu-hourly", "2.5"]
SECTIONS = ("memory", "performance", "parallelism", "operating_point", "fleet")




@pytest.fixture
def prof(tmp_path):
    return str(synthetic_profile(tmp_path / "profile.json"))


def run_json(capsys, argv):
    assert main(["plan", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_json_on_a_measured_profile(capsys, prof):
    plan = run_json(capsys, [*ISSUE_ARGS, "--profile", prof])
    assert plan["kind"] == "ridgeline-plan" and plan["basis"] == "measured"
    assert plan["hardware"]["name"] == "NVIDIA H100 80GB HBM3"
    assert plan["memory"]["kv_bytes_per_token"] == 163_840
    assert plan["memory"]["kv_bytes"] == 50 * 8704 * 163_840
    assert plan["fleet"]["feasible"] and plan["fleet"]["gpus_deployed"] >= 4
    assert plan["performance"]["allreduce_source"] in ("measured", "n/a")
    assert all(plan[k]["basis"] == "measured" for k in SECTIONS)


def test_gpu_without_profile_falls_back_to_the_datasheet_labelled_everywhere(capsys):
    plan = run_json(capsys, [*ISSUE_ARGS, "--gpu", "h100-sxm"])
    assert plan["basis"] == "datasheet" and plan["basis_label"] == "DATASHEET"
    assert all(plan[k]["basis"] == "datasheet" for k in SECTIONS)
    assert "DATASHEET" in plan["warnings"][0]
    # x the H100 SXM's published fraction (Azure's BabelStream Dot, 0.949), never 100%
    assert plan["performance"]["bandwidth_GBps"] == pytest.approx(3350 * 0.949)
    assert any(n.startswith("derated: ") and "x0.949" in n for n in plan["notes"])
    sheet = run_json(capsys, [*ISSUE_ARGS, "--gpu", "h100-sxm", "--no-derate"])
    assert sheet["performance"]["bandwidth_GBps"] == 3350
    assert any(n.startswith("NOT derated") for n in sheet["notes"])
    assert main(["plan", *ISSUE_ARGS, "--gpu", "h100-sxm"]) == 0
    text = capsys.readouterr().out
    titles = re.findall(r"^\s*\d[ab]?\. .*$", text, flags=re.M)
    assert len(titles) == 6 and all("[DATASHEET]" in t for t in titles)


def test_compare_datasheet_side_by_side(capsys, prof):
    plan = run_json(capsys, [*ISSUE_ARGS, "--profile", prof, "--compare-datasheet"])
    cmp = plan["comparison"]
    assert cmp["datasheet"]["source"] == "datasheet"
    rows = {r["quantity"]: r for r in cmp["differences"]}
    bw = rows["memory bandwidth (GB/s)"]
    # the datasheet side is what a --gpu plan prices: derated, and the plan says so
    assert bw["measured"] == 3000 and bw["datasheet"] == pytest.approx(3350 * 0.949)
    assert bw["ratio"] == pytest.approx(3350 * 0.949 / 3000)
    assert cmp["datasheet"]["derated"] is True
    assert any(n.startswith("--compare-datasheet compares against the datasheet x published")
               for n in plan["notes"])
    plain = run_json(capsys, [*ISSUE_ARGS, "--profile", prof, "--compare-datasheet",
                              "--no-derate"])["comparison"]
    assert plain["datasheet"]["derated"] is False
    assert {r["quantity"]: r for r in plain["differences"]}[
        "memory bandwidth (GB/s)"]["datasheet"] == 3350
    assert any(q.startswith("decode step at batch") for q in rows)
    assert main(["plan", *ISSUE_ARGS, "--profile", prof, "--compare-datasheet"]) == 0
    assert "against the datasheet" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--model", "tiny", "--input-p95", "-5", "--output-p95", "8", "--concurrency", "1",
      "--gpu", "h100"], "input-p95"),
    (["--model", "gpt-17", "--input-p95", "5", "--output-p95", "8", "--concurrency", "1",
      "--gpu", "h100"], "unknown model"),
    (["--model", "tiny", "--weights", "fp8", "--activations", "fp8", "--input-p95", "5",
      "--output-p95", "8", "--concurrency", "1", "--gpu", "a100-sxm4"], "not supported"),
    (["--model", "tiny", "--input-p95", "5", "--output-p95", "8", "--concurrency", "1"],
     "no hardware"),
    (["--model", "tiny", "--input-p95", "5", "--output-p95", "8", "--concurrency", "1",
      "--gpu", "h100", "--profile", "x.json"], "not both"),
    (["--model", "tiny", "--input-p95", "5", "--output-p95", "8", "--gpu", "h100"], "no load"),
    (["--model", "tiny", "--input-p95", "5", "--output-p95", "8", "--concurrency", "1",
      "--gpu", "tpu-v9"], "unknown GPU"),
    (["--model", "tiny", "--weights", "fp3", "--input-p95", "5", "--output-p95", "8",
      "--concurrency", "1", "--gpu", "h100"], "weight dtype"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_a_model_that_fits_on_no_count_of_gpus(capsys, tmp_path):
    p = str(synthetic_profile(tmp_path / "p.json", memory_bytes=100_000_000))
    assert main(["plan", *ISSUE_ARGS, "--profile", p]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "fits on no count of GPUs" in err


NOISY = {"status": "noisy", "reason": "samples scatter 14% after re-measuring", "spread": {}}


def test_untrusted_ceilings_are_refused_in_one_line(capsys, tmp_path):
    p = str(synthetic_profile(tmp_path / "p.json", bf16_status=NOISY))
    assert main(["plan", *ISSUE_ARGS, "--profile", p]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "bf16 matmul noisy: samples scatter 14% after re-measuring" in err
    assert "--allow-unverified" in err and "fp8_e4m3 matmul" not in err  # only the untrusted


def test_allow_unverified_plans_and_names_them(capsys, tmp_path):
    p = str(synthetic_profile(tmp_path / "p.json", bf16_status=NOISY))
    plan = run_json(capsys, [*ISSUE_ARGS, "--profile", p, "--allow-unverified"])
    assert plan["basis"] == "measured" and plan["fleet"]["gpus_deployed"] >= 4
    assert any(w.startswith("planning with ceilings that are not verified: bf16 matmul noisy")
               for w in plan["warnings"])
    assert main(["plan", *ISSUE_ARGS, "--profile", p, "--allow-unverified"]) == 0
    assert "bf16 matmul noisy" in capsys.readouterr().out
    # a workload file may set it too
    toml = tmp_path / "w.toml"
    toml.write_text(f"allow_unverified = true\nprofile = {p!r}\n")
    assert run_json(capsys, [*ISSUE_ARGS, "--workload", str(toml)])["basis"] == "measured"


def test_profiles_without_statuses_count_as_unverified(capsys, tmp_path):
    path = synthetic_profile(tmp_path / "p.json")
    old = json.loads(path.read_text())
    for key in ("memory_bandwidth_detail", "matmul_detail"):
        del old["ceilings"][key]
    path.write_text(json.dumps(old))
    assert main(["plan", *ISSUE_ARGS, "--profile", str(path)]) == 2
    err = capsys.readouterr().err
    assert "read bandwidth, bf16 matmul, fp8_e4m3 matmul unverified: measured before" in err


def test_a_datasheet_is_never_refused(capsys):
    plan = run_json(capsys, [*ISSUE_ARGS, "--gpu", "h100-sxm"])
    assert not any("not verified" in w for w in plan["warnings"])


def test_kv_dtype_the_profile_lacks(capsys, tmp_path):
    p = str(synthetic_profile(tmp_path / "p.json", fp8=False))
    plan = run_json(capsys, [*ISSUE_ARGS, "--profile", p])   # fp8 KV is storage: allowed
    assert plan["precision"]["kv_cache"] == "fp8" and plan["precision"]["gemm_dtype"] == "bf16"
    assert main(["plan", *ISSUE_ARGS, "--activations", "fp8", "--profile", p]) == 2
    assert "activation dtype fp8 is not supported" in capsys.readouterr().err


def test_workload_file_and_flag_override(capsys, tmp_path):
    toml = tmp_path / "chat.toml"
    toml.write_text(textwrap.dedent("""
        model = "llama-3.1-70b"
        [precision]
        weights = "fp8"
        kv = "fp8"
        [workload]
        input_p95 = 8192
        output-p95 = 512
        concurrency = 50
        peak_rps = 120
        [slo]
        ttft_slo = 2
        itl_slo = 0.05
        gpu_hourly = 2.5
        utilization = 0.6
        [hardware]
        gpu = "h100-sxm"
        """))
    plan = run_json(capsys, ["--workload", str(toml)])
    assert plan["workload"]["concurrency"] == 50 and plan["slo"]["utilization"] == 0.6
    assert plan["precision"]["kv_cache"] == "fp8"
    plan = run_json(capsys, ["--workload", str(toml), "--concurrency", "10"])
    assert plan["workload"]["concurrency"] == 10
    toml.write_text('model = "tiny"\ninput_p95 = 10\nouput_p95 = 4\n')
    assert main(["plan", "--workload", str(toml)]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_documented_plan_flags_exist():
    doc = (ROOT / "docs" / "planning.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["plan"]
    flags = {s for a in sub._actions for s in a.option_strings}
    documented = set(re.findall(r"(--[a-z][a-z0-9-]+)", doc))
    assert documented and documented <= flags, documented - flags


def test_planning_does_not_import_torch(prof):
    code = textwrap.dedent(f"""
        import sys
        import ridgeline.sizing
        from ridgeline.cli import main
        rc = main(["plan", "--model", "mixtral-8x7b", "--input-p95", "512", "--output-p95", "64",
                   "--concurrency", "8", "--ttft-slo", "1", "--itl-slo", "0.1",
                   "--profile", {prof!r}, "--compare-datasheet"])
        assert rc == 0, rc
        loaded = [m for m in ("torch", "triton") if m in sys.modules]
        assert not loaded, loaded
        print("clean")
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("clean")


def test_plan_help_through_python_m_never_imports_torch(tmp_path):
    """`python -m ridgeline plan --help` builds every command's parser (ridgeline.cli imports
    each command module) yet loads no measuring module. A sitecustomize on the path writes
    sys.modules at interpreter exit, after argparse's SystemExit."""
    listing = tmp_path / "modules.txt"
    (tmp_path / "sitecustomize.py").write_text(
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(listing)!r}, 'w').write('\\n'.join(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-m", "ridgeline", "plan", "--help"],
                         capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--model" in out.stdout and "--profile" in out.stdout
    modules = set(listing.read_text().split())
    assert {"ridgeline.commands.plan", "ridgeline.commands.validate",
            "ridgeline.commands.profile"} <= modules
    measuring = sorted(m for m in modules if m.split(".")[0] in ("torch", "triton", "pynvml"))
    assert not measuring, measuring


# -- issue 11: the planner's correctness gaps ------------------------------------------------

SMALL = ["--model", "llama-3.1-8b", "--input-p95", "1000", "--output-p95", "200"]


def one_line_error(capsys, argv, *needles):
    assert main(["plan", *argv]) == 2
    out = capsys.readouterr()
    err = out.err.strip()
    assert len(err.splitlines()) == 1 and not out.out, (out.out[:500], err)
    for needle in needles:
        assert needle in err, err
    return err


def test_max_num_seqs_caps_concurrency(capsys):
    argv = ["--model", "mixtral-8x7b", "--input-p95", "512", "--output-p95", "128",
            "--concurrency", "2000", "--gpu", "h100-sxm", "--tp", "8"]
    op = run_json(capsys, argv)["operating_point"]
    assert op["max_concurrency_memory"] > 1000
    assert op["max_concurrency_capacity"] == 256 and op["concurrency"] <= 256
    assert "--max-num-seqs" in op["binding"]
    op = run_json(capsys, [*argv, "--max-num-seqs", "64"])["operating_point"]
    assert op["max_concurrency_capacity"] == 64 and op["concurrency"] <= 64


def test_an_infeasible_slo_exits_non_zero_with_one_line(capsys):
    one_line_error(capsys, [*SMALL, "--concurrency", "4", "--itl-slo", "0.0001", "--gpu",
                            "h100-sxm"], "ITL SLO", "cannot be met")


def test_an_absurd_peak_rps_is_refused(capsys):
    one_line_error(capsys, [*SMALL, "--peak-rps", "1e12", "--gpu", "h100-sxm"], "GPUs",
                   "--peak-rps")


@pytest.mark.parametrize("name", ["gb200", "gh200"])
def test_unknown_gpu_is_an_error_not_another_sku(capsys, name):
    one_line_error(capsys, [*SMALL, "--concurrency", "4", "--gpu", name], f"unknown GPU '{name}'",
                   "did you mean")


def test_workload_file_gpu_and_profile_flag(capsys, tmp_path, prof):
    toml = tmp_path / "w.toml"
    toml.write_text('model = "llama-3.1-8b"\ninput_p95 = 1000\noutput_p95 = 200\n'
                    'concurrency = 4\n[hardware]\ngpu = "h100-sxm"\n')
    assert run_json(capsys, ["--workload", str(toml)])["basis"] == "datasheet"
    plan = run_json(capsys, ["--workload", str(toml), "--profile", prof])
    assert plan["basis"] == "measured"                      # the flag overrides the file
    toml.write_text(toml.read_text().replace('gpu = "h100-sxm"', f"profile = {prof!r}"))
    assert run_json(capsys, ["--workload", str(toml), "--gpu", "h100-sxm"])["basis"] == "datasheet"
    one_line_error(capsys, ["--workload", str(toml), "--gpu", "h100-sxm", "--profile", prof],
                   "not both")


WIDE_CASES = {
    "dense": [*ISSUE_ARGS, "--gpu", "h100-sxm"],
    "moe": ["--model", "mixtral-8x7b", "--input-p95", "4096", "--output-p95", "512",
            "--concurrency", "32", "--ttft-slo", "2", "--itl-slo", "0.05", "--gpu", "h100-sxm"],
    "pp": ["--model", "llama-3.1-405b", "--input-p95", "8192", "--output-p95", "512",
           "--concurrency", "8", "--gpu", "h100-sxm"],
    "compare": [*ISSUE_ARGS, "--compare-datasheet"],
    "static": ["--model", "llama-3.1-70b", "--gpu", "h100-sxm", "--static-batch", "64",
               "--input-len", "2048", "--output-len", "512"],
}


@pytest.mark.parametrize("case", sorted(WIDE_CASES))
def test_plan_tables_fit_80_columns(capsys, monkeypatch, prof, case):
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    from ridgeline.sizing import render

    monkeypatch.setenv("COLUMNS", "80")
    argv = WIDE_CASES[case] + (["--profile", prof] if case == "compare" else [])
    assert main(["plan", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    plan = run_json(capsys, argv)
    if case == "static":
        tables = [render.static_batch_table(plan)]
    else:
        tables = [t for t in render.plan_renderables(plan) if isinstance(t, Table)]
        assert len(tables) >= 6
    console = Console(width=80, file=io.StringIO())
    for t in tables:   # no column needs more than 80 columns to show its cells whole
        assert Measurement.get(console, console.options, t).minimum <= 80, t.title
