"""Telemetry: clocks, power, temperature and throttle reasons around each probe.

NVIDIA through NVML (`pynvml`, from nvidia-ml-py); AMD through `amdsmi` when it
is installed; otherwise nothing (the CPU, or a GPU without a management
library), which is recorded as such rather than guessed.

`Sampler` runs a background thread that polls at ~10 Hz while a probe runs;
`summary()` gives min/max clocks, max power and temperature, and the union of
throttle reasons seen, which go into every record of that probe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

# NVML clock-event (throttle) reason bits; names follow nvml.h.
_THROTTLE_BITS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that mean the card ran below what it could have (idle is not one).
THROTTLING_REASONS = {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown",
                      "hw_thermal_slowdown", "hw_power_brake_slowdown"}


def decode_throttle_reasons(mask: int) -> list[str]:
    return [name for bit, name in _THROTTLE_BITS.items() if mask & bit]


def throttle_reasons(records: Iterable[dict[str, Any]]) -> list[str]:
    """Sorted union of the throttle reasons of the records that throttled; a record carries
    them comma-joined in "throttle_reasons", as `summarize` writes them."""
    return sorted({x for r in records if r.get("throttled")
                   for x in str(r.get("throttle_reasons") or "").split(",") if x})


def _nvml():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # no library, no driver, or not NVIDIA
        return None


def _nvml_handle(nvml, pci_bus_id: str | None, index: int):
    # torch and NVML can order GPUs differently (CUDA_VISIBLE_DEVICES); match by PCI id.
    if pci_bus_id:
        try:
            return nvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id.encode())
        except Exception:
            try:
                return nvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id)
            except Exception:
                pass
    return nvml.nvmlDeviceGetHandleByIndex(index)


def _try(fn, *args, default=None):
    try:
        return fn(*args)
    except Exception:
        return default


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def static_info(info) -> dict[str, Any]:
    """Driver, max clocks, power limit, PCIe link, NVLink links up (NVML or amdsmi)."""
    if info.kind == "cuda":
        nvml = _nvml()
        if nvml is None:
            return {"source": "none", "note": "NVML not available: clocks and power not recorded"}
        h = _nvml_handle(nvml, info.pci_bus_id, info.index)
        out: dict[str, Any] = {"source": "nvml"}
        out["driver_version"] = _text(_try(nvml.nvmlSystemGetDriverVersion))
        out["sm_clock_max_MHz"] = _try(nvml.nvmlDeviceGetMaxClockInfo, h, nvml.NVML_CLOCK_SM)
        out["mem_clock_max_MHz"] = _try(nvml.nvmlDeviceGetMaxClockInfo, h, nvml.NVML_CLOCK_MEM)
        limit_mw = _try(nvml.nvmlDeviceGetEnforcedPowerLimit, h)
        out["power_limit_W"] = limit_mw / 1000 if limit_mw else None
        out["pcie_gen_current"] = _try(nvml.nvmlDeviceGetCurrPcieLinkGeneration, h)
        out["pcie_gen_max"] = _try(nvml.nvmlDeviceGetMaxPcieLinkGeneration, h)
        out["pcie_width_current"] = _try(nvml.nvmlDeviceGetCurrPcieLinkWidth, h)
        out["pcie_width_max"] = _try(nvml.nvmlDeviceGetMaxPcieLinkWidth, h)
        links_up = 0
        for link in range(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18)):
            state = _try(nvml.nvmlDeviceGetNvLinkState, h, link)
            if state is None:
                break
            links_up += int(state == 1)
        out["nvlink_links_up"] = links_up
        out.update(snapshot_nvml(nvml, h))
        return out
    if info.kind == "rocm":
        return _amdsmi_static(info.index)
    return {"source": "none"}


def snapshot_nvml(nvml, h) -> dict[str, Any]:
    snap: dict[str, Any] = {
        "sm_clock_MHz": _try(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM),
        "mem_clock_MHz": _try(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_MEM),
        "temperature_C": _try(nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU),
    }
    power_mw = _try(nvml.nvmlDeviceGetPowerUsage, h)
    snap["power_W"] = power_mw / 1000 if power_mw is not None else None
    getter = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
    mask = _try(getter, h) if getter else None
    snap["throttle_reasons"] = decode_throttle_reasons(mask) if mask is not None else None
    return snap


def _amdsmi_static(index: int) -> dict[str, Any]:
    try:
        import amdsmi

        amdsmi.amdsmi_init()
        h = amdsmi.amdsmi_get_processor_handles()[index]
        out: dict[str, Any] = {"source": "amdsmi"}
        drv = _try(amdsmi.amdsmi_get_gpu_driver_info, h) or {}
        out["driver_version"] = drv.get("driver_version")
        power = _try(amdsmi.amdsmi_get_power_cap_info, h) or {}
        cap = power.get("power_cap")
        out["power_limit_W"] = cap / 1e6 if cap else None
        pcie = _try(amdsmi.amdsmi_get_pcie_info, h) or {}
        static = pcie.get("pcie_static", {})
        metric = pcie.get("pcie_metric", {})
        out["pcie_gen_max"] = static.get("max_pcie_speed")
        out["pcie_width_max"] = static.get("max_pcie_width")
        out["pcie_width_current"] = metric.get("pcie_width")
        return out
    except Exception:
        return {"source": "torch", "note": "amdsmi not installed: clocks and power not recorded"}


class Sampler:
    """Background poller of one device's telemetry; a no-op where none is readable."""

    def __init__(self, info, interval_s: float = 0.1):
        self.info = info
        self.interval_s = interval_s
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml = None
        self._handle = None

    def __enter__(self) -> "Sampler":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self.info.kind != "cuda":
            return
        self._nvml = _nvml()
        if self._nvml is None:
            return
        self._handle = _nvml_handle(self._nvml, self.info.pci_bus_id, self.info.index)
        self.samples.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            snap = snapshot_nvml(self._nvml, self._handle)
            snap["t_s"] = time.monotonic()
            self.samples.append(snap)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=2)
            self._thread = None

    def mark(self) -> int:
        """Index of the next sample: pass it to `summary(since=...)` for one case's window."""
        return len(self.samples)

    def summary(self, since: int = 0) -> dict[str, Any]:
        return summarize(self.samples[since:])


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Reduce telemetry samples to what a record carries."""
    if not samples:
        return {"telemetry_samples": 0}

    def values(key):
        return [s[key] for s in samples if s.get(key) is not None]

    reasons: set[str] = set()
    for s in samples:
        reasons.update(s.get("throttle_reasons") or [])
    sm = values("sm_clock_MHz")
    out = {
        "telemetry_samples": len(samples),
        "sm_clock_MHz_min": min(sm) if sm else None,
        "sm_clock_MHz_max": max(sm) if sm else None,
        "mem_clock_MHz_min": min(values("mem_clock_MHz"), default=None),
        "power_W_max": max(values("power_W"), default=None),
        "temperature_C_max": max(values("temperature_C"), default=None),
        "throttle_reasons": ",".join(sorted(reasons)),
    }
    out["throttled"] = bool(reasons & THROTTLING_REASONS)
    return out
