"""`ridgeline simulate` and plan's simulated operating point: from options to a curve.

    setup = setup_from_values(option_values(args, SIMULATE_GROUPS))   # checks every input
    result = run_simulation(setup, progress=callback)                  # -> SimulationResult
    result.to_dict()        # {"points": [...], "knee", "operating_point", "measured", ...}
    write_outputs(result, csv="curve.csv", png="curve.png", out_dir="ridgeline-out")

    curve = plan_curve(spec, precision, hw, engine, tp, lengths, slo, "p99", "p95")

What is simulated (docs/simulate.md): one replica of a continuous-batching engine (vLLM
v1's scheduler) at TP GPUs, PP = 1, every step timed by the planner's step model
(sizing.step_model) on the hardware description, labelled by its basis (measured,
reference or datasheet profile), with the serving engine's layer on top (--engine:
sizing.engine, docs/engine.md). The scheduler's limits come from the engine options and
its KV blocks from the memory plan (simulation.engine.scheduler_for).

TP: --tp, else the lowest degree inside a node that shards the model's heads and whose KV
cache holds the longest request (what the engine needs to run at all; plan chooses TP for
a target and an SLO instead).

Load: --rps LIST (open loop) or --concurrency LIST (closed loop); neither: the replica's
capacity (sweep.capacity_rps) x 0.1, 0.2, ... 1.2. A trace replayed with its arrival times
and no --rps is one point at its recorded rate.

Plan's operating point (`plan_curve`): an open-loop sweep at capacity x 0.05, 0.1, 0.2,
... 0.9, 0.95 with `requests` requests per point, up to the first load that misses an SLO,
then REFINE_STEPS bisections between the last
load meeting the SLOs and the first missing them; the operating point is the highest
simulated load that meets them (TTFT and ITL each at its percentile), a simulated point,
not an interpolation (0.95 x capacity when every point meets them, or no SLO is given:
"sweep limit"). Bisection, not interpolation, because a pooled ITL percentile jumps:
once more than 5% of the token gaps sit behind a prefill chunk, the P95 is a prefill step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ridgeline import __version__
from ridgeline.errors import RidgelineError
from ridgeline.sizing.engine import NO_ENGINE, EngineLayerOptions, EngineProfile
from ridgeline.sizing.hardware import Hardware, HardwareOptions
from ridgeline.sizing.latency import valid_tp
from ridgeline.sizing.memory import EngineConfig
from ridgeline.sizing.models import ModelOptions, ModelSpec
from ridgeline.sizing.options import build
from ridgeline.sizing.precision import Precision, PrecisionOptions, require_supported
from ridgeline.sizing.simulation.engine import SchedulerConfig, kv_capacity_tokens, scheduler_for
from ridgeline.sizing.simulation.load import (ClosedLoop, Load, LognormalLengths, OpenLoop,
                                              Requests, Trace, make_requests, read_trace)
from ridgeline.sizing.simulation.metrics import SimPoint, describe_load
from ridgeline.sizing.simulation.options import (DEFAULT_GRID, DEFAULT_REQUESTS, CurveSLO,
                                                 LengthOptions, LoadOptions, MeasuredOptions)
from ridgeline.sizing.simulation.sweep import Sweep, capacity_rps
from ridgeline.sizing.simulation.sweep import curve_of
from ridgeline.sizing.simulation.sweep import simulate
from ridgeline.sizing.workload import SLO, ParallelOptions

# plan's rps axis, fractions of capacity; it stops short of 1: at the capacity itself a queue
# has no steady state (it grows as long as the run lasts), whatever a finite run shows
PLAN_GRID = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
REFINE_STEPS = 5          # bisections of plan's last grid interval: 1/32 of it
LOAD_UNITS = {"rps": "req/s", "concurrency": "clients"}

Progress = Callable[[int, int, str], None]   # (points done, points in all, what is running)


# ------------------------------------------------------------------------------ setup

@dataclass
class Setup:
    """Everything a simulation needs, checked: what `setup_from_values` builds."""

    spec: ModelSpec
    precision: Precision
    hw: Hardware
    engine: EngineConfig
    tp: int
    tp_reason: str
    sched: SchedulerConfig
    source: LognormalLengths | Trace
    requests: Requests
    load_kind: str                        # "rps" | "concurrency"
    loads: tuple[float, ...] | None       # None: the default grid (capacity x DEFAULT_GRID)
    arrival_cv: float
    think_s: float
    as_recorded: bool                     # one point at a trace's own arrival times
    slo: SLO
    ttft_percentile: str
    itl_percentile: str
    measured: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    measured_curves: list[Any] = field(default_factory=list)  # read once, when checked
    engine_layer: EngineProfile = NO_ENGINE  # the serving engine on top (sizing.engine)

    def step_model(self):
        from ridgeline.sizing.step_model import StepModel

        return StepModel(self.spec, self.precision, self.hw, tp=self.tp, engine=self.engine_layer)


def length_source(opts: LengthOptions, spec: ModelSpec) -> LognormalLengths | Trace:
    """A trace read from its file, or the lognormal through the given percentiles."""
    if opts.trace is not None:
        return read_trace(opts.trace)
    return lognormal_for(spec, opts.input_p50 or opts.input_p95, opts.input_p95,
                         opts.output_p50 or opts.output_p95, opts.output_p95,
                         opts.input_p99, opts.output_p99)


def lognormal_for(spec: ModelSpec, input_p50: int, input_p95: int, output_p50: int,
                  output_p95: int, input_p99: int | None = None,
                  output_p99: int | None = None) -> LognormalLengths:
    """The lognormal lengths, their tails capped so a p95 request of the other kind still fits
    the model's context window (the engine would refuse a longer one)."""
    window = spec.max_position_embeddings or 0
    max_in = max(input_p99 or input_p95, window - output_p95) if window else None
    max_out = max(output_p99 or output_p95, window - input_p95) if window else None
    if window and input_p95 + output_p95 > window:
        raise RidgelineError(f"p95 context {input_p95 + output_p95} tokens (input {input_p95} + "
                             f"output {output_p95}) exceeds {spec.name}'s context window of "
                             f"{window}")
    return LognormalLengths(input_p50, input_p95, output_p50, output_p95, input_p99, output_p99,
                            max_in, max_out)


