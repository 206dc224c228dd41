"""Tool calls stream, through the official `openai` client against a real server (issue 18).

With tools enabled, text streams as it is generated; a call streams its id and name first,
then its arguments in several deltas that add up to the non-streamed call's arguments. The
tiny models never call a tool by themselves: calls are forced (tool_choice named or
"required"), which runs them through the grammar engine on both backends.

A consumer that falls behind gets the queued steps merged into one delta (both backends do), so
the replies are made long enough (arguments of 30+ characters, 64 tokens of text) that a stream
in one piece would mean a consumer stalled for the whole generation, not a slow machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from openai import OpenAI

from tests.integration.conftest import LiveServer

pytestmark = [pytest.mark.any_backend, pytest.mark.integration]

PRICE = {
    "type": "function",
    "function": {
        "name": "get_price",
        "description": "Last price of a listed security",
        "parameters": {
            "type": "object",
            "properties": {"ticker": {"type": "string", "minLength": 30, "maxLength": 40}},
            "required": ["ticker"],
        },
    },
}
RATING = {
    "type": "function",
    "function": {
        "name": "get_rating",
        "parameters": {
            "type": "object",
            "properties": {"issuer": {"type": "string", "minLength": 30, "maxLength": 40}},
            "required": ["issuer"],
        },
    },
}
NAMED = {"type": "function", "function": {"name": "get_price"}}
MESSAGES = [{"role": "user", "content": "Price of BNP Paribas?"}]


@pytest.fixture
def client(live: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=live.base_url, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def ask(live: LiveServer, **params: Any) -> dict[str, Any]:
    return {
        "model": live.model,
        "messages": MESSAGES,
        "tools": [PRICE, RATING],
        "max_tokens": 150,
        "temperature": 0,
        **params,
    }


def whole_call(client: OpenAI, live: LiveServer, choice: Any) -> Any:
    done = client.chat.completions.create(**ask(live, tool_choice=choice))
    assert done.choices[0].finish_reason == "tool_calls"
    return (done.choices[0].message.tool_calls or [])[0]


@pytest.mark.parametrize("choice", [NAMED, "required"], ids=["named", "required"])
def test_the_stream_helper_gets_the_name_then_argument_deltas(
    client: OpenAI, live: LiveServer, choice: Any
) -> None:
    with client.chat.completions.stream(**ask(live, tool_choice=choice)) as stream:
        events = list(stream)
        final = stream.get_final_completion()

    kinds = [e.type for e in events]
    deltas = [e for e in events if e.type == "tool_calls.function.arguments.delta"]
    assert len(deltas) > 1, kinds  # the arguments arrive as they are generated
    assert kinds.index("tool_calls.function.arguments.delta") < kinds.index(
        "tool_calls.function.arguments.done"
    )
    call = (final.choices[0].message.tool_calls or [])[0]
    assert final.choices[0].finish_reason == "tool_calls"
    assert "".join(d.arguments_delta for d in deltas) == call.function.arguments
    assert deltas[0].name == call.function.name
    assert call.function.name in ("get_price", "get_rating")
    assert json.loads(call.function.arguments)  # the grammar made it JSON of the schema
    expected = whole_call(client, live, choice)  # greedy: the same call, streamed or not
    assert (call.function.name, call.function.arguments) == (
        expected.function.name,
        expected.function.arguments,
    )


def test_raw_chunks_are_in_openai_tool_call_format(client: OpenAI, live: LiveServer) -> None:
    chunks = list(client.chat.completions.create(**ask(live, tool_choice=NAMED, stream=True)))

    pieces = [tc for c in chunks for ch in c.choices for tc in ch.delta.tool_calls or []]
    first, rest = pieces[0], pieces[1:]
    assert first.index == 0 and first.id and first.id.startswith("call_")
    assert first.type == "function" and first.function is not None
    assert (first.function.name, first.function.arguments) == ("get_price", "")
    assert len(rest) > 1 and all(p.index == 0 and p.id is None for p in rest)
    assert all(p.function and p.function.name is None and p.function.arguments for p in rest)
    arguments = "".join(p.function.arguments or "" for p in rest if p.function)
    assert "ticker" in json.loads(arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert not any(ch.delta.content for c in chunks for ch in c.choices)
    assert whole_call(client, live, NAMED).function.arguments == arguments


def test_text_streams_as_generated_with_tools_enabled(client: OpenAI, live: LiveServer) -> None:
    params = ask(live, tool_choice="auto", max_tokens=64)
    chunks = list(client.chat.completions.create(**params, stream=True))
    whole = client.chat.completions.create(**params)

    texts = [ch.delta.content for c in chunks for ch in c.choices if ch.delta.content]
    assert len(texts) > 1, texts  # not one chunk at the end
    message = whole.choices[0].message
    assert message.tool_calls is None  # the tiny model does not call tools by itself
    assert "".join(texts) == message.content


def test_responses_stream_function_call_arguments_as_deltas(
    client: OpenAI, live: LiveServer
) -> None:
    params = {
        "model": live.model,
        "input": "Price of BNP Paribas?",
        "tools": [{"type": "function", **PRICE["function"]}],
        "tool_choice": "required",
        "max_output_tokens": 150,
        "temperature": 0,
    }
    with client.responses.stream(**params) as stream:
        events = list(stream)
        final = stream.get_final_response()

    deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(deltas) > 1 and len(done) == 1
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == "get_price"
    assert added.item.arguments == ""  # the name first, the arguments after
    call = final.output[-1]
    assert call.type == "function_call"
    assert "".join(d.delta for d in deltas) == done[0].arguments == call.arguments
    assert {d.item_id for d in deltas} == {call.id}
    assert "ticker" in json.loads(call.arguments)
    whole = client.responses.create(**params)
    assert whole.output[-1].arguments == call.arguments  # type: ignore[union-attr]
