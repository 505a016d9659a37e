"""The probe interface: what every measurement module provides.

A probe says whether it can run on a device (`available` returns a reason when
it cannot), lists its cases (`cases`), may extend them from what it measured (`more_cases`:
a sweep that goes on until its rate is flat), and runs one case (`run`), which builds
inputs, checks the output against a reference, times the work through
`ctx.timer` (probes never touch events or clocks) and returns tidy records
(ridgeline.records). Work counts are pure module-level functions so they can be
tested to the byte.

Adding a probe = one new module defining a `Probe` subclass + one line in
ridgeline.probes.REGISTRY.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

from ridgeline.device import DeviceInfo
from ridgeline.timing import Timer


@dataclass
class Case:
    """One point of a probe's sweep; `params` are the shape/kernel/dtype of it."""

    params: dict[str, Any]

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params.items())

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)


@dataclass
class ProbeContext:
    """What a probe run gets: the device, its timer, the sweep mode, telemetry."""

    device: DeviceInfo
    timer: Timer
    quick: bool = False
    telemetry: Callable[[], dict[str, Any]] = field(default=lambda: {})
    options: dict[str, Any] = field(default_factory=dict)  # per-probe overrides (tests, CLI)

    @property
    def torch_device(self):
        from ridgeline.device import torch_device

        return torch_device(self.device)

    def free_memory_bytes(self) -> int:
        """Memory a probe may allocate now (see ridgeline.device.free_memory_bytes)."""
        from ridgeline.device import free_memory_bytes

        return free_memory_bytes(self.device)


def probe_options(ctx: ProbeContext, name: str) -> dict[str, Any]:
    """The overrides of probe `name`: ctx.options[name] when that is a dict, else ctx.options
    (a test or the API may give one probe's options flat)."""
    opts = ctx.options or {}
    nested = opts.get(name)
    return nested if isinstance(nested, dict) else opts


class Probe(ABC):
    name: str = ""
    description: str = ""

    def available(self, ctx: ProbeContext) -> str | None:
        """None when the probe can run here, else the reason it is waived."""
        return None

    def options(self, ctx: ProbeContext) -> dict[str, Any]:
        """This probe's overrides (see probe_options)."""
        return probe_options(ctx, self.name)

    @abstractmethod
    def cases(self, ctx: ProbeContext) -> list[Case]:
        ...

    @abstractmethod
    def run(self, case: Case, ctx: ProbeContext) -> list[dict[str, Any]]:
        ...

    def more_cases(self, records: list[dict[str, Any]], ctx: ProbeContext) -> list[Case]:
        """Cases to add after the planned ones ran (an adaptive sweep); [] when done.

        `records` are this probe's records so far. The runner calls it again after
        each batch it returns, so a sweep can grow until its plateau is verified.
        """
        return []
