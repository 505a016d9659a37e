"""Rich tables for a plan (the CLI's default output; `--json` prints the same data).

Every table title carries the plan's basis: "measured profile", "reference profile
(another machine)" or "DATASHEET".
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


def _title(plan: dict[str, Any], what: str) -> str:
    label = plan["basis_label"]
    if plan["basis"] == "datasheet":
        return f"{what}  [bold red]\\[{label}][/bold red]"
    return f"{what}  \\[{label}]"


def _table(plan: dict[str, Any], what: str) -> Table:
    """A table whose title (with the basis label) never wraps."""
    title = _title(plan, what)
    return Table(title=title, min_width=len(what) + len(plan["basis_label"]) + 8)


def memory_table(plan: dict[str, Any]) -> Table:
    m = plan["memory"]
    t = _table(plan, "1. Memory: the capacity axis (field guide §2)")
    t.add_column("component")
    t.add_column("size", justify="right")
    t.add_column("how")
    prec = plan["precision"]
    t.add_row("weights", gb(m["weights_bytes"]),
              f"{plan['model']['params'] / 1e9:,.2f}B params, linear layers in {prec['weights']}, "
              "embedding/head/norms 16-bit")
    t.add_row("  resident (allocator allowance)", gb(m["weights_resident_bytes"]),
              f"x {1 + plan['engine']['allocator_allowance']:.2f} (§2.1)")
    t.add_row("KV cache per token", f"{m['kv_bytes_per_token']:,.0f} B",
              f"{prec['kv_cache']}; " + ("MLA latent" if plan["model"]["attention"] == "MLA"
                                         else "2 x layers x kv_heads x head_dim x bytes"))
    t.add_row("KV cache", gb(m["kv_bytes"]),
              f"{m['concurrency']:,} requests x {m['kv_tokens_per_request']:,} tokens "
              f"({m['concurrency_source']})")
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
              f"with {m['headroom']:.0%} headroom (§2.6)")
    t.add_row("max concurrency per replica", f"{m['replica_max_concurrency']:,}",
              f"at {m['kv_tokens_per_request']:,} tokens, "
              f"TP={m['replica_tp']} x PP={m['replica_pp']}")
    if m["notes"]:
        t.caption = escape("; ".join(m["notes"]))
    return t


def ttft_table(plan: dict[str, Any]) -> Table:
    p = plan["performance"]
    t = _table(plan, f"2a. TTFT against input length (lone request, TP={p['tp']})")
    for c in ("input tokens", "TTFT", "bound", "prefill tok/s", "all-reduce"):
        t.add_column(c, justify="right")
    for r in p["ttft_vs_input"]:
        t.add_row(f"{r['input_tokens']:,}", secs(r["ttft_s"]), r["bound"],
                  num(r["prefill_tokens_per_s"]), pct(r["allreduce_share"]))
    return t


def decode_table(plan: dict[str, Any]) -> Table:
    p = plan["performance"]
    t = _table(plan, f"2b. Decode: ITL and tokens/s against batch "
                     f"({p['decode_context_tokens']:,}-token context, TP={p['tp']})")
    cols = ["batch", "ITL (step)", "tokens/s", "tokens/s/GPU", "bound", "all-reduce", "fits"]
    moe = any("experts_loaded" in r for r in p["decode_vs_batch"])
    if moe:
        cols.insert(5, "experts loaded")
    for c in cols:
        t.add_column(c, justify="right")
    for r in p["decode_vs_batch"]:
        row = [f"{r['batch']:,}", secs(r["itl_s"]), num(r["tokens_per_s"]),
               num(r["tokens_per_s_per_gpu"]), r["bound"], pct(r["allreduce_share"]),
               "yes" if r["fits"] else "[red]no[/red]"]
        if moe:
            row.insert(5, num(r.get("experts_loaded"), ".1f"))
        t.add_row(*row)
    return t


def parallel_table(plan: dict[str, Any]) -> Table:
    par = plan["parallelism"]
    t = _table(plan, "3. Parallelism (field guide §5)")
    for c in ("TP x PP", "GPU memory @ target", "fits", "ITL @ target", "TTFT @ target",
              "all-reduce", "tok/s/GPU @ target", "max conc. (mem)", "max conc. (SLO)",
              "RPS/GPU @ op", "meets SLO"):
        t.add_column(c, justify="right")
    ch = par["chosen"]
    for r in par["rows"]:
        mark = " *" if (r["tp"], r["pp"]) == (ch["tp"], ch["pp"]) else ""
        name = f"{r['tp']} x {r['pp']}{mark}"
        if r["pp"] > 1:
            name += f" (bubble {pct(r['pp_bubble'])})"
        t.add_row(name, f"{gb(r['memory_per_gpu_bytes'])} / {gb(r['usable_per_gpu_bytes'])}",
                  "yes" if r["fits"] else "[red]no[/red]", secs(r["itl_s"]), secs(r["ttft_s"]),
                  pct(r["allreduce_share"]), num(r["tokens_per_s_per_gpu"]),
                  num(r["max_concurrency_capacity"]), num(r["max_concurrency_slo"]),
                  num(r["rps_per_gpu_at_operating_point"], ",.2f"),
                  ("yes" if r["meets_slo"] else "[red]no[/red]") if not r["error"] else
                  f"[red]{escape(r['error'][:40])}[/red]")
    t.caption = escape(f"* chosen: {ch['reason']}")
    return t


def fleet_table(plan: dict[str, Any]) -> Table:
    op, f = plan["operating_point"], plan["fleet"]
    t = _table(plan, "4. Operating point and fleet (field guide §8.3, §9)")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_column("how")
    t.add_row("max concurrency (capacity)", num(op["max_concurrency_capacity"]),
              "memory, p95 context")
    limit = op["max_concurrency_slo"]
    shown = num(limit) + ("+" if op["slo_limit_above"] == "search limit" else "")
    t.add_row("max concurrency (SLO)", shown if limit is not None else "-",
              f"TTFT and ITL SLO; above it: {op['slo_limit_above']}")
    t.add_row("[bold]operating concurrency[/bold]", f"[bold]{num(op['concurrency'])}[/bold]",
              f"the smaller wins: {op['binding']}")
    if op.get("ttft_p95_s") is not None:
        t.add_row("TTFT p95", secs(op["ttft_p95_s"]), f"queue {secs(op['queue_wait_s'])} + prefill "
                  f"{secs(op['prefill_p95_s'])} + one step")
        t.add_row("ITL p95", secs(op["itl_p95_s"]),
                  f"step / (1 - prefill share {pct(op['prefill_share'])})")
        t.add_row("E2E (typical request)", secs(op["e2e_s"]), "")
    if not f["feasible"]:
        t.add_row("[red]fleet[/red]", "-", escape(f["reason"]))
        return t
    t.add_row("usable RPS per replica", num(f["usable_rps_per_replica"], ",.2f"),
              "Little's law: C / E2E (§8.3)")
    if f["demand_rps"] is not None:
        t.add_row("peak demand", num(f["demand_rps"], ",.1f") + " RPS", "peak RPS x (1 + headroom)")
    if f["fleet_concurrency"] is not None:
        t.add_row("fleet requests in flight", num(f["fleet_concurrency"], ",.0f"),
                  plan["workload"]["concurrency_source"])
    how = []
    if f["replicas_for_rps"] is not None:
        how.append("ceil(peak demand / usable RPS per replica)")
    if f["replicas_for_concurrency"] is not None:
        how.append("ceil(requests in flight / operating concurrency)")
    t.add_row("replicas", num(f["replicas"]), " vs ".join(how) or "one replica (no fleet load)")
    t.add_row("GPUs", num(f["gpus"]), f"{f['replicas_with_safety']} replicas "
              f"(x {f['safety_factor']:g} safety) x {f['gpus_per_replica']} GPUs")
    t.add_row("[bold]GPUs deployed[/bold]", f"[bold]{num(f['gpus_deployed'])}[/bold]",
              f"N+{f['redundancy']}: {f['replicas_deployed']} replicas")
    if f["cost_per_1m_output_tokens"] is not None:
        t.add_row("$ per 1M output tokens", num(f["cost_per_1m_output_tokens"], ",.3f"),
                  f"${f['gpu_hourly']:g}/GPU-h at {f['utilization']:.0%} utilization (§9.2)")
        t.add_row("fleet $ per hour", num(f["fleet_cost_per_hour"], ",.2f"),
                  "GPUs deployed x $/GPU-h")
    if f["queue_depth_fleet"] is not None:
        t.add_row("safe queue depth (fleet)", num(f["queue_depth_fleet"], ",.0f"),
                  f"max wait {secs(f['max_queue_wait_s'])} x arrival rate (§9.4)")
        t.add_row("circuit breaker at", f"{f['breaker_threshold_fleet']:,} fleet / "
                  f"{f['breaker_threshold_per_replica']:,} per replica",
                  "a fraction of the safe depth")
    return t


def compare_table(cmp: dict[str, Any]) -> Table:
    t = Table(title="Measured profile against the datasheet (--compare-datasheet)")
    for c in ("quantity", "measured", "datasheet", "datasheet / measured"):
        t.add_column(c, justify="right" if c != "quantity" else "left")
    for r in cmp["differences"]:
        fmt = (lambda v: "-" if v is None else (f"{v:,.4g}" if isinstance(v, float) else f"{v:,}"))
        t.add_row(r["quantity"], fmt(r["measured"]), fmt(r["datasheet"]),
                  "-" if r["ratio"] is None else f"{r['ratio']:.2f}x")
    return t


def print_plan(plan: dict[str, Any], console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal and console.width < 140:
            console = Console(width=140)  # piped: wide enough for the parallelism table
    hw = plan["hardware"]
    model = plan["model"]
    tag = escape(f"[{plan['basis_label']}]")
    active = f", {model['active_params'] / 1e9:,.1f}B active" if model.get("moe") else ""
    prec = plan["precision"]
    console.print(f"[bold]ridgeline plan[/bold]: {model['name']} "
                  f"({model['params'] / 1e9:,.1f}B params{active}), weights {prec['weights']}, "
                  f"KV {prec['kv_cache']}, GEMMs in {plan['performance']['gemm_dtype']} on "
                  f"{escape(hw['name'])} {tag}")
    for w in plan["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}")
    for table in (memory_table(plan), ttft_table(plan), decode_table(plan)):
        console.print(table)
    p = plan["performance"]
    console.print(
        f"ridge point {p['ridge_point_flop_per_byte']:,.0f} FLOP/byte ({p['gemm_dtype']}); "
        f"decode GEMMs turn compute-bound at batch {num(p['gemm_compute_bound_batch'])}, the "
        f"whole decode step at {num(p['decode_compute_bound_batch'])} "
        f"({p['decode_context_tokens']:,}-token context; '-' = not below {1 << 16:,}); per-step "
        f"floor {secs(p['decode_floor_s'])} = {p['latency_floor_us']:g} us x "
        f"{p['kernels_per_decode_step']:,} kernels; all-reduce: {p['allreduce_label']}  {tag}")
    console.print(parallel_table(plan))
    console.print(fleet_table(plan))
    if plan.get("comparison"):
        console.print(compare_table(plan["comparison"]))
    for n in plan["notes"] + p["notes"]:
        console.print(f"[dim]note: {escape(n)}[/dim]")
