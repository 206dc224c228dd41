"""`create_app(llm, settings)`: the Starlette app, its middleware, and errors mapped once (S9).

- `LcfinError` -> its status and the OpenAI envelope (`ModelLoading`/`RateLimited` add Retry-After).
- pydantic `ValidationError` -> 400 invalid_request_error, `param` from the error location.
- `HTTPException` -> the same envelope with its status.
- anything else -> 500 server_error naming the request id; the traceback goes to the log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lcfin.errors import BackendUnavailable, LcfinError, RateLimited
from lcfin.server import admin, analytics, console, docs, openai, responses_api
from lcfin.server.browser import BrowserGuardMiddleware
from lcfin.server.exposure import Exposure
from lcfin.server.ratelimit import Limits, RateLimiter, RateLimitMiddleware
from lcfin.server.request_id import RequestIdMiddleware, current_request_id
from lcfin.server.security import PUBLIC_PATHS, AuthMiddleware, BodyLimitMiddleware
from lcfin.telemetry.service import Telemetry

if TYPE_CHECKING:
    from lcfin import FinancialLLM, Settings

__all__ = ["create_app", "error_body", "uvicorn_options"]

log = logging.getLogger(__name__)

_RL_HEADERS = [
    f"x-ratelimit-{w}-{k}" for w in ("limit", "remaining", "reset") for k in ("requests", "tokens")
]
_HTTP_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error"}


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


async def _lcfin_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LcfinError)
    if type(exc) is LcfinError:  # an engine failure with no class: its details stay in the log
        return await _server_error(request, exc)
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, BackendUnavailable):  # ModelLoading included: come back shortly
        headers["Retry-After"] = str(getattr(exc, "retry_after", 5))
    if exc.http_status >= 500 and not isinstance(exc, BackendUnavailable):
        log.warning("%s: %s", type(exc).__name__, exc)
    else:
        log.info(
            "%s %s -> %d %s", request.method, request.url.path, exc.http_status, exc.openai_code
        )
    return JSONResponse(exc.to_openai(), status_code=exc.http_status, headers=headers)


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if not (isinstance(p, str) and p.startswith(("function-", "json-")))]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    first = exc.errors()[0]
    param = _param(tuple(first["loc"]))
    message = f"{param}: {first['msg']}" if param else first["msg"]
    body = error_body(message, "invalid_request_error", param, "invalid_value")
    return JSONResponse(body, status_code=400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = _HTTP_TYPES.get(exc.status_code, "invalid_request_error")
    code = "not_found" if exc.status_code == 404 else None
    return JSONResponse(
        error_body(str(exc.detail), kind, None, code),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    rid = current_request_id()
    log.error(
        "Unhandled error in %s %s (request %s)", request.method, request.url.path, rid, exc_info=exc
    )
    message = f"The server had an error while processing your request (request id {rid})"
    return JSONResponse(error_body(message, "server_error"), status_code=500)


def _middleware(
    settings: Settings, exposure: Exposure, limiter: RateLimiter | None
) -> list[Middleware]:
    """Outermost first: request id, browser guard, CORS, auth, rate limits, body limit."""
    origins = tuple(o.strip() for o in settings.cors_origins.split(",") if o.strip())
    stack = [
        Middleware(RequestIdMiddleware),
        Middleware(
            BrowserGuardMiddleware, allowed_hosts=exposure.allowed_hosts, cors_origins=origins
        ),
    ]
    if origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=["x-request-id", "retry-after", "x-lcfin-cost-usd", *_RL_HEADERS],
            )
        )
    stack.append(
        Middleware(
            AuthMiddleware,
            api_keys=list(exposure.api_keys),
            admin_key=exposure.admin_key,
            exposed=exposure.exposed,
            public_paths=PUBLIC_PATHS | (console.public_paths() if settings.ui else frozenset()),
        )
    )
    stack.append(Middleware(RateLimitMiddleware, limiter=limiter))
    stack.append(Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes))
    return stack


def _rate_limiter(llm: FinancialLLM, settings: Settings) -> RateLimiter | None:
    """The LCFIN_RATE_LIMITS limiter, charged with each generation's tokens; None when off."""
    limits = Limits.parse(settings.rate_limits)
    if limits is None:
        return None
    limiter = RateLimiter(limits)
    llm.record_hooks.append(limiter.on_record)
    return limiter


def create_app(llm: FinancialLLM, settings: Settings) -> Starlette:
    """The lcfin server over `llm`; it loads `llm.initial_model` at start-up if none is loaded.

    Its telemetry (usage ledger + Prometheus metrics, `app.state.telemetry`) hooks into `llm`
    now; the lifespan starts the ledger's writer and closes it on shutdown, writing the last
    records.

    Raises:
        InvalidParameter: a bad key file, or `settings.host` beyond loopback with no API key
            and no LCFIN_ALLOW_UNAUTHENTICATED (see `Exposure.of`), or a bad
            LCFIN_UI_FRAME_ANCESTORS.
        LcfinError: the usage ledger (LCFIN_USAGE_DB) cannot be opened.
    """
    exposure = Exposure.of(settings)
    exposure.log_warnings()
    csp = console.content_security_policy(settings) if settings.ui else None
    telemetry = Telemetry.from_settings(llm, settings)
    limiter = _rate_limiter(llm, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        telemetry.start()
        task = None
        if llm.status().model is None:
            try:  # claimed before the first request: /health says loading, never idle
                task = await admin.load_in_background(llm, llm.initial_model)
            except LcfinError as exc:  # status() reports it: /health says failed
                log.error("Cannot load %s: %s", llm.initial_model, exc)
        try:
            yield
        finally:
            if task is not None and not task.done():
                task.cancel()
            await asyncio.to_thread(telemetry.close)

    app = Starlette(
        routes=[
            *openai.routes(),
            *responses_api.routes(),
            *admin.routes(),
            *analytics.routes(),
            *docs.routes(),
            *(console.routes() if settings.ui else []),
        ],
        middleware=_middleware(settings, exposure, limiter),
        exception_handlers={
            LcfinError: _lcfin_error,
            ValidationError: _validation_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
    app.state.llm = llm
    app.state.settings = settings
    app.state.exposure = exposure
    app.state.console_csp = csp
    app.state.limiter = limiter
    app.state.telemetry = telemetry
    app.state.started = time.time()
    return app


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy-header trust, from LCFIN_TRUSTED_PROXIES (default: trust no peer).

    uvicorn otherwise believes X-Forwarded-For from 127.0.0.1, so any local process, or a
    client behind a local proxy, could pick its own address (and rate-limit bucket).

    Raises:
        InvalidParameter: LCFIN_TRUSTED_PROXIES holds something other than addresses.
    """
    proxies = Exposure.trusted_proxies_of(settings)
    return {"proxy_headers": bool(proxies), "forwarded_allow_ips": list(proxies) or None}
