"""The one thread that runs all of a Transformers backend's torch work: load, warm-up, decoding.

Why one thread: libgomp (the OpenMP runtime of torch's CPU builds) keeps a pool of worker
threads per calling thread. Once the pools together hold more threads than there are cores,
every pool stops spinning at its barriers and sleeps on a futex instead, which slows each
parallel op; on a 2-core machine decoding ran ~30% slower when the model was loaded on one
thread and run on another. Loading, warming up and decoding on the same thread keeps a single
pool, and the pool goes away with the thread when the backend closes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

__all__ = ["ModelThread"]

T = TypeVar("T")


class ModelThread:
    """A long-lived worker thread that runs jobs in order; `call` waits for a job's result."""

    def __init__(self, name: str = "lcfin-model") -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the thread and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            return fn()
        done: Future[T] = Future()

        def job() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed to the caller, who re-raises it
                done.set_exception(exc)

        self._jobs.put(job)
        return done.result()

    def submit(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the thread without waiting (the backend's decoding loop)."""
        self._jobs.put(fn)

    def stop(self, timeout: float = 30) -> None:
        """Let queued jobs finish, then end the thread (its OpenMP pool goes with it)."""
        self._jobs.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=timeout)
