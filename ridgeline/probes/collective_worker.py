"""Collective worker: the code each rank runs for the collective sweep (all-reduce, all-gather,
reduce-scatter, all-to-all).

One process per device. Started either by the allreduce probe (one node:
`python -m ridgeline.probes.collective_worker CONFIG.json` per rank, launched by
ridgeline.ranks.spawn_ranks with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1,
MASTER_PORT in the environment) or in-process under torchrun (`python -m
ridgeline.probes.allreduce`, and `ridgeline profile` under torchrun, which joins the group
first with `join` and keeps it).

Per world size w (the first w ranks, as a sub-group when w < WORLD_SIZE), per
collective, dtype and size, in place (all-to-all: out of place, as nccl-tests
runs it; torch's all_to_all_single with equal splits):

1. validate: each rank fills its buffer with a rank-dependent periodic tile
   (element i of rank r holds (r + i) % m), runs the collective once and
   compares the result with the closed form (the sum over ranks, or the
   gathered tiles); the worst error over ranks decides `validated`.
   All-to-all: chunk d of rank s's input holds the tile of the pair (s, d)
   (`all_to_all_tile_values`, distinct for every pair), the output starts as
   -1, and chunk k of rank r's output must hold the tile of (k, r) exactly;
2. estimate one call's time (3 calls), agreed across ranks (MAX) so that every
   rank runs the same number of warm-up and timed iterations (a mismatch
   would deadlock);
3. warm up, then time each iteration: device events on GPUs; on gloo a barrier
   then the host clock (CPU work is synchronous). Both go through the one
   timing loop, `ridgeline.timing.sample_ms`;
4. per iteration take the slowest rank (all-reduce MAX of the per-rank times):
   the collective is done only when its last rank is.

Sizes follow nccl-tests: all-reduce `size_bytes` is the per-rank buffer;
all-gather and reduce-scatter `size_bytes` is the *total* buffer (count per
rank x world size x element size); all-to-all `size_bytes` is the total each
rank sends (count per peer x world size x element size, alltoall_perf's
"size"; the chunk to itself included). Then

    algbw_GBps = size_bytes / time / 1e9
    busbw_GBps = algbw_GBps x factor  (all-reduce 2(n-1)/n; the others (n-1)/n)

A backend without all-to-all (checked once per world size, on the group, with
a one-element exchange) gives one `waived` record per dtype with the reason
instead of its cases, never a crash.

The cases run in the order of `planned_cases(config, w)`, which the parent
also uses to name the cases a dead or hung sweep never measured. Rank 0
appends one record per case to OUT_DIR/records.jsonl as it goes (a later
hang keeps the earlier cases). Each rank rewrites
OUT_DIR/progress.rank<R> ("<step>\\t<stage>", ridgeline.ranks.Progress) before every
step, which the parent's watchdog (ridgeline.ranks.watch) reads to tell a hung rank from
a slow one. The process group is a ridgeline.ranks.RankGroup.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ridgeline import ranks
from ridgeline.dtypes import bytes_per_element, torch_dtype, unit_roundoff
from ridgeline.probes.patterns import EXACT_INT_LIMIT
from ridgeline.ranks import RankGroup, apply_test_fault

# All-to-all validation: tile length, and the output's value before the exchange (no tile holds it)
A2A_TILE_LEN = 16
UNWRITTEN = -1


def per_rank_count(collective: str, size_bytes: int, elem_bytes: int, world_size: int) -> int:
    """Elements each rank contributes for a requested nccl-tests size (at least one).

    All-to-all: the elements each rank sends to each peer (nccl-tests' count / nranks).
    """
    if collective == "allreduce":
        return max(1, size_bytes // elem_bytes)
    return max(1, size_bytes // (elem_bytes * world_size))


def buffer_elems(collective: str, count: int, world_size: int) -> int:
    """Elements of the (input) buffer: all-reduce count; the others count x n.

    All-to-all has an output buffer of the same length beside it (out of place).
    """
    return count if collective == "allreduce" else count * world_size


def layout(collective: str) -> str:
    """The record's `kernel`: nccl-tests' in-place layout, except all-to-all (no in-place form)."""
    return "out_of_place" if collective == "all_to_all" else "in_place"


def size_bytes_of(collective: str, count: int, elem_bytes: int, world_size: int) -> int:
    """The nccl-tests `size` of a case: the (total) buffer in bytes."""
    return buffer_elems(collective, count, world_size) * elem_bytes


@dataclass(frozen=True)
class CollectiveCase:
    """One case of a world size's sweep: what is run, and its nccl-tests size."""

    collective: str
    dtype: str
    count: int        # elements per rank (all-to-all: per rank and peer)
    size_bytes: int   # nccl-tests size (all-gather / reduce-scatter / all-to-all: the total)


def planned_cases(config: dict[str, Any], world_size: int) -> list[CollectiveCase]:
    """Every case of one world size, in the order the worker runs them.

    A requested size that rounds to one already planned (too small to split over
    the ranks) is planned once; sizes over `max_bytes` are not planned.
    """
    cases = []
    for collective in config["collectives"]:
        for dtype in config["dtypes"]:
            elem = bytes_per_element(dtype)
            seen: set[int] = set()
            for requested in config["sizes"]:
                count = per_rank_count(collective, requested, elem, world_size)
                size = size_bytes_of(collective, count, elem, world_size)
                if size in seen or size > config.get("max_bytes", 2**62):
                    continue
                seen.add(size)
                cases.append(CollectiveCase(collective, dtype, count, size))
    return cases


def iteration_counts(est_ms: float, warmup_ms: float, rep_ms: float, min_iters: int,
                     max_iters: int) -> tuple[int, int]:
    """(warm-up, timed) iteration counts from time budgets: one est_ms gives every rank the same.

    The worker's bounds on timing.budget_counts: 2 .. max_iters warm-up iterations.
    """
    from ridgeline.timing import budget_counts

    return budget_counts(est_ms, warmup_ms, rep_ms, min_iters, max_iters,
                         min_warmup=2, max_warmup=max_iters)


def sum_tolerance(dtype: str, world_size: int, m: int) -> float:
    """0 when the closed-form sum is exact in `dtype`, else a rounding bound for the reduction."""
    from ridgeline.probes.patterns import sum_is_exact

    if sum_is_exact(dtype, world_size, m):
        return 0.0
    eps = unit_roundoff(dtype)  # bf16 2^-8, fp16 2^-11, fp32 2^-24
    return world_size * (m - 1) * eps * max(1, math.ceil(math.log2(world_size)))


def all_to_all_tile_values(src: int, dst: int, world_size: int, dtype: str,
                           m: int = A2A_TILE_LEN) -> list[int]:
    """What rank `src` sends rank `dst`: m small integers, a different tile for every pair.

    Pair p = src x n + dst; element i holds (p + i x (1 + p // L)) % L, with
    L = EXACT_INT_LIMIT[dtype] + 1 (bf16: 257): every value 0 .. L-1 is exact in the
    dtype, so nothing rounds. Element 0 is p % L and element 1 minus element 0 is
    (1 + p // L) % L: two pairs share a tile only if they share both, which no two
    pairs below L^2 do (bf16: n up to 257). A one-element chunk shows element 0 only:
    distinct for n^2 <= L (bf16: n up to 16).
    """
    span = EXACT_INT_LIMIT[dtype] + 1
    p = src * world_size + dst
    step = 1 + p // span
    return [(p + i * step) % span for i in range(m)]


def fill_all_to_all_input(buf: Any, rank: int, world_size: int, count: int, dtype: str) -> None:
    """Chunk d (elements d x count ..) of `rank`'s input: the tile of the pair (rank, d)."""
    from ridgeline.probes.patterns import fill_periodic

    for d in range(world_size):
        fill_periodic(buf.narrow(0, d * count, count),
                      buf.new_tensor(all_to_all_tile_values(rank, d, world_size, dtype)))


def all_to_all_error(out: Any, rank: int, world_size: int, count: int, dtype: str) -> float:
    """Worst |error| of `rank`'s output against the exchange: chunk k must hold tile (k, rank)."""
    from ridgeline.probes.patterns import max_periodic_error

    return max(max_periodic_error(out.narrow(0, k * count, count),
                                  out.new_tensor(all_to_all_tile_values(k, rank, world_size,
                                                                        dtype)))
               for k in range(world_size))


def unsupported_reason(exc: BaseException, collective: str, backend: str) -> str | None:
    """One line when `exc` says the backend lacks the collective; None for any other error."""
    text = " ".join(str(exc).split())[:200]
    said = text.lower()
    if isinstance(exc, NotImplementedError) or any(
            k in said for k in ("does not support", "not supported", "unsupported",
                                "not implemented")):
        return f"{collective} not supported by the {backend} backend: {text or type(exc).__name__}"
    return None


def make_op(dist, collective: str, buf, count: int, rank: int, group, out=None):
    """The collective as a zero-argument callable (nccl-tests' in-place layout; all-to-all
    reads `buf` and writes `out`)."""
    if collective == "all_to_all":
        # equal splits: chunk j of buf goes to rank j, chunk k of out comes from rank k
        return lambda: dist.all_to_all_single(out, buf, group=group)
    if collective == "allreduce":
        return lambda: dist.all_reduce(buf, group=group)
    mine = buf.narrow(0, rank * count, count)  # this rank's slice of the full buffer
    if collective == "all_gather":
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        return lambda: gather(buf, mine, group=group)
    if collective == "reduce_scatter":
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        return lambda: scatter(mine, buf, group=group)
    raise ValueError(f"unknown collective {collective!r}")


def validate_case(comm: RankGroup, collective: str, dtype: str, buf, count: int, w: int,
                  group, op, out=None) -> tuple[float, float]:
    """Fill rank-dependent tiles, run the collective once, compare with the closed form.

    Returns (worst |error| over ranks, tolerance); all-to-all moves values without
    arithmetic, so its tolerance is 0.
    """
    from ridgeline.probes.patterns import (collective_modulus, fill_periodic, max_periodic_error,
                                           rank_tile_values, sum_tile_values)

    torch, rank = comm.torch, comm.rank
    dt = torch_dtype(dtype)
    m = collective_modulus(dtype, w)

    def tile(values):
        return torch.tensor(values, dtype=dt, device=comm.device)

    if collective == "all_to_all":
        fill_all_to_all_input(buf, rank, w, count, dtype)
        out.fill_(UNWRITTEN)  # a chunk the exchange never wrote cannot pass
        op()
        comm.sync()
        worst = comm.reduce([all_to_all_error(out, rank, w, count, dtype)], "max", group)[0]
        return worst, 0.0
    if collective == "allreduce":
        fill_periodic(buf, tile(rank_tile_values(rank, m)))
        op()
        comm.sync()
        err = max_periodic_error(buf, tile(sum_tile_values(w, m)))
    elif collective == "all_gather":
        buf.zero_()  # every other rank's slice must be written by the collective
        fill_periodic(buf.narrow(0, rank * count, count), tile(rank_tile_values(rank, m)))
        op()
        comm.sync()
        err = max(max_periodic_error(buf.narrow(0, k * count, count), tile(rank_tile_values(k, m)))
                  for k in range(w))
    else:  # reduce_scatter: this rank's slice of the sum starts at element rank * count
        fill_periodic(buf, tile(rank_tile_values(rank, m)))
        op()
        comm.sync()
        expect = sum_tile_values(w, m, phase=(rank * count) % m)
        err = max_periodic_error(buf.narrow(0, rank * count, count), tile(expect))
    worst = comm.reduce([err], "max", group)[0]
    return worst, sum_tolerance(dtype, w, m)


def time_case(comm: RankGroup, op, group, budget: dict[str, Any],
              progress: ranks.Progress, label: str) -> tuple[list[float], list[float]]:
    """Per-iteration times (ms) of the slowest and the fastest rank."""
    from ridgeline.timing import EventClock, HostClock, sample_ms

    clock = EventClock(comm.device) if comm.on_gpu else HostClock()
    progress(f"{label}: estimate")
    comm.barrier(group)
    est = sample_ms(op, clock, n_warmup=0, n_rep=1, launches=3)[0]
    est = comm.reduce([est], "max", group)[0]  # every rank must loop the same number of times
    warm, reps = iteration_counts(est, budget["warmup_ms"], budget["rep_ms"],
                                  budget["min_iters"], budget["max_iters"])
    progress(f"{label}: {warm} warm-up + {reps} timed iterations")
    # gloo: start together, so the host clock times one collective, not a wait for a late peer
    start_together = None if comm.on_gpu else (lambda: comm.barrier(group))
    times = sample_ms(op, clock, n_warmup=warm, n_rep=reps, before_sample=start_together,
                      after_warmup=lambda: comm.barrier(group))
    return comm.reduce(times, "max", group), comm.reduce(times, "min", group)


def _link_label(comm: RankGroup, w: int, nodes: int) -> str:
    if nodes > 1:
        return "network"
    if not comm.on_gpu:
        return "loopback"
    try:
        from ridgeline.topology import group_link, gpu_topology

        return group_link(gpu_topology(), list(range(w)))
    except Exception:
        return "unknown"


def _versions(comm: RankGroup) -> dict[str, Any]:
    out: dict[str, Any] = {"torch": comm.torch.__version__}
    if comm.on_gpu:
        try:
            v = comm.torch.cuda.nccl.version()
            out["nccl_version"] = ".".join(map(str, v)) if isinstance(v, tuple) else v
        except Exception:
            out["nccl_version"] = None
        # NVLS (NVLink SHARP) lifts all-reduce busbw on NVSwitch systems: say how it was set
        out["nccl_nvls_enable"] = os.environ.get("NCCL_NVLS_ENABLE", "default")
    return out


def inject_fault(config: dict[str, Any], rank: int, progress: ranks.Progress,
                 case: CollectiveCase | None = None) -> None:
    """Test-only: make this rank hang, raise or be SIGKILLed where `config["fault"]` says.

    fault = {"rank": R, "kind": "hang" | "raise" | "kill", "at": None | [collective, size_bytes]}
    ("at" None: right after joining the process group; "hang_s": how long a hang lasts).
    Kind "no_all_to_all" (every rank) is `all_to_all_waiver`'s: a backend without it.
    """
    fault = config.get("fault") or {}
    if fault.get("rank") != rank:
        return
    at = fault.get("at")
    if (case is None) != (at is None):
        return
    if case is not None and [case.collective, case.size_bytes] != list(at):
        return
    apply_test_fault(fault, rank, progress)


def _measure(comm: RankGroup, case: CollectiveCase, w: int, group, config: dict[str, Any],
             progress: ranks.Progress, labels: dict[str, Any]) -> dict[str, Any]:
    """Validate then time one case on every rank of `group`; the record (meaningful on rank 0).

    `labels`: provider, nodes, link and backend, copied into the record.
    """
    from ridgeline.records import make_record
    from ridgeline.roofline.interconnect import busbw_factor
    from ridgeline.timing import Timing

    inject_fault(config, comm.rank, progress, case)
    collective, dtype, count, size = case.collective, case.dtype, case.count, case.size_bytes
    label = f"{collective} {dtype} n={w} {size} B"
    progress(f"{label}: validate")
    buf = comm.torch.empty(buffer_elems(collective, count, w), dtype=torch_dtype(dtype),
                           device=comm.device)
    out = comm.torch.empty_like(buf) if collective == "all_to_all" else None
    op = make_op(comm.dist, collective, buf, count, comm.rank, group, out)
    err, tol = validate_case(comm, collective, dtype, buf, count, w, group, op, out)
    slow, fast = time_case(comm, op, group, config["budget"], progress, label)
    del buf, out, op
    timer_name = ("device-events, slowest rank" if comm.on_gpu
                  else "host-clock+barrier, slowest rank")
    skew = sorted((a - b) / a for a, b in zip(slow, fast) if a > 0)
    rec = make_record(probe=collective, provider=labels["provider"], kernel=layout(collective),
                      dtype=dtype, timing=Timing(slow, timer_name), validated=err <= tol,
                      max_abs_error=err, size_bytes=size, count=count, world_size=w,
                      nodes=labels["nodes"], link=labels["link"], backend=labels["backend"])
    seconds = rec["time_ms_median"] * 1e-3
    rec["algbw_GBps"] = size / seconds / 1e9
    rec["busbw_factor"] = busbw_factor(collective, w)
    rec["busbw_GBps"] = rec["algbw_GBps"] * rec["busbw_factor"]
    rec["bw_GBps"] = rec["algbw_GBps"]  # the nccl-tests algbw
    rec["latency_us"] = rec["time_ms_median"] * 1e3
    rec["rank_skew_median"] = skew[len(skew) // 2] if skew else None
    return rec


def all_to_all_waiver(comm: RankGroup, group, w: int, config: dict[str, Any]) -> str | None:
    """None when the backend runs all_to_all_single on `group`; else why not, agreed by all ranks.

    A one-element-per-peer exchange: a backend without the collective says so at the call
    (torch: "Backend X does not support alltoall_base"), on every rank alike. Any other
    error is a real failure and propagates (the parent reports the rank that died).
    """
    dist, torch = comm.dist, comm.torch
    reason = None
    try:
        if (config.get("fault") or {}).get("kind") == "no_all_to_all":  # test-only
            raise RuntimeError(f"Backend {comm.backend} does not support alltoall_base (test)")
        if not hasattr(dist, "all_to_all_single"):
            raise NotImplementedError("this torch has no all_to_all_single")
        x = torch.zeros(w, dtype=torch.float32, device=comm.device)
        dist.all_to_all_single(torch.empty_like(x), x, group=group)
        comm.sync()
    except (RuntimeError, NotImplementedError) as exc:
        reason = unsupported_reason(exc, "all_to_all", comm.backend)
        if reason is None:
            raise
    if comm.reduce([1.0 if reason else 0.0], "max", group)[0] and reason is None:
        reason = f"all_to_all not supported by the {comm.backend} backend on another rank"
    return reason


def join(config: dict[str, Any], timeout_s: float) -> RankGroup:
    """This process as one rank of the sweep's process group (env://: RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR/PORT), joined; for `run_worker(config, comm=...)` when the
    caller keeps the group for more than the sweep (`ridgeline profile` under torchrun)."""
    comm = RankGroup(config["device"])
    comm.init(timeout_s)
    return comm


def run_worker(config: dict[str, Any], comm: RankGroup | None = None) -> list[dict[str, Any]]:
    """Run the sweep on this rank; returns the records on rank 0 (empty elsewhere).

    Without `comm` the rank joins the default process group here and leaves it at the end;
    with one (from `join`) it sweeps on that group and leaves it open for the caller.
    """
    from ridgeline.records import waived_record

    owned = comm is None
    comm = comm or RankGroup(config["device"])
    out_dir = config.get("out_dir")
    # the file the parent's watchdog reads; off under torchrun (no watchdog reads it)
    progress = ranks.Progress(out_dir if config.get("progress", True) else None, comm.rank)
    progress("init_process_group")
    if owned:
        comm.init(config["pg_timeout_s"])
    dist = comm.dist
    progress("ready")
    inject_fault(config, comm.rank, progress)
    hosts: list[Any] = [None] * comm.world
    dist.all_gather_object(hosts, socket.gethostname())
    world_sizes = [w for w in config["world_sizes"] if 2 <= w <= comm.world]
    groups = {w: (None if w == comm.world else dist.new_group(list(range(w)))) for w in world_sizes}
    provider = config.get("provider", comm.backend)
    versions = _versions(comm)
    records: list[dict[str, Any]] = []
    sink = None
    if comm.rank == 0 and out_dir:
        sink = open(Path(out_dir) / "records.jsonl", "a")

    def emit(rec: dict[str, Any]) -> None:  # rank 0: keep, and append to the sink as it goes
        rec.update(versions)
        records.append(rec)
        if sink is not None:
            sink.write(json.dumps(rec, default=str) + "\n")
            sink.flush()

    try:
        for w in world_sizes:
            # Ranks outside this sub-group wait here, not inside the next group's first
            # collective: a wait is then one world size's sweep, well inside the timeout.
            progress(f"n={w}: barrier")
            comm.barrier(None)
            if comm.rank >= w:
                continue
            group = groups[w]
            nodes = len(set(hosts[:w]))
            link = _link_label(comm, w, nodes) if comm.rank == 0 else None
            labels = {"provider": provider, "nodes": nodes, "link": link, "backend": comm.backend}
            waivers: dict[str, str | None] = {}  # collective -> reason, checked once per w
            for case in planned_cases(config, w):
                if case.collective == "all_to_all" and "all_to_all" not in waivers:
                    progress(f"all_to_all n={w}: backend check")
                    waivers["all_to_all"] = all_to_all_waiver(comm, group, w, config)
                    if waivers["all_to_all"] and comm.rank == 0:
                        for dtype in config["dtypes"]:
                            emit(waived_record("all_to_all", waivers["all_to_all"],
                                               provider=provider, dtype=dtype, world_size=w,
                                               nodes=nodes, link=link, backend=comm.backend))
                if waivers.get(case.collective):
                    continue
                rec = _measure(comm, case, w, group, config, progress, labels)
                if comm.rank == 0:
                    emit(rec)
            progress(f"n={w} done")
        progress("final barrier")
        comm.barrier(None)
    finally:
        if sink is not None:
            sink.close()
    if owned:
        dist.destroy_process_group()
    progress("done")
    return records


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m ridgeline.probes.collective_worker CONFIG.json", file=sys.stderr)
        return 2
    import warnings

    ranks.exit_with_parent()  # the parent killed outright: end, not run on orphaned
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notes, once per rank
    config = json.loads(Path(argv[0]).read_text())
    run_worker(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
