"""The plan: the sizing method of field guide §9.1 evaluated on one hardware description.

    inputs = PlanInputs(spec=spec, precision=precision,
                        workload=Workload(input_p95=8192, output_p95=512, concurrency=50,
                                          peak_rps=120), slo=SLO(ttft_s=2, itl_s=0.05))
    (or ridgeline.api.plan, the stable entry point)
    plan = make_plan(inputs, hw)          # plain dict, JSON-ready (see `ridgeline plan --json`)

Order (field guide §9.1; 11-step method step 6, capacity first, then performance):
  1. parallelism  lowest TP (PP beyond a node) that fits the target and meets the SLO
  2. operating    C_op = min(capacity, SLO-limited concurrency) on that replica; says which binds
  3. memory       the pooled floor of §2.6 at the target (or fleet) concurrency
  4. performance  TTFT against input length, ITL and tokens/s against batch, the bound of
                  each point, the batch where decode turns compute-bound
  5. fleet        replicas, GPUs with safety and N+1, $ per 1M input / output / blended
                  tokens, breaker depth (a fleet no SLO allows: `infeasible` says why)
Every section carries `basis` = the hardware source ("measured" | "reference" | "datasheet").

Operating point and fleet, two methods (`PlanInputs.method`, `--fast`):
  simulated    (default) one replica of the chosen layout is simulated under open-loop
               Poisson load (sizing.simulation.run.plan_curve: vLLM v1's scheduler on the
               step model, lognormal lengths through the p50/p95, `sim_requests` per point);
               the usable RPS per replica is the highest simulated load meeting the SLOs,
               TTFT at P99 and ITL at --slo-percentile by default (field guide §8.1-§8.3);
               the fleet, its cost and the breaker are sized on that point. When the chosen
               layout misses the SLOs even at 5% of its capacity, larger TPs that fit are
               simulated in turn.
               The closed forms still choose the layout (step 1) and fill the operating
               section; `simulation.differences` puts the two side by side.
  closed form  (--fast) step 2's M/D/1 point, as before the simulation existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ridgeline import __version__
from ridgeline.errors import RidgelineError
from ridgeline.sizing.engine import NO_ENGINE, EngineProfile
from ridgeline.sizing.fleet import ceil_count, fleet_in_flight, fleet_plan
from ridgeline.sizing.hardware import Hardware
from ridgeline.sizing.latency import StepTime, resolve_compute_dtype
from ridgeline.sizing.memory import EngineConfig, memory_plan
from ridgeline.sizing.models import ModelSpec
from ridgeline.sizing.options import check, option
from ridgeline.sizing.parallelism import ConfigEval, ParallelPlan, plan_parallelism
from ridgeline.sizing.precision import Precision, require_supported
from ridgeline.sizing.serving import ReplicaModel, ServingPoint, Shape
from ridgeline.sizing.simulation.options import CurveSLO
from ridgeline.sizing.workload import SLO, FleetOptions, ParallelOptions, Workload

MAX_TABLE_BATCH = 1024
ALLREDUCE_LABELS = {"measured": "measured", "estimated": "estimated (no measured all-reduce)",
                    "datasheet": "datasheet estimate", "n/a": "none (TP=1)"}
COMPUTE_SEARCH_LIMIT = 1 << 16
# requests per simulated load point: at most 11 grid points, 5 bisections and the capacity
# run keep the docs example's plan under 2 s on a 2-core machine (simulate --requests for more)
DEFAULT_SIM_REQUESTS = 2000


@dataclass(frozen=True, kw_only=True)
class PlanMethod(CurveSLO):
    """Operating point (simulated unless --fast) and comparison."""

    fast: bool = option(False, "closed forms only for the operating point and fleet (mean ITL "
                               "inflated by the prefill share, M/D/1 queue): no simulation")
    sim_requests: int = option(DEFAULT_SIM_REQUESTS, "requests per simulated load point")
    compare_datasheet: bool = option(False, "also plan on the GPU's datasheet and print the "
                                            "differences")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, "a positive whole number", "sim_requests")




@dataclass(frozen=True, kw_only=True)
class PlanInputs:
    spec: ModelSpec
    precision: Precision
    workload: Workload
    slo: SLO = SLO()
    engine: EngineConfig = EngineConfig()
    engine_profile: EngineProfile = NO_ENGINE     # the serving engine on top (sizing.engine)
    parallel: ParallelOptions = ParallelOptions()
    fleet: FleetOptions = FleetOptions()
    method: PlanMethod = PlanMethod()
    notes: tuple[str, ...] = field(default_factory=tuple)


def basis_label(hw: Hardware) -> str:
    return {"measured": "measured profile", "reference": "reference profile (another machine)",
            "datasheet": "DATASHEET"}[hw.source]


def check_inputs(inputs: PlanInputs, hw: Hardware) -> None:
    """RidgelineError for input the plan cannot be made from (one line each)."""
    spec, w = inputs.spec, inputs.workload
    ctx = w.input_p95 + w.output_p95
    if spec.max_position_embeddings and ctx > spec.max_position_embeddings:
        raise RidgelineError(f"p95 context {ctx} tokens (input {w.input_p95} + output "
                             f"{w.output_p95}) exceeds {spec.name}'s context window of "
                             f"{spec.max_position_embeddings}")
    require_supported(inputs.precision, hw.device_dtypes, hw.name)


def _first_true(pred, hi: int) -> int | None:
    """Smallest n in [1, hi] with pred(n) true, assuming pred is monotone; None if never."""
    if pred(1):
        return 1
    lo, n = 1, 2
    while n <= hi and not pred(n):
        lo, n = n, n * 2
    if n > hi:
        if not pred(hi):
            return None
        n = hi
    while n - lo > 1:
        mid = (lo + n) // 2
        if pred(mid):
            n = mid
        else:
            lo = mid
    return n


def _gemm_op_bound(step: StepTime, names: tuple[str, ...]) -> str | None:
    for op in step.ops:
        if op.name in names:
            return op.bound
    return None


def _performance(inputs: PlanInputs, hw: Hardware, chosen: ConfigEval,
                 shape: Shape) -> dict[str, Any]:
    spec, p = inputs.spec, inputs.precision
    rm: ReplicaModel = chosen.replica
    gpus = chosen.gpus
    cap = chosen.memory.max_concurrency
    window = spec.max_position_embeddings or (1 << 20)
    # TTFT against input length (a lone request: queueing is in the operating point)
    lengths = {shape.input_p50, shape.input_p95}
    n = 128
    while n < shape.input_p95 * 2 and n <= window:
        lengths.add(n)
        n *= 2
    ttft = []
    for s in sorted(x for x in lengths if x + 1 <= window):
        t = rm.prefill(s)
        # the engine's per-request overhead (tokenize, set up, detokenize) is in every TTFT
        ttft.append({"input_tokens": s, "ttft_s": t.time_s + rm.request_overhead_s,
                     "bound": t.bound,
                     "prefill_tokens_per_s": s / t.time_s,
                     "compute_share": t.by_bound.get("compute", 0.0) / t.time_s,
                     "allreduce_share": t.allreduce_s / t.time_s if t.time_s else 0.0})
    # ITL and tokens/s against batch at the p95 context (no prefill interference)
    top = max(1, min(max(cap, chosen.target, chosen.operating_concurrency or 1), MAX_TABLE_BATCH))
    batches = {1, chosen.target, chosen.operating_concurrency or 1}
    b = 2
    while b <= top:
        batches.add(b)
        b *= 2
    batches.add(top)
    decode = []
    for b in sorted(x for x in batches if x >= 1):
        d = rm.decode(b, shape.context_p95)
        row = {"batch": b, "itl_s": d.time_s, "tokens_per_s": b / d.time_s,
               "tokens_per_s_per_gpu": b / d.time_s / gpus, "bound": d.bound,
               "allreduce_share": d.allreduce_s / d.time_s, "fits": b <= cap,
               "floor_share": d.floor_s / d.time_s}
        if spec.is_moe:
            row["experts_loaded"] = d.experts_loaded
        decode.append(row)
    # where decode turns compute-bound
    gemm_names = ("experts.gate_up",) if spec.is_moe and not spec.num_dense_layers else (
        "gate_up_proj", "experts.gate_up")
    gemm_b = _first_true(lambda b: _gemm_op_bound(rm.decode(b, 1), gemm_names) == "compute",
                         COMPUTE_SEARCH_LIMIT)
    step_b = _first_true(lambda b: rm.decode(b, shape.context_p95).bound == "compute",
                         COMPUTE_SEARCH_LIMIT)
    short_b = _first_true(lambda b: rm.decode(b, 1).bound == "compute", COMPUTE_SEARCH_LIMIT)
    dtype = resolve_compute_dtype(hw.model, p.gemm_dtype)
    ridge = hw.model.ridge_point(dtype)
    one = rm.decode(1, shape.context_p95)
    allreduce = one.allreduce_source
    return {
        "basis": hw.source, "tp": chosen.tp, "pp": chosen.pp,
        "gemm_dtype": dtype, "ridge_point_flop_per_byte": ridge,
        "ridge_batch_estimate": ridge * p.weight_bytes / 2,
        "bandwidth_GBps": hw.model.bandwidth_GBps,
        "peak_TFLOPS": hw.model.peak_TFLOPS.get(dtype),
        "latency_floor_us": hw.model.latency_floor_us,
        "kernels_per_decode_step": one.kernels, "decode_floor_s": one.floor_s,
        "allreduce_source": allreduce,
        "allreduce_label": ALLREDUCE_LABELS.get(allreduce, allreduce),
        "ttft_vs_input": ttft,
        "decode_vs_batch": decode, "decode_context_tokens": shape.context_p95,
        "gemm_compute_bound_batch": gemm_b,
        "decode_compute_bound_batch": step_b,
        "decode_compute_bound_batch_short_context": short_b,
        "decode_breakdown_batch1_s": one.breakdown,
        "notes": list(dict.fromkeys(one.notes + rm.prefill(shape.input_p95).notes)),
    }


def _operating(chosen: ConfigEval, inputs: PlanInputs, hw: Hardware) -> dict[str, Any]:
    cap = chosen.capacity
    perf = chosen.max_concurrency_slo
    c_op = chosen.operating_concurrency or 0
    slo = inputs.slo
    limit = chosen.capacity_limit
    if perf is None:
        binding = f"capacity ({limit}); no latency SLO given"
    elif c_op == 0:
        binding = f"performance: {chosen.slo_limit} not met even by one request"
    elif perf < cap:
        binding = f"performance ({chosen.slo_limit})"
    elif perf > cap:
        binding = f"capacity ({limit})"
    else:
        binding = f"capacity ({limit}) and performance (equal)"
    out: dict[str, Any] = {
        "basis": hw.source, "tp": chosen.tp, "pp": chosen.pp,
        "max_concurrency_capacity": cap, "max_concurrency_memory": chosen.memory.max_concurrency,
        "max_num_seqs": chosen.max_num_seqs, "max_concurrency_slo": perf,
        "slo_limit_above": chosen.slo_limit, "concurrency": c_op, "binding": binding,
        "target_concurrency": inputs.workload.concurrency,
    }
    if c_op == 0 and chosen.replica is not None:
        one = chosen.replica.point(1)   # what the fastest layout does at all, for the message
        out.update(one_request_ttft_p95_s=one.ttft_p95_s, one_request_itl_p95_s=one.itl_p95_s)
    pt = chosen.operating_point
    if pt is not None:
        out.update(pt.to_dict())
        out["concurrency"] = c_op
        if slo.ttft_s is not None and slo.itl_s is not None:
            slo_e2e = slo.ttft_s + inputs.workload.output_p50 * slo.itl_s
            out["rps_if_requests_took_the_slo"] = c_op / slo_e2e   # §8.3's Little's-law ceiling
    return out


@dataclass
class _Simulated:
    """Plan's simulated operating point: the curve it came from and the fleet's point."""

    curve: Any                        # simulation.run.PlanCurve of the layout used
    chosen: ConfigEval                # that layout
    point: ServingPoint | None        # the fleet's point (None: no load meets the SLOs)
    tried: list[dict[str, Any]]       # layouts simulated before it, and why each failed
    notes: list[str]


def _simulate(inputs: PlanInputs, hw: Hardware, par: ParallelPlan,
              shape: Shape) -> _Simulated | None:
    """The simulated operating point of the chosen layout, or of the next larger TP that meets
    the SLOs when it misses them even at 5% of its capacity (not when TP/PP is forced);
    None: PP > 1."""
    from ridgeline.sizing.simulation.run import lognormal_for, plan_curve

    spec, w, slo, method = inputs.spec, inputs.workload, inputs.slo, inputs.method
    if par.chosen.pp > 1:
        return None
    ttft_q, itl_q, notes = method.resolve(slo)
    lengths = lognormal_for(spec, shape.input_p50, shape.input_p95, shape.output_p50,
                            shape.output_p95)
    forced = inputs.parallel.tp is not None or inputs.parallel.pp is not None
    candidates = [par.chosen] + ([] if forced else [
        r for r in par.rows if r.pp == 1 and r.fits and r.error is None and r.tp > par.chosen.tp])
    tried: list[dict[str, Any]] = []
    first = None
    for cfg in candidates:
        try:
            curve = plan_curve(spec, inputs.precision, hw, inputs.engine, cfg.tp, lengths, slo,
                               ttft_q, itl_q, method.sim_requests,
                               engine_layer=inputs.engine_profile)
        except RidgelineError as exc:  # e.g. the longest sampled request exceeds the KV cache
            tried.append({"tp": cfg.tp, "pp": 1, "reason": f"TP={cfg.tp}: {exc}"})
            continue
        first = first or (curve, cfg)
        if curve.point is not None:
            if tried:
                notes.append(f"simulated, {'; '.join(t['reason'] for t in tried)}: TP={cfg.tp} "
                             "is the lowest layout that meets the SLOs")
            return _Simulated(curve, cfg, _serving_point(curve, cfg, w), tried, notes)
        tried.append({"tp": cfg.tp, "pp": 1, "reason": curve.reason})
    if first is None:
        raise RidgelineError(f"cannot simulate {spec.name}: {tried[0]['reason']}")
    return _Simulated(first[0], first[1], None, tried, notes)


def _serving_point(curve: Any, cfg: ConfigEval, w: Workload) -> ServingPoint:
    """The simulated operating point as the ServingPoint the fleet is sized on: its load, mean
    requests in flight, E2E and tokens/s; the prefill share (cost split) and the service time
    (breaker depth) of the layout's closed forms at that load."""
    from dataclasses import replace

    p = curve.point
    rm = cfg.replica
    base = rm.point(max(1, round(p.mean_concurrency)))
    out_per_request = p.output_tokens_per_s / p.request_throughput
    # a replica meeting the SLOs only below one request in flight on average is still a
    # replica: the fleet counts it as one (fleet.py refuses a point under one request)
    return replace(base, concurrency=max(1.0, p.mean_concurrency), stable=True,
                   ttft_p95_s=p.ttft_s.p95, itl_p95_s=p.itl_s.p95, queue_wait_s=p.queue_wait_s.mean,
                   e2e_s=p.e2e_s.mean, rps=p.value, output_tokens_per_s=p.value * out_per_request,
                   prefill_share=min(1.0, p.value * rm.prefill(w.input_p50).time_s),
                   notes=[])


