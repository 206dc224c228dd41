"""The OpenAI-compatible routes in process: wire format, sampling fields, SSE, and errors.

The tiny model writes random text, so every expectation about text is derived from the model
itself (a greedy run through the same server), never written down.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.server.schemas import assert_valid
from tests.server.support import PROMPT, Serve, Served

N = 16  # completion tokens of the reference runs
REPLACEMENT = "\ufffd"

pytestmark = [pytest.mark.any_backend, pytest.mark.asyncio]


def greedy(**kw: Any) -> dict[str, Any]:
    return {"max_tokens": N, "temperature": 0.0, **kw}


def sse_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    """Check the SSE framing (`data: <json>\\n\\n` ..., `data: [DONE]\\n\\n`); the JSON chunks."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    text = response.text
    assert text.endswith("data: [DONE]\n\n"), text[-200:]
    events = text[: -len("\n\n")].split("\n\n")
    assert events[-1] == "data: [DONE]"
    assert "data: [DONE]" not in events[:-1]
    chunks = []
    for event in events[:-1]:
        assert event.startswith("data: "), event
        assert "\n" not in event, f"one line per event: {event!r}"
        chunks.append(json.loads(event[len("data: ") :]))
    return chunks


def assert_error(
    response: httpx.Response, status: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error envelope with `status`; returns the inner error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert_valid(body, "ErrorResponse")
    error = body["error"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# -- non-streaming responses ----------------------------------------------------------------


async def test_chat_completion_matches_openai_schema(server: Served):
    r = await server.chat(**greedy())

    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert_valid(body, "CreateChatCompletionResponse")
    assert body["object"] == "chat.completion"
    assert body["model"] == server.model
    assert body["id"].startswith("chatcmpl-")
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)


async def test_completion_matches_openai_schema(server: Served):
    r = await server.client.post(
        "/v1/completions", json={"model": server.model, "prompt": PROMPT, "max_tokens": 4}
    )

    assert r.status_code == 200, r.text
    body = r.json()
    assert_valid(body, "CreateCompletionResponse")
    assert body["object"] == "text_completion"
    assert body["model"] == server.model
    assert body["usage"]["completion_tokens"] <= 4


async def test_completions_default_to_16_tokens_like_openai(server: Served):
    r = await server.client.post("/v1/completions", json={"model": server.model, "prompt": PROMPT})

    usage = r.json()["usage"]
    assert usage["completion_tokens"] <= 16
    if r.json()["choices"][0]["finish_reason"] == "length":
        assert usage["completion_tokens"] == 16


async def test_usage_counts_the_rendered_chat_prompt(server: Served, llama_tokenizer):
    messages = [
        {"role": "system", "content": "You are a careful financial analyst."},
        {"role": "user", "content": PROMPT},
    ]
    encoded = llama_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True
    )
    # transformers 5 returns a BatchEncoding here; older versions returned the id list.
    ids = encoded if isinstance(encoded, list) else encoded["input_ids"]

    r = await server.chat(messages=messages, max_tokens=7, temperature=0.0)

    usage = r.json()["usage"]
    assert usage["prompt_tokens"] == len(ids)
    assert 1 <= usage["completion_tokens"] <= 7
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_max_tokens_ends_with_finish_reason_length(server: Served):
    reference = (await server.chat(**greedy())).json()
    assert reference["choices"][0]["finish_reason"] == "length", "the tiny model hit EOS early"

    r = await server.chat(**greedy(max_tokens=3))

    body = r.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    assert reference["choices"][0]["message"]["content"].startswith(
        body["choices"][0]["message"]["content"].rstrip(REPLACEMENT)
    )


