"""Triton stream kernels (after BabelStream): copy, read, write, triad, with torch references.

    copy:   b[i] = a[i]              bytes = 2 N e   (1 read + 1 write)
    read:   s = sum_i a[i]           bytes = N e     (1 read; per-block partial sums,
                                                       P x 4 bytes written, P = N / BLOCK)
    write:  a[i] = v                 bytes = N e     (1 write)
    triad:  a[i] = b[i] + s * c[i]   bytes = 3 N e   (2 reads + 1 write)

N elements of e bytes. Each program handles one BLOCK of contiguous elements
(BLOCK = 4096 fp32 = 16 KiB with 8 warps: 16 elements per thread, i.e. four
128-bit loads; torch allocations are 16-byte aligned so the loads vectorize).
A one-block-per-program grid keeps many independent loads in flight, which is
what saturates HBM; the tail block is masked.

Run on a GPU:  from ridgeline.kernels import stream; stream.copy(a, b)
Run on the CPU (correctness only):  TRITON_INTERPRET=1 python -m pytest tests/test_kernels_stream.py
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ridgeline.kernels.stream_counts import stream_bytes, working_set_bytes  # noqa: F401 (re-export)

BLOCK = 4096
NUM_WARPS = 8


def bytes_moved(kernel: str, n_elements: int, element_bytes: int) -> tuple[int, int]:
    """(bytes_read, bytes_written) of one call: BabelStream's counts, plus the read kernel's
    per-block partial sums (P x 4 bytes written)."""
    bytes_read, bytes_written = stream_bytes(kernel, n_elements, element_bytes)
    if kernel == "read":
        bytes_written += 4 * triton.cdiv(n_elements, BLOCK)
    return bytes_read, bytes_written


@triton.jit
def _copy_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask), mask=mask)


@triton.jit
def _read_kernel(src_ptr, partial_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(src_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
    tl.store(partial_ptr + pid, tl.sum(x, axis=0))  # keeps the loads live


@triton.jit
def _write_kernel(dst_ptr, value, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    v = tl.full([BLOCK], value, dtype=dst_ptr.dtype.element_ty)
    tl.store(dst_ptr + offs, v, mask=offs < n)


@triton.jit
def _triad_kernel(a_ptr, b_ptr, c_ptr, scalar, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    b = tl.load(b_ptr + offs, mask=mask)
    c = tl.load(c_ptr + offs, mask=mask)
    tl.store(a_ptr + offs, (b + scalar * c).to(a_ptr.dtype.element_ty), mask=mask)


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, BLOCK),)


def _check(*tensors: torch.Tensor) -> int:
    n = tensors[0].numel()
    for t in tensors:
        if not t.is_contiguous() or t.numel() != n:
            raise ValueError("stream kernels need contiguous tensors of equal size")
    return n


def copy(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    n = _check(src, dst)
    _copy_kernel[_grid(n)](src, dst, n, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return dst


def read_partials(src: torch.Tensor, partials: torch.Tensor | None = None) -> torch.Tensor:
    """Per-block fp32 partial sums of `src` (sum them for the total)."""
    n = _check(src)
    blocks = triton.cdiv(n, BLOCK)
    if partials is None:
        partials = torch.empty(blocks, dtype=torch.float32, device=src.device)
    _read_kernel[(blocks,)](src, partials, n, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return partials


def write(dst: torch.Tensor, value: float) -> torch.Tensor:
    n = _check(dst)
    _write_kernel[_grid(n)](dst, value, n, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return dst


def triad(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, scalar: float) -> torch.Tensor:
    n = _check(a, b, c)
    _triad_kernel[_grid(n)](a, b, c, scalar, n, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return a


# torch references (also the vendor-baseline provider of the hbm probe)
def copy_ref(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    return dst.copy_(src)


def read_ref(src: torch.Tensor) -> torch.Tensor:
    return src.sum(dtype=torch.float32)


def write_ref(dst: torch.Tensor, value: float) -> torch.Tensor:
    return dst.fill_(value)


def triad_ref(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, scalar: float) -> torch.Tensor:
    return torch.add(b, c, alpha=scalar, out=a)
