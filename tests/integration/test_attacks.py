"""Issue #16, requests: each probe of the report, against a real uvicorn server, must fail.

Servers run in a thread (tests/integration/conftest.py) exactly as `lcfin serve` configures
uvicorn; a server "beyond loopback" binds 0.0.0.0. Every request goes through 127.0.0.1, with
forged Host, Origin and X-Forwarded-For headers where the attack needs them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ADMIN_KEY, API_KEY, LiveServer

pytestmark = pytest.mark.integration

EVIL = "https://evil.example"
MESSAGES = [{"role": "user", "content": "Define EBITDA."}]


def _client(server: LiveServer, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    return error


# -- a web page in the operator's browser (CSRF, DNS rebinding) --------------------------------


def test_a_web_page_cannot_start_a_download(live: LiveServer):
    """The report's request: text/plain, a foreign Origin and Host, on /load-model."""
    forged = {"Content-Type": "text/plain", "Origin": EVIL, "Host": "evil.example"}
    with _client(live) as c:
        together = c.post("/load-model?model_name=llama3.1-70b", headers=forged, content="x")
        by_origin = c.post("/load-model?model_name=llama3.1-70b", headers={"Origin": EVIL})
        by_host = c.post("/load-model?model_name=llama3.1-70b", headers={"Host": "evil.example"})
        by_type = c.post(
            "/v1/chat/completions", headers={"Content-Type": "text/plain"},
            content=f'{{"model": "{live.model}", "messages": [], "max_tokens": 1}}',
        )  # fmt: skip
        status = c.get("/loading-status").json()

    assert _error(together, 403)["param"] == "Host"
    assert _error(by_origin, 403)["param"] == "Origin"
    assert _error(by_host, 403)["param"] == "Host"
    assert _error(by_type, 415)["param"] == "Content-Type"
    assert status["status"] != "loading" and status["current_model"] == live.model


def test_dns_rebinding_cannot_read_replies(live: LiveServer):
    port = live.url.rsplit(":", 1)[1]
    with _client(live) as c:
        rebound = c.get("/v1/models", headers={"Host": f"evil.example:{port}"})
        chat = c.post(
            "/v1/chat/completions", headers={"Host": f"evil.example:{port}", "Origin": EVIL},
            json={"model": live.model, "messages": MESSAGES, "max_tokens": 2},
        )  # fmt: skip
        probe = c.get("/health", headers={"Host": f"evil.example:{port}"})
        named = [c.get("/v1/models", headers={"Host": h}) for h in ("localhost", "127.0.0.1")]

    _error(rebound, 403)
    _error(chat, 403)
    assert probe.status_code == 200 and set(probe.json()) == {"status", "model_loaded"}
    assert [r.status_code for r in named] == [200, 200]


@pytest.mark.parametrize("keyed", [False, True], ids=["no-keys", "keys"])
def test_options_reveals_no_route(live: LiveServer, live_keyed: LiveServer, keyed: bool):
    server = live_keyed if keyed else live
    with _client(server) as c:
        answers = [c.options(p) for p in ("/v1/models", "/load-model", "/no-such-route")]

    assert {r.status_code for r in answers} == {405}
    assert len({r.text for r in answers}) == 1, "one answer, whichever route"


def test_cors_answers_only_listed_origins(make_live: Callable[..., LiveServer]):
    server = make_live(cors_origins="https://app.example")
    preflight = {"Access-Control-Request-Method": "POST"}
    with _client(server) as c:
        listed = c.options(
            "/v1/chat/completions", headers={**preflight, "Origin": "https://app.example"}
        )
        other = c.options("/v1/chat/completions", headers={**preflight, "Origin": EVIL})
        simple = c.get("/v1/models", headers={"Origin": "https://app.example"})
        foreign = c.get("/v1/models", headers={"Origin": EVIL})

    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == "https://app.example"
    _error(other, 403)
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in foreign.headers
    _error(foreign, 403)


# -- admin routes beyond loopback ----------------------------------------------------------------


def test_admin_routes_need_the_admin_key_beyond_loopback(make_live: Callable[..., LiveServer]):
    opened = make_live(host="0.0.0.0", allow_unauthenticated=True)
    keyed = make_live(host="0.0.0.0", api_keys=API_KEY)
    with _client(opened) as c:
        open_answers = [
            c.post("/load-model", params={"model_name": "llama3.1-70b"}),
            c.get("/metrics"),
            c.get("/analytics/usage"),
        ]
        served = c.get("/v1/models")
    with _client(keyed, API_KEY) as c:
        keyed_load = c.post("/load-model", params={"model_name": "llama3.1-70b"})

    for response in [*open_answers, keyed_load]:
        assert "LCFIN_ADMIN_KEY" in _error(response, 403)["message"]
    assert served.status_code == 200  # the opt-in opens the rest, as it says
    assert opened.llm.status().loading_model is None


