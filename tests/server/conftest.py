"""In-process server fixtures: `create_app` over a real FinancialLLM on a tiny model (S16).

`serve(**settings)` builds `create_app(FinancialLLM(<tiny llama>, profile=..., settings=s), s)`
with `s = Settings(**settings)` on the backend under test (tests/backends.py: Transformers on
the cpu profile, or vLLM's CPU build) and returns a `Served` (client, app, llm, settings). The
client is an `httpx.AsyncClient` over `httpx.ASGITransport`, which does not run the lifespan:
the model is loaded by FinancialLLM's constructor (or not at all with `load=False`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from lcfin.server.app import create_app
from tests.backends import BackendUnderTest
from tests.server.support import Serve, Served


@pytest_asyncio.fixture
async def serve(tiny_models: dict[str, Path], backend: BackendUnderTest) -> AsyncIterator[Serve]:
    """Factory: an in-process server over a fresh FinancialLLM; Settings(**kw) per call."""
    made: list[Served] = []

    async def make(
        arch: str = "llama",
        *,
        load: bool = True,
        raise_app_exceptions: bool = True,
        **settings: Any,
    ) -> Served:
        s = backend.settings(**settings)
        llm = backend.llm(tiny_models[arch], settings=s, load=load)
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


@pytest.fixture(scope="session")
def llama_tokenizer(tiny_models: dict[str, Path]) -> Any:
    """The tiny llama's own tokenizer, to count prompt tokens independently of lcfin."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models["llama"])
