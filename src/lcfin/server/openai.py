"""/v1/chat/completions, /v1/completions and /v1/models: parse, call the core, render (S6).

Chat and completions share one path (`_generate`): validate the body, ask the core for every
choice at once (`generation_events`), then answer with the response model, or stream the chunks
its renderer (`ChatStream`, `CompletionStream` in responses.py) makes of the core's events.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lcfin.engine.types import Completion, Delta, collect
from lcfin.errors import BackendUnavailable, InvalidParameter, ModelLoading, ModelNotFound
from lcfin.server.admission import generation_events
from lcfin.server.limits import check_chat, check_completion
from lcfin.server.protocol import ChatCompletionRequest, CompletionRequest, chunk_id
from lcfin.server.request_id import counted, current_request_id
from lcfin.server.responses import (
    ChatCompletionResponse,
    ChatStream,
    CompletionResponse,
    CompletionStream,
    ModelCard,
    ModelList,
)
from lcfin.server.streaming import (
    ClientGone,
    event_stream,
    sse,
    sse_done,
    sse_error,
    unless_disconnected,
)

if TYPE_CHECKING:
    from lcfin import FinancialLLM, ModelSpec, Settings

__all__ = ["COST_HEADER", "cost_header", "read_json", "routes", "served_model"]

#: What a non-streaming request cost in USD; a stream carries it in its usage chunk instead
#: (`usage.cost_usd`), since headers are sent before the cost is known (docs/analytics.md).
COST_HEADER = "x-lcfin-cost-usd"
Event = Delta | Completion


def cost_header(done: Completion) -> dict[str, str]:
    """The x-lcfin-cost-usd header for a request's (merged: `Completion.of_choices`) result."""
    return {COST_HEADER: f"{done.cost_usd or 0.0:.10f}"}


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (400 when it is not one)."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...
        raise InvalidParameter("The request body is not valid JSON", param="body") from None
    if not isinstance(body, dict):
        raise InvalidParameter("The request body must be a JSON object", param="body")
    return body


def served_model(llm: FinancialLLM, requested: str) -> str:
    """Check that `requested` names the model being served.

    Raises:
        ModelLoading: that model (or any, when none serves yet) is loading.
        ModelNotFound: another model is served; the message names it.
    """
    st = llm.status()
    if requested and requested in {st.model, st.repo_id}:
        return requested
    if st.loading_model is not None and (st.model is None or requested == st.loading_model):
        raise ModelLoading(f"Model {st.loading_model} is loading; retry shortly", retry_after=5)
    if st.model is None:
        failed = f": the last load failed ({st.error})" if st.error else ""
        raise BackendUnavailable(
            f"No model is loaded{failed}", hint="load one with POST /load-model?model_name=..."
        )
    serving = f"this server serves '{st.model}'" if st.model else "no model is loaded"
    raise ModelNotFound(
        f"The model '{requested}' is not being served; {serving}",
        param="model",
        model=requested,
        hint="use a model id from GET /v1/models, or load another with POST /load-model",
    )


R = TypeVar("R", ChatCompletionRequest, CompletionRequest)


@dataclass(frozen=True)
class _Api(Generic[R]):
    """What differs between chat and (legacy) completions."""

    endpoint: str
    id_prefix: str
    request: type[R]
    check: Callable[[R, Settings], None]  # the server's limits (messages, prompts, text)
    response: Callable[[str, str, Completion], BaseModel]  # rid, model, the merged result
    stream: Callable[[str, str, R, bool], ChatStream | CompletionStream]  # ..., usage chunk?


CHAT = _Api(
    "/v1/chat/completions",
    "chatcmpl",
    ChatCompletionRequest,
    lambda req, settings: check_chat(req, settings.max_messages),
    ChatCompletionResponse.from_completion,
    ChatStream,
)
COMPLETIONS = _Api(
    "/v1/completions",
    "cmpl",
    CompletionRequest,
    lambda req, settings: check_completion(req, settings.max_prompts),
    CompletionResponse.from_completion,
    CompletionStream,
)


def _parse(request: Request, api: _Api[R], body: dict[str, Any]) -> R:
    """The validated request (400 for what lcfin does not implement or allow)."""
    req = api.request.model_validate(body)
    req.check_supported()
    api.check(req, request.app.state.settings)
    return req


async def _generate(request: Request, api: _Api[R]) -> Response:
    """Chat or completions: parse, run every choice in the core, answer or stream."""
    with counted(request.app.state.llm, api.endpoint):
        req = _parse(request, api, await read_json(request))
        model = served_model(request.app.state.llm, req.model)
    rid = chunk_id(api.id_prefix)
    events = generation_events(request, req.generation(), endpoint=api.endpoint, request_id=rid)
    if req.stream:
        settings: Settings = request.app.state.settings
        usage = req.include_usage or settings.force_include_usage
        stream, log_id = api.stream(rid, model, req, usage), current_request_id()
        return await event_stream(request, events, lambda ready: _frames(ready, stream, log_id))
    try:
        done = await unless_disconnected(request, collect(events))
    except ClientGone:
        return Response(status_code=499)
    merged = Completion.of_choices(done, req.n, rid)
    body = api.response(rid, model, merged)
    return JSONResponse(body.model_dump(), headers=cost_header(merged))


async def _frames(
    events: AsyncIterator[tuple[int, Event]], stream: ChatStream | CompletionStream, log_id: str
) -> AsyncIterator[str]:
    """Every event through the renderer, then [DONE].

    After the first byte the status cannot change: a failure is an error event (naming
    `log_id`, the request id in the server's log) before [DONE].
    """
    try:
        for chunk in stream.start():
            yield sse(chunk)
        async for index, event in events:
            for chunk in stream.on(index, event):
                yield sse(chunk)
        for chunk in stream.end():
            yield sse(chunk)
    except Exception as exc:
        yield sse_error(exc, log_id)
    yield sse_done()


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions."""
    return await _generate(request, CHAT)


async def completions(request: Request) -> Response:
    """POST /v1/completions (legacy text completions; `prompt` may be a list)."""
    return await _generate(request, COMPLETIONS)


def _served_card(
    model: str, max_model_len: int | None, spec: ModelSpec | None, created: int
) -> ModelCard:
    """The served model's card: loaded, with its context length."""
    return ModelCard(
        id=model,
        created=created,
        loaded=True,
        max_model_len=max_model_len,
        demo=bool(spec and spec.demo),
        description=spec.description if spec else "",
    )


async def list_models(request: Request) -> Response:
    """GET /v1/models: the served model first, then the catalog models it could switch to."""
    from lcfin import list_models as catalog

    llm: FinancialLLM = request.app.state.llm
    settings: Settings = request.app.state.settings
    st = llm.status()
    created = int(request.app.state.started)
    specs = catalog(settings.catalog)
    served = specs.get(st.model) if st.model else None
    cards = [] if st.model is None else [_served_card(st.model, st.max_model_len, served, created)]
    for alias, spec in specs.items():
        if alias != st.model:
            cards.append(
                ModelCard(id=alias, created=created, demo=spec.demo, description=spec.description)
            )
    return JSONResponse(ModelList(data=cards).model_dump())


def routes() -> list[Route]:
    """The OpenAI-compatible routes."""
    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
    ]