# -- "one request can stall everyone" ------------------------------------------------------------


def _history(chars: int, turns: int) -> list[dict[str, str]]:
    """`turns` alternating messages of about `chars` characters each (none long alone)."""
    line = "The liquidity coverage ratio requires banks to hold liquid assets. "
    text = (line * (chars // len(line) + 1))[:chars]
    return [{"role": ("user", "assistant")[i % 2], "content": text} for i in range(turns - 1)] + [
        {"role": "user", "content": "And the net stable funding ratio?"}
    ]


def test_a_huge_single_message_is_refused_from_a_prefix(live: LiveServer):
    prompt = ("The liquidity coverage ratio requires banks to hold liquid assets. " * 60_000)[
        :3_900_000
    ]
    body = {"model": live.model, "messages": [{"role": "user", "content": prompt}]}
    with _client(live) as c:
        error = _error(c.post("/v1/chat/completions", json=body), 400)
    assert error["code"] == "context_length_exceeded" and "need more than" in error["message"]


def test_health_answers_while_a_huge_prompt_is_rejected(live: LiveServer):
    """Megabytes of messages, each short enough to be tokenized in full (none is refused from
    its prefix alone), are tokenized off the event loop: /health answers meanwhile."""
    limit = live.llm.status().max_model_len
    assert limit is not None
    chars = 8 * limit  # the longest text that is counted in full
    body = {"model": live.model, "messages": _history(chars, min(1000, 3_800_000 // chars))}
    result: dict[str, Any] = {}

    def attack() -> None:
        started = time.perf_counter()
        result["response"] = httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=300)
        result["took"] = time.perf_counter() - started

    attacker = threading.Thread(target=attack)
    latencies: list[float] = []
    with _client(live) as c:
        attacker.start()
        while attacker.is_alive():
            started = time.perf_counter()
            assert c.get("/health").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    attacker.join()

    assert _error(result["response"], 400)["code"] == "context_length_exceeded"
    assert len(latencies) >= 3, f"the rejection took {result['took']:.2f}s: too quick to tell"
    # Before #16 /health waited for the whole rejection (12.7 s for 10-13 s). The bound
    # is 0.5 s; on a machine so loaded that the rejection itself takes over 10 s, every answer
    # stretches with it, so the bound is 5% of the rejection there: a blocked loop would still
    # hold /health for all of it.
    bound = max(0.5, result["took"] / 20)
    assert max(latencies) < bound, (max(latencies), result["took"])


def test_a_long_history_is_truncated_in_a_few_passes_not_one_per_turn(live: LiveServer):
    """/v1/responses with truncation "auto" drops 1,000 turns of 3.8 MB (LCFIN_MAX_MESSAGES is
    1024): one pass over the text to count, then a few renders of what is kept (one render of
    the rest per dropped turn took some 1,000 renders of 1.9 MB on average)."""
    body = {
        "model": live.model,
        "input": _history(3800, 1000),
        "truncation": "auto",
        "max_output_tokens": 16,
        "store": False,
    }
    with _client(live) as c:
        response = c.post("/v1/responses", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["input_tokens"] < 2000


# -- models from anywhere ------------------------------------------------------------------------


def test_allow_any_model_loads_no_directory_and_reveals_no_path(
    make_live: Callable[..., LiveServer], tiny_models: dict[str, Path], tmp_path: Path
):
    server = make_live(allow_any_model=True)
    names = ["/etc", "/nonexistent-dir", str(tiny_models["qwen3"]), "../../etc", str(tmp_path)]
    with _client(server) as c:
        errors = [_error(c.post("/load-model", params={"model_name": n}), 404) for n in names]

    messages = {e["message"].replace(n, "NAME") for e, n in zip(errors, names, strict=True)}
    assert len(messages) == 1, messages  # the same words whether or not the path exists
    assert "config.json" not in messages.pop()
    assert server.llm.status().loading_model is None


def test_local_models_load_only_from_their_root(
    make_live: Callable[..., LiveServer], tiny_models: dict[str, Path], tmp_path: Path
):
    root = tmp_path / "models"
    root.mkdir()
    (root / "qwen3").symlink_to(tiny_models["qwen3"], target_is_directory=True)  # escapes
    import shutil

    shutil.copytree(tiny_models["gpt_neox"], root / "neox")
    server = make_live(local_models_root=root)
    with _client(server) as c:
        outside = [
            c.post("/load-model", params={"model_name": n})
            for n in ("qwen3", str(root / "qwen3"), str(root / ".." / "models" / ".." / "x"),
                      str(tiny_models["qwen3"]))
        ]  # fmt: skip
        inside = c.post("/load-model", params={"model_name": "neox"})
        deadline = time.monotonic() + 60
        while c.get("/loading-status").json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.1)

    for response in outside:
        _error(response, 404)
    assert inside.status_code == 202, inside.text
    assert server.llm.status().repo_id == str((root / "neox").resolve())


# -- values that gave 500s -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [2**64, -(2**70)])
def test_an_out_of_range_seed_is_a_400(live: LiveServer, seed: int):
    with _client(live) as c:
        chat = c.post(
            "/v1/chat/completions",
            json={"model": live.model, "messages": MESSAGES, "max_tokens": 2, "seed": seed},
        )
        text = c.post(
            "/v1/completions", json={"model": live.model, "prompt": "Q", "seed": seed, "n": 2}
        )

    assert _error(chat, 400)["param"] == "seed"
    assert _error(text, 400)["param"] == "seed"


def test_the_largest_seed_works_with_several_choices(live: LiveServer):
    body = {"model": live.model, "messages": MESSAGES, "max_tokens": 2, "seed": 2**64 - 1, "n": 3}
    with _client(live) as c:
        r = c.post("/v1/chat/completions", json=body)

    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 3


def test_an_absurd_analytics_window_is_a_400(live: LiveServer):
    with _client(live) as c:
        answers = [c.get(f"/analytics/{k}", params={"window": "99999999999d"}) for k in
                   ("usage", "performance", "costs")]  # fmt: skip

    for response in answers:
        assert _error(response, 400)["param"] == "window"


def test_a_bad_schema_error_shows_no_internal_path(live: LiveServer):
    schema = {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    with _client(live) as c:
        r = c.post(
            "/v1/chat/completions",
            json={"model": live.model, "messages": MESSAGES, "response_format": fmt},
        )

    message = _error(r, 400)["message"]
    assert "nope" in message  # the reason is kept
    assert "/project/" not in message and ".cc" not in message and "[" not in message


# -- small leaks ---------------------------------------------------------------------------------


def test_public_health_shows_only_status_with_keys_on(
    make_live: Callable[..., LiveServer], tmp_path: Path, tiny_models: dict[str, Path]
):
    broken = tmp_path / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text((tiny_models["qwen3"] / "config.json").read_text())
    server = make_live(api_keys=API_KEY, admin_key=ADMIN_KEY, local_models_root=broken.parent)
    with _client(server, ADMIN_KEY) as admin:
        assert admin.post("/load-model", params={"model_name": "broken"}).status_code == 202
        deadline = time.monotonic() + 60
        while (status := admin.get("/loading-status").json())["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    with _client(server) as anonymous, _client(server, API_KEY) as user:
        public, private = anonymous.get("/health"), user.get("/health")

    assert status["status"] == "failed" and status["error"]  # behind auth
    assert set(public.json()) == {"status", "model_loaded"}
    assert str(tmp_path) not in public.text and server.model not in public.text
    assert private.json()["error"] == status["error"]  # a valid key sees the details
    assert status["failed_model"] and private.json()["failed_model"] == status["failed_model"]
    assert "architecture" in private.json()  # the seed's field: a detail too (see #17)


def test_docs_work_offline(live: LiveServer):
    with _client(live) as c:
        page = c.get("/docs")
        assets = [c.get(f"/docs/assets/{name}") for name in
                  ("swagger-ui-bundle.js", "swagger-ui.css", "init.js")]  # fmt: skip
        traversal = c.get("/docs/assets/..%2F..%2Fpyproject.toml")

    assert page.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text, "no CDN"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert [a.status_code for a in assets] == [200, 200, 200]
    assert "SwaggerUIBundle" in assets[0].text and len(assets[0].content) > 100_000
    assert assets[1].headers["content-type"].startswith("text/css")
    assert traversal.status_code == 404
