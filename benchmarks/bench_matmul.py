"""Matmul benchmark: the best torch.matmul / torch._scaled_mm over a large-shape sweep (the
mamf-finder method), against the profile's matmul ceilings made earlier in the same run.

    RIDGELINE_PROFILE=DIR/profile/profile.json RIDGELINE_BENCH_DIR=DIR/bench \\
        python -m pytest benchmarks/bench_matmul.py --benchmark-only -s

It re-runs no profile. The sweep goes through the matmul probe's own cases
(random inputs, validated against an fp32 product, L2 flushed, device events,
the profile's default time budgets, fp8 with use_fast_accum=True): M and N in
SIZES_MN, K in SIZES_K, in a seeded random order with both dtypes interleaved,
until RIDGELINE_SWEEP_S seconds (default 45) are spent, so a cut-short sweep
still samples the whole grid. It writes RIDGELINE_BENCH_DIR/matmul_sweep.json
(best per dtype and every point), which scripts/gpu_targets.py reads.

Targets (issue 10, H100 SXM and H200): the profile's bf16 >= 780 TFLOP/s and fp8
>= 1400 TFLOP/s, each >= 0.98 x the best of the sweep (asserted when
RIDGELINE_PROFILE names the profile of this device).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from ridgeline.device import cpu_device, get_device
from ridgeline.errors import Waived
from ridgeline.probes.base import Case, ProbeContext
from ridgeline.probes.matmul import MatmulProbe, fp8_dtype_name
from ridgeline.timing import FakeTimer, make_timer

SIZES_MN = (4096, 6144, 8192, 12288, 16384)
SIZES_K = (2048, 4096, 8192, 16384)
DEFAULT_SWEEP_S = 45.0
MATMUL_VS_SWEEP = 0.98
GOALS_TFLOPS = {"bf16": 780.0, "fp8": 1400.0}   # H100 SXM and H200
POINT_KEYS = ("dtype", "m", "n", "k", "TFLOPS", "time_ms_median", "time_ms_p20", "time_ms_p80",
              "validated", "relative_error", "fast_accum", "status")


def sweep_cases(dtypes: tuple[str, ...], sizes_mn=SIZES_MN, sizes_k=SIZES_K,
                seed: int = 0) -> list[tuple[str, int, int, int]]:
    """(dtype, m, n, k) of the grid, shapes in a seeded random order, dtypes interleaved."""
    shapes = [(m, n, k) for m in sizes_mn for n in sizes_mn for k in sizes_k]
    random.Random(seed).shuffle(shapes)
    return [(d, m, n, k) for m, n, k in shapes for d in dtypes]


def best_per_dtype(points: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The validated point with the highest TFLOP/s, per dtype."""
    best: dict[str, dict[str, Any]] = {}
    for p in points:
        if p.get("validated") and p.get("TFLOPS") and \
                p["TFLOPS"] > best.get(p["dtype"], {}).get("TFLOPS", 0.0):
            best[p["dtype"]] = p
    return best


def sweep(device, budget_s: float, dtypes: tuple[str, ...] | None = None,
          sizes_mn=SIZES_MN, sizes_k=SIZES_K, timer=None) -> dict[str, Any]:
    """Run the grid until `budget_s` is spent; the matmul_sweep.json document."""
    dtypes = dtypes or ("bf16", fp8_dtype_name(device) or "fp8_e4m3")
    probe = MatmulProbe()
    ctx = ProbeContext(device=device, timer=timer or make_timer(device))
    cases = sweep_cases(tuple(dtypes), sizes_mn, sizes_k)
    points: list[dict[str, Any]] = []
    waived: dict[str, int] = {}
    started = time.monotonic()
    for dtype, m, n, k in cases:
        if time.monotonic() - started > budget_s:
            break
        case = Case({"dtype": dtype, "shape_kind": "sweep", "m": m, "n": n, "k": k})
        try:
            [rec] = probe.run(case, ctx)
        except Waived as w:  # no fp8 here, or a shape larger than free memory
            waived[f"{dtype}: {w.reason}"] = waived.get(f"{dtype}: {w.reason}", 0) + 1
            continue
        points.append({key: rec.get(key) for key in POINT_KEYS})
    return {"kind": "ridgeline-matmul-sweep", "device": device.name, "budget_s": budget_s,
            "elapsed_s": round(time.monotonic() - started, 1),
            "complete": len(points) + sum(waived.values()) == len(cases),
            "method": "best median TFLOP/s over a seeded random order of the grid, "
                      "matmul probe cases (validated, L2 flushed, default budgets)",
            "grid": {"m_n": list(sizes_mn), "k": list(sizes_k), "dtypes": list(dtypes)},
            "best": best_per_dtype(points),
            "n_shapes": {d: sum(p["dtype"] == d for p in points) for d in dtypes},
            "waived": waived, "points": points}


def _write(doc: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "matmul_sweep.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def _profile() -> dict[str, Any] | None:
    path = os.environ.get("RIDGELINE_PROFILE")
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else None


@pytest.mark.gpu
@pytest.mark.benchmark(group="matmul")
def test_gpu_matmul_sweep_against_the_profile(benchmark, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    device = get_device("cuda:0")
    budget_s = float(os.environ.get("RIDGELINE_SWEEP_S", DEFAULT_SWEEP_S))
    doc = benchmark.pedantic(lambda: sweep(device, budget_s), rounds=1, iterations=1)
    path = _write(doc, Path(os.environ.get("RIDGELINE_BENCH_DIR") or tmp_path))
    profile = _profile()
    ceilings = ((profile or {}).get("ceilings") or {}).get("matmul_TFLOPS") or {}
    lines = [f"{device.name}: sweep of {doc['n_shapes']} shapes in {doc['elapsed_s']} s -> {path}"]
    for dtype, best in doc["best"].items():
        ours = ceilings.get(dtype)
        lines.append(f"  {dtype}: sweep best {best['TFLOPS']:.0f} TFLOP/s at M={best['m']} "
                     f"N={best['n']} K={best['k']}"
                     + (f"; profile {ours:.0f} = {ours / best['TFLOPS']:.3f}x" if ours else ""))
        benchmark.extra_info[f"{dtype}_sweep_TFLOPS"] = best["TFLOPS"]
    print("\n" + "\n".join(lines))
    name = device.name.upper()
    if profile and ("H200" in name or ("H100" in name and "PCIE" not in name)):
        for dtype, best in doc["best"].items():
            goal = GOALS_TFLOPS["fp8" if dtype.startswith("fp8") else dtype]
            assert ceilings.get(dtype, 0.0) >= max(goal, MATMUL_VS_SWEEP * best["TFLOPS"]), dtype


@pytest.mark.benchmark(group="matmul")
def test_cpu_sweep_writes_its_document(benchmark, tmp_path):
    """The sweep's plumbing on the CPU at toy sizes (fp8 is waived there), in a second."""
    doc = benchmark.pedantic(lambda: sweep(cpu_device(), 30.0, ("bf16", "fp8_e4m3"),
                                           sizes_mn=(48, 80), sizes_k=(64,), timer=FakeTimer()),
                             rounds=1, iterations=1)
    path = _write(doc, tmp_path)
    assert json.loads(path.read_text())["kind"] == "ridgeline-matmul-sweep"
    assert doc["complete"] and doc["n_shapes"] == {"bf16": 4, "fp8_e4m3": 0}
    assert doc["best"]["bf16"]["TFLOPS"] == max(p["TFLOPS"] for p in doc["points"])
    assert sum(doc["waived"].values()) == 4
