"""The OpenAI Agents SDK (`openai-agents`) runs agents against a real server, unchanged.

The SDK talks to the Responses API (its default) through an `AsyncOpenAI` client pointed at the
live server. Its tracing exporter (which would post to OpenAI) is turned off. The tiny model's
text is gibberish and rarely ends by itself (the SDK treats an incomplete response as an error),
so the tool call is forced (tool_choice "required", which the SDK resets to auto after the
call) and the final answers are structured outputs, whose grammar ends them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

import pytest
import pytest_asyncio
from pydantic import BaseModel, Field

from tests.integration.conftest import LiveServer

agents = pytest.importorskip("agents", reason="the dev extra installs openai-agents")

pytestmark = [pytest.mark.any_backend, pytest.mark.integration, pytest.mark.asyncio]


class Capital(BaseModel):
    """The agents' structured output.

    No free-form string: on vLLM's CPU build a constrained JSON string may hold raw control
    characters, which no JSON parser accepts (chat's structured outputs alike; an engine issue).
    """

    rating: Literal["AAA", "AA", "A"]
    cet1_bp: int = Field(ge=0, le=3000)


@pytest.fixture(autouse=True)
def no_tracing() -> Iterator[None]:
    agents.set_tracing_disabled(True)
    yield
    agents.set_tracing_disabled(False)


@pytest_asyncio.fixture
async def model(live: LiveServer) -> AsyncIterator[Any]:
    """The SDK's Responses model over an AsyncOpenAI client pointed at the live server."""
    from openai import AsyncOpenAI

    async with AsyncOpenAI(
        base_url=live.base_url, api_key="unused", max_retries=0, timeout=60
    ) as client:
        yield agents.OpenAIResponsesModel(model=live.model, openai_client=client)


async def test_an_agent_calls_its_function_tool_and_answers(model: Any):
    calls: list[str] = []

    @agents.function_tool
    def get_price(ticker: Annotated[str, Field(max_length=6)]) -> str:
        """Last price of a listed security."""
        calls.append(ticker)
        return json.dumps({"ticker": ticker, "price": 61.2, "currency": "EUR"})

    agent = agents.Agent(
        name="Pricer",
        instructions="Look up the issuer's price with the tool, then describe its capital.",
        tools=[get_price],
        output_type=Capital,
        model=model,
        model_settings=agents.ModelSettings(tool_choice="required", temperature=0, max_tokens=100),
    )

    result = await agents.Runner.run(agent, "What is the price of BNP?", max_turns=3)

    kinds = [type(item).__name__ for item in result.new_items]
    assert kinds == ["ToolCallItem", "ToolCallOutputItem", "MessageOutputItem"]
    assert len(calls) == 1 and len(calls[0]) <= 6  # the schema's maxLength, decoded
    assert isinstance(result.final_output, Capital)
    assert len(result.raw_responses) == 2  # two model calls: the tool call, then the answer
    ids = [r.response_id for r in result.raw_responses]
    assert all(i and i.startswith("resp_") for i in ids) and ids[0] != ids[1]
    usage = result.context_wrapper.usage
    assert usage.requests == 2 and usage.input_tokens > 0 and usage.output_tokens > 0


async def test_a_streamed_agent_with_structured_output(model: Any):
    agent = agents.Agent(
        name="Extractor",
        instructions="Extract the issuer's capital.",
        output_type=Capital,
        model=model,
        model_settings=agents.ModelSettings(temperature=0, max_tokens=100),
    )

    result = agents.Runner.run_streamed(agent, "BNP Paribas, rated A+.")
    kinds = {event.type async for event in result.stream_events()}

    assert "raw_response_event" in kinds
    assert isinstance(result.final_output, Capital)
