"""Request records: what every generation produced, and an in-memory aggregate of them.

A `RequestRecord` is made by the core (`FinancialLLM`) for every generation, whoever asked for it
(a notebook, the CLI, the server), and handed to `FinancialLLM.record_hooks`: the server's usage
ledger and Prometheus metrics are two such hooks. The server enriches records with the caller's
API key id through `attribute_to` (a context variable), so handlers need not pass it along.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field

__all__ = ["CANCELLED", "RequestRecord", "StatsCollector", "attribute_to", "current_api_key_id"]

#: The `error_code` of a generation stopped because another part of its request failed (a
#: list of prompts, n choices): it is recorded with no cost, and never billed (see #16).
CANCELLED = "cancelled"

_api_key_id: ContextVar[str | None] = ContextVar("lcfin_api_key_id", default=None)


def current_api_key_id() -> str | None:
    """The API key id the current request is attributed to (None outside the server)."""
    return _api_key_id.get()


@contextmanager
def attribute_to(api_key_id: str | None) -> Iterator[None]:
    """Attribute the generations started inside this block to `api_key_id` (a short hash)."""
    token = _api_key_id.set(api_key_id)
    try:
        yield
    finally:
        _api_key_id.reset(token)


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class RequestRecord:
    """One generation (library, CLI or server), as the core saw it.

    Times are in seconds; `time` is the wall-clock start (Unix time). `status` is 'ok' or
    'error' (an aborted request is 'ok' with finish reason 'abort'). `queue_s` is an estimate
    (see docs/analytics.md). Costs are in USD: `token_cost_usd` from the model's price table,
    `hardware_cost_usd` from `gpu_seconds` (the request's share of the engine's busy time) x the
    profile's hourly cost. `id` is unique per record, so writing a record twice is harmless.
    `prompt_text` / `response_text` are set only when the audit log is on (LCFIN_AUDIT).
    """

    request_id: str
    model: str
    backend: str
    profile: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    latency_s: float
    time_to_first_token_s: float | None = None
    status: str = "ok"
    error: str | None = None
    endpoint: str = "library"
    time: float = field(default_factory=time.time)
    api_key_id: str | None = None
    queue_s: float | None = None
    error_code: str | None = None
    gpu_seconds: float = 0.0
    token_cost_usd: float = 0.0
    hardware_cost_usd: float = 0.0
    prompt_text: str | None = field(default=None, repr=False)
    response_text: str | None = field(default=None, repr=False)
    id: str = field(default_factory=_new_id)

    @property
    def cost_usd(self) -> float:
        """Token cost plus hardware cost."""
        return self.token_cost_usd + self.hardware_cost_usd

    @property
    def inter_token_latency_s(self) -> float | None:
        """Mean time between tokens after the first; None with fewer than two tokens."""
        ttft = self.time_to_first_token_s
        if ttft is None or self.completion_tokens < 2 or self.latency_s <= ttft:
            return None
        return (self.latency_s - ttft) / (self.completion_tokens - 1)

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Generation speed after the first token."""
        itl = self.inter_token_latency_s
        return 1.0 / itl if itl else None

    def to_dict(self) -> dict[str, object]:
        """The record as a JSON-ready dict, derived fields included."""
        return {
            **asdict(self),
            "cost_usd": self.cost_usd,
            "inter_token_latency_s": self.inter_token_latency_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
        }


class StatsCollector:
    """Thread-safe running totals plus the most recent records."""

    def __init__(self, keep: int = 1000) -> None:
        self._lock = threading.Lock()
        self._recent: deque[RequestRecord] = deque(maxlen=keep)
        self.requests = 0
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self._latency_sum = 0.0
        self._latency_n = 0  # refused requests have no latency
        self._ttft_sum = 0.0
        self._ttft_n = 0

    def add(self, record: RequestRecord) -> None:
        """Account for one finished request."""
        with self._lock:
            self._recent.append(record)
            self.requests += 1
            self.errors += record.status != "ok"
            self.prompt_tokens += record.prompt_tokens
            self.completion_tokens += record.completion_tokens
            self.cost_usd += record.cost_usd
            if record.finish_reason != "rejected":
                self._latency_sum += record.latency_s
                self._latency_n += 1
            if record.time_to_first_token_s is not None:
                self._ttft_sum += record.time_to_first_token_s
                self._ttft_n += 1

    def recent(self) -> list[RequestRecord]:
        """The most recent records, oldest first."""
        with self._lock:
            return list(self._recent)

    def summary(self) -> dict[str, float | int | None]:
        """Totals and means since start."""
        with self._lock:
            n = self.requests
            return {
                "requests": n,
                "errors": self.errors,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "cost_usd": self.cost_usd,
                "mean_latency_s": self._latency_sum / self._latency_n if self._latency_n else None,
                "mean_time_to_first_token_s": self._ttft_sum / self._ttft_n
                if self._ttft_n
                else None,
                "completion_tokens_per_s": self.completion_tokens / self._latency_sum
                if self._latency_sum
                else None,
            }
