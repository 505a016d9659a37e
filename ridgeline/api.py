"""The stable Python API of the planner: what notebooks and other tools call (never torch).

    from ridgeline import api

    gpu = api.load_gpu("h100-sxm")                  # or api.load_profile("profile.json")
    model = api.load_model("meta-llama/Llama-3.3-70B-Instruct")   # name, HF id, config.json
    step = api.decode_step(model, gpu, batch=32, context_tokens=4096, precision="fp8", tp=4)
    first = api.prefill(model, gpu, input_tokens=8192, precision="fp8", tp=4)
    run = api.static_batch(model, gpu, batch=8, input_len=1024, output_len=128, precision="fp8")
    point = api.serving_point(model, gpu, concurrency=32, input_p95=8192, output_p95=512, tp=4)
    p = api.plan(model, gpu, api.Workload(input_p95=8192, output_p95=512, concurrency=50,
                                          peak_rps=120),
                 api.SLO(ttft_s=2, itl_s=0.05, gpu_hourly=2.5), precision="fp8")
    sim = api.simulate(model, gpu, api.Workload(input_p95=8192, output_p95=512, concurrency=50),
                       api.SLO(ttft_s=2, itl_s=0.05), precision="fp8", tp=4)

Inputs are the planner's option dataclasses (Workload, SLO, EngineConfig, ParallelOptions,
FleetOptions, PrecisionOptions, PlanMethod, and simulate's LengthOptions, LoadOptions,
CurveSLO: keyword construction, the CLI's defaults and checks);
outputs are plain dataclasses with units in their field names, each with `to_dict()`.
`serving_engine` (decode_step, prefill, static_batch, plan, simulate) adds the engine layer
on top of the hardware: a preset name ("vllm", "sglang", "trtllm"), an engine.json written by
`ridgeline calibrate`, or an EngineProfile (docs/engine.md); None adds nothing.
`precision` is a weight dtype ("fp8": activations and KV cache chosen as `ridgeline plan`
chooses them), a PrecisionOptions (`weights`, `activations`, `kv`, `int4_group_size`,
`int4_zero_point`: the flags; `PrecisionOptions(weights="int4", int4_group_size=32,
int4_zero_point="fp16")` for gpt-fast's G=32 checkpoints, a bf16 zero per group), or a
resolved Precision (its `int4_group_size` field, default 128, and `int4_zero_point`, default
"none"; "int4" for AWQ/GPTQ qzeros). Bad input raises
ridgeline.errors.RidgelineError with one line. The names in `__all__` are the stable
surface; everything under ridgeline.sizing may change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Union

from ridgeline.errors import RidgelineError
from ridgeline.sizing.engine import EngineProfile, load_engine
from ridgeline.sizing.hardware import Hardware, hardware_from_gpu_name, hardware_from_profile
from ridgeline.sizing.latency import StepTime, decode_step_time, prefill_time
from ridgeline.sizing.memory import EngineConfig
from ridgeline.sizing.models import ModelSpec, find_model
from ridgeline.sizing.precision import (Precision, PrecisionOptions, device_notes,
                                      require_supported)
from ridgeline.sizing.serving import ReplicaModel, ServingPoint, Shape
from ridgeline.sizing.static_batch import StaticBatch, StaticBatchResult
from ridgeline.sizing.plan import PlanMethod
from ridgeline.sizing.simulation.options import CurveSLO, LengthOptions, LoadOptions
from ridgeline.sizing.workload import SLO, FleetOptions, ParallelOptions, Workload

__all__ = ["GPU", "Model", "Step", "Plan", "Simulation", "ServingPoint", "StaticBatchResult",
           "Workload", "SLO", "EngineConfig", "ParallelOptions", "FleetOptions",
           "PrecisionOptions", "Precision", "PlanMethod", "LengthOptions", "LoadOptions",
           "CurveSLO", "EngineProfile", "RidgelineError",
           "load_profile", "load_gpu", "load_model", "load_engine", "decode_step", "prefill", "static_batch",
           "serving_point", "plan", "simulate"]

PrecisionLike = Union[str, PrecisionOptions, Precision]


# -- what the planner runs on ---------------------------------------------------------------

@dataclass(frozen=True)
class GPU:
    """One GPU as the planner sees it; `source` says where its numbers come from."""

    name: str
    source: str                       # "measured" | "reference" | "datasheet"
    memory_bytes: int
    bandwidth_GBps: float
    peak_TFLOPS: dict[str, float]
    latency_floor_us: float
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    hardware: Hardware = field(repr=False, compare=False)   # the planner's own description

    def to_dict(self) -> dict[str, Any]:
        return self.hardware.summary()


@dataclass(frozen=True)
class Model:
    """A model's shapes (see ridgeline.sizing.models); `notes` say how a name was resolved."""

    name: str
    params: int
    active_params: int
    layers: int
    context_window: int | None
    notes: tuple[str, ...]
    spec: ModelSpec = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {**self.spec.summary(), "notes": list(self.notes)}


