"""Serving simulation: one replica of a continuous-batching engine on the step model.

    from ridgeline.sizing.step_model import StepModel
    from ridgeline.sizing.simulation import (LognormalLengths, OpenLoop, make_requests,
                                             scheduler_for, simulate, sweep)

    sm = StepModel(spec, precision, hw, tp=1)
    sched = scheduler_for(spec, precision, hw.memory_bytes, EngineConfig(), tp=1)
    reqs = make_requests(LognormalLengths(1000, 4000, 200, 512), n=100_000, seed=0)
    point = simulate(sm, sched, reqs, OpenLoop(rps=20))          # -> SimPoint
    curve = sweep(sm, sched, reqs, rps=[5, 10, 20, 30])          # -> Sweep: knee, SLO point

Modules: load (lengths, traces, arrivals), engine (vLLM v1's scheduler, step by step),
metrics (percentiles, throughput, Little's law), sweep (the curve, its knee and the
SLO operating point). The method and its limits: docs/simulate.md.
"""

from ridgeline.sizing.simulation.engine import (EngineRun, SchedulerConfig, StepRecord,
                                                kv_capacity_tokens, run_engine, scheduler_for)
from ridgeline.sizing.simulation.load import (ClosedLoop, LognormalLengths, OpenLoop, Requests,
                                              Trace, make_requests, read_trace,
                                              round_robin_replica_load)
from ridgeline.sizing.simulation.metrics import SimPoint, Stat, summarize
from ridgeline.sizing.simulation.sweep import (OperatingPoint, Sweep, capacity_rps, find_knee,
                                               max_load_meeting, simulate, sweep)

__all__ = ["ClosedLoop", "EngineRun", "LognormalLengths", "OpenLoop", "OperatingPoint",
           "Requests", "SchedulerConfig", "SimPoint", "Stat", "StepRecord", "Sweep", "Trace",
           "capacity_rps", "find_knee", "kv_capacity_tokens", "make_requests",
           "max_load_meeting", "read_trace", "round_robin_replica_load", "run_engine",
           "scheduler_for", "simulate", "summarize", "sweep"]
