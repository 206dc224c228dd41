"""A streaming client that leaves before its first token (queued or in prefill) aborts the work."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from lcfin.engine.types import Delta
from tests.integration.conftest import LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

PREFILL_S = 5.0  # the simulated prefill: far longer than the client waits


def slow_first_token(live: LiveServer) -> None:
    """Hold each request's first delta for PREFILL_S (the real sequence runs meanwhile)."""
    current = live.llm.loaded
    assert current is not None
    real = current.backend.generate

    async def slow(request: Any) -> AsyncIterator[Delta]:
        events = real(request)
        try:
            first = True
            async for delta in events:
                if first:
                    await asyncio.sleep(PREFILL_S)
                    first = False
                yield delta
        finally:
            await events.aclose()

    current.backend.generate = slow  # type: ignore[method-assign]


async def test_leaving_during_prefill_aborts(make_live: Callable[..., LiveServer]) -> None:
    live = make_live()
    slow_first_token(live)
    body = {
        "model": live.model,
        "messages": [{"role": "user", "content": "Define EBITDA."}],
        "max_tokens": 100,
        "ignore_eos": True,
        "stream": True,
    }
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
        with pytest.raises(httpx.ReadTimeout):  # no headers yet: the response has not started
            await http.post("/v1/chat/completions", json=body, timeout=0.5)
    deadline = time.monotonic() + PREFILL_S - 1
    while time.monotonic() < deadline:
        records = live.llm.recent_requests()
        current = live.llm.loaded
        if records and current is not None and current.active == 0:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the request was not aborted before its prefill would have ended")
    assert records[-1].finish_reason in ("abort", None)
    assert records[-1].completion_tokens < 100
    assert time.monotonic() - started < PREFILL_S
