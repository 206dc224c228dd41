"""API keys (deny by default), the admin key, and keeping both out of bodies and logs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.server.schemas import assert_valid
from tests.server.support import PROMPT, Serve, Served, wait_loaded

pytestmark = pytest.mark.asyncio

# Distinctive keys, so that finding one in a body or a log line cannot be a coincidence.
KEY1, KEY2 = "sk-lcfin-test-k1-4f9d0c", "sk-lcfin-test-k2-81c2aa"
ADMIN = "sk-lcfin-admin-77e1b3"
WRONG = "sk-lcfin-wrong-5a5a5a"
SECRETS = (KEY1, KEY2, ADMIN, WRONG)

PROTECTED = [
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("GET", "/models"),
    ("GET", "/loading-status"),
    ("POST", "/inference"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/no-such-route"),  # deny by default: unknown routes do not leak a 404
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_refused(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert_valid(response.json(), "ErrorResponse")
    error = response.json()["error"]
    if status == 401:
        assert error["type"] == "authentication_error"
        assert error["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"
    else:
        assert error["type"] == "permission_error"
    assert response.headers["x-request-id"]
    return error


async def request(served: Served, method: str, path: str, key: str | None = None):
    """A valid request for `path` (so that an accepted key gets a 200)."""
    body: dict[str, Any] | None = None
    if path == "/v1/chat/completions":
        body = {"model": served.model, "messages": [{"role": "user", "content": PROMPT}]}
    elif path == "/v1/completions":
        body = {"model": served.model, "prompt": PROMPT}
    elif path == "/inference":
        body = {"prompt": PROMPT}
    if body is not None:
        body["max_tokens" if path != "/inference" else "max_new_tokens"] = 2
    headers = bearer(key) if key is not None else None
    return await served.client.request(method, path, json=body, headers=headers)


@pytest_asyncio.fixture
async def keyed(serve: Serve) -> Served:
    return await serve(api_keys=f"{KEY1},{KEY2}")


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_no_key_is_a_401(keyed: Served, method, path):
    r = await request(keyed, method, path)

    assert_refused(r, 401)


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_wrong_key_is_a_401(keyed: Served, method, path):
    r = await request(keyed, method, path, key=WRONG)

    error = assert_refused(r, 401)
    assert WRONG not in error["message"]


@pytest.mark.parametrize(
    "authorization", [KEY1, f"Basic {KEY1}", "Bearer", "Bearer ", f"Token {KEY1}"]
)
async def test_malformed_authorization_is_a_401(keyed: Served, authorization):
    r = await keyed.client.get("/v1/models", headers={"Authorization": authorization})

    assert_refused(r, 401)


@pytest.mark.parametrize(("method", "path"), [p for p in PROTECTED if p[1] != "/no-such-route"])
@pytest.mark.parametrize("key", [KEY1, KEY2], ids=["k1", "k2"])
async def test_a_configured_key_is_accepted(keyed: Served, method, path, key):
    r = await request(keyed, method, path, key=key)

    assert r.status_code == 200, r.text


async def test_an_accepted_key_reaches_the_real_404(keyed: Served):
    r = await keyed.client.get("/no-such-route", headers=bearer(KEY1))

    assert r.status_code == 404


@pytest.mark.parametrize("path", ["/health", "/health/ready"])
async def test_health_routes_are_open(keyed: Served, path):
    r = await keyed.client.get(path)

    assert r.status_code == 200


async def test_api_keys_may_be_a_file_of_keys(serve: Serve, tmp_path: Path):
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# serving keys\n{KEY1}\n\n  {KEY2}  \n")
    served = await serve(api_keys=str(key_file))

    for key in (KEY1, KEY2):
        assert (await served.client.get("/v1/models", headers=bearer(key))).status_code == 200
    assert_refused(await served.client.get("/v1/models"), 401)
    for not_a_key in ("# serving keys", str(key_file), WRONG):
        r = await served.client.get("/v1/models", headers=bearer(not_a_key))
        assert_refused(r, 401)


# -- the admin key ---------------------------------------------------------------------------


async def test_admin_routes_are_refused_with_keys_and_no_admin_key(keyed: Served, tiny_models):
    name = str(tiny_models["qwen3"])

    with_key = await keyed.client.post(
        "/load-model", params={"model_name": name}, headers=bearer(KEY1)
    )
    without = await keyed.client.post("/load-model", params={"model_name": name})

    error = assert_refused(with_key, 403)
    assert "LCFIN_ADMIN_KEY" in error["message"]
    assert_refused(without, 401)
    assert keyed.llm.status().state == "ready"


async def test_admin_key_guards_load_model(serve: Serve, tiny_models):
    served = await serve(
        api_keys=KEY1, admin_key=ADMIN, local_models_root=tiny_models["qwen3"].parent
    )
    params = {"model_name": str(tiny_models["qwen3"])}

    no_key = await served.client.post("/load-model", params=params)
    normal_key = await served.client.post("/load-model", params=params, headers=bearer(KEY1))
    wrong_key = await served.client.post("/load-model", params=params, headers=bearer(WRONG))
    admin_key = await served.client.post("/load-model", params=params, headers=bearer(ADMIN))

    assert_refused(no_key, 401)
    assert_refused(normal_key, 403)
    assert_refused(wrong_key, 403)
    assert admin_key.status_code == 202, admin_key.text
    final = await wait_loaded(served.client, headers=bearer(KEY1))
    assert final["current_model"] == params["model_name"]


async def test_admin_key_alone_guards_only_admin_routes(serve: Serve, tiny_models):
    served = await serve(admin_key=ADMIN)
    params = {"model_name": str(tiny_models["qwen3"])}

    assert (await served.client.get("/v1/models")).status_code == 200
    assert_refused(await served.client.post("/load-model", params=params), 401)
    assert_refused(
        await served.client.post("/load-model", params=params, headers=bearer(KEY1)), 403
    )


async def test_the_admin_key_is_also_an_api_key(serve: Serve):
    served = await serve(api_keys=KEY1, admin_key=ADMIN)

    r = await served.client.get("/v1/models", headers=bearer(ADMIN))

    assert r.status_code == 200


# -- CORS ------------------------------------------------------------------------------------


async def test_cors_preflight_needs_no_key(serve: Serve):
    served = await serve(api_keys=KEY1, cors_origins="https://app.example")

    r = await served.client.options(
        "/v1/chat/completions",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )

    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    simple = await served.client.get(
        "/v1/models", headers={**bearer(KEY1), "Origin": "https://app.example"}
    )
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


# -- secrets stay secret ---------------------------------------------------------------------


async def test_keys_never_appear_in_bodies_or_logs(serve: Serve, tiny_models, caplog):
    caplog.set_level(logging.DEBUG)
    served = await serve(
        api_keys=f"{KEY1},{KEY2}", admin_key=ADMIN, local_models_root=tiny_models["llama"].parent
    )
    responses = []
    for key in (None, WRONG, KEY1, KEY2, ADMIN):
        for method, path in PROTECTED:
            responses.append(await request(served, method, path, key=key))
        responses.append(await served.client.get("/health", headers=bearer(key or WRONG)))
        responses.append(
            await served.client.post(
                "/load-model",  # another model: the served one answers 200 "already loaded"
                params={"model_name": str(tiny_models["qwen3"])},
                headers=bearer(key) if key else None,
            )
        )
    responses.append(await served.client.get("/loading-status", headers=bearer(KEY1)))
    await wait_loaded(served.client, headers=bearer(KEY1))

    assert {r.status_code for r in responses} >= {200, 202, 401, 403}
    for r in responses:
        exposed = r.text + " ".join(f"{k}: {v}" for k, v in r.headers.items())
        for secret in SECRETS:
            assert secret not in exposed, f"{r.request.url} leaked a key"
    assert caplog.records, "the server logged nothing at DEBUG: the check would be vacuous"
    for secret in SECRETS:
        assert secret not in caplog.text
    assert all(secret not in repr(served.settings) for secret in SECRETS)
