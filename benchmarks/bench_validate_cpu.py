"""Predicted against measured on the one device every machine has: the CPU.

Profiles this machine (the full CPU sweep, attention/moe/dequant efficiencies included),
then runs `ridgeline validate --device cpu` on it at once, for the tiny test model and for
one decoder layer of Llama-3.1-8B scaled to its 32 (issue 13's two commands), and reports
the median and worst relative error of decode and prefill (eager, host clock):

    error = |predicted - measured| / measured     over the points of `validate`'s default grid

Target (issue 13): median <= 10%, worst <= 20% for each phase of each model. Not met yet
(see docs/validation.md, "The CPU"), so the target is an expected failure: the numbers
are printed and kept in the benchmark's extra_info either way, and an XPASS says it is
met. Needs a quiet machine: the CPU's memory bandwidth drifts by tens of percent when
anything else runs, and on a shared VM even when nothing does (docs/validation.md, "The
CPU": the noise floor). validate measures every point in 3 passes on the CPU and times the
profile's own GEMV and matmul 6 times (their run-to-run spread is printed beside the
errors). About 17 minutes on a 2-core machine.

    python -m pytest benchmarks/bench_validate_cpu.py --benchmark-only -s
"""

import json

import pytest

from ridgeline.cli import main

TARGET_MEDIAN, TARGET_WORST = 0.10, 0.20
RUNS = {"tiny": [], "llama-3.1-8b": ["--layers", "1"]}


@pytest.fixture(scope="module")
def cpu_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile")
    assert main(["profile", "--device", "cpu", "-o", str(out), "--no-report"]) in (0, 1)
    return out / "profile.json"


@pytest.mark.benchmark(group="validate")
@pytest.mark.parametrize("model", list(RUNS))
@pytest.mark.xfail(reason="issue 13: CPU predictions not yet within 10% median / 20% worst",
                   strict=False)
def test_cpu_validation_within_target(benchmark, cpu_profile, tmp_path, model):
    args = ["validate", "--device", "cpu", "--model", model, *RUNS[model],
            "--profile", str(cpu_profile), "-o", str(tmp_path)]
    benchmark.pedantic(lambda: main(args), rounds=1, iterations=1)
    result = json.loads((tmp_path / "validation.json").read_text())
    summary = result["summary"]
    errors = {phase: (s["median_error_profile"], s["worst_error_profile"])
              for phase, s in summary.items()}
    # how far the machine itself moved since its profile (validation.drift): on a shared VM
    # that, not the model, can be most of the error
    drift = {kind: (d["before_change"], d["after_change"], d.get("spread"))
             for kind, d in (result.get("drift") or {}).items()}
    benchmark.extra_info.update(errors=errors, drift=drift,
                                noisy={p: s.get("n_noisy") for p, s in summary.items()})
    for phase, (median, worst) in errors.items():
        print(f"\n{model} {phase}: median {median:.1%}, worst {worst:.1%}, "
              f"{summary[phase].get('n_noisy', 0)} noisy point(s)")
    for kind, (before, after, spread) in drift.items():
        # spread: the same kernel timed again and again; errors below it are the device's
        print(f"{model} device drift, {kind}: {before or 0:+.0%} before, {after or 0:+.0%} after;"
              f" re-timings spread {'-' if spread is None else f'{spread:.0%}'}")
    for phase, (median, worst) in errors.items():
        assert median <= TARGET_MEDIAN and worst <= TARGET_WORST, (phase, median, worst)