async def test_max_completion_tokens_means_max_tokens(server: Served):
    with_max_tokens = (await server.chat(max_tokens=5, temperature=0.0)).json()
    with_new_name = (await server.chat(max_completion_tokens=5, temperature=0.0)).json()
    # OpenAI deprecated max_tokens for chat: the new name wins when both are given.
    both = (await server.chat(max_tokens=9, max_completion_tokens=5, temperature=0.0)).json()

    assert with_new_name["usage"] == with_max_tokens["usage"] == both["usage"]
    assert with_new_name["usage"]["completion_tokens"] == 5
    text = with_max_tokens["choices"][0]["message"]["content"]
    assert with_new_name["choices"][0]["message"]["content"] == text
    assert both["choices"][0]["message"]["content"] == text


@pytest.mark.parametrize("as_list", [False, True], ids=["string", "list"])
async def test_stop_cuts_the_text_before_its_first_occurrence(server: Served, as_list):
    text = (await server.chat(**greedy())).json()["choices"][0]["message"]["content"]
    # A clean 3-character piece from the middle whose first occurrence is not at the start.
    stop = next(
        piece
        for i in range(len(text) // 3, len(text) - 3)
        if REPLACEMENT not in (piece := text[i : i + 3]) and text.index(piece) > 0
    )
    expected = text[: text.index(stop)]

    r = await server.chat(**greedy(stop=[stop, "\x00never\x00"] if as_list else stop))

    body = r.json()
    assert body["choices"][0]["message"]["content"] == expected
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] < N


async def test_temperature_zero_is_deterministic(server: Served):
    first = (await server.chat(**greedy())).json()
    second = (await server.chat(**greedy())).json()

    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    assert first["id"] != second["id"]


async def test_seed_makes_sampling_reproducible(server: Served):
    async def sampled(seed: int) -> str:
        r = await server.chat(max_tokens=N, temperature=1.0, seed=seed)
        return r.json()["choices"][0]["message"]["content"]

    a, b, c = await sampled(7), await sampled(7), await sampled(8)

    assert a == b
    assert a != c


async def test_n_2_gives_two_choices(server: Served):
    single = (await server.chat(**greedy(max_tokens=4))).json()

    r = await server.chat(**greedy(max_tokens=4, n=2))

    body = r.json()
    assert_valid(body, "CreateChatCompletionResponse")
    assert [c["index"] for c in body["choices"]] == [0, 1]
    # Greedy choices are the same text; the prompt is counted once, completions summed.
    for choice in body["choices"]:
        assert choice["message"] == single["choices"][0]["message"]
    assert body["usage"]["prompt_tokens"] == single["usage"]["prompt_tokens"]
    assert body["usage"]["completion_tokens"] == 2 * single["usage"]["completion_tokens"]


async def test_n_too_large_is_a_400_naming_n(server: Served):
    r = await server.chat(max_tokens=2, n=9)

    error = assert_error(r, 400, param="n")
    assert "n" in error["message"]


# -- streaming ------------------------------------------------------------------------------


async def test_chat_stream_framing_and_chunks(server: Served):
    r = await server.chat(**greedy(stream=True, stream_options={"include_usage": True}))

    chunks = sse_chunks(r)
    assert r.headers["cache-control"] == "no-cache"
    for chunk in chunks:
        assert_valid(chunk, "CreateChatCompletionStreamResponse")
        assert chunk["object"] == "chat.completion.chunk"
    assert len({c["id"] for c in chunks}) == 1
    assert len({c["created"] for c in chunks}) == 1
    assert {c["model"] for c in chunks} == {server.model}

    *choice_chunks, usage_chunk = chunks
    assert choice_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in choice_chunks[1:])
    *content, last = choice_chunks
    assert last["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    assert all(c["usage"] is None for c in choice_chunks)
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == N
    assert usage["total_tokens"] == usage["prompt_tokens"] + N


async def test_no_usage_chunk_unless_asked(server: Served):
    chunks = sse_chunks(await server.chat(**greedy(max_tokens=4, stream=True)))

    assert all(c["choices"] for c in chunks)
    assert all(c.get("usage") is None for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] is not None


async def test_streamed_text_and_usage_equal_the_non_streamed_ones(server: Served):
    whole = (await server.chat(**greedy())).json()

    chunks = sse_chunks(
        await server.chat(**greedy(stream=True, stream_options={"include_usage": True}))
    )

    assert streamed_text(chunks) == whole["choices"][0]["message"]["content"]
    streamed_usage = dict(chunks[-1]["usage"])
    assert streamed_usage.pop("cost_usd") > 0  # lcfin's extension, in the usage chunk only
    assert streamed_usage == whole["usage"]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
    assert finish == whole["choices"][0]["finish_reason"]


async def test_force_include_usage_sends_usage_unasked(serve: Serve):
    server = await serve(force_include_usage=True)

    chunks = sse_chunks(await server.chat(**greedy(max_tokens=4, stream=True)))

    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 4


async def test_streamed_completion_equals_the_non_streamed_one(server: Served):
    body = {"model": server.model, "prompt": PROMPT, **greedy()}
    whole = (await server.client.post("/v1/completions", json=body)).json()

    r = await server.client.post(
        "/v1/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
    )

    chunks = sse_chunks(r)
    *choice_chunks, usage_chunk = chunks
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in choice_chunks) == whole["choices"][0]["text"]
    assert choice_chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert usage_chunk["choices"] == []
    streamed_usage = dict(usage_chunk["usage"])
    assert streamed_usage.pop("cost_usd") > 0
    assert streamed_usage == whole["usage"]


