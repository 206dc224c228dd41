"""Tool calls: parsing both model formats, validation, and forcing a call with the grammar.

The fixture replies follow the formats' documentation: Qwen3's function-calling guide (Hermes
style `<tool_call>` blocks, as vLLM's `hermes` parser reads them) and Meta's Llama 3.1 prompt
format (JSON-based tool calling: `{"name": ..., "parameters": ...}`).
"""

from __future__ import annotations

import json

import pytest

from lcfin.engine.function_call_stream import parse_tool_calls
from lcfin.engine.function_calls import ToolCall, check_tools, forced_call_format
from lcfin.errors import InvalidParameter

PRICE = {
    "type": "function",
    "function": {
        "name": "get_price",
        "description": "Last price of a listed security",
        "parameters": {
            "type": "object",
            "properties": {"ticker": {"type": "string", "maxLength": 8}},
            "required": ["ticker"],
        },
    },
}
LCR = {
    "type": "function",
    "function": {
        "name": "liquidity_coverage_ratio",
        "parameters": {
            "type": "object",
            "properties": {
                "hqla": {"type": "integer", "minimum": 0, "maximum": 1000},
                "outflows": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
            "required": ["hqla", "outflows"],
        },
    },
}
TOOLS = [PRICE, LCR]

QWEN3_ONE = '<tool_call>\n{"name": "get_price", "arguments": {"ticker": "BNP.PA"}}\n</tool_call>'
QWEN3_TWO_WITH_TEXT = (
    "I will look both up.\n"
    '<tool_call>\n{"name": "get_price", "arguments": {"ticker": "GLE.PA"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "liquidity_coverage_ratio", '
    '"arguments": {"hqla": 120.5, "outflows": 100}}\n</tool_call>'
)
LLAMA3_ONE = '{"name": "get_price", "parameters": {"ticker": "ACA.PA"}}'
LLAMA3_PYTHON_TAG = (
    '<|python_tag|>{"name": "liquidity_coverage_ratio", "parameters": {"hqla": 2, "outflows": 1}}'
)
LLAMA3_TWO = (
    '{"name": "get_price", "parameters": {"ticker": "A"}}; '
    '{"name": "get_price", "parameters": {"ticker": "B"}}'
)


def args(call: ToolCall) -> object:
    return json.loads(call.arguments)


def test_qwen3_single_call() -> None:
    content, calls = parse_tool_calls(QWEN3_ONE, "qwen3_xml_json")
    assert content is None
    assert [(c.name, args(c)) for c in calls] == [("get_price", {"ticker": "BNP.PA"})]
    assert calls[0].id.startswith("call_")


def test_qwen3_text_then_two_calls() -> None:
    content, calls = parse_tool_calls(QWEN3_TWO_WITH_TEXT, "qwen3_xml_json")
    assert content == "I will look both up."
    assert [c.name for c in calls] == ["get_price", "liquidity_coverage_ratio"]
    assert args(calls[1]) == {"hqla": 120.5, "outflows": 100}


def test_qwen3_unterminated_last_block_still_parses() -> None:
    _, calls = parse_tool_calls(QWEN3_ONE.removesuffix("\n</tool_call>"), "qwen3_xml_json")
    assert [c.name for c in calls] == ["get_price"]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (LLAMA3_ONE, ["get_price"]),
        (LLAMA3_PYTHON_TAG, ["liquidity_coverage_ratio"]),
        (LLAMA3_TWO, ["get_price", "get_price"]),
    ],
)
def test_llama3_json_calls(text: str, names: list[str]) -> None:
    content, calls = parse_tool_calls(text, "llama3_json")
    assert content is None
    assert [c.name for c in calls] == names


@pytest.mark.parametrize("fmt", ["qwen3_xml_json", "llama3_json", None])
def test_plain_text_is_content(fmt: str | None) -> None:
    text = "The LCR is the stock of HQLA over 30-day net outflows."
    assert parse_tool_calls(text, fmt) == (text, [])


