"""Inter-node link: a large point-to-point send/recv between a rank on node 0 and one on node 1.

Run by `ridgeline profile` under torchrun when the job spans more than one node
(ridgeline.fleet_run), on the process group the collective sweep used: global
rank 0 sends, the lowest rank on another node receives (`pick_pair`), one
direction, fp32 buffers, a few large sizes (`link_sizes`). Each size is first
checked (the receiver's buffer must hold the sender's periodic tile exactly),
then timed the way the collective sweep times a case (collective_worker.time_case:
warm-up and repeat budgets agreed by both ranks; device events on GPUs, a barrier
and the host clock on gloo; per iteration the slower of the two ranks):

    algbw_GBps      = size_bytes / time / 1e9            (nccl-tests' sendrecv algbw)
    inter_node_GBps = the plateau of algbw over the sizes  (interconnect_fit.plateau:
                      the median of the sizes within 10% of the best)

The records have probe "inter_node"; `inter_node_GBps` is what
ridgeline.sizing.latency prices a pipeline-parallel stage transfer with
(profile["interconnect"]["inter_node_GBps"]). Not a registered probe: it needs
ranks on two nodes, which only torchrun provides.
"""

from __future__ import annotations

from typing import Any

INTER_NODE_PROBE = "inter_node"
MiB = 2**20
TILE_LEN = 16  # the periodic check pattern; its values are exact in fp32


def link_sizes(on_gpu: bool, quick: bool) -> list[int]:
    """Bytes sent per case: large enough that the link, not the latency, sets the time."""
    top = (64 if quick else 256) * MiB if on_gpu else (4 if quick else 16) * MiB
    return [top // 16, top // 4, top]


def pick_pair(node_of_rank: list[int]) -> tuple[int, int] | None:
    """(rank 0, the lowest rank on another node), or None when every rank is on one node."""
    for rank, node in enumerate(node_of_rank):
        if node != node_of_rank[0]:
            return 0, rank
    return None


def measure_inter_node(comm: Any, pair: tuple[int, int], config: dict[str, Any],
                       sizes: list[int]) -> list[dict[str, Any]]:
    """Every rank calls this (creating the pair's group is collective); the pair measures.

    comm: collective_worker's joined group; config: the collective sweep's (provider,
    backend, budget). Returns the records on the sender (rank 0), [] elsewhere.
    """
    from ridgeline.probes.collective_worker import time_case
    from ridgeline.probes.patterns import fill_periodic, max_periodic_error, rank_tile_values
    from ridgeline.ranks import Progress
    from ridgeline.records import make_record
    from ridgeline.timing import Timing

    dist, torch = comm.dist, comm.torch
    group = dist.new_group(list(pair))
    if comm.rank not in pair:
        return []
    src, dst = pair
    sending = comm.rank == src
    progress = Progress(None, comm.rank)  # no watchdog under torchrun: no file
    records = []
    for size in sizes:
        count = size // 4
        buf = torch.empty(count, dtype=torch.float32, device=comm.device)
        tile = torch.tensor(rank_tile_values(src, TILE_LEN), dtype=torch.float32,
                            device=comm.device)
        if sending:
            fill_periodic(buf, tile)
            op = (lambda b=buf: dist.send(b, dst, group=group))
        else:
            buf.fill_(-1.0)  # a transfer that never lands cannot pass the check
            op = (lambda b=buf: dist.recv(b, src, group=group))
        op()
        comm.sync()
        err = 0.0 if sending else max_periodic_error(buf, tile)
        err = comm.reduce([err], "max", group)[0]
        slow, _fast = time_case(comm, op, group, config["budget"], progress,
                                f"send/recv {size} B")
        del buf, op
        timer = ("device-events, slower rank" if comm.on_gpu
                 else "host-clock+barrier, slower rank")
        rec = make_record(probe=INTER_NODE_PROBE, provider=config["provider"],
                          kernel="send_recv", dtype="fp32", timing=Timing(slow, timer),
                          validated=err == 0.0, max_abs_error=err, size_bytes=size, count=count,
                          world_size=2, nodes=2, link="network", backend=config["backend"],
                          src_rank=src, dst_rank=dst)
        seconds = rec["time_ms_median"] * 1e-3
        rec["algbw_GBps"] = size / seconds / 1e9
        rec["bw_GBps"] = rec["algbw_GBps"]
        rec["latency_us"] = rec["time_ms_median"] * 1e3
        records.append(rec)
    return records if sending else []


def inter_node_GBps(records: list[dict[str, Any]]) -> float | None:
    """The link's bandwidth from the inter_node records: the plateau of the checked sizes."""
    from ridgeline.records import fit_ready
    from ridgeline.roofline.interconnect_fit import plateau

    return plateau(r["algbw_GBps"] for r in fit_ready(records, INTER_NODE_PROBE))
