"""The one timing primitive: time a callable on a device and keep every sample.

    timing = make_timer(device).time(fn, work=Work(bytes=..., flops=...))
    timing.stats()  # time_ms_median (quoted), time_ms_p20, time_ms_p80, time_ms_min

Method (the same on every device, after `triton.testing.do_bench`):
1. one untimed call (compilation, autotuning, library heuristics);
2. a short estimate of one call's time, which turns the warm-up and repeat
   *time budgets* into counts (bounded by min/max repeats);
3. warm-up calls, then `reps` timed samples. Each sample times
   `launches_per_sample` back-to-back calls and divides by it.

Steps 2 and 3 are one loop, `sample_ms(fn, clock, n_warmup=, n_rep=)`: explicit
counts, a `Clock` (`HostClock`: perf_counter; `EventClock`: device events) and
an optional `before_sample` callable run outside the timed region (a cache
flush, or a barrier that starts the ranks of a collective together). The
timers below and the collective worker all time through it; `budget_counts`
turns the time budgets into its counts.

Timers:
- `EventTimer` (CUDA/HIP): device events around each sample. Before each
  sample an L2 flush buffer (2 x the device's L2, at least 64 MiB) is zeroed
  outside the timed region, unless the caller rotates buffers itself
  (`flush_cache=False`). With `launches_per_sample > 1` the calls are captured
  once into a CUDA graph and the graph is replayed, so microsecond kernels
  are not timed as host launch overhead.
- `HostTimer` (CPU device only): `time.perf_counter_ns` around each sample;
  CPU work is synchronous, so the host clock is the honest clock there.
- `FakeTimer`: returns times from a simple roofline (bytes/bandwidth,
  flops/peak, latency) so the whole pipeline runs in tests without hardware.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

DEFAULT_WARMUP_MS = 25.0
DEFAULT_REP_MS = 100.0
MIN_FLUSH_BYTES = 64 * 2**20
MAX_FLUSH_BYTES = 1024 * 2**20


@dataclass(frozen=True)
class Work:
    """Minimal work of one call: what the achieved rates are computed from."""

    bytes: float = 0.0
    flops: float = 0.0


@dataclass
class Timing:
    """All samples of one timed case (ms per call), and how they were taken."""

    samples_ms: list[float]
    timer: str
    launches_per_sample: int = 1
    notes: list[str] = field(default_factory=list)

    def _pct(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))

    @property
    def median_ms(self) -> float:
        return self._pct(50)

    def stats(self) -> dict[str, Any]:
        """Named statistics; the median is the quoted one, min is 'best seen'."""
        return {
            "time_ms_median": self.median_ms,
            "time_ms_p20": self._pct(20),
            "time_ms_p80": self._pct(80),
            "time_ms_min": float(min(self.samples_ms)),
            "n_samples": len(self.samples_ms),
            "launches_per_sample": self.launches_per_sample,
            "timer": self.timer,
        }


def budget_counts(est_ms: float, warmup_ms: float, rep_ms: float, min_reps: int, max_reps: int,
                  *, min_warmup: int = 1, max_warmup: int | None = None) -> tuple[int, int]:
    """(warm-up, timed) counts from time budgets and one sample's estimated time (ms)."""
    est_ms = max(est_ms, 1e-4)
    max_warmup = 10 * max_reps if max_warmup is None else max_warmup
    n_warmup = max(min_warmup, min(int(warmup_ms / est_ms), max_warmup))
    n_rep = max(min_reps, min(int(math.ceil(rep_ms / est_ms)), max_reps))
    return n_warmup, n_rep


