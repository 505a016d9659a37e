"""Rotated inputs: how the gemv, attention, moe and dequant probes run and time one case.

Each of these probes times a call that reads its whole input once (decode weights, a KV
cache, expert weights). Timed back to back on one set of inputs, the call would read them
from the last-level cache after the first time; so each case rotates through `copies`
copies of its inputs, other memory with equal content, and successive calls take them in
turn (DESIGN.md, "never let a cache fake the number"):

    copies = min(ceil(factor * cache_bytes / copy_bytes), max_copies,
                 floor(MEMORY_FRACTION * free_bytes / copy_bytes))    (0: the case is waived)
    factor = 4 on a GPU, 2 on the CPU (options["rotate_factor"])
    cache_bytes = the device's last-level cache (>= 256 MiB on ROCm: MI300X's Infinity Cache,
                  which torch does not report)

The timer gets flush_cache=False (the rotation is the flush) and, on a GPU, a whole number
of rotations per sample, >= MIN_GPU_LAUNCHES launches replayed as one CUDA graph, so no
host launch gap is timed. On the CPU each probe says how many calls make a sample
(`launches_per_sample`, cpu_whole_rotation).

What lives here, so that each probe module keeps only what is its own (work counts,
inputs, providers, reference, record fields):
- sizing: `cache_bytes_for`, `rotation_copies`, `size_rotation` -> a `Rotation`;
  `weight_rotation` sizes and fills seeded (weights, scales) copies
- timer budgets: GPU_BUDGET (the same for all four), `timing_budget`, `with_overrides`
- calls per sample: `launches_per_sample`
- timing after validation: `time_rotating` (the probe checks copy 0's output first)
- record fields: `Rotation.fields`, `rate_GBps`
- the case lifecycle: `InputPools` (one set of copies alive at a time) and
  `RotatingProbe`, the base class whose `run` waives, builds or reuses the pool, measures
  and frees the pool after its last planned case.
- re-measuring: a case whose samples scatter above roofline.trust.NOISY_SPREAD ((p80 -
  p20) / median) is measured once more (`more_cases`, MAX_ATTEMPTS in all, each record
  carrying its `attempt`); the fits keep each case's fastest attempt
  (records.fastest_per_case), so one disturbed shape does not become a curve's edge.

Used by ridgeline.probes.{gemv,attention,moe,dequant}; tests: tests/test_probes_gemv.py
(sizing, calls per sample) and every probe's own tests (the lifecycle, end to end).
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ridgeline.errors import Waived
from ridgeline.probes.base import Case, Probe, ProbeContext
from ridgeline.roofline.trust import sample_spread, scatters
from ridgeline.timing import Timing, Work

MIN_GPU_LAUNCHES = 16                # launches per graph-replayed sample, at least
ROCM_MIN_CACHE_BYTES = 256 * 2**20   # MI300X Infinity Cache; torch reports only the 4 MB L2
DEFAULT_CACHE_BYTES = 256 * 2**20    # a GPU that reports no L2
CPU_DEFAULT_CACHE_BYTES = 32 * 2**20
MEMORY_FRACTION = 0.5                # of the free memory the copies may take
ROTATE_FACTOR = {True: 4.0, False: 2.0}   # x the cache, on a GPU (True) and on the CPU

# Timer budgets per case on a GPU, (not quick, quick). A GPU sample is a graph of >= 16
# launches (~0.2-3 ms), so 15-40 ms of samples is 10-200 of them; with the GEMV probe's 200
# default cases, the timer's own 25 + 100 ms would make that probe alone take ~30 s.
GPU_BUDGET = {False: {"warmup_ms": 10.0, "rep_ms": 40.0}, True: {"warmup_ms": 5.0, "rep_ms": 15.0}}
# The CPU budget of a probe whose sample is one call of 1-50 ms (moe, dequant): the reps
# are capped too, since a call estimated fast on a busy shared CPU can run 50x slower a
# moment later.
SLOW_CALL_CPU_BUDGET = {"warmup_ms": 5.0, "rep_ms": 30.0, "min_reps": 3, "max_reps": 20}
BUDGET_KEYS = ("warmup_ms", "rep_ms", "min_reps", "max_reps")   # option overrides
# Measurements of one case in all, when its samples scatter above NOISY_SPREAD.
MAX_ATTEMPTS = 2


# --- sizing (pure) --------------------------------------------------------------------

def cache_bytes_for(device) -> int:
    """The last-level cache the rotated inputs must exceed."""
    l2 = device.l2_cache_bytes or (CPU_DEFAULT_CACHE_BYTES if device.kind == "cpu"
                                   else DEFAULT_CACHE_BYTES)
    if device.kind == "rocm":
        l2 = max(l2, ROCM_MIN_CACHE_BYTES)
    return int(l2)


def rotation_copies(copy_bytes: int, cache_bytes: int, free_bytes: int,
                    factor: float = 4.0, mem_fraction: float = MEMORY_FRACTION,
                    max_copies: int | None = None) -> int:
    """Copies so their total is >= factor x cache, bounded by memory; 0 if one does not fit."""
    want = max(1, math.ceil(factor * cache_bytes / copy_bytes))
    if max_copies:
        want = min(want, int(max_copies))
    afford = int(mem_fraction * free_bytes // copy_bytes)
    return max(0, min(want, afford))


def launches_per_sample(copies: int, device_kind: str, *, cpu_whole_rotation: bool,
                        copy_bytes: int = 0, enough_bytes: int | None = None) -> int:
    """Calls per timed sample.

    GPU: whole rotations (each sample reads every copy), at least MIN_GPU_LAUNCHES
    launches, or, with `enough_bytes`, fewer rounds once a sample moves that much working
    set (a 10 ms call need not be replayed 16 times). CPU: one rotation
    (`cpu_whole_rotation`) or one call; a probe chooses by what one call costs there.
    """
    if device_kind == "cpu":
        return copies if cpu_whole_rotation else 1
    rounds = math.ceil(MIN_GPU_LAUNCHES / copies)
    if enough_bytes:
        rounds = min(rounds, math.ceil(enough_bytes / (copies * copy_bytes)))
    return copies * max(1, rounds)


def timing_budget(device_kind: str, quick: bool, cpu: Mapping[bool, dict[str, float]]
                  ) -> dict[str, float]:
    """Timer budgets per case: GPU_BUDGET on a GPU, the probe's own `cpu` table on the CPU
    (keyed by quick), whose calls cost very different times from one probe to another."""
    table = cpu if device_kind == "cpu" else GPU_BUDGET
    return dict(table[bool(quick)])


def with_overrides(budget: dict[str, float], opts: Mapping[str, Any]) -> dict[str, float]:
    """`budget` with the options' warmup_ms, rep_ms, min_reps and max_reps on top."""
    return {**budget, **{key: opts[key] for key in BUDGET_KEYS if key in opts}}


