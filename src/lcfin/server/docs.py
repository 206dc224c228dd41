"""GET /openapi.json (built from the protocol models) and GET /docs (Swagger UI over it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from lcfin.server import protocol as p, responses as r

__all__ = ["openapi_document", "routes"]

_SCHEMA_MODELS: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
    (p.ChatCompletionRequest, "validation"),
    (r.ChatCompletionResponse, "serialization"),
    (r.ChatCompletionChunk, "serialization"),
    (p.CompletionRequest, "validation"),
    (r.CompletionResponse, "serialization"),
    (r.CompletionChunk, "serialization"),
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
    inference = _op("Seed-style inference", "InferenceRequest", "ErrorResponse")
    inference["responses"]["200"] = {"description": "response, model_used, usage, timings"}
    paths = {
        "/v1/chat/completions": {"post": chat},
        "/v1/completions": {"post": text},
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
        "/models": {"get": _plain("Current model and the catalog")},
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
            "get": _plain("Requests and tokens by model, endpoint, key and hour (admin)")
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


SWAGGER = """<!doctype html>
<html><head><title>lcfin API</title><meta charset="utf-8">
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#ui"});</script>
<noscript>The API description is at <a href="openapi.json">openapi.json</a>.</noscript>
</body></html>
"""


async def swagger(request: Request) -> Response:
    """GET /docs: Swagger UI (loaded from a CDN) over /openapi.json."""
    return HTMLResponse(SWAGGER)


def routes() -> list[Route]:
    """The API description routes."""
    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", swagger, methods=["GET"]),
    ]
