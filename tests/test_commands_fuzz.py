"""Fuzzed inputs to `report`, `compare` and `plan --profile`: nothing escapes `ridgeline.cli.main`.

A real profile is measured on the CPU through the FakeTimer pipeline (runner ->
fit -> profile.json), given an interconnect section and a datasheet, then mutated
deterministically (seeded): keys deleted; NaN, -5, "x", null, [], {}, 1e30, true,
inf, 0, 10**400 set at random paths; the file truncated; the top level replaced.
Each mutated file goes through the three commands in-process. Every run must
return 0, or a non-zero code with at most one line on stderr (exactly one,
"ridgeline CMD: error: ...", for exit 2); an exception escaping main fails the
test, and every escape is listed. Odd planner flags are fuzzed the same way.

Also here: a closed stdout pipe ends a command quietly, and `--probes` lists.
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest

from ridgeline.cli import main
from ridgeline.errors import RidgelineError
from ridgeline.reports import plots

ROOT = Path(__file__).resolve().parents[1]
SEED = 9
N_PROFILES = 240
N_FLAG_CASES = 60
FIGURES_EVERY = 5          # real figure code on one mutated profile in five (it is the slow part)
ODD_VALUES: tuple[Any, ...] = (float("nan"), -5, "x", None, [], {}, 1e30, True, float("inf"), 0,
                               10**400)
ODD_TOP_LEVELS: tuple[Any, ...] = ([], "x", 5, None, {}, [{"kind": "ridgeline-profile"}])
PLAN_ARGS = ["--model", "tiny", "--input-p95", "256", "--output-p95", "32", "--concurrency", "4"]
# flag -> odd values that parse (argparse errors are argparse's, not ours)
ODD_FLAGS: dict[str, tuple[str, ...]] = {
    "--concurrency": ("0", "-1", "1000000000"),
    "--input-p95": ("0", "-5", "1000000000"),
    "--input-p50": ("0", "-5", "100000"),
    "--output-p95": ("0", "-1"),
    "--output-p50": ("0", "-1", "100000"),
    "--peak-rps": ("nan", "inf", "-1", "0"),
    "--users": ("-1", "0"),
    "--duty-cycle": ("nan", "-1", "2"),
    "--headroom": ("-1", "nan", "inf"),
    "--ttft-slo": ("0", "-1", "nan"),
    "--itl-slo": ("0", "nan", "inf"),
    "--slo-percentile": ("x", "p200"),
    "--gpu-hourly": ("nan", "-1", "inf"),
    "--utilization": ("0", "-1", "nan", "2"),
    "--tp": ("0", "-1", "3", "1024"),
    "--pp": ("0", "-1", "1000"),
    "--pp-microbatches": ("0", "-1"),
    "--gpus-per-node": ("0", "-1"),
    "--memory-fraction": ("0", "nan", "2"),
    "--allocator-allowance": ("nan", "-1", "inf"),
    "--max-batched-tokens": ("0", "-1"),
    "--max-num-seqs": ("0",),
    "--kv-block-tokens": ("0", "1000000000"),
    "--activation-fraction": ("nan", "-1", "inf"),
    "--lora-adapters": ("-1", "1000000"),
    "--lora-rank": ("0", "1000000"),
    "--lora-targets": ("x",),
    "--safety-factor": ("0", "-1", "nan", "inf"),
    "--redundancy": ("-1", "1000000"),
    "--memory-headroom": ("-1", "nan", "inf"),
    "--breaker-fraction": ("0", "-1", "nan", "2"),
    "--max-queue-wait": ("-1", "nan"),
    "--weights": ("int4", "fp3"),
    "--kv": ("fp8", "x"),
    "--activations": ("int8", "x"),
}


# ---------------------------------------------------------------- the measured profile

@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> tuple[dict[str, Any], Path]:
    """A profile from the real pipeline on the CPU (FakeTimer), with the sections a CPU run
    lacks (interconnect, datasheet) added so they get fuzzed too."""
    from ridgeline import datasheets
    from ridgeline.device import cpu_device
    from ridgeline.roofline.profile import load_profile, save_profile
    from ridgeline.runner import run_profile
    from ridgeline.timing import FakeTimer

    device = cpu_device()
    device.l2_cache_bytes = 3 * 4096 * 8
    options = {"hbm": {"sizes": [3 * 4096 * k for k in (5, 40, 80, 160)], "providers": ["torch"]},
               "matmul": {"dtypes": ["fp32", "bf16"],
                          "shapes": [("square", 64, 64, 64), ("square", 128, 128, 128),
                                     ("llm", 16, 96, 64)]},
               "gemv": {"shapes": [[64, 48], [128, 96]], "batches": [1, 2, 4], "dtypes": ["bf16"],
                        "providers": ["torch"]},
               "launch": {"warmup_ms": 1, "rep_ms": 5}}
    out = tmp_path_factory.mktemp("measured")
    profile = run_profile(device, ["hbm", "matmul", "gemv", "launch"], out_dir=out,
                          timer=FakeTimer(bw_GBps=500.0, peak_TFLOPS=2.0, latency_us=2.0),
                          options=options, versions={})
    profile["interconnect"]["allreduce"] = {
        "2": {"alpha_us": 10.0, "busbw_GBps": 40.0, "algbw_GBps": 40.0, "link": "pcie",
              "source": "measured", "status": "verified", "reason": None,
              "spread": {"samples_p20_p80": 0.02, "across_points": 0.01}}}
    profile["interconnect"]["host_link_GBps"] = {"h2d": 25.0, "d2h": 24.0, "source": "measured",
                                                 "latency_us": {"h2d": 8.0, "d2h": 9.0}}
    profile["datasheet"] = {"label": "vendor datasheet (not measured)",
                            **datasheets.by_sku("h100-sxm5-80gb")}
    path = save_profile(profile, out / "profile.json")
    return load_profile(path), path


# ---------------------------------------------------------------- mutations

def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and list indexes) to a node below the top level, in document order."""
    out = []
    items = tree.items() if isinstance(tree, dict) else (
        enumerate(tree) if isinstance(tree, list) else ())
    for key, child in items:
        out.append(prefix + (key,))
        out += _paths(child, prefix + (key,))
    return out


