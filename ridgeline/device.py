"""Devices: detect CUDA / ROCm GPUs and the CPU, with identity and capabilities.

Nothing here runs at import time; `list_devices()` and `get_device()` probe on
request. The CPU is a real device (host clock timing, torch/numpy kernels), so
every pipeline also runs where there is no GPU.

    ridgeline devices [--json]
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ridgeline.errors import DeviceError


@dataclass
class DeviceInfo:
    """Identity and capabilities of one device, as plain data (goes into profiles)."""

    id: str                          # "cuda:0", "cpu"
    kind: str                        # "cuda" | "rocm" | "cpu"
    name: str
    memory_bytes: int
    multiprocessors: int | None      # SMs (NVIDIA), CUs (AMD), cores (CPU)
    l2_cache_bytes: int | None       # last-level cache the working sets must exceed
    compute_capability: str | None = None   # "9.0"
    gfx_arch: str | None = None             # "gfx942"
    dtypes: dict[str, bool] = field(default_factory=dict)
    driver_version: str | None = None
    runtime_version: str | None = None      # CUDA or HIP version torch was built with
    pci_bus_id: str | None = None
    telemetry: dict[str, Any] = field(default_factory=dict)  # NVML/amdsmi static view
    notes: list[str] = field(default_factory=list)

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("cuda", "rocm")

    @property
    def index(self) -> int:
        return int(self.id.split(":")[1]) if ":" in self.id else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def supports(self, dtype: str) -> bool:
        return bool(self.dtypes.get(dtype, False))


def _cpu_cache_bytes() -> int | None:
    """Largest CPU cache (the LLC) from sysfs; None when it cannot be read."""
    best = None
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            try:
                with open(os.path.join(base, entry, "size")) as fh:
                    text = fh.read().strip()
            except OSError:
                continue
            m = re.fullmatch(r"(\d+)([KMG]?)", text)
            if not m:
                continue
            size = int(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[m.group(2)]
            best = max(best or 0, size)
    except OSError:
        return None
    return best


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def host_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux): host memory a new allocation can use; else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def free_memory_bytes(device: DeviceInfo) -> int:
    """Memory a new allocation can use now. CPU: MemAvailable (half the RAM when unknown);
    GPU: the driver's free memory plus the blocks torch's allocator holds unused."""
    if device.kind == "cpu":
        return host_available_bytes() or int(device.memory_bytes // 2)
    import torch

    free, _total = torch.cuda.mem_get_info(device.index)
    cached = torch.cuda.memory_reserved(device.index) - torch.cuda.memory_allocated(device.index)
    return int(free + max(cached, 0))


def _cpu_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def cpu_device() -> DeviceInfo:
    import torch

    return DeviceInfo(
        id="cpu",
        kind="cpu",
        name=_cpu_name(),
        memory_bytes=_cpu_memory_bytes(),
        multiprocessors=torch.get_num_threads(),
        l2_cache_bytes=_cpu_cache_bytes(),
        dtypes={"fp32": True, "tf32": False, "fp16": True, "bf16": True,
                "fp8_e4m3": False, "fp8_e5m2": False},
        runtime_version=None,
        notes=["host clock timing; torch and numpy kernels"],
    )


def _gpu_dtypes(kind: str, cc: tuple[int, int] | None, gfx: str | None) -> dict[str, bool]:
    """Which dtypes the tensor cores take on this GPU (what the matmul probe may try)."""
    if kind == "cuda":
        major, minor = cc or (0, 0)
        fp8 = (major, minor) >= (8, 9)
        return {"fp32": True, "tf32": major >= 8, "fp16": major >= 7, "bf16": major >= 8,
                "fp8_e4m3": fp8, "fp8_e5m2": fp8}
    # ROCm: MI300 (gfx94x) has fnuz fp8; gfx950 (MI350) has OCP fp8.
    arch = gfx or ""
    fnuz = arch.startswith("gfx94")
    ocp = arch.startswith("gfx95") or arch.startswith("gfx12")
    return {"fp32": True, "tf32": arch.startswith("gfx94"), "fp16": True, "bf16": True,
            "fp8_e4m3": ocp, "fp8_e5m2": ocp, "fp8_e4m3fnuz": fnuz, "fp8_e5m2fnuz": fnuz}


def gpu_device(index: int) -> DeviceInfo:
    import torch

    props = torch.cuda.get_device_properties(index)
    is_rocm = getattr(torch.version, "hip", None) is not None
    kind = "rocm" if is_rocm else "cuda"
    gfx = getattr(props, "gcnArchName", None) if is_rocm else None
    if gfx:
        gfx = gfx.split(":")[0]
    cc = (props.major, props.minor)
    l2 = getattr(props, "L2_cache_size", None) or None
    info = DeviceInfo(
        id=f"cuda:{index}",
        kind=kind,
        name=props.name,
        memory_bytes=int(props.total_memory),
        multiprocessors=int(props.multi_processor_count),
        l2_cache_bytes=int(l2) if l2 else None,
        compute_capability=None if is_rocm else f"{cc[0]}.{cc[1]}",
        gfx_arch=gfx,
        dtypes=_gpu_dtypes(kind, cc, gfx),
        runtime_version=torch.version.hip if is_rocm else torch.version.cuda,
    )
    pci = getattr(props, "pci_bus_id", None)
    if pci is not None:
        info.pci_bus_id = f"{getattr(props, 'pci_domain_id', 0):04x}:{pci:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"
    from ridgeline import telemetry

    static = telemetry.static_info(info)
    info.telemetry = static
    info.driver_version = static.get("driver_version")
    if info.l2_cache_bytes is None:
        info.notes.append("L2 size unknown: working sets sized from a 256 MiB default")
    return info


def gpu_count() -> int:
    """GPUs torch can see (CUDA or ROCm); 0 when none, or when the driver is unusable."""
    import torch

    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except RuntimeError:  # a broken driver shows up here
        return 0


def list_devices() -> list[DeviceInfo]:
    """Every GPU torch can see, then the CPU."""
    try:
        count = gpu_count()
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        raise DeviceError(f"torch is not importable: {exc}") from exc
    devices: list[DeviceInfo] = []
    for i in range(count):
        devices.append(gpu_device(i))
    devices.append(cpu_device())
    return devices


def get_device(spec: str | None = None) -> DeviceInfo:
    """Resolve `cuda:N`, `rocm:N`, `cpu`, or None (first GPU, else the CPU)."""
    import torch

    if spec is None:
        return gpu_device(0) if gpu_count() > 0 else cpu_device()
    spec = spec.strip().lower()
    if spec == "cpu":
        return cpu_device()
    m = re.fullmatch(r"(cuda|rocm|hip|gpu)(?::(\d+))?", spec)
    if not m:
        raise DeviceError(f"unknown device {spec!r}: use cpu, cuda:N (NVIDIA or AMD) or rocm:N")
    index = int(m.group(2) or 0)
    try:
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    except RuntimeError as exc:
        raise DeviceError(f"the GPU driver is unusable: {exc}") from exc
    if count == 0:
        raise DeviceError(f"no GPU is visible to torch ({spec} requested); try --device cpu")
    if index >= count:
        raise DeviceError(f"{spec} requested but only {count} GPU(s) are visible")
    return gpu_device(index)


def torch_device(info: DeviceInfo):
    import torch

    return torch.device("cpu") if info.kind == "cpu" else torch.device(f"cuda:{info.index}")
