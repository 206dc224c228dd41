"""The official `openai` client's Responses API against a real uvicorn server on a tiny model.

Marked `any_backend`: `nox -s vllm` runs them on vLLM's CPU build too (the `live` fixtures take
the backend under test, tests/backends.py). Texts are compared with the library's own greedy
answer on the same backend.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel, Field

from tests.integration.conftest import LiveServer
from tests.server.schemas import assert_valid
from tests.server.support import PRICE_FUNCTION as PRICE, PROMPT

pytestmark = [pytest.mark.any_backend, pytest.mark.integration]

N = 16  # max_output_tokens of the greedy runs (the spec's minimum)


class Capital(BaseModel):
    """What `parse` and the structured stream decode into."""

    issuer: str = Field(max_length=10)
    rating: Literal["AAA", "AA", "A"]
    cet1_bp: int = Field(ge=0, le=3000)


@pytest.fixture(scope="module")
def reference(live: LiveServer) -> Any:
    """The library's greedy answer to PROMPT."""
    return live.llm.chat(PROMPT, max_tokens=N, temperature=0)


def test_create(client: OpenAI, live: LiveServer, reference: Any):
    response = client.responses.create(
        model=live.model, input=PROMPT, max_output_tokens=N, temperature=0
    )

    assert response.output_text == reference.text
    assert response.usage is not None
    assert response.usage.input_tokens == reference.usage.prompt_tokens
    assert response.usage.output_tokens == reference.usage.completion_tokens
    assert response.status == ("completed" if reference.finish_reason == "stop" else "incomplete")


@pytest.mark.asyncio
async def test_async_create_with_instructions(aclient: AsyncOpenAI, live: LiveServer):
    response = await aclient.responses.create(
        model=live.model, instructions="Answer briefly.", input=PROMPT, max_output_tokens=N,
        temperature=0,
    )  # fmt: skip

    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": PROMPT},
    ]
    assert response.output_text == live.llm.chat(messages, max_tokens=N, temperature=0).text
    assert response.instructions == "Answer briefly."


def test_stream_events(client: OpenAI, live: LiveServer, reference: Any):
    with client.responses.stream(
        model=live.model, input=PROMPT, max_output_tokens=N, temperature=0
    ) as stream:
        events = list(stream)

    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == reference.text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    expected = "response.completed" if reference.finish_reason == "stop" else "response.incomplete"
    assert types[-1] == expected


def test_stream_a_structured_response_to_its_final_parse(client: OpenAI, live: LiveServer):
    with client.responses.stream(
        model=live.model, input="Extract the issuer's capital.", text_format=Capital,
        max_output_tokens=120, temperature=0,
    ) as stream:  # fmt: skip
        done = [e for e in stream if e.type == "response.output_text.done"]
        final = stream.get_final_response()

    assert isinstance(final.output_parsed, Capital)
    assert done[0].text == final.output_text


def test_parse(client: OpenAI, live: LiveServer):
    response = client.responses.parse(
        model=live.model, input="Extract the issuer's capital.", text_format=Capital,
        max_output_tokens=120, temperature=0,
    )  # fmt: skip

    assert response.status == "completed"
    assert isinstance(response.output_parsed, Capital)


