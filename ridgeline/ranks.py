"""Ranks on one node: start one process per rank, watch them, kill them, report who failed.

    from ridgeline.ranks import RankError, spawn_ranks
    spawn_ranks(["-m", "ridgeline.validation.tp", "config.json"], world_size=2, workdir=tmp,
                device_kind="cpu", timeout_s=60, startup_timeout_s=60, what="--tp 2")

Used where a command needs N ranks and no torchrun started them (`ridgeline
validate --tp N`; the collective probe's local sweep starts its workers the same
way). Under torchrun (RANK and WORLD_SIZE in the environment, `launched_by_torchrun`)
nothing is spawned: the process already is a rank.

How the processes start. One `python <args>` subprocess per rank, with RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free
MASTER_PORT: the env:// initialisation torchrun uses, in fresh interpreters that
inherit no CUDA context from the parent. Each rank is the leader of its own
process group (`start_new_session`), so the watchdog can kill a hung rank and
everything it started without touching anything else.

The watchdog. Each rank rewrites WORKDIR/progress.rank<R> ("<step>\\t<stage>",
`Progress`) as it goes; step 1 means "joined the process group" (the rank's
second call, after "init_process_group"). The ranks get `startup_timeout_s` to
join; after that the run fails when no rank has progressed for `timeout_s`, or
as soon as one rank exits with an error. Every rank is then killed and
`RankError` says which rank stopped, how (exit code or signal) and at which
stage, with the last line of its log, on one line. A clash on the free port
(another program took it between the check and the bind) is retried once.

A spawned rank calls `exit_with_parent()` first: should the parent be killed outright
(SIGKILL, or SIGTERM, which runs no cleanup), its ranks end within a second instead of
running on, orphaned, in sessions of their own.

On the rank side `RankGroup` joins the process group (NCCL/RCCL on GPUs, gloo
on the CPU, bound to its GPU where torch can) with a timeout that bounds every
collective, so a peer that vanished under torchrun also ends the wait.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ridgeline.errors import RidgelineError

PORT_CLASH = "address already in use"
PARENT_ENV = "RIDGELINE_RANK_PARENT_PID"  # set by spawn_ranks, read by exit_with_parent
TAIL_CHARS = 300  # of a failed rank's last log line, in the one-line error


class RankError(RidgelineError):
    """A rank died, hung, or never joined; the message names it (one line)."""


def launched_by_torchrun() -> bool:
    """True when this process is one rank of a torchrun (or any env://) launch."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it; a race is retried by spawn_ranks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def package_root() -> str:
    """The folder holding the ridgeline package: on the ranks' PYTHONPATH."""
    import ridgeline

    return str(Path(ridgeline.__file__).resolve().parent.parent)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def log_tail(path: Path) -> str:
    """The last non-empty line of a rank's log ("" when there is none)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    keep = [ln.strip() for ln in text if ln.strip()]
    return keep[-1] if keep else ""


def read_progress(path: Path) -> tuple[int, str] | None:
    try:
        step, stage = path.read_text().rstrip("\n").split("\t", 1)
        return int(step), stage
    except (OSError, ValueError):
        return None


class Progress:
    """A rank's progress file for the parent's watchdog; a no-op without a folder (torchrun)."""

    def __init__(self, workdir: str | Path | None, rank: int):
        self.path = Path(workdir) / f"progress.rank{rank}" if workdir else None
        self.step = 0

    def __call__(self, stage: str) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(f"{self.step}\t{stage}\n")
        tmp.replace(self.path)  # atomic: the watchdog never reads half a line
        self.step += 1


def exit_with_parent(poll_s: float = 1.0) -> None:
    """In a spawned rank: exit when the process that spawned it is gone (a daemon thread
    polls the parent PID). Without PARENT_ENV (torchrun started us) it does nothing."""
    import threading

    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return

    def watch_parent() -> None:
        while os.getppid() == int(parent):
            time.sleep(poll_s)
        os._exit(1)  # the parent died: nobody will read what this rank measures

    threading.Thread(target=watch_parent, name="ridgeline-parent-watch", daemon=True).start()


def kill_ranks(procs: list[subprocess.Popen]) -> None:
    """Terminate each rank's process group (only what we started), then kill what remains."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + 3.0
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()


def rank_env(rank: int, world_size: int, port: int, device_kind: str,
             extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one local rank: torchrun's env:// variables and our package path."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
               WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
               LOCAL_WORLD_SIZE=str(world_size), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root(), env.get("PYTHONPATH")) if p)
    env[PARENT_ENV] = str(os.getpid())
    if device_kind == "cpu":
        # n ranks share the cores: without a limit each would start a thread per core
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // world_size)))
    env.update(extra or {})
    return env