def test_qwen3_accepts_a_bare_json_call() -> None:  # what a call forced on vLLM looks like
    _, calls = parse_tool_calls('{"name":"get_price","arguments":{"ticker":"X"}}', "qwen3_xml_json")
    assert [(c.name, args(c)) for c in calls] == [("get_price", {"ticker": "X"})]


def test_unknown_format_tries_both() -> None:
    assert parse_tool_calls(QWEN3_ONE, None)[1][0].name == "get_price"
    assert parse_tool_calls(LLAMA3_ONE, None)[1][0].name == "get_price"


def test_a_block_that_is_not_a_call_is_content() -> None:
    text = "<tool_call>I cannot call tools</tool_call>"
    assert parse_tool_calls(text, "qwen3_xml_json") == (text, [])


def test_broken_arguments_are_kept_as_generated() -> None:
    # the name was streamed before the arguments broke: the call stands, as OpenAI's would
    text = '<tool_call>{"name": "get_price", "arguments": {</tool_call>'
    _, calls = parse_tool_calls(text, "qwen3_xml_json")
    assert [(c.name, c.arguments) for c in calls] == [("get_price", "{")]


def test_to_openai_shape() -> None:
    call = ToolCall("f", '{"a":1}', id="call_1")
    assert call.to_openai() == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"a":1}'},
    }


@pytest.mark.parametrize(
    ("tools", "choice", "param"),
    [
        ([{"type": "function", "function": {}}], None, "tools"),
        ([{"type": "retrieval"}], None, "tools"),
        (TOOLS, {"type": "function", "function": {"name": "nope"}}, "tool_choice"),
        (TOOLS, "sometimes", "tool_choice"),
        (None, "required", "tool_choice"),
    ],
)
def test_bad_tools_are_named(tools, choice, param: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        check_tools(tools, choice)
    assert info.value.param == param


def test_forced_format_only_for_required_or_named() -> None:
    assert forced_call_format(TOOLS, "auto", "qwen3_xml_json") is None
    assert forced_call_format(TOOLS, None, "qwen3_xml_json") is None
    qwen = forced_call_format(TOOLS, "required", "qwen3_xml_json")
    assert qwen is not None and qwen.prefix == "<tool_call>" and qwen.suffix == "</tool_call>"
    llama = forced_call_format(TOOLS, {"function": {"name": "get_price"}}, "llama3_json")
    assert llama is not None and llama.prefix == ""
    assert llama.schema is not None and "parameters" in llama.schema["properties"]  # type: ignore[operator]


@pytest.mark.parametrize(("arch", "fmt"), [("qwen3", "qwen3_xml_json"), ("llama", "llama3_json")])
def test_named_tool_choice_forces_that_function(make_llm, arch: str, fmt: str) -> None:
    llm = make_llm(arch)
    rf = forced_call_format(
        TOOLS, {"type": "function", "function": {"name": "liquidity_coverage_ratio"}}, fmt
    )
    done = llm.chat("Compute the LCR", max_tokens=80, temperature=0, response_format=rf)
    assert done.finish_reason == "stop", done.text
    _, calls = parse_tool_calls(done.text, fmt)
    assert [c.name for c in calls] == ["liquidity_coverage_ratio"]
    assert set(args(calls[0])) >= {"hqla", "outflows"}


def test_library_tools_fill_completion_tool_calls(shared_llm) -> None:
    choice = {"type": "function", "function": {"name": "get_price"}}
    done = shared_llm.chat("Price?", tools=TOOLS, tool_choice=choice, max_tokens=150, temperature=0)
    assert done.tool_calls is not None and [c.name for c in done.tool_calls] == ["get_price"]
    assert done.text == ""


def test_tool_messages_are_accepted_in_follow_ups(shared_llm) -> None:
    call = ToolCall("get_price", '{"ticker": "BNP.PA"}', id="call_9").to_openai()
    messages = [
        {"role": "user", "content": "Price of BNP?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_9", "content": '{"price": 61.2}'},
    ]
    done = shared_llm.chat(messages, tools=TOOLS, max_tokens=4, temperature=0)
    assert done.usage.completion_tokens >= 1
