"""A private event loop in a daemon thread, so the sync API works inside a running loop.

Jupyter already runs an event loop in the main thread, where `asyncio.run` fails. The sync
methods of FinancialLLM therefore run their coroutines on this loop instead and wait.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["LoopThread", "with_deadline"]

T = TypeVar("T")
#: How long an interrupted call waits for its cancelled coroutine to unwind (a cancelled
#: `asyncio.to_thread` returns at once; this only bounds a coroutine that ignores it).
UNWIND_S = 10.0


class LoopThread:
    """Runs coroutines and async iterators to completion from synchronous code."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="lcfin-loop", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the private loop and return its result (exceptions propagate).

        Interrupted while waiting (Ctrl-C), it cancels `coro` and lets it unwind before
        re-raising, so no task is left pending in the loop (see #17).
        """
        return _wait(coro, self._ensure())

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Iterate an async iterator from sync code; closing early closes it (aborts)."""
        loop = self._ensure()
        try:
            while True:
                try:
                    yield _wait(_next(agen), loop)
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                _wait(aclose(), loop)

    def close(self) -> None:
        """Stop the loop, join its thread and close the loop."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
            loop.close()


async def with_deadline(
    agen: AsyncIterator[T], timeout_s: float, on_timeout: Callable[[], BaseException]
) -> AsyncIterator[T]:
    """Yield from `agen` until `timeout_s` after the first call, then close it and raise.

    Only the waits for the next item are timed (the consumer's time between items counts
    towards the deadline but is never interrupted): the cancellation lands inside `agen`, whose
    `finally` blocks abort the work and free its slot.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            try:
                item = await _next_before(agen, deadline, loop)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                if loop.time() < deadline:  # raised by `agen` itself, not our deadline
                    raise
                raise on_timeout() from None
            yield item
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            await aclose()


async def _next_before(
    agen: AsyncIterator[T], deadline: float, loop: asyncio.AbstractEventLoop
) -> T:
    """The next item of `agen`, cancelled at `deadline` (asyncio.TimeoutError)."""
    if sys.version_info >= (3, 11):  # no task per item
        async with asyncio.timeout_at(deadline):
            return await agen.__anext__()
    return await asyncio.wait_for(agen.__anext__(), deadline - loop.time())


async def _next(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


def _wait(coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop) -> T:
    """Run `coro` as a task of `loop` (another thread's) and wait for it.

    If the wait is interrupted (KeyboardInterrupt), the task is cancelled and given time to
    unwind (its finally blocks run) before the interruption propagates.
    """
    done = threading.Event()
    box: list[asyncio.Task[T]] = []

    def start() -> None:
        task = loop.create_task(coro)
        task.add_done_callback(lambda _: done.set())
        box.append(task)

    def cancel() -> None:  # callbacks run in order: a scheduled start() has run by now
        if box:
            box[0].cancel()
        else:  # interrupted before start() was scheduled: nothing ran
            coro.close()
            done.set()

    try:
        loop.call_soon_threadsafe(start)
        done.wait()
    except BaseException:
        loop.call_soon_threadsafe(cancel)
        done.wait(UNWIND_S)
        raise
    return box[0].result()
