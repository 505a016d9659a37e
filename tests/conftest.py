"""Test set-up: Triton kernels run under the interpreter on CPU tensors when no GPU is present.

TRITON_INTERPRET must be set before any module defining @triton.jit functions is
imported, so it is set here, at conftest import, before test modules load.
"""

import os

import pytest

try:  # the planner's tests run without torch (`pip install ridgeline` has none)
    import torch
except ImportError:
    torch = None

HAS_TORCH = torch is not None
HAS_GPU = HAS_TORCH and torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

KERNEL_DEVICE = "cuda" if HAS_GPU else "cpu"

# The planner side (plan, report, compare, simulate, the API): these modules must pass
# without torch, and CI runs them in an environment without it. Without torch, only
# they are collected; every other module measures and needs it.
PLANNER_TESTS = frozenset({
    "test_api", "test_benchmarks_published", "test_commands_calibrate", "test_commands_fleet",
    "test_commands_plan", "test_commands_simulate", "test_docs",
    "test_docs_interconnect", "test_dtypes", "test_published_efficiency", "test_reports",
    "test_reports_curve", "test_reports_fleet",
    "test_roofline_efficiency", "test_roofline_interconnect", "test_roofline_interconnect_fit",
    "test_roofline_model",
    "test_roofline_model_fit", "test_roofline_profile", "test_roofline_sections",
    "test_sizing_calibrate", "test_sizing_engine",
    "test_sizing_fleet", "test_sizing_hardware", "test_sizing_latency", "test_sizing_memory",
    "test_sizing_models", "test_sizing_options", "test_sizing_plan", "test_sizing_precision",
    "test_sizing_simulation",
    "test_sizing_simulation_measured", "test_sizing_static_batch", "test_telemetry",
    "test_validation_predict",
})


def pytest_ignore_collect(collection_path, config):
    if HAS_TORCH or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    return collection_path.stem not in PLANNER_TESTS


def pytest_report_header(config):
    if not HAS_TORCH:
        return (f"torch is not installed: running the {len(PLANNER_TESTS)} planner test modules "
                "only (measuring needs `pip install ridgeline[measure]`)")


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


@pytest.fixture
def scaled_mm_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every torch._scaled_mm call; the real op still runs."""
    if not HAS_TORCH or not hasattr(torch, "_scaled_mm"):
        pytest.skip("this torch has no torch._scaled_mm")
    calls: list[dict] = []
    real = torch._scaled_mm

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)
    monkeypatch.setattr(torch, "_scaled_mm", spy)
    return calls
