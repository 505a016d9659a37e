"""What one simulated load point measured: latency percentiles, throughput, occupancy.

    point = summarize(run, OpenLoop(rps=10))      # -> SimPoint; point.to_dict() is JSON-ready

Definitions (per request r, all requests of the run counted, no warm-up dropped: a
simulated engine has no cold caches, and 10^4+ requests make the empty start negligible):

    TTFT_r       first token - arrival (queue wait + prefill, or its chunks, + co-runners)
                 + the engine's per-request overhead o (sizing.engine; 0 without one)
    E2E_r        last token - arrival + o
    queue_wait_r first time it is scheduled - arrival
    TPOT_r       (E2E_r - TTFT_r) / (output_r - 1), requests with more than one token
    ITL          every gap between two consecutive tokens of a request, pooled over all
                 requests (as `vllm bench serve` reports it): a decode step of duration d
                 with D decodes contributes D gaps of d; a preemption contributes the gap
                 across it. Percentiles are weighted (inverted CDF).
    duration     first arrival -> last token (+ o: the last answer reaches its client)
    request_throughput     requests / duration;  output (total) tokens/s likewise
    mean_concurrency       time average of requests in the system (queued + running),
                           integrated by the engine itself, + o per request (a request
                           is in the system while o passes); Little's law says it equals
                           request_throughput x mean E2E (the tests hold it to 2%)
    mean_batch             sequences per step, averaged over the time a step runs
    mean_kv_utilization    time average of used KV blocks / blocks, over the duration
Percentiles of per-request values use numpy's default (linear interpolation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ridgeline.sizing.simulation.engine import EngineRun
from ridgeline.sizing.simulation.load import ClosedLoop, Load, OpenLoop

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class Stat:
    """Mean and percentiles of one latency (seconds)."""

    mean: float
    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values: np.ndarray) -> "Stat":
        if len(values) == 0:
            return cls(float("nan"), float("nan"), float("nan"), float("nan"))
        p = np.percentile(values, PERCENTILES)
        return cls(float(np.mean(values)), float(p[0]), float(p[1]), float(p[2]))

    @classmethod
    def weighted(cls, values: np.ndarray, weights: np.ndarray) -> "Stat":
        """Percentiles of values repeated `weights` times, without repeating them."""
        keep = weights > 0
        values, weights = values[keep], weights[keep]
        if len(values) == 0:
            return cls(float("nan"), float("nan"), float("nan"), float("nan"))
        order = np.argsort(values, kind="stable")
        v, cw = values[order], np.cumsum(weights[order])
        total = cw[-1]
        idx = np.searchsorted(cw, [q / 100 * total for q in PERCENTILES], side="left")
        p = v[np.minimum(idx, len(v) - 1)]
        return cls(float(np.dot(values, weights) / total), float(p[0]), float(p[1]), float(p[2]))

    def get(self, percentile: str) -> float:
        """"mean", "p50", "p95" or "p99"."""
        return float(getattr(self, percentile))

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "p50": self.p50, "p95": self.p95, "p99": self.p99}


@dataclass
class SimPoint:
    """One load point of the latency-throughput curve."""

    load: str                       # "rps" | "concurrency"
    value: float                    # the offered rate (requests/s) or the clients
    requests: int
    duration_s: float
    ttft_s: Stat
    itl_s: Stat
    e2e_s: Stat
    queue_wait_s: Stat
    tpot_s: Stat
    request_throughput: float       # requests/s
    output_tokens_per_s: float
    total_tokens_per_s: float       # input + output
    mean_concurrency: float
    mean_batch: float
    mean_kv_utilization: float
    peak_kv_utilization: float
    preemptions: int
    steps: int
    arrival_cv: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {self.load: self.value}
        if self.arrival_cv is not None:
            d["arrival_cv"] = self.arrival_cv
        d.update(requests=self.requests, duration_s=self.duration_s,
                 ttft_s=self.ttft_s.to_dict(), itl_s=self.itl_s.to_dict(),
                 e2e_s=self.e2e_s.to_dict(), queue_wait_s=self.queue_wait_s.to_dict(),
                 tpot_s=self.tpot_s.to_dict(), request_throughput=self.request_throughput,
                 output_tokens_per_s=self.output_tokens_per_s,
                 total_tokens_per_s=self.total_tokens_per_s,
                 mean_concurrency=self.mean_concurrency, mean_batch=self.mean_batch,
                 mean_kv_utilization=self.mean_kv_utilization,
                 peak_kv_utilization=self.peak_kv_utilization, preemptions=self.preemptions,
                 steps=self.steps, notes=list(self.notes))
        return d


def summarize(run: EngineRun, load: Load) -> SimPoint:
    """The point's statistics from a finished engine run."""
    arrival, finish, first = run.arrival_s, run.finish_s, run.first_token_s
    o = run.request_overhead_s  # tokenization, detokenization, setup: outside the engine
    start = float(arrival.min())
    duration = float(finish.max()) + o - start
    ttft = first - arrival + o
    e2e = finish - arrival + o
    multi = run.output_tokens > 1
    tpot = (finish[multi] - first[multi]) / (run.output_tokens[multi] - 1)
    n = len(arrival)
    out_tokens = float(run.output_tokens.sum())
    total_tokens = out_tokens + float(run.input_tokens.sum())
    notes = []
    if run.preemptions:
        notes.append(f"{run.preemptions} preemptions (recompute): the KV cache ran out")
    key, value = load.key
    if value is None:  # a trace replayed as recorded: report the rate it offered
        span = float(arrival.max()) - start
        value = (n - 1) / span if span > 0 else float("inf")
    return SimPoint(
        load=key, value=value, requests=n, duration_s=duration,
        ttft_s=Stat.of(ttft), itl_s=Stat.weighted(run.itl_s, run.itl_weight), e2e_s=Stat.of(e2e),
        queue_wait_s=Stat.of(run.first_scheduled_s - arrival), tpot_s=Stat.of(tpot),
        request_throughput=n / duration if duration > 0 else float("inf"),
        output_tokens_per_s=out_tokens / duration if duration > 0 else float("inf"),
        total_tokens_per_s=total_tokens / duration if duration > 0 else float("inf"),
        mean_concurrency=((run.concurrency_area + n * o) / duration if duration > 0
                          else float("nan")),
        mean_batch=run.batch_area / run.busy_s if run.busy_s > 0 else 0.0,
        mean_kv_utilization=(run.kv_block_area / duration / run.kv_blocks
                             if duration > 0 else 0.0),
        peak_kv_utilization=run.peak_kv_blocks / run.kv_blocks,
        preemptions=run.preemptions, steps=run.steps,
        arrival_cv=load.arrival_cv if isinstance(load, OpenLoop) else None, notes=notes)


def describe_load(load: Load) -> str:
    if isinstance(load, ClosedLoop):
        return f"{load.concurrency} clients" + (f", {load.think_s:g} s think" if load.think_s
                                                 else "")
    return f"{load.rps:g} req/s" + ("" if load.arrival_cv == 1 else f", CV {load.arrival_cv:g}")
