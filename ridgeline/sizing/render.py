"""Rich tables for a plan (the CLI's default output; `--json` prints the same data).

Every table title carries the plan's basis: [measured], [reference profile] or
[DATASHEET]. Tables fit an 80-column terminal: no table needs more than 80 columns to
show its words whole (wide ones are stacked as two), long explanations wrap.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def gb(v: Any) -> str:
    return "-" if v is None else f"{v / 1e9:,.1f} GB"


def secs(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-" if v is None else "unbounded"
    return f"{v * 1e3:,.1f} ms" if v < 1 else f"{v:,.2f} s"


def num(v: Any, fmt: str = ",.0f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def pct(v: Any) -> str:
    return "-" if v is None else f"{v:.0%}"


TAGS = {"measured": "measured", "reference": "reference profile", "datasheet": "DATASHEET"}


def _table(basis: str, what: str) -> Table:
    """A table titled `what` and its basis; the title (under 80 columns) never wraps."""
    tag = TAGS[basis]
    title = (f"{what}  [bold red]\\[{tag}][/bold red]" if basis == "datasheet"
             else f"{what}  \\[{tag}]")
    return Table(title=title, min_width=len(what) + len(tag) + 4)


def _numbers(t: Table, *headers: str) -> None:
    """Right-aligned columns whose cells never wrap (a number split over two lines misleads);
    headers carry their own line breaks so the table stays narrow."""
    for h in headers:
        t.add_column(h, justify="right", no_wrap=True)


def memory_table(plan: dict[str, Any]) -> Table:
    m = plan["memory"]
    t = _table(plan["basis"], "1. Memory: the capacity axis (field guide §2)")
    t.add_column("component")
    t.add_column("size", justify="right")
    t.add_column("how")
    prec = plan["precision"]
    t.add_row("weights", gb(m["weights_bytes"]),
              f"{plan['model']['params'] / 1e9:,.2f}B params, linear layers in {prec['weights']}, "
              "embedding/head/norms 16-bit")
    t.add_row("  resident", gb(m["weights_resident_bytes"]),
              f"x {1 + plan['engine']['allocator_allowance']:.2f} allocator allowance (§2.1)")
    t.add_row("KV cache per token", f"{m['kv_bytes_per_token']:,.0f} B",
              f"{prec['kv_cache']}; " + ("MLA latent" if plan["model"]["attention"] == "MLA"
                                         else "2 x layers x kv_heads x head_dim x bytes"))
    t.add_row("KV cache", gb(m["kv_bytes"]),
              f"{m['concurrency']:,} requests x {m['kv_tokens_per_request']:,} tokens "
              f"({escape(m['concurrency_source'])})")
    t.add_row("activations", gb(m["activations_bytes"]), escape(m["activations_method"]))
    if m["lora_bytes"]:
        t.add_row("LoRA adapters", gb(m["lora_bytes"]),
                  f"{plan['engine']['lora_adapters']} x rank {plan['engine']['lora_rank']}")
    t.add_row("[bold]total[/bold]", f"[bold]{gb(m['total_bytes'])}[/bold]", "")
    t.add_row("usable per GPU", gb(m["usable_bytes_per_gpu"]),
              f"{m['memory_fraction']:.2f} x {gb(m['gpu_memory_bytes'])} (framework reserve "
              f"{gb(m['overhead_bytes_per_gpu'])}, §2.4)")
    t.add_row("[bold]minimum GPUs[/bold]", f"[bold]{m['min_gpus']}[/bold]",
              "ceil(total / usable) (§2.6)")
    t.add_row("recommended GPUs", str(m["recommended_gpus"]),
              f"with {m['headroom']:.0%} memory headroom (§2.6)")
    t.add_row("max concurrency per replica", f"{m['replica_max_concurrency']:,}",
              f"memory at {m['kv_tokens_per_request']:,} tokens, "
              f"TP={m['replica_tp']} x PP={m['replica_pp']}")
    if m["notes"]:
        t.caption = escape("; ".join(m["notes"]))
    return t


def ttft_table(plan: dict[str, Any]) -> Table:
    p = plan["performance"]
    t = _table(plan["basis"], f"2a. TTFT against input length (lone request, TP={p['tp']})")
    _numbers(t, "input\ntokens", "TTFT", "bound", "prefill\ntok/s", "all-\nreduce")
    for r in p["ttft_vs_input"]:
        t.add_row(f"{r['input_tokens']:,}", secs(r["ttft_s"]), r["bound"],
                  num(r["prefill_tokens_per_s"]), pct(r["allreduce_share"]))
    return t


BOUND_SHORT = {"communication": "comms"}  # the widest word of the decode table


def decode_table(plan: dict[str, Any]) -> Table:
    p = plan["performance"]
    t = _table(plan["basis"], f"2b. Decode against batch ({p['decode_context_tokens']:,}-token "
                              f"context, TP={p['tp']})")
    cols = ["batch", "ITL\n(step)", "tok/s", "tok/s\nper GPU", "bound", "all-\nreduce", "fits"]
    moe = any("experts_loaded" in r for r in p["decode_vs_batch"])
    if moe:
        cols.insert(5, "experts\nloaded")
    _numbers(t, *cols)
    for r in p["decode_vs_batch"]:
        row = [f"{r['batch']:,}", secs(r["itl_s"]), num(r["tokens_per_s"]),
               num(r["tokens_per_s_per_gpu"]), BOUND_SHORT.get(r["bound"], r["bound"]),
               pct(r["allreduce_share"]), "yes" if r["fits"] else "[red]no[/red]"]
        if moe:
            row.insert(5, num(r.get("experts_loaded"), ".1f"))
        t.add_row(*row)
    return t


def _layout_name(r: dict[str, Any], chosen: dict[str, Any]) -> str:
    mark = " *" if (r["tp"], r["pp"]) == (chosen["tp"], chosen["pp"]) else ""
    return f"{r['tp']} x {r['pp']}{mark}"


def parallel_memory_table(plan: dict[str, Any]) -> Table:
    par = plan["parallelism"]
    t = _table(plan["basis"], "3a. Parallelism: memory (field guide §5)")
    _numbers(t, "TP x PP", "GPU memory\nat target", "usable", "fits", "max conc.\n(memory)",
             "PP\nbubble")
    for r in par["rows"]:
        t.add_row(_layout_name(r, par["chosen"]), gb(r["memory_per_gpu_bytes"]),
                  gb(r["usable_per_gpu_bytes"]), "yes" if r["fits"] else "[red]no[/red]",
                  num(r["max_concurrency_memory"]), pct(r["pp_bubble"]))
    t.caption = escape(f"* chosen: {par['chosen']['reason']}")
    return t


def parallel_latency_table(plan: dict[str, Any]) -> Table:
    par = plan["parallelism"]
    t = _table(plan["basis"], "3b. Parallelism: latency at the target (§5)")
    _numbers(t, "TP x PP", "ITL", "TTFT", "all-\nreduce", "tok/s\nper GPU", "max\nconc.\n(SLO)",
             "RPS/GPU\nat op.", "meets\nSLO")
    errors = []
    for r in par["rows"]:
        if r["error"]:
            errors.append(f"TP={r['tp']} x PP={r['pp']}: {r['error']}")
        t.add_row(_layout_name(r, par["chosen"]), secs(r["itl_s"]), secs(r["ttft_s"]),
                  pct(r["allreduce_share"]), num(r["tokens_per_s_per_gpu"]),
                  num(r["max_concurrency_slo"]), num(r["rps_per_gpu_at_operating_point"], ",.2f"),
                  "yes" if r["meets_slo"] else "[red]no[/red]")
    if errors:
        t.caption = escape("; ".join(errors))
    return t


def _closed_operating_rows(t: Table, op: dict[str, Any], simulated: bool) -> None:
    t.add_row("max concurrency (capacity)", num(op["max_concurrency_capacity"]),
              f"memory at the p95 context ({num(op['max_concurrency_memory'])}), at most "
              f"--max-num-seqs ({op['max_num_seqs']})")
    limit = op["max_concurrency_slo"]
    shown = num(limit) + ("+" if op["slo_limit_above"] == "search limit" else "")
    t.add_row("max concurrency (SLO)", shown if limit is not None else "-",
              ("closed forms (--fast): " if simulated else "")
              + f"TTFT and ITL SLO; above it: {op['slo_limit_above']}")
    if simulated:
        return
    t.add_row("[bold]operating concurrency[/bold]", f"[bold]{num(op['concurrency'])}[/bold]",
              f"the smaller wins: {escape(op['binding'])}")
    if op.get("ttft_p95_s") is not None:
        t.add_row("TTFT p95", secs(op["ttft_p95_s"]), f"queue {secs(op['queue_wait_s'])} + prefill "
                  f"{secs(op['prefill_p95_s'])} + one step")
        t.add_row("ITL p95", secs(op["itl_p95_s"]),
                  f"step / (1 - prefill share {pct(op['prefill_share'])})")
        t.add_row("E2E (typical request)", secs(op["e2e_s"]), "")


def _limit_text(sim: dict[str, Any]) -> str:
    limit = sim["limit"]
    if limit == "sweep limit":
        return (f"every simulated load up to {sim['points'][-1]['rps'] / sim['capacity_rps']:.0%} "
                "of capacity meets the SLOs" if sim["slo"].get("ttft_s") or
                sim["slo"].get("itl_s") else "no SLO given")
    return f"the {limit} binds"


def _simulated_operating_rows(t: Table, sim: dict[str, Any]) -> None:
    p = sim["operating_point"]
    if p is None:
        return
    tq, iq = sim["ttft_percentile"], sim["itl_percentile"]
    t.add_row("[bold]operating load (simulated)[/bold]", f"[bold]{num(p['rps'], ',.2f')}[/bold]",
              f"req/s, {p['fraction_of_capacity']:.0%} of the simulated capacity "
              f"({num(sim['capacity_rps'], ',.2f')} req/s): {_limit_text(sim)}")
    t.add_row("requests in flight", num(p["concurrency"], ",.1f"),
              f"mean, queued + running (batch {num(p['mean_batch'], ',.1f')})")
    t.add_row(f"TTFT {tq}", secs(p["ttft_s"][tq]), f"p50 {secs(p['ttft_s']['p50'])}; queue "
              f"wait mean {secs(p['queue_wait_s']['mean'])}")
    t.add_row(f"ITL {iq}", secs(p["itl_s"][iq]), f"p50 {secs(p['itl_s']['p50'])}: every gap "
              "between two tokens, prefill-chunk steps included")
    t.add_row("E2E (mean)", secs(p["e2e_s"]["mean"]), f"p99 {secs(p['e2e_s']['p99'])}")


def fleet_table(plan: dict[str, Any]) -> Table:
    op, f = plan["operating_point"], plan["fleet"]
    sim = plan.get("simulation")
    t = _table(plan["basis"], "4. Operating point and fleet (§8.3, §9)")
    t.add_column("quantity")
    _numbers(t, "value")
    t.add_column("how")
    _closed_operating_rows(t, op, sim is not None)
    if sim is not None:
        _simulated_operating_rows(t, sim)
    if not f["feasible"]:
        t.add_row("[red]fleet[/red]", "-", escape(f["reason"]))
        return t
    per = f["gpus_per_replica"]
    t.add_row("usable RPS per replica", num(f["usable_rps_per_replica"], ",.2f"),
              "the simulated operating load (--fast: Little's law, C / E2E)" if sim is not None
              else "Little's law: C / E2E (§8.3)")
    if f["demand_rps"] is not None:
        t.add_row("peak demand", num(f["demand_rps"], ",.1f") + " RPS", "peak RPS x (1 + headroom)")
    if f["fleet_concurrency"] is not None:
        t.add_row("fleet requests in flight", num(f["fleet_concurrency"], ",.0f"),
                  f"{escape(plan['workload']['concurrency_source'])} x (1 + headroom)")
    how = []
    if f["replicas_for_rps"] is not None:
        how.append("peak demand / usable RPS per replica")
    if f["replicas_for_concurrency"] is not None:
        how.append("requests in flight / operating concurrency")
    t.add_row("replicas needed", num(f["replicas_needed"], ",.2f"),
              " vs ".join(how) or "target concurrency / operating concurrency")
    t.add_row("replicas with safety", num(f["replicas_with_safety"]),
              f"ceil({f['replicas_needed']:,.2f} x {f['safety_factor']:g} safety) (§8.3)")
    t.add_row("GPUs", num(f["gpus"]), f"{f['replicas_with_safety']:,} replicas x {per} GPUs")
    t.add_row("[bold]GPUs deployed[/bold]", f"[bold]{num(f['gpus_deployed'])}[/bold]",
              f"N+{f['redundancy']}: {f['replicas_deployed']:,} replicas x {per} GPUs")
    if f["cost_per_1m_blended_tokens"] is not None:
        at = f"${f['gpu_hourly']:g}/GPU-h at {f['utilization']:.0%} utilization (§9.2)"
        t.add_row("$ per 1M input tokens", num(f["cost_per_1m_input_tokens"], ",.3f"),
                  f"the prefill share of GPU time; {at}")
        t.add_row("$ per 1M output tokens", num(f["cost_per_1m_output_tokens"], ",.3f"),
                  "the decode share of GPU time")
        t.add_row("$ per 1M blended tokens", num(f["cost_per_1m_blended_tokens"], ",.3f"),
                  f"all GPU time over all tokens, at this workload's "
                  f"{f['blended_input_per_output']:,.3g}:1 input:output mix")
        t.add_row("fleet $ per hour", num(f["fleet_cost_per_hour"], ",.2f"),
                  "GPUs deployed x $/GPU-h")
    if f["queue_depth_fleet"] is not None:
        t.add_row("safe queue depth (fleet)", num(f["queue_depth_fleet"], ",.0f"),
                  f"max wait {secs(f['max_queue_wait_s'])} x arrival rate (§9.4)")
        t.add_row("circuit breaker (fleet)", f"{f['breaker_threshold_fleet']:,}",
                  f"{f['breaker_fraction']:.0%} of the safe depth")
        t.add_row("  per replica", f"{f['breaker_threshold_per_replica']:,}", "")
    return t


def simulation_table(plan: dict[str, Any]) -> Table:
    """The simulated plan against the closed forms (--fast), quantity by quantity."""
    sim = plan["simulation"]
    t = _table(plan["basis"], f"Simulated against closed forms (TP={sim['tp']}, §8.1-8.3)")
    t.add_column("quantity")
    _numbers(t, "closed\nform", "simulated", "simulated\n/ closed")
    for r in sim["differences"]:
        q = r["quantity"]
        fmt = secs if q.startswith(("TTFT", "ITL", "E2E")) else (
            (lambda v: num(v, ",.2f")) if "RPS" in q else
            (lambda v: num(v, ",.3f")) if q.startswith("$") else
            (lambda v: num(v, ",.1f")) if "in flight" in q else num)
        ratio = r["ratio"]
        shown = "-" if ratio is None else f"{ratio:.2f}x"
        if ratio is not None and abs(ratio - 1) > 0.05:
            shown = f"[bold]{shown}[/bold]"
        t.add_row(escape(q.replace(" (s)", "")), fmt(r["closed_form"]), fmt(r["simulated"]),
                  shown)
    t.caption = escape("the fleet is sized on the simulated column; --fast sizes it on the "
                       "closed forms. Ratios beyond 5% in bold")
    return t


def simulation_line(plan: dict[str, Any]) -> str:
    """One line on the simulated curve: capacity, knee, operating point, cost of simulating."""
    sim = plan["simulation"]
    knee = sim["knee"]
    p = sim["operating_point"]
    parts = [f"simulated TP={sim['tp']} replica: capacity {sim['capacity_rps']:,.3g} req/s"]
    parts.append(f"knee at {knee['load']:,.3g} req/s (P99 TTFT leaves P50)"
                 if knee.get("index") is not None else "no knee on the simulated loads")
    if p is not None:
        parts.append(f"operating load {p['rps']:,.3g} req/s ({_limit_text(sim)})")
    parts.append(f"{len(sim['points'])} loads x {sim['requests_per_point']:,} requests in "
                 f"{sim['elapsed_s']:.1f} s; `ridgeline simulate` draws the whole curve")
    return "; ".join(parts)


def compare_table(cmp: dict[str, Any]) -> Table:
    t = Table(title="Measured profile against the datasheet")
    t.add_column("quantity")
    _numbers(t, "measured", "datasheet", "datasheet\n/ measured")
    for r in cmp["differences"]:
        fmt = (lambda v: "-" if v is None else (f"{v:,.4g}" if isinstance(v, float) else f"{v:,}"))
        t.add_row(escape(r["quantity"]), fmt(r["measured"]), fmt(r["datasheet"]),
                  "-" if r["ratio"] is None else f"{r['ratio']:.2f}x")
    return t


def plan_renderables(plan: dict[str, Any]) -> list[Any]:
    """Everything `ridgeline plan` prints, in order (text lines and tables)."""
    hw = plan["hardware"]
    model = plan["model"]
    tag = escape(f"[{plan['basis_label']}]")
    active = f", {model['active_params'] / 1e9:,.1f}B active" if model.get("moe") else ""
    prec = plan["precision"]
    p = plan["performance"]
    out: list[Any] = [
        f"[bold]ridgeline plan[/bold]: {model['name']} ({model['params'] / 1e9:,.1f}B "
        f"params{active}), weights {prec['weights']}, KV {prec['kv_cache']}, GEMMs in "
        f"{p['gemm_dtype']} on {escape(hw['name'])} {tag}"]
    out += [f"[yellow]warning:[/yellow] {escape(w)}" for w in plan["warnings"]]
    out += [memory_table(plan), ttft_table(plan), decode_table(plan)]
    out.append(
        f"ridge point {p['ridge_point_flop_per_byte']:,.0f} FLOP/byte ({p['gemm_dtype']}); "
        f"decode GEMMs turn compute-bound at batch {num(p['gemm_compute_bound_batch'])}, the "
        f"whole decode step at {num(p['decode_compute_bound_batch'])} "
        f"({p['decode_context_tokens']:,}-token context; '-' = not below {1 << 16:,}); per-step "
        f"floor {secs(p['decode_floor_s'])} = {p['latency_floor_us']:g} us x "
        f"{p['kernels_per_decode_step']:,} kernels; all-reduce: {p['allreduce_label']}  {tag}")
    out += [parallel_memory_table(plan), parallel_latency_table(plan), fleet_table(plan)]
    if plan.get("simulation"):
        out.append(simulation_table(plan))
        out.append(f"{escape(simulation_line(plan))}  {tag}")
    if plan.get("comparison"):
        out.append(compare_table(plan["comparison"]))
    out += [f"[dim]note: {escape(n)}[/dim]" for n in plan["notes"] + p["notes"]]
    return out


def print_plan(plan: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    for item in plan_renderables(plan):
        console.print(item)


def static_batch_table(run: dict[str, Any]) -> Table:
    t = _table(run["basis"], f"Static batch: {run['batch']:,} x {run['input_len']:,} in, "
                             f"{run['output_len']:,} out, TP={run['tp']} x PP={run['pp']}")
    t.add_column("quantity")
    _numbers(t, "value")
    t.add_column("how")
    t.add_row("prefill (TTFT)", secs(run["prefill_s"]),
              f"{run['batch']:,} prompts of {run['input_len']:,} tokens; {run['prefill_bound']}"
              "-bound")
    t.add_row("decode", secs(run["decode_s"]), f"{run['decode_steps']:,} steps (the prefill "
              "samples the first token)")
    if run["decode_steps"]:
        t.add_row("  mean step (ITL)", secs(run["mean_step_s"]),
                  f"first {secs(run['first_step_s'])}, last {secs(run['last_step_s'])}; "
                  f"{run['decode_bound']}-bound")
    t.add_row("[bold]latency[/bold]", f"[bold]{secs(run['latency_s'])}[/bold]", "prefill + decode")
    t.add_row("tokens/s", num(run["tokens_per_s"]), "batch x output tokens / latency")
    t.add_row("[bold]tokens/s per GPU[/bold]", f"[bold]{num(run['tokens_per_s_per_gpu'])}[/bold]",
              f"over {run['gpus']} GPU{'s' if run['gpus'] > 1 else ''}")
    t.add_row("memory per GPU", gb(run["memory_per_gpu_bytes"]),
              f"of {gb(run['usable_per_gpu_bytes'])} usable")
    return t


def print_static_batch(run: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    model, hw = run["model"], run["hardware"]
    prec = run["precision"]
    console.print(f"[bold]ridgeline plan --static-batch[/bold]: {model['name']}, weights "
                  f"{prec['weights']}, KV {prec['kv_cache']} on {escape(hw['name'])} "
                  f"{escape('[' + TAGS[run['basis']] + ']')}")
    for w in run["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}")
    console.print(static_batch_table(run))
    for n in run["notes"]:
        console.print(f"[dim]note: {escape(n)}[/dim]")


# -- ridgeline simulate ----------------------------------------------------------------------

def _lengths_text(d: dict[str, Any]) -> str:
    ln = d["lengths"]
    if ln["kind"] == "trace":
        return (f"lengths from the trace {ln['file']} ({ln['rows']:,} rows"
                + (", its arrival times replayed" if ln["replay_arrivals"] else "") + ")")

    def q(what: str) -> str:
        p99 = ln[f"{what}_p99"]
        return (f"p50 {ln[f'{what}_p50']:,} / p95 {ln[f'{what}_p95']:,}"
                + (f" / p99 {p99:,}" if p99 else ""))

    return (f"lognormal lengths: input {q('input')}, output {q('output')} (means "
            f"{ln['mean_input']:,.0f} and {ln['mean_output']:,.0f})")


def _load_text(d: dict[str, Any]) -> str:
    load = d["load"]
    if load["kind"] == "concurrency":
        how = "closed loop" + (f", {load['think_s']:g} s think time" if load["think_s"] else "")
    else:
        cv = load["arrival_cv"]
        how = ("open loop, " + ("Poisson arrivals" if cv == 1 else
                                "evenly spaced arrivals" if cv == 0 else
                                f"gamma arrivals, CV {cv:.3g}"))
        if load["capacity_rps"] is not None:
            how += f"; capacity {load['capacity_rps']:,.3g} req/s"
        if load["default_grid"]:
            how += " (the loads: 10% to 120% of it)"
    return f"{how}; {load['requests_per_point']:,} requests a load point, seed {load['seed']}"


def simulation_renderables(d: dict[str, Any]) -> list[Any]:
    """Everything `ridgeline simulate` prints, in order (text lines and tables)."""
    from ridgeline.reports.curve import curve_tables
    from ridgeline.reports.tables import to_rich

    hw, model, prec = d["hardware"], d["model"], d["precision"]
    tag = escape(f"[{d['basis_label']}]")
    sched = d["scheduler"]
    out: list[Any] = [
        f"[bold]ridgeline simulate[/bold]: {model['name']}, weights {prec['weights']}, KV "
        f"{prec['kv_cache']}, TP={d['tp']} on {escape(hw['name'])} {tag}"]
    out += [f"[yellow]warning:[/yellow] {escape(w)}" for w in d["warnings"]]
    out.append(escape(
        f"TP={d['tp']}: {d['tp_reason']}. Scheduler (vLLM v1): {sched['kv_blocks']:,} KV blocks "
        f"of {sched['block_tokens']} tokens ({sched['kv_tokens']:,} tokens, from the memory "
        f"plan), {sched['max_num_batched_tokens']:,} tokens a step, at most "
        f"{sched['max_num_seqs']:,} sequences. {_lengths_text(d)}; {_load_text(d)}."))
    for t in curve_tables(d, d.get("measured") or []):
        t.title = f"{t.title}  " + escape(f"[{TAGS[d['basis']]}]")
        out.append(to_rich(t))
    out.append(f"[bold]{escape(d['summary'])}[/bold]")
    if d.get("cost_per_1m_output_tokens") is not None:
        out.append(f"$ per 1M output tokens at the operating point: "
                   f"{d['cost_per_1m_output_tokens']:,.3f} (${d['gpu_hourly']:g}/GPU-h x "
                   f"{d['tp']} GPUs at {d['utilization']:.0%} utilization)")
    if d.get("interrupted"):
        out.append(f"[yellow]interrupted: {len(d['points'])} load points simulated, the rest "
                   "not[/yellow]")
    out += [f"[dim]note: {escape(n)}[/dim]" for n in d["notes"]]
    out.append(f"[dim]simulated in {d['elapsed_s']:.1f} s[/dim]")
    return out


def print_simulation(d: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    for item in simulation_renderables(d):
        console.print(item)
