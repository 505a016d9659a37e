"""One replica of a continuous-batching engine, step by step: vLLM v1's default scheduler.

    sched = SchedulerConfig(kv_blocks=20_000)                  # or scheduler_for(spec, ...)
    run = run_engine(step_model, sched, requests, OpenLoop(rps=10))   # -> EngineRun

Scheduler rules (vllm/v1/core/sched/scheduler.py, `Scheduler.schedule`, FCFS policy,
chunked prefill on, no prefix caching, no speculative decoding), once per step:

1. Running requests first, in admission order, while the token budget
   (`max_num_batched_tokens`) lasts: a decoding request takes 1 token, a request still
   in prefill takes min(its remaining prompt, the budget left) (chunked prefill).
2. Each scheduled request first gets the KV blocks its computed + new tokens need
   (blocks of `block_tokens`, from `kv_blocks` in all). When the free blocks run out,
   the most recently admitted running request is preempted (the last of the running
   list): its blocks are freed, it goes back to the *front* of the waiting queue, and
   it will recompute its prompt plus the tokens it had generated (preemption by
   recompute, the only kind v1 has). If the request being scheduled is itself the one
   preempted, scheduling of running requests stops.
3. Only if nothing was preempted this step: waiting requests in FCFS order, while
   budget is left and fewer than `max_num_seqs` run: each takes min(its tokens, budget)
   as its first chunk. Admission needs free blocks for the whole prompt when
   `reserve_full_prompt` (vLLM's `scheduler_reserve_full_isl`, default on in current
   vLLM; older releases checked only the first chunk: set it False), else for the first
   chunk; the first request that does not fit stops admission (head-of-line).
4. The step runs all of it as one forward pass (time from the step model); every
   decoding request and every request whose prompt (or recompute) completes samples one
   token at the step's end. A request ends at its last output token and frees its blocks.

Engine layer (sizing.engine, carried by the step model): its per-step overhead is inside
every step time; its per-request overhead takes no engine time: summarize adds it to each
request's TTFT and E2E, and a closed-loop client waits it out before sending again.

Blocks: a request holding t computed tokens holds ceil(t / block_tokens) blocks; a
decode step needs a new block when t is a multiple of the block size.

Speed: decoding requests are not visited one by one. They advance in lockstep (every
decoding request gains one token per step), so the engine keeps their count D, the sum
of their contexts, a heap of the steps at which each will finish, and how many cross a
block boundary at each step modulo the block size. A run of decode-only steps with
nothing to admit is then simulated in one go: its length is the steps to the next
finish, the next admissible arrival or the step where the free blocks would run out,
and its step times come vectorized from `decode_steps_s`. Steps with prefill chunks,
admissions or preemptions are simulated one at a time; only a preemption walks the
running list. `bulk=False` (or `record=True`) simulates every step on its own; the
tests check both give the same result.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from ridgeline.errors import RidgelineError
from ridgeline.sizing.memory import (DEFAULT_KV_BLOCK_TOKENS, DEFAULT_MAX_BATCHED_TOKENS,
                                     DEFAULT_MAX_NUM_SEQS, EngineConfig,
                                     kv_elements_per_token_layer, replica_memory)
from ridgeline.sizing.models import ModelSpec
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.simulation.load import ClosedLoop, Load, OpenLoop, Requests

MAX_RUN_STEPS = 4096  # longest decode run simulated in one go (bounds the arrays)

WAITING, PREFILL, DECODE, DONE = 1, 2, 3, 4


class StepTimes(Protocol):
    """What the engine needs of a step model (sizing.step_model.StepModel is one)."""

    def step_s(self, decode_seqs: int, decode_context_tokens: float,
               chunks: Sequence[tuple[int, int]] = (), sampled: int | None = None) -> float: ...

    def decode_steps_s(self, decode_seqs: int, context_tokens: float, growth: float,
                       steps: int) -> np.ndarray: ...


def request_overhead_s(sm: Any) -> float:
    """The serving engine's per-request overhead carried by a step model (StepModel.engine,
    sizing.engine): tokenization, detokenization, request setup. It adds to TTFT and E2E
    (metrics.summarize) and, in a closed loop, to each client's wait before its next request;
    it takes no engine time. 0 without an engine layer."""
    engine = getattr(sm, "engine", None)
    return engine.request_overhead_s if engine is not None else 0.0


@dataclass(frozen=True)
class SchedulerConfig:
    """The engine limits the scheduler enforces (vLLM names in comments)."""

    kv_blocks: int                                           # num_gpu_blocks
    block_tokens: int = DEFAULT_KV_BLOCK_TOKENS              # block_size
    max_num_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    reserve_full_prompt: bool = True                         # scheduler_reserve_full_isl

    def __post_init__(self) -> None:
        for name in ("kv_blocks", "block_tokens", "max_num_batched_tokens", "max_num_seqs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise RidgelineError(f"{name} must be a whole number >= 1, got {v!r}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            # vLLM refuses this too: every running sequence must fit one step's budget
            raise RidgelineError(f"max_num_batched_tokens ({self.max_num_batched_tokens}) must "
                                 f"be >= max_num_seqs ({self.max_num_seqs})")

    @property
    def kv_tokens(self) -> int:
        return self.kv_blocks * self.block_tokens

    def to_dict(self) -> dict[str, Any]:
        return {"kv_blocks": self.kv_blocks, "block_tokens": self.block_tokens,
                "kv_tokens": self.kv_tokens,
                "max_num_batched_tokens": self.max_num_batched_tokens,
                "max_num_seqs": self.max_num_seqs,
                "reserve_full_prompt": self.reserve_full_prompt}


def kv_capacity_tokens(spec: ModelSpec, precision: Precision, engine: EngineConfig,
                       gpu_memory_bytes: float, tp: int = 1) -> int:
    """KV tokens one replica (TP GPUs, PP = 1) can hold: what the memory plan leaves after
    weights, activations and LoRA on each GPU, over the KV bytes per token on one GPU."""
    rm = replica_memory(spec, precision, engine, gpu_memory_bytes, tp, 1, 0, 1)
    per_token = kv_elements_per_token_layer(spec, tp) * spec.num_layers * precision.kv_bytes
    free = rm.usable_bytes - rm.fixed_bytes
    return int(free // per_token) if free > 0 and per_token > 0 else 0


def scheduler_for(spec: ModelSpec, precision: Precision, gpu_memory_bytes: float,
                  engine: EngineConfig = EngineConfig(), tp: int = 1,
                  reserve_full_prompt: bool = True) -> SchedulerConfig:
    """The scheduler limits of a replica from the planner's engine options and memory plan."""
    tokens = kv_capacity_tokens(spec, precision, engine, gpu_memory_bytes, tp)
    blocks = tokens // engine.kv_block_tokens
    if blocks < 1:
        raise RidgelineError(f"{spec.name} at TP={tp} leaves no memory for the KV cache")
    return SchedulerConfig(blocks, engine.kv_block_tokens, engine.max_batched_tokens,
                           engine.max_num_seqs, reserve_full_prompt)


