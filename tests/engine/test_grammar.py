"""Constrained decoding on tiny random models: the output parses and validates, every time.

A random model writes garbage; under a grammar the garbage must still be valid JSON matching
the schema. Unconstrained requests sharing the batch must not change.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from lcfin.engine.structured import check_schema
from lcfin.engine.types import Completion, Delta, ResponseFormat, SamplingParams
from lcfin.errors import InvalidParameter, OutputTruncated

SCHEMAS: dict[str, dict[str, Any]] = {
    "nested": {
        "type": "object",
        "properties": {
            "issuer": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 12},
                    "lei": {"type": "string", "maxLength": 20},
                },
                "required": ["name", "lei"],
                "additionalProperties": False,
            },
            "audited": {"type": "boolean"},
        },
        "required": ["issuer", "audited"],
        "additionalProperties": False,
    },
    "array": {
        "type": "object",
        "properties": {
            "ratios": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 999},
                "minItems": 1,
                "maxItems": 4,
            }
        },
        "required": ["ratios"],
        "additionalProperties": False,
    },
    "enum": {
        "type": "object",
        "properties": {"rating": {"enum": ["AAA", "AA", "A", "BBB"]}},
        "required": ["rating"],
        "additionalProperties": False,
    },
    "bounded": {
        "type": "object",
        "properties": {
            "cet1_ratio": {"type": "number", "minimum": 0, "maximum": 30},
            "lcr": {"type": "integer", "minimum": 100, "maximum": 400},
        },
        "required": ["cet1_ratio", "lcr"],
        "additionalProperties": False,
    },
}


def fmt(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": True}}


def assert_matches(text: str, schema: dict[str, Any]) -> Any:
    data = json.loads(text)
    Draft202012Validator(schema).validate(data)
    return data


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_constrained_output_validates(make_llm, arch: str, name: str) -> None:
    llm, schema = make_llm(arch), SCHEMAS[name]
    for seed in range(3):
        done = llm.chat(
            "Report", max_tokens=120, temperature=1.0, seed=seed, response_format=fmt(schema)
        )
        assert done.finish_reason == "stop", done.text
        data = assert_matches(done.text, schema)
        assert done.text == json.dumps(data, separators=(",", ":"), ensure_ascii=False)  # compact


def test_streamed_constrained_output_validates(shared_llm) -> None:
    schema = SCHEMAS["bounded"]
    events = list(
        shared_llm.stream_events(
            "Ratios", max_tokens=80, temperature=0, response_format=fmt(schema)
        )
    )
    text = "".join(e.text for e in events if isinstance(e, Delta))
    final = events[-1]
    assert isinstance(final, Completion) and final.text == text
    assert_matches(text, schema)


def test_json_object_mode_gives_an_object(shared_llm) -> None:
    done = shared_llm.chat(
        "Any", max_tokens=60, temperature=0, response_format={"type": "json_object"}
    )
    assert done.finish_reason == "stop"
    assert isinstance(json.loads(done.text), dict)


@pytest.mark.asyncio
async def test_batched_with_free_requests_that_stay_unchanged(make_llm) -> None:
    llm = make_llm()
    questions = ["What is Basel III?", "Define EBITDA.", "What is value at risk?"]
    alone = [(await llm.achat(q, max_tokens=12, temperature=0)).text for q in questions]

    free = [llm.achat(q, max_tokens=12, temperature=0) for q in questions]
    constrained = [
        llm.achat(q, max_tokens=80, temperature=0, response_format=fmt(SCHEMAS[name]))
        for q, name in zip(questions, ["nested", "enum", "bounded"], strict=True)
    ]
    done = await asyncio.gather(*free, *constrained)

    assert [d.text for d in done[:3]] == alone
    for d, name in zip(done[3:], ["nested", "enum", "bounded"], strict=True):
        assert_matches(d.text, SCHEMAS[name])


class Capital(BaseModel):
    """The schema given as a pydantic model."""

    issuer: str = Field(max_length=10)
    rating: Literal["AAA", "AA", "A"]
    cet1_ratio: float = Field(ge=0, le=30)


def test_json_schema_shortcut_returns_parsed_data(shared_llm) -> None:
    model = shared_llm.chat("Extract", json_schema=Capital, max_tokens=80, temperature=0)
    assert isinstance(model.parsed, Capital)

    as_dict = shared_llm.chat("Extract", json_schema=SCHEMAS["enum"], max_tokens=40, temperature=0)
    assert as_dict.parsed["rating"] in {"AAA", "AA", "A", "BBB"}


def test_cut_structured_output_raises_output_truncated(shared_llm) -> None:
    with pytest.raises(OutputTruncated, match="max_tokens"):
        shared_llm.chat("Extract", json_schema=Capital, max_tokens=3, temperature=0)


@pytest.mark.parametrize("keyword", ["not", "if", "patternProperties"])
def test_unsupported_schema_keyword_is_named(shared_llm, keyword: str) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", keyword: {}}}}
    with pytest.raises(InvalidParameter, match=keyword) as info:
        shared_llm.chat("x", max_tokens=5, response_format=fmt(schema))
    assert info.value.param == "response_format"


def test_a_property_named_like_a_keyword_is_fine() -> None:
    check_schema({"type": "object", "properties": {"if": {"type": "string"}}})


@pytest.mark.parametrize(
    "value",
    [
        {"type": "xml"},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"schema": 1}},
    ],
)
def test_bad_response_format_is_invalid_parameter(value: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameter) as info:
        SamplingParams(response_format=value)
    assert info.value.param == "response_format"


def test_response_format_parse() -> None:
    assert ResponseFormat.parse({"type": "text"}) is None
    assert ResponseFormat.parse({"type": "json_object"}) == ResponseFormat()
    parsed = ResponseFormat.parse(fmt({"type": "object", "properties": {"b": {}, "a": {}}}))
    assert parsed is not None and parsed.name == "t"
    assert list(parsed.schema["properties"]) == ["b", "a"]  # type: ignore[index]  # order kept


# -- logprobs --------------------------------------------------------------------------------


@pytest.mark.parametrize("top", [0, 1, 5])
def test_logprobs_shape_and_greedy_choice(shared_llm, top: int) -> None:
    done = shared_llm.chat("Basel", max_tokens=6, temperature=0, logprobs=top)
    assert done.logprobs is not None and len(done.logprobs) == done.usage.completion_tokens
    for entry in done.logprobs:
        assert entry.logprob <= 0
        assert len(entry.top) == top
        if top:
            assert entry.logprob == pytest.approx(max(lp for _, lp in entry.top))
            assert entry.top[0][0] == entry.token


def test_logprobs_under_a_grammar_list_only_allowed_tokens(shared_llm) -> None:
    done = shared_llm.chat(
        "r", max_tokens=40, temperature=0, logprobs=3, response_format=fmt(SCHEMAS["enum"])
    )
    assert done.logprobs is not None
    assert all(lp > float("-inf") for e in done.logprobs for _, lp in e.top)
    assert "".join(e.token for e in done.logprobs).startswith('{"rating":"')


def test_no_logprobs_unless_asked(shared_llm) -> None:
    assert shared_llm.chat("Basel", max_tokens=3).logprobs is None


def test_top_logprobs_above_20_is_refused() -> None:
    with pytest.raises(InvalidParameter):
        SamplingParams(logprobs=21)
