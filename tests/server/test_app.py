"""`create_app`'s lifespan (the background start-up load) and the model's own clean-up.

These run the app's lifespan, which `httpx.ASGITransport` skips, through Starlette's TestClient.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from lcfin import FinancialLLM, Settings
from lcfin.server.app import create_app
from tests.server.support import PROMPT


@pytest.fixture
def lazy_llm() -> Iterator[Any]:
    """Factory: a FinancialLLM, by default one that has not loaded its model; closed after."""
    made: list[FinancialLLM] = []

    def make(model: Path, *, load: bool = False) -> FinancialLLM:
        llm = FinancialLLM(str(model), profile="cpu", settings=Settings(), load=load)
        made.append(llm)
        return llm

    yield make
    for llm in made:
        llm.close()


def wait_for(client: TestClient, path: str, done: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(path)
        if done(r):
            return r
        assert time.monotonic() < deadline, f"{path} never settled: {r.status_code} {r.text}"
        time.sleep(0.02)


def test_lifespan_loads_the_initial_model_in_the_background(lazy_llm, tiny_models):
    llm = lazy_llm(tiny_models["llama"])
    app = create_app(llm, llm.settings)

    with TestClient(app, base_url="http://localhost") as client:
        assert client.get("/health").status_code == 200  # answers while the model loads
        ready = wait_for(client, "/health/ready", lambda r: r.status_code == 200)
        chat = client.post(
            "/v1/chat/completions",
            json={"model": llm.initial_model, "messages": [{"role": "user", "content": PROMPT}],
                  "max_tokens": 2},
        )  # fmt: skip

    assert ready.json() == {"status": "ready"}
    assert llm.model == str(tiny_models["llama"])
    assert chat.status_code == 200, chat.text


def test_a_failed_start_up_load_is_reported_not_raised(lazy_llm, tiny_models, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(tiny_models["llama"] / "config.json", broken)  # no weights, no tokenizer
    llm = lazy_llm(broken)
    app = create_app(llm, llm.settings)

    with TestClient(app, base_url="http://localhost") as client:
        health = wait_for(client, "/health", lambda r: r.json()["status"] != "loading")
        ready = client.get("/health/ready")

    assert health.json()["status"] == "failed"
    assert health.json()["model_loaded"] is False
    assert health.json()["error"]
    assert ready.status_code == 503
    assert ready.json() == {"status": "failed"}
    assert "retry-after" in ready.headers


def test_an_initial_model_that_does_not_resolve_shows_failed_not_idle(tiny_models):
    settings = Settings()
    llm = FinancialLLM("nosuch", profile="cpu", settings=settings, load=False)
    try:
        with TestClient(create_app(llm, settings), base_url="http://localhost") as client:
            health = client.get("/health").json()
            status = client.get("/loading-status").json()
    finally:
        llm.close()

    assert (health["status"], health["failed_model"]) == ("failed", "nosuch")
    assert "Unknown model 'nosuch'" in health["error"]
    assert (status["status"], status["model"], status["error"]) == (
        "failed",
        "nosuch",
        health["error"],
    )


def test_lifespan_does_not_reload_a_loaded_model(lazy_llm, tiny_models):
    llm = lazy_llm(tiny_models["llama"], load=True)
    loaded_at = llm.status().load_time_s

    with TestClient(create_app(llm, llm.settings), base_url="http://localhost") as client:
        assert client.get("/health/ready").status_code == 200
        assert client.get("/loading-status").json()["status"] == "ready"

    assert llm.status().load_time_s == loaded_at


def test_closing_the_llm_closes_its_event_loop(tiny_models):
    # Regression: LoopThread.close used to stop its loop without closing it, leaking the loop
    # and its self-pipe sockets (ResourceWarning, an error here) after every close().
    llm = FinancialLLM(str(tiny_models["llama"]), profile="cpu", settings=Settings())
    loop = llm._loop._loop
    assert loop is not None
    try:
        llm.close()
        deadline = time.monotonic() + 5
        while loop.is_running() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert loop.is_closed()
    finally:
        if not loop.is_closed():  # do not leak it into later tests
            loop.close()
