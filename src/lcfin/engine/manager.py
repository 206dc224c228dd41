"""Model management: load, switch without downtime, drain, and report status.

Three tiers (see DESIGN.md): files on disk (the hub cache), the same model asked again (reuse,
instantly), and a switch: the new model loads while the old one keeps serving, then the two
swap; the old one closes once its in-flight requests finish. A failed load keeps the previous
model serving and reports `failed` with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from lcfin.engine.backend import InferenceBackend, load_backend
from lcfin.engine.registry import ModelSpec, get_model
from lcfin.errors import BackendUnavailable, LcfinError, ModelLoadFailed, ModelLoading

if TYPE_CHECKING:
    from lcfin.config import Settings
    from lcfin.engine.profiles import HardwareProfile

__all__ = ["LoadedModel", "ModelManager", "ModelStatus"]

log = logging.getLogger(__name__)

State = Literal["idle", "loading", "ready", "failed"]


@dataclass
class LoadedModel:
    """A backend serving one model, with its in-flight request count."""

    spec: ModelSpec
    backend: InferenceBackend
    load_time_s: float
    active: int = 0
    retired: bool = False


@dataclass(frozen=True)
class ModelStatus:
    """Where the model manager stands: state, serving model, and the last error."""

    state: State
    model: str | None
    backend: str | None
    profile: str
    repo_id: str | None = None
    load_time_s: float | None = None
    max_model_len: int | None = None
    loading_model: str | None = None
    loading_elapsed_s: float | None = None
    error: str | None = None

    @property
    def serving(self) -> bool:
        """Whether a model can answer requests right now."""
        return self.model is not None

    def to_dict(self) -> dict[str, Any]:
        """The status as a JSON-ready dict."""
        return {**asdict(self), "serving": self.serving}


class ModelManager:
    """Holds the current model and swaps it for another one on request."""

    def __init__(self, settings: Settings, profile: HardwareProfile, backend_kind: str) -> None:
        self.settings = settings
        self.profile = profile
        self.backend_kind = backend_kind
        self._current: LoadedModel | None = None
        self._loading: str | None = None
        self._error: str | None = None
        self._lock = threading.Lock()
        self._loading_since = 0.0

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
        )

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
            if reuse and cur is not None and cur.spec == spec:
                self._error = None
                return False
            self._loading, self._error = spec.name, None
            self._loading_since = time.monotonic()
            return True

    async def load(self, name: str | ModelSpec, **overrides: Any) -> ModelSpec:
        """Load `name` and make it current; reuse it if it is already current.

        Raises:
            ModelNotFound, InvalidCatalog: the name does not resolve.
            ModelLoadFailed, GatedModel, Unauthorized, BackendUnavailable: loading failed;
                the previous model (if any) keeps serving.
        """
        spec = name if isinstance(name, ModelSpec) else get_model(name, self.settings.catalog)
        if not self._claim(spec, reuse=not overrides):
            return spec
        started = time.monotonic()
        try:
            backend = await asyncio.to_thread(
                load_backend, self.backend_kind, spec, self.profile, self.settings, **overrides
            )
        except LcfinError as exc:
            self._error = str(exc)
            raise
        except Exception as exc:  # unexpected loader failure: report, keep serving
            self._error = f"{type(exc).__name__}: {exc}"
            raise ModelLoadFailed(f"Loading {spec.name} failed: {self._error}") from exc
        finally:
            self._loading = None
        self._swap(LoadedModel(spec, backend, time.monotonic() - started))
        return spec

    def _swap(self, new: LoadedModel) -> None:
        old, self._current = self._current, new
        log.info("Now serving %s (%s)", new.spec.name, new.backend.name)
        if old is not None:
            old.retired = True
            if old.active == 0:
                old.backend.close()

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[LoadedModel]:
        """The current model, kept open until the caller is done with it."""
        cur = self._current
        if cur is None:
            if self._loading is not None:
                raise ModelLoading(f"Model {self._loading} is loading", retry_after=5)
            raise BackendUnavailable(
                "No model is loaded"
                + (f": the last load failed ({self._error})" if self._error else ""),
                hint="load one with FinancialLLM.switch(...) or POST /load-model",
            )
        cur.active += 1
        try:
            yield cur
        finally:
            cur.active -= 1
            if cur.retired and cur.active == 0:
                cur.backend.close()

    def close(self) -> None:
        """Close the current backend (in-flight requests end)."""
        cur, self._current = self._current, None
        if cur is not None:
            cur.backend.close()
