"""Shared fixtures: a clean environment, and tiny real models built once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tiny_models import ARCHITECTURES, build_model

SEED_VARS = ("HF_TOKEN_LC", "HF_TOKEN", "MODEL_NAME", "DEPLOYMENT_ENV", "USE_VLLM", "HF_HOME")


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread: the model thread, the event loop and the test share two cores."""
    import torch

    torch.set_num_threads(1)


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
    """One tiny random model directory per architecture (llama, qwen3, gpt_neox, gemma3)."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: build_model(root / arch, arch) for arch in ARCHITECTURES}


@pytest.fixture(scope="session")
def llama_dir(tiny_models: dict[str, Path]) -> Path:
    """The tiny Llama model directory."""
    return tiny_models["llama"]


@pytest.fixture(scope="session")
def shared_llm(tiny_models: dict[str, Path]) -> Iterator[object]:
    """A FinancialLLM on the tiny Llama, shared by read-only tests (cpu profile)."""
    from lcfin import FinancialLLM, Settings

    llm = FinancialLLM(str(tiny_models["llama"]), profile="cpu", settings=Settings())
    yield llm
    llm.close()


@pytest.fixture
def make_llm(tiny_models: dict[str, Path]) -> Iterator[object]:
    """Factory: a fresh FinancialLLM on a tiny architecture, closed after the test."""
    from lcfin import FinancialLLM, Settings

    made: list[FinancialLLM] = []

    def make(arch: str = "llama", **kwargs: object) -> FinancialLLM:
        llm = FinancialLLM(str(tiny_models[arch]), profile="cpu", settings=Settings(), **kwargs)  # type: ignore[arg-type]
        made.append(llm)
        return llm

    yield make
    for llm in made:
        llm.close()
