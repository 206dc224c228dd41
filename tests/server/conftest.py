"""In-process server fixtures: `create_app` over a real FinancialLLM on a tiny model (S16).

`serve(**settings)` builds `create_app(FinancialLLM(<tiny llama>, profile="cpu", settings=s), s)`
with `s = Settings(**settings)` and returns a `Served` (client, app, llm, settings). The client is
an `httpx.AsyncClient` over `httpx.ASGITransport`, which does not run the lifespan: the model is
loaded by FinancialLLM's constructor (or not at all with `load=False`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from lcfin import FinancialLLM, Settings
from lcfin.server.app import create_app
from tests.server.support import LoadGate, Serve, Served


@pytest_asyncio.fixture
async def serve(tiny_models: dict[str, Path]) -> AsyncIterator[Serve]:
    """Factory: an in-process server over a fresh FinancialLLM; Settings(**kw) per call."""
    made: list[Served] = []

    async def make(
        arch: str = "llama",
        *,
        load: bool = True,
        raise_app_exceptions: bool = True,
        **settings: Any,
    ) -> Served:
        s = Settings(**settings)
        llm = FinancialLLM(str(tiny_models[arch]), profile="cpu", settings=s, load=load)
        app = create_app(llm, s)
        transport = httpx.ASGITransport(app, raise_app_exceptions=raise_app_exceptions)
        client = httpx.AsyncClient(transport=transport, base_url="http://localhost")
        served = Served(client, app, llm, s)
        made.append(served)
        return served

    yield make
    for served in made:
        await served.client.aclose()
        served.app.state.telemetry.close()  # ASGITransport runs no lifespan: close by hand
        served.llm.close()


@pytest_asyncio.fixture
async def server(serve: Serve) -> Served:
    """The default server: tiny llama, default settings, no keys."""
    return await serve()


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


@pytest.fixture(scope="session")
def llama_tokenizer(tiny_models: dict[str, Path]) -> Any:
    """The tiny llama's own tokenizer, to count prompt tokens independently of lcfin."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models["llama"])
