"""Model management: load, switch (blue/green or drain-and-swap), and report status.

Three tiers (see DESIGN.md): files on disk (the hub cache), the same model asked again (reuse,
instantly), and a switch, whose strategy the planner decides (`engine/switching.py`):

* blue/green, when the current and the new model fit together: the new one loads while the old
  one keeps serving, then the two swap; the old one closes once its in-flight requests finish.
* drain-and-swap, when they do not: new requests get `ModelLoading` (503 + Retry-After), the
  in-flight ones finish (up to `drain_timeout_s`), the old engine closes and releases its memory,
  then the new one loads. If that load fails, the previous model is loaded again (restored).

Either way a failed load leaves the previous model serving and reports `failed` with the reason.
A model switched away from sleeps in the warm tier (vLLM sleep mode, `engine/warm.py`) when it
can, and a switch back to it wakes it instead of loading it again.
An engine that dies under a loaded model is reported and restarted by `engine/recovery.py`.
Closing an engine can block for seconds (a vLLM shutdown), so it never runs on an event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from lcfin.engine.backend import InferenceBackend, load_backend
from lcfin.engine.loaded import LoadedModel, ModelStatus, State
from lcfin.engine.planner import does_not_fit
from lcfin.engine.recovery import Recovery
from lcfin.engine.registry import ModelSpec, get_model
from lcfin.engine.switching import (
    Strategy,
    check_strategy,
    choose_strategy,
    footprint_gib,
    plan_for,
)
from lcfin.engine.warm import WarmTier
from lcfin.errors import (
    BackendUnavailable,
    LcfinError,
    ModelLoadFailed,
    ModelLoading,
    Overloaded,
)

if TYPE_CHECKING:
    from lcfin.config import Settings
    from lcfin.engine.planner import MemoryPlan
    from lcfin.engine.profiles import HardwareProfile

__all__ = ["LoadedModel", "ModelManager", "ModelStatus"]

log = logging.getLogger(__name__)


class ModelManager:
    """Holds the current model and swaps it for another one on request.

    Args:
        strategy: 'auto' (the planner decides), 'blue_green' or 'drain_and_swap'. A load can
            also force one with the `switch_strategy=...` option.
        drain_timeout_s: how long a drain waits for in-flight requests before closing the old
            model anyway (they end with finish reason 'abort'); default `settings.shutdown_timeout`.

    Raises:
        InvalidParameter: an unknown strategy.
    """

    def __init__(
        self,
        settings: Settings,
        profile: HardwareProfile,
        backend_kind: str,
        *,
        strategy: str = "auto",
        drain_timeout_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.backend_kind = backend_kind
        self.strategy = check_strategy(strategy)
        self.drain_timeout_s = (
            settings.shutdown_timeout if drain_timeout_s is None else drain_timeout_s
        )
        self._current: LoadedModel | None = None
        self._loading: str | None = None
        self._error: str | None = None
        self._failed: tuple[str, float] | None = None  # model, Unix time
        self._switching: Strategy | None = None
        self._draining = False
        self._lock = threading.Lock()
        self._loading_since = 0.0
        self._warm = WarmTier(settings.warm_models, profile)
        self._last_switch: dict[str, Any] | None = None
        self.recovery = Recovery(self)

    def status(self) -> ModelStatus:
        """The current state (idle / loading / ready / failed)."""
        cur = self._current
        state: State = "idle"
        if self._loading is not None:
            state = "loading"
        elif self._error is not None:
            state = "failed"
        elif cur is not None:
            state = "ready"
        return ModelStatus(
            state=state,
            model=cur.spec.name if cur else None,
            backend=cur.backend.name if cur else None,
            profile=self.profile.name,
            repo_id=cur.spec.repo_id if cur else None,
            load_time_s=round(cur.load_time_s, 3) if cur else None,
            max_model_len=cur.backend.max_model_len if cur else None,
            loading_model=self._loading,
            loading_elapsed_s=round(time.monotonic() - self._loading_since, 3)
            if self._loading
            else None,
            error=self._error,
            strategy=self._switching if self._loading else None,
            failed_model=self._failed[0] if self._failed else None,
            failed_at=self._failed[1] if self._failed else None,
            architecture=cur.architecture if cur else None,
            sleeping=self._warm.names(),
            last_switch=self._last_switch,
            engine_deaths=self.recovery.deaths,
            kv_cache=cur.kv_cache if cur else None,
        )

    @property
    def current(self) -> LoadedModel | None:
        """The model serving now (read-only; None while none is loaded)."""
        return self._current

    def _claim(self, spec: ModelSpec, *, reuse: bool) -> bool:
        """Mark `spec` as loading; False if it is already current (nothing to do).

        A thread lock (not an asyncio one) because loads may come from different event loops
        (the sync API's private loop, the server's loop).
        """
        with self._lock:
            if self._loading is not None:
                raise ModelLoading(
                    f"Model {self._loading} is already loading; retry when it is ready",
                    retry_after=5,
                )
            cur = self._current
            self._error, self._failed = None, None
            if reuse and cur is not None and cur.spec == spec:
                return False
            self._loading = spec.name
            self._loading_since = time.monotonic()
            self.recovery.supersede()  # a dead model's restart yields to this load
            return True

    async def load(self, name: str | ModelSpec, **overrides: Any) -> ModelSpec:
        """Load `name` and make it current; reuse it if it is already current.

        A model asleep in the warm tier is woken instead of loaded; the model switched away
        from sleeps there when it can (see `engine/warm.py`), else it is closed.

        Args:
            **overrides: backend load options; `switch_strategy='blue_green' |
                'drain_and_swap'` forces how this switch proceeds.

        Raises:
            ModelNotFound, InvalidCatalog: the name does not resolve.
            InvalidParameter: an unknown `switch_strategy`.
            DoesNotFit: the model cannot fit the profile's budget; nothing was unloaded.
            ModelLoadFailed, GatedModel, Unauthorized, BackendUnavailable: loading failed;
                the previous model (if any) keeps serving, restored if it had to be unloaded.
        """
        spec, rest = await self.start(name, **overrides)
        return spec if rest is None else await rest

    async def start(
        self, name: str | ModelSpec, **overrides: Any
    ) -> tuple[ModelSpec, Coroutine[Any, Any, ModelSpec] | None]:
        """Resolve, claim and check a load now; the coroutine returned (None: already current)
        finishes it and must be awaited. What `load` refuses up front is raised here.

        Raises:
            ModelNotFound, InvalidCatalog, InvalidParameter, DoesNotFit, ModelLoading.
        """
        forced = overrides.pop("switch_strategy", None)
        if forced is not None:
            check_strategy(forced)
        try:
            spec = self._resolve(name)
        except LcfinError as exc:  # a failed load too: status() says so until the next one
            if self._loading is None:  # (a running load is not this one's business)
                self._fail(name if isinstance(name, str) else name.name, exc)
            raise
        if not self._claim(spec, reuse=not overrides):
            return spec, None
        log.info(
            "Loading %s (%s backend, profile %s)", spec.name, self.backend_kind, self.profile.name
        )
        try:
            plan = await self._preflight(spec, overrides)
            footprint = None if plan is None else footprint_gib(plan, self.backend_kind)
            self._switching = self._strategy_for(spec, footprint, forced)
        except BaseException as exc:
            self._fail(spec.name, exc)
            self._loading, self._switching = None, None
            raise
        return spec, self._finish(spec, overrides, plan, footprint)

    async def check(self, name: str | ModelSpec, **overrides: Any) -> ModelSpec:
        """Resolve `name` and check it fits the profile, loading nothing.

        Raises:
            ModelNotFound, InvalidCatalog, DoesNotFit.
        """
        overrides.pop("switch_strategy", None)
        spec = self._resolve(name)
        await self._preflight(spec, overrides)
        return spec

    def _resolve(self, name: str | ModelSpec) -> ModelSpec:
        return name if isinstance(name, ModelSpec) else get_model(name, self.settings.catalog)

    async def _finish(
        self,
        spec: ModelSpec,
        overrides: dict[str, Any],
        plan: MemoryPlan | None,
        footprint: float | None,
    ) -> ModelSpec:
        """The rest of a load `start` claimed: drain if needed, bring up, swap; report a failure."""
        started, old = self._loading_since, self._current
        record: dict[str, Any] = {"model": spec.name, "previous": old.spec.name if old else None}
        record["strategy"] = self._switching
        self._warm.reserve(spec, overrides)
        try:
            if self._switching == "drain_and_swap" and old is not None:
                backend = await self._drain_and_load(old, spec, overrides, plan, record)
            else:
                backend, record["source"] = await self._bring_up(spec, overrides, plan)
        except LcfinError as exc:
            self._fail(spec.name, exc)
            raise
        except Exception as exc:  # unexpected loader failure: report, keep serving
            self._fail(spec.name, exc)
            raise ModelLoadFailed(f"Loading {spec.name} failed: {self._error}") from exc
        finally:
            self._loading, self._switching, self._draining = None, None, False
            self._warm.unreserve()
        elapsed = time.monotonic() - started
        new = LoadedModel(spec, backend, elapsed, overrides=overrides, footprint_gib=footprint)
        new.weights_gib = None if plan is None else plan.weights_gib
        idle = self._swap(new)
        if idle is not None:  # blue/green: the old model is idle, so it can sleep now
            record["previous_went"] = await self._warm.release(idle, footprint)
        elif old is not None and "previous_went" not in record:
            record["previous_went"] = "closing"  # after its last request (see lease)
        self._last_switch = {**record, "seconds": round(time.monotonic() - started, 3)}
        return spec

    def _fail(self, model: str, exc: BaseException) -> None:
        """Report a failed load of `model` (until the next load starts)."""
        if isinstance(exc, LcfinError):
            self._error = str(exc)
        elif isinstance(exc, Exception):
            self._error = f"{type(exc).__name__}: {exc}"
        else:  # cancelled or interrupted: not a failure of the model
            return
        self._failed = (model, time.time())

    async def _preflight(self, spec: ModelSpec, overrides: dict[str, Any]) -> MemoryPlan | None:
        """The new model's plan; refuse one that cannot fit (either backend, as `lcfin plan`
        says) before unloading anything (see #17)."""
        plan = await asyncio.to_thread(plan_for, spec, self.profile, self.settings, overrides)
        if plan is not None and not plan.fits:
            raise does_not_fit(plan)
        return plan

    def _strategy_for(
        self, spec: ModelSpec, footprint: float | None, forced: str | None
    ) -> Strategy:
        choice = forced if forced not in (None, "auto") else self.strategy
        if choice != "auto":
            return "blue_green" if choice == "blue_green" else "drain_and_swap"
        cur = self._current
        # An engine of unknown size (loaded before planning was possible) counts as the budget.
        current = None if cur is None else cur.footprint_gib
        if cur is not None and current is None:
            current = float("inf") if self.profile.is_gpu else 0.0
        strategy = choose_strategy(current, footprint, self.profile)
        if cur is not None:
            log.info("Switching %s -> %s: %s", cur.spec.name, spec.name, strategy)
        return strategy

    async def _bring_up(
        self, spec: ModelSpec, overrides: dict[str, Any], plan: MemoryPlan | None = None
    ) -> tuple[InferenceBackend, str]:
        """Wake `spec` from the warm tier, else load it (with the load's `plan`, made once in
        `start`): the backend and 'woken' or 'loaded'."""

        async def load(spec: ModelSpec, overrides: dict[str, Any]) -> InferenceBackend:
            return await asyncio.to_thread(
                load_backend,
                spec,
                self.profile,
                self.settings,
                kind=self.backend_kind,
                plan=plan,
                **overrides,
            )

        return await self._warm.bring_up(spec, overrides, load)

    async def _drain_and_load(
        self,
        old: LoadedModel,
        spec: ModelSpec,
        overrides: dict[str, Any],
        plan: MemoryPlan | None,
        record: dict[str, Any],
    ) -> InferenceBackend:
        """Stop admitting, let in-flight requests end, release `old`, bring up `spec`.

        If that fails, `old` comes back (woken, or loaded again).
        """
        self._draining = True
        deadline = time.monotonic() + self.drain_timeout_s
        # Polled, not an asyncio.Event: leases may run on other event loops (the sync API's).
        while old.active > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        old.retired, self._current = True, None
        if old.active:
            log.warning("Drain timed out: closing %s with %d requests", old.spec.name, old.active)
        next_gib = None if plan is None else footprint_gib(plan, self.backend_kind)
        record["previous_went"] = await self._warm.release(old, next_gib)
        try:
            backend, record["source"] = await self._bring_up(spec, overrides, plan)
        except Exception as exc:
            await self._restore(old, exc)
            raise
        return backend

    async def _restore(self, old: LoadedModel, cause: Exception) -> None:
        """Bring `old` back (woken, or loaded again) after a failed drain-and-swap."""
        log.warning("Loading failed (%s); restoring %s", cause, old.spec.name)
        try:
            backend, _ = await self._bring_up(old.spec, old.overrides)
        except Exception as again:
            log.error("Restoring %s failed too: %s", old.spec.name, again)
            raise ModelLoadFailed(
                f"{cause}; restoring the previous model {old.spec.name} failed too: {again}",
                model=old.spec.name,
                hint="no model is loaded: load one with FinancialLLM.switch(...) or /load-model",
            ) from cause
        # Keep its original load time: status and the load-time metric describe the model
        # that serves, not how long the restore took (see #17).
        self._current = LoadedModel(
            old.spec,
            backend,
            old.load_time_s,
            overrides=old.overrides,
            footprint_gib=old.footprint_gib,
            weights_gib=old.weights_gib,
        )
        self.recovery.watch(self._current)

    def _swap(self, new: LoadedModel) -> LoadedModel | None:
        """Make `new` current; the previous model if it is idle (to release), else None.

        A busy previous model closes after its last request (see `lease`).
        """
        old, self._current = self._current, new
        self.recovery.watch(new)
        log.info("Now serving %s (%s)", new.spec.name, new.backend.name)
        if old is None:
            return None
        old.retired = True
        return old if old.active == 0 else None

    @property
    def capacity(self) -> int:
        """Requests admitted at once: the profile's max_num_seqs running + LCFIN_MAX_WAITING."""
        return self.profile.max_num_seqs + self.settings.max_waiting

    @asynccontextmanager
    async def lease(self, slots: int = 1) -> AsyncIterator[LoadedModel]:
        """The current model, kept open until the caller is done with it.

        Args:
            slots: generations the caller will run under this lease, admitted all or none
                (a list of prompts, n choices; see #16).

        Raises:
            ModelLoading, BackendUnavailable: no model is serving.
            Overloaded: fewer than `slots` places are free of `capacity` (429).
        """
        cur = self._current
        if cur is None or self._draining:
            if self._loading is not None:
                raise ModelLoading(f"Model {self._loading} is loading", retry_after=5)
            if self.recovery.pending is not None:  # its engine died; a restart may follow
                raise BackendUnavailable(
                    self._error or "The engine has died",
                    hint="retry shortly: GET /health says when the model serves again",
                )
            raise BackendUnavailable(
                "No model is loaded"
                + (f": the last load failed ({self._error})" if self._error else ""),
                hint="load one with FinancialLLM.switch(...) or POST /load-model",
            )
        if cur.active + slots > self.capacity:  # bounded admission: refuse now, not later
            raise Overloaded(
                f"The server is at capacity ({self.capacity} requests running or waiting)",
                retry_after=1,
                hint="retry after the Retry-After delay, or raise LCFIN_MAX_WAITING",
            )
        cur.active += slots
        try:
            yield cur
        finally:
            cur.active -= slots
            if cur.retired and cur.active == 0:
                cur.close_soon()

    def close(self) -> None:
        """Close the current backend (in-flight requests end) and every sleeping one.

        Blocking, so not on an event loop.
        """
        self.recovery.stop()
        cur, self._current = self._current, None
        if cur is not None:
            cur.backend.close()
        self._warm.close()
