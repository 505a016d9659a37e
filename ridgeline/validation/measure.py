"""Measure decode-step and prefill times of the validation transformer on one device.

A *decode step* is one new token for each of `batch` sequences whose KV cache
already holds `context` tokens: embedding lookup, every decoder layer (attending
over context + 1 keys), final norm and LM head (B x vocab logits). A *prefill*
is `input` tokens of one sequence from an empty cache (causal attention), with
the LM head on the last token only. This is what ridgeline.sizing.latency
predicts as decode_step_time and prefill_time.

Modes:
- "graph" (CUDA/ROCm): the step is captured once into a CUDA graph over a static
  KV cache, static tokens and static positions, and the graph is replayed (how
  serving engines run decode, without host launch overhead);
- "eager": the same Python forward, kernel by kernel (host launch cost included).
On the CPU only eager runs (the host clock, synchronous work); graph mode is
waived with its reason.

All timing goes through ridgeline.timing (make_timer(device), Timer.time): device
events with the L2 flushed before each sample (decode re-reads every weight, so
the flush costs no honesty), the host clock on the CPU.

Depth: the model's weights for `resident` layers are allocated once; each point
allocates its KV cache for as many of them as fit (footprint.layers_that_fit).
When a point runs fewer layers than the model has, its time is scaled:

    t_full = t_head + (t_step(n) - t_head) * layers_total / n

with t_head the embedding + final norm + LM head timed alone in the same mode.

Noise: a point's spread is (p80 - p20) / median of what it quotes (the step's samples; for a
scaled point the alternating rounds' step - head differences, which the scaling multiplies).
Above roofline.trust.NOISY_SPREAD the point is measured again (REMEASURE_ATTEMPTS more
times) and the quieter attempt kept; still above it, the point is kept and marked `noisy`,
and the summary counts it (validate never drops a point).

Passes: the samples of one timing are seconds apart at most, while a shared host's memory
bandwidth moves over seconds to minutes (docs/validation.md, "The CPU": one GEMV timed 77
times in a minute spread 26%), so a point timed once is one draw of the machine's state.
With `passes` > 1 every point is measured in each pass, the passes alternating in order
(forward, backward, ...) so each point's timings lie apart in the run, and the point quotes
the median of its passes (merge_passes):

    measured_s = median over passes;  spread = max(spread across the passes,
                                                   the median pass's own spread)

Default: DEFAULT_PASSES_CPU on the CPU (host clock, shared memory), 1 on a GPU; --tp runs one.
"""

from __future__ import annotations

import gc
import statistics
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from ridgeline.roofline.trust import NOISY_SPREAD, scatters
from ridgeline.validation import footprint

GRAPH_WAIVED_CPU = "CUDA graphs need a GPU: the CPU runs eager only"
MEMORY_SAFETY = 0.90          # of the free memory, for allocator fragmentation
MEMORY_RESERVE_BYTES = 256 * 2**20
REMEASURE_ATTEMPTS = 1        # extra attempts of a point whose samples scatter
DEFAULT_PASSES_CPU = 3        # passes over every point on the CPU (see Passes above)
NOISY_NOTE = "noisy: "        # how a noisy point's note starts


@dataclass(frozen=True)
class Point:
    """One measured configuration. decode: `context` tokens cached; prefill: `context` inputs."""

    phase: str
    batch: int
    context: int

    @property
    def q_tokens(self) -> int:
        return 1 if self.phase == "decode" else self.context

    @property
    def kv_tokens(self) -> int:
        return self.context + 1 if self.phase == "decode" else self.context

    def label(self) -> str:
        return (f"decode b={self.batch} ctx={self.context}" if self.phase == "decode"
                else f"prefill b={self.batch} in={self.context}")


def modes_for(device) -> list[str]:
    """Graph replay first (the serving configuration), then eager; eager only on the CPU."""
    return ["graph", "eager"] if device.kind != "cpu" else ["eager"]


def decode_points(batches: list[int], contexts: list[int]) -> list[Point]:
    return [Point("decode", b, c) for c in contexts for b in batches]


def prefill_points(lengths: list[int], batch: int = 1) -> list[Point]:
    return [Point("prefill", batch, n) for n in lengths]


@dataclass
class Measured:
    phase: str
    mode: str
    batch: int
    context: int
    measured_s: float              # full-depth step time (scaled when layers_measured < total)
    layers_measured: int
    layers_total: int
    scaled: bool
    finite: bool                   # the step's logits were all finite
    timing: dict[str, Any]         # named statistics of the timed step (ms)
    head_timing: dict[str, Any] | None = None   # the head alone, when scaled
    notes: list[str] = field(default_factory=list)
    spread: float | None = None    # (p80 - p20) / median of what measured_s comes from
    noisy: bool = False            # spread above NOISY_SPREAD after every attempt
    attempts: int = 1
    passes_s: list[float] | None = None   # each pass's measured_s, when there were several

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Skipped:
    phase: str
    mode: str
    batch: int
    context: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# A scaled point (fewer layers measured than the model has) multiplies step - head by
