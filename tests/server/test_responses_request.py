"""CreateResponse: what it accepts, what it refuses by name, and how it becomes core parameters."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from lcfin.engine.types import ResponseFormat, SamplingParams
from lcfin.errors import InvalidParameter
from lcfin.server.responses_request import CreateResponse

PRICE = {
    "type": "function",
    "name": "get_price",
    "description": "Last price of a listed security",
    "parameters": {"type": "object", "properties": {"ticker": {"type": "string"}}},
    "strict": True,
}
LCR = {"type": "function", "name": "lcr", "parameters": None, "strict": None}


def request(**body: Any) -> CreateResponse:
    req = CreateResponse.model_validate({"model": "m", "input": "What is CET1?", **body})
    req.check_supported()
    return req


def refused(param: str, **body: Any) -> InvalidParameter:
    with pytest.raises(InvalidParameter) as caught:
        request(**body)
    assert caught.value.param == param, caught.value
    return caught.value


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    req = request(instructions="Answer briefly.")

    assert req.core_messages([], 100) == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is CET1?"},
    ]


def test_message_items_with_text_parts_and_roles() -> None:
    req = request(
        input=[
            {"role": "developer", "content": "Be terse."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "CET1 "}, {"type": "input_text", "text": "ratio?"},
            ]},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "13%", "annotations": []}]},
        ]
    )  # fmt: skip

    assert req.core_messages([], 100) == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "CET1 ratio?"},
        {"role": "assistant", "content": "13%"},
    ]


def test_function_calls_join_the_assistant_turn_and_outputs_become_tool_messages() -> None:
    call = {"type": "function_call", "call_id": "call_1", "name": "get_price", "arguments": "{}"}
    req = request(
        input=[
            {"role": "user", "content": "Prices?"},
            {"role": "assistant", "content": "Looking them up."},
            call,
            {**call, "call_id": "call_2", "arguments": '{"ticker": "GLE"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "61.2"},
            {"type": "function_call_output", "call_id": "call_9",
             "output": [{"type": "input_text", "text": "unknown call"}]},
        ]
    )  # fmt: skip

    messages = req.core_messages([], 100)

    assert messages[1] == {
        "role": "assistant",
        "content": "Looking them up.",
        "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_price", "arguments": "{}"}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_price", "arguments": '{"ticker": "GLE"}'}},
        ],
    }  # fmt: skip
    assert messages[2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "name": "get_price",
        "content": "61.2",
    }
    assert messages[3] == {"role": "tool", "tool_call_id": "call_9", "content": "unknown call"}


def test_a_call_without_a_preceding_assistant_message_opens_one() -> None:
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""}
    messages = request(input=[{"role": "user", "content": "x"}, call]).core_messages([], 100)

    assert messages[-1]["role"] == "assistant" and messages[-1]["content"] is None
    assert messages[-1]["tool_calls"][0]["function"]["name"] == "f"


def test_history_comes_before_the_input_and_counts_against_the_limit() -> None:
    history = [
        {"role": "user", "content": "first"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a"}]},
    ]
    req = request(instructions="sys", input="second")

    assert [m["content"] for m in req.core_messages(history, 3)] == ["sys", "first", "a", "second"]
    with pytest.raises(InvalidParameter) as caught:
        req.core_messages(history, 2)
    assert caught.value.param == "input"


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ("just a string", "input[0]"),
        ({"role": "tool", "content": "x"}, "input[0].role"),
        ({"role": "user", "content": 42}, "input[0].content"),
        ({"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]},
         "input[0].content[0].type"),
        ({"type": "web_search_call", "id": "ws_1"}, "input[0].type"),
        ({"type": "item_reference", "id": "msg_1"}, "input[0].type"),
        ({"type": "reasoning", "id": "rs_1", "summary": []}, "input[0].type"),
        ({"type": "function_call", "call_id": "c", "name": "", "arguments": "{}"},
         "input[0].name"),
        ({"type": "function_call", "call_id": "c", "name": "f"}, "input[0].arguments"),
        ({"type": "function_call_output", "output": "x"}, "input[0].call_id"),
        ({"role": "user", "content": "nul \x00 byte"}, "input[0].content"),
    ],
)  # fmt: skip
def test_unusable_items_are_refused_by_name(item: Any, param: str) -> None:
    req = request(input=[item])
    with pytest.raises(InvalidParameter) as caught:
        req.core_messages([], 100)
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"context_management": [{"type": "compaction"}]}, "context_management"),
        ({"moderation": {"model": "omni"}}, "moderation"),
        ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
        ({"reasoning": {"summary": "auto"}}, "reasoning.summary"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [PRICE, {"type": "file_search", "vector_store_ids": []}]}, "tools[1].type"),
        ({"tools": [{"type": "function", "name": ""}]}, "tools[0].name"),
        ({"tools": [{"type": "function", "name": "f", "parameters": []}]}, "tools[0].parameters"),
        ({"input": []}, "input"),
        ({"input": None}, "input"),
        ({"stream_options": {"include_obfuscation": False}}, "stream_options"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
    ],
)
def test_unsupported_fields_are_refused_by_name(body: dict[str, Any], param: str) -> None:
    error = refused(param, **body)
    assert param.split(".")[0].split("[")[0] in str(error)  # the message names the field too


@pytest.mark.parametrize(
    "body",
    [
        {"background": False, "conversation": None, "prompt": None, "reasoning": None},
        {"reasoning": {"effort": None, "summary": None}},
        {"reasoning": {"effort": "none"}},
        {"include": ["reasoning.encrypted_content", "file_search_call.results"]},
        {"service_tier": "auto", "prompt_cache_key": "k", "safety_identifier": "s"},
        {"max_tool_calls": 3, "prompt_cache_retention": "24h", "text": {"verbosity": "low"}},
        {"stream": True, "stream_options": {"include_obfuscation": False}},
        {"truncation": "auto", "user": "u-1", "metadata": {"team": "risk"}},
        {"some_future_field": {"x": 1}},
    ],
)
def test_accepted_and_ignored_fields(body: dict[str, Any]) -> None:
    request(**body)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"max_output_tokens": 15}, "max_output_tokens"),  # the spec's minimum is 16
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": "1"}, "top_p"),
        ({"store": "yes"}, "store"),
        ({"text": {"format": {"type": "xml"}}}, "text"),
        ({"truncation": "middle"}, "truncation"),
        ({"metadata": {"k": 1}}, "metadata"),
    ],
)
def test_wrong_types_and_ranges_fail_validation(body: dict[str, Any], loc: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CreateResponse.model_validate({"model": "m", "input": "x", **body})
    assert caught.value.errors()[0]["loc"][0] == loc


def test_sampling_params_for_plain_text() -> None:
    req = request(max_output_tokens=32, temperature=0, top_p=0.9)

    assert req.to_sampling_params({}) == SamplingParams(max_tokens=32, temperature=0, top_p=0.9)
    # not given: the model's defaults; max_output_tokens: no limit, as the spec's default
    defaults = {"temperature": 0.6, "top_k": 20}
    assert request().to_sampling_params(defaults) == SamplingParams(
        max_tokens=None, temperature=0.6, top_k=20
    )
    assert req.to_sampling_params(defaults).temperature == 0  # given beats the default
    assert req.generation([{"role": "user", "content": "x"}]).tools is None


def response_format(req: CreateResponse) -> ResponseFormat | None:
    return req.to_sampling_params({}).response_format


def test_text_format_becomes_the_cores_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    strict = request(text={"format": {"type": "json_schema", "name": "A", "schema": schema,
                                      "strict": True}})  # fmt: skip
    loose = request(text={"format": {"type": "json_schema", "schema": schema}})

    assert response_format(strict) == ResponseFormat.parse(
        {"type": "json_schema", "json_schema": {"name": "A", "schema": schema, "strict": True}}
    )
    assert response_format(loose) == ResponseFormat.parse(
        {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    )
    assert response_format(request(text={"format": {"type": "json_object"}})) == ResponseFormat()
    assert response_format(request(text={"format": {"type": "text"}})) is None
    with pytest.raises(InvalidParameter) as caught:  # refused before anything is generated
        request(text={"format": {"type": "json_schema", "name": "A"}}).generation([])
    assert caught.value.param == "text.format.schema"


def test_function_tools_become_the_cores_tools() -> None:
    req = request(tools=[PRICE, LCR], tool_choice={"type": "function", "name": "lcr"})

    gen = req.generation([])

    assert gen.tools == [
        {"type": "function", "function": {k: PRICE[k] for k in ("name", "description",
                                                                  "parameters")}},
        {"type": "function", "function": {"name": "lcr"}},
    ]  # fmt: skip
    assert gen.tool_choice == {"type": "function", "function": {"name": "lcr"}}
    none = request(tools=[PRICE], tool_choice="none").generation([{"role": "user", "content": "x"}])
    assert none.tool_choice == "none"


def test_allowed_tools_narrow_the_tools_and_set_the_mode() -> None:
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function",
                                                                       "name": "lcr"}]}  # fmt: skip
    req = request(tools=[PRICE, LCR], tool_choice=choice)

    gen = req.generation([])

    assert [t["function"]["name"] for t in gen.tools or []] == ["lcr"]
    assert gen.tool_choice == "required"


@pytest.mark.parametrize(
    "choice",
    [
        {"type": "web_search_preview"},
        {"type": "function"},
        {"type": "allowed_tools", "mode": "auto", "tools": []},
        {
            "type": "allowed_tools",
            "mode": "sometimes",
            "tools": [{"type": "function", "name": "x"}],
        },
        "sometimes",
    ],
)
def test_other_tool_choices_are_refused(choice: Any) -> None:
    req = request(tools=[PRICE], tool_choice=choice)
    with pytest.raises(InvalidParameter) as caught:
        req.generation([])
    assert caught.value.param == "tool_choice"


def test_logprobs_from_include_or_top_logprobs() -> None:
    assert request().logprobs is None
    assert request(include=["message.output_text.logprobs"]).logprobs == 0
    assert request(top_logprobs=3).logprobs == 3
    assert request(top_logprobs=2).to_sampling_params({}).logprobs == 2


def test_parallel_tool_calls_default_to_true() -> None:
    assert request().parallel
    assert not request(parallel_tool_calls=False).parallel
