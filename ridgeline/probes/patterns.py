"""Periodic fill patterns and chunked checks for the copy and collective probes.

A buffer is filled with a short *tile* repeated end to end (element i holds
tile[i % m]); after a copy or a collective the result is compared, chunk by
chunk, against the tile it must hold. Tiles avoid building an index tensor as
large as the buffer (a 1 GiB bf16 buffer would need a 4 GiB int64 arange) and
the chunks bound the temporary memory of the check.

Collective tiles are small integers, so sums over ranks are exact in bf16 as
long as world_size * (m - 1) <= 256 (fp32: 2**24): the closed-form expectation
is then compared with zero tolerance.

    fill_periodic(buf, tile); ...; max_periodic_error(buf, tile) == 0.0
"""

from __future__ import annotations

from typing import Any

# Largest integer every smaller integer of which a dtype represents exactly.
EXACT_INT_LIMIT = {"bf16": 256, "fp16": 2048, "fp32": 2**24, "uint8": 255}
CHECK_CHUNK_ELEMS = 1 << 24  # 16 Mi elements per compare: <= 64 MiB of fp32 temporaries


def fill_periodic(buf: Any, tile: Any) -> None:
    """buf[i] = tile[i % len(tile)] for a 1-D contiguous tensor (no buffer-sized temporaries)."""
    n, m = buf.numel(), tile.numel()
    q = n // m
    if q:
        buf[: q * m].view(q, m).copy_(tile.expand(q, m))
    if n - q * m:
        buf[q * m:].copy_(tile[: n - q * m])


def max_periodic_error(buf: Any, tile: Any, chunk_elems: int = CHECK_CHUNK_ELEMS) -> float:
    """max |buf[i] - tile[i % m]| over the whole buffer, computed in chunks."""
    n, m = buf.numel(), tile.numel()
    q = n // m
    ref = tile.float()
    worst = 0.0
    rows = max(1, chunk_elems // m)
    body = buf[: q * m].view(q, m) if q else None
    for a in range(0, q, rows):
        err = (body[a:a + rows].float() - ref).abs().max()
        worst = max(worst, float(err))
    if n - q * m:
        err = (buf[q * m:].float() - ref[: n - q * m]).abs().max()
        worst = max(worst, float(err))
    return worst


def collective_modulus(dtype: str, world_size: int, cap: int = 16) -> int:
    """Tile length m (values 0..m-1) keeping sums over `world_size` ranks exact in `dtype`."""
    limit = EXACT_INT_LIMIT[dtype]
    return max(2, min(cap, limit // max(1, world_size) + 1))


def rank_tile_values(rank: int, m: int) -> list[int]:
    """What rank `rank` contributes: element i holds (rank + i) % m."""
    return [(rank + j) % m for j in range(m)]


def sum_tile_values(world_size: int, m: int, phase: int = 0) -> list[int]:
    """Closed-form sum over ranks of rank_tile_values, starting at element `phase`.

    Element i of the sum is sum_r (r + i) % m; `phase` shifts i (a reduce-scatter
    output slice starts at rank * count of the summed buffer).
    """
    return [sum((r + j + phase) % m for r in range(world_size)) for j in range(m)]


def sum_is_exact(dtype: str, world_size: int, m: int) -> bool:
    return world_size * (m - 1) <= EXACT_INT_LIMIT[dtype]