def _gpu(hw: Hardware) -> GPU:
    m = hw.model
    return GPU(hw.name, hw.source, hw.memory_bytes, m.bandwidth_GBps, dict(m.peak_TFLOPS),
               m.latency_floor_us, tuple(hw.notes), tuple(hw.warnings), hw)


def load_profile(path: str, *, allow_unverified: bool = False) -> GPU:
    """A measured profile.json (`ridgeline profile`); unverified ceilings are refused unless
    `allow_unverified` (then named in `warnings`)."""
    from ridgeline.roofline.profile import load_profile as read

    return _gpu(hardware_from_profile(read(path), source="measured",
                                      refuse_untrusted=not allow_unverified))


def load_gpu(name: str, *, derate: bool = True) -> GPU:
    """A GPU by name: its bundled reference profile, else its datasheet (labelled as such),
    derated by the published fractions of its peaks that kernels reach unless `derate` is
    False (`--no-derate`: 100% of the datasheet)."""
    return _gpu(hardware_from_gpu_name(name, derate=derate))


def load_model(name_or_path: str) -> Model:
    """A bundled model ("llama-3.1-70b"), a Hugging Face id of one
    ("meta-llama/Llama-2-7b-chat-hf", with a note), or a HF config.json (file or folder)."""
    spec, notes = find_model(name_or_path)
    return Model(spec.name, spec.param_count(), spec.active_param_count(), spec.num_layers,
                 spec.max_position_embeddings or None, tuple(notes), spec)


def _model(model: Model | str) -> Model:
    return load_model(model) if isinstance(model, str) else model


def _hardware(gpu: GPU | str) -> Hardware:
    return (load_gpu(gpu) if isinstance(gpu, str) else gpu).hardware


def _precision(precision: PrecisionLike, hw: Hardware) -> tuple[Precision, list[str]]:
    """A resolved precision the GPU can run, and the notes resolving it gave."""
    if isinstance(precision, str):
        precision = PrecisionOptions(weights=precision)
    if isinstance(precision, PrecisionOptions):
        return precision.resolve(hw.device_dtypes)
    require_supported(precision, hw.device_dtypes, hw.name)
    return precision, device_notes(precision, hw.device_dtypes)


# -- step times ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One priced forward pass (decode step or prefill), seconds, FLOPs and bytes."""

    time_s: float
    bound: str                        # memory | compute | latency | communication
    breakdown_s: dict[str, float]     # by kernel group (gemm, attention, allreduce, ...)
    by_bound_s: dict[str, float]
    kernels: int
    floor_s: float                    # latency floor x kernels
    allreduce_s: float
    allreduce_source: str             # measured | estimated | datasheet | n/a
    flops: float
    bytes: float
    tokens: int
    precision: dict[str, Any]
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EngineLike = Union[EngineProfile, str, None]


def _serving_engine(engine: EngineLike) -> EngineProfile:
    """The engine layer (sizing.engine): a profile, a preset name ("vllm", "sglang",
    "trtllm", "none"), an engine.json from `ridgeline calibrate`, or None (none)."""
    return engine if isinstance(engine, EngineProfile) else load_engine(engine)


def _step(t: StepTime, precision: Precision, notes: list[str]) -> Step:
    return Step(t.time_s, t.bound, dict(t.breakdown), dict(t.by_bound), t.kernels, t.floor_s,
                t.allreduce_s, t.allreduce_source, t.flops, t.bytes, t.tokens,
                precision.to_dict(), tuple(notes + t.notes))


def decode_step(model: Model | str, gpu: GPU | str, *, batch: int, context_tokens: int,
                precision: PrecisionLike = "bf16", tp: int = 1, pp: int = 1,
                serving_engine: EngineLike = None) -> Step:
    """One decode step: `batch` sequences each add a token after `context_tokens` cached;
    `serving_engine` adds an engine layer on top of the hardware (docs/engine.md)."""
    m, hw = _model(model), _hardware(gpu)
    p, notes = _precision(precision, hw)
    return _step(decode_step_time(m.spec, p, hw, batch, context_tokens, tp=tp, pp=pp,
                                  engine=_serving_engine(serving_engine)), p,
                 list(m.notes) + notes)


