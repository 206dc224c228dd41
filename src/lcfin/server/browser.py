"""What a web page in the operator's browser must not be able to do (docs/security.md).

A page on any site can make the browser send requests to 127.0.0.1 (cross-site request forgery),
and DNS rebinding can make the browser treat this server as that site's own origin and read the
replies. `BrowserGuardMiddleware`, outside every other check, refuses:

- a Host header that is not an accepted name (403), while `Exposure.allowed_hosts` applies; the
  health routes still answer, with their quiet body, for probes that send their own Host;
- an `Origin` that is neither this server's own nor listed in LCFIN_CORS_ORIGINS (403);
- OPTIONS, except a CORS preflight from a listed origin, which CORSMiddleware answers (405);
- a request body that is not JSON (415): HTML forms cannot send `application/json`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from lcfin.errors import Forbidden, LcfinError, MethodNotAllowed, UnsupportedMediaType
from lcfin.server.exposure import host_allowed
from lcfin.server.security import PUBLIC_PATHS, send_error

__all__ = ["BrowserGuardMiddleware", "is_json"]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_json(content_type: str) -> bool:
    """Whether a Content-Type is JSON (`application/json`, `application/*+json`, any params)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers


class BrowserGuardMiddleware:
    """Host allow-list, origin check, OPTIONS and JSON-only bodies."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: tuple[str, ...] | None,
        cors_origins: tuple[str, ...],
    ) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.cors_origins = cors_origins

    def _origin_ok(self, origin: str, host: str) -> bool:
        if "*" in self.cors_origins or origin in self.cors_origins:
            return True
        return urlsplit(origin).netloc.lower() == host.lower() != ""  # same origin

    def _refusal(self, scope: Scope, headers: Headers) -> LcfinError | None:
        host, method = headers.get("host", ""), scope["method"]
        if self.allowed_hosts is not None and not host_allowed(host, self.allowed_hosts):
            if scope["path"] in PUBLIC_PATHS and method == "GET":
                scope.setdefault("state", {})["quiet_health"] = True  # a probe: status only
                return None
            return Forbidden(
                "This server does not answer to that Host name",
                param="Host",
                hint="connect through 127.0.0.1 or localhost, or list the name in "
                "LCFIN_ALLOWED_HOSTS",
            )
        origin = headers.get("origin")
        if origin is not None and not self._origin_ok(origin, host):
            return Forbidden(
                "Cross-origin requests are refused; this origin is not in LCFIN_CORS_ORIGINS",
                param="Origin",
            )
        if method == "OPTIONS":
            preflight = origin is not None and "access-control-request-method" in headers
            if not (preflight and self.cors_origins):
                return MethodNotAllowed("OPTIONS is only answered as a CORS preflight")
        body = method in _BODY_METHODS and _has_body(headers)
        if body and not is_json(headers.get("content-type", "")):
            return UnsupportedMediaType(
                "Request bodies must be JSON (Content-Type: application/json)",
                param="Content-Type",
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope, Headers(scope=scope))
        if refusal is not None:
            await send_error(send, refusal)
            return
        await self.app(scope, receive, send)
