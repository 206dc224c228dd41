"""What VLLMBackend watches around its engine: GPU memory, the scheduler's stats, the KV cache
vLLM reports, and whether the EngineCore process is still alive.

Nothing here imports vllm at module level: `stats_logger_factory` imports vLLM's
`StatLoggerBase` when an engine is built (the interface is "not stable", VLLM-NOTES section 6;
`record(scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0)` in 0.32 and 0.33).
GPU memory is read through NVML, never CUDA, so that vLLM can fork its engine.
"""

from __future__ import annotations

import logging
import multiprocessing.connection
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lcfin.engine.loaded import KvCapacity
from lcfin.telemetry.gpu import nvml_used_bytes

__all__ = [
    "RELEASE_SLACK_BYTES",
    "EngineLoad",
    "EngineWatch",
    "capacity_of",
    "death_reason",
    "stats_logger_factory",
    "wait_for_release",
]

log = logging.getLogger(__name__)

#: Memory a closed engine may leave behind (allocator slack) and still count as released.
RELEASE_SLACK_BYTES = 512 * 2**20
#: How often the watch looks at an engine whose processes it cannot wait on (a death shows
#: within this).
WATCH_INTERVAL_S = 0.1
#: With the EngineCore processes' sentinels, a death wakes the watch at once; it still looks at
#: the engine's own flag this often (a dead output handler, with the processes alive).
WATCH_FALLBACK_S = 1.0
#: How long a process exit waits for vLLM's client to mark the engine dead too.
WATCH_SETTLE_S = 1.0

MemoryReader = Callable[[], "int | None"]


def wait_for_release(
    start: int | None,
    held: int,
    *,
    read: MemoryReader = nvml_used_bytes,
    timeout_s: float = 60.0,
    poll_s: float = 0.25,
) -> bool:
    """Wait until GPU memory in use drops by `held` bytes from `start`; False on timeout."""
    if start is None or held <= 0:
        return True
    target = start - held + RELEASE_SLACK_BYTES
    deadline = time.monotonic() + timeout_s
    while True:
        used = read()
        if used is None or used <= target:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


# -- the scheduler's stats ----------------------------------------------------------------------


@dataclass
class EngineLoad:
    """The last scheduler stats vLLM reported (written by its output handler's thread)."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float | None = None

    def update(self, scheduler_stats: Any) -> None:
        """Take one `SchedulerStats` (None between steps that have none)."""
        if scheduler_stats is None:
            return
        self.running = int(getattr(scheduler_stats, "num_running_reqs", 0))
        self.waiting = int(getattr(scheduler_stats, "num_waiting_reqs", 0))
        usage = getattr(scheduler_stats, "kv_cache_usage", None)
        self.kv_cache_usage = None if usage is None else float(usage)


def stats_logger_factory(load: EngineLoad) -> Any:
    """A per-engine vLLM stat-logger factory that feeds `load` (imports vllm)."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _LoadLogger(StatLoggerBase):  # type: ignore[misc]  # vllm is untyped here (Any)
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            load.update(scheduler_stats)

        def log_engine_initialized(self) -> None:
            pass

    return _LoadLogger


# -- the KV cache vLLM reports ---------------------------------------------------------------------


def capacity_of(engine: Any, plan: Any) -> KvCapacity:
    """vLLM's own KV-cache size and max concurrency (its start-up log line), with the plan's.

    vLLM syncs them back from EngineCore after start-up (`EngineCoreReadyResponse`):
    `vllm_config.cache_config.kv_cache_size_tokens` / `kv_cache_max_concurrency`.
    """
    cache = getattr(getattr(engine, "vllm_config", None), "cache_config", None)
    tokens = getattr(cache, "kv_cache_size_tokens", None)
    conc = getattr(cache, "kv_cache_max_concurrency", None)
    return KvCapacity(
        max_model_len=int(engine.model_config.max_model_len),
        engine_tokens=None if tokens is None else int(tokens),
        engine_max_concurrency=None if conc is None else round(float(conc), 3),
        num_blocks=getattr(cache, "num_gpu_blocks", None),
        block_size=getattr(cache, "block_size", None),
        planned_tokens=None if plan is None else plan.kv_cache_tokens,
        planned_max_concurrency=None if plan is None else plan.max_concurrency,
    )


# -- is the engine alive? ----------------------------------------------------------------------


def _processes(engine: Any) -> list[Any]:
    """The EngineCore processes, where vLLM's client exposes them (its engine manager)."""
    core = getattr(engine, "engine_core", None)
    manager = getattr(getattr(core, "resources", None), "engine_manager", None)
    return list(getattr(manager, "processes", None) or [])


def _sentinels(engine: Any) -> list[int]:
    """The live EngineCore processes' sentinels (readable when a process ends)."""
    found = []
    for proc in _processes(engine):
        sentinel = getattr(proc, "sentinel", None)
        if isinstance(sentinel, int) and getattr(proc, "exitcode", 1) is None:
            found.append(sentinel)
    return found


def death_reason(engine: Any) -> str:
    """Why the engine stopped, from its processes' exit codes where vLLM exposes them."""
    for proc in _processes(engine):
        code = getattr(proc, "exitcode", None)
        if code is None:
            continue
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"its EngineCore process was killed by signal {-code} ({name})"
        return f"its EngineCore process exited with code {code}"
    return "its EngineCore process stopped"


class EngineWatch:
    """Calls `on_death(reason)` once, from its own thread, when the engine has died.

    vLLM's client notices a dead EngineCore at once (a monitor thread on the process sentinel
    sets `engine_dead`, and `AsyncLLM.errored` turns true). The watch blocks on the same
    sentinels, so it costs no wake-ups while the engine lives (ten a second, each a thread
    switch, showed as 1.6% of a core on an idle 2-core server), and looks at `errored` once a
    second besides. Where vLLM exposes no processes, it polls `errored` every 0.1 s.
    """

    def __init__(self, engine: Any, on_death: Callable[[str], None]) -> None:
        self._engine, self._on_death = engine, on_death
        self._stop = threading.Event()
        self._sentinels = _sentinels(engine)
        self._thread = threading.Thread(target=self._run, name="lcfin-engine-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            exited = self._wait()
            if self._stop.is_set():  # closed meanwhile: a shutdown, not a death
                return
            if exited:  # let vLLM's client see it too, so that requests fail as dead
                self._settle()
            if exited or self._errored():
                if self._stop.is_set():
                    return
                reason = death_reason(self._engine)
                log.error("The vLLM engine has died: %s", reason)
                self._on_death(reason)
                return

    def _wait(self) -> bool:
        """Wait for an engine process to exit (True), or for the next look at `errored`."""
        if not self._sentinels:
            self._stop.wait(WATCH_INTERVAL_S)
            return False
        try:
            return bool(multiprocessing.connection.wait(self._sentinels, WATCH_FALLBACK_S))
        except OSError:  # a sentinel closed under us (the engine is being torn down)
            self._sentinels = []
            return False

    def _settle(self) -> None:
        deadline = time.monotonic() + WATCH_SETTLE_S
        while not self._errored() and time.monotonic() < deadline:
            if self._stop.wait(0.02):
                return

    def _errored(self) -> bool:
        return bool(getattr(self._engine, "errored", False))

    def stop(self) -> None:
        """Stop watching (the engine is being shut down on purpose)."""
        self._stop.set()
        self._engine = None  # no reference kept to a closed engine
