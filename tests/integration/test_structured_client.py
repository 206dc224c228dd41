"""The official `openai` client's structured-output and tool helpers against a real server."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from openai import OpenAI
from pydantic import BaseModel, Field

from tests.integration.conftest import LiveServer

pytestmark = [pytest.mark.any_backend, pytest.mark.integration]


class Capital(BaseModel):
    """What the helper parses the reply into."""

    issuer: str = Field(max_length=10)
    rating: Literal["AAA", "AA", "A"]
    cet1_bp: int = Field(ge=0, le=3000)


def test_parse_helper_returns_the_model(client: OpenAI, live: LiveServer):
    done = client.chat.completions.parse(
        model=live.model,
        messages=[{"role": "user", "content": "Extract the issuer's capital."}],
        response_format=Capital,
        max_tokens=120,
        temperature=0,
    )

    parsed = done.choices[0].message.parsed
    assert isinstance(parsed, Capital)


def test_logprobs_and_named_tool_through_the_client(client: OpenAI, live: LiveServer):
    tool = {
        "type": "function",
        "function": {
            "name": "get_price",
            "parameters": {
                "type": "object",
                "properties": {"ticker": {"type": "string", "maxLength": 6}},
                "required": ["ticker"],
            },
        },
    }
    done = client.chat.completions.create(
        model=live.model,
        messages=[{"role": "user", "content": "Price of BNP?"}],
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "get_price"}},
        max_tokens=150,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )

    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = (choice.message.tool_calls or [])[0]
    assert call.function.name == "get_price"
    assert "ticker" in json.loads(call.function.arguments)
    assert choice.logprobs is not None and choice.logprobs.content
