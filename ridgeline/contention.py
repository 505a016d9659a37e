"""What else ran while a case was measured: the causes of a noisy number, where the system shows them.

    meter = ContentionMeter(device); meter.start()   # at the start of a case
    ...                                               # the case runs
    meter.read()  # {"host_steal_pct": 0.0, "host_other_cpu_pct": 3.1, "gpu_other_processes": 0}

- host_steal_pct: share of the host's CPU time the hypervisor gave to other
  guests (the `steal` column of /proc/stat) over the window.
- host_other_cpu_pct: share of all CPUs' time spent by *other* processes: busy
  time from /proc/stat minus steal minus this process's own and its descendants'
  (/proc/PID/stat: threads, workers it started, waited-for children). On a 2-core machine one busy
  thread elsewhere reads about 50%.
- gpu_other_processes: compute processes on the profiled GPU other than this
  one (NVML); None where NVML is not available.

Linux /proc only; elsewhere the host keys are absent. Resolution is the kernel's
clock tick (10 ms per CPU): windows under MIN_WINDOW_TICKS give no host figures.
"""

from __future__ import annotations

import os
from typing import Any

# Above these, a noisy ceiling names the cause (one busy process on 2 cores reads ~50%).
BUSY_OTHER_CPU_PCT = 25.0
BUSY_STEAL_PCT = 5.0
# Windows shorter than this many clock ticks (all CPUs together) read too coarsely to
# say anything: one stray tick would be 5-50%. No host figures then.
MIN_WINDOW_TICKS = 20


def _host_ticks() -> tuple[int, int, int] | None:
    """(total, busy, steal) CPU ticks of the whole host since boot."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    fields += [0] * (8 - len(fields))
    total = sum(fields[:8])
    idle = fields[3] + fields[4]
    return total, total - idle, fields[7]


def _stat_fields(pid: str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _children(pid: str) -> list[str]:
    """Child PIDs of every thread of `pid` (/proc/PID/task/TID/children; a kernel without
    CONFIG_PROC_CHILDREN has none, and our workers then read as other work)."""
    out: list[str] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += fh.read().split()
        except OSError:
            continue
    return out


def _ticks(fields: list[str]) -> int:
    return sum(int(x) for x in fields[11:15])  # utime stime cutime cstime, stat(5) 14-17


def _own_ticks() -> int | None:
    """CPU ticks of this process and every process it started (collective workers are
    ours, not "other work"). Walks our own descendants only: the sweep reads this twice
    per case, and a busy node has thousands of processes in /proc."""
    me = _stat_fields("self")
    if me is None:
        return None
    total = _ticks(me)
    todo, seen = _children(str(os.getpid())), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        f = _stat_fields(pid)
        if f and len(f) > 14:
            total += _ticks(f)
        todo += _children(pid)
    return total


class ContentionMeter:
    """Host (and GPU) contention over a window; a no-op where nothing is readable."""

    def __init__(self, device: Any = None):
        self.device = device
        self._start: tuple[tuple[int, int, int] | None, int | None] = (None, None)
        self._nvml_handle = None
        self._nvml = None

    def start(self) -> None:
        self._start = (_host_ticks(), _own_ticks())

    def read(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        host0, own0 = self._start
        host1, own1 = _host_ticks(), _own_ticks()
        if host0 and host1:
            d_total = host1[0] - host0[0]
            if d_total >= MIN_WINDOW_TICKS:
                d_busy, d_steal = host1[1] - host0[1], host1[2] - host0[2]
                d_own = (own1 - own0) if own0 is not None and own1 is not None else 0
                out["host_steal_pct"] = round(100.0 * d_steal / d_total, 1)
                other = max(0, d_busy - d_steal - d_own)
                out["host_other_cpu_pct"] = round(100.0 * other / d_total, 1)
        gpu = self._gpu_other_processes()
        if gpu is not None:
            out["gpu_other_processes"] = gpu
        return out

    def _gpu_other_processes(self) -> int | None:
        if self.device is None or getattr(self.device, "kind", None) != "cuda":
            return None
        if self._nvml is None:
            from ridgeline.telemetry import _nvml, _nvml_handle

            self._nvml = _nvml()
            if self._nvml is None:
                return None
            try:
                self._nvml_handle = _nvml_handle(self._nvml, self.device.pci_bus_id,
                                                 self.device.index)
            except Exception:
                return None
        try:
            procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._nvml_handle)
        except Exception:
            return None
        return sum(1 for p in procs if getattr(p, "pid", None) != os.getpid())


def causes(records: list[dict[str, Any]]) -> list[str]:
    """Human-readable causes of noise seen in these records (worst values)."""
    def worst(key: str) -> float:
        return max((float(r[key]) for r in records if isinstance(r.get(key), (int, float))),
                   default=0.0)

    out = []
    if worst("host_other_cpu_pct") > BUSY_OTHER_CPU_PCT:
        out.append(f"other processes used up to {worst('host_other_cpu_pct'):.0f}% of the CPUs")
    if worst("host_steal_pct") > BUSY_STEAL_PCT:
        out.append(f"the hypervisor stole up to {worst('host_steal_pct'):.0f}% of CPU time")
    if worst("gpu_other_processes") > 0:
        out.append(f"{worst('gpu_other_processes'):.0f} other process(es) ran on the GPU")
    if any(r.get("throttled") for r in records):
        out.append("the device throttled")
    return out