def _apply(profile: dict[str, Any], path: tuple, op: str, value: Any = None) -> None:
    node = profile
    for key in path[:-1]:
        node = node[key]
    if op == "delete":
        del node[path[-1]]
    else:
        node[path[-1]] = value


def mutate(profile: dict[str, Any], rng: random.Random) -> tuple[str, str]:
    """(file text, what was done) of one deterministic mutation of `profile`."""
    roll = rng.random()
    text = json.dumps(profile)
    if roll < 0.06:
        cut = rng.randrange(len(text))
        return text[:cut], f"truncated at {cut} of {len(text)} chars"
    if roll < 0.12:
        top = rng.choice(ODD_TOP_LEVELS)
        return json.dumps(top), f"top level {top!r}"
    p = copy.deepcopy(profile)
    done = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        paths = _paths(p)
        outside = [x for x in paths if x[0] != "records"]
        # the records outnumber everything else: keep most mutations on the fitted sections
        path = rng.choice(outside if rng.random() < 0.75 or len(outside) == len(paths) else paths)
        if rng.random() < 0.3:
            _apply(p, path, "delete")
            done.append(f"del {'.'.join(map(str, path))}")
        else:
            value = rng.choice(ODD_VALUES)
            _apply(p, path, "set", value)
            done.append(f"{'.'.join(map(str, path))} = {value!r:.20}")
        if not p:
            break
    return json.dumps(p), "; ".join(done)  # NaN/Infinity as JSON literals, as json.dumps writes


# ---------------------------------------------------------------- running the CLI