def prefill(model: Model | str, gpu: GPU | str, *, input_tokens: int, batch: int = 1,
            precision: PrecisionLike = "bf16", tp: int = 1, pp: int = 1,
            max_batched_tokens: int = EngineConfig.max_batched_tokens,
            serving_engine: EngineLike = None) -> Step:
    """Prefill of `batch` prompts of `input_tokens` (a lone prompt's TTFT with batch=1; the
    engine layer's per-request overhead is not in it: see Plan and Simulation)."""
    m, hw = _model(model), _hardware(gpu)
    p, notes = _precision(precision, hw)
    return _step(prefill_time(m.spec, p, hw, batch, input_tokens, tp=tp, pp=pp,
                              max_batched_tokens=max_batched_tokens,
                              engine=_serving_engine(serving_engine)), p, list(m.notes) + notes)


def static_batch(model: Model | str, gpu: GPU | str, *, batch: int, input_len: int,
                 output_len: int, precision: PrecisionLike = "bf16",
                 engine: EngineConfig | None = None,
                 parallel: ParallelOptions | None = None,
                 serving_engine: EngineLike = None) -> StaticBatchResult:
    """One batch run to completion: latency and tokens/s per GPU (ridgeline.sizing.static_batch).
    `serving_engine` prices its prefill and every decode step with the engine layer (step
    overhead, all-reduce, efficiencies) and adds its request overhead once to the latency."""
    from ridgeline.sizing.static_batch import static_batch as run

    m, hw = _model(model), _hardware(gpu)
    p, notes = _precision(precision, hw)
    result = run(m.spec, p, hw, StaticBatch(batch=batch, input_len=input_len,
                                            output_len=output_len), engine, parallel,
                 engine_layer=_serving_engine(serving_engine))
    result.notes[:0] = list(m.notes) + notes
    return result


def serving_point(model: Model | str, gpu: GPU | str, *, concurrency: int, input_p95: int,
                  output_p95: int, input_p50: int | None = None, output_p50: int | None = None,
                  precision: PrecisionLike = "bf16", tp: int = 1, pp: int = 1,
                  engine: EngineConfig | None = None) -> ServingPoint:
    """One replica holding `concurrency` requests: TTFT, ITL, request rate (sizing.serving)."""
    m, hw = _model(model), _hardware(gpu)
    p, notes = _precision(precision, hw)
    w = Workload(input_p95=input_p95, output_p95=output_p95, input_p50=input_p50,
                 output_p50=output_p50, concurrency=concurrency)
    shape = Shape(w.input_p50, w.input_p95, w.output_p50, w.output_p95)
    engine = engine or EngineConfig()
    point = ReplicaModel(m.spec, p, hw, shape, tp=tp, pp=pp,
                         max_batched_tokens=engine.max_batched_tokens).point(concurrency)
    point.notes[:0] = list(m.notes) + notes
    return point


