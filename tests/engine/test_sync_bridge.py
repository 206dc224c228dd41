"""The sync API's private loop: a Ctrl-C while waiting cancels the coroutine, leaving no task."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import time

import pytest

from lcfin.engine.sync_bridge import LoopThread, relay


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


# -- relay: an engine's stream on its own loop, read from another ---------------------------------


class CountingLoop(asyncio.SelectorEventLoop):
    """A real event loop that counts the wake-ups other threads ask of it."""

    wakeups = 0

    def call_soon_threadsafe(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.wakeups += 1
        return super().call_soon_threadsafe(*args, **kwargs)


def run_on(loop: asyncio.AbstractEventLoop, coro):  # type: ignore[no-untyped-def]
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)


def test_relay_passes_every_item_in_order_then_the_error() -> None:
    home = LoopThread(name="home")

    async def produce():  # type: ignore[no-untyped-def]
        assert asyncio.get_running_loop() is home.loop  # runs where the engine lives
        for i in range(500):
            yield i
            if i % 50 == 0:
                await asyncio.sleep(0)
        raise ValueError("engine failed")

    async def consume() -> tuple[list[int], str]:
        got: list[int] = []
        try:
            async for item in relay(produce, home.loop):
                got.append(item)
        except ValueError as exc:
            return got, str(exc)
        return got, "no error"

    try:
        assert asyncio.run(consume()) == (list(range(500)), "engine failed")
    finally:
        home.close()


def test_closing_a_relay_early_cancels_the_producer_and_waits_for_its_cleanup() -> None:
    home = LoopThread(name="home")
    cleaned = threading.Event()

    async def produce():  # type: ignore[no-untyped-def]
        try:
            for i in range(10**9):
                yield i
                await asyncio.sleep(0.001)
        finally:
            await asyncio.sleep(0.05)  # an engine abort takes a moment
            cleaned.set()

    async def consume() -> list[int]:
        got: list[int] = []
        stream = relay(produce, home.loop)
        async for item in stream:
            got.append(item)
            if len(got) == 3:
                break
        await stream.aclose()
        assert cleaned.is_set()  # not at garbage collection: before aclose returned
        return got

    try:
        assert asyncio.run(consume()) == [0, 1, 2]
    finally:
        home.close()


def busy(seconds: float) -> None:
    """Hold the calling thread (and the event loop running on it) for `seconds`."""
    time.sleep(seconds)


def test_items_posted_while_the_consumer_is_busy_arrive_after_one_wakeup() -> None:
    home = LoopThread(name="home")
    consumer = CountingLoop()
    burst = threading.Event()

    async def produce():  # type: ignore[no-untyped-def]
        burst.wait(30)  # an engine step: a token for every stream at once
        for i in range(16):
            yield i

    async def consume() -> list[int]:
        stream = relay(produce, home.loop)
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.05)  # the producer waits for its burst
        before = consumer.wakeups
        burst.set()
        busy(0.3)  # this loop is busy (other clients) while the burst is posted
        got = [await first]
        got += [item async for item in stream]
        assert consumer.wakeups - before <= 4, consumer.wakeups - before  # 18 without batching
        return got

    try:
        assert consumer.run_until_complete(consume()) == list(range(16))
    finally:
        consumer.close()
        home.close()
