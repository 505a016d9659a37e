"""Test set-up: Triton kernels run under the interpreter on CPU tensors when no GPU is present.

TRITON_INTERPRET must be set before any module defining @triton.jit functions is
imported, so it is set here, at conftest import, before test modules load.
"""

import os

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

KERNEL_DEVICE = "cuda" if HAS_GPU else "cpu"


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA/ROCm GPU; none is visible to torch")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def kernel_device() -> str:
    """Where kernel tests run: the GPU when present, else CPU tensors under the interpreter."""
    return KERNEL_DEVICE
