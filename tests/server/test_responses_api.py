"""POST/GET/DELETE /v1/responses through the in-process server, on a tiny real model.

Texts are compared with what the library answers for the same messages (greedy), never written
down. Every body and event is validated against OpenAI's published schemas.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.schemas import assert_valid
from tests.server.support import PRICE_FUNCTION as PRICE, PROMPT, Serve, Served

pytestmark = [pytest.mark.any_backend, pytest.mark.asyncio]

GREEDY = {"max_output_tokens": 16, "temperature": 0}


async def respond(
    server: Served, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    payload = {"model": server.model, "input": PROMPT, **GREEDY, **body}
    return await server.client.post("/v1/responses", json=payload, headers=headers)


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert_valid(body, "Response")
    return body


def error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert_valid(response.json(), "ErrorResponse")
    err: dict[str, Any] = response.json()["error"]
    if param is not None:
        assert err["param"] == param, err
    return err


def stream_events(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in response.text
    events = []
    for frame in response.text.strip().split("\n\n"):
        head, data = frame.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        assert_valid(event, "ResponseStreamEvent")
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def text_of(body: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in body["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


# -- generation --------------------------------------------------------------------------------


async def test_a_response_answers_as_the_library_does(server: Served):
    body = ok(await respond(server, instructions="Answer briefly."))
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": PROMPT},
    ]
    reference = server.llm.chat(messages, max_tokens=16, temperature=0)

    assert text_of(body) == reference.text
    assert body["usage"]["input_tokens"] == reference.usage.prompt_tokens
    assert body["usage"]["output_tokens"] == reference.usage.completion_tokens
    assert body["id"].startswith("resp_") and body["object"] == "response"
    assert body["model"] == server.model and body["instructions"] == "Answer briefly."
    expected = "completed" if reference.finish_reason == "stop" else "incomplete"
    assert body["status"] == expected


async def test_the_stream_has_the_specs_events_and_the_same_text(server: Served):
    plain = ok(await respond(server))

    events = stream_events(await respond(server, stream=True))

    types = [e["type"] for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert types[-1] == {"completed": "response.completed"}.get(
        plain["status"], "response.incomplete"
    )
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == text_of(plain) == text_of(events[-1]["response"])
    assert len(deltas) > 1  # streamed as generated, not in one piece
    assert events[-1]["response"]["usage"]["output_tokens"] == plain["usage"]["output_tokens"]


async def test_max_output_tokens_ends_incomplete(server: Served):
    reference = server.llm.chat(PROMPT, max_tokens=16, temperature=0)
    assert reference.finish_reason == "length", "the tiny model hit EOS early"

    body = ok(await respond(server, max_output_tokens=16))

    assert body["status"] == "incomplete" and body["completed_at"] is None
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    assert body["usage"]["output_tokens"] == 16


async def test_a_required_tool_call_comes_back_as_a_function_call(server: Served):
    body = ok(await respond(server, tools=[PRICE], tool_choice="required", max_output_tokens=150))

    assert body["status"] == "completed"
    call = body["output"][-1]
    assert call["type"] == "function_call" and call["name"] == "get_price"
    assert call["call_id"].startswith("call_") and call["status"] == "completed"
    assert set(json.loads(call["arguments"])) == {"ticker"}
    assert body["tools"] == [PRICE] and body["tool_choice"] == "required"


async def test_a_streamed_named_tool_call(server: Served):
    choice = {"type": "function", "name": "get_price"}
    events = stream_events(
        await respond(server, tools=[PRICE], tool_choice=choice, max_output_tokens=150, stream=True)
    )

    by_type = {e["type"]: e for e in events}
    done = by_type["response.function_call_arguments.done"]
    assert done["name"] == "get_price"
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert (
        deltas and "".join(deltas) == done["arguments"]
    )  # see tests/integration/test_tool_streaming
    assert set(json.loads(done["arguments"])) == {"ticker"}
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][-1]["arguments"] == done["arguments"]


async def test_a_function_result_continues_the_conversation(server: Served):
    first = ok(await respond(server, tools=[PRICE], tool_choice="required", max_output_tokens=150))
    call = first["output"][-1]

    result = {"type": "function_call_output", "call_id": call["call_id"], "output": "61.20 EUR"}
    second = ok(await respond(server, input=[result], previous_response_id=first["id"]))

    messages = [
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["call_id"], "type": "function",
             "function": {"name": "get_price", "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["call_id"], "name": "get_price",
         "content": "61.20 EUR"},
    ]  # fmt: skip
    reference = server.llm.chat(messages, max_tokens=16, temperature=0)
    assert second["previous_response_id"] == first["id"]
    assert text_of(second) == reference.text
    assert second["usage"]["input_tokens"] == reference.usage.prompt_tokens


async def test_previous_response_id_carries_the_turns_but_not_the_instructions(server: Served):
    first = ok(await respond(server, instructions="Be terse.", input="What is CET1?"))
    second = ok(await respond(server, input="And AT1?", previous_response_id=first["id"]))

    messages = [
        {"role": "user", "content": "What is CET1?"},
        {"role": "assistant", "content": text_of(first)},
        {"role": "user", "content": "And AT1?"},
    ]
    reference = server.llm.chat(messages, max_tokens=16, temperature=0)
    assert text_of(second) == reference.text
    assert second["usage"]["input_tokens"] == reference.usage.prompt_tokens
    third = ok(await respond(server, input="And T2?", previous_response_id=second["id"]))
    assert third["usage"]["input_tokens"] > second["usage"]["input_tokens"]


async def test_json_schema_output_is_constrained(server: Served):
    schema = {
        "type": "object",
        "properties": {"rating": {"enum": ["AAA", "AA", "A"]}, "cet1_bp": {"type": "integer",
                                                                          "minimum": 0,
                                                                          "maximum": 3000}},
        "required": ["rating", "cet1_bp"],
        "additionalProperties": False,
    }  # fmt: skip
    fmt = {"type": "json_schema", "name": "Capital", "schema": schema, "strict": True}

    body = ok(await respond(server, text={"format": fmt}, max_output_tokens=60))

    parsed = json.loads(text_of(body))
    assert parsed["rating"] in ("AAA", "AA", "A") and 0 <= parsed["cet1_bp"] <= 3000
    assert body["text"]["format"]["name"] == "Capital"
    json_object = ok(await respond(server, text={"format": {"type": "json_object"}},
                                   max_output_tokens=60))  # fmt: skip
    assert text_of(json_object).startswith("{")  # any object: it may run past 60 tokens
    if json_object["status"] == "completed":
        assert isinstance(json.loads(text_of(json_object)), dict)


async def test_logprobs_when_included(server: Served):
    body = ok(await respond(server, include=["message.output_text.logprobs"], top_logprobs=2))

    part = body["output"][0]["content"][0]
    assert len(part["logprobs"]) == body["usage"]["output_tokens"]
    assert all(len(lp["top_logprobs"]) == 2 for lp in part["logprobs"])


async def test_truncation_auto_drops_the_oldest_turns(server: Served):
    long = " ".join(["capital"] * 60)
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": long} for i in range(9)]

    refused = await respond(server, input=turns)
    fitted = await respond(server, input=turns, truncation="auto")

    assert error(refused, 400, "input")["code"] == "context_length_exceeded"
    assert ok(fitted)["truncation"] == "auto"


# -- state -------------------------------------------------------------------------------------


async def test_a_stored_response_can_be_read_and_deleted(server: Served):
    body = ok(await respond(server, metadata={"desk": "alm"}))
    path = f"/v1/responses/{body['id']}"

    assert body["store"] is True  # the spec's default
    assert ok(await server.client.get(path)) == body
    deleted = await server.client.delete(path)
    assert deleted.status_code == 200
    assert deleted.json() == {"id": body["id"], "object": "response.deleted", "deleted": True}
    assert error(await server.client.get(path), 404)["code"] == "not_found"
    error(await server.client.delete(path), 404)
    follow = await respond(server, previous_response_id=body["id"])
    error(follow, 404, "previous_response_id")


async def test_a_streamed_response_is_stored_before_its_last_event(server: Served):
    events = stream_events(await respond(server, stream=True))
    final = events[-1]["response"]

    stored = ok(await server.client.get(f"/v1/responses/{final['id']}"))
    assert stored == {
        **final,
        "usage": {k: v for k, v in final["usage"].items() if k != "cost_usd"},
    }


async def test_stored_in_the_ledgers_database_for_the_ttl(serve: Serve, tmp_path: Path):
    db = tmp_path / "usage.db"
    server = await serve(usage_db=str(db), response_store_ttl_s=60)
    telemetry = server.app.state.telemetry
    assert telemetry.responses.store is telemetry.ledger.store  # one database
    assert telemetry.responses.maintain in telemetry.ledger.maintenance  # purged by its writer
    now = [time.time()]
    telemetry.responses.clock = lambda: now[0]  # the test moves the store's clock by hand

    body = ok(await respond(server))
    path = f"/v1/responses/{body['id']}"
    ok(await server.client.get(path))
    with closing(sqlite3.connect(db)) as conn:  # read with plain sqlite3, not through lcfin
        rows = conn.execute("SELECT id, owner, expires_at - created_at FROM responses").fetchall()
    assert rows == [(body["id"], "", 60.0)]

    now[0] += 61
    error(await server.client.get(path), 404)
    telemetry.responses.maintain(now[0])
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM responses").fetchone() == (0,)


async def test_store_false_keeps_nothing(server: Served):
    body = ok(await respond(server, store=False))

    assert body["store"] is False
    error(await server.client.get(f"/v1/responses/{body['id']}"), 404)
    error(await respond(server, previous_response_id=body["id"]), 404, "previous_response_id")


@pytest.mark.parametrize("settings", [{"usage_db": "off"}, {"response_store": False}])
async def test_a_server_that_keeps_no_responses(serve: Serve, settings: dict[str, Any]):
    server = await serve(**settings)

    body = ok(await respond(server))
    assert body["store"] is False  # the default follows the server
    error(await respond(server, store=True), 400, "store")
    error(await server.client.get(f"/v1/responses/{body['id']}"), 404)
    error(await server.client.delete(f"/v1/responses/{body['id']}"), 404)


async def test_another_key_cannot_read_delete_or_continue_a_response(serve: Serve):
    server = await serve(api_keys="sk-alice-1,sk-bob-2")
    alice, bob = ({"Authorization": f"Bearer {k}"} for k in ("sk-alice-1", "sk-bob-2"))
    body = ok(await respond(server, headers=alice))
    path = f"/v1/responses/{body['id']}"

    assert error(await server.client.get(path, headers=bob), 404)["code"] == "not_found"
    error(await server.client.delete(path, headers=bob), 404)
    error(await respond(server, headers=bob, previous_response_id=body["id"]), 404,
          "previous_response_id")  # fmt: skip
    error(await server.client.get(path), 401)  # no key at all
    assert ok(await server.client.get(path, headers=alice)) == body  # still there for alice
    ok(await respond(server, headers=alice, previous_response_id=body["id"]))


async def test_state_on_each_database(serve: Serve, ledger_target: str):
    server = await serve(usage_db=ledger_target, api_keys="sk-alice-1,sk-bob-2")
    alice, bob = ({"Authorization": f"Bearer {k}"} for k in ("sk-alice-1", "sk-bob-2"))
    first = ok(await respond(server, headers=alice, input="What is CET1?"))
    path = f"/v1/responses/{first['id']}"

    assert ok(await server.client.get(path, headers=alice)) == first
    error(await server.client.get(path, headers=bob), 404)
    second = ok(await respond(server, headers=alice, input="And AT1?",
                              previous_response_id=first["id"]))  # fmt: skip
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    assert (await server.client.delete(path, headers=alice)).status_code == 200
    error(await server.client.get(path, headers=alice), 404)
    ok(await server.client.get(f"/v1/responses/{second['id']}", headers=alice))


async def test_without_keys_a_bearer_token_is_no_scope(server: Served):
    """With no keys configured a Bearer token is no identity (as for rate limits, #16): every
    client is anonymous and shares one scope, so a made-up token neither hides nor claims."""
    one, two = ({"Authorization": f"Bearer {t}"} for t in ("token-one", "token-two"))
    body = ok(await respond(server, headers=one))
    path = f"/v1/responses/{body['id']}"

    assert ok(await server.client.get(path, headers=two)) == ok(await server.client.get(path))
    anonymous = ok(await respond(server))
    ok(await server.client.get(f"/v1/responses/{anonymous['id']}", headers=one))


async def test_a_failed_stream_ends_with_response_failed_and_is_stored(
    server: Served, monkeypatch: pytest.MonkeyPatch
):
    _break_generation(monkeypatch, server, after=2)

    events = stream_events(await respond(server, stream=True))

    final = events[-1]
    assert final["type"] == "response.failed"
    assert final["response"]["error"]["code"] == "server_error"
    assert "secret internals" not in json.dumps(events)
    assert final["response"]["output"][0]["status"] == "incomplete"
    stored = ok(await server.client.get(f"/v1/responses/{final['response']['id']}"))
    assert stored["status"] == "failed"


async def test_an_aborted_generation_is_a_failed_response(
    server: Served, monkeypatch: pytest.MonkeyPatch
):
    _break_generation(monkeypatch, server, after=1, abort=True)

    body = ok(await respond(server))
    events = stream_events(await respond(server, stream=True))

    assert body["status"] == "failed" and "aborted" in body["error"]["message"]
    assert events[-1]["type"] == "response.failed"


async def test_a_failure_before_the_first_byte_is_an_http_error(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
):
    server = await serve(raise_app_exceptions=False)
    _break_generation(monkeypatch, server)

    for stream in (False, True):
        err = error(await respond(server, stream=stream), 500)
        assert err["type"] == "server_error" and "secret internals" not in err["message"]


def _break_generation(
    monkeypatch: pytest.MonkeyPatch, server: Served, after: int = 0, abort: bool = False
) -> None:
    """Make the backend's `generate` fail (or end 'abort', as on shutdown) after `after` deltas.

    A test double at the engine edge, as in test_openai.py: a tiny model cannot fail on demand,
    so the real TransformersBackend.generate is wrapped; the server above it is the real one.
    """
    from lcfin.engine.types import Delta

    backend = server.llm.loaded.backend  # type: ignore[union-attr]
    real = backend.generate

    async def failing(request):
        deltas = real(request)
        try:
            for _ in range(after):
                yield await anext(deltas)
        finally:
            await deltas.aclose()  # ends the real request in the backend
        if abort:
            yield Delta("", finish_reason="abort")
            return
        raise RuntimeError("injected backend failure (secret internals)")

    monkeypatch.setattr(backend, "generate", failing)


# -- accounting --------------------------------------------------------------------------------


async def test_accounting_counts_as_chat_does(serve: Serve, tmp_path: Path):
    server = await serve(usage_db=str(tmp_path / "usage.db"))
    chat = await server.chat(max_tokens=16, temperature=0)
    body = ok(await respond(server))
    streamed = stream_events(await respond(server, stream=True))[-1]["response"]
    assert server.app.state.telemetry.ledger.flush()

    rows = {r["request_id"]: r for r in server.app.state.telemetry.ledger.requests()}
    chat_row, row, stream_row = rows[chat.json()["id"]], rows[body["id"]], rows[streamed["id"]]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        chat_row["prompt_tokens"], chat_row["completion_tokens"],
    )  # fmt: skip
    assert row["endpoint"] == stream_row["endpoint"] == "/v1/responses"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        body["usage"]["input_tokens"], body["usage"]["output_tokens"],
    )  # fmt: skip
    assert streamed["usage"]["cost_usd"] == pytest.approx(stream_row["cost_usd"])
    metrics = (await server.client.get("/metrics")).text
    assert 'endpoint="/v1/responses"' in metrics


async def test_the_cost_header_as_for_chat(server: Served):
    response = await respond(server)

    assert float(response.headers["x-lcfin-cost-usd"]) >= 0
    assert server.llm.recent_requests()[-1].endpoint == "/v1/responses"


async def test_rate_limits_apply_to_creating_only(serve: Serve):
    server = await serve(rate_limits="2rpm")
    bodies = [ok(await respond(server)), ok(await respond(server))]

    limited = await respond(server)
    assert error(limited, 429)["code"] == "rate_limit_exceeded"
    assert limited.headers["x-ratelimit-limit-requests"] == "2"
    assert (await server.client.get(f"/v1/responses/{bodies[0]['id']}")).status_code == 200


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"reasoning": {"effort": "high"}}, 400, "reasoning.effort"),
        ({"tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
        ({"background": True}, 400, "background"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
         400, "input[0].content[0].type"),
        ({"max_output_tokens": 8}, 400, "max_output_tokens"),
        ({"max_output_tokens": "16"}, 400, "max_output_tokens"),
        ({"temperature": 3}, 400, "temperature"),
        ({"model": "gpt-4o"}, 404, "model"),
        ({"previous_response_id": "resp_unknown"}, 404, "previous_response_id"),
        ({"tool_choice": "required"}, 400, "tool_choice"),
        ({"input": "nul \x00 inside"}, 400, "input[0].content"),
        ({"max_output_tokens": 5000}, 400, "max_output_tokens"),  # past the context
        ({"top_p": 0}, 400, "top_p"),
    ],
)  # fmt: skip
async def test_refusals_name_the_field(
    server: Served, body: dict[str, Any], status: int, param: str
):
    before = len(server.llm.recent_requests())
    code = error(await respond(server, **body), status, param)["code"]

    (refused,) = server.llm.recent_requests()[before:]  # counted once, as chat's (see #17)
    assert (refused.endpoint, refused.finish_reason) == ("/v1/responses", "rejected")
    assert refused.error_code == code


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"[]", b"null", b'{"model": 1}', b"[" * 100_000, b"\xff\xfe"]
)
async def test_malformed_bodies_are_400(server: Served, raw: bytes):
    r = await server.client.post(
        "/v1/responses", content=raw, headers={"content-type": "application/json"}
    )
    error(r, 400)


async def test_retrieving_as_a_stream_is_refused(server: Served):
    body = ok(await respond(server))

    r = await server.client.get(f"/v1/responses/{body['id']}", params={"stream": "true"})
    error(r, 400, "stream")


async def test_ids_are_data_not_sql(server: Served):
    body = ok(await respond(server))

    for forged in ("' OR '1'='1", f"{body['id']}' --", "%", body["id"].upper()):
        error(await server.client.get(f"/v1/responses/{forged}"), 404)
        error(await server.client.delete(f"/v1/responses/{forged}"), 404)
    ok(await server.client.get(f"/v1/responses/{body['id']}"))  # untouched


async def test_too_many_items_or_too_large_a_body(serve: Serve):
    server = await serve(max_messages=4, max_body_bytes=20_000)

    items = [{"role": "user", "content": "x"}] * 5
    error(await respond(server, input=items), 400, "input")
    error(await respond(server, input="x" * 30_000), 413)