async def test_chat_stream_with_n_2_carries_an_index_per_choice(server: Served):
    whole = (await server.chat(**greedy(max_tokens=4, n=2))).json()

    chunks = sse_chunks(
        await server.chat(
            **greedy(max_tokens=4, n=2, stream=True, stream_options={"include_usage": True})
        )
    )

    *choice_chunks, usage_chunk = chunks
    for chunk in chunks:
        assert_valid(chunk, "CreateChatCompletionStreamResponse")
    assert all(len(c["choices"]) == 1 for c in choice_chunks)  # one choice per chunk
    by_index: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for chunk in choice_chunks:
        by_index[chunk["choices"][0]["index"]].append(chunk["choices"][0])
    for index, choice in enumerate(whole["choices"]):
        mine = by_index[index]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert (
            "".join(c["delta"].get("content") or "" for c in mine) == choice["message"]["content"]
        )
        assert [c["finish_reason"] for c in mine if c["finish_reason"]] == [choice["finish_reason"]]
    streamed_usage = dict(usage_chunk["usage"])
    assert streamed_usage.pop("cost_usd") > 0
    assert streamed_usage == whole["usage"]  # the prompt once, both choices' tokens


async def test_completion_stream_of_two_prompts_with_n_2_indexes_them_in_prompt_order(
    server: Served,
):
    body = {
        "model": server.model,
        "prompt": [PROMPT, "Basel III is"],
        "n": 2,
        **greedy(max_tokens=3),
    }
    whole = (await server.client.post("/v1/completions", json=body)).json()

    r = await server.client.post(
        "/v1/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
    )

    *choice_chunks, usage_chunk = sse_chunks(r)
    texts: dict[int, str] = {}
    for chunk in choice_chunks:
        (choice,) = chunk["choices"]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {c["index"]: c["text"] for c in whole["choices"]}
    assert sorted(texts) == [0, 1, 2, 3]
    streamed_usage = dict(usage_chunk["usage"])
    assert streamed_usage.pop("cost_usd") > 0
    assert streamed_usage == whole["usage"]  # each prompt once, all four choices' tokens


# -- completions with several prompts --------------------------------------------------------


async def test_completion_prompt_may_be_a_list_of_strings(server: Served):
    prompts = [PROMPT, "Basel III is"]

    async def complete(prompt: str | list[str]) -> dict[str, Any]:
        body = {"model": server.model, "prompt": prompt, **greedy(max_tokens=4)}
        r = await server.client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    singles = [await complete(p) for p in prompts]
    both = await complete(prompts)

    assert_valid(both, "CreateCompletionResponse")
    assert [c["index"] for c in both["choices"]] == [0, 1]
    assert [c["text"] for c in both["choices"]] == [s["choices"][0]["text"] for s in singles]
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert both["usage"][key] == sum(s["usage"][key] for s in singles)


