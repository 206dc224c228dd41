"""GPU memory and utilisation through NVML (`pynvml`, from nvidia-ml-py) when it is present.

lcfin's one NVML reader: the profiles detect GPUs with it, the vLLM backend measures the memory
an engine holds, and telemetry samples the gauges of /metrics. NVML never initialises CUDA, so
it is safe in the parent process of vLLM's engines.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["GpuSample", "gpu_samples", "nvml_gpus", "nvml_used_bytes"]

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


def nvml_gpus() -> list[GpuSample] | None:
    """Every GPU NVML sees; None without NVML (CPU machines, or nvidia-ml-py not installed)."""
    nvml = _init()
    if not nvml:
        return None
    return [_sample(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]


def gpu_samples() -> list[GpuSample]:
    """Every GPU NVML sees; empty without NVML, or when the query fails this time."""
    try:
        return nvml_gpus() or []
    except Exception as exc:  # a GPU fell off the bus, a driver reload: report none this time
        log.warning("NVML query failed: %s", exc)
        return []


def nvml_used_bytes() -> int | None:
    """Memory in use on this process's visible GPUs (CUDA_VISIBLE_DEVICES); None without NVML."""
    samples = nvml_gpus()
    if samples is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    wanted = {int(i) for i in visible.split(",") if i.strip().isdigit()}
    return sum(s.memory_used_bytes for s in samples if not wanted or s.index in wanted)
