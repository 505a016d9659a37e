"""Collective probe: all-reduce, all-gather, reduce-scatter, all-to-all; one process per device.

Backends: NCCL on NVIDIA, RCCL on AMD (torch's backend "nccl" either way), gloo
on the CPU. Sizes 4 B .. 1 GiB in steps of 2 (bounded by free memory; quick
mode and the CPU: 4 B .. 4 MiB in steps of 4), in place, bf16 and fp32 (gloo:
fp32, bf16 waived: see `dtypes_for`), world sizes 2, 4, 8, ... up to the GPUs
present (and their count when it is not a power of two). All-to-all (expert
parallelism's collective) runs out of place (torch all_to_all_single, equal
splits); a backend without it gives a `waived` record with the reason.

Accounting (nccl-tests definitions, so `busbw_GBps` compares directly with
all_reduce_perf / all_gather_perf / reduce_scatter_perf / alltoall_perf):

    algbw_GBps = size_bytes / time / 1e9
    busbw_GBps = algbw_GBps x factor:  all-reduce 2(n-1)/n;
                 all-gather, reduce-scatter, all-to-all (n-1)/n

`size_bytes` is nccl-tests' "size": the per-rank buffer for all-reduce, the
*total* buffer (count x n x element size) for all-gather and reduce-scatter,
the total each rank sends (count per peer x n x element size) for all-to-all.
`time` is the median over iterations of the slowest rank's time. The method
is in ridgeline.probes.collective_worker; values are checked on every run.

How the processes start. `ridgeline profile --probes allreduce` on one node
starts one `python -m ridgeline.probes.collective_worker` subprocess per rank
with ridgeline.ranks.spawn_ranks (MASTER_ADDR=127.0.0.1, a free port) rather
than torch.multiprocessing.spawn: fresh interpreters inherit no CUDA context
from the profiling process, the ranks use the same env:// initialisation as
under torchrun, and a separate process group per child lets the watchdog kill
a hung rank (and all it started) without touching anything else. The watchdog
gives the ranks `startup_timeout_s` to join the process group, then fails the
case when no rank has progressed for `timeout_s` (progress files), or as soon
as one rank exits with an error; it then kills every rank and reports which
one stopped where (ridgeline.ranks has the details). The process group's own
timeout bounds collectives the same way under torchrun.

Across nodes, under torchrun (RANK, WORLD_SIZE, MASTER_ADDR set):

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 \\
        -m ridgeline.probes.allreduce --out DIR [--quick]

runs the same worker in every process, sweeping sub-groups of the first
2, 4, 8, ... ranks up to WORLD_SIZE (`torchrun_sweep`); rank 0 writes
DIR/records.jsonl, DIR/collectives.json (records and the fitted model) and
DIR/collectives.csv. Without torchrun the same command spawns the ranks on
this node itself. `ridgeline profile` under torchrun runs the same sweep
in-process after every rank's own profile (ridgeline.fleet_run, docs/torchrun.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from ridgeline.device import gpu_count
from ridgeline.errors import RidgelineError
from ridgeline.probes.base import Case, Probe, ProbeContext
from ridgeline.probes.collective_worker import planned_cases
from ridgeline.ranks import RankError, launched_by_torchrun, spawn_ranks
from ridgeline.records import waived_record
from ridgeline.roofline.interconnect import COLLECTIVES, busbw_factor

GiB, MiB = 2**30, 2**20
MAX_BYTES = GiB
QUICK_MAX_BYTES = 4 * MiB

# Iteration budgets (ms) and bounds; nccl-tests defaults are 5 warm-up, 20 timed iterations.
BUDGETS = {
    "gpu": {"warmup_ms": 20.0, "rep_ms": 100.0, "min_iters": 20, "max_iters": 200},
    "gpu_quick": {"warmup_ms": 10.0, "rep_ms": 40.0, "min_iters": 10, "max_iters": 100},
    "cpu": {"warmup_ms": 2.0, "rep_ms": 15.0, "min_iters": 5, "max_iters": 30},
}


class CollectiveError(RankError):
    """A rank died or hung; `records` holds the cases finished before it did."""

    def __init__(self, message: str, records: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.records = records or []


def algbw_GBps(size_bytes: float, time_s: float) -> float:
    """nccl-tests algorithm bandwidth: the buffer size over the time (GB = 1e9)."""
    return size_bytes / time_s / 1e9


def busbw_GBps(collective: str, size_bytes: float, world_size: int, time_s: float) -> float:
    """nccl-tests bus bandwidth: algbw x the collective's factor (the per-link traffic rate)."""
    return algbw_GBps(size_bytes, time_s) * busbw_factor(collective, world_size)