# --- one case's copies ----------------------------------------------------------------

@dataclass
class Rotation:
    """`copies` copies of a case's inputs, `copy_bytes` each; `inputs[name][i]` is copy i."""

    copies: int
    copy_bytes: int
    cache_bytes: int
    inputs: dict[str, list] = field(default_factory=dict)

    def __getitem__(self, name: str) -> list:
        return self.inputs[name]

    @property
    def rotation_bytes(self) -> int:
        return self.copies * self.copy_bytes

    def fields(self) -> dict[str, int]:
        """The record fields that show the rotation beat the cache."""
        return {"copies": self.copies, "rotation_bytes": self.rotation_bytes,
                "cache_bytes": self.cache_bytes}


def size_rotation(ctx: ProbeContext, opts: Mapping[str, Any], copy_bytes: int,
                  too_big: Callable[[int, int], str]) -> Rotation:
    """The copies this case gets here (inputs not built yet); Waived(too_big(copy_bytes,
    free_bytes)) when not even one fits in MEMORY_FRACTION of the free memory."""
    cache = cache_bytes_for(ctx.device)
    factor = float(opts.get("rotate_factor", ROTATE_FACTOR[ctx.device.kind != "cpu"]))
    free = ctx.free_memory_bytes()
    copies = rotation_copies(copy_bytes, cache, free, factor, max_copies=opts.get("max_copies"))
    if copies < 1:
        raise Waived(too_big(copy_bytes, free))
    return Rotation(copies=copies, copy_bytes=copy_bytes, cache_bytes=cache)


def weight_rotation(ctx: ProbeContext, opts: Mapping[str, Any], copy_bytes: int,
                    too_big: Callable[[int, int], str], first_seed: int,
                    make: Callable[[Any], tuple[Any, Any]]) -> Rotation:
    """size_rotation, with inputs {"weights": [...], "scales": [...]}: copy i is
    make(a generator on ctx's device seeded first_seed + i) -> (weight, scale or None)."""
    import torch

    pool = size_rotation(ctx, opts, copy_bytes, too_big)
    gen = torch.Generator(device=ctx.torch_device)
    pool.inputs = {"weights": [], "scales": []}
    for i in range(pool.copies):
        gen.manual_seed(first_seed + i)
        w, s = make(gen)
        pool["weights"].append(w)
        pool["scales"].append(s)
    return pool


def time_rotating(ctx: ProbeContext, call: Callable[[int], Any], copies: int, work: Work, *,
                  launches: int, budget: Mapping[str, float], flush_cache: bool = False) -> Timing:
    """Time `call(i)`, successive calls taking copies 0, 1, .., copies - 1, 0, ..

    Called once copy 0's output has been checked (validate, then time). flush_cache=False
    by default: the rotation keeps the inputs out of the cache, a flush would only cost.
    """
    counter = itertools.count()

    def fn():
        return call(next(counter) % copies)

    return ctx.timer.time(fn, work=work, flush_cache=flush_cache,
                          launches_per_sample=launches, **budget)