# layers_total / layers_measured: 32x for one layer of an 8B model, whose LM head (1 GB)
# outweighs the layer. Timed one after the other, a drift of the host's memory bandwidth
# between the two (tens of percent within a minute on a shared VM) lands 32x in the result;
# so they are timed in PAIRED_ROUNDS alternating rounds and each round's difference is
# taken, the median of the differences scaled (drift slower than a round cancels).
PAIRED_ROUNDS = 5


def paired_difference_ms(step_ms: list[float], head_ms: list[float]) -> float:
    """Median over alternating rounds of (step - head), in ms (rounds in the same order)."""
    diffs = sorted(a - b for a, b in zip(step_ms, head_ms))
    n = len(diffs)
    return (diffs[n // 2] if n % 2 else 0.5 * (diffs[n // 2 - 1] + diffs[n // 2])) if n else 0.0


def relative_spread(values_ms: list[float]) -> float | None:
    """(p80 - p20) / median of samples (ms), as ridgeline.timing states them; None when the
    median is not positive."""
    from ridgeline.roofline.trust import sample_spread
    from ridgeline.timing import Timing

    return sample_spread(Timing(list(values_ms), "host-clock").stats()) if values_ms else None


def scale_to_depth(step_s: float, head_s: float, layers_measured: int, layers_total: int) -> float:
    """Full-depth time from a partial stack: the head once, the layers in proportion."""
    if layers_measured >= layers_total:
        return step_s
    return head_s + max(step_s - head_s, 0.0) * layers_total / layers_measured


def memory_budget(device, timer_flush_bytes: int = 0) -> int:
    from ridgeline.device import free_memory_bytes

    return int(free_memory_bytes(device) * MEMORY_SAFETY - MEMORY_RESERVE_BYTES - timer_flush_bytes)


@dataclass
class DepthPlan:
    """How many layers are resident, and how many each point measures (0: skipped)."""

    resident: int
    per_point: dict[Point, int]
    reasons: dict[Point, str]


def plan_depth(d: footprint.LayerDims, weights: str, points: list[Point], budget_bytes: float,
               *, max_layers: int, graph: bool, gqa_native: bool = True) -> DepthPlan:
    """Resident layers from the smallest point; each point then gets what its KV cache allows."""
    gib = 2**30
    if not points:
        return DepthPlan(0, {}, {})
    smallest = min(points, key=lambda p: footprint.step_bytes(d, weights, 1, p.batch, p.q_tokens,
                                                               p.kv_tokens, graph=graph,
                                                               gqa_native=gqa_native))
    resident = footprint.layers_that_fit(d, weights, budget_bytes, smallest.batch,
                                         smallest.q_tokens, smallest.kv_tokens,
                                         max_layers=max_layers, graph=graph, gqa_native=gqa_native)
    per_point: dict[Point, int] = {}
    reasons: dict[Point, str] = {}
    for p in points:
        n = footprint.layers_that_fit(d, weights, budget_bytes, p.batch, p.q_tokens, p.kv_tokens,
                                      max_layers=resident, resident_layers=resident, graph=graph,
                                      gqa_native=gqa_native) if resident else 0
        per_point[p] = n
        if n == 0:
            need = footprint.step_bytes(d, weights, 1, p.batch, p.q_tokens, p.kv_tokens,
                                        graph=graph, gqa_native=gqa_native)
            if resident:
                need += (resident - 1) * footprint.weight_bytes_per_layer(d, weights)
            reasons[p] = (f"does not fit: one layer's KV cache and workspace beside "
                          f"{resident} resident layer(s) need {need / gib:.1f} GiB, "
                          f"{max(budget_bytes, 0) / gib:.1f} GiB usable")
    return DepthPlan(resident, per_point, reasons)


def capture_graph(fn: Callable[[], Any], device_index: int):
    """Capture fn into a CUDA graph (warmed up on a side stream first); (graph, static output)."""
    import torch

    from ridgeline.timing import capture_graph as capture

    dev = torch.device(f"cuda:{device_index}")
    torch.cuda.synchronize(dev)
    # two warm-ups: cuBLAS/attention workspaces and heuristics settle before capture
    graph, out = capture(fn, dev, warmups=2)
    torch.cuda.synchronize(dev)
    return graph, out


class Bench:
    """Runs points on one model: allocates each point's cache, times each mode, frees."""

    def __init__(self, model, device, timer, *, warmup_ms: float = 25.0, rep_ms: float = 200.0):
        self.model, self.device, self.timer = model, device, timer
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms
        self.layers_total = model.d.num_layers

    def _time(self, fn: Callable[[], Any], mode: str):
        """(Timing, output) of fn in this mode; the graph is dropped afterwards."""
        import torch

        if mode == "graph":
            graph, out = capture_graph(fn, self.device.index)
            timing = self.timer.time(graph.replay, warmup_ms=self.warmup_ms, rep_ms=self.rep_ms)
            finite = bool(torch.isfinite(out).all().item())
            del graph, out
            return timing, finite
        timing = self.timer.time(fn, warmup_ms=self.warmup_ms, rep_ms=self.rep_ms)
        out = fn()
        return timing, bool(torch.isfinite(out).all().item())

    def _paired(self, step: Callable[[], Any], head: Callable[[], Any], mode: str):
        """(step Timing, head Timing, each round's step and head medians in ms, finite): the
        two timed in PAIRED_ROUNDS alternating rounds (Timer.time_alternating)."""
        import torch

        runs, outs, graphs = {"step": step, "head": head}, {}, []
        if mode == "graph":
            for name, fn in list(runs.items()):
                graph, outs[name] = capture_graph(fn, self.device.index)
                graphs.append(graph)
                runs[name] = graph.replay
        rounds = self.timer.time_alternating(runs, rounds=PAIRED_ROUNDS,
                                             warmup_ms=self.warmup_ms, rep_ms=self.rep_ms)
        out = outs["step"] if mode == "graph" else step()
        finite = bool(torch.isfinite(out).all().item())
        del graphs, outs
        merged = {name: replace(ts[0], samples_ms=[x for t in ts for x in t.samples_ms])
                  for name, ts in rounds.items()}
        return (merged["step"], merged["head"], [t.median_ms for t in rounds["step"]],
                [t.median_ms for t in rounds["head"]], finite)

    def _measure(self, point: Point, layers: int, mode: str, tokens, cache) -> Measured:
        """One attempt at one point in one mode."""
        model = self.model
        scaled = layers < self.layers_total
        head_stats, notes = None, []
        if scaled:
            timing, head_timing, step_ms, head_ms, finite = self._paired(
                lambda: model.forward(tokens, cache), lambda: model.head_only(tokens), mode)
            layers_ms = paired_difference_ms(step_ms, head_ms)
            diffs = [a - b for a, b in zip(step_ms, head_ms)]
            # the paired rounds' median step - head: what is scaled
            head_stats = {**head_timing.stats(), "step_minus_head_ms": layers_ms,
                          "rounds_step_minus_head_ms": diffs}
            head_s = head_timing.median_ms * 1e-3
            measured_s = scale_to_depth(head_s + layers_ms * 1e-3, head_s, layers,
                                        self.layers_total)
            spread = relative_spread(diffs)
            notes.append(f"{layers} of {self.layers_total} layers measured, scaled to the "
                         f"full depth (step and head timed in {PAIRED_ROUNDS} alternating rounds)")
        else:
            timing, finite = self._time(lambda: model.forward(tokens, cache), mode)
            measured_s = timing.median_ms * 1e-3
            spread = relative_spread(timing.samples_ms)
        return Measured(point.phase, mode, point.batch, point.context, measured_s, layers,
                        self.layers_total, scaled, finite, timing.stats(), head_stats, notes,
                        spread)

    def run_point(self, point: Point, layers: int, modes: list[str]) -> list[Measured | Skipped]:
        import torch

        model = self.model
        results: list[Measured | Skipped] = []
        cache = model.new_cache(point.batch, point.kv_tokens,
                                filled=point.context if point.phase == "decode" else 0,
                                layers=layers)
        tokens = model.random_tokens(point.batch, point.q_tokens)
        try:
            for mode in modes:
                try:
                    m = self._measure(point, layers, mode, tokens, cache)
                    for _ in range(REMEASURE_ATTEMPTS):
                        if not scatters(m.spread):
                            break
                        again = self._measure(point, layers, mode, tokens, cache)
                        again.attempts = m.attempts + 1
                        m = again if _quieter(again.spread, m.spread) else replace(
                            m, attempts=again.attempts)
                    if m.attempts > 1:
                        m.notes.append(f"measured {m.attempts} times (samples scattered above "
                                       f"{NOISY_SPREAD:.0%}): the quietest attempt kept")
                    m.noisy = scatters(m.spread)
                    if m.noisy:
                        m.notes.append(f"{NOISY_NOTE}samples spread {m.spread:.0%} (p20..p80 of "
                                       "the median) after every attempt: other work disturbed it")
                    if not m.finite:
                        m.notes.append("non-finite logits: point excluded from the error summary")
                    results.append(m)
                except Exception as exc:  # noqa: BLE001 - a failed point is a result, not a crash
                    oom = isinstance(exc, getattr(torch, "OutOfMemoryError",
                                                  torch.cuda.OutOfMemoryError))
                    first = (str(exc).strip().splitlines() or [""])[0][:160]
                    why = "out of memory" if oom else f"failed ({type(exc).__name__})"
                    results.append(Skipped(point.phase, mode, point.batch, point.context,
                                           f"{why}: {first}"))
                    release_memory(self.device)
        finally:
            del cache, tokens
            release_memory(self.device)
        return results


def _quieter(a: float | None, b: float | None) -> bool:
    return a is not None and (b is None or a < b)


def release_memory(device) -> None:
    """Free what a point (or the model) left: Python garbage, and torch's cached GPU blocks."""
    gc.collect()
    if device.kind != "cpu":
        import torch

        torch.cuda.empty_cache()


def merge_passes(runs: list[Measured]) -> Measured:
    """One point's passes as one: the median time, the median pass's timing statistics, and
    a spread that covers both the passes and that pass's own samples (see Passes above)."""
    if len(runs) == 1:
        return runs[0]
    times_s = [m.measured_s for m in runs]
    middle = sorted(runs, key=lambda m: m.measured_s)[(len(runs) - 1) // 2]
    spreads = [s for s in (relative_spread([t * 1e3 for t in times_s]), middle.spread)
               if s is not None]
    spread = max(spreads) if spreads else None
    notes = [n for m in runs for n in m.notes if not n.startswith(NOISY_NOTE)]
    notes = list(dict.fromkeys(notes))   # each pass says the same things
    notes.append(f"median of {len(runs)} passes over the points (alternating order): "
                 + ", ".join(f"{1e3 * t:.3g}" for t in times_s) + " ms")
    noisy = scatters(spread)
    if noisy:
        notes.append(f"{NOISY_NOTE}spread {spread:.0%} (p20..p80 of the median, across passes "
                     "and samples): the device moved between its passes")
    return replace(middle, measured_s=statistics.median(times_s), spread=spread, noisy=noisy,
                   finite=all(m.finite for m in runs), attempts=sum(m.attempts for m in runs),
                   notes=notes, passes_s=times_s)


def run_points(points: list[Point], plan: DepthPlan, modes: list[str],
               run_point: Callable[[Point, int, list[str]], list] | None, *, cpu: bool,
               on_result: Callable[[Point, list], None] | None = None, passes: int = 1,
               ) -> tuple[list[Measured], list[Skipped], bool]:
    """Every point in every mode, `passes` times (merge_passes); Ctrl-C stops and keeps what
    finished (interrupted=True; a point with at least one pass is kept).

    `run_point(point, layers, modes)` is Bench.run_point (None when nothing fits).
    on_result is called after each point of each pass.
    """
    skipped: list[Skipped] = []
    if cpu:
        skipped += [Skipped(p.phase, "graph", p.batch, p.context, GRAPH_WAIVED_CPU) for p in points]
    runs: dict[tuple[Point, str], list[Measured]] = {}
    skips: dict[tuple[Point, str], Skipped] = {}
    interrupted = False
    for i in range(passes):
        for p in (points if i % 2 == 0 else points[::-1]):
            layers = plan.per_point.get(p, 0)
            if i and (layers == 0 or run_point is None):
                if on_result:   # nothing to measure (said in the first pass); progress moves
                    on_result(p, [])
                continue
            try:
                if layers == 0 or run_point is None:
                    out: list = [Skipped(p.phase, m, p.batch, p.context,
                                         plan.reasons.get(p, "does not fit")) for m in modes]
                else:
                    out = run_point(p, layers, modes)
            except KeyboardInterrupt:
                interrupted = True
                break
            for r in out:
                if isinstance(r, Measured):
                    runs.setdefault((p, r.mode), []).append(r)
                else:
                    skips.setdefault((p, r.mode), r)
            if on_result:
                on_result(p, out)
        if interrupted:
            break
    measured: list[Measured] = []
    for p in points:
        for mode in modes:
            if (p, mode) in runs:   # a pass that failed where another measured: the measured
                measured.append(merge_passes(runs[(p, mode)]))
            elif (p, mode) in skips:
                skipped.append(skips[(p, mode)])
    return measured, skipped, interrupted
