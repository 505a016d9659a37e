"""The smallest useful Triton kernel: one program writes one element.

    out[0] = value

Used by the launch probe (ridgeline.probes.launch) to measure the per-kernel
latency floor: no memory traffic to speak of (4 bytes written), so its time is
launch + scheduling + teardown. Runs under TRITON_INTERPRET=1 on CPU tensors.

    from ridgeline.kernels.launch import write_one
    write_one(out, 1.0)     # out: 1+ element fp32 tensor on the GPU
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _write_one_kernel(out_ptr, value):
    tl.store(out_ptr, value)


def write_one(out: torch.Tensor, value: float) -> None:
    """Launch one program that stores `value` into out[0] (fp32)."""
    if out.dtype != torch.float32 or out.numel() < 1:
        raise ValueError("write_one: out must be a non-empty fp32 tensor")
    _write_one_kernel[(1,)](out, value, num_warps=1)
