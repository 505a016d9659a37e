"""Collective cost models read from a profile (pure Python: the planner uses them).

Profile layout (written by the interconnect probes' fit):

    "interconnect": {
      "allreduce": {"2": {"alpha_us": 12.0, "busbw_GBps": 370.0, "algbw_GBps": 185.0,
                          "link": "nvlink", "source": "measured", "dtype": "bf16"}, ...},
      "all_gather": {...same per world size...},
      "reduce_scatter": {...},
      "host_link_GBps": {"h2d": 55.0, "d2h": 53.0, "source": "measured"},
      "topology": {...}
    }

Alpha-beta model with the nccl-tests bus-bandwidth factors (so `busbw_GBps`
compares directly with all_reduce_perf):

    t(bytes) = alpha + bytes / algbw,   algbw = busbw / factor(n)
    factor:  all-reduce 2(n-1)/n;  all-gather, reduce-scatter (n-1)/n;  broadcast 1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ridgeline.roofline.model import DTYPE_BYTES

BUSBW_FACTORS = {
    "allreduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
}


def busbw_factor(collective: str, world_size: int) -> float:
    """nccl-tests factor turning algorithm bandwidth into bus bandwidth."""
    if world_size < 1:
        raise ValueError("world_size must be >= 1")
    return BUSBW_FACTORS[collective](world_size)


@dataclass
class CollectiveEstimate:
    time_s: float
    source: str            # "measured" | "estimated" | "none"
    detail: str


def collective_time(collective: str, size_bytes: float, world_size: int,
                    profile: dict[str, Any]) -> CollectiveEstimate:
    """Time of one collective of `size_bytes` per rank, from the profile's fitted model.

    When the profile holds no measurement for this world size, the estimate is
    built from the host link (PCIe through the host, a lower bound on the fabric)
    and labelled "estimated"; when it holds neither, source is "none".
    """
    if world_size <= 1:
        return CollectiveEstimate(0.0, "measured", "one rank: no communication")
    table = (profile.get("interconnect") or {}).get(collective) or {}
    fit = table.get(str(world_size))
    factor = busbw_factor(collective, world_size)
    if fit and fit.get("busbw_GBps"):
        algbw = fit["busbw_GBps"] * 1e9 / factor
        t = fit.get("alpha_us", 0.0) * 1e-6 + size_bytes / algbw
        return CollectiveEstimate(t, fit.get("source", "measured"),
                                  f"{collective} n={world_size}: alpha {fit.get('alpha_us', 0):.1f} us, "
                                  f"busbw {fit['busbw_GBps']:.0f} GB/s")
    host = (profile.get("interconnect") or {}).get("host_link_GBps") or {}
    link = min([v for k, v in host.items() if k in ("h2d", "d2h") and v] or [0.0])
    if link:
        # Ring over PCIe through the host: each byte of the bus traffic crosses the link once.
        algbw = link * 1e9 / factor
        t = 20e-6 + size_bytes / algbw
        return CollectiveEstimate(t, "estimated",
                                  f"{collective} n={world_size}: estimated from host link "
                                  f"{link:.0f} GB/s (no measured collective)")
    return CollectiveEstimate(float("nan"), "none",
                              f"no {collective} measurement for {world_size} ranks and no host link")


def tp_allreduce_time(hidden: int, batch_tokens: int, dtype: str, tp: int,
                      profile: dict[str, Any]) -> CollectiveEstimate:
    """All-reduce time of one transformer layer under Megatron-style tensor parallelism.

    Two all-reduces per layer (after attention's output projection and after the
    MLP's down projection), each of batch_tokens x hidden activations.
    """
    size = batch_tokens * hidden * DTYPE_BYTES.get(dtype, 2)
    one = collective_time("allreduce", size, tp, profile)
    return CollectiveEstimate(2 * one.time_s, one.source, "2 x " + one.detail)
