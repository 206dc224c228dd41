"""The sync API's private loop: a Ctrl-C while waiting cancels the coroutine, leaving no task."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading

import pytest

from lcfin.engine.sync_bridge import LoopThread


def test_an_interrupted_wait_cancels_the_coroutine_and_leaves_nothing_pending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = LoopThread()
    started, unwound = threading.Event(), threading.Event()

    async def slow_load() -> None:  # stands in for a model load (a long await)
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            unwound.set()

    main = threading.get_ident()

    def interrupt_when_started() -> None:
        started.wait()
        signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C, to the waiting main thread

    # Ctrl-C's own handler: a process started in the background (nox from a script) inherits
    # SIGINT ignored, and Python then installs none.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_when_started, daemon=True).start()
        with caplog.at_level(logging.ERROR, logger="asyncio"), pytest.raises(KeyboardInterrupt):
            loop.run(slow_load())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert unwound.is_set()  # cancelled and unwound before the interrupt propagated
    loop.close()
    gc.collect()
    assert "Task was destroyed but it is pending" not in caplog.text


def test_results_and_errors_come_back() -> None:
    loop = LoopThread()

    async def answer() -> int:
        return 42

    async def fail() -> None:
        raise ValueError("boom")

    try:
        assert loop.run(answer()) == 42
        with pytest.raises(ValueError, match="boom"):
            loop.run(fail())
    finally:
        loop.close()