def choose_tp(spec: ModelSpec, precision: Precision, hw: Hardware, engine: EngineConfig,
              parallel: ParallelOptions, longest_tokens: int) -> tuple[int, str]:
    """(TP, why): --tp, else the lowest in a node whose KV cache holds the longest request."""
    if parallel.pp not in (None, 1):
        raise RidgelineError(f"--pp {parallel.pp}: the simulation models one pipeline stage "
                             "(PP = 1; a pipeline keeps PP batches in flight, another engine)")
    if parallel.pp_microbatches is not None:
        raise RidgelineError("--pp-microbatches: the simulation models PP = 1")
    need = -(-longest_tokens // engine.kv_block_tokens) * engine.kv_block_tokens

    def holds(tp: int) -> int:
        return kv_capacity_tokens(spec, precision, engine, hw.memory_bytes, tp)

    if parallel.tp is not None:
        why = valid_tp(spec, parallel.tp)
        if why:
            raise RidgelineError(f"--tp {parallel.tp}: {why}")
        if holds(parallel.tp) < need:
            raise RidgelineError(f"{spec.name} at TP={parallel.tp} on {hw.name} holds "
                                 f"{max(0, holds(parallel.tp)):,} KV tokens: not the longest "
                                 f"request ({longest_tokens:,} tokens); raise --tp")
        return parallel.tp, "as requested (--tp)"
    tried = []
    tp = 1
    while tp <= parallel.gpus_per_node:
        if valid_tp(spec, tp) is None:
            tried.append(tp)
            if holds(tp) >= need:
                return tp, (f"the lowest TP whose KV cache holds the longest request "
                            f"({longest_tokens:,} tokens); --tp to choose")
        tp *= 2
    raise RidgelineError(f"{spec.name} fits on no TP inside a node of {parallel.gpus_per_node} "
                         f"{hw.name} GPUs (tried {', '.join(map(str, tried)) or 'none'}) with "
                         f"room for a {longest_tokens:,}-token request")


def setup_from_values(values: dict[str, Any]) -> Setup:
    """A checked Setup from simulate's option values; RidgelineError on any bad input."""
    spec, notes = build(ModelOptions, values).load()
    groups = [build(g, values) for g in (LengthOptions, LoadOptions, SLO, CurveSLO,
                                         EngineConfig, ParallelOptions, MeasuredOptions)]
    hw = build(HardwareOptions, values).load()
    precision, more = build(PrecisionOptions, values).resolve(hw.device_dtypes)
    return make_setup(spec, hw, precision, *groups, notes=list(notes) + list(more),
                      engine_layer=build(EngineLayerOptions, values).load())


def make_setup(spec: ModelSpec, hw: Hardware, precision: Precision, lengths: LengthOptions,
               load: LoadOptions, slo: SLO, curve_slo: CurveSLO, engine: EngineConfig,
               parallel: ParallelOptions, measured: MeasuredOptions | None = None, *,
               notes: Sequence[str] = (), engine_layer: EngineProfile | None = None) -> Setup:
    """A checked Setup from the option dataclasses (the CLI's and ridgeline.api's way in)."""
    require_supported(precision, hw.device_dtypes, hw.name)
    engine_layer = engine_layer or NO_ENGINE
    notes = [engine_layer.describe()] + list(notes) + list(hw.notes)
    source = length_source(lengths, spec)
    if isinstance(source, Trace):
        if lengths.replay_arrivals and source.arrival_s is None:
            raise RidgelineError(f"--replay-arrivals: {source.source} records no arrival times")
        n = load.requests or len(source.input_tokens)
        if n > len(source.input_tokens):
            notes.append(f"the trace's {len(source.input_tokens):,} requests are cycled to "
                         f"{n:,}")
    else:
        n = load.requests or DEFAULT_REQUESTS
    if load.concurrency is not None and lengths.replay_arrivals:
        raise RidgelineError("--replay-arrivals replays an open loop: give --rps, not "
                             "--concurrency")
    requests = make_requests(source, n, load.seed, replay_arrivals=lengths.replay_arrivals)
    longest = int((requests.input_tokens + requests.output_tokens).max())
    tp, tp_reason = choose_tp(spec, precision, hw, engine, parallel, longest)
    sched = scheduler_for(spec, precision, hw.memory_bytes, engine, tp,
                          reserve_full_prompt=not load.first_chunk_admission)
    kind = "concurrency" if load.concurrency is not None else "rps"
    loads = tuple(load.concurrency) if load.concurrency is not None else \
        (tuple(load.rps) if load.rps is not None else None)
    if loads is not None and len(set(loads)) != len(loads):
        raise RidgelineError(f"--{kind} lists a load twice")
    ttft_q, itl_q, pnotes = curve_slo.resolve(slo)
    paths = tuple((measured.measured if measured else None) or ())
    curves = read_measured_curves(paths) if paths else []
    check_measured_axis(curves, kind)
    return Setup(spec, precision, hw, engine, tp, tp_reason, sched, source, requests, kind, loads,
                 load.cv, load.think_time, lengths.replay_arrivals and loads is None, slo,
                 ttft_q, itl_q, paths, notes + pnotes, curves, engine_layer)


def read_measured_curves(paths: Sequence[str]) -> list[Any]:
    from ridgeline.sizing.simulation.measured import read_measured

    return read_measured(list(paths))


def check_measured_axis(curves: Sequence[Any], kind: str) -> None:
    """One line when a benchmark's load axis is not the simulation's (before simulating)."""
    for c in curves:
        if c.load != kind:
            flag = "--rps" if c.load == "rps" else "--concurrency"
            what = "request rates" if c.load == "rps" else "concurrencies"
            raise RidgelineError(f"the {c.label} points are at {what}: simulate with {flag} to "
                                 "put them on one axis")


# ------------------------------------------------------------------------------ running

@dataclass
class SimulationResult:
    """A simulated curve with what it was simulated on; `to_dict()` is `simulate --json`."""

    setup: Setup
    sweep: Sweep
    capacity_rps: float | None
    measured: list[Any]
    elapsed_s: float
    interrupted: bool = False

    @property
    def basis(self) -> str:
        return self.setup.hw.source

    def operating(self) -> SimPoint | None:
        op = self.sweep.operating_point
        return None if op is None or op.index is None else self.sweep.points[op.index]

    def cost_per_1m_output_tokens(self) -> float | None:
        """$ per 1M output tokens at the operating point (GPU-hours of TP GPUs / utilization)."""
        s, p = self.setup, self.operating()
        if s.slo.gpu_hourly is None or p is None or p.output_tokens_per_s <= 0:
            return None
        return s.slo.gpu_hourly * s.tp / s.slo.utilization / (p.output_tokens_per_s * 3600) * 1e6

    def summary(self) -> str:
        return summary_line(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        from ridgeline.sizing.plan import basis_label

        s = self.setup
        d = self.sweep.to_dict()
        src = s.source
        lengths: dict[str, Any]
        if isinstance(src, Trace):
            lengths = {"kind": "trace", "file": src.source, "rows": len(src.input_tokens),
                       "arrival_times": src.arrival_s is not None,
                       "replay_arrivals": s.requests.trace_gaps_s is not None}
        else:
            lengths = {"kind": "lognormal", "fit": "ln L normal: mu = ln p50, sigma least squares "
                       "over p95 (and p99)", "input_p50": src.input_p50,
                       "input_p95": src.input_p95, "input_p99": src.input_p99,
                       "output_p50": src.output_p50, "output_p95": src.output_p95,
                       "output_p99": src.output_p99, "max_input": src.max_input,
                       "max_output": src.max_output}
        lengths.update(mean_input=float(s.requests.input_tokens.mean()),
                       mean_output=float(s.requests.output_tokens.mean()))
        out = {"kind": "ridgeline-simulation", "ridgeline_version": __version__,
               "basis": s.hw.source, "basis_label": basis_label(s.hw),
               "hardware": s.hw.summary(), "model": s.spec.summary(),
               "precision": s.precision.to_dict(),
               "engine": {k: getattr(s.engine, k) for k in s.engine.__dataclass_fields__},
               "engine_layer": s.engine_layer.summary(),
               "scheduler": s.sched.to_dict(), "tp": s.tp, "pp": 1, "tp_reason": s.tp_reason,
               "lengths": lengths,
               "load": {"kind": s.load_kind, "default_grid": s.loads is None and not s.as_recorded,
                        "grid_fractions_of_capacity": list(DEFAULT_GRID)
                        if s.loads is None and not s.as_recorded else None,
                        "arrival_cv": s.arrival_cv if s.load_kind == "rps" else None,
                        "think_s": s.think_s if s.load_kind == "concurrency" else None,
                        "requests_per_point": len(s.requests), "seed": s.requests.seed,
                        "capacity_rps": self.capacity_rps},
               **d,
               "measured": [m.to_dict() for m in self.measured],
               "cost_per_1m_output_tokens": self.cost_per_1m_output_tokens(),
               "gpu_hourly": s.slo.gpu_hourly, "utilization": s.slo.utilization,
               "elapsed_s": self.elapsed_s, "interrupted": self.interrupted,
               "warnings": list(s.hw.warnings), "notes": list(dict.fromkeys(s.notes))}
        out["summary"] = summary_line(out)
        return out


def _loads(setup: Setup, cap: float | None) -> list[Load]:
    if setup.as_recorded:
        return [OpenLoop(None, setup.arrival_cv)]
    if setup.load_kind == "concurrency":
        return [ClosedLoop(int(c), setup.think_s) for c in sorted(setup.loads or ())]
    rates = sorted(setup.loads) if setup.loads is not None else [f * cap for f in DEFAULT_GRID]
    return [OpenLoop(float(r), setup.arrival_cv) for r in rates]


def sweep_loads(sm, sched: SchedulerConfig, requests: Requests, loads: Sequence[Load], *,
                ttft_slo_s: float | None, itl_slo_s: float | None, ttft_percentile: str,
                itl_percentile: str, progress: Progress | None = None,
                done_before: int = 0, total: int | None = None) -> tuple[Sweep, bool]:
    """sweep.sweep with progress and Ctrl-C: (the curve of the points done, interrupted).

    The same points, knee and operating point as sweep.sweep for the same loads (tested);
    a Ctrl-C keeps the points already simulated (at least one, or it propagates)."""
    points: list[SimPoint] = []
    interrupted = False
    total = total or len(loads)
    for i, load in enumerate(loads):
        if progress:
            progress(done_before + i, total, describe_load(load) if load.key[1] is not None
                     else "the trace's arrival times")
        try:
            points.append(simulate(sm, sched, requests, load))
        except KeyboardInterrupt:
            if not points:
                raise
            interrupted = True
            break
    if progress:
        progress(done_before + len(points), total, "done")
    return curve_of(sm, sched, requests, points, ttft_slo_s, itl_slo_s, ttft_percentile,
                    itl_percentile), interrupted


def run_simulation(setup: Setup, progress: Progress | None = None) -> SimulationResult:
    """Simulate every load point of the setup; the knee, the SLO point, the measured curves."""
    t0 = time.perf_counter()
    sm = setup.step_model()
    measured = setup.measured_curves
    cap = None
    steps = 0
    if setup.load_kind == "rps" and not setup.as_recorded:
        if progress:
            progress(0, 1 + len(setup.loads or DEFAULT_GRID), "the replica's capacity")
        cap = capacity_rps(sm, setup.sched, setup.requests)
        steps = 1
    loads = _loads(setup, cap)
    curve, interrupted = sweep_loads(
        sm, setup.sched, setup.requests, loads, ttft_slo_s=setup.slo.ttft_s,
        itl_slo_s=setup.slo.itl_s, ttft_percentile=setup.ttft_percentile,
        itl_percentile=setup.itl_percentile, progress=progress, done_before=steps,
        total=steps + len(loads))
    return SimulationResult(setup, curve, cap, measured, time.perf_counter() - t0, interrupted)


# ------------------------------------------------------------------------------ text

def _load_text(v: float | None, kind: str) -> str:
    if v is None:
        return "-"
    unit = LOAD_UNITS[kind]
    return f"{v:,.0f} {unit}" if kind == "concurrency" else f"{v:.3g} {unit}"


def _ms(v: float) -> str:
    return f"{v * 1e3:,.1f} ms" if v < 1 else f"{v:,.2f} s"


def summary_line(d: dict[str, Any]) -> str:
    """'knee at 2.5 req/s (P99 TTFT leaves P50); SLO operating point 1.9 req/s (ITL SLO
    binds): TTFT P99 1.2 s, ITL P95 21 ms, 980 output tok/s [DATASHEET]' from a result dict."""
    pts = d["points"]
    kind = "rps" if "rps" in pts[0] else "concurrency"
    knee = d.get("knee") or {}
    parts = [f"knee at {_load_text(knee['load'], kind)} (P99 TTFT leaves P50)"
             if knee.get("index") is not None else
             f"no knee up to {_load_text(pts[-1][kind], kind)} (P99 TTFT stays near P50)"]
    op, slo = d.get("operating_point"), d.get("slo") or {}
    if op is None:
        parts.append("no SLO given: no operating point")
    elif op.get("index") is None:
        parts.append(f"no simulated load meets the SLOs ({op['limit']} missed at "
                     f"{_load_text(pts[0][kind], kind)})")
    else:
        p = pts[op["index"]]
        at = (f" (about {_load_text(op['load_at_slo'], kind)} where the {op['limit']} binds)"
              if op["limit"] != "sweep limit" else " (every simulated load meets the SLOs)")
        stats = []
        if slo.get("ttft_s") is not None:
            q = slo["ttft_percentile"]
            stats.append(f"TTFT {q.upper()} {_ms(p['ttft_s'][q])}")
        if slo.get("itl_s") is not None:
            q = slo["itl_percentile"]
            stats.append(f"ITL {q.upper()} {_ms(p['itl_s'][q])}")
        stats.append(f"{p['output_tokens_per_s']:,.0f} output tok/s")
        parts.append(f"SLO operating point {_load_text(op['load'], kind)}{at}: "
                     + ", ".join(stats))
    return "; ".join(parts) + f" [{d['basis_label']}]"


# ------------------------------------------------------------------------------ files

SIMULATION_JSON, SIMULATION_CSV, SIMULATION_PNG = ("simulation.json", "simulation.csv",
                                                   "simulation.png")


def chart_title(d: dict[str, Any]) -> str:
    prec = d["precision"]
    return (f"{d['model']['name']} {prec['weights']}, TP={d['tp']}, {d['hardware']['name']} "
            f"[{d['basis_label']}]")


def check_outputs(*, csv: str | None = None, png: str | None = None,
                  out_dir: str | None = None) -> None:
    """One line now, not after the simulation, for an output that cannot be written: a file
    argument that is a folder or sits in no folder, an -o that is a file."""
    from ridgeline.outputs import OutputError

    for flag, path in (("--csv", csv), ("--png", png)):
        if not path:
            continue
        if Path(path).is_dir():
            raise OutputError(f"{flag} {path} is a folder; it takes a file (-o DIR for a folder)")
        if not Path(path).absolute().parent.is_dir():
            raise OutputError(f"{flag} {path}: no folder {Path(path).parent}")
    if out_dir and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise OutputError(f"{out_dir} is a file; -o takes a folder")


def write_outputs(d: dict[str, Any], *, csv: str | None = None, png: str | None = None,
                  out_dir: str | None = None) -> list[Path]:
    """The CSV and PNG of a result dict where asked, and DIR/simulation.{json,csv,png} for -o
    (the report picks simulation.json up beside its profile). Atomic writes; one-line errors."""
    import json

    from ridgeline.outputs import DirLock, atomic_write_bytes, atomic_write_text, make_folder
    from ridgeline.reports.curve import curve_csv, curve_png
    from ridgeline.roofline.profile import json_safe

    check_outputs(csv=csv, png=png, out_dir=out_dir)
    measured = d.get("measured") or []
    written: list[Path] = []
    text = curve_csv(d, measured)
    picture: bytes | None = None

    def png_bytes() -> bytes:
        nonlocal picture
        if picture is None:
            picture = curve_png(d, measured, chart_title(d))
        return picture

    if csv:
        written.append(atomic_write_text(csv, text))
    if png:
        written.append(atomic_write_bytes(png, png_bytes()))
    if out_dir:
        folder = make_folder(out_dir)
        with DirLock(folder):
            written.append(atomic_write_text(folder / SIMULATION_JSON,
                                             json.dumps(json_safe(d), indent=1) + "\n"))
            written.append(atomic_write_text(folder / SIMULATION_CSV, text))
            written.append(atomic_write_bytes(folder / SIMULATION_PNG, png_bytes()))
    return written


# ------------------------------------------------------------------------------ plan

@dataclass
class PlanCurve:
    """Plan's simulated curve on one layout: the SLO operating point and how it was found."""

    tp: int
    sched: SchedulerConfig
    requests: Requests
    capacity_rps: float
    sweep: Sweep
    point: SimPoint | None       # the highest simulated load meeting the SLOs
    limit: str                   # what stops it: "TTFT SLO" | "ITL SLO" | "sweep limit"
    ttft_percentile: str
    itl_percentile: str
    elapsed_s: float
    reason: str | None = None    # why no load meets the SLOs

    @property
    def rps(self) -> float | None:
        return None if self.point is None else self.point.value

    def to_dict(self) -> dict[str, Any]:
        p = self.point
        d = self.sweep.to_dict()
        return {"tp": self.tp, "pp": 1, "scheduler": self.sched.to_dict(),
                "requests_per_point": len(self.requests), "seed": self.requests.seed,
                "capacity_rps": self.capacity_rps, "points": d["points"], "knee": d["knee"],
                "slo": d["slo"], "limit": self.limit, "reason": self.reason,
                "ttft_percentile": self.ttft_percentile, "itl_percentile": self.itl_percentile,
                "operating_point": None if p is None else {
                    "rps": p.value, "concurrency": p.mean_concurrency,
                    "ttft_s": p.ttft_s.to_dict(), "itl_s": p.itl_s.to_dict(),
                    "e2e_s": p.e2e_s.to_dict(), "queue_wait_s": p.queue_wait_s.to_dict(),
                    "output_tokens_per_s": p.value * _mean_output(p),
                    "mean_batch": p.mean_batch, "mean_kv_utilization": p.mean_kv_utilization,
                    "preemptions": p.preemptions,
                    "fraction_of_capacity": p.value / self.capacity_rps},
                "elapsed_s": self.elapsed_s}


def _mean_output(p: SimPoint) -> float:
    """Output tokens per request of a point (its tokens/s over its requests/s)."""
    return p.output_tokens_per_s / p.request_throughput if p.request_throughput else 0.0


def _meets(p: SimPoint, slo: SLO, ttft_q: str, itl_q: str) -> bool:
    return (slo.ttft_s is None or p.ttft_s.get(ttft_q) <= slo.ttft_s) and \
        (slo.itl_s is None or p.itl_s.get(itl_q) <= slo.itl_s)


def plan_curve(spec: ModelSpec, precision: Precision, hw: Hardware, engine: EngineConfig,
               tp: int, lengths: LognormalLengths, slo: SLO, ttft_percentile: str,
               itl_percentile: str, requests: int, seed: int = 0,
               refine: int = REFINE_STEPS, *,
               engine_layer: EngineProfile | None = None) -> PlanCurve:
    """The SLO operating point of one replica at TP (see the module docstring), with the
    serving engine's layer on top of the hardware when given."""
    from ridgeline.sizing.step_model import StepModel

    t0 = time.perf_counter()
    sm = StepModel(spec, precision, hw, tp=tp, engine=engine_layer)
    sched = scheduler_for(spec, precision, hw.memory_bytes, engine, tp)
    reqs = make_requests(lengths, requests, seed)
    cap = capacity_rps(sm, sched, reqs)
    points: list[SimPoint] = []
    first_miss = None
    for f in PLAN_GRID:  # in increasing load, up to the first that misses an SLO
        points.append(simulate(sm, sched, reqs, OpenLoop(f * cap)))
        if not _meets(points[-1], slo, ttft_percentile, itl_percentile):
            first_miss = len(points) - 1
            break
    if first_miss is not None and first_miss > 0:
        lo, hi = points[first_miss - 1].value, points[first_miss].value
        extra = []
        for _ in range(refine):
            mid = (lo + hi) / 2
            p = simulate(sm, sched, reqs, OpenLoop(mid))
            extra.append(p)
            if _meets(p, slo, ttft_percentile, itl_percentile):
                lo = mid
            else:
                hi = mid
        points = sorted(points + extra, key=lambda p: p.value)
    curve = curve_of(sm, sched, reqs, points, slo.ttft_s, slo.itl_s, ttft_percentile,
                     itl_percentile)
    op = curve.operating_point
    if op is None:   # no SLO: the replica's capacity is the operating load
        point, limit = points[-1], "sweep limit"
    elif op.index is None:
        point, limit = None, op.limit
    else:
        point, limit = points[op.index], op.limit
    reason = None
    if point is None:
        p0 = points[0]
        q, value, target = ((ttft_percentile, p0.ttft_s.get(ttft_percentile), slo.ttft_s)
                            if limit == "TTFT SLO" else
                            (itl_percentile, p0.itl_s.get(itl_percentile), slo.itl_s))
        reason = (f"simulated at TP={tp}, the {limit} ({_ms(target)} at {q.upper()}) is missed "
                  f"even at {p0.value:.3g} req/s, {PLAN_GRID[0]:.0%} of the replica's capacity: "
                  f"{limit.split()[0]} {q.upper()} {_ms(value)}")
    return PlanCurve(tp, sched, reqs, cap, curve, point, limit, ttft_percentile, itl_percentile,
                     time.perf_counter() - t0, reason)
