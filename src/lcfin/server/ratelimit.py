"""Per-key rate limits (requests and tokens per minute) with OpenAI's `x-ratelimit-*` headers.

`LCFIN_RATE_LIMITS="60rpm,100000tpm"` gives every caller two token buckets that refill
continuously over a minute. Callers are the ids of verified API keys (`key_id`, a hash: the key
itself is never kept) or, when no keys are configured, the client address (uvicorn rewrites it
from X-Forwarded-For only for LCFIN_TRUSTED_PROXIES). A generation request takes one request
token when it arrives. Once its prompts are rendered (`reserved`), each further prompt of a list
takes one more, and the tokens bucket gives up every generation's budget (prompt + max_tokens,
or what the context leaves) before any starts; when a generation ends (the FinancialLLM record
hook), what it did not use goes back, and a cancelled one gives everything back. A request
needs min(its budget, the limit) in the bucket, so concurrent requests cannot overshoot it. A
refusal is 429 `rate_limit_exceeded` with Retry-After; every response of a limited route
carries the headers OpenAI sends:

    x-ratelimit-limit-requests / -tokens        the per-minute limit
    x-ratelimit-remaining-requests / -tokens    what is left now
    x-ratelimit-reset-requests / -tokens        time until the bucket is full again ("6m0s")
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lcfin.errors import InvalidParameter, RateLimited
from lcfin.server.security import send_error
from lcfin.telemetry.records import CANCELLED

if TYPE_CHECKING:
    from lcfin.engine.types import Admission
    from lcfin.telemetry.records import RequestRecord

__all__ = ["LIMITED_PATHS", "Limits", "RateLimitMiddleware", "RateLimiter", "reserved"]

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
        self._reserved: dict[str, tuple[str, int]] = {}  # request id -> (caller, token budget)

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

    def reserve(self, caller: str, admission: Admission) -> None:
        """Take a request for each further prompt and every generation's token budget.

        Raises:
            RateLimited: a bucket lacks it (nothing is taken; the request must not start).
        """
        requests, tokens = self._get(caller)
        extra = max(admission.prompts - 1, 0)  # the first prompt's request was taken on arrival
        if requests is not None:
            need = min(extra, requests.capacity - 1)  # a longer list needs a full bucket
            if requests.level < need:
                raise self._refuse("requests", requests.capacity, requests.wait_s(need))
        if tokens is not None:
            need = min(admission.tokens, tokens.capacity)
            if tokens.level < need:
                raise self._refuse("tokens", tokens.capacity, tokens.wait_s(need))
        if requests is not None:
            requests.level -= extra
        if tokens is not None:
            tokens.level -= admission.tokens
            for rid, budget in admission.token_budgets.items():
                self._reserved[rid] = (caller, budget)

    def release(self, admission: Admission) -> None:
        """Give back the budgets of generations that never produced a record."""
        for rid in admission.token_budgets:
            held = self._reserved.pop(rid, None)
            if held is not None:
                self.charge(held[0], -held[1])

    def on_record(self, record: RequestRecord) -> None:
        """FinancialLLM record hook: settle a finished generation's tokens.

        A reserved generation gets back what it did not use (everything, when cancelled);
        any other is charged to the current caller.
        """
        used = record.prompt_tokens + record.completion_tokens
        if record.error_code == CANCELLED:
            used = 0
        held = self._reserved.pop(record.request_id, None)
        if held is not None:
            self.charge(held[0], used - held[1])
            return
        caller = _caller.get()
        if caller is not None:
            self.charge(caller, used)


@contextmanager
def reserved(limiter: RateLimiter | None, admission: Admission) -> Iterator[None]:
    """Reserve `admission` for the current caller while the block runs (see `reserve`).

    Raises:
        RateLimited: over a limit; the block does not run.
    """
    caller = _caller.get()
    if limiter is None or caller is None:
        yield
        return
    limiter.reserve(caller, admission)
    try:
        yield
    finally:
        limiter.release(admission)


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
    """The verified API key id set by AuthMiddleware, else the client address."""
    kid = scope.get("state", {}).get("api_key_id")
    if kid:
        return f"key:{kid}"
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"
