"""The work of the stream kernels, counted as BabelStream counts it (no torch, no triton).

    copy:   b[i] = a[i]              read N e,   write N e
    read:   s = sum_i a[i]           read N e    (+ whatever partial sums a kernel writes)
    write:  a[i] = v                              write N e
    triad:  a[i] = b[i] + s * c[i]   read 2 N e, write N e

N elements of e bytes. The one home of these counts: the Triton kernels
(ridgeline.kernels.stream) and the hbm probe's torch/numpy providers use them.
"""

from __future__ import annotations

KERNELS = ("copy", "read", "write", "triad")
ARRAYS_PER_KERNEL = {"copy": 2, "read": 1, "write": 1, "triad": 3}
# (arrays read, arrays written) per kernel
_STREAMS = {"copy": (1, 1), "read": (1, 0), "write": (0, 1), "triad": (2, 1)}


def stream_bytes(kernel: str, n_elements: int, element_bytes: int) -> tuple[int, int]:
    """(bytes_read, bytes_written) of one call, BabelStream's counts."""
    if kernel not in _STREAMS:
        raise ValueError(f"unknown stream kernel {kernel!r}; known: {', '.join(KERNELS)}")
    reads, writes = _STREAMS[kernel]
    size = n_elements * element_bytes
    return reads * size, writes * size


def working_set_bytes(kernel: str, n_elements: int, element_bytes: int) -> int:
    """Bytes of all arrays the kernel touches (what must exceed the cache)."""
    return ARRAYS_PER_KERNEL[kernel] * n_elements * element_bytes
