"""The statuses the OpenAPI document (and so docs/api.md) declares are the ones the routes answer.

Every documented route is called in the situations that give each of its statuses; a success
status the document does not name, or a named one never seen, fails (see #17: docs/api.md said
/load-model answers 200, the server answers 202).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from lcfin.server.docs import openapi_document
from tests.server.support import PROMPT, Serve, wait_loaded

pytestmark = pytest.mark.asyncio


async def test_every_route_answers_only_documented_statuses(
    serve: Serve, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    seen: dict[tuple[str, str], set[int]] = defaultdict(set)
    served = await serve(
        local_models_root=tiny_models["qwen3"].parent, usage_db=str(tmp_path / "usage.db")
    )
    idle = await serve(load=False)
    chat = {"model": served.model, "messages": [{"role": "user", "content": PROMPT}]}
    calls = [
        (served, "GET", "/health", None), (idle, "GET", "/health", None),
        (served, "GET", "/health/ready", None), (idle, "GET", "/health/ready", None),
        (served, "GET", "/models", None), (served, "GET", "/loading-status", None),
        (served, "POST", "/v1/chat/completions", {**chat, "max_tokens": 2}),
        (served, "POST", "/v1/chat/completions", {**chat, "max_tokens": 0}),
        (served, "POST", "/v1/completions", {"model": served.model, "prompt": "Q"}),
        (served, "GET", "/v1/models", None),
        (served, "POST", "/inference", {"prompt": PROMPT, "max_new_tokens": 2}),
        (served, "POST", "/inference", {"prompt": ""}),
        (served, "POST", f"/load-model?model_name={served.model}", None),  # already loaded
        (served, "POST", f"/load-model?model_name={tiny_models['qwen3']}", None),  # starts
        (served, "POST", "/load-model?model_name=llama3.1-70b", None),  # does not fit
        (served, "GET", "/metrics", None),
        (served, "GET", "/analytics/performance", None),
        (served, "GET", "/analytics/usage", None), (served, "GET", "/analytics/costs", None),
        (served, "GET", "/analytics/costs?window=1y", None),
    ]  # fmt: skip
    for app, method, url, body in calls:
        response = await app.client.request(method, url, json=body)
        seen[(method.lower(), url.split("?")[0])].add(response.status_code)
        if "load-model" in url and response.status_code == 202:
            await wait_loaded(served.client)
    now_serving = served.llm.status().model  # the model /load-model switched to
    created = await served.client.post(
        "/v1/responses", json={"model": now_serving, "input": PROMPT, "max_output_tokens": 16}
    )
    seen[("post", "/v1/responses")].add(created.status_code)
    assert created.status_code == 200, created.text
    by_id = f"/v1/responses/{created.json()['id']}"
    for method in ("GET", "DELETE", "GET"):  # the last one: deleted, so 404
        response = await served.client.request(method, by_id)
        seen[(method.lower(), "/v1/responses/{response_id}")].add(response.status_code)

    document = openapi_document()
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            declared = {int(s) for s in op["responses"] if s != "default"}
            statuses = seen[(method, path)]
            assert statuses, f"{method.upper()} {path} was not exercised"
            undeclared = {
                s for s in statuses - declared if s < 400 or "default" not in op["responses"]
            }
            assert not undeclared, f"{method.upper()} {path} answered {undeclared}, not documented"
            assert declared <= statuses, f"{method.upper()} {path}: {declared - statuses} unseen"
