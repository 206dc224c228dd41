"""The seed's endpoints: /health(/ready), /models, /load-model, /loading-status, /inference."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lcfin.engine.types import Completion, collect
from lcfin.errors import Conflict, ContextLengthExceeded, InvalidParameter, LcfinError
from lcfin.server.limits import check_text
from lcfin.server.protocol import InferenceRequest
from lcfin.server.request_id import counted

if TYPE_CHECKING:
    from lcfin import FinancialLLM, ModelSpec, Settings

__all__ = ["load_in_background", "routes"]

log = logging.getLogger(__name__)
VERSION = "0.1.0"
_background: set[asyncio.Task[Any]] = set()  # strong references to running loads


async def load_in_background(llm: FinancialLLM, model: str | ModelSpec) -> asyncio.Task[Any] | None:
    """Start loading `model` (refusals raise now); a later failure shows in `status()`.

    Returns the task that finishes the load, kept referenced until done, or None when the
    model is already loaded.

    Raises:
        ModelNotFound, InvalidCatalog, DoesNotFit, ModelLoading: refused before loading.
    """
    task = await llm.abegin_switch(model)
    if task is not None:
        _background.add(task)
        task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("Loading failed: %s", task.exception())


def _health_status(llm: FinancialLLM) -> str:
    """healthy / loading / switching / failed / idle, from the model manager's state."""
    st = llm.status()
    if st.state == "loading":
        return "switching" if st.model else "loading"
    return {"ready": "healthy", "failed": "failed"}.get(st.state, "idle")


#: What public /health shows to a caller without a key once keys are on (or to a Host outside
#: the allow-list): errors, paths and model details are behind auth, in /loading-status (#16).
QUIET_HEALTH_FIELDS = ("status", "model_loaded")


def _quiet(request: Request) -> bool:
    state = request.scope.get("state", {})
    if state.get("quiet_health"):
        return True
    return bool(request.app.state.exposure.api_keys) and not state.get("api_key_id")


async def health(request: Request) -> Response:
    """GET /health: always 200 with the seed's fields; `status` says loading / failed / ...

    With API keys on, a caller without a valid key gets only QUIET_HEALTH_FIELDS.
    """
    llm: FinancialLLM = request.app.state.llm
    st = llm.status()
    body = {
        "status": _health_status(llm),
        "model_loaded": st.model is not None,
        "current_model": st.model,
        "architecture": st.architecture,
        "backend": st.backend,
        "profile": st.profile,
        "gpu_available": llm.gpu_available,
        "uptime": round(time.time() - request.app.state.started, 3),
        "version": VERSION,
        "loading_model": st.loading_model,
        "error": st.error,
        "failed_model": st.failed_model,
        "failed_at": st.failed_at,
    }
    if _quiet(request):
        body = {key: body[key] for key in QUIET_HEALTH_FIELDS}
    return JSONResponse(body)


async def ready(request: Request) -> Response:
    """GET /health/ready: 200 while a model serves (a blue/green switch included), else 503."""
    llm: FinancialLLM = request.app.state.llm
    if llm.status().serving:
        return JSONResponse({"status": "ready"})
    status = _health_status(llm)
    return JSONResponse({"status": status}, status_code=503, headers={"Retry-After": "5"})


#: The planner's numbers /models shows for the served model (the console shows them).
PLAN_FIELDS = (
    "profile",
    "backend",
    "max_model_len",
    "max_num_seqs",
    "budget_gib",
    "weights_gib",
    "kv_cache_gib",
    "kv_cache_tokens",
    "max_concurrency",
    "fits",
)


def _plan(llm: FinancialLLM, settings: Settings) -> dict[str, Any] | None:
    """The planner's prediction for the served model on its profile; None when it cannot plan."""
    from lcfin import plan_memory

    st = llm.status()
    if st.model is None:
        return None
    try:
        plan = plan_memory(
            st.model, st.profile, max_model_len=st.max_model_len, user_catalog=settings.catalog
        )
    except LcfinError as exc:  # e.g. an architecture unknown offline: no plan, not an error
        log.debug("No memory plan for %s: %s", st.model, exc)
        return None
    return {name: getattr(plan, name) for name in PLAN_FIELDS}