# -- models ---------------------------------------------------------------------------------


async def test_models_lists_the_loaded_model_first(server: Served):
    r = await server.client.get("/v1/models")

    assert r.status_code == 200
    body = r.json()
    assert_valid(body, "ListModelsResponse")
    first, *others = body["data"]
    assert first["id"] == server.model
    assert first["loaded"] is True
    assert first["max_model_len"] == server.llm.status().max_model_len
    assert others, "the catalog's models follow"
    assert all(card["loaded"] is False for card in others)
    assert server.model not in {card["id"] for card in others}


# -- errors ---------------------------------------------------------------------------------


async def test_invalid_json_is_a_400(server: Served):
    r = await server.client.post(
        "/v1/chat/completions",
        content=b'{"model": ',
        headers={"content-type": "application/json"},
    )

    assert_error(r, 400, param="body")


async def test_body_not_an_object_is_a_400(server: Served):
    r = await server.client.post("/v1/chat/completions", json=[{"role": "user"}])

    assert_error(r, 400, param="body")


async def test_missing_messages_is_a_400(server: Served):
    r = await server.client.post("/v1/chat/completions", json={"model": server.model})

    error = assert_error(r, 400, param="messages")
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("max_tokens", "5", "max_tokens"),
        ("max_tokens", 0, "max_tokens"),
        ("temperature", 3, "temperature"),
        ("top_p", 0, "top_p"),
        ("stream", "yes", "stream"),
        ("messages", [{"role": "wizard", "content": "hi"}], "messages[0].role"),
        ("messages", [], "messages"),
        ("stream_options", {"include_usage": True}, "stream_options"),  # without stream
    ],
)
async def test_wrong_values_are_a_400_naming_the_param(server: Served, field, value, param):
    r = await server.chat(**{field: value})

    error = assert_error(r, 400, param=param)
    assert error["type"] == "invalid_request_error"


async def test_unknown_fields_are_ignored(server: Served):
    r = await server.chat(
        max_tokens=2,
        metadata={"team": "risk"},
        store=False,
        parallel_tool_calls=True,
        lcfin_future_field={"x": 1},
    )

    assert r.status_code == 200, r.text
    assert_valid(r.json(), "CreateChatCompletionResponse")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", [{"type": "function", "function": {"parameters": {}}}]),
        ("tool_choice", {"type": "function", "function": {"name": "missing"}}),
        ("response_format", {"type": "xml"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x"}}),
        ("top_logprobs", 21),
        ("logit_bias", {"42": 10}),
    ],
)
async def test_unsupported_fields_are_a_400_naming_them(server: Served, field, value):
    r = await server.chat(max_tokens=2, **{field: value})

    error = assert_error(r, 400, param=field)
    assert error["type"] == "invalid_request_error"


async def test_unknown_model_is_a_404_naming_the_served_model(server: Served):
    r = await server.chat(model="gpt-4o", max_tokens=2)

    error = assert_error(r, 404, param="model", code="model_not_found")
    assert "gpt-4o" in error["message"]
    assert server.model in error["message"]


async def test_too_long_a_prompt_is_context_length_exceeded(server: Served):
    huge = "The liquidity coverage ratio requires high quality liquid assets. " * 200

    r = await server.chat(messages=[{"role": "user", "content": huge}], max_tokens=4)

    error = assert_error(r, 400, code="context_length_exceeded")
    assert error["type"] == "invalid_request_error"
    assert str(server.llm.status().max_model_len) in error["message"]


async def test_max_tokens_beyond_the_context_is_context_length_exceeded(server: Served):
    limit = server.llm.status().max_model_len
    assert limit is not None

    r = await server.chat(max_tokens=limit)

    error = assert_error(r, 400, code="context_length_exceeded")
    assert str(limit) in error["message"]


