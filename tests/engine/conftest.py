"""The stand-in vLLM engine, shared by the switching and recovery tests (see test_vllm_backend)."""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import pytest

from tests.engine.test_vllm_backend import FakeAsyncLLM, install_fake_vllm


class RecordingLLM(FakeAsyncLLM):
    """The stand-in AsyncLLM, logging when engines start and stop."""

    events: ClassVar[list[str]] = []

    @classmethod
    def from_engine_args(cls, engine_args: Any, stat_loggers: Any = None) -> FakeAsyncLLM:
        cls.events.append(f"start {engine_args.kwargs['served_model_name']}")
        return super().from_engine_args(engine_args, stat_loggers)

    def shutdown(self, timeout: float | None = None) -> None:
        self.events.append(f"stop {self.args.kwargs['served_model_name']}")
        super().shutdown(timeout)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    install_fake_vllm(monkeypatch)
    sys.modules["vllm.v1.engine.async_llm"].AsyncLLM = RecordingLLM  # type: ignore[attr-defined]
    RecordingLLM.events = []
    return RecordingLLM.events
