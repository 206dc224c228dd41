"""API keys (deny by default), the admin key, and the request body limit.

Every route needs `Authorization: Bearer <key>` once keys are configured, except the few listed
in PUBLIC_PATHS (and the web console's static files, `console.public_paths()`, while LCFIN_UI
is on): a new route is protected unless someone adds it there on purpose. Admin routes
need the admin key; with API keys set, or a server listening beyond loopback, and no admin key
they are refused. Keys are compared in constant time and never logged. Only a key that matched
a configured one names the caller (rate limits, the ledger's `api_key_id`): with no keys
configured, a Bearer token is no identity at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lcfin.errors import Forbidden, LcfinError, PayloadTooLarge, Unauthorized
from lcfin.telemetry.records import attribute_to

__all__ = ["ADMIN_PATHS", "PUBLIC_PATHS", "AuthMiddleware", "BodyLimitMiddleware", "key_id"]

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health", "/health/ready"})
ADMIN_PATHS = frozenset({"/load-model"})
ADMIN_PREFIXES = ("/analytics", "/metrics")


def key_id(key: str) -> str:
    """A short, non-reversible id of a key, safe to log and store."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _matches(given: str, keys: list[str]) -> bool:
    found = False
    for key in keys:  # no early exit: the time taken does not depend on which key matched
        found |= hmac.compare_digest(given.encode(), key.encode())
    return found


async def send_error(send: Send, exc: LcfinError, extra: dict[str, str] | None = None) -> None:
    """Send `exc` as the OpenAI error envelope from inside an ASGI middleware."""
    body = json.dumps(exc.to_openai()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": exc.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _bearer(scope: Scope) -> str | None:
    value = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class AuthMiddleware:
    """Checks API keys and the admin key before any route runs."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_keys: list[str],
        admin_key: str | None,
        exposed: bool = False,
        public_paths: frozenset[str] = PUBLIC_PATHS,
    ) -> None:
        self.app = app
        self.public_paths = public_paths
        self.api_keys = api_keys
        self.admin_key = admin_key
        self.exposed = exposed
        self.accepted = [*api_keys, *([admin_key] if admin_key else [])]

    def _refusal(self, path: str, token: str | None) -> LcfinError | None:
        admin = path in ADMIN_PATHS or path.startswith(ADMIN_PREFIXES)
        if admin and self.admin_key is not None:
            if token is None or not _matches(token, [self.admin_key]):
                return (
                    Forbidden("This route needs the admin key (LCFIN_ADMIN_KEY)")
                    if token
                    else (Unauthorized("Missing API key: send Authorization: Bearer <admin key>"))
                )
            return None
        if admin and self.exposed and not self.api_keys:
            return Forbidden(
                "Admin routes are disabled: the server listens beyond loopback and "
                "LCFIN_ADMIN_KEY is not set",
                hint="set LCFIN_ADMIN_KEY to use this route",
            )
        if not self.api_keys or path in self.public_paths:
            return None
        if token is None:
            return Unauthorized("Missing API key: send Authorization: Bearer <key>")
        if not _matches(token, self.accepted):
            return Unauthorized("Invalid API key")
        if admin:
            return Forbidden(
                "Admin routes are disabled: API keys are set but LCFIN_ADMIN_KEY is not",
                hint="set LCFIN_ADMIN_KEY to use this route",
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        refusal = self._refusal(scope["path"], token)
        if refusal is not None:
            log.info("Refused %s %s: %s", scope["method"], scope["path"], refusal.openai_code)
            await send_error(send, refusal, {"www-authenticate": "Bearer"})
            return
        verified = token is not None and bool(self.accepted) and _matches(token, self.accepted)
        kid = key_id(token) if verified and token is not None else None
        if kid is not None:
            scope.setdefault("state", {})["api_key_id"] = kid
        with attribute_to(kid):  # the usage records of this request name the key's id
            await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`, from Content-Length or while reading a chunked body."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        too_large = PayloadTooLarge(f"Request body is larger than {limit} bytes", param="body")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await send_error(send, too_large)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large
            return message

        await self.app(scope, limited, send)