@dataclass
class StepRecord:
    """One simulated step (record=True): who ran, and what happened at its end."""

    start_s: float
    end_s: float
    decodes: tuple[int, ...]                  # request ids, in running order
    chunks: tuple[tuple[int, int, int], ...]  # (request, new tokens, prior tokens)
    finished: tuple[int, ...]
    preempted: tuple[int, ...]                # preempted when this step was scheduled
    used_blocks: int


@dataclass
class EngineRun:
    """Everything a run measured: per request (indexed like the requests), per step."""

    arrival_s: np.ndarray
    first_scheduled_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    preemptions_per_request: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    itl_s: np.ndarray                # inter-token gaps: one value per step ...
    itl_weight: np.ndarray           # ... and how many requests had that gap in it
    busy_s: float                    # time with a step running
    batch_area: float                # integral of sequences per step over busy time
    kv_block_area: float             # integral of used KV blocks over time
    peak_kv_blocks: int
    concurrency_area: float          # integral of requests in the system (queued + running)
    steps: int
    preemptions: int
    kv_blocks: int
    steps_log: list[StepRecord] = field(default_factory=list)
    request_overhead_s: float = 0.0  # the engine's per request (summarize adds it to TTFT, E2E)


class _Gaps:
    """Inter-token gaps, kept as the step-time arrays of decode runs (each with the number of
    requests that saw them) and single values; joined once at the end."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []
        self.run_weights: list[int] = []
        self.values: list[float] = []
        self.weights: list[float] = []

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        lengths = [len(r) for r in self.runs]
        d = np.concatenate(self.runs + [np.asarray(self.values, dtype=np.float64)])
        w = np.concatenate([np.repeat(np.asarray(self.run_weights, dtype=np.float64), lengths),
                            np.asarray(self.weights, dtype=np.float64)])
        return d, w


def run_engine(sm: StepTimes, sched: SchedulerConfig, requests: Requests, load: Load, *,
               bulk: bool = True, record: bool = False) -> EngineRun:
    """Simulate the requests through one replica under `load` until every one has finished."""
    n = len(requests)
    inp = [int(x) for x in requests.input_tokens]
    out = [int(x) for x in requests.output_tokens]
    bs = sched.block_tokens
    cap = sched.kv_blocks
    worst = max(-(-(i + o - 1) // bs) for i, o in zip(inp, out))
    if worst > cap:
        r = max(range(n), key=lambda j: inp[j] + out[j])
        raise RidgelineError(f"request {r} ({inp[r]} + {out[r]} tokens) needs {worst} KV blocks "
                             f"alone; the replica holds {cap} ({sched.kv_tokens} tokens)")
    budget_max = sched.max_num_batched_tokens
    max_seqs = sched.max_num_seqs
    overhead = request_overhead_s(sm)
    reserve = sched.reserve_full_prompt
    if record:
        bulk = False

    arr = [0.0] * n
    pending: deque[int] = deque()          # requests not yet arrived, in arrival order
    closed = isinstance(load, ClosedLoop)
    next_issue = 0
    if closed:
        next_issue = min(load.concurrency, n)
        pending.extend(range(next_issue))  # every client sends at t = 0
    else:
        assert isinstance(load, OpenLoop)
        arr = [float(x) for x in requests.arrivals_s(load)]
        pending.extend(range(n))

    state = [0] * n
    gen = [0] * n             # output tokens so far (decoding requests: G - base)
    comp = [0] * n            # computed tokens of a request in prefill
    base = [0] * n            # decoding: gen = G - base
    first_sched = [-1.0] * n
    first_tok = [-1.0] * n
    last_tok = [-1.0] * n
    finish = [-1.0] * n
    npre = [0] * n
    gaps: list[float] = []    # inter-token gaps across a preemption (one request each)

    waiting: deque[int] = deque()
    running: dict[int, None] = {}     # admission order (dicts keep insertion order)
    prefilling: list[int] = []        # the running requests still in prefill, same order
    heap: list[tuple[int, int, int]] = []   # (G at which it finishes, request, base)
    counts = [0] * bs                 # decoding requests needing a block when G % bs == key
    D = 0                             # decoding requests
    K = 0                             # sum over decoding of (input - base): contexts = K + D G
    G = 0                             # steps run
    T = 0.0
    free = cap
    nsys = 0                          # requests arrived and not finished
    itl = _Gaps()
    itl_runs, itl_run_w = itl.runs.append, itl.run_weights.append
    itl_vals, itl_w = itl.values.append, itl.weights.append
    busy = batch_area = kv_area = conc_area = 0.0
    peak = 0
    preemptions = 0
    done = 0
    log: list[StepRecord] = []
    idle_schedules = 0

    def blocks_of(r: int) -> int:
        if state[r] == DECODE:
            return -(-(inp[r] + G - base[r] - 1) // bs)
        return -(-comp[r] // bs)

    def preempt(r: int) -> None:
        nonlocal D, K, free, preemptions
        b = blocks_of(r)
        if state[r] == DECODE:
            D -= 1
            K -= inp[r] - base[r]
            counts[(base[r] + 1 - inp[r]) % bs] -= 1
            gen[r] = G - base[r]
            last_tok[r] = T
        else:
            prefilling.remove(r)
        comp[r] = 0
        state[r] = WAITING
        free += b
        del running[r]
        waiting.appendleft(r)
        npre[r] += 1
        preemptions += 1

    def end(r: int) -> None:
        nonlocal D, K, free, nsys, done, next_issue
        free += blocks_of(r)
        if state[r] == DECODE:
            D -= 1
            K -= inp[r] - base[r]
            counts[(base[r] + 1 - inp[r]) % bs] -= 1
        state[r] = DONE
        finish[r] = T
        del running[r]
        nsys -= 1
        done += 1
        if closed and next_issue < n:  # this client sends its next request
            arr[next_issue] = T + load.think_s + overhead  # the client sees its answer late
            pending.append(next_issue)
            next_issue += 1

    while done < n:
        # -- arrivals up to now join the waiting queue -------------------------------------
        while pending and arr[pending[0]] <= T:
            r = pending.popleft()
            waiting.append(r)
            state[r] = WAITING
            conc_area += T - arr[r]
            nsys += 1
        if not running and not waiting:
            T = max(T, arr[pending[0]])  # idle until the next arrival
            continue

        # -- schedule: running requests (decodes in aggregate, then prefills in order) -----
        budget = budget_max - D
        need = counts[G % bs] if D else 0
        chunks: list[tuple[int, int, int]] = []
        for r in prefilling:
            if budget <= 0:
                break
            c = comp[r]
            k = min(inp[r] + gen[r] - c, budget)
            need += -(-(c + k) // bs) - -(-c // bs)
            chunks.append((r, k, c))
            budget -= k
        victims: list[int] = []
        if need > free:
            chunks, budget, victims = _schedule_with_preemption(
                running, state, inp, gen, comp, base, G, bs, budget_max, free, blocks_of, preempt)
            free = _free_after(cap, running, state, inp, comp, base, G, bs, chunks)
        else:
            free -= need
        if not victims:
            # -- waiting requests, FCFS, while budget, sequences and blocks allow ----------
            while waiting and budget > 0 and len(running) < max_seqs:
                r = waiting[0]
                tok = inp[r] + gen[r]
                k = min(tok, budget)
                nb = -(-k // bs)
                if (-(-tok // bs) if reserve else nb) > free:
                    break
                waiting.popleft()
                running[r] = None
                prefilling.append(r)
                state[r] = PREFILL
                comp[r] = 0
                if first_sched[r] < 0:
                    first_sched[r] = T
                free -= nb
                chunks.append((r, k, 0))
                budget -= k

        if D == 0 and not chunks:
            # nothing could run: only possible right after preempting everything
            idle_schedules += 1
            if idle_schedules > 2:
                raise RidgelineError("simulation stalled: nothing can be scheduled (internal)")
            continue
        idle_schedules = 0
        used = cap - free
        peak = max(peak, used)
        start = T
        decoders = tuple(r for r in running if state[r] == DECODE) if record else ()

        if not chunks:
            # -- a run of decode-only steps ------------------------------------------------
            while heap and (state[heap[0][1]] != DECODE or base[heap[0][1]] != heap[0][2]):
                heapq.heappop(heap)  # stale: preempted since it was pushed
            kmax = min(heap[0][0] - G, MAX_RUN_STEPS) if bulk else 1
            if kmax > 1 and D * ((kmax - 2) // bs + 1) > free:
                # the free blocks may run out: the step that would is scheduled on its own
                needs = np.asarray(counts)[(G + np.arange(1, kmax)) % bs]
                kmax = 1 + int(np.searchsorted(np.cumsum(needs), free, side="right"))
            if kmax > 1:
                d = sm.decode_steps_s(D, K + D * G, D, kmax)
                cum = d.cumsum()
                if pending and not waiting and len(running) < max_seqs:
                    # an arrival that could be admitted ends the run after the step it falls in
                    kmax = min(kmax, 1 + int(cum.searchsorted(arr[pending[0]] - T)))
                dt = float(cum[kmax - 1])
                itl_runs(d[:kmax])
                itl_run_w(D)
                # blocks taken by steps 1..kmax-1: each decode needs one every bs steps
                full, rem = divmod(kmax - 1, bs)
                grown = full * D
                if rem:
                    i = (G + 1) % bs
                    grown += sum(counts[i:i + rem]) + (sum(counts[:i + rem - bs])
                                                       if i + rem > bs else 0)
                free -= grown
                kv_area += dt * (used + grown / 2)  # within a run: at the mean growth rate
                peak = max(peak, used + grown)
            else:
                dt = sm.step_s(D, K + D * G, (), D)
                itl_vals(dt)
                itl_w(D)
                kv_area += dt * used
        else:
            # -- one step with prefill chunks -----------------------------------------------
            kmax = 1
            sampled = D
            for r, k, c in chunks:
                if c + k == inp[r] + gen[r]:
                    sampled += 1
            dt = sm.step_s(D, K + D * G, [(k, c) for _, k, c in chunks], sampled)
            kv_area += dt * used
            if D:
                itl_vals(dt)
                itl_w(D)

        # -- after the step (or the run of decode steps) --------------------------------------
        T += dt
        G += kmax
        busy += dt
        batch_area += dt * (D + len(chunks))
        conc_area += dt * nsys
        finished = []
        for r, k, c in chunks:
            comp[r] = c + k
            if comp[r] < inp[r] + gen[r]:
                continue
            gen[r] += 1  # the chunk that completes the prompt samples a token
            if gen[r] == 1:
                first_tok[r] = T
            else:
                gaps.append(T - last_tok[r])
            prefilling.remove(r)
            if gen[r] >= out[r]:
                end(r)
                finished.append(r)
                continue
            state[r] = DECODE
            b = base[r] = G - gen[r]
            K += inp[r] - b
            D += 1
            counts[(b + 1 - inp[r]) % bs] += 1
            heapq.heappush(heap, (b + out[r], r, b))
        while heap and heap[0][0] <= G:
            _, r, b = heapq.heappop(heap)
            if state[r] == DECODE and base[r] == b:
                end(r)
                finished.append(r)
        if record:
            log.append(StepRecord(start, T, decoders, tuple(chunks), tuple(finished),
                                  tuple(victims), used))
            _check_blocks(cap, free, running, blocks_of)

    itl.values.extend(gaps)
    itl.weights.extend([1.0] * len(gaps))
    itl_d, itl_wt = itl.arrays()
    return EngineRun(
        arrival_s=np.asarray(arr), first_scheduled_s=np.asarray(first_sched),
        first_token_s=np.asarray(first_tok), finish_s=np.asarray(finish),
        preemptions_per_request=np.asarray(npre), input_tokens=np.asarray(inp),
        output_tokens=np.asarray(out), itl_s=itl_d, itl_weight=itl_wt,
        busy_s=busy, batch_area=batch_area, kv_block_area=kv_area, peak_kv_blocks=peak,
        concurrency_area=conc_area, steps=G, preemptions=preemptions, kv_blocks=cap,
        steps_log=log, request_overhead_s=overhead)


def _schedule_with_preemption(running, state, inp, gen, comp, base, G, bs, budget_max, free,
                              blocks_of, preempt):
    """vLLM's running loop, request by request, when this step's blocks do not all fit:
    allocate in admission order; on failure preempt the last running request and retry."""
    order = list(running)
    budget = budget_max
    chunks: list[tuple[int, int, int]] = []
    victims: list[int] = []
    i = 0
    while i < len(order) and budget > 0:
        r = order[i]
        if state[r] == DECODE:
            k = 1
            nb = 1 if (inp[r] + G - base[r] - 1) % bs == 0 else 0
        else:
            c = comp[r]
            k = min(inp[r] + gen[r] - c, budget)
            nb = -(-(c + k) // bs) - -(-c // bs)
        self_preempted = False
        while nb > free:
            v = order.pop()
            free += blocks_of(v)
            preempt(v)
            victims.append(v)
            if v == r:
                self_preempted = True
                break
        if self_preempted:
            break
        free -= nb
        budget -= k
        if state[r] != DECODE:
            chunks.append((r, k, comp[r]))
        i += 1
    # every decoding request left was scheduled: a request still in prefill that uses up
    # the budget is the last admitted (admission stops when the budget is spent), so no
    # decode ever comes after it in the running list (decodes advance in lockstep)
    assert all(state[r] != DECODE for r in order[i:]), "a decode was left unscheduled"
    return chunks, budget, victims


def _free_after(cap, running, state, inp, comp, base, G, bs, chunks) -> int:
    """Free blocks once this step's allocations are made (after a preemption)."""
    held = 0
    pending = {r: (k, c) for r, k, c in chunks}
    for r in running:
        if state[r] == DECODE:
            held += -(-(inp[r] + G - base[r]) // bs)   # this step's token included
        else:
            k, c = pending.get(r, (0, comp[r]))
            held += -(-(c + k) // bs)
    return cap - held


def _check_blocks(cap, free, running, blocks_of) -> None:
    """Record mode: the free-block count agrees with the blocks each request holds."""
    held = sum(blocks_of(r) for r in running)
    if held != cap - free:
        raise AssertionError(f"KV accounting: {held} blocks held, {cap - free} counted")
