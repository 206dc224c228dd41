"""Request records: what every generation produced, and an in-memory aggregate of them."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

__all__ = ["RequestRecord", "StatsCollector"]


@dataclass(frozen=True)
class RequestRecord:
    """One generation (library, CLI or server), as the core saw it."""

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

    def to_dict(self) -> dict[str, object]:
        """The record as a JSON-ready dict."""
        return asdict(self)


class StatsCollector:
    """Thread-safe running totals plus the most recent records."""

    def __init__(self, keep: int = 1000) -> None:
        self._lock = threading.Lock()
        self._recent: deque[RequestRecord] = deque(maxlen=keep)
        self.requests = 0
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._latency_sum = 0.0
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
            self._latency_sum += record.latency_s
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
                "mean_latency_s": self._latency_sum / n if n else None,
                "mean_time_to_first_token_s": self._ttft_sum / self._ttft_n
                if self._ttft_n
                else None,
                "completion_tokens_per_s": self.completion_tokens / self._latency_sum
                if self._latency_sum
                else None,
            }
