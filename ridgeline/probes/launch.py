"""Launch probe: the per-kernel latency floor of this device.

Every kernel costs a fixed time however little it does; decode at small batch
is a long chain of small kernels, so this floor sets its time as much as
bandwidth does. Kernels that do (almost) nothing, timed per launch:

    kernel            provider  mode   what a sample times
    empty_graph       triton    graph  100 back-to-back launches of a one-element
                                       write, replayed as one CUDA graph (the floor
                                       inside a graph: scheduling + teardown)
    empty_eager       triton    eager  one launch from Python per sample: adds the
                                       Triton launcher's host cost
    torch_tiny_graph  torch     graph  x.add_(1) on a 1-element tensor, 100 per graph
    torch_tiny_eager  torch     eager  the same, one eager op per sample (torch
                                       dispatcher + launch)

    time_ms_median = time per launch (each sample divided by launches_per_sample)

On the CPU device only torch_tiny_eager runs (host clock, the op's dispatch
cost); the Triton kernels are waived there, a result with its reason.

Options (ctx.options, or ctx.options["launch"]): graph_launches (default 100),
warmup_ms, rep_ms, min_reps, kernels (a subset of the names above).

Run: `ridgeline profile --probes launch`; tests: tests/test_probes_launch.py.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ridgeline.errors import Waived
from ridgeline.probes.base import Case, Probe, ProbeContext
from ridgeline.records import make_record
from ridgeline.timing import Work

GRAPH_LAUNCHES = 100
TRITON_ON_CPU = "Triton kernels need a GPU; the interpreter is for correctness tests only"

# name -> (provider, mode)
KERNELS: dict[str, tuple[str, str]] = {
    "empty_graph": ("triton", "graph"),
    "empty_eager": ("triton", "eager"),
    "torch_tiny_graph": ("torch", "graph"),
    "torch_tiny_eager": ("torch", "eager"),
}
ELEMENT_BYTES = 4  # the one fp32 element each kernel writes


def _options(ctx: ProbeContext) -> dict[str, Any]:
    opts = ctx.options or {}
    nested = opts.get("launch")
    return nested if isinstance(nested, dict) else opts


class LaunchProbe(Probe):
    name = "launch"
    description = "per-kernel latency floor: near-empty kernels, in a CUDA graph and eager"

    def available(self, ctx: ProbeContext) -> str | None:
        if importlib.util.find_spec("torch") is None:
            return "torch is not installed"
        return None

    def waiver(self, params: dict[str, Any], ctx: ProbeContext) -> str | None:
        provider, mode = KERNELS[params["kernel"]]
        if provider == "triton":
            if ctx.device.kind == "cpu":
                return TRITON_ON_CPU
            if importlib.util.find_spec("triton") is None:
                return "triton is not installed"
        if mode == "graph" and ctx.device.kind == "cpu":
            return "CUDA graphs need a GPU"
        return None

    def cases(self, ctx: ProbeContext) -> list[Case]:
        names = list(_options(ctx).get("kernels", KERNELS))
        if ctx.device.kind == "cpu":  # no torch graph row on the CPU: it would only repeat a waiver
            names = [k for k in names if KERNELS[k] != ("torch", "graph")]
        return [Case({"kernel": k, "provider": KERNELS[k][0], "dtype": "fp32",
                      "mode": KERNELS[k][1]}) for k in names]

    def run(self, case: Case, ctx: ProbeContext) -> list[dict[str, Any]]:
        reason = self.waiver(case.params, ctx)
        if reason:
            raise Waived(reason)
        import torch

        opts = _options(ctx)
        kernel = case["kernel"]
        provider, mode = KERNELS[kernel]
        out = torch.zeros(1, dtype=torch.float32, device=ctx.torch_device)
        if provider == "triton":
            from ridgeline.kernels.launch import write_one

            def fn():
                write_one(out, 1.0)
            expected = 1.0
        else:
            def fn():
                out.add_(1.0)
            expected = 1.0

        fn()  # validate: the one element was written (also compiles the Triton kernel)
        ctx.timer.synchronize()
        validated = float(out.item()) == expected

        launches = int(opts.get("graph_launches", GRAPH_LAUNCHES)) if mode == "graph" else 1
        budget = {key: opts[key] for key in ("warmup_ms", "rep_ms", "min_reps") if key in opts}
        read = ELEMENT_BYTES if provider == "torch" else 0  # add_ reads its element; a store not
        timing = ctx.timer.time(fn, work=Work(bytes=read + ELEMENT_BYTES), flush_cache=False,
                                launches_per_sample=launches, **budget)
        rec = make_record(
            probe="launch", provider=provider, kernel=kernel, dtype="fp32", timing=timing,
            validated=validated, bytes_read=read, bytes_written=ELEMENT_BYTES,
            telemetry=ctx.telemetry(),
            size_bytes=ELEMENT_BYTES,
        )
        rec.update({"mode": mode, "time_us_median": rec["time_ms_median"] * 1e3})
        return [rec]