# -- the plan ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """A serving plan: the headline figures, and every section in `detail` (the JSON of
    `ridgeline plan --json`). `feasible` is False when no concurrency meets the SLO
    (`infeasible` says why, in one line)."""

    basis: str                        # measured | reference | datasheet
    feasible: bool
    infeasible: str | None
    tp: int
    pp: int
    operating_concurrency: int
    usable_rps_per_replica: float | None
    replicas_with_safety: int | None
    gpus_deployed: int | None
    cost_per_1m_input_tokens: float | None
    cost_per_1m_output_tokens: float | None
    cost_per_1m_blended_tokens: float | None
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    detail: dict[str, Any] = field(repr=False)
    method: str = "simulated"         # "simulated" | "closed form" (PlanMethod(fast=True))

    def to_dict(self) -> dict[str, Any]:
        return self.detail


def plan(model: Model | str, gpu: GPU | str, workload: Workload, slo: SLO | None = None, *,
         precision: PrecisionLike = "bf16", engine: EngineConfig | None = None,
         parallel: ParallelOptions | None = None, fleet: FleetOptions | None = None,
         method: PlanMethod | None = None, serving_engine: EngineLike = None) -> Plan:
    """The sizing method end to end (what `ridgeline plan` prints), as data. The operating
    point and fleet come from a simulated replica; `method=PlanMethod(fast=True)` keeps the
    closed forms (`--fast`). `engine` is the scheduler's configuration (batch limits, KV
    blocks); `serving_engine` the engine layer on top (`--engine`: overheads, all-reduce)."""
    from ridgeline.sizing.plan import PlanInputs, infeasible, make_plan

    m, hw = _model(model), _hardware(gpu)
    p, notes = _precision(precision, hw)
    inputs = PlanInputs(spec=m.spec, precision=p, workload=workload, slo=slo or SLO(),
                        engine=engine or EngineConfig(), parallel=parallel or ParallelOptions(),
                        fleet=fleet or FleetOptions(), method=method or PlanMethod(),
                        engine_profile=_serving_engine(serving_engine),
                        notes=tuple(list(m.notes) + notes))
    d = make_plan(inputs, hw)
    f, op = d["fleet"], d["operating_point"]
    sim = d.get("simulation")
    concurrency = op["concurrency"]
    if sim is not None and sim["operating_point"] is not None:
        concurrency = sim["operating_point"]["concurrency"]
    return Plan(d["basis"], f["feasible"], infeasible(d), d["parallelism"]["chosen"]["tp"],
                d["parallelism"]["chosen"]["pp"], concurrency,
                f["usable_rps_per_replica"], f["replicas_with_safety"], f["gpus_deployed"],
                f["cost_per_1m_input_tokens"], f["cost_per_1m_output_tokens"],
                f["cost_per_1m_blended_tokens"], tuple(d["warnings"]), tuple(d["notes"]), d,
                d["method"])


# -- simulate ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Simulation:
    """One replica's simulated latency-throughput curve (`ridgeline simulate`): the loads, the
    knee, the SLO operating point, and every point in `detail` (the JSON of `simulate --json`:
    "points", each with `ttft_s`, `itl_s`, `e2e_s` as {"mean", "p50", "p95", "p99"})."""

    basis: str                        # measured | reference | datasheet
    tp: int
    load_kind: str                    # "rps" | "concurrency"
    loads: tuple[float, ...]
    capacity_rps: float | None        # the steady rate of an overloaded replica (open loop)
    knee_load: float | None           # where P99 TTFT leaves P50
    operating_load: float | None      # the highest simulated load meeting the SLOs
    load_at_slo: float | None         # interpolated to where the binding SLO is met
    limit: str | None                 # "TTFT SLO" | "ITL SLO" | "sweep limit"; None: no SLO
    summary: str
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    detail: dict[str, Any] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return self.detail


def simulate(model: Model | str, gpu: GPU | str, lengths: Workload | LengthOptions,
             slo: SLO | None = None, *, load: LoadOptions | None = None,
             precision: PrecisionLike = "bf16", tp: int | None = None,
             engine: EngineConfig | None = None, parallel: ParallelOptions | None = None,
             curve: CurveSLO | None = None, measured: tuple[str, ...] = (),
             serving_engine: EngineLike = None) -> Simulation:
    """Continuous batching on one replica (ridgeline.sizing.simulation), swept over `load`
    (default: 10%-120% of its capacity). `lengths`: a Workload (its p50/p95 lengths) or a
    LengthOptions (p99s, a trace); `tp` is shorthand for ParallelOptions(tp=...)."""
    from ridgeline.sizing.simulation.options import MeasuredOptions
    from ridgeline.sizing.simulation.run import make_setup, run_simulation

    m, hw = _model(model), _hardware(gpu)
    p, notes = _precision(precision, hw)
    if isinstance(lengths, Workload):
        lengths = LengthOptions(input_p50=lengths.input_p50, input_p95=lengths.input_p95,
                                output_p50=lengths.output_p50, output_p95=lengths.output_p95)
    if tp is not None:
        parallel = replace(parallel or ParallelOptions(), tp=tp)
    setup = make_setup(m.spec, hw, p, lengths, load or LoadOptions(), slo or SLO(),
                       curve or CurveSLO(), engine or EngineConfig(),
                       parallel or ParallelOptions(), MeasuredOptions(measured=measured or None),
                       notes=list(m.notes) + notes,
                       engine_layer=_serving_engine(serving_engine))
    d = run_simulation(setup).to_dict()
    kind = d["load"]["kind"]
    op = d["operating_point"] or {}
    return Simulation(d["basis"], d["tp"], kind, tuple(pt[kind] for pt in d["points"]),
                      d["load"]["capacity_rps"], d["knee"]["load"], op.get("load"),
                      op.get("load_at_slo"), op.get("limit"), d["summary"],
                      tuple(d["warnings"]), tuple(d["notes"]), d)
