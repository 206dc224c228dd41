"""The Responses API's objects and stream events, from the core's own `Completion`s and `Delta`s.

Every body and event is validated against OpenAI's published schemas (tests/data).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from lcfin.engine.function_calls import ToolCall
from lcfin.engine.types import Completion, Delta, TokenLogprob, ToolCallDelta, Usage
from lcfin.errors import LcfinError, Overloaded, RequestTimeout
from lcfin.server.responses_events import ResponseEvents
from lcfin.server.responses_objects import Response, output_items
from lcfin.server.responses_request import CreateResponse
from tests.server.schemas import assert_valid

LPS = (
    TokenLogprob("Bas", -0.5, 7, (("Bas", -0.5), ("Cap", -1.5))),
    TokenLogprob("el", -0.1, 8, (("el", -0.1),)),
)


def begin(**body: Any) -> Response:
    req = CreateResponse.model_validate({"model": "m", "input": "x", **body})
    return Response.begin("resp_test", "tiny", req, store=True)


def completion(text: str = "Basel", finish: str = "stop", **kw: Any) -> Completion:
    return Completion(text, finish, Usage(5, 2), "tiny", "resp_test", cost_usd=0.25, **kw)  # type: ignore[arg-type]


def events(frames: list[str]) -> list[dict[str, Any]]:
    """Parse SSE frames; each must name its type in `event:` too."""
    out = []
    for frame in frames:
        head, data = frame.removesuffix("\n\n").split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        assert_valid(event, "ResponseStreamEvent")
        out.append(event)
    return out


def run(sse: ResponseEvents, deltas: list[str], done: Completion) -> list[dict[str, Any]]:
    frames = list(sse.start())
    for delta in deltas:
        frames += sse.text(delta)
    final, closing = sse.finish(done)
    assert_valid(final.body(), "Response")
    return events(frames + closing)


def test_a_streamed_text_response_in_order() -> None:
    sse = ResponseEvents(begin(temperature=0, metadata={"desk": "alm"}))

    evs = run(sse, ["Bas", "el"], completion())

    assert [e["type"] for e in evs] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    assert evs[0]["response"]["status"] == "in_progress" and evs[0]["response"]["output"] == []
    assert "usage" not in evs[0]["response"]
    assert evs[6]["text"] == "Basel"
    final = evs[-1]["response"]
    assert final["status"] == "completed" and final["completed_at"] is not None
    assert final["output"][0]["content"][0]["text"] == "Basel"
    assert final["output"][0]["id"] == evs[2]["item"]["id"] == evs[4]["item_id"]
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["total_tokens"] == 7
    assert final["usage"]["cost_usd"] == 0.25  # lcfin's cost, in the stream's last event only
    assert final["metadata"] == {"desk": "alm"} and final["temperature"] == 0


def test_the_stored_response_is_the_final_one_without_the_cost() -> None:
    sse = ResponseEvents(begin())
    list(sse.start())
    final, frames = sse.finish(completion())

    body = final.body()
    assert "cost_usd" not in body["usage"]
    assert {**events(frames)[-1]["response"], "usage": body["usage"]} == body


def test_max_output_tokens_ends_incomplete() -> None:
    evs = run(ResponseEvents(begin(max_output_tokens=16)), ["Bas"], completion("Bas", "length"))

    last = evs[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["output"][0]["status"] == "incomplete"
    assert evs[-2]["item"]["status"] == "incomplete"


def test_an_aborted_generation_ends_failed_with_its_reason() -> None:
    evs = run(ResponseEvents(begin()), ["Bas"], completion("Bas", "abort"))

    last = evs[-1]["response"]
    assert evs[-1]["type"] == "response.failed"
    assert last["status"] == "failed"
    assert last["error"]["code"] == "server_error"
    assert "aborted" in last["error"]["message"]


def test_function_calls_not_streamed_are_sent_after_the_text() -> None:
    calls = (ToolCall("get_price", '{"ticker": "BNP"}'), ToolCall("get_price", '{"ticker": "GLE"}'))
    done = completion("Looking up.", tool_calls=calls)

    evs = run(ResponseEvents(begin(tools=[{"type": "function", "name": "get_price"}])), [], done)

    types = [e["type"] for e in evs]
    assert types[2:8] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",  # the text, whole
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert types[8:12] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert types.count("response.function_call_arguments.done") == 2
    added, delta, args_done, item_done = evs[8:12]
    assert added["item"]["status"] == "in_progress" and added["item"]["arguments"] == ""
    assert delta["delta"] == args_done["arguments"] == '{"ticker": "BNP"}'
    assert args_done["name"] == "get_price" and args_done["output_index"] == 1
    assert item_done["item"]["call_id"] == calls[0].id
    output = evs[-1]["response"]["output"]
    assert [o["type"] for o in output] == ["message", "function_call", "function_call"]
    assert output[1]["id"] == added["item"]["id"] == delta["item_id"]


def streamed_calls() -> tuple[list[Delta], Completion]:
    """A reply "Looking up." then two calls, as the core streams it (see function_call_stream)."""
    first, second = ToolCall("get_price", '{"ticker": "BNP"}'), ToolCall("get_price", "{}")
    steps = [
        Delta("Looking", 1),
        Delta(" up.", 1),
        Delta("", 2, tool_calls=(ToolCallDelta(0, first.id, first.name),)),
        Delta("", 1, tool_calls=(ToolCallDelta(0, arguments='{"ticker": '),)),
        Delta("", 1, tool_calls=(ToolCallDelta(0, arguments='"BNP"}'),)),
        Delta("", 3, tool_calls=(ToolCallDelta(1, second.id, second.name, "{}"),)),
    ]
    return steps, completion("Looking up.", tool_calls=(first, second))


def test_function_calls_stream_their_arguments_as_generated() -> None:
    steps, done = streamed_calls()
    sse = ResponseEvents(begin(tools=[{"type": "function", "name": "get_price"}]))
    frames = list(sse.start())
    for step in steps:
        frames += sse.delta(step)
    final, closing = sse.finish(done)
    evs = events(frames + closing)

    assert [e["type"] for e in evs][2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",  # the message is done when the first call starts
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",  # ... and a call when the next one starts
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [e for e in evs if e["type"] == "response.function_call_arguments.delta"]
    assert [d["delta"] for d in deltas] == ['{"ticker": ', '"BNP"}', "{}"]
    assert {d["item_id"] for d in deltas[:2]} == {"fc_" + done.tool_calls[0].id[5:]}  # type: ignore[index]
    assert [d["output_index"] for d in deltas] == [1, 1, 2]
    output = evs[-1]["response"]["output"]
    assert output == final.body()["output"]
    assert output == output_items(done, output[0]["id"])  # as the non-streaming answer


def test_without_parallel_tool_calls_only_the_first_call_streams() -> None:
    steps, done = streamed_calls()
    sse = ResponseEvents(begin(parallel_tool_calls=False), parallel=False)
    frames = list(sse.start())
    for step in steps:
        frames += sse.delta(step)
    final, closing = sse.finish(done)
    evs = events(frames + closing)

    added = [e["item"] for e in evs if e["type"] == "response.output_item.added"]
    assert [i["type"] for i in added] == ["message", "function_call"]
    assert final.body()["output"] == output_items(done, added[0]["id"], parallel=False)


def test_a_failure_mid_call_closes_the_call_incomplete() -> None:
    steps, _ = streamed_calls()
    sse = ResponseEvents(begin())
    frames = list(sse.start())
    for step in steps[:4]:
        frames += sse.delta(step)
    failed, closing = sse.fail(RequestTimeout.after(1))
    evs = events(frames + closing)

    assert evs[-2]["type"] == "response.output_item.done"
    assert evs[-2]["item"]["status"] == "incomplete"
    assert evs[-2]["item"]["arguments"] == '{"ticker": '
    assert [o["type"] for o in failed.body()["output"]] == ["message", "function_call"]


def test_without_parallel_tool_calls_only_the_first_call_is_kept() -> None:
    calls = (ToolCall("a", "{}"), ToolCall("b", "{}"))
    output = output_items(completion("", tool_calls=calls), "msg_1", parallel=False)

    assert [o["name"] for o in output] == ["a"]  # and no empty message before it


def test_an_empty_reply_is_an_empty_message() -> None:
    evs = run(ResponseEvents(begin()), [], completion(""))

    assert [e["type"] for e in evs][2:6] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
    ]
    assert evs[-1]["response"]["output"][0]["content"][0]["text"] == ""


def test_logprobs_when_asked() -> None:
    sse = ResponseEvents(begin(top_logprobs=1), logprobs=True)
    frames = list(sse.start()) + list(sse.text("Basel", LPS))
    _, closing = sse.finish(completion(logprobs=LPS))

    evs = events(frames + closing)
    delta = next(e for e in evs if e["type"] == "response.output_text.delta")
    assert [lp["token"] for lp in delta["logprobs"]] == ["Bas", "el"]
    assert delta["logprobs"][0]["top_logprobs"][1] == {"token": "Cap", "logprob": -1.5}
    part = evs[-1]["response"]["output"][0]["content"][0]
    assert part["logprobs"][0]["bytes"] == list(b"Bas")
    off = ResponseEvents(begin())
    assert events(list(off.text("x", LPS)))[-1]["logprobs"] == []


@pytest.mark.parametrize(
    ("exc", "code", "shown"),
    [
        (RequestTimeout.after(5), "server_error", "longer than 5 s"),
        (Overloaded("queue full"), "rate_limit_exceeded", "queue full"),
        (RuntimeError("secret internals"), "server_error", "server had an error"),
        (LcfinError("engine secret"), "server_error", "server had an error"),
    ],
)
def test_a_failure_mid_stream_closes_the_message_and_fails(
    exc: Exception, code: str, shown: str
) -> None:
    sse = ResponseEvents(begin())
    frames = list(sse.start()) + list(sse.text("Bas"))
    failed, closing = sse.fail(exc)

    evs = events(frames + closing)
    assert [e["type"] for e in evs][-3:] == [
        "response.content_part.done",
        "response.output_item.done",
        "response.failed",
    ]
    body = evs[-1]["response"]
    assert body == failed.body()
    assert body["status"] == "failed" and body["error"]["code"] == code
    assert shown in body["error"]["message"] and "secret" not in body["error"]["message"]
    assert body["output"][0]["status"] == "incomplete"
    assert body["output"][0]["content"][0]["text"] == "Bas"


def test_a_failure_before_any_text_has_no_output() -> None:
    sse = ResponseEvents(begin())
    frames = list(sse.start())
    _, closing = sse.fail(RuntimeError("boom"))

    evs = events(frames + closing)
    assert [e["type"] for e in evs] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]
    assert evs[-1]["response"]["output"] == []


def test_the_response_echoes_the_request() -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
    schema = {"type": "object"}
    response = begin(
        instructions="sys", tools=[tool], tool_choice="required", parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "schema": schema}}, truncation="auto",
        previous_response_id="resp_0", user="u1", top_p=0.5,
    )  # fmt: skip

    body = response.body()
    assert_valid(body, "Response")
    assert body["tools"] == [tool]
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert body["text"]["format"] == {"type": "json_schema", "schema": schema, "name": "output"}
    assert body["truncation"] == "auto" and body["previous_response_id"] == "resp_0"
    assert body["store"] is True and body["user"] == "u1" and body["instructions"] == "sys"
    assert "user" not in begin().body()  # not nullable in the spec: left out when unset
