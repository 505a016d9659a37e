"""`ridgeline validate` end to end on the CPU with the tiny model, and its input errors."""

import json
import re

import pytest

from ridgeline.cli import main
from ridgeline.validation import measure
from ridgeline.validation.measure import PAIRED_ROUNDS, paired_difference_ms
from tests.profile_fixtures import synthetic_cpu_profile

DOCUMENTED_KEYS = {"kind", "model", "weights", "device", "profile", "layers_measured",
                   "layers_total", "scaled", "points", "summary"}
POINT_KEYS = {"phase", "mode", "batch", "context", "measured_s", "predicted_profile_s",
              "predicted_datasheet_s", "error_profile", "error_datasheet", "bound"}
SUMMARY_KEYS = {"median_error_profile", "worst_error_profile", "median_error_datasheet",
                "worst_error_datasheet"}
FAST = ["--device", "cpu", "--model", "tiny", "--rep-ms", "5", "--passes", "1"]


def cpu_profile(path):
    """The synthetic CPU profile (tests.profile_fixtures), saved at `path`."""
    from ridgeline.roofline.profile import save_profile

    return save_profile(synthetic_cpu_profile(), path)


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    return cpu_profile(tmp_path_factory.mktemp("prof") / "profile.json")


@pytest.fixture(scope="module")
def run_cpu(tmp_path_factory, profile_path):
    out = tmp_path_factory.mktemp("val")
    rc = main(["validate", *FAST, "--batch", "1,3", "--context", "9", "--prefill", "7",
               "--profile", str(profile_path), "-o", str(out)])
    return rc, out


def test_end_to_end_writes_the_documented_files(run_cpu):
    rc, out = run_cpu
    assert rc == 0
    data = json.loads((out / "validation.json").read_text())
    assert DOCUMENTED_KEYS <= set(data)
    assert data["kind"] == "ridgeline-validation" and data["model"] == "tiny"
    assert data["weights"] == "bf16" and data["layers_total"] == 2
    assert data["layers_measured"] == 2 and data["scaled"] is False and data["complete"]
    pts = data["points"]
    assert [(p["phase"], p["batch"], p["context"]) for p in pts] == [
        ("decode", 1, 9), ("decode", 3, 9), ("prefill", 1, 7)]
    for p in pts:
        assert POINT_KEYS <= set(p)
        assert p["mode"] == "eager" and p["measured_s"] > 0 and p["predicted_profile_s"] > 0
        assert p["error_profile"] == pytest.approx(
            abs(p["predicted_profile_s"] - p["measured_s"]) / p["measured_s"], rel=1e-12)
        assert p["predicted_datasheet_s"] is None and p["error_datasheet"] is None  # the CPU
        assert p["bound"] in ("memory", "compute", "latency")
    for phase in ("decode", "prefill"):
        assert SUMMARY_KEYS <= set(data["summary"][phase])
    errs = sorted(p["error_profile"] for p in pts if p["phase"] == "decode")
    assert data["summary"]["decode"]["worst_error_profile"] == errs[-1]
    median = data["summary"]["decode"]["median_error_profile"]
    assert median == pytest.approx((errs[0] + errs[1]) / 2)
    # graph mode is waived on the CPU, with the reason, for every point
    graph = [s for s in data["skipped"] if s["mode"] == "graph"]
    assert len(graph) == 3 and all("GPU" in s["reason"] for s in graph)
    assert (out / "validation.png").stat().st_size > 1000
    md = (out / "validation.md").read_text()
    # a point whose samples scatter at this tiny budget is marked, never dropped
    assert re.search(r"\| decode b=3 ctx=9( \(noisy\))? \| eager \|", md)
    assert "validation.png" in md


