"""Helpers shared by the in-process (tests/server) and the uvicorn (tests/integration) tests."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx
    from starlette.applications import Starlette

    from lcfin import FinancialLLM, Settings

PROMPT = "What does the liquidity coverage ratio require?"


@dataclass
class Served:
    """One in-process server: its client, app, model and settings."""

    client: httpx.AsyncClient
    app: Starlette
    llm: FinancialLLM
    settings: Settings

    @property
    def model(self) -> str:
        """The id the served model answers to (its directory path, for a tiny model)."""
        assert self.llm.model is not None, "no model is loaded"
        return self.llm.model

    async def chat(self, **body: Any) -> httpx.Response:
        """POST /v1/chat/completions with the served model and a default question."""
        headers = body.pop("headers", None)
        payload = {"model": self.model, "messages": [{"role": "user", "content": PROMPT}], **body}
        return await self.client.post("/v1/chat/completions", json=payload, headers=headers)


class Serve(Protocol):
    """The `serve` fixture: `await serve(arch, load=..., **Settings kwargs)`."""

    async def __call__(
        self,
        arch: str = ...,
        *,
        load: bool = ...,
        raise_app_exceptions: bool = ...,
        **settings: Any,
    ) -> Served: ...


async def wait_loaded(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, timeout: float = 300.0
) -> dict[str, Any]:
    """Poll GET /loading-status until no load is running; its last body.

    The bound is generous: a vLLM engine starts three processes (15-30 s on two idle cores).
    """
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = (await client.get("/loading-status", headers=headers)).json()
        if body["status"] != "loading":
            return body
        assert time.monotonic() < deadline, f"still loading after {timeout}s: {body}"
        await asyncio.sleep(0.02)


class LoadGate:
    """Holds model loads started while it is closed, until it opens again."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()

    def close(self) -> None:
        """Loads started from now on wait for `open()`."""
        self._open.clear()

    def open(self) -> None:
        """Let waiting and later loads run."""
        self._open.set()

    def wait(self) -> None:
        assert self._open.wait(timeout=30), "the test never opened the load gate"


#: A Responses API function tool (flat form), strict: what the Responses tests call.
PRICE_FUNCTION: dict[str, Any] = {
    "type": "function",
    "name": "get_price",
    "description": "Last price of a listed security",
    "parameters": {
        "type": "object",
        "properties": {"ticker": {"type": "string", "maxLength": 6}},
        "required": ["ticker"],
        "additionalProperties": False,
    },
    "strict": True,
}
