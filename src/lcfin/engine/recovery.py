"""When the engine dies under a loaded model: report it at once, then restart it (or not).

A backend that can die on its own (vLLM's EngineCore is a separate process) offers
`watch(on_death)`. On a death, the `Recovery` of the model manager:

1. takes the model out of service at once: the manager's state is `failed` with the reason
   (so /health says `failed` and /health/ready 503), new requests get `BackendUnavailable`
   (503), and in-flight ones end with the engine's error (an SSE error event when streaming);
2. counts it (`ModelStatus.engine_deaths`, the `lcfin:engine_deaths_total` metric) and calls the
   failure hooks (`lcfin serve` exits non-zero from one when LCFIN_ON_ENGINE_DEATH=exit);
3. with LCFIN_ON_ENGINE_DEATH=restart (the default), reloads the same model with the same load
   options in a thread of its own, after 1 s, then 2, 4, ... up to 60 s between attempts, until
   one succeeds or another load (a switch) takes over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lcfin.engine.backend import load_backend
from lcfin.engine.loaded import LoadedModel

if TYPE_CHECKING:
    from lcfin.engine.manager import ModelManager

__all__ = ["MAX_BACKOFF_S", "RESTART_BACKOFF_S", "Recovery"]

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


class Recovery:
    """Watches the manager's engines; see the module docstring."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager
        self._stop = threading.Event()
        #: Called with the reason when an engine dies (from the watching thread).
        self.hooks: list[Callable[[str], None]] = []
        self.deaths = 0
        #: The dead model a restart is pending for (None once restarted or superseded).
        self.pending: LoadedModel | None = None

    def watch(self, loaded: LoadedModel) -> None:
        """Start watching the engine of `loaded` (a no-op for backends that cannot die alone)."""
        watch = getattr(loaded.backend, "watch", None)
        if callable(watch):
            watch(lambda reason: self._died(loaded, reason))

    def _died(self, loaded: LoadedModel, reason: str) -> None:
        mgr = self._manager
        with mgr._lock:
            if mgr._current is not loaded or self._stop.is_set():
                return  # already replaced, or shutting down
            mgr._current, loaded.retired = None, True
            mgr._failed = (loaded.spec.name, time.time())  # status().failed_model, until it serves
            self.deaths += 1
            self.pending = loaded
            restart = mgr.settings.on_engine_death == "restart"
            then = "; restarting it" if restart else ""
            mgr._error = (
                f"The {loaded.backend.name} engine of {loaded.spec.name} died: {reason}{then}"
            )
        log.error("%s", mgr._error)
        for hook in list(self.hooks):
            try:
                hook(mgr._error)
            except Exception:  # a broken hook must not stop the recovery
                log.exception("Engine failure hook %r failed", hook)
        threading.Thread(
            target=self._restart if restart else self._release,
            args=(loaded,),
            name="lcfin-engine-restart",
            daemon=True,
        ).start()

    def _release(self, dead: LoadedModel) -> None:
        if dead.active == 0:
            dead.backend.close()  # the dead engine's resources (its other processes, sockets)

    def _restart(self, dead: LoadedModel) -> None:
        """Reload `dead`'s model with backoff until it serves again or something else does."""
        self._release(dead)
        mgr, delay, attempt = self._manager, RESTART_BACKOFF_S, 0
        while not self._stop.wait(delay):
            attempt += 1
            with mgr._lock:
                if self.pending is not dead or mgr._current is not None:
                    return  # another load has taken over
                if mgr._loading is not None:
                    continue  # a load is running: look again after the delay
                mgr._loading, mgr._loading_since = dead.spec.name, time.monotonic()
            if self._attempt(dead, attempt):
                return
            delay = min(delay * 2, MAX_BACKOFF_S)

    def _attempt(self, dead: LoadedModel, attempt: int) -> bool:
        mgr = self._manager
        started = time.monotonic()
        try:
            backend = load_backend(
                dead.spec, mgr.profile, mgr.settings, kind=mgr.backend_kind, **dead.overrides
            )
        except Exception as exc:
            with mgr._lock:
                mgr._loading = None
                mgr._error = (
                    f"{(mgr._error or '').split('; restart')[0]}; restart {attempt} failed: {exc}"
                )
            log.warning("Restarting %s failed (attempt %d): %s", dead.spec.name, attempt, exc)
            return False
        loaded = LoadedModel(
            dead.spec,
            backend,
            time.monotonic() - started,
            overrides=dead.overrides,
            footprint_gib=dead.footprint_gib,
        )
        with mgr._lock:
            mgr._loading, mgr._error, mgr._failed, mgr._current = None, None, None, loaded
            self.pending = None
        self.watch(loaded)
        log.info("Restarted %s after its engine died (attempt %d)", dead.spec.name, attempt)
        return True

    def supersede(self) -> None:
        """Another load takes over: no restart of the dead model any more."""
        self.pending = None

    def stop(self) -> None:
        """Stop restarting (the manager is closing)."""
        self._stop.set()
