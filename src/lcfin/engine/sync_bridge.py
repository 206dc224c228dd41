"""A private event loop in a daemon thread, so the sync API works inside a running loop.

Jupyter already runs an event loop in the main thread, where `asyncio.run` fails. The sync
methods of FinancialLLM therefore run their coroutines on this loop instead and wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["LoopThread", "relay", "with_deadline"]

T = TypeVar("T")
#: How long an interrupted call waits for its cancelled coroutine to unwind (a cancelled
#: `asyncio.to_thread` returns at once; this only bounds a coroutine that ignores it).
UNWIND_S = 10.0
_END = object()
#: How long an early close waits for the producer on the other loop to clean up (abort).
RELAY_CLOSE_TIMEOUT_S = 30.0


class LoopThread:
    """Runs coroutines and async iterators to completion from synchronous code."""

    def __init__(self, name: str = "lcfin-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The private loop (started on first use)."""
        return self._ensure()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the private loop and return its result (exceptions propagate).

        Interrupted while waiting (Ctrl-C), it cancels `coro` and lets it unwind before
        re-raising, so no task is left pending in the loop (see #17).
        """
        return _wait(coro, self._ensure())

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` run on the private loop, from any event loop (or on it directly)."""
        loop = self._ensure()
        if asyncio.get_running_loop() is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

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

    def close(self, *, settle: bool = False) -> None:
        """Stop the loop, join its thread and close the loop.

        Args:
            settle: first cancel the tasks still on the loop and let them finish (bounded), so
                that none is destroyed pending (an engine's background tasks after shutdown).
        """
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or loop.is_closed():
            return
        if settle and thread is not threading.current_thread():
            # a task that will not end must not keep the loop: stop it anyway
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_settle(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
            loop.close()


async def _settle() -> None:
    """Cancel every other task on the running loop and wait for them to end."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for task in tasks:
        task.cancel()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)


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


async def relay(
    make: Callable[[], AsyncIterator[T]], home: asyncio.AbstractEventLoop
) -> AsyncGenerator[T, None]:
    """Iterate `make()` on the event loop `home` (another thread's), from the running loop.

    An engine whose state is tied to one loop (vLLM's output handler and request queues) runs
    there, whoever asks: the items cross over with `call_soon_threadsafe`. Closing this
    iterator early (a `break`, a client gone, a timeout) cancels the producer on `home` and
    waits (bounded) until its `finally` blocks have run, so the engine has aborted the request.
    On `home` itself it simply iterates.
    """
    here = asyncio.get_running_loop()
    if here is home:
        agen = make()
        try:
            async for item in agen:
                yield item
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()
        return
    queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
    closed = asyncio.Event()
    task = asyncio.run_coroutine_threadsafe(_pump(make, here, queue, closed), home)
    try:
        while True:
            item, error = await queue.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        if not task.done():
            task.cancel()  # cancels the producer's task on `home` (thread-safe)
            # past the timeout `home` is stuck or gone: nothing more can be freed from here
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(closed.wait(), RELAY_CLOSE_TIMEOUT_S)


async def _pump(
    make: Callable[[], AsyncIterator[T]],
    target: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[tuple[Any, BaseException | None]],
    closed: asyncio.Event,
) -> None:
    """Runs on the producer's loop: forward every item (then the end, or the error)."""
    agen = make()
    try:
        async for item in agen:
            _post(target, queue.put_nowait, (item, None))
        _post(target, queue.put_nowait, (_END, None))
    except Exception as exc:
        _post(target, queue.put_nowait, (None, exc))
    finally:  # also on CancelledError: the consumer went away and waits for `closed` only
        try:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            _post(target, closed.set)


#: Callbacks posted to a loop from other threads and not yet run there, in order.
_mail: dict[asyncio.AbstractEventLoop, list[tuple[Callable[..., Any], tuple[Any, ...]]]] = {}
_mail_lock = threading.Lock()


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    """Run `callback(*args)` on `loop` soon, from another thread; nothing if it has closed.

    Posts made before the loop gets to them are run together, after one wake-up: an engine
    step that yields a token for each of 16 streams wakes the consumer's loop once, not 16
    times (each wake-up a write to the loop's self-pipe and a thread switch on a busy CPU).
    """
    with _mail_lock:
        batch = _mail.get(loop)
        if batch is not None:  # a delivery is already on its way
            batch.append((callback, args))
            return
        _mail[loop] = [(callback, args)]
    try:
        loop.call_soon_threadsafe(_deliver, loop)
    except RuntimeError:  # "Event loop is closed": its consumer is gone
        with _mail_lock:
            _mail.pop(loop, None)


def _deliver(loop: asyncio.AbstractEventLoop) -> None:
    with _mail_lock:
        batch = _mail.pop(loop, [])
    for callback, args in batch:
        try:
            callback(*args)
        except Exception as exc:  # as the loop would report a failed call_soon callback
            loop.call_exception_handler({"message": "relay callback failed", "exception": exc})