def spawn_ranks(args: list[str], world_size: int, workdir: Path, *, device_kind: str,
                timeout_s: float, startup_timeout_s: float, what: str | None = None,
                env: dict[str, str] | None = None, poll_s: float = 0.05,
                on_poll: Callable[[], Any] | None = None, port_retries: int = 1) -> None:
    """Run `python <args>` as `world_size` local ranks until all exit 0.

    Raises RankError (every rank killed first) when a rank exits with an error, does
    not join within `startup_timeout_s`, or no rank progresses for `timeout_s`.
    Logs go to workdir/rank<R>.log; `on_poll` runs on every poll (a progress bar).
    Ctrl-C (or any other exception) kills the ranks and propagates.
    """
    what = what or f"world size {world_size}"
    for attempt in range(port_retries + 1):
        for stale in workdir.glob("progress.rank*"):
            stale.unlink()
        procs: list[subprocess.Popen] = []
        logs: list[Path] = []
        try:
            port = free_port()
            for rank in range(world_size):
                logs.append(workdir / f"rank{rank}.log")
                with open(logs[-1], "w") as log:
                    procs.append(subprocess.Popen(
                        [sys.executable, *args],
                        env=rank_env(rank, world_size, port, device_kind, env),
                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        start_new_session=True))
            watch(procs, logs, workdir, world_size, timeout_s, startup_timeout_s, poll_s,
                  what=what, on_poll=on_poll)
            return
        except RankError as exc:
            kill_ranks(procs)
            if PORT_CLASH in str(exc).lower() and attempt < port_retries:
                continue
            raise
        except BaseException:  # Ctrl-C included: never leave ranks behind
            kill_ranks(procs)
            raise


def watch(procs: list[subprocess.Popen], logs: list[Path], workdir: Path, n: int,
          timeout_s: float, startup_timeout_s: float, poll_s: float = 0.05, *,
          what: str, on_poll: Callable[[], Any] | None = None) -> None:
    """Return when every rank exited 0; RankError (ranks still running) otherwise.
    `what` names the run in the error ("--tp 2")."""
    start = time.monotonic()
    last: dict[int, tuple[int, str] | None] = {r: None for r in range(n)}
    changed_at = start
    while True:
        codes = [p.poll() for p in procs]
        first = [r for r, c in enumerate(codes) if c not in (None, 0)]
        if first:
            # peers that fail in turn (a closed connection) exit too: name them after the
            # rank(s) that failed first, whose last log line says why
            time.sleep(max(poll_s, 0.2))
            codes = [p.poll() for p in procs]
            then = [r for r, c in enumerate(codes) if c not in (None, 0) and r not in first]
            deaths = "; ".join(
                f"rank {r} died ({describe_exit(codes[r])}) at '{(last[r] or (0, 'start'))[1]}': "
                f"{log_tail(logs[r])[:TAIL_CHARS] or 'no output'}" for r in first)
            if then:
                deaths += "; then " + ", ".join(f"rank {r} ({describe_exit(codes[r])})"
                                                for r in then)
            raise RankError(" ".join(f"{what}: {deaths}; killed all ranks".split()))
        if all(c == 0 for c in codes):
            return
        now = time.monotonic()
        for r in range(n):
            state = read_progress(workdir / f"progress.rank{r}")
            if state is not None and state != last[r]:
                last[r], changed_at = state, now
        if on_poll is not None:
            on_poll()
        stages = "; ".join(f"rank {r}: '{last[r][1] if last[r] else 'not started'}'"
                           for r in range(n))
        joined = all(last[r] is not None and last[r][0] >= 1 for r in range(n))
        if not joined:
            if now - start > startup_timeout_s:
                late = [r for r in range(n) if not (last[r] and last[r][0] >= 1)]
                raise RankError(f"{what}: rank(s) {late} did not join the process group within "
                                f"{startup_timeout_s:.0f} s ({stages}); killed all ranks")
        elif now - changed_at > timeout_s:
            # a rank that stops answering leaves the others waiting inside the same
            # collective, so the stages say where each one is rather than who is to blame
            raise RankError(f"{what}: hung, no rank progressed for {timeout_s:g} s ({stages}); "
                            "killed all ranks")
        time.sleep(poll_s)


