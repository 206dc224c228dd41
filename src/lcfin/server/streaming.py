"""SSE framing, and racing work against a client disconnect."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lcfin.engine.types import Completion, Delta
from lcfin.errors import LcfinError

__all__ = [
    "SSE_HEADERS",
    "ClientGone",
    "event_stream",
    "prime",
    "sse",
    "sse_done",
    "sse_error",
    "unless_disconnected",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
Event = Delta | Completion
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClientGone(Exception):
    """The client closed the connection before the answer was ready."""


def sse(chunk: BaseModel) -> str:
    """One `data: {json}` SSE event (None fields kept, as OpenAI sends them)."""
    return f"data: {chunk.model_dump_json()}\n\n"


def sse_error(exc: Exception, request_id: str) -> str:
    """The error event sent when a stream fails after its first byte."""
    if isinstance(exc, LcfinError) and type(exc) is not LcfinError:
        body: dict[str, Any] = exc.to_openai()
    else:  # unexpected (a bare LcfinError is an engine failure): the details go to the log
        log.error("Stream failed (request %s)", request_id, exc_info=exc)
        message = f"The server had an error while streaming (request id {request_id})"
        body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return f"data: {json.dumps(body)}\n\n"


def sse_done() -> str:
    """The stream's last event."""
    return "data: [DONE]\n\n"


async def prime(events: AsyncIterator[T]) -> tuple[T, AsyncIterator[T]]:
    """Get the first event before the response starts, so early errors get a real status."""
    first = await events.__anext__()

    async def rest() -> AsyncIterator[T]:
        yield first
        async for event in events:
            yield event

    return first, rest()


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (which aborts the generation) if the client disconnects.

    Raises:
        ClientGone: the client left first.
    """
    task = asyncio.ensure_future(work)

    async def listen() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(listen())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
    if task in done:
        return task.result()
    await asyncio.gather(task, return_exceptions=True)
    log.info("Client disconnected; generation aborted")
    raise ClientGone


async def event_stream(
    request: Request,
    events: AsyncIterator[T],
    frames: Callable[[AsyncIterator[T]], AsyncIterator[str]],
) -> Response:
    """An SSE response of `frames(events)`, started once the first event is in.

    So an error before it (a bad parameter, a full queue) still gets its status; a client that
    leaves during queueing or prefill aborts the generation too (499).
    """
    try:
        _, events = await unless_disconnected(request, prime(events))
    except StopAsyncIteration:  # pragma: no cover - every stream ends with a Completion
        return Response(status_code=204)
    except ClientGone:
        return Response(status_code=499)
    return StreamingResponse(frames(events), media_type="text/event-stream", headers=SSE_HEADERS)