def _differences(sim: _Simulated, closed: dict[str, Any], closed_fleet: dict[str, Any],
                 fleet: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (quantity, closed form, simulated, ratio simulated / closed form)."""
    c = sim.curve
    p = c.point
    tq, iq = c.ttft_percentile, c.itl_percentile
    rows = [
        ("usable RPS per replica", closed_fleet.get("usable_rps_per_replica"),
         fleet.get("usable_rps_per_replica")),
        ("requests in flight per replica", closed.get("concurrency") or None,
         p.mean_concurrency if p else None),
        (f"TTFT (closed form p95, simulated {tq})", closed.get("ttft_p95_s"),
         p.ttft_s.get(tq) if p else None),
        (f"ITL (closed form p95, simulated {iq})", closed.get("itl_p95_s"),
         p.itl_s.get(iq) if p else None),
        ("E2E, mean (s)", closed.get("e2e_s"), p.e2e_s.mean if p else None),
        ("replicas with safety", closed_fleet.get("replicas_with_safety"),
         fleet.get("replicas_with_safety")),
        ("GPUs deployed (N+redundancy)", closed_fleet.get("gpus_deployed"),
         fleet.get("gpus_deployed")),
        ("$ per 1M blended tokens", closed_fleet.get("cost_per_1m_blended_tokens"),
         fleet.get("cost_per_1m_blended_tokens")),
    ]
    return [{"quantity": q, "closed_form": a, "simulated": b, "ratio": _ratio(a, b)}
            for q, a, b in rows]


def make_plan(inputs: PlanInputs, hw: Hardware) -> dict[str, Any]:
    """Run the sizing method on `hw` and return the plan as plain data."""
    check_inputs(inputs, hw)
    spec, w, slo = inputs.spec, inputs.workload, inputs.slo
    shape = Shape(w.input_p50, w.input_p95, w.output_p50, w.output_p95)
    warnings = list(hw.warnings)
    notes = [inputs.engine_profile.describe()] + list(inputs.notes) + list(hw.notes)
    target = w.concurrency if w.concurrency is not None else 1
    par = plan_parallelism(spec, inputs.precision, hw, inputs.engine, shape, slo, target,
                           inputs.parallel, engine_layer=inputs.engine_profile)
    warnings += par.warnings
    chosen = par.chosen
    sim = None if inputs.method.fast else _simulate(inputs, hw, par, shape)
    reason = par.reason
    if sim is not None and sim.chosen is not chosen:
        chosen = sim.chosen
        reason = (f"TP={chosen.tp}: the lowest TP whose simulated replica meets the SLOs (the "
                  f"closed forms chose TP={par.chosen.tp}: {par.reason})")
    operating = _operating(chosen, inputs, hw)
    closed_point = chosen.operating_point
    point = closed_point if sim is None else sim.point
    # fleet-wide requests in flight (11-step method, step 3); the fleet adds the headroom
    fleet_conc, conc_source = fleet_in_flight(w, point)
    fp = fleet_plan(point, chosen.tp, chosen.pp, w, slo, inputs.fleet)
    # the memory floor holds the load the fleet is sized for (headroom included)
    mem_conc = w.concurrency if w.concurrency is not None else (
        ceil_count(fp.fleet_concurrency) if fp.fleet_concurrency else
        max(1, chosen.operating_concurrency or 1))
    mem = memory_plan(spec, inputs.precision, inputs.engine, hw.memory_bytes, mem_conc,
                      shape.context_p95, inputs.fleet.memory_headroom)
    memory = mem.to_dict()
    mem_source = conc_source
    if fp.fleet_concurrency is not None:
        memory["notes"].append("fleet-wide requests in flight with the weights counted once: a "
                               "floor (field guide §2.6); each replica holds its own weights")
        if w.headroom:
            mem_source += f" x (1 + {w.headroom:g} headroom)"
    memory.update(basis=hw.source, concurrency_source=mem_source,
                  replica_tp=chosen.tp, replica_pp=chosen.pp,
                  replica_max_concurrency=chosen.memory.max_concurrency,
                  replica_memory_per_gpu=chosen.memory.to_dict())
    performance = _performance(inputs, hw, chosen, shape)
    fleet = fp.to_dict()
    fleet["basis"] = hw.source
    fleet["method"] = "closed form" if sim is None else "simulated"
    simulation = None
    if sim is not None:
        closed_fleet = fleet_plan(closed_point, chosen.tp, chosen.pp, w, slo,
                                  inputs.fleet).to_dict()
        closed_fleet.update(basis=hw.source, method="closed form")
        p = sim.curve.point
        simulation = {"basis": hw.source, "method": "simulated", **sim.curve.to_dict(),
                      "feasible": p is not None, "tried": sim.tried,
                      "closed_form_fleet": closed_fleet,
                      "differences": _differences(sim, operating, closed_fleet, fleet)}
        notes += sim.notes
        if w.concurrency is not None and p is not None and p.mean_concurrency < w.concurrency:
            warnings.append(f"simulated at the SLOs, a replica holds {p.mean_concurrency:,.1f} "
                            f"requests on average ({sim.curve.limit} binds at {p.value:.3g} "
                            f"req/s), below the target {w.concurrency}")
        if p is None:
            warnings.append("the SLO cannot be met on this hardware with this model and "
                            f"precision: {sim.tried[-1]['reason'] if sim.tried else ''}")
    else:
        if w.concurrency is not None and chosen.operating_concurrency is not None and \
                chosen.operating_concurrency < w.concurrency:
            warnings.append(f"a replica serves at most {chosen.operating_concurrency} requests "
                            f"({operating['binding']}), below the target {w.concurrency}")
        if point is None:
            warnings.append("the SLO cannot be met on this hardware with this model and "
                            f"precision: {operating['binding']}")
        if chosen.pp > 1 and not inputs.method.fast:
            notes.append("the operating point comes from the closed forms: the simulation "
                          "models PP = 1 (a pipeline keeps PP batches in flight)")
    if spec.is_moe and chosen.tp > 1:
        notes.append("MoE experts are modelled tensor-parallel (each expert split over TP); expert "
                     "parallelism and hot-expert imbalance are not modelled (field guide §5.4)")
    if sim is None:
        notes.append("times are roofline predictions from the hardware description; TTFT "
                     "includes a queueing estimate (M/D/1), ITL includes prefill interference")
        if slo.percentile != "p95":
            notes.append(f"SLO quoted at {slo.percentile}: checked on the p95-length request (the "
                         "planner has p50/p95 lengths, no length distribution beyond them)")
    else:
        c = sim.curve
        notes.append(
            f"operating point and fleet from a simulated replica (vLLM v1 scheduler, chunked "
            f"prefill, paged KV; every step timed by the roofline step model): Poisson arrivals, "
            f"lognormal lengths through the p50/p95, {len(c.requests):,} requests a load point; "
            f"SLOs checked at TTFT {c.ttft_percentile.upper()} and ITL "
            f"{c.itl_percentile.upper()} (ITL = every gap between two tokens, so steps carrying "
            "a prefill chunk count); the layout and the SLO-limited concurrency are the closed "
            "forms' (--fast: all of it)")
    parallel = {"basis": hw.source, "rows": [r.to_dict(slo) for r in par.rows],
                "chosen": {"tp": chosen.tp, "pp": chosen.pp, "gpus": chosen.gpus,
                           "reason": reason}, "most_efficient": None}
    eff = par.most_efficient
    if eff is not None and eff.operating_point is not None:  # a forced layout may have none
        parallel["most_efficient"] = {"tp": eff.tp, "pp": eff.pp,
                                      "rps_per_gpu": eff.operating_point.rps / eff.gpus,
                                      "concurrency": eff.operating_concurrency}
        if eff is not chosen and chosen.operating_point is not None and \
                eff.operating_point.rps / eff.gpus > chosen.operating_point.rps / chosen.gpus:
            notes.append(
                f"TP={eff.tp} x PP={eff.pp} serves the most requests/s per GPU "
                f"({eff.operating_point.rps / eff.gpus:.2f} vs "
                f"{chosen.operating_point.rps / chosen.gpus:.2f}, at "
                f"{eff.operating_concurrency} requests per replica"
                f"{', closed forms' if sim is not None else ''}): the fleet may need fewer "
                "GPUs with it (field guide §8.5; force it with --tp/--pp)")
    operating["method"] = "closed form"
    return {
        "kind": "ridgeline-plan", "ridgeline_version": __version__,
        "basis": hw.source, "basis_label": basis_label(hw),
        "method": "closed form" if sim is None else "simulated",
        "hardware": hw.summary(),
        "model": spec.summary(),
        "precision": inputs.precision.to_dict(),
        "workload": {**w.to_dict(), "context_p95": shape.context_p95,
                     "concurrency_scope": w.concurrency_scope,
                     "fleet_concurrency": fleet_conc, "concurrency_source": conc_source},
        "slo": slo.to_dict(),
        "engine": {k: getattr(inputs.engine, k) for k in inputs.engine.__dataclass_fields__},
        "engine_layer": inputs.engine_profile.summary(),
        "memory": memory,
        "performance": performance,
        "parallelism": parallel,
        "operating_point": operating,
        "simulation": simulation,
        "fleet": fleet,
        "warnings": list(dict.fromkeys(warnings)),
        "notes": list(dict.fromkeys(notes)),
    }


def infeasible(plan: dict[str, Any]) -> str | None:
    """One line saying why a plan has no fleet (the SLO cannot be met), else None."""
    if plan["fleet"]["feasible"]:
        return None
    op, slo = plan["operating_point"], plan["slo"]
    sim = plan.get("simulation")
    if sim is not None and not sim["feasible"]:
        why = "; ".join(t["reason"] for t in sim["tried"]) or "no simulated load meets the SLOs"
        return (f"the SLO cannot be met on {plan['hardware']['name']} [{plan['basis_label']}] "
                f"with {plan['model']['name']}: {why} (--fast plans on the closed forms)")
    parts = []
    for what, key, target in (("TTFT", "one_request_ttft_p95_s", slo["ttft_s"]),
                              ("ITL", "one_request_itl_p95_s", slo["itl_s"])):
        if op.get(key) is not None and target is not None:
            parts.append(f"{what} p95 {_secs(op[key])} (SLO {_secs(target)})")
    alone = f"; one request alone has {' and '.join(parts)}" if parts else ""
    return (f"the SLO cannot be met on {plan['hardware']['name']} [{plan['basis_label']}] with "
            f"{plan['model']['name']} at TP={op['tp']} x PP={op['pp']}, the fastest layout that "
            f"fits: {op['binding']}{alone}")


def _secs(v: float) -> str:
    return f"{v * 1e3:.3g} ms" if v < 1 else f"{v:.3g} s"


def compare_plans(measured: dict[str, Any], datasheet: dict[str, Any],
                  same_config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows (quantity, measured, datasheet, ratio datasheet / measured) for the side-by-side."""
    def get(plan: dict[str, Any], path: str) -> Any:
        cur: Any = plan
        for part in path.split("."):
            if not isinstance(cur, dict):
                return None
            cur = cur.get(part)
        return cur

    rows = []
    items = [
        ("memory bandwidth (GB/s)", "performance.bandwidth_GBps"),
        ("matmul peak (TFLOP/s)", "performance.peak_TFLOPS"),
        ("latency floor (us)", "performance.latency_floor_us"),
        ("ridge point (FLOP/byte)", "performance.ridge_point_flop_per_byte"),
        ("chosen TP", "parallelism.chosen.tp"),
        ("chosen PP", "parallelism.chosen.pp"),
        ("max concurrency (capacity)", "operating_point.max_concurrency_capacity"),
        ("max concurrency (SLO)", "operating_point.max_concurrency_slo"),
        ("operating concurrency", "operating_point.concurrency"),
        ("TTFT p95 at operating point (s)", "operating_point.ttft_p95_s"),
        ("ITL p95 at operating point (s)", "operating_point.itl_p95_s"),
        ("usable RPS per replica", "fleet.usable_rps_per_replica"),
        ("replicas (with safety)", "fleet.replicas_with_safety"),
        ("GPUs deployed (N+redundancy)", "fleet.gpus_deployed"),
        ("$ per 1M input tokens", "fleet.cost_per_1m_input_tokens"),
        ("$ per 1M output tokens", "fleet.cost_per_1m_output_tokens"),
        ("$ per 1M blended tokens", "fleet.cost_per_1m_blended_tokens"),
    ]
    for label, path in items:
        a, b = get(measured, path), get(datasheet, path)
        rows.append({"quantity": label, "measured": a, "datasheet": b, "ratio": _ratio(a, b)})
    for label, (a, b) in (same_config or {}).items():
        rows.append({"quantity": label, "measured": a, "datasheet": b, "ratio": _ratio(a, b)})
    return rows


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a and math.isfinite(a) \
            and math.isfinite(b):
        return b / a
    return None


def compare_with_datasheet(inputs: PlanInputs, hw: Hardware,
                           plan: dict[str, Any]) -> dict[str, Any]:
    """The same plan on the GPU's datasheet, side by side with the measured one.

    Besides each plan's own outcome, the p95 TTFT and the decode step are compared
    on the same configuration (the measured plan's TP x PP and operating batch),
    so the ratio isolates the hardware description.
    """
    from ridgeline.sizing.hardware import datasheet_hardware_for

    if hw.source == "datasheet":
        raise RidgelineError("--compare-datasheet needs a measured or reference profile: this plan "
                             "is already on the datasheet")
    ds_hw = datasheet_hardware_for(hw)
    try:
        ds_plan: dict[str, Any] | None = make_plan(inputs, ds_hw)
        ds_error = None
    except RidgelineError as exc:
        ds_plan, ds_error = None, str(exc)
    w = inputs.workload
    shape = Shape(w.input_p50, w.input_p95, w.output_p50, w.output_p95)
    tp, pp = plan["parallelism"]["chosen"]["tp"], plan["parallelism"]["chosen"]["pp"]
    batch = plan["operating_point"].get("concurrency") or w.concurrency or 1
    same: dict[str, tuple[Any, Any]] = {}
    models = [ReplicaModel(inputs.spec, inputs.precision, h, shape, tp=tp, pp=pp,
                           max_batched_tokens=inputs.engine.max_batched_tokens,
                           engine=inputs.engine_profile)
              for h in (hw, ds_hw)]
    try:
        same[f"TTFT of a p95 prompt, TP={tp} x PP={pp} (s)"] = tuple(
            m.prefill(w.input_p95).time_s + m.request_overhead_s for m in models)
        same[f"decode step at batch {batch}, TP={tp} x PP={pp} (s)"] = tuple(
            m.decode(batch, shape.context_p95).time_s for m in models)
    except RidgelineError as exc:
        same = {}
        ds_error = ds_error or str(exc)
    return {"datasheet": ds_hw.summary(), "datasheet_plan": ds_plan, "datasheet_error": ds_error,
            "differences": compare_plans(plan, ds_plan or {}, same)}