async def models(request: Request) -> Response:
    """GET /models: current model, the catalog, the planner's numbers and the engine's own."""
    from lcfin import list_models

    settings: Settings = request.app.state.settings
    llm: FinancialLLM = request.app.state.llm
    specs = list_models(settings.catalog)
    st = llm.status()
    return JSONResponse(
        {
            "current_model": st.model,
            "available_models": {alias: spec.repo_id for alias, spec in specs.items()},
            "plan": await asyncio.to_thread(_plan, llm, settings),
            # the engine's own KV-cache size and max concurrency beside the planner's
            "kv_cache": st.kv_cache,
        }
    )


async def _model_name(request: Request) -> str:
    name = request.query_params.get("model_name")
    if name is None and request.headers.get("content-type", "").startswith("application/json"):
        from lcfin.server.openai import read_json

        name = (await read_json(request)).get("model_name")
    if not isinstance(name, str) or not name:
        raise InvalidParameter("model_name is required (query or JSON body)", param="model_name")
    return name


async def load_model(request: Request) -> Response:
    """POST /load-model?model_name=...: 202 and load in the background; 200 if already loaded."""
    llm: FinancialLLM = request.app.state.llm
    name = await _model_name(request)
    spec = llm.model_for_client(name)
    shown = spec.display_name or name
    if (loading := llm.status().loading_model) is not None:
        raise Conflict(f"Model {loading} is already loading", param="model_name")
    started = await load_in_background(llm, spec) is not None  # DoesNotFit etc. raise here
    body = {
        "message": f"Loading {shown} in the background"
        if started
        else f"{shown} is already loaded",
        "model_name": name,
        "display_name": shown,
        "status": "loading_started" if started else "already_loaded",
        "backend_type": llm.backend_kind,
    }
    return JSONResponse(body, status_code=202 if started else 200)


async def loading_status(request: Request) -> Response:
    """GET /loading-status: idle / loading / ready / failed, naming the model it is about."""
    st = request.app.state.llm.status()
    failed = st.failed_model if st.state == "failed" else None
    return JSONResponse(
        {
            "status": st.state,
            "model": st.loading_model or failed or st.model,
            "current_model": st.model,
            "elapsed_seconds": st.loading_elapsed_s,
            "load_time_seconds": st.load_time_s,
            "error": st.error,
            "failed_model": st.failed_model,
            "failed_at": st.failed_at,
        }
    )


def _inference_body(done: Completion) -> dict[str, Any]:
    """The seed's /inference answer."""
    return {
        "response": done.text,
        "model_used": done.model,
        "finish_reason": done.finish_reason,
        "usage": {
            "prompt_tokens": done.usage.prompt_tokens,
            "completion_tokens": done.usage.completion_tokens,
            "total_tokens": done.usage.total_tokens,
        },
        "timings": {
            "time_to_first_token_s": done.timings.time_to_first_token_s,
            "total_s": done.timings.total_s,
        },
    }


async def inference(request: Request) -> Response:
    """POST /inference: {prompt, max_new_tokens, temperature} -> {response, model_used, ...}."""
    from lcfin.server.admission import generation_events
    from lcfin.server.openai import cost_header, read_json

    with counted(request.app.state.llm, "/inference"):
        req = InferenceRequest.model_validate(await read_json(request))
        check_text(req.prompt, "prompt")
    events = generation_events(request, req.generation(), endpoint="/inference")
    try:
        (done,) = await collect(events)
    except ContextLengthExceeded as exc:  # in this route's words: prompt, max_new_tokens
        raise exc.renamed(prompt="prompt", max_tokens="max_new_tokens") from None
    return JSONResponse(_inference_body(done), headers=cost_header(done))


def routes() -> list[Route]:
    """The admin and seed-compatible routes."""
    return [
        Route("/health", health, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/models", models, methods=["GET"]),
        Route("/load-model", load_model, methods=["POST"]),
        Route("/loading-status", loading_status, methods=["GET"]),
        Route("/inference", inference, methods=["POST"]),
    ]
