"""The seed's endpoints: /health(/ready), /models, /load-model, /loading-status, /inference."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lcfin.errors import Conflict, InvalidParameter, LcfinError, ModelNotFound
from lcfin.server.limits import check_text
from lcfin.server.protocol import InferenceRequest

if TYPE_CHECKING:
    from lcfin import FinancialLLM, Settings

__all__ = ["load_in_background", "routes"]

log = logging.getLogger(__name__)
VERSION = "0.1.0"
_background: set[asyncio.Task[None]] = set()  # strong references to running loads


async def load_in_background(llm: FinancialLLM, model: str) -> None:
    """Load `model`, logging (not raising) a failure: status() reports it."""
    try:
        await llm.aswitch(model)
    except LcfinError as exc:
        log.error("Loading %s failed: %s", model, exc)


def _health_status(llm: FinancialLLM) -> str:
    st = llm.status()
    if st.state == "loading":
        return "switching" if st.model else "loading"
    if st.model is None:
        return "failed" if st.state == "failed" else "starting"
    return "healthy"


async def health(request: Request) -> Response:
    """GET /health: always 200 with the seed's fields; `status` says loading / switching."""
    llm: FinancialLLM = request.app.state.llm
    st = llm.status()
    return JSONResponse(
        {
            "status": _health_status(llm),
            "model_loaded": st.model is not None,
            "current_model": st.model,
            "backend": st.backend,
            "profile": st.profile,
            "gpu_available": llm.gpu_available,
            "uptime": round(time.time() - request.app.state.started, 3),
            "version": VERSION,
            "loading_model": st.loading_model,
            "error": st.error,
        }
    )


async def ready(request: Request) -> Response:
    """GET /health/ready: 200 only when a model is ready; 503 + Retry-After otherwise."""
    status = _health_status(request.app.state.llm)
    if status == "healthy":
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": status}, status_code=503, headers={"Retry-After": "5"})


async def models(request: Request) -> Response:
    """GET /models: current model, the catalog (alias -> repo id) and the engine's KV cache."""
    from lcfin import list_models

    settings: Settings = request.app.state.settings
    llm: FinancialLLM = request.app.state.llm
    specs = list_models(settings.catalog)
    st = llm.status()
    return JSONResponse(
        {
            "current_model": st.model,
            "available_models": {alias: spec.repo_id for alias, spec in specs.items()},
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
    """POST /load-model?model_name=...: start a switch in the background (202)."""
    from lcfin import get_model, list_models

    llm: FinancialLLM = request.app.state.llm
    settings: Settings = request.app.state.settings
    name = await _model_name(request)
    if name not in list_models(settings.catalog) and not settings.allow_any_model:
        raise ModelNotFound(
            f"'{name}' is not a catalog alias; this server loads catalog models only",
            param="model_name",
            hint="see GET /models, or set LCFIN_ALLOW_ANY_MODEL=true",
        )
    spec = get_model(name, settings.catalog)
    st = llm.status()
    if st.loading_model is not None:
        raise Conflict(f"Model {st.loading_model} is already loading", param="model_name")
    task = asyncio.create_task(load_in_background(llm, name))
    _background.add(task)
    task.add_done_callback(_background.discard)
    await asyncio.sleep(0)  # let the load claim its slot, so /loading-status says "loading"
    return JSONResponse(
        {
            "message": f"Loading {spec.display_name or name} in the background",
            "model_name": name,
            "display_name": spec.display_name or name,
            "status": "loading_started",
            "backend_type": llm.backend_kind,
        },
        status_code=202,
    )


async def loading_status(request: Request) -> Response:
    """GET /loading-status: idle / loading / ready / failed, with the model and elapsed time."""
    st = request.app.state.llm.status()
    return JSONResponse(
        {
            "status": st.state,
            "model": st.loading_model or st.model,
            "current_model": st.model,
            "elapsed_seconds": st.loading_elapsed_s,
            "load_time_seconds": st.load_time_s,
            "error": st.error,
        }
    )


async def inference(request: Request) -> Response:
    """POST /inference: {prompt, max_new_tokens, temperature} -> {response, model_used, ...}."""
    from lcfin.server.openai import cost_header, read_json

    req = InferenceRequest.model_validate(await read_json(request))
    check_text(req.prompt, "prompt")
    llm: FinancialLLM = request.app.state.llm
    done = await llm.achat(
        req.prompt,
        max_tokens=req.max_new_tokens,
        temperature=req.temperature,
        endpoint="/inference",
    )
    body: dict[str, Any] = {
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
    return JSONResponse(body, headers=cost_header([done]))


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
