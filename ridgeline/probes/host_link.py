"""Host link probe: host-to-device and device-to-host copy bandwidth and latency.

Cases: direction h2d | d2h | bidir (both at once, on two streams) x host
memory pinned | pageable x size (4 KiB .. 1 GiB in steps of 4, bounded by free
memory; quick: 4 KiB .. 64 MiB). Bidirectional runs with pinned memory only:
a pageable copy is staged by the host thread that issues it, so two pageable
copies issued from one thread cannot overlap and "bidir" would be serial.

Work (pure, in `link_bytes`): one copy of S bytes moves S bytes across the
link; bidir moves S each way, 2S in all:

    bw_GBps = link_bytes / time_ms_median / 1e6      (GB = 1e9, as nvbandwidth)
    latency_us = time_ms_median * 1e3                 (the small sizes' figure)

bidir records also carry bw_GBps_per_direction = S / time, the number
nvbandwidth's bidirectional test prints for one direction.

Each case is validated before it is timed: the source holds a periodic byte
pattern, the destination is zeroed, one copy runs, and the whole destination
is compared with the pattern, exactly and cheaply (`pattern_mismatch`: blocks
compared as 8-byte words with torch.equal against one block of the pattern,
~0.5 s per GiB on 2 host threads instead of ~7 s for an elementwise float
difference). Timing goes through ctx.timer (device events)
without cache flushing (a copy's source and destination are not cached the
way a kernel's operands are).

The CPU device has no host link: the probe is waived there.

    ridgeline profile --probes host_link [--quick]
"""

from __future__ import annotations

from typing import Any

from ridgeline.device import host_available_bytes
from ridgeline.probes.base import Case, Probe, ProbeContext
from ridgeline.records import make_record
from ridgeline.timing import Timer, Work

KiB, MiB, GiB = 2**10, 2**20, 2**30
DIRECTIONS = ("h2d", "d2h", "bidir")
MEMORIES = ("pinned", "pageable")
SIZES_FULL = [4 * KiB * 4**k for k in range(10)]          # 4 KiB .. 1 GiB
SIZES_QUICK = [4 * KiB, 64 * KiB, 1 * MiB, 16 * MiB, 64 * MiB]
PATTERN_LEN = 251  # prime: the pattern never lines up with a power-of-two stride
CHECK_BLOCK_BYTES = 32 * MiB  # one reference block of the pattern; buffers are compared per block


