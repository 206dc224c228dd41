"""POST /v1/responses, GET and DELETE /v1/responses/{id}: parse, call the core, render (S6).

The Responses API over the same core as chat: `FinancialLLM.astream_events` with the request's
messages, tools and output format, under the endpoint label `/v1/responses` (usage ledger,
metrics and cost count as for chat; rate limits apply to the POST, see `ratelimit.py`).
Responses with `store` (the default when the server keeps responses) are saved once finished,
before the answer or the stream's last event, and belong to the caller's API key id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response as HTTPResponse
from starlette.routing import Route

from lcfin.engine.types import Completion, Delta, final as final_completion
from lcfin.errors import InvalidParameter, LcfinError, NotFound
from lcfin.server.openai import cost_header, read_json, served_model
from lcfin.server.protocol import Generation
from lcfin.server.request_id import counted
from lcfin.server.responses_events import ResponseEvents
from lcfin.server.responses_objects import Response, new_item_id, output_items
from lcfin.server.responses_request import CreateResponse
from lcfin.server.streaming import ClientGone, event_stream, unless_disconnected
from lcfin.telemetry.records import current_api_key_id

if TYPE_CHECKING:
    from lcfin import FinancialLLM
    from lcfin.telemetry.response_store import ResponseStore

__all__ = ["ENDPOINT", "routes"]

log = logging.getLogger(__name__)

ENDPOINT = "/v1/responses"
Event = Delta | Completion
#: The core's (chat's) parameter names -> this API's, for the `param` of its errors.
_PARAMS = {"messages": "input", "max_tokens": "max_output_tokens", "response_format": "text.format"}


@dataclass
class _Call:
    """One validated request: what to generate, and where its response goes."""

    req: CreateResponse
    llm: FinancialLLM
    response: Response
    gen: Generation  # the conversation, sampling and tools
    items: list[Any]  # the conversation's input items, stored with the response
    store: ResponseStore | None
    owner: str | None

    async def events(self) -> AsyncIterator[Event]:
        """The core's events; its parameter errors name this API's fields (`input`, ...)."""
        events = cast(  # an async generator, typed as an iterator by the core
            "AsyncGenerator[Event, None]",
            self.llm.astream_events(
                self.gen.sources[0],
                truncate=self.gen.truncate,
                endpoint=ENDPOINT,
                request_id=self.response.id,
                tools=self.gen.tools,
                tool_choice=self.gen.tool_choice,
                sampling=self.gen.sampling,
            ),
        )
        async with contextlib.aclosing(events):  # closing this closes (aborts) the generation
            try:
                async for event in events:
                    yield event
            except InvalidParameter as exc:
                exc.param = _PARAMS.get(exc.param or "", exc.param)
                raise

    async def save(self, final: Response) -> None:
        """Store `final` when asked to; a database failure is logged, not the client's."""
        if self.store is None:
            return
        try:
            await asyncio.to_thread(self.store.put, final.id, self.owner, final.body(), self.items)
        except Exception:
            log.exception("Could not store response %s", final.id)


def _store(request: Request) -> ResponseStore | None:
    store: ResponseStore | None = request.app.state.telemetry.responses
    return store


def _not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(
        f"No response with id '{response_id}' (it never existed, expired, was deleted, or was "
        "created with another API key)",
        param=param,
        hint="create responses with store=true to read them back",
    )


async def _history(request: Request, previous: str | None, owner: str | None) -> list[Any]:
    """The conversation items `previous_response_id` continues from (none without one)."""
    if previous is None:
        return []
    store = _store(request)
    found = None if store is None else await asyncio.to_thread(store.get, previous, owner)
    if found is None:
        raise _not_found(previous, "previous_response_id")
    return found.conversation


async def _prepare(request: Request) -> _Call:
    """Validate the body into a `_Call` (400/404/503 before anything is generated)."""
    req = CreateResponse.model_validate(await read_json(request))
    req.check_supported()
    llm: FinancialLLM = request.app.state.llm
    model = served_model(llm, req.model)
    store = _store(request) if req.store is not False else None
    if req.store and store is None:
        raise InvalidParameter(
            "store=true is not available: this server keeps no responses "
            "(LCFIN_RESPONSE_STORE=false or LCFIN_USAGE_DB=off); send store=false",
            param="store",
        )
    owner = current_api_key_id()
    history = await _history(request, req.previous_response_id, owner)
    messages = req.core_messages(history, request.app.state.settings.max_messages)
    response = Response.begin(new_item_id("resp"), model, req, store is not None)
    items = [*history, *req.input_items()]
    return _Call(req, llm, response, req.generation(messages), items, store, owner)


async def create_response(request: Request) -> HTTPResponse:
    """POST /v1/responses."""
    with counted(request.app.state.llm, ENDPOINT):
        call = await _prepare(request)
    if call.req.stream:
        return await event_stream(request, call.events(), lambda ready: _render(call, ready))
    try:
        done = await unless_disconnected(request, final_completion(call.events()))
    except ClientGone:
        return HTTPResponse(status_code=499)
    output = output_items(
        done, new_item_id("msg"), parallel=call.req.parallel, logprobs=call.req.logprobs is not None
    )
    final = call.response.end(done, output)
    await call.save(final)
    return JSONResponse(final.body(), headers=cost_header(done))


async def _render(call: _Call, events: AsyncIterator[Event]) -> AsyncIterator[str]:
    """The SSE frames of `call`'s response; it is stored before the last one is sent."""
    sse = ResponseEvents(
        call.response, parallel=call.req.parallel, logprobs=call.req.logprobs is not None
    )
    for frame in sse.start():
        yield frame
    final: Response | None = None
    frames: list[str] = []
    try:
        async for event in events:
            if isinstance(event, Completion):
                final, frames = sse.finish(event)
            else:
                for frame in sse.delta(event):
                    yield frame
    except Exception as exc:  # after the first byte the status cannot change: response.failed
        if not isinstance(exc, LcfinError) or type(exc) is LcfinError:
            log.error("Response %s failed while streaming", call.response.id, exc_info=exc)
        final, frames = sse.fail(exc)
    assert final is not None  # every stream of the core ends with a Completion
    await call.save(final)
    for frame in frames:
        yield frame


async def retrieve_response(request: Request) -> HTTPResponse:
    """GET /v1/responses/{response_id}: a stored response of the caller's key."""
    if request.query_params.get("stream", "false").lower() not in ("false", "0"):
        raise InvalidParameter(
            "stream is only for background responses, which lcfin does not run", param="stream"
        )
    response_id = request.path_params["response_id"]
    store = _store(request)
    owner = current_api_key_id()
    found = None if store is None else await asyncio.to_thread(store.get, response_id, owner)
    if found is None:
        raise _not_found(response_id)
    return JSONResponse(found.body)


async def delete_response(request: Request) -> HTTPResponse:
    """DELETE /v1/responses/{response_id}: delete a stored response of the caller's key."""
    response_id = request.path_params["response_id"]
    store = _store(request)
    owner = current_api_key_id()
    if store is None or not await asyncio.to_thread(store.delete, response_id, owner):
        raise _not_found(response_id)
    return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


def routes() -> list[Route]:
    """The Responses API routes."""
    return [
        Route(ENDPOINT, create_response, methods=["POST"]),
        Route(ENDPOINT + "/{response_id}", retrieve_response, methods=["GET"]),
        Route(ENDPOINT + "/{response_id}", delete_response, methods=["DELETE"]),
    ]
