"""Shared fixtures: a clean environment, tiny real models built once per session, and the
backend the backend-agnostic tests run on.

Tests marked `any_backend` hold for every backend. They take the `backend` fixture (directly or
through `shared_llm`, `make_llm`, `serve`, `live`, ...), parametrized with the one backend
LCFIN_TEST_BACKEND names: `transformers` by default, `vllm` in `nox -s vllm`, which installs
vLLM's CPU build and runs only the `any_backend` and `vllm` tests (tests/backends.py).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends import (
    TEST_BACKEND,
    VLLM_WARNINGS,
    BackendUnderTest,
    EngineCache,
    backend_under_test,
)
from tests.databases import POSTGRES_URL, postgres_schema
from tests.server.support import LoadGate
from tests.tiny_models import ARCHITECTURES, build_model

SEED_VARS = ("HF_TOKEN_LC", "HF_TOKEN", "MODEL_NAME", "DEPLOYMENT_ENV", "USE_VLLM", "HF_HOME")


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread: the model thread, the event loop and the test share two cores.

    On vLLM: its (and torch's, zmq's) deprecation and resource warnings are not this suite's,
    and some come at exit (an unclosed zmq context), so they are ignored for the whole session.
    """
    import torch

    torch.set_num_threads(1)
    if TEST_BACKEND == "vllm":
        for spec in VLLM_WARNINGS:
            config.addinivalue_line("filterwarnings", spec)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """vLLM's engine talks over local sockets; with LCFIN_TEST_BACKEND=vllm only the tests that
    hold for it are selected, and the `vllm` ones run only then."""
    on_vllm, has_vllm = TEST_BACKEND == "vllm", importlib.util.find_spec("vllm") is not None
    keep, drop = [], []
    for item in items:
        real_vllm = item.get_closest_marker("vllm") is not None
        agnostic = item.get_closest_marker("any_backend") is not None
        if on_vllm and not (real_vllm or agnostic):
            drop.append(item)
            continue
        keep.append(item)
        if real_vllm and not (on_vllm and has_vllm):
            item.add_marker(pytest.mark.skip(reason="runs in `nox -s vllm` (vLLM's CPU build)"))
        if on_vllm:
            item.add_marker(pytest.mark.enable_socket)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No seed or LCFIN_* variable leaks in; HF_HOME points into tmp_path; cwd has no .env."""
    from lcfin.config import get_settings

    for name in list(os.environ):
        if name in SEED_VARS or name.startswith("LCFIN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny random model directory per architecture (llama, qwen3, gpt_neox, gemma3).

    On vLLM they are shaped for its CPU attention (head_dim 64; tests/tiny_models.py).
    """
    root = tmp_path_factory.mktemp("tiny-models")
    wide = TEST_BACKEND == "vllm"
    return {arch: build_model(root / arch, arch, wide=wide) for arch in ARCHITECTURES}


@pytest.fixture(scope="session")
def _engines() -> Iterator[EngineCache]:
    """vLLM engines shared by the session's tests (closed at its end); see tests/backends.py."""
    cache = EngineCache()
    with cache.installed(TEST_BACKEND == "vllm"):
        yield cache


@pytest.fixture(scope="session", params=[TEST_BACKEND])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, _engines: EngineCache
) -> BackendUnderTest:
    """The backend the `any_backend` tests run on (LCFIN_TEST_BACKEND; transformers by default)."""
    return backend_under_test(request.param, tmp_path_factory.mktemp("backend"))


@pytest.fixture
def fresh_engines(_engines: EngineCache) -> Iterator[None]:
    """This test's loads start engines of their own, which it may close or kill."""
    with _engines.bypassed():
        yield


@pytest.fixture
def engine_cache(_engines: EngineCache) -> EngineCache:
    """The session's engine cache: `with engine_cache.bypassed():` for a load of one's own."""
    return _engines


@pytest.fixture(scope="session")
def llama_dir(tiny_models: dict[str, Path]) -> Path:
    """The tiny Llama model directory."""
    return tiny_models["llama"]


@pytest.fixture(scope="session")
def shared_llm(tiny_models: dict[str, Path], backend: BackendUnderTest) -> Iterator[object]:
    """A FinancialLLM on the tiny Llama, shared by read-only tests (the backend's CPU profile)."""
    llm = backend.llm(tiny_models["llama"])
    yield llm
    llm.close()


@pytest.fixture
def make_llm(tiny_models: dict[str, Path], backend: BackendUnderTest) -> Iterator[object]:
    """Factory: a fresh FinancialLLM on a tiny architecture, closed after the test."""
    from lcfin import FinancialLLM

    made: list[FinancialLLM] = []

    def make(arch: str = "llama", **kwargs: object) -> FinancialLLM:
        llm = backend.llm(tiny_models[arch], **kwargs)
        made.append(llm)
        return llm

    yield make
    for llm in made:
        llm.close()


@pytest.fixture
def load_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoadGate]:
    """A gate in front of every model load; `close()` it to hold the loads that follow.

    A test double at the loading edge (a scripted "slow load", S17): the real loader still
    runs, only later, so a test can look at the server while a switch is in progress.
    """
    import lcfin.engine.manager as manager

    gate = LoadGate()
    real = manager.load_backend

    def gated_load_backend(*args: Any, **kwargs: Any) -> Any:
        gate.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(manager, "load_backend", gated_load_backend)
    yield gate
    gate.open()  # never leave a loader thread waiting


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a test's usage database lives: a fresh SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "usage.db")
        return
    if not POSTGRES_URL:
        pytest.skip("set LCFIN_TEST_POSTGRES_URL to a PostgreSQL database (.ci/run does)")
    with postgres_schema(POSTGRES_URL) as url:
        yield url