async def test_body_over_the_limit_is_a_413(serve: Serve):
    server = await serve(max_body_bytes=2000)
    payload = {
        "model": server.model,
        "messages": [{"role": "user", "content": "x" * 5000}],
    }

    r = await server.client.post("/v1/chat/completions", json=payload)

    assert_error(r, 413, code="payload_too_large")
    assert r.headers["x-request-id"]


async def test_chunked_body_over_the_limit_is_a_413(serve: Serve):
    server = await serve(max_body_bytes=2000)
    raw = json.dumps(
        {"model": server.model, "messages": [{"role": "user", "content": "x" * 5000}]}
    ).encode()

    async def chunks():  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(raw), 1000):
            yield raw[i : i + 1000]

    r = await server.client.post(
        "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )

    assert "content-length" not in r.request.headers
    assert_error(r, 413, code="payload_too_large")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/nope", 404), ("POST", "/v1/embeddings", 404), ("GET", "/v1/completions", 405)],
)
async def test_unknown_routes_get_the_error_envelope(server: Served, method, path, status):
    r = await server.client.request(method, path)

    assert_error(r, status)
    assert r.headers["x-request-id"]


def _break_generation(monkeypatch: pytest.MonkeyPatch, server: Served, after: int = 0) -> None:
    """Make the loaded backend's `generate` raise RuntimeError after `after` real deltas.

    A test double at the engine edge: a tiny model cannot fail on demand, so the real
    TransformersBackend.generate is wrapped, and the server above it is the real one.
    """
    backend = server.llm.loaded.backend  # type: ignore[union-attr]
    real = backend.generate

    async def failing(request):
        deltas = real(request)
        try:
            for _ in range(after):
                yield await anext(deltas)
        finally:
            await deltas.aclose()  # ends the real request in the backend
        raise RuntimeError("injected backend failure (secret internals)")

    monkeypatch.setattr(backend, "generate", failing)


@pytest.mark.parametrize("stream", [False, True])
async def test_backend_failure_is_a_500_naming_the_request_id(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, caplog, stream
):
    server = await serve(raise_app_exceptions=False)
    _break_generation(monkeypatch, server)

    r = await server.client.post(
        "/v1/chat/completions",
        json={"model": server.model, "messages": [{"role": "user", "content": PROMPT}],
              "max_tokens": 4, "stream": stream},
        headers={"X-Request-ID": "trace-500-abc"},
    )  # fmt: skip

    error = assert_error(r, 500)
    assert error["type"] == "server_error"
    assert r.headers["x-request-id"] == "trace-500-abc"
    assert "trace-500-abc" in error["message"]
    assert "secret internals" not in r.text  # the cause goes to the log, not the client
    assert "injected backend failure" in caplog.text
    assert server.llm.recent_requests()[-1].finish_reason == "error"


async def test_failure_after_the_first_byte_is_an_error_event(
    server: Served, monkeypatch: pytest.MonkeyPatch
):
    _break_generation(monkeypatch, server, after=2)

    r = await server.chat(
        **greedy(stream=True), stream_options={"include_usage": True}
    )  # the status is already 200: the failure is sent as one `data: {"error": ...}` event

    chunks = sse_chunks(r)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert_valid(chunks[-1], "ErrorResponse")
    assert chunks[-1]["error"]["type"] == "server_error"
    assert r.headers["x-request-id"] in chunks[-1]["error"]["message"]
    assert "secret internals" not in r.text
    assert all("error" not in c for c in chunks[:-1])


# -- request ids ----------------------------------------------------------------------------


async def test_request_id_is_echoed_when_sent(server: Served):
    r = await server.client.get("/v1/models", headers={"X-Request-ID": "client-id-42"})

    assert r.headers["x-request-id"] == "client-id-42"


async def test_request_id_is_generated_when_absent_or_unusable(server: Served):
    first = await server.client.get("/v1/models")
    second = await server.client.get("/v1/models")
    unusable = await server.client.get("/v1/models", headers={"X-Request-ID": "a b\tc"})

    ids = [r.headers["x-request-id"] for r in (first, second, unusable)]
    assert all(ids)
    assert len(set(ids)) == 3
    assert ids[2] != "a b\tc"
