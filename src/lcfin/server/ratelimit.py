"""Per-key rate limits (requests and tokens per minute) with OpenAI's `x-ratelimit-*` headers.

`LCFIN_RATE_LIMITS="60rpm,100000tpm"` gives every caller two token buckets that refill
continuously over a minute. Callers are API key ids (`key_id`, a hash: the key itself is never
kept) or, when no keys are configured, the client IP. A generation request takes one request
token when it is admitted; its prompt + completion tokens are charged when it ends (the
FinancialLLM record hook), so the tokens bucket may go below zero, and the caller then waits
until it refills. A refusal is 429 `rate_limit_exceeded` with Retry-After; every response of a
limited route carries the headers OpenAI sends:

    x-ratelimit-limit-requests / -tokens        the per-minute limit
    x-ratelimit-remaining-requests / -tokens    what is left now
    x-ratelimit-reset-requests / -tokens        time until the bucket is full again ("6m0s")
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lcfin.errors import InvalidParameter, RateLimited
from lcfin.server.security import send_error

if TYPE_CHECKING:
    from lcfin.telemetry.records import RequestRecord

__all__ = ["LIMITED_PATHS", "Limits", "RateLimitMiddleware", "RateLimiter"]

#: The routes that generate text, and so count against the limits.
LIMITED_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/inference"}
)
_MAX_CALLERS = 10_000  # full buckets are forgotten past this many callers
_ITEM = re.compile(r"^\s*(\d+)\s*(rpm|tpm)\s*$", re.IGNORECASE)
_caller: ContextVar[str | None] = ContextVar("lcfin_rate_limit_caller", default=None)


@dataclass(frozen=True)
class Limits:
    """Requests and tokens per minute (None: that one is not limited)."""

    rpm: int | None = None
    tpm: int | None = None

    @classmethod
    def parse(cls, text: str) -> Limits | None:
        """'60rpm,100000tpm' -> Limits(60, 100000); '' -> None (rate limiting off).

        Raises:
            InvalidParameter: an item is not `<n>rpm` or `<n>tpm`.
        """
        values: dict[str, int] = {}
        for item in filter(str.strip, text.split(",")):
            match = _ITEM.match(item)
            if match is None or int(match[1]) < 1:
                raise InvalidParameter(
                    f"Bad rate limit {item.strip()!r}: use e.g. '60rpm,100000tpm'",
                    param="LCFIN_RATE_LIMITS",
                )
            values[match[2].lower()] = int(match[1])
        return cls(values.get("rpm"), values.get("tpm")) if values else None


class _Bucket:
    """A token bucket of `capacity` that refills completely in 60 seconds."""

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / 60.0
        self.level = float(capacity)
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_s(self, needed: float) -> float:
        """Seconds until the level reaches `needed`."""
        return max(0.0, (needed - self.level) / self.rate)

    def headers(self, kind: str) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{kind}": str(self.capacity),
            f"x-ratelimit-remaining-{kind}": str(max(0, math.floor(self.level))),
            f"x-ratelimit-reset-{kind}": _duration(self.wait_s(self.capacity)),
        }


def _duration(seconds: float) -> str:
    """OpenAI's reset format: '0s', '20ms', '17s', '6m0s'."""
    if 0 < seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, secs = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class RateLimiter:
    """The buckets of every caller; `admit` before a request, `charge` its tokens after."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict[str, tuple[_Bucket | None, _Bucket | None]] = {}

    def _get(self, caller: str) -> tuple[_Bucket | None, _Bucket | None]:
        now = self.clock()
        pair = self._buckets.get(caller)
        if pair is None:
            if len(self._buckets) >= _MAX_CALLERS:
                self._forget_full(now)
            rpm, tpm = self.limits.rpm, self.limits.tpm
            pair = (_Bucket(rpm, now) if rpm else None, _Bucket(tpm, now) if tpm else None)
            self._buckets[caller] = pair
        for bucket in pair:
            if bucket is not None:
                bucket.refill(now)
        return pair

    def _forget_full(self, now: float) -> None:
        for caller, pair in list(self._buckets.items()):
            for bucket in pair:
                if bucket is not None:
                    bucket.refill(now)
            if all(b is None or b.level >= b.capacity for b in pair):
                del self._buckets[caller]

    def admit(self, caller: str) -> tuple[dict[str, str], RateLimited | None]:
        """Take one request for `caller`: the headers to send, and a refusal if over a limit."""
        requests, tokens = self._get(caller)
        refusal = None
        if requests is not None and requests.level < 1:
            refusal = self._refuse("requests", requests.capacity, requests.wait_s(1))
        elif tokens is not None and tokens.level <= 0:
            refusal = self._refuse("tokens", tokens.capacity, tokens.wait_s(1))
        elif requests is not None:
            requests.level -= 1
        return self._headers(requests, tokens), refusal

    @staticmethod
    def _refuse(kind: str, limit: int, wait: float) -> RateLimited:
        retry = max(1, math.ceil(wait))
        return RateLimited(
            f"Rate limit reached for {kind} per minute (limit {limit}); retry in {retry}s",
            retry_after=retry,
            hint="slow down, or ask the operator to raise LCFIN_RATE_LIMITS",
        )

    @staticmethod
    def _headers(requests: _Bucket | None, tokens: _Bucket | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if requests is not None:
            headers.update(requests.headers("requests"))
        if tokens is not None:
            headers.update(tokens.headers("tokens"))
        return headers

    def charge(self, caller: str, tokens: int) -> None:
        """Take `tokens` (prompt + completion) from `caller`'s tokens bucket."""
        bucket = self._get(caller)[1]
        if bucket is not None:
            bucket.level -= tokens

    def on_record(self, record: RequestRecord) -> None:
        """FinancialLLM record hook: charge a finished generation to the current caller."""
        caller = _caller.get()
        if caller is not None:
            self.charge(caller, record.prompt_tokens + record.completion_tokens)


class RateLimitMiddleware:
    """Applies a `RateLimiter` to POSTs on LIMITED_PATHS (after the API key check)."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter | None) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limited = scope["type"] == "http" and scope["method"] == "POST"
        if self.limiter is None or not limited or scope["path"] not in LIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        caller = _caller_of(scope)
        headers, refusal = self.limiter.admit(caller)
        if refusal is not None:
            await send_error(send, refusal, {**headers, "retry-after": str(refusal.retry_after)})
            return
        extra = [(k.encode(), v.encode()) for k, v in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        token = _caller.set(caller)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _caller.reset(token)


def _caller_of(scope: Scope) -> str:
    """The API key id set by AuthMiddleware, else the client IP."""
    kid = scope.get("state", {}).get("api_key_id")
    if kid:
        return f"key:{kid}"
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"