def collective_sizes(quick: bool, max_bytes: int = MAX_BYTES) -> list[int]:
    """4 B doubling to max_bytes (quick: x4 steps up to 4 MiB)."""
    step, top = (4, min(max_bytes, QUICK_MAX_BYTES)) if quick else (2, max_bytes)
    sizes, s = [], 4
    while s <= top:
        sizes.append(s)
        s *= step
    return sizes


def sweep_world_sizes(n: int) -> list[int]:
    """2, 4, 8, ... up to n, plus n itself when it is not a power of two."""
    out, w = [], 2
    while w <= n:
        out.append(w)
        w *= 2
    if n >= 2 and n not in out:
        out.append(n)
    return out


def dtypes_for(backend: str, quick: bool = False) -> tuple[list[str], dict[str, str]]:
    """(dtypes to run, {dtype: reason} waived) for a backend."""
    if backend == "gloo":
        # gloo reduces bf16 on the CPU, but the CPU sweep is a functional check kept under
        # a few seconds; its fp32 numbers say all there is to say about loopback TCP.
        return ["fp32"], {"bf16": "gloo (CPU): fp32 only, bf16 not swept"}
    return ["bf16", "fp32"], {}


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spawn_world(config: dict[str, Any], world_size: int, *, timeout_s: float,
                startup_timeout_s: float, poll_s: float = 0.05) -> list[dict[str, Any]]:
    """Run the worker on `world_size` local ranks (ridgeline.ranks.spawn_ranks); return rank
    0's records.

    Raises CollectiveError (with the finished records) when a rank exits with
    an error, does not join in `startup_timeout_s`, or when no rank makes
    progress for `timeout_s`; every rank is killed first.
    """
    workdir = Path(tempfile.mkdtemp(prefix="ridgeline-collectives-"))
    try:
        cfg = dict(config, out_dir=str(workdir), progress=True, world_sizes=[world_size],
                   pg_timeout_s=max(timeout_s, startup_timeout_s))
        (workdir / "config.json").write_text(json.dumps(cfg))
        # one thread per rank on the CPU: the sweep measures the loopback, not the cores
        env = ({"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
               if config["device"] == "cpu" else None)
        try:
            spawn_ranks(["-m", "ridgeline.probes.collective_worker", str(workdir / "config.json")],
                        world_size, workdir, device_kind=config["device"], timeout_s=timeout_s,
                        startup_timeout_s=startup_timeout_s, what=f"world size {world_size}",
                        env=env, poll_s=poll_s)
        except RankError as exc:
            raise CollectiveError(str(exc), _read_records(workdir / "records.jsonl")) from exc
        return _read_records(workdir / "records.jsonl")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _backend_for(device_kind: str) -> tuple[str, str]:
    """(torch backend, provider label): NCCL on NVIDIA, RCCL (torch backend "nccl") on AMD."""
    if device_kind == "cpu":
        return "gloo", "gloo"
    return "nccl", ("rccl" if device_kind == "rocm" else "nccl")


def build_config(device_kind: str, quick: bool, *, max_bytes: int = MAX_BYTES,
                 options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The worker's sweep for a device kind ("cuda" | "rocm" | "cpu"); options override parts."""
    options = options or {}
    backend, provider = _backend_for(device_kind)
    cpu = device_kind == "cpu"
    dtypes, _ = dtypes_for(backend, quick)
    budget = BUDGETS["cpu" if cpu else ("gpu_quick" if quick else "gpu")]
    return {
        "backend": backend, "provider": provider, "device": "cpu" if cpu else "cuda",
        "collectives": list(options.get("collectives", COLLECTIVES)),
        "dtypes": list(options.get("dtypes", dtypes)),
        "sizes": list(options.get("sizes") or collective_sizes(quick or cpu, max_bytes)),
        "max_bytes": int(max_bytes),
        "budget": dict(budget, **options.get("budget", {})),
        # test-only fault injection (collective_worker.inject_fault): hang, raise or SIGKILL;
        # or a backend without all-to-all (collective_worker.all_to_all_waiver)
        "fault": options.get("fault"),
    }


def sweep_max_bytes(device: Any, limit: int = MAX_BYTES) -> int:
    """The largest size the sweep may use on `device` (a DeviceInfo): `limit` on the CPU; on a
    GPU bounded by its free memory (two buffers of that size, 2 GiB left over)."""
    if device.kind == "cpu":
        return int(limit)
    import torch

    from ridgeline.device import free_memory_bytes

    torch.cuda.empty_cache()  # the profiler's cached blocks would shrink what the ranks get
    # two buffers (all-to-all's input and output) of max_bytes each; the check's chunk
    # temporaries and NCCL's own buffers fit in the 2 GiB left over
    return int(min(limit, max(MiB, (free_memory_bytes(device) - 2 * GiB) // 2)))


def dtype_waivers(config: dict[str, Any], world_size: int, quick: bool) -> list[dict[str, Any]]:
    """A `waived` record per collective for each dtype the backend does not sweep (gloo: bf16)."""
    return [waived_record(probe, reason, provider=config["provider"], dtype=dtype,
                          world_size=world_size)
            for dtype, reason in dtypes_for(config["backend"], quick)[1].items()
            if dtype not in config["dtypes"] for probe in config["collectives"]]


def torchrun_sweep(config: dict[str, Any], *, timeout_s: float, out_dir: Path | None = None,
                   comm: Any = None) -> list[dict[str, Any]]:
    """This rank's part of the sweep under torchrun (RANK and WORLD_SIZE set): sub-groups of the
    first 2, 4, 8, ... ranks up to WORLD_SIZE. Returns the records on rank 0, [] elsewhere;
    rank 0 also appends them to out_dir/records.jsonl as they come when out_dir is given.

    `comm`: the group this process already joined (collective_worker.join), swept on and left
    open (`ridgeline profile` under torchrun); None: joined and left here. `timeout_s` bounds
    every collective (it must exceed one world size's sweep: the ranks outside a sub-group
    wait for it).
    """
    from ridgeline.probes.collective_worker import run_worker

    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    sink = out_dir if rank == 0 and out_dir is not None else None
    if sink is not None:
        sink.mkdir(parents=True, exist_ok=True)
        (sink / "records.jsonl").write_text("")
    cfg = dict(config, out_dir=str(sink) if sink is not None else None, progress=False,
               world_sizes=sweep_world_sizes(world), pg_timeout_s=timeout_s)
    return run_worker(cfg, comm=comm)


def missing_case_records(config: dict[str, Any], world_size: int,
                         records: list[dict[str, Any]], cause: str, *,
                         died: bool = True) -> list[dict[str, Any]]:
    """A `failed` record for every planned case of a world size that has no record.

    With `died`, the first missing case is where the sweep stopped: its reason
    carries `cause`, and every later one points to it (one reason per collective
    and dtype, so a summary can group them). A collective and dtype with a
    `waived` record (a backend without all-to-all) has no case to miss.
    """
    done = {(r.get("probe"), r.get("dtype"), r.get("size_bytes")) for r in records}
    waived = {(r.get("probe"), r.get("dtype")) for r in records if r.get("status") == "waived"}
    missing = [c for c in planned_cases(config, world_size)
               if (c.collective, c.dtype, c.size_bytes) not in done
               and (c.collective, c.dtype) not in waived]
    out = []
    for c in missing:
        where = f"{c.collective} n={world_size} {c.dtype}"
        if not died:
            reason = f"{where} not measured: {cause}"
        elif c is missing[0]:
            reason = f"{where} stopped at {c.size_bytes} B: {cause}"
        else:
            stop = missing[0]
            reason = (f"{where} not measured: the sweep stopped earlier, at "
                      f"{stop.collective} {stop.dtype} {stop.size_bytes} B")
        out.append(waived_record(c.collective, _one_line(reason), provider=config["provider"],
                                 dtype=c.dtype, status="failed", world_size=world_size,
                                 size_bytes=c.size_bytes, count=c.count))
    return out


def _one_line(text: str) -> str:
    """Reasons are one line: a rank's log tail may hold several."""
    return " ".join(text.split())


class AllReduceProbe(Probe):
    name = "allreduce"
    description = ("all-reduce, all-gather, reduce-scatter, all-to-all algbw and busbw "
                   "(nccl-tests definitions)")

    def __init__(self) -> None:
        self._failed: str | None = None

    def available(self, ctx: ProbeContext) -> str | None:
        import torch.distributed as dist

        if not dist.is_available():
            return "this torch build has no torch.distributed"
        if ctx.device.kind == "cpu":
            return None if dist.is_gloo_available() else "this torch build has no gloo backend"
        if gpu_count() < 2:
            return "one GPU: all-reduce waived"
        if not dist.is_nccl_available():
            return "this torch build has no NCCL/RCCL backend"
        return None

    def cases(self, ctx: ProbeContext) -> list[Case]:
        sizes = ctx.options.get("world_sizes")
        if sizes is None:
            sizes = [2] if ctx.device.kind == "cpu" else sweep_world_sizes(gpu_count())
        return [Case({"world_size": w}) for w in sizes]

    def _max_bytes(self, ctx: ProbeContext) -> int:
        return sweep_max_bytes(ctx.device, int(ctx.options.get("max_bytes", MAX_BYTES)))

    def run(self, case: Case, ctx: ProbeContext) -> list[dict[str, Any]]:
        """Records of one world size; every planned case is either measured or a `failed` record."""
        w = case["world_size"]
        config = build_config(ctx.device.kind, ctx.quick, max_bytes=self._max_bytes(ctx),
                              options=ctx.options)
        out = dtype_waivers(config, w, ctx.quick)
        if self._failed:
            return out + missing_case_records(config, w, [], f"skipped: {self._failed}",
                                              died=False)
        records, failure = self._spawn(config, w, ctx)
        telemetry = ctx.telemetry()
        for rec in records:
            rec.update({k: v for k, v in telemetry.items() if k not in rec})
        if failure is None:
            # every rank exited cleanly, yet a case has no record: say so, never drop it
            return out + records + missing_case_records(
                config, w, records, "the ranks exited without measuring it")
        missing = missing_case_records(config, w, records, failure)
        if not missing:  # every case was measured, then a rank failed: still a failure
            missing = [waived_record("allreduce", _one_line(f"n={w}: {failure}"), status="failed",
                                     provider=config["provider"], world_size=w)]
        stop = missing[0]
        self._failed = f"world size {w} failed" + (
            f" at {stop['probe']} {stop['dtype']} {stop['size_bytes']} B"
            if stop.get("size_bytes") else "")
        return out + records + missing

    def _spawn(self, config: dict[str, Any], w: int,
               ctx: ProbeContext) -> tuple[list[dict[str, Any]], str | None]:
        """(records, None) from a clean sweep; (the records finished, why) when it failed."""
        cpu = ctx.device.kind == "cpu"
        timeout_s = float(ctx.options.get("timeout_s", 60 if cpu else 300))
        startup_s = float(ctx.options.get("startup_timeout_s", 60 if cpu else 300))
        try:  # a clash on the free port is retried by spawn_ranks
            return spawn_world(config, w, timeout_s=timeout_s, startup_timeout_s=startup_s), None
        except CollectiveError as exc:
            print(f"ridgeline allreduce: {exc}", file=sys.stderr)
            return exc.records, str(exc)


def _write_outputs(out_dir: Path, records: list[dict[str, Any]], device: dict[str, Any]) -> Path:
    from ridgeline.records import write_csv
    from ridgeline.roofline.interconnect_fit import fit_interconnect
    from ridgeline.roofline.profile import software_versions

    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"kind": "ridgeline-collectives", "command_line": sys.argv,
           "hostname": socket.gethostname(), "device": device, "versions": software_versions(),
           "interconnect": fit_interconnect(records, device), "records": records}
    path = out_dir / "collectives.json"
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    write_csv(records, out_dir / "collectives.csv")
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ridgeline.probes.allreduce",
        description="Collective sweep (nccl-tests algbw/busbw); torchrun-ready.")
    p.add_argument("--out", required=True, help="output directory (written by rank 0)")
    p.add_argument("--quick", action="store_true", help="4 B .. 4 MiB in steps of 4")
    p.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="largest size (default 1 GiB)")
    p.add_argument("--dtypes", default=None, help="comma list, e.g. bf16,fp32")
    p.add_argument("--timeout-s", type=float, default=600.0,
                   help="process-group timeout (torchrun; must exceed one world size's sweep) / "
                        "no-progress watchdog (local spawn)")
    p.add_argument("--device", default=None, help="cpu to force gloo; default: GPUs when present")
    return p


def main(argv: list[str] | None = None) -> int:
    """torchrun entry point (also runs on one node without torchrun, spawning the ranks)."""
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out)
    gpus = gpu_count() if args.device != "cpu" else 0
    kind = "cpu" if gpus == 0 else ("rocm" if _is_rocm() else "cuda")
    options: dict[str, Any] = {}
    if args.dtypes:
        options["dtypes"] = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    config = build_config(kind, args.quick, max_bytes=args.max_bytes, options=options)
    device = {"kind": kind, "name": _device_name(kind), "gpus_per_node": gpus}
    try:
        if launched_by_torchrun():
            import warnings

            warnings.filterwarnings("ignore", category=FutureWarning)
            records = torchrun_sweep(config, timeout_s=args.timeout_s, out_dir=out_dir)
            if int(os.environ["RANK"]) == 0:
                print(f"wrote {_write_outputs(out_dir, records, device)}")
            return 0
        if kind != "cpu" and gpus < 2:
            raise RidgelineError("one GPU: all-reduce waived (run under torchrun to span nodes)")
        records: list[dict[str, Any]] = []
        for w in ([2] if kind == "cpu" else sweep_world_sizes(gpus)):
            records += spawn_world(config, w, timeout_s=args.timeout_s,
                                   startup_timeout_s=args.timeout_s)
        print(f"wrote {_write_outputs(out_dir, records, device)}")
        return 0
    except RidgelineError as exc:
        print(f"ridgeline allreduce: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _is_rocm() -> bool:
    import torch

    return getattr(torch.version, "hip", None) is not None


def _device_name(kind: str) -> str:
    if kind == "cpu":
        import platform

        return platform.processor() or platform.machine() or "cpu"
    import torch

    return torch.cuda.get_device_name(0)


if __name__ == "__main__":
    raise SystemExit(main())
