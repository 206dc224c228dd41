"""The one NVML reader: GPU detection (profiles), engine memory (vLLM) and gauges (telemetry).

NVML is a true external edge (no GPU here): a fake pynvml stands in for it, as in test_metrics.
"""

from __future__ import annotations

from typing import Any

import pytest

from lcfin.engine import profiles
from lcfin.engine.profiles import GpuInfo
from lcfin.telemetry import gpu


class TwoGpus:
    """pynvml's surface that lcfin uses: two 48 GiB GPUs, 10 and 20 GiB in use."""

    class NVMLError(Exception):
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return type("Mem", (), {"used": (h + 1) * 10 * 2**30, "total": 48 * 2**30})()

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        raise self.NVMLError("not supported")  # some boards do not say

    def nvmlDeviceGetName(self, h: int) -> str:
        return "NVIDIA L40S"


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "_nvml", TwoGpus())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_without_nvml_every_reader_says_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "_nvml", False)  # NVML unusable (this machine: no driver)
    assert gpu.nvml_gpus() is None
    assert gpu.gpu_samples() == []
    assert gpu.nvml_used_bytes() is None


@pytest.mark.usefixtures("two_gpus")
def test_samples_memory_and_detection_come_from_the_same_reader() -> None:
    samples = gpu.gpu_samples()
    assert [(s.index, s.memory_used_bytes, s.utilization) for s in samples] == [
        (0, 10 * 2**30, None),
        (1, 20 * 2**30, None),
    ]
    assert gpu.nvml_used_bytes() == 30 * 2**30
    assert profiles.detect_gpus() == [GpuInfo("NVIDIA L40S", 48.0)] * 2


@pytest.mark.usefixtures("two_gpus")
def test_used_bytes_counts_only_the_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert gpu.nvml_used_bytes() == 20 * 2**30
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert profiles.detect_gpus() == []  # no GPU visible at all


def test_a_failing_query_reports_no_gauges(monkeypatch: pytest.MonkeyPatch) -> None:
    class FellOff(TwoGpus):
        def nvmlDeviceGetCount(self) -> int:
            raise self.NVMLError("GPU is lost")

    monkeypatch.setattr(gpu, "_nvml", FellOff())
    assert gpu.gpu_samples() == []
