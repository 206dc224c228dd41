"""The seed-compatible admin routes: health, models, switching, /inference and the API docs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from lcfin import list_models
from tests.backends import BackendUnderTest
from tests.server.schemas import assert_valid
from tests.server.support import PROMPT, LoadGate, Serve, Served, wait_loaded

pytestmark = pytest.mark.asyncio


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert_valid(response.json(), "ErrorResponse")
    error = response.json()["error"]
    if code is not None:
        assert error["code"] == code
    return error


async def load_model(served: Served, name: str, **kw: Any) -> httpx.Response:
    return await served.client.post("/load-model", params={"model_name": name}, **kw)


# -- health ---------------------------------------------------------------------------------


@pytest.mark.any_backend
async def test_health_reports_the_served_model(server: Served, backend: BackendUnderTest):
    r = await server.client.get("/health")

    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy"
    assert body["model_loaded"] is True
    assert body["current_model"] == server.model
    assert body["backend"] == backend.kind
    assert body["profile"] == backend.profile
    assert body["gpu_available"] is False
    assert isinstance(body["uptime"], int | float)
    assert body["uptime"] >= 0
    assert isinstance(body["version"], str)
    assert body["version"]


@pytest.mark.any_backend
async def test_ready_is_200_when_a_model_serves(server: Served):
    r = await server.client.get("/health/ready")

    assert r.status_code == 200
    assert r.json() == {"status": "ready"}


async def test_ready_is_503_with_retry_after_without_a_model(serve: Serve):
    server = await serve(load=False)  # no lifespan under ASGITransport: nothing loads it

    ready = await server.client.get("/health/ready")
    health = await server.client.get("/health")

    assert ready.status_code == 503
    assert int(ready.headers["retry-after"]) > 0
    assert ready.json()["status"] == "idle"  # documented; no more undocumented "starting"
    assert health.status_code == 200
    assert health.json()["model_loaded"] is False
    assert health.json()["current_model"] is None
    assert health.json()["status"] == "idle"


async def test_health_names_the_architecture(server: Served):
    body = (await server.client.get("/health")).json()

    assert body["architecture"] == "LlamaForCausalLM"  # the seed's field, from config.json


async def test_inference_without_a_model_is_503(serve: Serve):
    server = await serve(load=False)

    r = await server.client.post("/inference", json={"prompt": PROMPT, "max_new_tokens": 2})

    assert_error(r, 503, code="backend_unavailable")


async def test_chat_without_a_model_is_503_backend_unavailable(serve: Serve):
    server = await serve(load=False)

    r = await server.client.post(
        "/v1/chat/completions",
        json={"model": "anything", "messages": [{"role": "user", "content": PROMPT}]},
    )

    error = assert_error(r, 503)
    assert error["code"] in {"backend_unavailable", "model_loading"}


# -- /models --------------------------------------------------------------------------------


@pytest.mark.any_backend
async def test_models_lists_the_catalog_by_alias(server: Served):
    r = await server.client.get("/models")

    assert r.status_code == 200
    body = r.json()
    assert body["current_model"] == server.model
    expected = {alias: spec.repo_id for alias, spec in list_models().items()}
    assert body["available_models"] == expected
    assert "demo" in body["available_models"]


async def test_models_gives_the_planners_numbers_for_the_served_model(server: Served):
    from lcfin import plan_memory

    plan = (await server.client.get("/models")).json()["plan"]

    st = server.llm.status()
    expected = plan_memory(st.model, st.profile, max_model_len=st.max_model_len)
    assert plan["profile"] == "cpu" and plan["backend"] == "transformers"
    assert plan["kv_cache_tokens"] == expected.kv_cache_tokens > 0
    assert plan["max_concurrency"] == pytest.approx(expected.max_concurrency)
    assert plan["max_model_len"] == st.max_model_len


async def test_models_has_no_plan_without_a_model(serve: Serve):
    server = await serve(load=False)

    body = (await server.client.get("/models")).json()

    assert body["current_model"] is None and body["plan"] is None


# -- /load-model ----------------------------------------------------------------------------


@pytest.mark.any_backend
async def test_switch_model_in_the_background(
    serve: Serve, tiny_models: dict[str, Path], load_gate: LoadGate, backend: BackendUnderTest
):
    server = await serve(local_models_root=tiny_models["qwen3"].parent)
    llama, qwen = server.model, str(tiny_models["qwen3"])
    load_gate.close()

    r = await load_model(server, qwen)

    assert r.status_code == 202, r.text
    assert r.json() == {
        "message": r.json()["message"],
        "model_name": qwen,
        "display_name": "qwen3",
        "status": "loading_started",
        "backend_type": backend.kind,
    }
    assert "qwen3" in r.json()["message"]

    # While the new model loads, the old one keeps serving.
    status = (await server.client.get("/loading-status")).json()
    assert status["status"] == "loading"
    assert status["model"] == qwen
    assert status["current_model"] == llama
    health = (await server.client.get("/health")).json()
    assert health["status"] == "switching"
    assert health["current_model"] == llama
    ready = await server.client.get("/health/ready")  # blue/green: the old model serves
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}
    assert (await server.chat(max_tokens=2)).status_code == 200
    early = await server.chat(model=qwen, max_tokens=2)
    assert_error(early, 503, code="model_loading")
    assert int(early.headers["retry-after"]) > 0

    # A second load while one runs is a conflict.
    again = await load_model(server, str(tiny_models["gpt_neox"]))
    assert_error(again, 409, code="conflict")

    load_gate.open()
    final = await wait_loaded(server.client)

    assert final["status"] == "ready"
    assert final["current_model"] == qwen
    assert final["error"] is None
    health = (await server.client.get("/health")).json()
    assert health["current_model"] == qwen
    assert health["status"] == "healthy"
    models = (await server.client.get("/v1/models")).json()
    assert models["data"][0]["id"] == qwen
    assert (await server.chat(model=qwen, max_tokens=2)).status_code == 200
    assert_error(await server.chat(model=llama, max_tokens=2), 404, code="model_not_found")


async def test_switch_back_with_a_json_body(serve: Serve, tiny_models: dict[str, Path]):
    server = await serve(local_models_root=tiny_models["qwen3"].parent)
    llama, qwen = server.model, str(tiny_models["qwen3"])

    assert (await load_model(server, qwen)).status_code == 202
    assert (await wait_loaded(server.client))["current_model"] == qwen
    r = await server.client.post("/load-model", json={"model_name": llama})

    assert r.status_code == 202, r.text
    assert (await wait_loaded(server.client))["current_model"] == llama
    assert server.llm.model == llama


@pytest.mark.any_backend
async def test_failed_load_keeps_the_old_model_serving(
    serve: Serve, tiny_models: dict[str, Path], tmp_path: Path
):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(tiny_models["qwen3"] / "config.json", broken)  # no weights, no tokenizer
    server = await serve(local_models_root=tmp_path)

    assert (await load_model(server, str(broken))).status_code == 202
    final = await wait_loaded(server.client)

    assert final["status"] == "failed"
    assert final["model"] == final["failed_model"] == str(broken)  # the one that failed
    assert final["current_model"] == server.model
    assert final["load_time_seconds"] == server.llm.status().load_time_s
    assert final["error"]
    health = (await server.client.get("/health")).json()
    assert health["status"] == "failed"  # until the next load
    assert (health["failed_model"], health["error"]) == (str(broken), final["error"])
    assert health["failed_at"] == final["failed_at"] > 0
    assert (await server.client.get("/health/ready")).status_code == 200  # the old one serves
    assert (await server.chat(max_tokens=2)).status_code == 200


async def test_a_model_that_cannot_fit_is_refused_with_422_and_nothing_unloaded(serve: Serve):
    server = await serve()
    before = server.llm.loaded

    r = await load_model(server, "llama3.1-70b")  # 70B on the CPU profile's 16 GiB

    error = assert_error(r, 422, code="model_does_not_fit")
    assert "does not fit profile cpu" in error["message"]
    assert server.llm.loaded is before and not before.backend._closed  # type: ignore[union-attr]
    status = (await server.client.get("/loading-status")).json()
    assert (status["status"], status["model"]) == ("failed", "llama3.1-70b")
    assert (await server.chat(max_tokens=2)).status_code == 200


async def test_loading_the_loaded_model_says_so(serve: Serve, tiny_models: dict[str, Path]):
    server = await serve(local_models_root=tiny_models["llama"].parent)

    r = await load_model(server, server.model)

    assert r.status_code == 200, r.text
    assert r.json()["status"] == "already_loaded"
    assert "already loaded" in r.json()["message"]
    assert (await server.client.get("/loading-status")).json()["status"] == "ready"


@pytest.mark.parametrize("name", ["qwen3-tiny", "gpt-4o", "meta-llama/Llama-3.1-8B"])
async def test_only_catalog_aliases_load_by_default(serve: Serve, name: str):
    server = await serve()

    r = await load_model(server, name)

    error = assert_error(r, 404, code="model_not_found")
    assert error["param"] == "model_name"
    assert server.llm.status().state == "ready"


async def test_a_directory_is_not_a_catalog_alias(serve: Serve, tiny_models: dict[str, Path]):
    server = await serve()

    r = await load_model(server, str(tiny_models["qwen3"]))

    assert_error(r, 404, code="model_not_found")


async def test_load_model_needs_a_model_name(server: Served):
    r = await server.client.post("/load-model")

    error = assert_error(r, 400)
    assert error["param"] == "model_name"


# -- /inference -----------------------------------------------------------------------------


@pytest.mark.any_backend
async def test_inference_answers_like_chat(server: Served):
    chat = (await server.chat(max_tokens=5, temperature=0.0)).json()

    r = await server.client.post(
        "/inference", json={"prompt": PROMPT, "max_new_tokens": 5, "temperature": 0}
    )

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["response"] == chat["choices"][0]["message"]["content"]
    assert body["model_used"] == server.model
    assert body["usage"] == chat["usage"]
    assert body["usage"]["completion_tokens"] <= 5
    assert body["timings"]["total_s"] > 0
    assert body["timings"]["time_to_first_token_s"] <= body["timings"]["total_s"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": PROMPT, "max_new_tokens": 0}, "max_new_tokens"),
        ({"prompt": PROMPT, "max_new_tokens": "10"}, "max_new_tokens"),  # as /v1 would
        ({"prompt": PROMPT, "temperature": "0.5"}, "temperature"),
    ],
    ids=str,
)
async def test_inference_rejects_bad_bodies(server: Served, body, param):
    r = await server.client.post("/inference", json=body)

    assert assert_error(r, 400)["param"] == param


async def test_inference_errors_use_its_own_field_names(serve: Serve):
    server = await serve()
    limit = server.llm.status().max_model_len
    assert limit is not None

    too_long = await server.client.post(
        "/inference", json={"prompt": "liquidity " * limit, "max_new_tokens": 4}
    )
    too_many = await server.client.post(
        "/inference", json={"prompt": PROMPT, "max_new_tokens": limit}
    )

    error = assert_error(too_long, 400, code="context_length_exceeded")
    assert error["param"] == "prompt"
    assert (
        "the prompt needs" in error["message"] and "max_new_tokens asks for 4" in error["message"]
    )
    assert "messages" not in error["message"] and "max_tokens " not in error["message"]
    error = assert_error(too_many, 400, code="context_length_exceeded")
    assert error["param"] == "max_new_tokens"
    assert error["message"].startswith(f"max_new_tokens is too large: {limit}")


# -- API description ------------------------------------------------------------------------


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [ref for value in node.values() for ref in _refs(value)] + (
            [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        )
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


async def test_openapi_json_describes_the_v1_routes(server: Served):
    r = await server.client.get("/openapi.json")

    assert r.status_code == 200
    document = r.json()
    assert document["openapi"].startswith("3.")
    for path, method in [
        ("/v1/chat/completions", "post"),
        ("/v1/completions", "post"),
        ("/v1/models", "get"),
    ]:
        assert method in document["paths"][path]
    refs = _refs(document)
    assert refs
    for ref in refs:  # every $ref points at something that exists
        assert _resolve(document, ref) is not None, ref


async def test_docs_is_an_html_page_over_openapi_json(server: Served):
    r = await server.client.get("/docs")

    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "openapi.json" in r.text
    assert "<html" in r.text.lower()
