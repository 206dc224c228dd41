"""Property-based fuzz of every endpoint in /openapi.json (schemathesis over the ASGI app).

Valid and invalid requests, generated from the published schema, must never get a 5xx; every
error must be the OpenAI envelope; the server must still be healthy afterwards. Bounded by
FUZZ_EXAMPLES per operation and mode (default 15: about a minute on two cores); CI may raise it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
ENVELOPE = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def fuzz_app(tiny_models: dict[str, Path]) -> Iterator[Any]:
    """The app over the tiny Llama, with a small context so generations stay short."""
    from lcfin import FinancialLLM, Settings
    from lcfin.server.app import create_app

    # schemathesis sends Host: testserver, which the Host allow-list must accept here
    settings = Settings(usage_db="off", max_messages=64, allowed_hosts="testserver")
    llm = FinancialLLM(str(tiny_models["llama"]), profile="cpu", settings=settings)
    app = create_app(llm, settings)
    yield app
    app.state.telemetry.close()
    llm.close()


def _check(response: Any, label: str) -> None:
    assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) >= ENVELOPE, f"{label}: {error}"
        assert isinstance(error["message"], str) and error["message"]


def _operations(app: Any) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation: Any, mode: Any, served: str | None) -> int:
    """Run EXAMPLES generated cases of `operation` in `mode`; how many ran."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    label, calls = f"{mode.value} {operation.method.upper()} {operation.path}", [0]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case: Any) -> None:
        calls[0] += 1
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            case.body["model"] = served  # reach the engine, not only the 404
        _check(case.call(), label)

    run()
    return calls[0]


def test_every_operation_survives_fuzzing(fuzz_app: Any) -> None:
    from schemathesis import GenerationMode

    operations = _operations(fuzz_app)
    assert len(operations) >= 10
    served, calls = fuzz_app.state.llm.model, 0
    for operation in operations:
        if operation.path == "/load-model":
            continue  # admin: a fuzzed switch would only test the hub's offline error
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            calls += _fuzz(operation, mode, served)
    assert calls >= 5 * len(operations)  # the fuzz really ran
    health = fuzz_app.state.llm.status()
    assert health.model is not None and health.error is None


def test_malformed_bodies_get_the_envelope(fuzz_app: Any) -> None:
    from starlette.testclient import TestClient

    client = TestClient(fuzz_app, raise_server_exceptions=False, base_url="http://localhost")
    bodies = [b"", b"{", b"[]", b"null", b'"x"', b"\xff\xfe\x00", b'{"model": 1}', b"[" * 100_000]
    for path in ("/v1/chat/completions", "/v1/completions", "/inference"):
        for body in bodies:
            response = client.post(path, content=body, headers={"content-type": "application/json"})
            _check(response, f"POST {path} {body[:20]!r}")
            assert response.status_code == 400
    assert client.get("/health").status_code == 200
