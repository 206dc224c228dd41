"""The request id (X-Request-ID): on every response and every log line of the request."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lcfin.engine.types import new_request_id
from lcfin.errors import LcfinError

if TYPE_CHECKING:
    from lcfin import FinancialLLM

__all__ = ["RequestIdFilter", "RequestIdMiddleware", "counted", "current_request_id"]

log = logging.getLogger(__name__)
_request_id: ContextVar[str] = ContextVar("lcfin_request_id", default="-")
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def current_request_id() -> str:
    """The id of the request being handled ('-' outside a request)."""
    return _request_id.get()


@contextmanager
def counted(llm: FinancialLLM, endpoint: str) -> Iterator[None]:
    """Count a request this block refuses (bad body, unknown model) as an error record.

    For the checks a handler makes before it calls the core; the core counts its own.
    """
    from pydantic import ValidationError

    try:
        yield
    except LcfinError as exc:
        llm.record_rejection(exc, endpoint=endpoint, request_id=current_request_id())
        raise
    except ValidationError as exc:  # answered 400 invalid_value by the app's handler
        llm.record_rejection(
            exc, endpoint=endpoint, request_id=current_request_id(), code="invalid_value"
        )
        raise


class RequestIdFilter(logging.Filter):
    """Adds `%(request_id)s` to log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


class RequestIdMiddleware:
    """Takes X-Request-ID from the client (when sane) or makes one; echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _VALID.match(given) else new_request_id("req")
        token = _request_id.set(rid)
        scope.setdefault("state", {})["request_id"] = rid

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # a bug, not a client mistake: log it, answer a 500 envelope
            log.exception(
                "Unhandled error in %s %s (request %s)", scope["method"], scope["path"], rid
            )
            if not started:
                await _send_500(send_with_id, rid)
        finally:
            _request_id.reset(token)


async def _send_500(send: Send, rid: str) -> None:
    message = f"The server had an error while processing your request (request id {rid})"
    body = json.dumps(
        {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})
