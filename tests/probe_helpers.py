"""What the probe and kernel tests share: a described GPU, a sweep runner, a timer that
calls the timed function, and the Triton kernels' CUDA-graph replay check and
ahead-of-time build.

    ctx = ProbeContext(device=gpu_info(cc="8.0", fp8=False), timer=CallingTimer(4))
    records, waived = run_all(probe, ctx)
    assert_input_error(GemvInputError, "x must be (B, K)", gemv, x[0], w)
    assert_graph_replays_eager(lambda: gemv(x, w))        # @pytest.mark.gpu tests only
    built = build_ahead_of_time(SCRIPT)                  # its JSON; no GPU needed
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from ridgeline.device import DeviceInfo
from ridgeline.errors import RidgelineError, Waived
from ridgeline.timing import FakeTimer, Timing


def gpu_info(cc: str = "9.0", kind: str = "cuda", gfx: str | None = None,
             l2: int | None = 50 * 2**20, fp8: bool = True, bf16: bool = True) -> DeviceInfo:
    """An H100-like GPU as ridgeline.device describes one (nothing is probed): fp8 e4m3 on
    CUDA, fp8 e4m3fnuz on ROCm (MI300), both when `fp8`."""
    dtypes = {"fp32": True, "bf16": bf16, "fp16": True, "fp8_e4m3": fp8 and kind == "cuda"}
    if kind == "rocm":
        dtypes["fp8_e4m3fnuz"] = fp8
    return DeviceInfo(id="cuda:0", kind=kind, name="test gpu", memory_bytes=80 * 2**30,
                      multiprocessors=132, l2_cache_bytes=l2, compute_capability=cc,
                      gfx_arch=gfx, dtypes=dtypes)


def run_all(probe, ctx) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Every planned case, as the runner runs them: (records, [(params, waiver reason)])."""
    records, waived = [], []
    for case in probe.cases(ctx):
        try:
            records += probe.run(case, ctx)
        except Waived as w:
            waived.append((case.params, w.reason))
    return records, waived


class CallingTimer(FakeTimer):
    """Calls fn `calls` times in all, as warm-up and samples would (default: one sample's
    `launches_per_sample` back-to-back calls, as a graph replays them), then returns the
    FakeTimer's roofline samples."""

    def __init__(self, calls: int | None = None):
        super().__init__()
        self.calls = calls

    def time(self, fn, *, launches_per_sample=1, **kwargs) -> Timing:
        for _ in range((self.calls or launches_per_sample) - 1):
            fn()
        return super().time(fn, launches_per_sample=launches_per_sample, **kwargs)   # 1 call


def assert_input_error(error: type[Exception], message: str, fn: Callable, *args: Any,
                       **kwargs: Any) -> None:
    """fn(*args) raises `error` with `message` in it, and the error is both a RidgelineError
    (the CLI prints it as one line) and a ValueError (what Python callers catch)."""
    with pytest.raises(error, match=re.escape(message)) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, RidgelineError) and isinstance(info.value, ValueError)


def assert_graph_replays_eager(run: Callable[[], Any]) -> None:
    """run() eagerly (tuning happens outside the capture), once on a side stream (capture
    needs a warmed-up one), then captured in a CUDA graph and replayed: the same output."""
    import torch

    from ridgeline.timing import capture_graph

    eager = run()
    graph, out = capture_graph(run)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)


def build_ahead_of_time(script: str) -> Any:
    """Run `script` (it compiles kernels for a GPU target with Triton's bundled ptxas and
    prints JSON) in a fresh interpreter without TRITON_INTERPRET; its output, parsed.
    Skips where this triton has no ahead-of-time API or this machine no CUDA toolchain."""
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError:
        pytest.skip("this triton has no ahead-of-time compile API")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0 and any(s in proc.stderr for s in ("ptxas", "NVIDIA", "backend")):
        pytest.skip(f"no CUDA toolchain for an ahead-of-time build: {proc.stderr[-200:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)
