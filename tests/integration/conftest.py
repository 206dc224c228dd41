"""Real uvicorn servers on 127.0.0.1 over `create_app` and tiny models (S16, second layer).

Each server runs in a thread on a port the OS picks; the fixture waits for `server.started` and
sets `should_exit` on teardown. The module- and session-scoped servers are built before the
autouse `clean_environ` fixture runs, so they clear the environment themselves while they
create their Settings and model.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from openai import AsyncOpenAI, OpenAI

from lcfin import FinancialLLM, Settings
from lcfin.server.app import create_app, uvicorn_options
from tests.backends import BackendUnderTest, backend_under_test

# The seed variables tests/conftest.py::clean_environ also clears.
SEED_VARS = ("HF_TOKEN_LC", "HF_TOKEN", "MODEL_NAME", "DEPLOYMENT_ENV", "USE_VLLM", "HF_HOME")
ADMIN_KEY = "sk-lcfin-itest-admin-2b7e"
API_KEY = "sk-lcfin-itest-key-9c41"


@dataclass
class LiveServer:
    """A running server: its root URL, its model, and the OpenAI base URL."""

    url: str
    llm: FinancialLLM
    settings: Settings

    @property
    def model(self) -> str:
        """The id of the model served right now."""
        assert self.llm.model is not None
        return self.llm.model

    @property
    def base_url(self) -> str:
        """What the openai client takes as base_url."""
        return f"{self.url}/v1"


@contextmanager
def _clean_env(hf_home: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name in SEED_VARS or name.startswith("LCFIN_"):
                mp.delenv(name)
        mp.setenv("HF_HOME", str(hf_home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@contextmanager
def run_uvicorn(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread, as `lcfin serve` does; yields its root URL.

    It binds `app.state.settings.host` (0.0.0.0 for the tests of a server that listens beyond
    loopback) and the URL always goes through 127.0.0.1: tests never leave loopback.
    """
    settings = getattr(app.state, "settings", None)  # None: not an lcfin app
    host = settings.host if settings is not None else "127.0.0.1"
    options = uvicorn_options(settings) if settings is not None else {}
    config = uvicorn.Config(
        app, host=host, port=0, log_level="warning", log_config=None, access_log=False,
        **options,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "uvicorn did not shut down"


@contextmanager
def live_server(
    model: Path | str,
    hf_home: Path,
    backend: BackendUnderTest | None = None,
    **settings: Any,
) -> Iterator[LiveServer]:
    """A FinancialLLM on `model` (a directory or an alias such as "demo") behind a real uvicorn,
    on `backend`'s CPU profile (default: Transformers on `cpu`)."""
    backend = backend or backend_under_test("transformers", hf_home)
    with _clean_env(hf_home):
        s = backend.settings(_env_file=None, **settings)
        llm = backend.llm(model, settings=s)
    try:
        with run_uvicorn(create_app(llm, s)) as url:
            yield LiveServer(url, llm, s)
    finally:
        llm.close()


@pytest.fixture(scope="session")
def live(
    tiny_models: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    backend: BackendUnderTest,
):
    """The shared server: tiny llama, no keys. Tests must not change its model."""
    home = tmp_path_factory.mktemp("hf-live")
    with live_server(tiny_models["llama"], home, backend) as server:
        yield server


@pytest.fixture(scope="session")
def live_keyed(
    tiny_models: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    backend: BackendUnderTest,
):
    """A second server that needs API_KEY (and ADMIN_KEY for admin routes)."""
    home = tmp_path_factory.mktemp("hf-keyed")
    keys = {"api_keys": API_KEY, "admin_key": ADMIN_KEY}
    with live_server(tiny_models["llama"], home, backend, **keys) as server:
        yield server


@pytest.fixture
def make_live(
    tiny_models: dict[str, Path], tmp_path: Path, backend: BackendUnderTest
) -> Iterator[Callable[..., LiveServer]]:
    """Factory: a server of one's own (e.g. to switch its model), stopped after the test."""
    with ExitStack() as stack:

        def make(arch: str = "llama", **settings: Any) -> LiveServer:
            return stack.enter_context(
                live_server(tiny_models[arch], tmp_path / "hf-home", backend, **settings)
            )

        yield make


@pytest.fixture
def client(live: LiveServer) -> Iterator[OpenAI]:
    """The official OpenAI client, pointed at `live`."""
    with OpenAI(base_url=live.base_url, api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest_asyncio.fixture
async def aclient(live: LiveServer) -> AsyncIterator[AsyncOpenAI]:
    """The official async OpenAI client, pointed at `live`."""
    async with AsyncOpenAI(
        base_url=live.base_url, api_key="unused", max_retries=0, timeout=60
    ) as c:
        yield c
