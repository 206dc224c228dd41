"""EngineWatch on real child processes: a death wakes it through the process sentinel."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from lcfin.engine.vllm import runtime
from lcfin.engine.vllm.runtime import EngineWatch, death_reason


def _engine_with(proc: Any) -> SimpleNamespace:
    """vLLM's client as the watch sees it: engine_core.resources.engine_manager.processes."""
    resources = SimpleNamespace(engine_manager=SimpleNamespace(processes=[proc]))
    return SimpleNamespace(engine_core=SimpleNamespace(resources=resources), errored=False)


@pytest.fixture
def child() -> Any:
    proc = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    proc.start()
    yield proc
    if proc.is_alive():
        proc.kill()
    proc.join(10)


def _watch(engine: Any) -> tuple[EngineWatch, list[str], threading.Event]:
    reasons: list[str] = []
    called = threading.Event()

    def on_death(reason: str) -> None:
        reasons.append(reason)
        called.set()

    return EngineWatch(engine, on_death), reasons, called


def test_killed_engine_process_is_reported_at_once_with_its_signal(child: Any) -> None:
    engine = _engine_with(child)
    watch, reasons, called = _watch(engine)
    assert not called.wait(0.3), "a live engine was reported dead"
    started = time.monotonic()
    os.kill(child.pid, signal.SIGKILL)
    assert called.wait(5)
    # the sentinel wakes the watch; it then waits (bounded) for vLLM's own flag, unset here
    assert time.monotonic() - started < runtime.WATCH_SETTLE_S + 1.0
    assert reasons == ["its EngineCore process was killed by signal 9 (SIGKILL)"]
    watch.stop()


def test_process_exit_is_reported_as_soon_as_vllm_marks_the_engine_dead(child: Any) -> None:
    engine = _engine_with(child)
    watch, reasons, called = _watch(engine)
    engine.errored = True  # vLLM's monitor has seen it: no settling wait
    started = time.monotonic()
    child.terminate()
    assert called.wait(5)
    assert time.monotonic() - started < 0.5 * runtime.WATCH_SETTLE_S + 0.3
    assert reasons == [death_reason(engine)]
    watch.stop()


def test_a_stopped_watch_reports_no_shutdown_as_a_death(child: Any) -> None:
    watch, reasons, called = _watch(_engine_with(child))
    watch.stop()  # what close() does before vLLM's shutdown ends the processes
    child.kill()
    assert not called.wait(runtime.WATCH_FALLBACK_S + runtime.WATCH_SETTLE_S + 0.5)
    assert reasons == []


def test_errored_with_live_processes_is_seen_by_the_fallback_look(
    child: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "WATCH_FALLBACK_S", 0.1)
    engine = _engine_with(child)
    watch, reasons, called = _watch(engine)
    engine.errored = True  # the output handler died; EngineCore lives on
    assert called.wait(5)
    assert reasons == ["its EngineCore process stopped"]
    watch.stop()


def test_an_engine_without_processes_is_polled() -> None:
    engine = SimpleNamespace(errored=False)
    watch, reasons, called = _watch(engine)
    assert not called.wait(0.3)
    engine.errored = True
    assert called.wait(2)
    assert reasons == ["its EngineCore process stopped"]
    watch.stop()
