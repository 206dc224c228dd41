"""Function calls read out of a reply as it streams: the pieces, fed in any sizes, add up to
exactly the non-streaming parse (`parse_tool_calls`: the same text fed at once).

The replies follow the model families' documented formats: Qwen3 / Hermes `<tool_call>` blocks
(Qwen3's function-calling guide, as vLLM's `hermes` parser reads them; Qwen3 may think first),
Llama 3.1 JSON tool calling (`{"name": ..., "parameters": ...}`, `<|python_tag|>`, `;`), and
the bare JSON call vLLM's structured outputs produce when a call is forced.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lcfin.engine.function_call_stream import CallStream, parse_tool_calls, stream_function_calls
from lcfin.engine.types import Completion, Delta, TokenLogprob, ToolCallDelta, Usage

QWEN3_THINK_THEN_CALL = (
    "<think>\nThe user wants the LCR; I have the inputs.\n</think>\n\n"
    '<tool_call>\n{"name": "liquidity_coverage_ratio", "arguments": '
    '{"hqla": 1200, "outflows": 1000}}\n</tool_call>'
)
QWEN3_TWO_WITH_TEXT = (
    "I will look both up.\n\n"
    '<tool_call>\n{"name": "get_price", "arguments": {"ticker": "GLE.PA"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_price", "arguments": {"ticker": "BNP.PA"}}\n</tool_call>'
)
HERMES_NESTED = (
    '<tool_call>\n{"arguments": {"filters": {"sector": "banks", "tags": ["{x}", "a\\"b", '
    '"</tool_call> in a string"]}, "note": "café ☕"}, "name": "screen"}\n</tool_call>'
)
LLAMA3_JSON = '{"name": "get_price", "parameters": {"ticker": "ACA.PA"}}'
LLAMA3_PYTHON_TAG = (
    '<|python_tag|>{"name": "liquidity_coverage_ratio", "parameters": {"hqla": 2, "outflows": 1}}'
)
LLAMA3_TWO = (
    '{"name": "get_price", "parameters": {"ticker": "A"}}; '
    '{"name": "get_price", "parameters": {"ticker": "B"}}'
)
VLLM_FORCED = '{"name":"get_price","arguments":{"ticker":"X"}}'
CUT_BY_MAX_TOKENS = '<tool_call>\n{"name": "get_price", "arguments": {"ticker": "BN'
JSON_ANSWER = '{"answer": "The LCR is 120%", "confidence": 0.9}'
TEXT = "The LCR is the stock of high-quality liquid assets over 30-day net outflows: 120%."
NOT_A_CALL_BLOCK = "<tool_call>I cannot call tools here.</tool_call> So: 120%."
ARGS_AS_STRING = '<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>'

REPLIES = [
    (QWEN3_THINK_THEN_CALL, "qwen3_xml_json"),
    (QWEN3_TWO_WITH_TEXT, "qwen3_xml_json"),
    (HERMES_NESTED, None),
    (LLAMA3_JSON, "llama3_json"),
    (LLAMA3_PYTHON_TAG, "llama3_json"),
    (LLAMA3_TWO, "llama3_json"),
    (VLLM_FORCED, "qwen3_xml_json"),
    (VLLM_FORCED, "llama3_json"),
    (CUT_BY_MAX_TOKENS, "qwen3_xml_json"),
    (JSON_ANSWER, "qwen3_xml_json"),
    (JSON_ANSWER, "llama3_json"),
    (TEXT, "qwen3_xml_json"),
    (TEXT, "llama3_json"),
    (NOT_A_CALL_BLOCK, "qwen3_xml_json"),
    (ARGS_AS_STRING, "qwen3_xml_json"),
]


def pieces(text: str, cuts: list[int]) -> list[str]:
    """`text` cut at the given offsets."""
    bounds = [0, *sorted({c % (len(text) + 1) for c in cuts}), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def replay(text: str, fmt: str | None, cuts: list[int]) -> list[tuple[str, Any]]:
    """Every event, in order: ("text", str) or ("call", ToolCallDelta)."""
    stream = CallStream(fmt)
    events: list[tuple[str, Any]] = []
    for out in [*(stream.feed(p) for p in pieces(text, cuts)), stream.close()]:
        content, calls = out
        events += [("text", content)] if content else []
        events += [("call", d) for d in calls]
    return events


def assemble(events: list[tuple[str, Any]]) -> tuple[str, list[tuple[str, str, str]]]:
    """The content and the (id, name, arguments) of each call, from the events."""
    content, calls = "", []
    for kind, value in events:
        if kind == "text":
            assert not calls, "content after a call"
            content += value
        elif value.id is not None:
            assert value.index == len(calls) and value.name and value.arguments == ""
            calls.append([value.id, value.name, ""])
        else:
            assert value.index == len(calls) - 1, "arguments of a call not announced"
            calls[-1][2] += value.arguments
    return content, [tuple(c) for c in calls]  # type: ignore[misc]


def expected(text: str, fmt: str | None) -> tuple[str, list[tuple[str, str]]]:
    content, calls = parse_tool_calls(text, fmt)
    return content or "", [(c.name, c.arguments) for c in calls]


def without_ids(assembled: tuple[str, list[tuple[str, str, str]]]) -> Any:
    return assembled[0], [(name, args) for _, name, args in assembled[1]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reply=st.sampled_from(REPLIES), cuts=st.lists(st.integers(0, 400), max_size=40))
def test_any_chunking_adds_up_to_the_whole_parse(
    reply: tuple[str, str | None], cuts: list[int]
) -> None:
    text, fmt = reply
    assert without_ids(assemble(replay(text, fmt, cuts))) == expected(text, fmt)


def test_one_character_at_a_time_adds_up_too() -> None:
    for text, fmt in REPLIES:
        cuts = list(range(len(text)))
        assert without_ids(assemble(replay(text, fmt, cuts))) == expected(text, fmt), text


@pytest.mark.parametrize(
    ("text", "fmt", "content", "calls"),
    [
        (
            QWEN3_THINK_THEN_CALL,
            "qwen3_xml_json",
            "<think>\nThe user wants the LCR; I have the inputs.\n</think>",
            [("liquidity_coverage_ratio", {"hqla": 1200, "outflows": 1000})],
        ),
        (
            QWEN3_TWO_WITH_TEXT,
            "qwen3_xml_json",
            "I will look both up.",
            [("get_price", {"ticker": "GLE.PA"}), ("get_price", {"ticker": "BNP.PA"})],
        ),
        (
            HERMES_NESTED,
            None,
            "",
            [
                (
                    "screen",
                    {
                        "filters": {
                            "sector": "banks",
                            "tags": ["{x}", 'a"b', "</tool_call> in a string"],
                        },
                        "note": "café ☕",
                    },
                )
            ],
        ),
        (
            LLAMA3_PYTHON_TAG,
            "llama3_json",
            "",
            [("liquidity_coverage_ratio", {"hqla": 2, "outflows": 1})],
        ),
        (
            LLAMA3_TWO,
            "llama3_json",
            "",
            [("get_price", {"ticker": "A"}), ("get_price", {"ticker": "B"})],
        ),
        (VLLM_FORCED, "qwen3_xml_json", "", [("get_price", {"ticker": "X"})]),
        (ARGS_AS_STRING, "qwen3_xml_json", "", [("f", {"a": 1})]),
        (JSON_ANSWER, "llama3_json", JSON_ANSWER, []),
        (NOT_A_CALL_BLOCK, "qwen3_xml_json", NOT_A_CALL_BLOCK, []),
    ],
)
def test_what_each_family_reply_holds(
    text: str, fmt: str | None, content: str, calls: list[tuple[str, object]]
) -> None:
    got_content, got_calls = parse_tool_calls(text, fmt)
    assert (got_content or "") == content
    assert [(c.name, json.loads(c.arguments)) for c in got_calls] == calls


def test_arguments_are_the_generated_text_exactly() -> None:
    """The raw argument text, not a re-serialisation: the deltas can add up to it."""
    _, calls = parse_tool_calls(
        '<tool_call>{"name":"f","arguments":{ "a" :1.50 }}</tool_call>', None
    )
    assert calls[0].arguments == '{ "a" :1.50 }'


def test_a_call_cut_by_max_tokens_keeps_what_was_generated() -> None:
    _, calls = parse_tool_calls(CUT_BY_MAX_TOKENS, "qwen3_xml_json")
    assert [(c.name, c.arguments) for c in calls] == [("get_price", '{"ticker": "BN')]


def test_text_streams_as_generated_holding_back_only_a_possible_marker() -> None:
    stream = CallStream("qwen3_xml_json")
    assert stream.feed("The LCR") == ("The LCR", ())
    assert stream.feed(" is 120%") == (" is 120%", ())
    assert stream.feed(". \n<tool") == (".", ())  # whitespace and "<tool" may start a call
    assert stream.feed("box> is a word") == (" \n<toolbox> is a word", ())
    assert stream.close() == ("", ())


def test_a_call_streams_its_name_then_its_arguments() -> None:
    stream = CallStream("qwen3_xml_json")
    assert stream.feed("Checking.\n<tool_") == ("Checking.", ())
    assert stream.feed('call>\n{"name": "get_pr') == ("", ())
    _, start = stream.feed('ice", "arguments": {"tic')
    assert [(d.index, d.name, d.arguments) for d in start] == [
        (0, "get_price", ""),
        (0, None, '{"tic'),
    ]
    assert start[0].id is not None and start[0].id.startswith("call_")
    assert stream.feed('ker": "BNP.PA"}') == ("", (ToolCallDelta(0, arguments='ker": "BNP.PA"}'),))
    assert stream.feed("}\n</tool_call>") == ("", ())
    assert stream.close() == ("", ())


def test_llama_text_is_not_held_back() -> None:
    stream = CallStream("llama3_json")
    assert stream.feed("The answer ") == ("The answer ", ())
    assert stream.feed("<tool_call>") == ("<tool_call>", ())  # not Llama's syntax: text


def test_a_reply_opening_with_json_is_held_until_it_is_known_not_to_be_a_call() -> None:
    stream = CallStream("llama3_json")
    assert stream.feed('{"ans') == ("", ())
    assert stream.feed('wer": ') == ('{"answer": ', ())  # no call's first key: text from now
    assert stream.feed("1}") == ("1}", ())


def run_events(events: list[Delta | Completion], fmt: str | None) -> list[Delta | Completion]:
    async def source() -> AsyncIterator[Delta | Completion]:
        for event in events:
            yield event

    async def collect() -> list[Delta | Completion]:
        return [e async for e in stream_function_calls(source(), fmt)]

    return asyncio.run(collect())


def lp(token: str) -> TokenLogprob:
    return TokenLogprob(token, -0.5)


def test_events_carry_content_and_calls_and_the_completion_agrees() -> None:
    tokens = [
        "Sure.",
        " ",
        "<tool_call>",
        '\n{"name": "get_price",',
        ' "arguments": {"ticker":',
        ' "X"}}',
        "\n</tool_call>",
    ]
    deltas: list[Delta | Completion] = [Delta(t, 1, logprobs=(lp(t),)) for t in tokens]
    done = Completion("".join(tokens), "stop", Usage(3, len(tokens)), "m", "r")
    out = run_events([*deltas, done], "qwen3_xml_json")
    steps = [e for e in out if isinstance(e, Delta)]
    final = out[-1]
    assert isinstance(final, Completion)
    # every step carries something; no token (nor its logprob) is lost on the way
    assert all(s.text or s.tool_calls or s.logprobs for s in steps)
    assert sum(s.num_tokens for s in steps) == len(tokens)
    assert [x.token for s in steps for x in s.logprobs or ()] == tokens
    assert "".join(s.text for s in steps) == final.text == "Sure."
    pieces_ = [d for s in steps for d in s.tool_calls]
    assert final.tool_calls is not None and len(final.tool_calls) == 1
    call = final.tool_calls[0]
    assert pieces_[0].id == call.id and pieces_[0].name == call.name == "get_price"
    assert "".join(d.arguments for d in pieces_) == call.arguments == '{"ticker": "X"}'
    assert len(pieces_) > 2  # the arguments came in several deltas


def test_a_text_reply_keeps_its_completion_as_is() -> None:
    deltas: list[Delta | Completion] = [Delta("Hello", 1), Delta(" there", 1)]
    done = Completion("Hello there", "stop", Usage(3, 2), "m", "r")
    out = run_events([*deltas, done], "qwen3_xml_json")
    assert [e.text for e in out if isinstance(e, Delta)] == ["Hello", " there"]
    assert out[-1] is done


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
CALLS = st.lists(
    st.tuples(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=12),
        st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4),
    ),
    min_size=1,
    max_size=3,
)
STYLES = st.sampled_from([{}, {"separators": (",", ":")}, {"indent": 2}, {"ensure_ascii": False}])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    calls=CALLS,
    style=STYLES,
    before=st.sampled_from(["", "Let me check.\n", "<think>\nok\n</think>\n\n"]),
    family=st.sampled_from(["qwen3_xml_json", "llama3_json"]),
    cuts=st.lists(st.integers(0, 2000), max_size=30),
)
def test_generated_calls_come_back_exactly(
    calls: list[tuple[str, dict[str, Any]]],
    style: dict[str, Any],
    before: str,
    family: str,
    cuts: list[int],
) -> None:
    """Any call the model may write, in any JSON layout, comes back with its arguments text."""
    key = "parameters" if family == "llama3_json" else "arguments"
    args = [json.dumps(a, **style) for _, a in calls]
    objects = [
        f'{{"name": {json.dumps(n)}, "{key}": {a}}}' for (n, _), a in zip(calls, args, strict=True)
    ]
    if family == "llama3_json":
        text, content = "; ".join(objects), ""
    else:
        text = before + "".join(f"<tool_call>\n{o}\n</tool_call>\n" for o in objects)
        content = before.rstrip()
    got = without_ids(assemble(replay(text, family, cuts)))
    assert got == (content, [(n, a) for (n, _), a in zip(calls, args, strict=True)])
    assert [json.loads(a) for _, a in got[1]] == [a for _, a in calls]
