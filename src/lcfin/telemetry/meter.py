"""Measuring one generation: timings, tokens, queue estimate and cost -> a `RequestRecord`.

`Accounting` is owned by a `FinancialLLM`: `begin()` when a request reaches the backend,
`RequestMeter.on_delta` for each delta, `finish(...)` for the record. It needs nothing from the
backend, so every backend gets the same records.

Queue time is estimated, because the backends do not report when a request was admitted into
the running batch: queue ~= time to first token - the prefill the request would have needed on
an idle engine. The prefill estimate is learned per model (an exponential moving average of
time to first token per prompt token) from requests that found the engine idle, which by
definition did not queue; until one such request was seen the estimate is None.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field

from lcfin.telemetry.costs import BusyClock, Prices, hardware_cost, token_cost
from lcfin.telemetry.records import CANCELLED, RequestRecord, current_api_key_id

__all__ = ["REJECTED", "Accounting", "Cancelled", "QueueEstimator", "RecordLabels", "RequestMeter"]


class Cancelled(Exception):
    """A generation stopped because another part of its request failed: never billed."""

    openai_code = CANCELLED


class QueueEstimator:
    """Queue time ~= time to first token - the idle prefill estimate for that prompt length."""

    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self._per_token: dict[str, float] = {}
        self._lock = threading.Lock()

    def estimate(
        self, model: str, ttft: float | None, prompt_tokens: int, idle: bool
    ) -> float | None:
        """The queue time of a request (0 when it found the engine idle; None when unknown)."""
        if ttft is None:
            return None
        tokens = max(prompt_tokens, 1)
        with self._lock:
            rate = self._per_token.get(model)
            if idle:
                sample = ttft / tokens
                self._per_token[model] = (
                    sample if rate is None else rate + self.alpha * (sample - rate)
                )
                return 0.0
        return None if rate is None else max(0.0, ttft - rate * tokens)


@dataclass
class RequestMeter:
    """The measurements of one request in flight."""

    clock: BusyClock
    mark: float
    idle: bool
    started: float = field(default_factory=time.perf_counter)
    wall: float = field(default_factory=time.time)
    ttft: float | None = None
    tokens: int = 0
    finish_reason: str = "abort"
    error: BaseException | None = None
    billed: bool = True

    def on_delta(self, num_tokens: int, finish_reason: str | None) -> None:
        """Account for one delta from the backend."""
        if self.ttft is None and num_tokens:
            self.ttft = time.perf_counter() - self.started
        self.tokens += num_tokens
        if finish_reason is not None:
            self.finish_reason = finish_reason

    def fail(self, exc: BaseException) -> None:
        """The generation raised `exc`."""
        self.finish_reason, self.error = "error", exc

    def cancel(self) -> None:
        """Another part of the request failed and this one was stopped: record, never bill."""
        self.finish_reason, self.billed = "abort", False
        self.error = Cancelled("cancelled: another part of the request failed")


@dataclass(frozen=True)
class RecordLabels:
    """Who served a request, and where it came in."""

    request_id: str
    model: str
    backend: str
    profile: str
    endpoint: str


#: The finish reason of a request refused before it reached the engine (bad input, no model,
#: a full queue): an error record with no tokens and no latency.
REJECTED = "rejected"


def _error_code(exc: BaseException) -> str:
    code = getattr(exc, "openai_code", None)
    return code if isinstance(code, str) else type(exc).__name__


class Accounting:
    """Turns meters into records: the busy clock, the queue estimator and the audit switch."""

    def __init__(self, *, audit: bool = False) -> None:
        self.audit = audit
        self.clock = BusyClock()
        self.queue = QueueEstimator()

    def begin(self) -> RequestMeter:
        """Start measuring a request (it now counts as in flight)."""
        mark, idle = self.clock.start()
        return RequestMeter(self.clock, mark, idle)

    def finish(
        self,
        meter: RequestMeter,
        labels: RecordLabels,
        prices: Prices,
        prompt_tokens: int,
        texts: tuple[str | None, str] = (None, ""),
    ) -> RequestRecord:
        """Stop measuring; the request's record (texts kept only when auditing)."""
        latency = time.perf_counter() - meter.started
        gpu_s = meter.clock.stop(meter.mark)
        exc = meter.error
        return RequestRecord(
            **asdict(labels),
            prompt_tokens=prompt_tokens,
            completion_tokens=meter.tokens,
            finish_reason=meter.finish_reason,
            latency_s=latency,
            time_to_first_token_s=meter.ttft,
            status="error" if exc is not None else "ok",
            error=f"{type(exc).__name__}: {exc}" if exc is not None else None,
            error_code=_error_code(exc) if exc is not None else None,
            time=meter.wall,
            api_key_id=current_api_key_id(),
            queue_s=self.queue.estimate(labels.model, meter.ttft, prompt_tokens, meter.idle),
            gpu_seconds=gpu_s,
            token_cost_usd=token_cost(prompt_tokens, meter.tokens, prices) if meter.billed else 0.0,
            hardware_cost_usd=hardware_cost(gpu_s, prices.hourly_usd) if meter.billed else 0.0,
            prompt_text=texts[0] if self.audit else None,
            response_text=texts[1] if self.audit else None,
        )

    def reject(
        self, labels: RecordLabels, exc: BaseException, code: str | None = None
    ) -> RequestRecord:
        """The record of a request refused before generation (`code`: its OpenAI error code)."""
        return RequestRecord(
            **asdict(labels),
            prompt_tokens=0,
            completion_tokens=0,
            finish_reason=REJECTED,
            latency_s=0.0,
            status="error",
            error=f"{type(exc).__name__}: {exc}"[:500],
            error_code=code or _error_code(exc),
            api_key_id=current_api_key_id(),
        )
