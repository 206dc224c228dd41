"""GET /openapi.json (built from the protocol models) and GET /docs (Swagger UI over it, from
assets shipped in the swagger-ui-py package: no CDN, so the page works offline)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from lcfin.server import (
    protocol as p,
    responses as r,
    responses_objects as ro,
    responses_request as rq,
)

__all__ = ["openapi_document", "routes"]

_SCHEMA_MODELS: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
    (p.ChatCompletionRequest, "validation"),
    (r.ChatCompletionResponse, "serialization"),
    (r.ChatCompletionChunk, "serialization"),
    (p.CompletionRequest, "validation"),
    (r.CompletionResponse, "serialization"),
    (r.CompletionChunk, "serialization"),
    (rq.CreateResponse, "validation"),
    (ro.Response, "serialization"),
    (r.ModelList, "serialization"),
    (r.ErrorResponse, "serialization"),
    (p.InferenceRequest, "validation"),
]

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _op(
    summary: str, request: str | None, response: str, stream: str | None = None
) -> dict[str, Any]:
    content: dict[str, Any] = {_JSON: {"schema": _ref(response)}}
    if stream:
        content["text/event-stream"] = {
            "schema": {
                "type": "string",
                "description": f"SSE: `data: <{stream}>` ... `data: [DONE]`",
            }
        }
    errors = {"$ref": "#/components/responses/Error"}
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "OK", "content": content}, "default": errors},
    }
    if request:
        op["requestBody"] = {"required": True, "content": {_JSON: {"schema": _ref(request)}}}
    return op


def _by_id(summary: str, response: str | None) -> dict[str, Any]:
    op = _op(summary, None, response) if response else _plain(summary)
    op["parameters"] = [
        {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    return op


def _plain(summary: str, ok: dict[str, str] | None = None, errors: bool = True) -> dict[str, Any]:
    """A route without a response schema: its statuses (tests/server/test_docs.py checks them)."""
    responses: dict[str, Any] = {s: {"description": d} for s, d in (ok or {"200": "OK"}).items()}
    if errors:
        responses["default"] = {"$ref": "#/components/responses/Error"}
    return {"summary": summary, "responses": responses}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the server."""
    _, defs = models_json_schema(_SCHEMA_MODELS, ref_template="#/components/schemas/{model}")
    chat = _op(
        "Chat completion", "ChatCompletionRequest", "ChatCompletionResponse", "ChatCompletionChunk"
    )
    text = _op("Text completion", "CompletionRequest", "CompletionResponse", "CompletionChunk")
    respond = _op("Create a model response (Responses API)", "CreateResponse", "Response")
    respond["responses"]["200"]["content"]["text/event-stream"] = {
        "schema": {
            "type": "string",
            "description": "SSE: `event: <type>` + `data: <ResponseStreamEvent>` (OpenAI's)",
        }
    }
    inference = _op("Seed-style inference", "InferenceRequest", "ErrorResponse")
    inference["responses"]["200"] = {"description": "response, model_used, usage, timings"}
    paths = {
        "/v1/chat/completions": {"post": chat},
        "/v1/completions": {"post": text},
        "/v1/responses": {"post": respond},
        "/v1/responses/{response_id}": {
            "get": _by_id("A stored response of the caller's API key", "Response"),
            "delete": _by_id("Delete a stored response of the caller's API key", None),
        },
        "/v1/models": {"get": _op("Served and switchable models", None, "ModelList")},
        "/health": {
            "get": _plain(
                "Liveness and state: healthy, loading, switching, failed or idle",
                {"200": "Always"},
                errors=False,
            )
        },
        "/health/ready": {
            "get": _plain(
                "Readiness: whether a model serves (also during a blue/green switch)",
                {"200": "A model serves", "503": "None serves (loading, draining, failed)"},
                errors=False,
            )
        },
        "/models": {"get": _plain("Current model, the catalog and the planner's numbers")},
        "/load-model": {
            "post": _plain(
                "Switch model in the background (?model_name=..., admin)",
                {
                    "202": "Loading started; follow GET /loading-status",
                    "200": "That model is already loaded",
                },
            )
        },
        "/loading-status": {"get": _plain("idle / loading / ready / failed, and which model")},
        "/inference": {"post": inference},
        "/metrics": {"get": _plain("Prometheus metrics, `lcfin:` names after vLLM's (admin)")},
        "/analytics/performance": {
            "get": _plain("Latency percentiles, throughput, error rates (?window=&model=&key=)")
        },
        "/analytics/usage": {
            "get": _plain(
                "Requests and tokens by model, endpoint, key and time bucket "
                "(?window=&model=&key=&bucket=, admin)"
            )
        },
        "/analytics/costs": {
            "get": _plain("Token and hardware costs, cost per 1K tokens, recommendations")
        },
    }
    error = {
        "description": "OpenAI error envelope",
        "content": {_JSON: {"schema": _ref("ErrorResponse")}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "lcfin", "version": "0.1.0", "description": "OpenAI-compatible LLM API"},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "responses": {"Error": error},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json."""
    return JSONResponse(openapi_document())


#: The page links its assets relatively, so it works behind a path prefix too.
SWAGGER = """<!doctype html>
<html><head><title>lcfin API</title><meta charset="utf-8">
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head><body><div id="ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/assets/init.js"></script>
<noscript>The API description is at <a href="openapi.json">openapi.json</a>.</noscript>
</body></html>
"""
_INIT_JS = b'SwaggerUIBundle({url: "openapi.json", dom_id: "#ui"});\n'
#: Only these files are served, from the swagger-ui-py package (Swagger UI 5, Apache-2.0).
_ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
}
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'"
)


@functools.lru_cache(maxsize=len(_ASSETS))
def _asset(name: str) -> bytes | None:
    """A Swagger UI file shipped by the swagger-ui-py package (None when it is missing)."""
    spec = importlib.util.find_spec("swagger_ui")  # locate it without importing it
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "static" / name
    return path.read_bytes() if path.is_file() else None


async def swagger(request: Request) -> Response:
    """GET /docs: Swagger UI over /openapi.json, from assets shipped in a package (no CDN)."""
    return HTMLResponse(SWAGGER, headers={"Content-Security-Policy": _CSP})


async def swagger_asset(request: Request) -> Response:
    """GET /docs/assets/{name}: one of Swagger UI's files, or the page's init script."""
    name = request.path_params["name"]
    if name == "init.js":
        return Response(_INIT_JS, media_type="text/javascript; charset=utf-8")
    body = _asset(name) if name in _ASSETS else None
    if body is None:
        raise HTTPException(404, "No such asset; the API description is at /openapi.json")
    return Response(body, media_type=_ASSETS[name], headers={"Cache-Control": "max-age=86400"})


def routes() -> list[Route]:
    """The API description routes."""
    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", swagger, methods=["GET"]),
        Route("/docs/assets/{name}", swagger_asset, methods=["GET"]),
    ]
