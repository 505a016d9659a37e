"""P2P probe: device-to-device copy bandwidth and latency for every ordered GPU pair.

Cases: (src, dst) for every ordered pair of visible GPUs x size (4 KiB .. 256
MiB in steps of 16, bounded by free memory; quick: 4 KiB and 64 MiB). Each
record names the path the pair takes, from ridgeline.topology: "nvlink"
(direct or through NVSwitch), "pcie_switch" (PIX/PXB), "cpu" (PHB/NODE/SYS:
through the host bridge or across sockets), "xgmi" (AMD), or "unknown".

Work: one copy of S bytes moves S bytes over the path (`link_bytes`):

    bw_GBps = S / time_ms_median / 1e6        latency_us = time_ms_median * 1e3

torch runs a cross-device copy on the source GPU's current stream, fenced by
the destination's current stream before and after; the timer therefore runs
on the *destination* device, whose events bracket the whole copy. torch enables
peer access where the pair allows it, else the driver stages the copy through
host memory (that is the "cpu" path, and `p2p_access` is false).

Validated on every case: the source holds a periodic pattern, the zeroed
destination must equal it after one copy.

With fewer than two GPUs (and on the CPU device) the probe is waived.

    ridgeline profile --probes p2p [--quick]
"""

from __future__ import annotations

from typing import Any

from ridgeline.device import gpu_count
from ridgeline.probes.base import Case, Probe, ProbeContext
from ridgeline.records import make_record
from ridgeline.timing import Timer, Work

KiB, MiB, GiB = 2**10, 2**20, 2**30
SIZES_FULL = [4 * KiB * 16**k for k in range(5)]   # 4 KiB .. 256 MiB
SIZES_QUICK = [4 * KiB, 64 * MiB]


def link_bytes(size_bytes: int) -> int:
    """Bytes one device-to-device copy moves over the path between the pair."""
    return size_bytes


def gpu_pairs(n_gpus: int) -> list[tuple[int, int]]:
    """Every ordered pair (src, dst), src != dst: n(n-1) pairs."""
    return [(i, j) for i in range(n_gpus) for j in range(n_gpus) if i != j]


def p2p_sizes(quick: bool, free_bytes: int, max_bytes: int = GiB) -> list[int]:
    limit = min(max_bytes, free_bytes // 4)
    return [s for s in (SIZES_QUICK if quick else SIZES_FULL) if s <= limit]


def measure_p2p(src: int, dst: int, size_bytes: int, src_device, dst_device, timer: Timer,
                path: str = "unknown", path_code: str = "?", p2p_access: bool | None = None,
                telemetry: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate then time one src -> dst copy; `timer` must run on the destination device."""
    import torch
    from ridgeline.probes.host_link import pattern_tile
    from ridgeline.probes.patterns import fill_periodic, max_periodic_error

    tile = pattern_tile(5 + src * 31 + dst)
    a = torch.empty(size_bytes, dtype=torch.uint8, device=src_device)
    fill_periodic(a, tile.to(src_device))
    b = torch.zeros(size_bytes, dtype=torch.uint8, device=dst_device)

    def fn():
        b.copy_(a, non_blocking=True)

    fn()
    if dst_device.type == "cuda":
        torch.cuda.synchronize(dst_device)
        torch.cuda.synchronize(src_device)
    err = max_periodic_error(b, tile.to(dst_device))
    timing = timer.time(fn, work=Work(bytes=link_bytes(size_bytes)), flush_cache=False)
    rec = make_record(probe="p2p", provider="torch", kernel="copy", dtype="uint8", timing=timing,
                      validated=err == 0.0, max_abs_error=err, bytes_read=size_bytes,
                      bytes_written=size_bytes, telemetry=telemetry, src=src, dst=dst,
                      size_bytes=size_bytes, path=path, path_code=path_code, p2p_access=p2p_access)
    seconds = rec["time_ms_median"] * 1e-3
    rec["link_bytes"] = link_bytes(size_bytes)
    rec["bw_GBps"] = link_bytes(size_bytes) / seconds / 1e9  # each byte crosses the path once
    rec["latency_us"] = rec["time_ms_median"] * 1e3
    return rec


class P2PProbe(Probe):
    name = "p2p"
    description = "GPU-to-GPU copy bandwidth and latency for every pair, with its path"

    def __init__(self) -> None:
        self._topology: dict[str, Any] | None = None
        self._timers: dict[int, Timer] = {}

    def available(self, ctx: ProbeContext) -> str | None:
        if ctx.device.kind == "cpu":
            return "the CPU device has no GPU peers: p2p waived"
        if gpu_count() < 2:
            return "one GPU: p2p waived"
        return None

    def topology(self) -> dict[str, Any]:
        if self._topology is None:
            from ridgeline.topology import gpu_topology

            self._topology = gpu_topology()
        return self._topology

    def cases(self, ctx: ProbeContext) -> list[Case]:
        sizes = ctx.options.get("sizes") or p2p_sizes(ctx.quick, ctx.free_memory_bytes(),
                                                       ctx.options.get("max_bytes", GiB))
        return [Case({"src": s, "dst": d, "size_bytes": n})
                for s, d in gpu_pairs(gpu_count()) for n in sizes]

    def _timer_for(self, ctx: ProbeContext, index: int) -> Timer:
        """An event timer on GPU `index` (ctx.timer if already there, or not event-based)."""
        from ridgeline.timing import EventTimer

        timer = ctx.timer
        if not isinstance(timer, EventTimer) or timer.device.index == index:
            return timer
        if index not in self._timers:
            self._timers[index] = EventTimer(index, ctx.device.l2_cache_bytes)
        return self._timers[index]

    def run(self, case: Case, ctx: ProbeContext) -> list[dict[str, Any]]:
        import torch
        from ridgeline.topology import pair_kind

        src, dst = case["src"], case["dst"]
        topo = self.topology()
        try:
            code = topo["paths"][src][dst]
        except (KeyError, IndexError):
            code = "?"
        access = bool(torch.cuda.can_device_access_peer(src, dst))
        path = pair_kind(topo, src, dst)
        if path == "unknown" and not access:
            path = "cpu"  # no peer access: the driver stages the copy through host memory
        return [measure_p2p(src, dst, case["size_bytes"], torch.device(f"cuda:{src}"),
                            torch.device(f"cuda:{dst}"), self._timer_for(ctx, dst), path=path,
                            path_code=code, p2p_access=access, telemetry=ctx.telemetry())]