def test_function_tool_round_trip_with_previous_response_id(client: OpenAI, live: LiveServer):
    first = client.responses.create(
        model=live.model, input="Price of BNP?", tools=[PRICE], tool_choice="required",
        max_output_tokens=150, temperature=0,
    )  # fmt: skip
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_price"
    ticker = json.loads(call.arguments)["ticker"]

    second = client.responses.create(
        model=live.model, previous_response_id=first.id, tools=[PRICE], tool_choice="none",
        input=[{"type": "function_call_output", "call_id": call.call_id,
                "output": json.dumps({"ticker": ticker, "price": 61.2})}],
        max_output_tokens=N, temperature=0,
    )  # fmt: skip

    assert second.previous_response_id == first.id
    assert second.output[0].type == "message"
    messages = [
        {"role": "user", "content": "Price of BNP?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.call_id, "type": "function",
             "function": {"name": "get_price", "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "name": "get_price",
         "content": json.dumps({"ticker": ticker, "price": 61.2})},
    ]  # fmt: skip
    assert second.output_text == live.llm.chat(messages, max_tokens=N, temperature=0).text


def test_retrieve_and_delete(client: OpenAI, live: LiveServer):
    created = client.responses.create(model=live.model, input=PROMPT, max_output_tokens=N)

    retrieved = client.responses.retrieve(created.id)
    assert retrieved.model_dump() == created.model_dump()
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_another_key_cannot_read_a_stored_response(make_live):
    server: LiveServer = make_live(api_keys="sk-alice-0001,sk-bob-0002")
    alice, bob = (
        OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=60)
        for key in ("sk-alice-0001", "sk-bob-0002")
    )
    with alice, bob:
        created = alice.responses.create(model=server.model, input=PROMPT, max_output_tokens=N)

        with pytest.raises(openai.NotFoundError):
            bob.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            bob.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError):
            bob.responses.create(
                model=server.model, input="more", previous_response_id=created.id,
                max_output_tokens=N,
            )  # fmt: skip
        assert alice.responses.retrieve(created.id).id == created.id


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"background": True}, "background"),
        ({"max_output_tokens": 4}, "max_output_tokens"),
    ],
)
def test_refusals_are_bad_requests(client: OpenAI, live: LiveServer, params, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=live.model, input=PROMPT, **{"max_output_tokens": N, **params}
        )
    assert caught.value.param == param  # type: ignore[attr-defined]


def test_unknown_model_is_not_found(client: OpenAI):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-4o", input=PROMPT)


def test_every_streamed_event_on_the_wire_is_valid(live: LiveServer):
    body = {
        "model": live.model, "input": "Price of BNP?", "tools": [PRICE],
        "tool_choice": "required", "max_output_tokens": 150, "stream": True,
    }  # fmt: skip
    with httpx.stream("POST", f"{live.base_url}/responses", json=body, timeout=60) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]

    events = [json.loads(line.removeprefix("data: ")) for line in lines]
    for event in events:
        assert_valid(event, "ResponseStreamEvent")
    assert events[-1]["type"] == "response.completed"
    assert_valid(events[-1]["response"], "Response")


@pytest.mark.asyncio
async def test_a_client_leaving_mid_stream_aborts_the_generation(live: LiveServer):
    long_text = {"type": "object", "properties": {"text": {"type": "string", "minLength": 400}},
                 "required": ["text"], "additionalProperties": False}  # fmt: skip
    body = {
        "model": live.model, "input": PROMPT, "stream": True, "max_output_tokens": 200,
        "text": {"format": {"type": "json_schema", "name": "Long", "schema": long_text}},
    }  # the grammar makes the reply at least 400 characters long  # fmt: skip
    async with httpx.AsyncClient(base_url=live.base_url, timeout=60) as http:
        async with http.stream("POST", "/responses", json=body) as r:
            data = [line async for line in _until_first_delta(r)]
        response_id = json.loads(data[0])["response"]["id"]
        # The stream was closed after its first delta: the server must stop generating.
        after = {"model": live.model, "input": "x", "max_output_tokens": N}
        assert (await http.post("/responses", json=after)).status_code == 200

        deadline = time.monotonic() + 10
        while not (found := [r for r in live.llm.recent_requests() if r.request_id == response_id]):
            assert time.monotonic() < deadline, "the generation never ended"
            await asyncio.sleep(0.01)
        assert found[0].finish_reason == "abort" and found[0].completion_tokens < 200
        stored = await http.get(f"/responses/{response_id}")
    assert stored.status_code == 404  # a response its client left is not stored


async def _until_first_delta(r: httpx.Response) -> AsyncIterator[str]:
    async for line in r.aiter_lines():
        if line.startswith("data: "):
            yield line.removeprefix("data: ")
            if '"response.output_text.delta"' in line:
                return