def rate_GBps(nbytes: float, rec: Mapping[str, Any]) -> float | None:
    """nbytes over the record's median time, in GB/s (None for a zero time)."""
    seconds = rec["time_ms_median"] * 1e-3
    return nbytes / seconds / 1e9 if seconds > 0 else None


# --- the case lifecycle ---------------------------------------------------------------

class InputPools:
    """A probe's rotated inputs, one set alive at a time: built by the first case of its
    key, reused by the others (providers, batch sizes), freed after the last planned one,
    so free memory (this probe's next sizing, later probes') is true."""

    def __init__(self) -> None:
        self._pools: dict[tuple, Rotation] = {}
        self._planned: dict[tuple, Counter] = {}   # key -> planned runs by case label

    def __len__(self) -> int:
        return len(self._pools)

    def clear_plan(self) -> None:
        self._planned = {}

    def expect(self, key: tuple, case: Case) -> None:
        """`case` is planned to run on the inputs of `key`."""
        self._planned.setdefault(key, Counter())[case.label] += 1

    def get(self, key: tuple, build: Callable[[], Rotation]) -> Rotation:
        if key not in self._pools:
            self.drop()  # free the previous key's inputs before sizing these
            self._pools[key] = build()
        return self._pools[key]

    def release(self, key: tuple, case: Case) -> None:
        """`case` ran (or failed, or was waived); the key's last planned case frees it. A case
        that was not planned (waived when planned, or run without `cases`) frees nothing."""
        left = self._planned.get(key)
        if not left or not left[case.label]:
            return
        left[case.label] -= 1
        if not +left:
            del self._planned[key]
            self.drop()

    def drop(self) -> None:
        if not self._pools:
            return
        self._pools.clear()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # so free-memory sizing (here and in later probes) is true


class RotatingProbe(Probe):
    """A probe whose cases time rotated copies of their inputs.

    A subclass gives `waiver`, `cases` (through `plan`), `pool_key` (which cases share one
    set of inputs), `build_pool` (a Rotation with its inputs) and `measure` (one record).
    """

    def __init__(self) -> None:
        self.pools = InputPools()
        self._scattered: list[Case] = []   # measured cases whose samples scattered

    def available(self, ctx: ProbeContext) -> str | None:
        if importlib.util.find_spec("torch") is None:
            return "torch is not installed"
        return None

    def waiver(self, params: dict[str, Any], ctx: ProbeContext) -> str | None:
        """Why this case cannot run on ctx.device, or None."""
        return None

    def pool_key(self, params: dict[str, Any]) -> tuple:
        raise NotImplementedError

    def build_pool(self, ctx: ProbeContext, params: dict[str, Any]) -> Rotation:
        raise NotImplementedError

    def measure(self, ctx: ProbeContext, pool: Rotation, params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def plan(self, ctx: ProbeContext, points: Iterable[dict[str, Any]],
             waive_by: tuple[str, ...] = ("dtype", "provider")) -> list[Case]:
        """The cases of `points` in order, with one waived case per (waive_by params, reason)
        rather than a wall of them; the runnable ones are counted against their pools."""
        out: list[Case] = []
        waived_seen: set[tuple] = set()
        self.pools.clear_plan()
        self._scattered = []
        for params in points:
            case = Case(params)
            reason = self.waiver(params, ctx)
            if reason:
                tag = (*(params[k] for k in waive_by), reason)
                if tag in waived_seen:
                    continue
                waived_seen.add(tag)
            else:
                self.pools.expect(self.pool_key(params), case)
            out.append(case)
        return out

    def pool(self, ctx: ProbeContext, params: dict[str, Any]) -> Rotation:
        """The inputs of this case's key, built on first use."""
        return self.pools.get(self.pool_key(params), lambda: self.build_pool(ctx, params))

    def run(self, case: Case, ctx: ProbeContext) -> list[dict[str, Any]]:
        reason = self.waiver(case.params, ctx)
        try:
            if reason:
                raise Waived(reason)
            rec = self.measure(ctx, self.pool(ctx, case.params), case.params)
            rec["attempt"] = int(case.get("attempt", 1))
            if rec.get("validated") and scatters(sample_spread(rec)):
                self._scattered.append(case)
            return [rec]
        finally:
            self.pools.release(self.pool_key(case.params), case)

    def more_cases(self, records: list[dict[str, Any]], ctx: ProbeContext) -> list[Case]:
        """The cases whose samples scattered, once more each (MAX_ATTEMPTS in all), grouped
        by their inputs so each pool is built once and freed after its last case."""
        again = [Case({**c.params, "attempt": int(c.get("attempt", 1)) + 1})
                 for c in self._scattered if int(c.get("attempt", 1)) < MAX_ATTEMPTS]
        self._scattered = []
        order: dict[tuple, int] = {}
        for c in again:
            order.setdefault(self.pool_key(c.params), len(order))
        again.sort(key=lambda c: order[self.pool_key(c.params)])
        for c in again:
            self.pools.expect(self.pool_key(c.params), c)
        return again