@pytest.mark.parametrize("argv,needle", [
    (["--model", "no-such-model"], "no-such-model"),
    (["--batch", "0"], "--batch"),
    (["--batch", "1,x"], "--batch"),
    (["--context", "-3"], "--context"),
    (["--layers", "0"], "--layers"),
    (["--weights", "int3"], "--weights"),
    (["--model", "mixtral-8x7b"], "dense"),
    (["--model", "llama-2-7b", "--context", "100000"], "context window of 4096"),
    (["--model", "llama-2-7b", "--context", "1024", "--prefill", "8192"], "--prefill 8192"),
    (["--tp", "3"], "--tp 3: tiny cannot be sharded: 4 attention heads do not split over 3"),
    (["--tp", "0"], "--tp"),
    (["--tp", "2", "--device", "cuda:1"], "not cuda:1"),
    (["--tp", "2", "--timeout-s", "-1"], "--timeout-s"),
    (["--passes", "0"], "--passes must be positive"),
    (["--passes", "two"], "--passes takes a positive number"),
    (["--tp", "2", "--passes", "2"], "--passes applies to one device"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, profile_path, tmp_path, capsys):
    rc = main(["validate", "--device", "cpu", "--model", "tiny", "--profile", str(profile_path),
               "-o", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("ridgeline validate: error:")
    assert needle in err
    assert not (tmp_path / "validation.json").exists()


def test_missing_profile_says_run_profile_first(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no ./ridgeline-out/profile.json here
    rc = main(["validate", *FAST])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "ridgeline profile" in err and "--profile" in err


def test_fp8_on_the_cpu_is_waived_with_its_reason(profile_path, tmp_path):
    rc = main(["validate", *FAST, "--weights", "fp8", "--batch", "1", "--context", "5",
               "--prefill", "none", "--profile", str(profile_path), "-o", str(tmp_path), "--json"])
    data = json.loads((tmp_path / "validation.json").read_text())
    assert rc == 0 and data["points"] == [] and "fp8" in data["waived"]
    assert data["skipped"][0]["reason"] == data["waived"]


def test_ctrl_c_keeps_finished_points(profile_path, tmp_path, monkeypatch, capsys):
    real = measure.Bench.run_point
    calls = []

    def interrupted_second_time(self, point, layers, modes):
        calls.append(point)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, point, layers, modes)

    monkeypatch.setattr(measure.Bench, "run_point", interrupted_second_time)
    rc = main(["validate", *FAST, "--batch", "1,2", "--context", "4", "--prefill", "none",
               "--profile", str(profile_path), "-o", str(tmp_path), "--json"])
    data = json.loads(capsys.readouterr().out)  # --json prints the document
    assert rc == 130
    assert data["complete"] is False and [p["batch"] for p in data["points"]] == [1]
    assert json.loads((tmp_path / "validation.json").read_text())["points"] == data["points"]
    assert any("interrupted" in n for n in data["notes"])


def test_a_failing_point_is_recorded_not_raised(profile_path, tmp_path, monkeypatch):
    from ridgeline.validation.transformer import DecoderModel

    real = DecoderModel.forward

    def fails_at_batch_2(self, tokens, cache, *a, **k):
        if tokens.shape[0] == 2:
            raise RuntimeError("no kernel image for this shape")
        return real(self, tokens, cache, *a, **k)

    monkeypatch.setattr(DecoderModel, "forward", fails_at_batch_2)
    rc = main(["validate", *FAST, "--batch", "1,2", "--context", "4", "--prefill", "none",
               "--profile", str(profile_path), "-o", str(tmp_path)])
    data = json.loads((tmp_path / "validation.json").read_text())
    assert rc == 0 and [p["batch"] for p in data["points"]] == [1]
    failed = [s for s in data["skipped"] if s["mode"] == "eager"]
    assert failed == [{"phase": "decode", "mode": "eager", "batch": 2, "context": 4,
                       "reason": "failed (RuntimeError): no kernel image for this shape"}]


def test_documented_options_exist():
    import re
    from pathlib import Path

    from ridgeline.cli import build_parser

    doc = (Path(__file__).parent.parent / "docs" / "validation.md").read_text()
    documented = set(re.findall(r"^\| `(-{1,2}[a-z-]+)", doc, flags=re.M))
    sub = build_parser()._subparsers._group_actions[0].choices["validate"]
    flags = {s for a in sub._actions for s in a.option_strings}
    assert documented and documented <= flags
    assert flags - {"-h", "--help", "--output"} <= documented


def test_layers_cap_scales_to_the_full_depth(profile_path, tmp_path):
    rc = main(["validate", *FAST, "--batch", "2", "--context", "8", "--prefill", "none",
               "--layers", "1", "--profile", str(profile_path), "-o", str(tmp_path)])
    data = json.loads((tmp_path / "validation.json").read_text())
    assert rc == 0
    assert data["scaled"] is True and data["layers_measured"] == 1 and data["layers_total"] == 2
    (p,) = data["points"]
    head = p["timing_head"]["time_ms_median"] * 1e-3
    # step and head are timed in alternating rounds; the median of the rounds' differences
    # is what is scaled (a drift between two back-to-back timings would land 2x, or 32x)
    layers = p["timing_head"]["step_minus_head_ms"] * 1e-3
    assert p["scaled"] and p["layers_measured"] == 1
    assert p["measured_s"] == pytest.approx(head + max(layers, 0.0) * 2, rel=1e-12)
    assert p["timing"]["n_samples"] >= PAIRED_ROUNDS  # at least one step sample per round, kept


def test_paired_difference_is_the_median_of_the_rounds_differences():
    # a drift that slows both step and head in round 3 cancels in its difference
    step, head = [10.0, 10.2, 15.1, 9.9, 10.1], [6.0, 6.1, 11.0, 6.0, 6.1]
    assert paired_difference_ms(step, head) == pytest.approx(4.0)
    assert paired_difference_ms([5.0, 7.0], [1.0, 1.0]) == pytest.approx(5.0)
    assert paired_difference_ms([], []) == 0.0



def test_a_scattered_point_is_measured_again_and_marked_noisy_if_it_stays(profile_path, tmp_path,
                                                                           monkeypatch, capsys):
    """Spread above 10%: one more attempt, the quieter kept; still above: kept and marked."""
    real = measure.Bench._measure
    spreads = {1: [0.30, 0.05], 2: [0.40, 0.25]}   # batch -> the spread of each attempt

    def scattered(self, point, layers, mode, tokens, cache):
        m = real(self, point, layers, mode, tokens, cache)
        m.spread = spreads[point.batch].pop(0)
        return m

    monkeypatch.setattr(measure.Bench, "_measure", scattered)
    rc = main(["validate", *FAST, "--batch", "1,2", "--context", "4", "--prefill", "none",
               "--profile", str(profile_path), "-o", str(tmp_path)])
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "validation.json").read_text())
    assert rc == 0 and spreads == {1: [], 2: []}   # each point measured exactly twice
    quiet, noisy = data["points"]
    assert (quiet["attempts"], quiet["spread"], quiet["noisy"]) == (2, 0.05, False)
    assert (noisy["attempts"], noisy["spread"], noisy["noisy"]) == (2, 0.25, True)
    assert data["summary"]["decode"]["n_noisy"] == 1
    assert data["summary"]["decode"]["n_points"] == 2   # a noisy point is counted, not dropped
    assert "1 noisy" in out and "(noisy)" in out


def test_a_quiet_point_is_measured_once(run_cpu):
    rc, out = run_cpu
    data = json.loads((out / "validation.json").read_text())
    for p in data["points"]:
        assert p["attempts"] == 1 or p["spread"] is not None
        assert isinstance(p["spread"], float) and p["noisy"] == (p["spread"] > 0.10)


# ---------------------------------------------------------------- -o never loses data

FP8_WAIVED = [*FAST, "--weights", "fp8", "--batch", "1", "--context", "5", "--prefill", "none"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ridgeline validate: error:"), err
    return err[0]


@pytest.fixture
def nothing_measured(monkeypatch):
    def measured(*a, **k):
        raise AssertionError("measured before the output folder was checked")

    monkeypatch.setattr("ridgeline.device.get_device", measured)
    monkeypatch.setattr("ridgeline.validation.run.measure_points", measured)


def test_output_file_is_one_line_before_measuring(profile_path, tmp_path, capsys,
                                                  nothing_measured):
    target = tmp_path / "results.json"
    target.write_text("mine")
    rc = main(["validate", *FAST, "--profile", str(profile_path), "-o", str(target)])
    assert rc == 2 and "is a file; -o takes a folder" in error_line(capsys)
    assert target.read_text() == "mine"
    rc = main(["validate", *FAST, "--profile", str(profile_path), "-o", str(target / "sub")])
    assert rc == 2 and "Not a directory" in error_line(capsys)


def test_a_validation_is_not_replaced_without_force(profile_path, tmp_path, capsys,
                                                    nothing_measured):
    (tmp_path / "validation.json").write_text(json.dumps(
        {"kind": "ridgeline-validation", "model": "tiny",
         "provenance": {"timestamp_utc": "2020-01-01T00:00:00+00:00"}}))
    rc = main(["validate", *FAST, "--profile", str(profile_path), "-o", str(tmp_path)])
    line = error_line(capsys)
    assert rc == 2 and "already holds a validation" in line and "2020-01-01" in line
    assert "--force" in line


def test_force_replaces_the_validation_and_only_it(tmp_path, capsys):
    profile = cpu_profile(tmp_path / "profile.json")  # validate beside its own profile
    before = profile.read_text()
    for name, text in (("validation.json", "{}"), ("validation.png", "stale plot"),
                       ("notes.txt", "mine")):
        (tmp_path / name).write_text(text)
    rc = main(["validate", *FP8_WAIVED, "--profile", str(profile), "-o", str(tmp_path), "--force"])
    assert rc == 0
    data = json.loads((tmp_path / "validation.json").read_text())
    assert data["kind"] == "ridgeline-validation" and data["points"] == []
    # the waived run draws no plot: the old one must not sit beside the new result
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".ridgeline.lock", "notes.txt", "profile.json", "validation.json", "validation.md"])
    assert profile.read_text() == before


def test_a_full_disk_keeps_the_old_validation_and_is_one_line(profile_path, tmp_path, capsys,
                                                               monkeypatch):
    import errno
    import os

    from ridgeline import outputs

    (tmp_path / "validation.json").write_text('{"old": true}')

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs, "_write_all", full)
    rc = main(["validate", *FP8_WAIVED, "--profile", str(profile_path), "-o", str(tmp_path),
               "--force"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"ridgeline validate: error: cannot write "
                                            f"{tmp_path / 'validation.json'}: "
                                            "No space left on device")
    assert (tmp_path / "validation.json").read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ridgeline.lock", "validation.json"]


def test_a_folder_in_use_is_refused(profile_path, tmp_path, capsys, nothing_measured):
    from ridgeline.outputs import prepare_output_dir

    with prepare_output_dir(tmp_path, force=False, what="profile"):  # a profile run, mid-sweep
        rc = main(["validate", *FAST, "--profile", str(profile_path), "-o", str(tmp_path)])
    assert rc == 2 and "in use by another ridgeline run" in error_line(capsys)


# ---------------------------------------------------------------- --tp N (2 gloo ranks)

TP_FIT = {"alpha_us": 40.0, "busbw_GBps": 2.0, "algbw_GBps": 2.0, "link": "loopback",
          "source": "measured", "dtype": "fp32", "backend": "gloo", "status": "verified",
          "reason": None}
TP_POINT_KEYS = POINT_KEYS | {"tp", "allreduce_s", "allreduce_share", "measured_no_allreduce_s",
                              "allreduce_alone_s", "predicted_allreduce_s",
                              "predicted_allreduce_share", "allreduce_source"}


def tp_profile(path, world_sizes):
    """cpu_profile with a fitted gloo all-reduce for each of `world_sizes`."""
    from ridgeline.roofline.profile import load_profile, save_profile

    prof = load_profile(cpu_profile(path))
    prof["interconnect"] = {"allreduce": {str(n): dict(TP_FIT) for n in world_sizes}}
    return save_profile(prof, path)


def test_tp_2_on_the_cpu_measures_and_predicts_the_all_reduce_share(tmp_path, capsys):
    # the profile has a fit for 4 ranks only: said so, the planner's estimate used, measured
    profile = tp_profile(tmp_path / "profile.json", [4])
    out = tmp_path / "val"
    rc = main(["validate", *FAST, "--tp", "2", "--batch", "1,3", "--context", "9", "--prefill",
               "7", "--profile", str(profile), "-o", str(out), "--json"])
    printed = json.loads(capsys.readouterr().out)
    data = json.loads((out / "validation.json").read_text())
    assert rc == 0 and printed == data
    assert data["tp"] == 2 and data["backend"] == "gloo" and data["complete"]
    assert data["check_error"] < 0.04
    assert [(p["phase"], p["batch"], p["context"]) for p in data["points"]] == [
        ("decode", 1, 9), ("decode", 3, 9), ("prefill", 1, 7)]
    for p in data["points"]:
        assert TP_POINT_KEYS <= set(p) and p["tp"] == 2 and p["mode"] == "eager"
        assert p["measured_s"] > 0 and p["predicted_profile_s"] > 0
        assert p["allreduce_s"] == pytest.approx(
            max(p["measured_s"] - p["measured_no_allreduce_s"], 0.0), rel=1e-9, abs=1e-12)
        assert p["allreduce_share"] == pytest.approx(p["allreduce_s"] / p["measured_s"])
        assert 0 < p["predicted_allreduce_share"] < 1 and p["allreduce_alone_s"] > 0
        assert p["predicted_allreduce_share"] == pytest.approx(
            p["predicted_allreduce_s"] / p["predicted_profile_s"])
        assert p["allreduce_source"] == "estimated"
    assert any("no all-reduce fit for 2 ranks" in n and "estimate" in n for n in data["notes"])
    assert any("checked against the unsharded layer" in n for n in data["notes"])
    assert set(data["summary_allreduce"]) == {"decode", "prefill"}
    md = (out / "validation.md").read_text()
    assert "TP=2 (gloo)" in md and "all-reduce share" in md

    from rich.console import Console

    from ridgeline.validation.output import print_result

    console = Console(record=True, width=220)
    print_result(data, console)
    text = console.export_text()
    assert "all-reduce share" in text and "TP=2" in text
    assert "decode all-reduce (eager, 2 points): share of the step measured median" in text


def test_tp_rank_that_dies_is_one_line_and_keeps_the_finished_points(tmp_path, capsys,
                                                                      monkeypatch):
    import functools

    from ridgeline.validation import run as vrun

    monkeypatch.setattr(vrun, "validate_tp", functools.partial(
        vrun.validate_tp, fault={"rank": 1, "kind": "kill", "at": "after_point"}))
    profile = tp_profile(tmp_path / "profile.json", [2])
    out = tmp_path / "val"
    rc = main(["validate", *FAST, "--tp", "2", "--batch", "1,2", "--context", "5", "--prefill",
               "none", "--profile", str(profile), "-o", str(out)])
    line = error_line(capsys)
    assert rc == 2 and "rank 1 died (signal SIGKILL)" in line and "killed all ranks" in line
    assert "1 finished point(s) are in" in line
    data = json.loads((out / "validation.json").read_text())
    assert data["complete"] is False and [p["batch"] for p in data["points"]] == [1]


def test_tp_under_torchrun(tmp_path):
    """The same command started by torchrun: each process is a rank, rank 0 writes."""
    import os
    import subprocess
    import sys

    from ridgeline.ranks import free_port

    profile = tp_profile(tmp_path / "profile.json", [2])
    out = tmp_path / "val"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(free_port()), "-m", "ridgeline", "validate", *FAST, "--tp", "2",
         "--batch", "2", "--context", "6", "--prefill", "none", "--profile", str(profile),
         "-o", str(out), "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((out / "validation.json").read_text())
    assert json.loads(proc.stdout) == data  # rank 0 printed it, the other rank nothing
    (p,) = data["points"]
    assert data["tp"] == 2 and p["allreduce_source"] == "measured" and p["allreduce_s"] >= 0
    assert any("the profile's fit for 2 ranks" in n for n in data["notes"])


def test_the_cpu_measures_every_point_in_three_passes_by_default(profile_path, tmp_path):
    out = tmp_path / "val"
    argv = [a for a in FAST if a not in ("--passes", "1")]
    rc = main(["validate", *argv, "--batch", "2", "--context", "5", "--prefill", "3",
               "--profile", str(profile_path), "-o", str(out)])
    assert rc == 0
    data = json.loads((out / "validation.json").read_text())
    assert data["provenance"]["passes"] == 3
    assert data["provenance"]["statistic"] == "median of samples, median of 3 passes"
    for p in data["points"]:
        assert len(p["passes_s"]) == 3
        assert p["measured_s"] == pytest.approx(sorted(p["passes_s"])[1], rel=1e-12)
        assert p["attempts"] >= 3
    assert "--passes" not in data["provenance"]["command_line"]
    assert "statistic: median of samples, median of 3 passes" in (out / "validation.md").read_text()
    rc = main(["validate", *argv, "--passes", "2", "--batch", "2", "--context", "5",
               "--prefill", "none", "--profile", str(profile_path), "-o", str(tmp_path / "two")])
    data = json.loads((tmp_path / "two" / "validation.json").read_text())
    assert rc == 0 and data["provenance"]["passes"] == 2
    cmd = data["provenance"]["command_line"]
    assert cmd[cmd.index("--passes") + 1] == "2"
