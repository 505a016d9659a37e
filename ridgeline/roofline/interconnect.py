"""Collective cost models read from a profile (pure Python: the planner uses them).

Profile layout (written by roofline.interconnect_fit.fit_interconnect):

    "interconnect": {
      "allreduce": {"2": {"alpha_us": 12.0, "busbw_GBps": 370.0, "algbw_GBps": 185.0,
                          "link": "nvlink", "source": "measured", "dtype": "bf16",
                          "backend": "nccl", "fit_error_median": .., "fit_error_worst": ..,
                          "status": "verified", "reason": None, "spread": {..},
                          "n_points": 29, "size_min_bytes": 4, "size_max_bytes": 2**30}, ...},
      "all_gather": {...same per world size...},
      "reduce_scatter": {...},
      "all_to_all": {...},     # measured and fitted; the planner does not read it yet
      "host_link_GBps": {"h2d": 55.0, "d2h": 53.0, "bidir": 100.0, "source": "measured", ...},
      "p2p": {"pairs": [{"src", "dst", "path", "bw_GBps", "latency_us"}], "source": "measured"},
      "topology": {...}
    }

`status` says whether the sweep showed the bandwidth term (interconnect_fit's
rule; trust.py's meaning); an estimate from a fit that is not verified says so
in its `detail`.

Alpha-beta model with the nccl-tests bus-bandwidth factors (so `busbw_GBps`
compares directly with all_reduce_perf):

    t(bytes) = alpha + bytes / algbw,   algbw = busbw / factor(n)
    factor:  all-reduce 2(n-1)/n;  all-gather, reduce-scatter, all-to-all (n-1)/n;  broadcast 1

All-to-all (expert parallelism's collective) is stored beside the others, but
no sizing equation uses it yet: expert parallelism is not modelled, so
`collective_time("all_to_all", ...)` answers only when asked directly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ridgeline.dtypes import BYTES as DTYPE_BYTES

# The collectives the sweep measures and the fit stores, in the sweep's order (one home:
# the probe's default sweep, the fit and the profile checks import it).
COLLECTIVES = ("allreduce", "all_gather", "reduce_scatter", "all_to_all")
# the collectives the planner prices (the TP all-reduce); the others are measured and shown only
PLANNED_COLLECTIVES = ("allreduce",)

BUSBW_FACTORS = {
    "allreduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    # each rank keeps 1/n of what it holds and sends the rest: (n-1)/n of size crosses its link
    "all_to_all": lambda n: (n - 1) / n,
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
    busbw_GBps: float | None = None   # the bus bandwidth the estimate used
    link: str | None = None           # the link of the fit it came from (None: host link, none)
    size_bytes: float = 0.0           # one collective's size (nccl-tests size)


def ring_steps(collective: str, world_size: int) -> int:
    """Latency-bound steps: all-reduce 2(n-1); all-gather, reduce-scatter (ring) and
    all-to-all (pairwise exchange) n-1."""
    n = max(1, world_size)
    return 2 * (n - 1) if collective == "allreduce" else (n - 1)


def _measured(collective: str, size_bytes: float, world_size: int, fit: dict[str, Any],
              factor: float) -> tuple[float, str]:
    algbw = (fit.get("algbw_GBps") or fit["busbw_GBps"] / factor) * 1e9
    alpha_us = fit.get("alpha_us", 0.0) or 0.0
    return alpha_us * 1e-6 + size_bytes / algbw, (
        f"{collective} n={world_size}: alpha {alpha_us:.1f} us, busbw {fit['busbw_GBps']:.0f} GB/s"
        f" ({fit.get('link', 'link unknown')}, {fit.get('dtype', '?')}){_trust_note(fit)}")


def _trust_note(fit: dict[str, Any]) -> str:
    """'' for a verified fit (or one from before fits carried a status), else why not."""
    status = fit.get("status")
    if status in (None, "verified"):
        return ""
    return f" [{status}: {fit['reason']}]" if fit.get("reason") else f" [{status}]"


def collective_time(collective: str, size_bytes: float, world_size: int,
                    profile: dict[str, Any]) -> CollectiveEstimate:
    """Time of one collective of `size_bytes` (nccl-tests size) from the profile's fitted model.

    In order: the fit measured at this world size ("measured"); else the fit of the
    nearest measured world size, its busbw and per-step latency carried over
    ("estimated": on a ring, busbw is nearly independent of n); else the host link
    (a ring through host memory, each byte of bus traffic crossing PCIe once,
    "estimated": a lower bound on any GPU fabric); else source "none".
    Estimates are never stored in the profile and never labelled measured.
    """
    if world_size <= 1:
        return CollectiveEstimate(0.0, "measured", "one rank: no communication")
    inter = profile.get("interconnect") or {}
    table = inter.get(collective) or {}
    factor = busbw_factor(collective, world_size)
    fit = table.get(str(world_size))
    if fit and fit.get("busbw_GBps"):
        t, detail = _measured(collective, size_bytes, world_size, fit, factor)
        algbw = fit.get("algbw_GBps") or fit["busbw_GBps"] / factor
        return CollectiveEstimate(t, fit.get("source", "measured"), detail, algbw * factor,
                                  str(fit.get("link") or "unknown"), size_bytes)
    others = sorted((int(k) for k, v in table.items()
                     if str(k).isdigit() and int(k) > 1 and (v or {}).get("busbw_GBps")),
                    key=lambda n: (abs(n - world_size), -n))
    if others:
        near = table[str(others[0])]
        algbw = near["busbw_GBps"] * 1e9 / factor
        steps_near = max(1, ring_steps(collective, others[0]))
        steps = ring_steps(collective, world_size)
        alpha = (near.get("alpha_us", 0.0) or 0.0) * 1e-6 * steps / steps_near
        return CollectiveEstimate(
            alpha + size_bytes / algbw, "estimated",
            f"{collective} n={world_size}: estimated from the measured n={others[0]} fit "
            f"(busbw {near['busbw_GBps']:.0f} GB/s, alpha scaled by ring steps){_trust_note(near)}",
            float(near["busbw_GBps"]), str(near.get("link") or "unknown"), size_bytes)
    host = inter.get("host_link_GBps") or {}
    directions = [v for k, v in host.items()
                  if k in ("h2d", "d2h") and isinstance(v, (int, float)) and v]
    if isinstance(host.get("bidir"), (int, float)) and host["bidir"]:
        directions.append(host["bidir"] / 2)  # a ring sends and receives at once
    link = min(directions or [0.0])
    if link:
        # Ring over PCIe through the host: each byte of the bus traffic crosses the link once.
        algbw = link * 1e9 / factor
        lat = host.get("latency_us") or {}
        hop_us = (lat.get("h2d", 0.0) or 0.0) + (lat.get("d2h", 0.0) or 0.0)
        alpha = ring_steps(collective, world_size) * hop_us * 1e-6 if hop_us else 20e-6
        return CollectiveEstimate(alpha + size_bytes / algbw, "estimated",
                                  f"{collective} n={world_size}: estimated from host link "
                                  f"{link:.0f} GB/s (no measured collective)", float(link),
                                  None, size_bytes)
    return CollectiveEstimate(
        float("nan"), "none",
        f"no {collective} measurement for {world_size} ranks and no host link")


def tp_allreduce_time(hidden: int, batch_tokens: int, dtype: str, tp: int,
                      profile: dict[str, Any]) -> CollectiveEstimate:
    """All-reduce time of one transformer layer under Megatron-style tensor parallelism.

    Two all-reduces per layer (after attention's output projection and after the
    MLP's down projection), each of batch_tokens x hidden activations.
    """
    size = batch_tokens * hidden * DTYPE_BYTES.get(dtype, 2)
    one = collective_time("allreduce", size, tp, profile)
    return replace(one, time_s=2 * one.time_s, detail="2 x " + one.detail)