class Stopwatch(Protocol):
    """One sample's start and stop marks; `elapsed_ms` is valid after the clock synchronized."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def elapsed_ms(self) -> float: ...


class Clock(Protocol):
    """Where samples are read: the host clock or device events."""

    name: str

    def stopwatch(self) -> Stopwatch: ...

    def synchronize(self) -> None: ...


class _HostStopwatch:
    __slots__ = ("t0", "t1")

    def start(self) -> None:
        self.t0 = time.perf_counter_ns()

    def stop(self) -> None:
        self.t1 = time.perf_counter_ns()

    def elapsed_ms(self) -> float:
        return (self.t1 - self.t0) / 1e6


class HostClock:
    """`time.perf_counter_ns`: honest only for synchronous (CPU) work."""

    name = "host-clock"

    def stopwatch(self) -> Stopwatch:
        return _HostStopwatch()

    def synchronize(self) -> None:
        """Nothing is queued: CPU work is done when the call returns."""


class _EventStopwatch:
    __slots__ = ("begin", "end")

    def __init__(self, torch) -> None:
        self.begin = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self.begin.record()

    def stop(self) -> None:
        self.end.record()

    def elapsed_ms(self) -> float:
        return self.begin.elapsed_time(self.end)


class EventClock:
    """Device events (CUDA or HIP through torch.cuda) on the current stream of `device`."""

    name = "device-events"

    def __init__(self, device) -> None:
        import torch

        self.torch = torch
        self.device = device

    def stopwatch(self) -> Stopwatch:
        return _EventStopwatch(self.torch)

    def synchronize(self) -> None:
        self.torch.cuda.synchronize(self.device)


def sample_ms(
    fn: Callable[[], Any],
    clock: Clock,
    *,
    n_warmup: int,
    n_rep: int,
    launches: int = 1,
    before_sample: Callable[[], Any] | None = None,
    after_warmup: Callable[[], Any] | None = None,
) -> list[float]:
    """The one timing loop: `n_warmup` untimed calls, then `n_rep` samples (ms per call).

    Each sample times `launches` back-to-back calls of `fn` and divides by it.
    `before_sample` runs before each sample outside the timed region (cache
    flush, barrier); `after_warmup` runs once between warm-up and timing.
    """
    for _ in range(n_warmup):
        fn()
    if after_warmup is not None:
        after_warmup()
    # Stopwatches exist before the loop: nothing but the marks sits between samples.
    watches = [clock.stopwatch() for _ in range(n_rep)]
    for watch in watches:
        if before_sample is not None:
            before_sample()
        watch.start()
        for _ in range(launches):
            fn()
        watch.stop()
    clock.synchronize()  # device marks are read only once the queue has drained
    return [watch.elapsed_ms() / launches for watch in watches]


def capture_graph(fn: Callable[[], Any], device: Any = None, *, launches: int = 1,
                  warmups: int = 1) -> tuple[Any, Any]:
    """`launches` calls of `fn` captured in one CUDA/HIP graph: (graph, the last call's output,
    which replays refill). `fn` runs `warmups` times first on a side stream (capture needs a
    warmed-up, non-default stream, and library workspaces allocated outside it). The one
    capture every timer, validation and benchmark replays."""
    import torch

    current = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        for _ in range(warmups):
            fn()
    current.wait_stream(side)
    graph, out = torch.cuda.CUDAGraph(), None
    with torch.cuda.graph(graph):
        for _ in range(launches):
            out = fn()
    return graph, out


class Timer(ABC):
    """Times a zero-argument callable; every probe goes through one of these."""

    name: str = "timer"

    @abstractmethod
    def time(
        self,
        fn: Callable[[], Any],
        *,
        work: Work | None = None,
        warmup_ms: float = DEFAULT_WARMUP_MS,
        rep_ms: float = DEFAULT_REP_MS,
        min_reps: int = 5,
        max_reps: int = 500,
        flush_cache: bool = True,
        launches_per_sample: int = 1,
    ) -> Timing:
        ...

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""

    def time_alternating(self, fns: dict[str, Callable[[], Any]], *, rounds: int,
                         warmup_ms: float = DEFAULT_WARMUP_MS, rep_ms: float = DEFAULT_REP_MS
                         ) -> dict[str, list[Timing]]:
        """Each of `fns` timed in `rounds` alternating rounds (a, b, a, b, ...): one Timing
        per round and name, so a drift of the machine slower than a round hits them alike.
        The first round warms up and sizes the samples as `time` does (a `rounds`-th of the
        budget); the later rounds take the same number of samples with no warm-up."""
        out: dict[str, list[Timing]] = {name: [] for name in fns}
        counts: dict[str, int] = {}
        clock = getattr(self, "clock", None)
        flush = getattr(self, "flush", None)
        for r in range(rounds):
            for name, fn in fns.items():
                if r == 0 or clock is None:  # a timer without a clock (fake) times afresh
                    t = self.time(fn, warmup_ms=warmup_ms, rep_ms=rep_ms / rounds, min_reps=1)
                    counts[name] = len(t.samples_ms)
                else:
                    t = Timing(sample_ms(fn, clock, n_warmup=0, n_rep=counts[name],
                                         before_sample=flush), out[name][0].timer)
                out[name].append(t)
        return out


class EventTimer(Timer):
    """Device events (CUDA or HIP through torch.cuda) around each sample."""

    name = "device-events"

    def __init__(self, device_index: int = 0, l2_cache_bytes: int | None = None):
        import torch

        self.torch = torch
        self.device = torch.device(f"cuda:{device_index}")
        l2 = l2_cache_bytes or 128 * 2**20
        self.flush_bytes = int(min(max(2 * l2, MIN_FLUSH_BYTES), MAX_FLUSH_BYTES))
        self._flush_buf = None
        self.clock = EventClock(self.device)

    def synchronize(self) -> None:
        self.clock.synchronize()

    def flush(self) -> None:
        """Evict the L2 (write a buffer twice its size); run outside the timed region."""
        if self._flush_buf is None:
            self._flush_buf = self.torch.empty(self.flush_bytes // 4, dtype=self.torch.int32,
                                               device=self.device)
        self._flush_buf.zero_()

    def _graph_of(self, fn: Callable[[], Any], launches: int) -> Callable[[], Any]:
        return capture_graph(fn, self.device, launches=launches)[0].replay

    def time(self, fn, *, work=None, warmup_ms=DEFAULT_WARMUP_MS, rep_ms=DEFAULT_REP_MS,
             min_reps=5, max_reps=500, flush_cache=True, launches_per_sample=1) -> Timing:
        with self.torch.cuda.device(self.device):
            fn()  # untimed first call: compilation, autotuning, cuBLAS heuristics
            self.synchronize()
            launches = max(1, int(launches_per_sample))
            # a graph replay holds all `launches` calls: one call of `body` is one sample
            body = self._graph_of(fn, launches) if launches > 1 else fn
            # estimate one sample's time to turn budgets into counts
            est_ms = sample_ms(body, self.clock, n_warmup=0, n_rep=1, launches=3)[0]
            n_warmup, n_rep = budget_counts(est_ms, warmup_ms, rep_ms, min_reps, max_reps)
            flush = self.flush if flush_cache else None  # outside the events: not timed
            per_sample = sample_ms(body, self.clock, n_warmup=n_warmup, n_rep=n_rep,
                                   before_sample=flush)
            samples = [s / launches for s in per_sample]
        name = "cuda-graph" if launches > 1 else self.name
        return Timing(samples, name, launches)


class HostTimer(Timer):
    """Host clock, for the CPU device only (its work is synchronous)."""

    name = "host-clock"

    def __init__(self, flush_bytes: int | None = None):
        self.flush_bytes = int(min(max(2 * (flush_bytes or 32 * 2**20), 16 * 2**20), 512 * 2**20))
        self._flush_buf = None
        self.clock = HostClock()

    def flush(self) -> None:
        """Evict the last-level cache (write a buffer twice its size); outside the timing."""
        if self._flush_buf is None:
            self._flush_buf = np.empty(self.flush_bytes // 8, dtype=np.float64)
        self._flush_buf.fill(0.0)

    def time(self, fn, *, work=None, warmup_ms=DEFAULT_WARMUP_MS, rep_ms=DEFAULT_REP_MS,
             min_reps=5, max_reps=500, flush_cache=True, launches_per_sample=1) -> Timing:
        launches = max(1, int(launches_per_sample))
        fn()
        # one sample of `launches` calls estimates a sample's time
        est_ms = sample_ms(fn, self.clock, n_warmup=0, n_rep=1, launches=launches)[0] * launches
        # the warm-up here counts calls of fn, not samples, and stops at a thousand
        n_warmup, n_rep = budget_counts(est_ms, warmup_ms, rep_ms, min_reps, max_reps,
                                        max_warmup=min(10 * max_reps, 1000))
        samples = sample_ms(fn, self.clock, n_warmup=n_warmup, n_rep=n_rep, launches=launches,
                            before_sample=self.flush if flush_cache else None)
        return Timing(samples, self.name, launches)


class FakeTimer(Timer):
    """Deterministic roofline times, for tests: the NULL device of this project.

    Runs `fn` once (outputs exist and can be validated) and returns samples of
    max(bytes / bw, flops / peak) + latency with a small fixed spread.
    """

    name = "fake"

    def __init__(self, bw_GBps: float = 1000.0, peak_TFLOPS: float = 100.0,
                 latency_us: float = 5.0, n_samples: int = 11):
        self.bw_GBps = bw_GBps
        self.peak_TFLOPS = peak_TFLOPS
        self.latency_us = latency_us
        self.n_samples = n_samples

    def time(self, fn, *, work=None, warmup_ms=DEFAULT_WARMUP_MS, rep_ms=DEFAULT_REP_MS,
             min_reps=5, max_reps=500, flush_cache=True, launches_per_sample=1) -> Timing:
        fn()
        work = work or Work()
        base_ms = (max(work.bytes / (self.bw_GBps * 1e9), work.flops / (self.peak_TFLOPS * 1e12))
                   + self.latency_us * 1e-6) * 1e3
        spread = np.linspace(0.98, 1.06, self.n_samples)
        return Timing([float(base_ms * s) for s in spread], self.name, launches_per_sample)


def make_timer(device) -> Timer:
    """The honest timer for a DeviceInfo: events on a GPU, the host clock on the CPU."""
    if device.kind == "cpu":
        return HostTimer(device.l2_cache_bytes)
    return EventTimer(device.index, device.l2_cache_bytes)
