"""Serving-simulation speed (issue 12): 100,000 requests in one point under 10 s, a 10-point
sweep of them under 60 s, on the 2-core development machine (pure Python + numpy, no GPU).

    python -m pytest benchmarks/bench_simulate.py --benchmark-only -s

Workload: Llama-3.1-70B, FP8 weights/activations/KV, TP=4 on an H100 SXM datasheet
(no profile needed), vLLM defaults (8192-token budget, 256 sequences, 16-token
blocks, KV capacity from the memory plan); lengths lognormal with input p50/p95
1000/4000 and output p50/p95 200/512 tokens; Poisson arrivals. The single point
runs at 70% of the replica's capacity (`capacity_rps`); the sweep runs 10 points from
5% to 120% of it. Low loads cost the most (long runs of small decode batches,
millions of steps, between one arrival and the next): the 5% point is the slowest
single point. Each benchmark runs once (a simulation is deterministic at a seed);
the time of every point is in `extra_info`.
"""

from __future__ import annotations

import time

import pytest

from ridgeline.sizing.hardware import hardware_from_gpu_name
from ridgeline.sizing.memory import EngineConfig
from ridgeline.sizing.models import load_model
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.simulation import (LognormalLengths, OpenLoop, capacity_rps, make_requests,
                                         scheduler_for, simulate)
from ridgeline.sizing.step_model import StepModel

pytestmark = pytest.mark.benchmark

REQUESTS = 100_000
POINT_TARGET_S = 10.0
SWEEP_TARGET_S = 60.0
SWEEP_FRACTIONS = (0.05, 0.15, 0.3, 0.45, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2)


@pytest.fixture(scope="module")
def setup():
    hw = hardware_from_gpu_name("h100-sxm")
    spec, precision = load_model("llama-3.1-70b"), Precision("fp8", "fp8", "fp8")
    sm = StepModel(spec, precision, hw, tp=4)
    sched = scheduler_for(spec, precision, hw.memory_bytes, EngineConfig(), tp=4)
    reqs = make_requests(LognormalLengths(1000, 4000, 200, 512), REQUESTS, seed=0)
    return sm, sched, reqs, capacity_rps(sm, sched, reqs)


def test_one_point_of_100k_requests(benchmark, setup):
    sm, sched, reqs, top = setup
    start = time.perf_counter()
    point = benchmark.pedantic(lambda: simulate(sm, sched, reqs, OpenLoop(0.7 * top)),
                               rounds=1, iterations=1)
    took = time.perf_counter() - start
    benchmark.extra_info.update(seconds=took, rps=point.value, steps=point.steps,
                                ttft_p99_s=point.ttft_s.p99, itl_p99_s=point.itl_s.p99)
    print(f"\n100k requests at {point.value:.2f} req/s (70% of {top:.2f}): {took:.2f} s, "
          f"{point.steps} steps")
    assert point.requests == REQUESTS
    assert took < POINT_TARGET_S


def test_ten_point_sweep_of_100k_requests(benchmark, setup):
    sm, sched, reqs, top = setup
    times: dict[float, float] = {}

    def run():
        out = []
        for f in SWEEP_FRACTIONS:
            t = time.perf_counter()
            out.append(simulate(sm, sched, reqs, OpenLoop(f * top)))
            times[f] = time.perf_counter() - t
        return out

    start = time.perf_counter()
    points = benchmark.pedantic(run, rounds=1, iterations=1)
    took = time.perf_counter() - start
    benchmark.extra_info.update(seconds=took, seconds_per_point={str(k): v
                                                                 for k, v in times.items()})
    print(f"\n10 points x 100k requests: {took:.1f} s; per point "
          + ", ".join(f"{f:g}: {t:.1f} s" for f, t in times.items()))
    assert len(points) == len(SWEEP_FRACTIONS)
    assert took < SWEEP_TARGET_S