def link_bytes(direction: str, size_bytes: int) -> int:
    """Bytes that cross the host link in one call (bidir: S each way)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}")
    return 2 * size_bytes if direction == "bidir" else size_bytes


def device_bytes_needed(direction: str, size_bytes: int) -> int:
    """Device memory one case allocates (bidir holds one buffer per direction)."""
    return link_bytes(direction, size_bytes)


def host_link_sizes(quick: bool, device_free_bytes: int, host_free_bytes: int,
                    max_bytes: int = GiB) -> list[int]:
    """Sizes to sweep, each at most a quarter of free device and host memory (bidir holds 2S)."""
    sizes = SIZES_QUICK if quick else SIZES_FULL
    limit = min(max_bytes, device_free_bytes // 4, host_free_bytes // 4)
    return [s for s in sizes if s <= limit]


def pattern_tile(salt: int):
    import torch

    return ((torch.arange(PATTERN_LEN, dtype=torch.int32) * 7 + salt) % PATTERN_LEN).to(torch.uint8)


def _equal_bytes(a, b) -> bool:
    """a == b bytewise (1-D uint8, same length), compared as 8-byte words where aligned."""
    import torch

    whole = a.numel() // 8 * 8
    try:
        words = torch.equal(a[:whole].view(torch.int64), b[:whole].view(torch.int64))
    except RuntimeError:  # a storage offset that is not 8-byte aligned: compare bytes
        return torch.equal(a, b)
    return words and torch.equal(a[whole:], b[whole:])


def pattern_mismatch(buf, tile, block_bytes: int = CHECK_BLOCK_BYTES) -> float:
    """Exact: 0.0 when buf[i] == tile[i % len(tile)] for every i, else max |buf[i] - tile[..]|.

    Blocks start at multiples of both the pattern length (so each starts at
    phase 0) and 8 (word-aligned), and are compared with one reference block
    built once, with no float temporaries. Only a block that differs is
    measured elementwise, to report how large the error is.
    """
    from ridgeline.probes.patterns import max_periodic_error

    n, m = buf.numel(), tile.numel()
    tile = tile.to(buf.device)
    rows = max(8, block_bytes // m // 8 * 8)
    step = rows * m
    ref = tile.repeat(min(rows, -(-n // m)))   # covers the first (or only) block whole
    worst = 0.0
    for start in range(0, n, step):
        block = buf[start:start + step]
        if not _equal_bytes(block, ref[:block.numel()]):
            worst = max(worst, max_periodic_error(block, tile))
    return worst


def _host_buffer(size: int, pinned: bool):
    import torch

    return torch.empty(size, dtype=torch.uint8, pin_memory=pinned)


def measure_copy(direction: str, memory: str, size_bytes: int, device, timer: Timer,
                 telemetry: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate then time one host-link copy case; returns its record.

    `device` is a torch.device; on a CUDA/HIP device the copies are asynchronous
    (pinned) and bidir runs on two streams. On a CPU device (tests only: the
    probe waives the CPU) the same code copies host to host, sequentially.
    """
    import torch
    from ridgeline.probes.patterns import fill_periodic

    on_gpu = device.type == "cuda"
    pinned = memory == "pinned" and on_gpu
    non_blocking = pinned  # pageable copies are staged synchronously anyway
    tile_h2d, tile_d2h = pattern_tile(3), pattern_tile(11)
    plan: list[tuple[Any, Any, Any]] = []  # (dst, src, tile the dst must hold)
    if direction in ("h2d", "bidir"):
        src = _host_buffer(size_bytes, pinned)
        fill_periodic(src, tile_h2d)
        dst = torch.empty(size_bytes, dtype=torch.uint8, device=device)
        plan.append((dst, src, tile_h2d.to(device)))
    if direction in ("d2h", "bidir"):
        src = torch.empty(size_bytes, dtype=torch.uint8, device=device)
        fill_periodic(src, tile_d2h.to(device))
        plan.append((_host_buffer(size_bytes, pinned), src, tile_d2h))

    if on_gpu and len(plan) == 2:
        streams = [torch.cuda.Stream(device) for _ in plan]

        def fn():
            cur = torch.cuda.current_stream(device)
            for s, (dst, src, _) in zip(streams, plan):
                s.wait_stream(cur)  # start after the timer's start event
                with torch.cuda.stream(s):
                    dst.copy_(src, non_blocking=non_blocking)
            for s in streams:
                cur.wait_stream(s)  # the end event waits for both directions
    else:
        def fn():
            for dst, src, _ in plan:
                dst.copy_(src, non_blocking=non_blocking)

    for dst, _, _ in plan:
        dst.zero_()  # a copy that does nothing must fail the check
    fn()
    timer.synchronize()
    if on_gpu:
        torch.cuda.synchronize(device)
    err = max(pattern_mismatch(dst, tile) for dst, _, tile in plan)

    moved = link_bytes(direction, size_bytes)
    timing = timer.time(fn, work=Work(bytes=moved), flush_cache=False)
    rec = make_record(probe="host_link", provider="torch", kernel="copy", dtype="uint8",
                      timing=timing, validated=err == 0.0, max_abs_error=err,
                      bytes_read=moved, bytes_written=moved, telemetry=telemetry,
                      direction=direction, memory=memory, size_bytes=size_bytes)
    seconds = rec["time_ms_median"] * 1e-3
    # Link bandwidth counts each byte once (it is read at one end and written at
    # the other): the figure nvbandwidth and bandwidthTest report.
    rec["link_bytes"] = moved
    rec["bw_GBps"] = moved / seconds / 1e9
    rec["bw_GBps_per_direction"] = size_bytes / seconds / 1e9
    rec["latency_us"] = rec["time_ms_median"] * 1e3
    rec["host_memory_pinned"] = pinned
    return rec


def topology_record(topo: dict[str, Any]) -> dict[str, Any]:
    """The node's topology, carried with the records so the fit can store it in the profile.

    Status "info": it is read, not measured, and never fitted.
    """
    return {"probe": "topology", "provider": topo.get("source", "none"), "kernel": None,
            "dtype": "", "status": "info", "validated": False, "topology": topo}


class HostLinkProbe(Probe):
    name = "host_link"
    description = "host<->device copies, pinned and pageable, one way and both ways at once"

    def available(self, ctx: ProbeContext) -> str | None:
        if ctx.device.kind == "cpu":
            return "the CPU device has no host link"
        return None

    def cases(self, ctx: ProbeContext) -> list[Case]:
        host_free = host_available_bytes() or ctx.device.memory_bytes // 2
        sizes = ctx.options.get("sizes") or host_link_sizes(
            ctx.quick, ctx.free_memory_bytes(), host_free, ctx.options.get("max_bytes", GiB))
        out = [Case({"kind": "topology"})]
        for memory in MEMORIES:
            for direction in DIRECTIONS:
                if direction == "bidir" and memory == "pageable":
                    continue  # cannot overlap from one host thread (see the module docstring)
                out.extend(Case({"direction": direction, "memory": memory, "size_bytes": s})
                           for s in sizes)
        return out

    def run(self, case: Case, ctx: ProbeContext) -> list[dict[str, Any]]:
        if case.get("kind") == "topology":
            from ridgeline.topology import gpu_topology

            return [topology_record(gpu_topology())]
        rec = measure_copy(case["direction"], case["memory"], case["size_bytes"],
                           ctx.torch_device, ctx.timer, ctx.telemetry())
        return [rec]

