"""GPU memory and utilisation through NVML (`pynvml`, from nvidia-ml-py) when it is present."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["GpuSample", "gpu_samples"]

log = logging.getLogger(__name__)
_lock = threading.Lock()
_nvml: Any = None  # the pynvml module once initialised; False when NVML is unusable


@dataclass(frozen=True)
class GpuSample:
    """One GPU right now: memory in bytes, utilisation 0..1 (None if NVML does not say)."""

    index: int
    name: str
    memory_used_bytes: int
    memory_total_bytes: int
    utilization: float | None


def _init() -> Any:
    global _nvml
    with _lock:
        if _nvml is None:
            try:
                import pynvml

                pynvml.nvmlInit()
                _nvml = pynvml
            except Exception as exc:  # not installed, no driver, no GPU: no GPU metrics
                log.debug("NVML unavailable: %s", exc)
                _nvml = False
        return _nvml


def _sample(nvml: Any, index: int) -> GpuSample:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        utilization: float | None = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
    except nvml.NVMLError:
        utilization = None
    name = nvml.nvmlDeviceGetName(handle)
    return GpuSample(
        index=index,
        name=name.decode() if isinstance(name, bytes) else str(name),
        memory_used_bytes=int(memory.used),
        memory_total_bytes=int(memory.total),
        utilization=utilization,
    )


def gpu_samples() -> list[GpuSample]:
    """Every GPU NVML sees; empty without NVML (CPU machines, or nvidia-ml-py not installed)."""
    nvml = _init()
    if not nvml:
        return []
    try:
        return [_sample(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]
    except Exception as exc:  # a GPU fell off the bus, a driver reload: report none this time
        log.warning("NVML query failed: %s", exc)
        return []
