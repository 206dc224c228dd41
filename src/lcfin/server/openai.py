"""/v1/chat/completions, /v1/completions and /v1/models: parse, call the core, render (S6)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lcfin.engine.types import Completion, Delta
from lcfin.errors import BackendUnavailable, InvalidParameter, ModelLoading, ModelNotFound
from lcfin.server.admission import collect, generation_events
from lcfin.server.limits import check_chat, check_completion
from lcfin.server.protocol import ChatCompletionRequest, CompletionRequest, chunk_id
from lcfin.server.request_id import counted
from lcfin.server.responses import (
    ChatCompletionChunk,
    ChatCompletionResponse,
    CompletionChunk,
    CompletionResponse,
    ModelCard,
    ModelList,
    UsageInfo,
    _TextChoice,
    chat_delta_chunks,
    chat_finish_chunk,
    completion_logprobs,
    wire_finish,
)
from lcfin.server.streaming import (
    ClientGone,
    prime,
    sse,
    sse_done,
    sse_error,
    unless_disconnected,
)

if TYPE_CHECKING:
    from lcfin import FinancialLLM, Settings

__all__ = ["COST_HEADER", "cost_header", "read_json", "routes", "served_model"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for the legacy completions API
#: What a non-streaming request cost in USD; a stream carries it in its usage chunk instead
#: (`usage.cost_usd`), since headers are sent before the cost is known (docs/analytics.md).
COST_HEADER = "x-lcfin-cost-usd"


def _cost(done: list[Completion]) -> float:
    return sum(c.cost_usd or 0.0 for c in done)


def cost_header(done: list[Completion]) -> dict[str, str]:
    """The x-lcfin-cost-usd header for a request's finished generations."""
    return {COST_HEADER: f"{_cost(done):.10f}"}


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


def _include_usage(request: Request, wanted: bool) -> bool:
    settings: Settings = request.app.state.settings
    return wanted or settings.force_include_usage


async def _stream_response(
    request: Request, events: AsyncIterator[tuple[int, Delta | Completion]], render: Any
) -> Response:
    """Start the SSE response once the first event is in (so early errors get a status)."""
    try:  # a client that leaves during queueing or prefill aborts the generation too
        _, events = await unless_disconnected(request, prime(events))
    except StopAsyncIteration:  # pragma: no cover - every stream ends with a Completion
        return Response(status_code=204)
    except ClientGone:
        return Response(status_code=499)

    async def body() -> AsyncIterator[str]:
        rid = request.scope.get("state", {}).get("request_id", "-")
        try:
            async for line in render(events):
                yield line
        except Exception as exc:  # after the first byte the status cannot change: an event
            yield sse_error(exc, rid)
        yield sse_done()

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions."""
    with counted(request.app.state.llm, "/v1/chat/completions"):
        req = ChatCompletionRequest.model_validate(await read_json(request))
        req.check_supported()
        check_chat(req, request.app.state.settings.max_messages)
        model = served_model(request.app.state.llm, req.model)
    rid = chunk_id("chatcmpl")
    events = generation_events(
        request, [req.core_messages()], n=req.n, truncate=False,
        endpoint="/v1/chat/completions", request_id=rid, **req.sampling_kwargs(None),
    )  # fmt: skip
    if not req.stream:
        try:
            done = await unless_disconnected(request, collect(events))
        except ClientGone:
            return Response(status_code=499)
        body = ChatCompletionResponse.from_completions(rid, model, done)
        return JSONResponse(body.model_dump(), headers=cost_header(done))
    usage_wanted = _include_usage(request, req.include_usage)
    created = int(time.time())

    async def render(events: AsyncIterator[tuple[int, Delta | Completion]]) -> AsyncIterator[str]:
        for i in range(req.n):
            yield sse(ChatCompletionChunk.text(rid, created, model, i, role=True, content=""))
        finals: list[Completion] = []
        async for index, event in events:
            if isinstance(event, Delta):
                for chunk in chat_delta_chunks(rid, created, model, index, event):
                    yield sse(chunk)
            else:
                finals.append(event)
                yield sse(chat_finish_chunk(rid, created, model, index, event))
        if usage_wanted and finals:
            usage = UsageInfo.of(
                finals[0].usage.prompt_tokens,
                sum(f.usage.completion_tokens for f in finals),
                _cost(finals),
            )
            yield sse(
                ChatCompletionChunk(id=rid, created=created, model=model, choices=[], usage=usage)
            )

    return await _stream_response(request, events, render)


async def completions(request: Request) -> Response:
    """POST /v1/completions (legacy text completions; `prompt` may be a list)."""
    with counted(request.app.state.llm, "/v1/completions"):
        req = CompletionRequest.model_validate(await read_json(request))
        req.check_supported()
        check_completion(req, request.app.state.settings.max_prompts)
        model = served_model(request.app.state.llm, req.model)
    rid = chunk_id("cmpl")
    events = generation_events(
        request, req.prompts(), raw=True, n=req.n, endpoint="/v1/completions", request_id=rid,
        **req.sampling_kwargs(COMPLETIONS_DEFAULT_MAX_TOKENS),
    )  # fmt: skip
    if not req.stream:
        try:
            done = await unless_disconnected(request, collect(events))
        except ClientGone:
            return Response(status_code=499)
        body = CompletionResponse.from_completions(rid, model, done, req.n)
        return JSONResponse(body.model_dump(), headers=cost_header(done))
    usage_wanted = _include_usage(request, req.include_usage)
    created = int(time.time())

    offsets: dict[int, int] = {}  # text_offset of each choice's next token

    def chunk(index: int, text: str, finish: str | None, lps: Any = None) -> str:
        logprobs = completion_logprobs(lps, offsets.get(index, 0))
        offsets[index] = offsets.get(index, 0) + sum(len(lp.token) for lp in lps or ())
        choice = _TextChoice(index=index, text=text, finish_reason=finish, logprobs=logprobs)
        return sse(CompletionChunk(id=rid, created=created, model=model, choices=[choice]))

    async def render(events: AsyncIterator[tuple[int, Delta | Completion]]) -> AsyncIterator[str]:
        finals: dict[int, Completion] = {}
        async for index, event in events:
            if isinstance(event, Delta):
                if event.text or event.logprobs:
                    yield chunk(index, event.text, None, event.logprobs)
            else:
                finals[index] = event
                yield chunk(index, "", wire_finish(event.finish_reason))
        if usage_wanted and finals:
            ordered = [finals[i] for i in sorted(finals)]
            prompt_tokens = sum(f.usage.prompt_tokens for f in ordered[:: req.n])
            completion_tokens = sum(f.usage.completion_tokens for f in ordered)
            usage = UsageInfo.of(prompt_tokens, completion_tokens, _cost(ordered))
            yield sse(
                CompletionChunk(id=rid, created=created, model=model, choices=[], usage=usage)
            )

    return await _stream_response(request, events, render)


async def list_models(request: Request) -> Response:
    """GET /v1/models: the served model first, then the catalog models it could switch to."""
    from lcfin import list_models as catalog

    llm: FinancialLLM = request.app.state.llm
    settings: Settings = request.app.state.settings
    st = llm.status()
    created = int(request.app.state.started)
    cards = []
    specs = catalog(settings.catalog)
    if st.model is not None:
        spec = specs.get(st.model)
        cards.append(
            ModelCard(
                id=st.model, created=created, loaded=True, max_model_len=st.max_model_len,
                demo=bool(spec and spec.demo), description=spec.description if spec else "",
            )
        )  # fmt: skip
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