def run_cli(argv: list[str], capsys) -> str | None:
    """None when `main` behaved (see the module docstring); else what went wrong."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        capsys.readouterr()
        return f"SystemExit({exc.code}) escaped"
    except Exception as exc:  # an escape: the finding this test exists for
        capsys.readouterr()
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return (f"{type(exc).__name__}: {str(exc)[:120]} at "
                f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})")
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    if rc != 0 and len(lines) > 1:
        return f"exit {rc} with {len(lines)} lines on stderr: {lines[:3]}"
    if rc == 2 and not (lines and lines[0].startswith(f"ridgeline {argv[0]}: error: ")):
        return f"exit 2 without a one-line error: {lines}"
    if rc not in (0, 1, 2):
        return f"exit {rc}"
    return None


@pytest.fixture
def fast_figures(monkeypatch):
    """Figures drawn but not rasterized (savefig is most of a report's time)."""
    def save(fig, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG fuzz")
        return path

    monkeypatch.setattr(plots, "_save", save)
    real = dict(plots.FIGURES)
    skipped = {name: ((lambda profile, path: None), caption)
               for name, (_draw, caption) in real.items()}
    return lambda on: monkeypatch.setattr(plots, "FIGURES", real if on else skipped)


def test_mutated_profiles_never_escape_main(measured, tmp_path, capsys, fast_figures,
                                            monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    profile, good = measured
    rng = random.Random(SEED)
    failures: list[str] = []
    outcomes = {"report_ok": 0, "report_refused": 0}
    for i in range(N_PROFILES):
        text, what = mutate(profile, rng)
        path = tmp_path / f"p{i}.json"
        path.write_text(text)
        fast_figures(i % FIGURES_EVERY == 0)
        pair = [str(path), str(good)] if i % 2 else [str(good), str(path)]
        runs = [["report", str(path), "-o", str(tmp_path / f"r{i}")],
                ["compare", *pair] + (["--json"] if i % 4 else []),
                ["plan", *PLAN_ARGS, "--profile", str(path), "--json"]
                + (["--allow-unverified"] if i % 5 else [])]
        for argv in runs:
            problem = run_cli(argv, capsys)
            if problem:
                failures.append(f"case {i} ({what}) {argv[0]}: {problem}")
        md = tmp_path / f"r{i}" / "report.md"
        outcomes["report_ok" if md.exists() else "report_refused"] += 1
    assert not failures, f"{len(failures)} escapes:\n" + "\n".join(failures[:25])
    # the fuzz reached both sides: files refused with one line, and files rendered
    assert outcomes["report_ok"] >= N_PROFILES // 5, outcomes
    assert outcomes["report_refused"] >= N_PROFILES // 5, outcomes


def test_odd_planner_flags_never_escape_main(measured, capsys):
    _, good = measured
    rng = random.Random(SEED + 1)
    failures, exits = [], []
    for i in range(N_FLAG_CASES):
        flags = rng.sample(sorted(ODD_FLAGS), rng.choice((1, 1, 2, 3)))
        odd = [x for f in flags for x in (f, rng.choice(ODD_FLAGS[f]))]
        argv = ["plan", *PLAN_ARGS, "--profile", str(good), "--allow-unverified", "--json", *odd]
        problem = run_cli(argv, capsys)
        if problem:
            failures.append(f"case {i} {' '.join(odd)}: {problem}")
    assert not failures, f"{len(failures)} escapes:\n" + "\n".join(failures[:25])


def test_the_unmutated_profile_runs_everywhere(measured, tmp_path, capsys, fast_figures):
    # the baseline the mutations start from: every command succeeds on it
    _, good = measured
    fast_figures(True)
    assert main(["report", str(good), "-o", str(tmp_path)]) == 0
    assert main(["compare", str(good), str(good), "--json"]) == 0
    assert main(["plan", *PLAN_ARGS, "--profile", str(good), "--allow-unverified", "--json"]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "Figure not drawn" not in md


# ---------------------------------------------------------------- pipes and probe lists

def test_a_closed_stdout_pipe_ends_quietly():
    # `ridgeline ... --json | head -1`: the reader is gone before the first write
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "ridgeline", "plan", *PLAN_ARGS, "--gpu", "h100-sxm", "--json"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(write_end)
    assert out.returncode == 1
    assert out.stderr == "", out.stderr  # no traceback, no "Exception ignored" at exit


def test_probe_lists_blank_is_an_error_and_duplicates_drop():
    from ridgeline.probes import DEFAULT_PROBES, parse_probe_list

    for blank in ("", "  ", " , ,"):
        with pytest.raises(RidgelineError, match="names no probe"):
            parse_probe_list(blank)
    assert parse_probe_list("hbm,matmul,hbm, matmul ,gemv") == ["hbm", "matmul", "gemv"]
    defaults = parse_probe_list(None)  # not given: every default probe this build has
    assert "hbm" in defaults and set(defaults) <= set(DEFAULT_PROBES)
