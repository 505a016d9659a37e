"""Static batch: one batch of B prompts run to completion, timed as latency benchmarks time it.

    run = static_batch(spec, precision, hw, StaticBatch(batch=8, input_len=1024, output_len=128))
    ridgeline plan --model llama-3.1-8b --gpu h100-sxm --static-batch 8 --input-len 1024 \\
        --output-len 128

TensorRT-LLM's gptSessionBenchmark and vLLM's benchmark_latency time one call that
prefills B prompts of I tokens and then generates until each has O output tokens (no
early stop). The prefill samples the first output token of every prompt; each decode
step then adds one token to all B sequences, every sequence attending to its growing
context (times from sizing.latency on the profile's roofline):

    latency    = prefill(B prompts of I tokens)               the passes of the chunked-
                                                              prefill budget, one after another
                 + sum over j = 1 .. O-1 of decode(B, I + j - 1)   step j attends to I + j tokens
                 + the engine layer's request overhead         once (below; 0 without one)
    tokens/s   = B x O / latency                              gptSessionBenchmark's tokensPerSec
    per GPU    = tokens/s / (TP x PP)

Every step is priced when O - 1 <= EXACT_STEPS; beyond, the step time is priced at
EXACT_STEPS + 1 evenly spaced contexts and summed over the steps by linear interpolation
(the decode step is linear in context up to the smooth roofline maximum: far under 0.1%).
The batch must fit: B x (I + O) tokens of KV on the chosen TP x PP (the lowest TP inside
a node that holds it, unless --tp/--pp force one).

A serving engine layer (`engine_layer`, `--engine`; sizing.engine) prices the prefill and
every decode step as the other entry points price theirs: its step overhead on each prefill
pass and each decode step, its all-reduce implementation and efficiency factors in every
step. Its per-request overhead is added once to the latency (the first token comes at
prefill + it): the B requests are in flight together, as the simulation adds it to each
request's TTFT and E2E and once to a run's duration. None: the hardware alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from ridgeline.errors import RidgelineError
from ridgeline.sizing.engine import EngineProfile
from ridgeline.sizing.hardware import Hardware
from ridgeline.sizing.latency import StepTime, decode_step_time, prefill_time, valid_tp
from ridgeline.sizing.memory import EngineConfig, replica_memory
from ridgeline.sizing.models import ModelSpec
from ridgeline.sizing.options import check, option
from ridgeline.sizing.parallelism import TP_DEGREES
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.workload import ParallelOptions

EXACT_STEPS = 2048


@dataclass(frozen=True, kw_only=True)
class StaticBatch:
    """Static batch (latency of one batch, instead of a serving plan)."""

    batch: int | None = option(None, "run one batch of B prompts to completion and report its "
                                     "latency and tokens/s per GPU (as gptSessionBenchmark and "
                                     "vLLM benchmark_latency time it)", flag="--static-batch",
                               metavar="B")
    input_len: int | None = option(None, "static batch: input tokens per prompt", metavar="I")
    output_len: int | None = option(None, "static batch: output tokens per prompt", metavar="O")

    def __post_init__(self) -> None:
        check(self, "a positive whole number", "batch", "input_len", "output_len")
        if None in (self.batch, self.input_len, self.output_len):
            raise RidgelineError("a static batch needs --static-batch B, --input-len I and "
                                 "--output-len O")


@dataclass
class StaticBatchResult:
    """Latency and throughput of one static batch (seconds, tokens/s)."""

    batch: int
    input_len: int
    output_len: int
    tp: int
    pp: int
    gpus: int
    prefill_s: float                 # all B prompts: also the time to the first token
    decode_steps: int                # O - 1
    decode_s: float                  # the decode steps together
    latency_s: float                 # prefill_s + decode_s + request_overhead_s
    first_step_s: float | None       # decode step at context I (None when O = 1)
    last_step_s: float | None        # decode step at context I + O - 2
    mean_step_s: float | None        # decode_s / decode_steps: the mean ITL
    tokens_per_s: float              # B x O / latency
    tokens_per_s_per_gpu: float
    prefill_bound: str
    decode_bound: str | None
    memory_per_gpu_bytes: float
    usable_per_gpu_bytes: float
    basis: str
    request_overhead_s: float = 0.0  # the engine layer's, once (TTFT = prefill_s + this)
    engine_layer: dict[str, Any] | None = None   # EngineProfile.summary(); None: not given
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "ridgeline-static-batch", **asdict(self)}


def _layout(spec: ModelSpec, precision: Precision, hw: Hardware, engine: EngineConfig,
            run: StaticBatch, parallel: ParallelOptions) -> tuple[int, int, Any]:
    """(tp, pp, per-GPU memory): the forced layout, else the lowest TP in a node that fits."""
    context = run.input_len + run.output_len

    def memory(tp: int, pp: int) -> Any:
        return replica_memory(spec, precision, engine, hw.memory_bytes, tp, pp, run.batch, context)

    if parallel.tp is not None or parallel.pp is not None:
        tp, pp = parallel.tp or 1, parallel.pp or 1
        why = valid_tp(spec, tp)
        if why:
            raise RidgelineError(f"--tp {tp}: {why}")
        layouts = [(tp, pp)]
    else:
        layouts = [(t, 1) for t in TP_DEGREES if t <= parallel.gpus_per_node and
                   valid_tp(spec, t) is None]
    for tp, pp in layouts:
        mem = memory(tp, pp)
        if mem.fits:
            return tp, pp, mem
    tp, pp = layouts[-1]
    mem = memory(tp, pp)
    raise RidgelineError(f"a static batch of {run.batch} x {context:,} tokens does not fit "
                         f"{spec.name} at TP={tp} x PP={pp}: {mem.total_bytes / 1e9:,.1f} GB on "
                         f"the fullest GPU, {mem.usable_bytes / 1e9:,.1f} GB usable (it holds "
                         f"{mem.max_concurrency} such sequences)")


def _decode_total(step_s, first_context: int, steps: int) -> float:
    """sum of step_s(first_context + j) for j in 0..steps-1 (exact, or interpolated)."""
    if steps <= EXACT_STEPS:
        return sum(step_s(first_context + j) for j in range(steps))
    last = steps - 1
    knots = [k * last // EXACT_STEPS for k in range(EXACT_STEPS + 1)]  # strictly rising
    times = [step_s(first_context + k) for k in knots]
    total = 0.0
    for (a, ta), (b, tb) in zip(zip(knots, times), zip(knots[1:], times[1:])):
        n = b - a   # steps a .. b-1, linear between the knots; step `last` added below
        total += n * ta + (tb - ta) * (n - 1) / 2
    return total + times[-1]


def static_batch(spec: ModelSpec, precision: Precision, hw: Hardware, run: StaticBatch,
                 engine: EngineConfig | None = None,
                 parallel: ParallelOptions | None = None, *,
                 engine_layer: EngineProfile | None = None) -> StaticBatchResult:
    """Latency and tokens/s of one static batch (see the module docstring); `engine` is the
    scheduler's configuration, `engine_layer` the serving engine on top (None: nothing)."""
    engine = engine or EngineConfig()
    parallel = parallel or ParallelOptions()
    b, i, o = run.batch, run.input_len, run.output_len
    window = spec.max_position_embeddings
    if window and i + o > window:
        raise RidgelineError(f"{i} input + {o} output tokens exceed {spec.name}'s context window "
                             f"of {window:,}")
    tp, pp, mem = _layout(spec, precision, hw, engine, run, parallel)
    prefill = prefill_time(spec, precision, hw, b, i, tp=tp, pp=pp,
                           max_batched_tokens=engine.max_batched_tokens, engine=engine_layer)

    @lru_cache(maxsize=None)
    def step(context: int) -> StepTime:
        return decode_step_time(spec, precision, hw, b, context, tp=tp, pp=pp,
                                engine=engine_layer)

    steps = o - 1
    decode_s = _decode_total(lambda c: step(c).time_s, i, steps) if steps else 0.0
    first = step(i).time_s if steps else None
    last = step(i + steps - 1).time_s if steps else None
    # the requests overlap: their overhead (tokenize, set up, detokenize) is paid once
    request_s = engine_layer.request_overhead_s if engine_layer is not None else 0.0
    latency = prefill.time_s + decode_s + request_s
    tokens_per_s = b * o / latency
    notes = [engine_layer.describe()] if engine_layer is not None else []
    notes += prefill.notes
    if request_s:
        notes.append(f"latency includes the engine's request overhead once "
                     f"({request_s * 1e3:g} ms: the {b} requests run together)")
    if steps > EXACT_STEPS:
        notes.append(f"{steps:,} decode steps summed from {EXACT_STEPS + 1:,} priced contexts "
                     "(linear in between)")
    return StaticBatchResult(
        batch=b, input_len=i, output_len=o, tp=tp, pp=pp, gpus=tp * pp,
        prefill_s=prefill.time_s, decode_steps=steps, decode_s=decode_s, latency_s=latency,
        first_step_s=first, last_step_s=last, mean_step_s=decode_s / steps if steps else None,
        tokens_per_s=tokens_per_s, tokens_per_s_per_gpu=tokens_per_s / (tp * pp),
        prefill_bound=prefill.bound,
        decode_bound=step(i + steps - 1).bound if steps else None,
        memory_per_gpu_bytes=mem.total_bytes, usable_per_gpu_bytes=mem.usable_bytes,
        basis=hw.source, request_overhead_s=request_s,
        engine_layer=engine_layer.summary() if engine_layer is not None else None, notes=notes)
