"""Generation requests admitted as a unit: places, rate limits, and one failure stopping all.

A chat request with n choices, or a completions request with a list of prompts, runs several
generations. `generation_events` asks the core for all of them at once (`FinancialLLM.abatch`:
one 429 up front when there is no room for every one), reserves what they may use against the
caller's rate limits before any starts, and streams their events; when one fails, the others are
cancelled and not billed (see #16).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING

from starlette.requests import Request

from lcfin.engine.types import Completion, Delta
from lcfin.server.protocol import Generation
from lcfin.server.ratelimit import reserved

if TYPE_CHECKING:
    from lcfin import FinancialLLM

__all__ = ["generation_events"]

Event = Delta | Completion


async def generation_events(
    request: Request, gen: Generation, *, endpoint: str, request_id: str | None = None
) -> AsyncIterator[tuple[int, Event]]:
    """The events of every generation `gen` asks for (see `FinancialLLM.abatch`), by index.

    Raises:
        Overloaded, RateLimited: refused as a whole, before any generation starts.
        LcfinError: the first failure of any generation (the others are cancelled).
    """
    llm: FinancialLLM = request.app.state.llm
    async with llm.abatch(
        gen.sources,
        raw=gen.raw,
        n=gen.n,
        truncate=gen.truncate,
        endpoint=endpoint,
        request_id=request_id,
        tools=gen.tools,
        tool_choice=gen.tool_choice,
        sampling=gen.sampling,
    ) as admitted:
        with reserved(request.app.state.limiter, admitted.admission):
            async with aclosing(admitted.events()) as events:  # a client gone stops them all
                async for item in events:
                    yield item