class RankGroup:
    """This process as one rank: its process group and the device it works on.

    RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT come from the environment
    (torchrun or spawn_ranks). GPUs: backend "nccl" (RCCL on ROCm), rank r on GPU
    LOCAL_RANK; the CPU: gloo.
    """

    def __init__(self, device_kind: str):
        import torch
        import torch.distributed as dist

        self.torch, self.dist = torch, dist
        self.rank = int(os.environ["RANK"])
        self.world = int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
        self.on_gpu = device_kind != "cpu"
        self.backend = "nccl" if self.on_gpu else "gloo"
        if self.on_gpu:
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")

    def init(self, timeout_s: float) -> None:
        from datetime import timedelta

        kwargs: dict[str, Any] = {"backend": self.backend, "timeout": timedelta(seconds=timeout_s)}
        if self.on_gpu:
            kwargs["device_id"] = self.device  # binds the rank to its GPU (and its barriers)
        try:
            self.dist.init_process_group(**kwargs)
        except TypeError:  # an older torch without device_id
            kwargs.pop("device_id", None)
            self.dist.init_process_group(**kwargs)

    def sync(self) -> None:
        if self.on_gpu:
            self.torch.cuda.synchronize(self.device)

    def reduce(self, values: list[float], op: str = "max", group: Any = None) -> list[float]:
        """Element-wise MAX/MIN/SUM of a float list across the ranks of `group` (None: all),
        float64 on the rank's device."""
        t = self.torch.tensor(values, dtype=self.torch.float64, device=self.device)
        red = {"max": self.dist.ReduceOp.MAX, "min": self.dist.ReduceOp.MIN,
               "sum": self.dist.ReduceOp.SUM}[op]
        self.dist.all_reduce(t, op=red, group=group)
        return [float(v) for v in t.cpu().tolist()]

    def all_reduce_(self, tensor):
        """Sum `tensor` across the ranks in place (the tensor-parallel all-reduce); returns it."""
        self.dist.all_reduce(tensor)
        return tensor

    def barrier(self, group: Any = None) -> None:
        """Wait for every rank of `group` (None: all)."""
        if self.on_gpu:  # an all-reduce on our own GPU: no guessing of the rank's device
            self.reduce([0.0], "max", group)
            self.sync()
        else:
            self.dist.barrier(group=group)

    def share(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (picklable), in rank order."""
        out: list[Any] = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


def apply_test_fault(fault: dict[str, Any], rank: int, progress: Callable[[str], None]) -> None:
    """Test-only: act out fault["kind"] on this rank ("hang" for fault["hang_s"] seconds,
    "raise", or "kill": SIGKILL, as the OOM killer or `kill -9` would, no cleanup). The
    caller decides whether the fault's rank and place match."""
    kind = fault.get("kind")
    if kind == "hang":
        progress("test hang: sleeping")
        time.sleep(float(fault.get("hang_s", 3600)))
    elif kind == "raise":
        raise RuntimeError(f"test failure injected on rank {rank}")
    elif kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
