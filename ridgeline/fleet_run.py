"""`ridgeline profile` under torchrun: every rank profiles its own device at the same time, the
group measures the fabric, rank 0 writes the fleet summary.

    torchrun --nnodes N --nproc-per-node G -m ridgeline profile -o DIR [--quick] [--probes ...]
             [--device cpu] [--force] [--no-report] [--rank-timeout-s S]

What each rank does, in order (docs/torchrun.md has the commands and a Slurm script):

1. join: the process group of the collective sweep (NCCL/RCCL on GPUs, gloo on the CPU;
   collective_worker.join), and beside it a gloo control group for the roll calls and the
   exchange of small objects. Rank r works on cuda:LOCAL_RANK, or on the CPU (--device
   cpu, or no GPU).
2. folders: each rank checks and locks its own DIR/<host>-<local_rank>
   (outputs.prepare_output_dir); the ranks exchange their verdicts, so one refused folder
   stops every rank before anything is measured. Two ranks with the same host name and
   local rank (containers sharing a hostname) get DIR/<host>-node<N>-<local_rank>.
3. own profile: the runner on this rank's device, as a single-device run (profile.json,
   records.csv, report), with the probes asked for except "allreduce" (the group sweep
   replaces it) and "p2p" (step 5).
4. roll call: every rank waits for the others, at most --rank-timeout-s seconds
   (`Group.roll_call` on the gloo group); the ranks that do not come are named: host,
   local rank and global rank, and whether they left the job or did not arrive in time.
5. p2p, when asked for: local rank 0 of each node measures its node's GPU pairs while the
   other ranks wait (nothing of theirs runs on the GPUs meanwhile); the other ranks list
   p2p as waived with that reason.
6. collectives: probes.allreduce.torchrun_sweep on the group, sub-groups of the first 2, 4,
   8, ... ranks up to WORLD_SIZE, sizes bounded by the smallest free memory of any rank.
7. inter-node link, on more than one node: probes.inter_node, a large send/recv from rank 0
   to the first rank of another node; its plateau is interconnect.inter_node_GBps.
8. every rank adds rank 0's collective and inter-node records to its own, re-fits the
   interconnect (interconnect_fit.fit_interconnect) and rewrites profile.json, records.csv
   and the report (atomically): `ridgeline plan --profile DIR/<host>-0/profile.json` then
   prices tensor and pipeline parallelism on the measured links.
9. rank 0 gathers every profile (the nodes' disks need not be shared) and writes
   DIR/fleet.json, fleet.html and the charts with ridgeline.reports.fleet, and prints the
   fleet table.

Failures. A stage that fails (a rank exited, a collective timed out) is followed by a short
roll call, so the message names the ranks that are gone; the profile.json each surviving
rank wrote in step 3 is kept, with the failure added to its warnings; the exit status is 1.
torchrun stops the remaining ranks with SIGTERM when one exits with an error: during step 3
that ends the rank's sweep like Ctrl-C (the profile is written incomplete, resumable with
`ridgeline profile --resume DIR/<host>-<local_rank>`); in the group stages the rank first
names the missing ranks and notes the failure in its profile (its waits are then bounded by
CHECK_TIMEOUT_S, under torchrun's 30 s between SIGTERM and SIGKILL).
Test-only: FAULT_ENV makes a rank exit or hang at a stage (`inject_fault`).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

from ridgeline.device import gpu_count
from ridgeline.errors import DeviceError, RidgelineError

DEFAULT_RANK_TIMEOUT_S = 1800.0
# The roll call after a failure: the ranks still alive arrive at once; a short wait names
# the others before torchrun's SIGKILL (30 s after its SIGTERM) ends everyone.
CHECK_TIMEOUT_S = 20.0
FAULT_ENV = "RIDGELINE_TEST_TORCHRUN_FAULT"
# roll call: the point-to-point tag of its first round, and what rank 0 says of each rank
ROLL_CALL_TAG = 7100
GONE, ARRIVED, LATE = 0, 1, 2
# probes each rank leaves out of its own sweep: the group measures them (steps 5 and 6)
GROUP_PROBES = ("allreduce", "p2p")


class RankFailure(RidgelineError):
    """A rank died, hung or failed a group stage; the message names it."""

    exit_code = 1


def group_world_size() -> int:
    """WORLD_SIZE when torchrun (or another env:// launcher) started this process, else 1."""
    from ridgeline.ranks import launched_by_torchrun

    if not launched_by_torchrun():
        return 1
    try:
        return int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise RidgelineError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


@dataclass(frozen=True)
class RankInfo:
    """Who a rank is: what the messages name and what the folders are called after."""

    rank: int
    local_rank: int
    node: int          # torchrun's GROUP_RANK (the node's index); -1 until known
    host: str

    @classmethod
    def from_env(cls) -> "RankInfo":
        rank = int(os.environ["RANK"])
        return cls(rank=rank, local_rank=int(os.environ.get("LOCAL_RANK", rank)),
                   node=int(os.environ.get("GROUP_RANK", -1)), host=socket.gethostname())

    def name(self) -> str:
        return f"rank {self.rank} ({self.host}, local rank {self.local_rank})"


def assign_nodes(infos: list[RankInfo]) -> list[RankInfo]:
    """Node indices where the launcher set none: the order in which the hosts first appear."""
    if all(i.node >= 0 for i in infos):
        return infos
    order = list(dict.fromkeys(i.host for i in infos))
    return [RankInfo(i.rank, i.local_rank, order.index(i.host), i.host) for i in infos]


def roll_call_message(stage: str, verdict: list[int], names: list[str], timeout_s: float,
                      when: str = "before") -> str | None:
    """What a roll call's verdict (GONE, ARRIVED or LATE per rank) says; None when all came.
    `when`: "before" a stage (its start), or "during" one (the check after it failed)."""
    gone = [names[r] for r, v in enumerate(verdict) if v == GONE]
    late = [names[r] for r, v in enumerate(verdict) if v == LATE]
    parts = []
    if gone:
        parts.append(f"{', '.join(gone)} left the job {when} '{stage}' (the process exited or "
                     "its connection broke)")
    if late:
        what = "did not reach" if when == "before" else "did not answer after"
        parts.append(f"{', '.join(late)} {what} '{stage}' within {timeout_s:g} s "
                     "(hung, or still busy)")
    return "; ".join(parts) or None


def short_error(exc: BaseException, limit: int = 160) -> str:
    """An exception on one line, without the C++ source location gloo and NCCL put first."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", text)
    first = text.split(". ", 1)[0]  # gloo adds generic advice after its first sentence
    text = first if len(first) >= 20 else text
    return f"{type(exc).__name__}: {text[:limit]}".rstrip(": ")


def _safe(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", host) or "host"


def folder_names(infos: list[RankInfo]) -> list[str]:
    """Each rank's sub-folder: <host>-<local_rank>; <host>-node<N>-<local_rank> for all when
    two ranks would share one (nodes whose containers have the same hostname)."""
    names = [f"{_safe(i.host)}-{i.local_rank}" for i in infos]
    if len(set(names)) < len(names):
        names = [f"{_safe(i.host)}-node{i.node}-{i.local_rank}" for i in infos]
    if len(set(names)) < len(names):
        twice = sorted(n for n, c in Counter(names).items() if c > 1)
        raise RidgelineError(f"two ranks claim the same host, node and local rank ({twice[0]}): "
                             "check the launcher's --nnodes and --node-rank")
    return names


def rank_device_spec(requested: str | None, local_rank: int, gpu_count: int) -> str:
    """The device this rank profiles: cuda:LOCAL_RANK, or the CPU (asked for, or no GPU)."""
    spec = (requested or "").strip().lower()
    if spec == "cpu" or (not spec and gpu_count == 0):
        return "cpu"
    m = re.fullmatch(r"(cuda|rocm|hip|gpu)(?::(\d+))?", spec or "cuda")
    if not m:
        raise DeviceError(f"unknown device {requested!r}: under torchrun use cpu, or cuda (each "
                          "rank profiles cuda:LOCAL_RANK)")
    if m.group(2) is not None and int(m.group(2)) != local_rank:
        raise RidgelineError(f"--device {requested}: under torchrun each rank profiles its own "
                             f"GPU, cuda:LOCAL_RANK (cuda:{local_rank} here); give --device cuda "
                             "without an index, or cpu")
    if local_rank >= gpu_count:
        seen = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise DeviceError(f"local rank {local_rank} profiles cuda:{local_rank}, but this process "
                          f"sees {gpu_count} GPU(s)"
                          + (f" (CUDA_VISIBLE_DEVICES={seen})" if seen is not None else "")
                          + ": start at most that many processes per node, or use --device cpu")
    return f"cuda:{local_rank}"


def own_probes(probes: list[str]) -> list[str]:
    """The probes a rank runs on its own device (the group measures GROUP_PROBES)."""
    return [p for p in probes if p not in GROUP_PROBES]


def inject_fault(rank: int, stage: str, stopped: Callable[[], bool]) -> None:
    """Test-only: FAULT_ENV="RANK:KIND:STAGE" makes rank RANK, on reaching STAGE, exit with
    code 3 and no clean-up (KIND "exit", as a crash would) or hang until signalled ("hang").
    Stages: "profile" (before its own sweep), "rollcall" (its profile written, before the
    roll call), "sweep" (the collective sweep begun: the others are inside it)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    who, kind, where = (spec.split(":") + ["", "", ""])[:3]
    if who != str(rank) or where != stage:
        return
    if kind == "exit":
        os._exit(3)
    if kind == "hang":
        while not stopped():
            time.sleep(0.1)
        raise SystemExit(143)


class Termination:
    """SIGTERM (torchrun stopping the ranks when one failed, or the job cancelled): during a
    rank's own sweep it interrupts like Ctrl-C (the runner writes what it measured); in the
    group stages it is noted and the rank finishes reporting (bounded waits; torchrun sends
    SIGKILL 30 s later). Installed for the rest of the process: torchrun may signal twice,
    and a second SIGTERM must not end the rank before its error is printed."""

    def __init__(self) -> None:
        self.received = False
        self.interrupting = False

    def install(self) -> "Termination":
        signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received = True
        if self.interrupting:
            self.interrupting = False
            raise KeyboardInterrupt


class Group:
    """This rank in the torchrun job: the sweep's process group, a gloo control group beside
    it, and every rank's RankInfo."""

    def __init__(self, me: RankInfo, device_kind: str, quick: bool, timeout_s: float):
        from ridgeline.probes.allreduce import build_config
        from ridgeline.probes.collective_worker import join

        self.timeout_s = timeout_s
        self.device_kind, self.quick = device_kind, quick
        self.comm = join(build_config(device_kind, quick), timeout_s)
        self.dist = dist = self.comm.dist
        # the waits and the roll call: a broken NCCL group leaves this one usable
        self.ctrl = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
        self.infos = assign_nodes(self.share(me))
        self.me = self.infos[me.rank]
        self._round = 0

    @property
    def world(self) -> int:
        return len(self.infos)

    def name(self, rank: int) -> str:
        return self.infos[rank].name() if 0 <= rank < len(self.infos) else f"rank {rank}"

    def share(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order."""
        out: list[Any] = [None] * self.comm.world
        self.dist.all_gather_object(out, obj, group=self.ctrl)
        return out

    def from_rank0(self, obj: Any) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=0, group=self.ctrl)
        return box[0]

    def to_rank0(self, obj: Any) -> list[Any] | None:
        out: list[Any] | None = [None] * self.world if self.me.rank == 0 else None
        self.dist.gather_object(obj, out, dst=0, group=self.ctrl)
        return out

    def roll_call(self, stage: str, timeout_s: float, when: str = "before") -> None:
        """Wait for every rank at `stage`; RankFailure naming those that did not come.

        Rank 0 posts a receive for a token from every rank and waits for them until
        `timeout_s` after its own arrival; a rank whose process is gone fails its receive
        at once (its connection closed), a hung or busy one at the deadline. Rank 0 then
        sends each rank that came the verdict, so every rank can name the missing ones.
        (monitored_barrier(wait_all_ranks=True) names a dead rank only when it died while
        rank 0 was already waiting; one that died before fails the call without a name.)
        """
        import torch

        start = time.monotonic()
        self._round += 1
        tag = ROLL_CALL_TAG + self._round  # a late token of an earlier round cannot count
        n = self.world
        if self.me.rank != 0:
            answer = torch.zeros(n, dtype=torch.int64)
            try:
                self.ctrl.send([torch.ones(1, dtype=torch.int64)], 0, tag).wait(
                    timedelta(seconds=timeout_s))
                self.ctrl.recv([answer], 0, tag).wait(
                    timedelta(seconds=timeout_s + CHECK_TIMEOUT_S))
            except Exception:  # rank 0 is gone, or never answered: the others are unknown
                late = time.monotonic() - start >= 0.9 * timeout_s
                verdict = [LATE if late else GONE] + [ARRIVED] * (n - 1)
            else:
                verdict = [int(v) for v in answer.tolist()]
        else:
            verdict = [ARRIVED] + [GONE] * (n - 1)
            pending = {}
            for src in range(1, n):
                box = torch.zeros(1, dtype=torch.int64)
                try:
                    pending[src] = (self.ctrl.recv([box], src, tag), box)
                except Exception:  # its connection is already closed: the process is gone
                    continue
            for src, (work, _box) in pending.items():
                left = timeout_s - (time.monotonic() - start)
                try:
                    work.wait(timedelta(seconds=max(left, 1.0)))
                    verdict[src] = ARRIVED
                except Exception:
                    verdict[src] = LATE if time.monotonic() - start >= 0.9 * timeout_s else GONE
            answer = torch.tensor(verdict, dtype=torch.int64)
            for dst in range(1, n):
                if verdict[dst] == ARRIVED:
                    try:
                        self.ctrl.send([answer], dst, tag).wait(timedelta(seconds=CHECK_TIMEOUT_S))
                    except Exception:  # it will say rank 0 did not answer
                        pass
        message = roll_call_message(stage, verdict, [self.name(r) for r in range(n)], timeout_s,
                                    when)
        if message:
            raise RankFailure(message)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A group stage: any failure becomes a RankFailure naming the ranks that are gone."""
        try:
            yield
        except (RankFailure, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            why = short_error(exc)
            try:
                self.roll_call(name, CHECK_TIMEOUT_S, when="during")
            except RankFailure as gone:
                raise RankFailure(f"{gone}; {self.me.name()} saw: {why}") from None
            raise RankFailure(f"'{name}' failed on {self.me.name()}: {why}") from None

    def collectives(self, device: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The collective sweep over the group; (records on rank 0, the sweep's config)."""
        from ridgeline.probes.allreduce import (build_config, dtype_waivers, sweep_max_bytes,
                                                sweep_world_sizes, torchrun_sweep)

        # every rank must plan the same cases: the smallest memory of any rank bounds them all
        max_bytes = min(self.share(sweep_max_bytes(device)))
        config = build_config(self.device_kind, self.quick, max_bytes=max_bytes)
        records = torchrun_sweep(config, timeout_s=self.timeout_s, comm=self.comm)
        if self.me.rank == 0:
            records = [w for n in sweep_world_sizes(self.world)
                       for w in dtype_waivers(config, n, self.quick)] + records
        return records, config

    def inter_node(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        """The send/recv between node 0 and another node (records on rank 0); [] on one node."""
        from ridgeline.probes.inter_node import link_sizes, measure_inter_node, pick_pair

        pair = pick_pair([i.node for i in self.infos])
        if pair is None:
            return []
        return measure_inter_node(self.comm, pair, config,
                                  link_sizes(self.comm.on_gpu, self.quick))

    def close(self) -> None:
        try:
            self.comm.close()
        except Exception:  # a broken group may refuse a clean exit; the process ends anyway
            pass


def merge_group_records(profile: dict[str, Any], records: list[dict[str, Any]],
                        torchrun: dict[str, Any] | None = None) -> None:
    """Add the group's records (collectives, inter-node, p2p) to a rank's profile and re-fit
    its interconnect; records of the same probes already there are replaced."""
    from ridgeline.probes.inter_node import inter_node_GBps
    from ridgeline.roofline.interconnect_fit import fit_interconnect
    from ridgeline.roofline.trust import describe, untrusted_ceilings
    from ridgeline.runner import note_waived

    incoming = {r.get("probe") for r in records}
    profile["records"] = [r for r in profile.get("records") or []
                          if r.get("probe") not in incoming] + list(records)
    try:
        interconnect = fit_interconnect(profile["records"], profile["provenance"]["device"])
        bw = inter_node_GBps(profile["records"])
        if bw:
            interconnect["inter_node_GBps"] = bw
        profile["interconnect"] = interconnect
    except Exception as exc:  # the records are the product: a fit that breaks must not lose them
        profile.setdefault("warnings", []).append(
            f"the interconnect fit failed ({short_error(exc)}): the group's records are saved, "
            "the interconnect is the device's own")
    note_waived(profile, records)
    failed = Counter(r.get("probe") for r in records if r.get("status") == "failed")
    if failed:
        missing = "; ".join(f"{n} {probe} case(s) failed" for probe, n in sorted(failed.items()))
        profile["complete"] = False
        profile["incomplete_reason"] = "; ".join(
            x for x in (profile.get("incomplete_reason"), missing) if x)
        profile.setdefault("warnings", []).append(f"incomplete: {missing}")
    for c in untrusted_ceilings(profile):  # the collectives' fits join the device's ceilings
        line = f"ceiling {describe(c)}"
        if line not in profile.setdefault("warnings", []):
            profile["warnings"].append(line)
    if torchrun is not None:
        profile["provenance"]["torchrun"] = torchrun


def _note_failure(profile: dict[str, Any], folder: Path, failure: str) -> None:
    """Keep the rank's own profile, with why the group stage did not finish."""
    from ridgeline.roofline.profile import save_profile

    profile.setdefault("warnings", []).append(
        f"torchrun group stage failed: {failure}: the collectives and the inter-node link "
        "are not in this profile")
    save_profile(profile, folder / "profile.json")


def _for_fleet(profile: dict[str, Any]) -> dict[str, Any]:
    """What rank 0 needs of a profile for the fleet: all but the records, of which
    reports.fleet reads only the throttled ones (a full sweep's records are megabytes)."""
    out = dict(profile)
    out["records"] = [r for r in profile.get("records") or []
                      if isinstance(r, dict) and r.get("throttled")]
    return out


@dataclass
class GroupRequest:
    """What `ridgeline profile` was asked, as every rank sees it."""

    output: Path
    force: bool
    device: str | None
    probes: list[str]
    quick: bool
    write_report: bool
    timeout_s: float = DEFAULT_RANK_TIMEOUT_S


@dataclass
class Hooks:
    """The command's side: measure with its progress bar, write a report, print a summary."""

    measure: Callable[..., dict[str, Any]]        # (device, probes, folder, console, report)
    report: Callable[[dict[str, Any], Path], None]
    summary: Callable[[dict[str, Any], Any], None]
    exit_status: Callable[[dict[str, Any]], int]


def run_group(req: GroupRequest, hooks: Hooks) -> int:
    """One rank's part of `ridgeline profile` under torchrun (module docstring); its exit code."""
    from rich.console import Console

    from ridgeline.device import get_device

    me = RankInfo.from_env()
    if req.timeout_s <= 0:
        raise RidgelineError(f"--rank-timeout-s {req.timeout_s:g} must be positive")
    device = get_device(rank_device_spec(req.device, me.local_rank, gpu_count()))
    lead = me.rank == 0
    # one progress bar and one summary (rank 0's); every rank says one line of its own
    console = Console(stderr=True, quiet=not lead)
    # SIGTERM keeps its default (end at once) until the group is joined: a rank stuck joining
    # has nothing to save
    group = Group(me, device.kind, req.quick, req.timeout_s)
    try:
        return _run(req, hooks, group, device, console, Termination().install())
    finally:
        group.close()


def _prepare_folders(req: GroupRequest, group: Group):
    """Every rank's folder checked and locked, or every rank stops with the refusals."""
    from ridgeline.outputs import OutputError, prepare_output_dir

    name = folder_names(group.infos)[group.me.rank]
    out, error = None, None
    try:
        if req.output.exists() and not req.output.is_dir():
            raise OutputError(f"{req.output} is a file; -o takes a folder")
        out = prepare_output_dir(req.output / name, force=req.force, what="profile")
    except RidgelineError as exc:
        error = str(exc)
    errors = group.share(error)
    refused = [(r, e) for r, e in enumerate(errors) if e]
    if refused:
        if out is not None:
            out.close()
        if group.me.rank == 0:
            raise RidgelineError("; ".join(f"{group.name(r)}: {e}" for r, e in refused[:4])
                                 + (f"; and {len(refused) - 4} more" if len(refused) > 4 else ""))
        raise RidgelineError(f"{group.me.name()}: stopped, rank 0 lists the refused folders"
                             if not error else error)
    return out


def _run(req: GroupRequest, hooks: Hooks, group: Group, device: Any, console: Any,
         term: Termination) -> int:
    from rich.console import Console

    from ridgeline.records import write_csv
    from ridgeline.roofline.profile import load_profile, save_profile

    me = group.me
    out = _prepare_folders(req, group)
    folder = out.path
    with out:
        for note in out.notes:
            console.print(f"[yellow]warning: {note}[/yellow]")
        removed = out.clear()
        if removed:
            console.print(f"removed the old {', '.join(p.name for p in removed)} from "
                          f"{removed[0].parent}")
        mine = own_probes(req.probes)
        _say(f"{me.name()}: profiling {device.name} ({device.id}) into {folder}; probes: "
             f"{', '.join(mine) or 'none of its own'}" + (" (quick)" if req.quick else ""))
        inject_fault(me.rank, "profile", lambda: term.received)
        if term.received:  # stopped before measuring: nothing to keep
            raise RankFailure(f"{me.name()}: stopped by SIGTERM before measuring (torchrun: "
                              "another rank failed, or the job was cancelled)")
        stopped = (f"{me.name()}: stopped during its own sweep (Ctrl-C, or SIGTERM from "
                   "torchrun: another rank failed or the job was cancelled)")
        term.interrupting = True
        try:
            profile = hooks.measure(device, mine, folder, console, req.write_report)
        except KeyboardInterrupt:  # before the runner's sweep began, or after it ended
            if not term.received:
                raise
            raise RankFailure(stopped + _kept(folder)) from None
        finally:
            term.interrupting = False
        if term.received or profile.get("interrupted"):
            raise RankFailure(stopped + _kept(folder))
        if "p2p" in req.probes and me.local_rank != 0:
            profile["waived"].append({
                "probe": "p2p", "provider": "", "dtype": "", "status": "waived",
                "reason": "under torchrun local rank 0 of each node measures the node's GPU "
                          "pairs: see its profile"})
        nodes = len({i.node for i in group.infos})
        info = {"rank": me.rank, "local_rank": me.local_rank, "node": me.node,
                "world_size": group.world, "nodes": nodes, "collectives_measured_by": 0}
        try:
            records = _group_stages(req, group, device, term)
        except RankFailure as exc:
            _note_failure(profile, folder, str(exc))
            raise
        merge_group_records(profile, records, torchrun=info)
        save_profile(profile, folder / "profile.json")
        write_csv(profile["records"], folder / "records.csv")
        if req.write_report:
            hooks.report(profile, folder)
        with group.stage("gathering the profiles for the fleet summary"):
            mine_for_fleet = (folder.name, str(folder / "profile.json"),
                              _for_fleet(load_profile(folder / "profile.json")))
            gathered = group.to_rank0(mine_for_fleet)
        status = hooks.exit_status(profile)
        _say(f"{me.name()}: wrote {folder}/profile.json"
             + (f" (exit status {status})" if status else ""))
        if me.rank == 0:
            hooks.summary(profile, Console())
            bw = profile["interconnect"].get("inter_node_GBps")
            console.print(f"inter-node link: {bw:.2f} GB/s (send/recv, rank 0 to "
                          f"{_peer_name(group)})" if bw else
                          "one node: no inter-node link to measure")
            _write_fleet(gathered or [], req.output, console)
        return status


def _kept(folder: Path) -> str:
    """Where a stopped rank's measurements are, and how to finish them."""
    from ridgeline.partial import PARTIAL_NAME

    for name in ("profile.json", PARTIAL_NAME):
        if (folder / name).is_file():
            return (f"; what it measured is in {folder / name}: finish it with `ridgeline "
                    f"profile --resume {folder}`")
    return "; nothing was measured yet"


def _say(line: str) -> None:
    """One line per rank on stderr, in one write: the ranks' lines do not interleave."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _peer_name(group: Group) -> str:
    from ridgeline.probes.inter_node import pick_pair

    pair = pick_pair([i.node for i in group.infos])
    return group.name(pair[1]) if pair else "-"


def _group_stages(req: GroupRequest, group: Group, device: Any,
                  term: Termination) -> list[dict[str, Any]]:
    """Steps 4-7 of the module docstring; every rank gets rank 0's records (plus its own p2p)."""
    me = group.me
    inject_fault(me.rank, "rollcall", lambda: term.received)
    group.roll_call("every rank's own profile written", req.timeout_s)
    own: list[dict[str, Any]] = []
    if "p2p" in req.probes and me.local_rank == 0:
        own = _node_p2p(device, req.quick)
    group.roll_call("the collective sweep", req.timeout_s)
    with group.stage("the collective sweep"):
        inject_fault(me.rank, "sweep", lambda: term.received)
        records, config = group.collectives(device)
    with group.stage("the inter-node link"):
        records += group.inter_node(config)
    with group.stage("sharing rank 0's records"):
        records = group.from_rank0(records if me.rank == 0 else None)
    return own + list(records or [])


def _node_p2p(device: Any, quick: bool) -> list[dict[str, Any]]:
    """The p2p probe on this node's GPUs, through the runner (its cases' error handling),
    in a scratch folder: only its records are kept."""
    import tempfile

    from ridgeline.runner import run_profile

    with tempfile.TemporaryDirectory(prefix="ridgeline-p2p-") as tmp:
        profile = run_profile(device, ["p2p"], quick=quick, out_dir=tmp,
                              command_line=["ridgeline", *sys.argv[1:]])
    return [r for r in profile["records"] if r.get("probe") == "p2p"]


def _write_fleet(gathered: list[Any], top: Path, console: Any) -> None:
    """DIR/fleet.json, fleet.html and the charts (ridgeline.reports.fleet), and its table."""
    from ridgeline.reports.fleet import Fleet, Member, fleet_summary, print_fleet, write_fleet

    members = [Member(label, Path(path), profile) for label, path, profile in gathered]
    try:
        result = fleet_summary(Fleet(members))
        written = write_fleet(result, top)
    except Exception as exc:  # the profiles are the product: a fleet failure is a warning
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        console.print(f"[yellow]warning: the fleet summary was not written: "
                      f"{type(exc).__name__}: {first}[/yellow]")
        return
    from rich.console import Console

    print_fleet(result, Console())
    console.print(f"wrote {written[0]} and {written[1]}: every device against the median "
                  f"(`ridgeline fleet {top}` re-reads them and exits 1 on a slow device)")

