"""Generations measured and recorded: every request leaves one `RequestRecord` per generation.

`Metering` runs a generation under its deadline and meter and ends it with the final
`Completion`; a finished, failed or cancelled generation, and a request refused before any
generation started (finish reason `rejected`, see #17), each become a record that goes to the
running totals (`FinancialLLM.stats()`) and then to every hook (the server's ledger, metrics and
rate limiter).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from lcfin.engine.sync_bridge import with_deadline
from lcfin.engine.types import Completion, Delta, Timings, TokenLogprob, Usage
from lcfin.errors import RequestTimeout
from lcfin.telemetry.costs import Prices
from lcfin.telemetry.meter import Accounting, RecordLabels, RequestMeter
from lcfin.telemetry.records import RequestRecord, StatsCollector

if TYPE_CHECKING:
    from lcfin.config import Settings
    from lcfin.engine.fanout import Job
    from lcfin.engine.manager import LoadedModel
    from lcfin.engine.profiles import HardwareProfile

__all__ = ["Metering"]

log = logging.getLogger(__name__)


class Metering:
    """The meters, running totals and record hooks of one `FinancialLLM`."""

    def __init__(self, settings: Settings, profile: HardwareProfile) -> None:
        self.settings = settings
        self.profile = profile
        self.accounting = Accounting(audit=settings.audit)
        self.stats = StatsCollector()
        #: Called with each `RequestRecord` (`FinancialLLM.record_hooks`).
        self.hooks: list[Callable[[RequestRecord], None]] = []

    async def run(
        self, loaded: LoadedModel, job: Job, endpoint: str, cancelled: asyncio.Event
    ) -> AsyncIterator[Delta | Completion]:
        """`job`'s deltas, then its `Completion`; recorded however it ends.

        Raises:
            RequestTimeout: past LCFIN_REQUEST_TIMEOUT (aborted); or what the backend raises.
        """
        request = job.request
        meter = self.accounting.begin()
        parts: list[str] = []
        logprobs: list[TokenLogprob] | None = None if request.params.logprobs is None else []
        timeout = self.settings.request_timeout
        try:
            async for delta in with_deadline(
                loaded.backend.generate(request), timeout, lambda: RequestTimeout.after(timeout)
            ):
                meter.on_delta(delta.num_tokens, delta.finish_reason)
                parts.append(delta.text)
                if logprobs is not None and delta.logprobs:
                    logprobs.extend(delta.logprobs)
                yield delta
        except Exception as exc:
            meter.fail(exc)
            raise
        finally:
            if cancelled.is_set() and meter.error is None and meter.finish_reason == "abort":
                meter.cancel()  # a sibling failed: this one stops, and is not billed
            record = self._finish(loaded, job, endpoint, meter, "".join(parts))
        yield Completion(
            text="".join(parts),
            finish_reason=meter.finish_reason,  # type: ignore[arg-type]
            usage=Usage(record.prompt_tokens, record.completion_tokens),
            model=loaded.spec.name,
            request_id=request.request_id,
            timings=Timings(record.queue_s or 0.0, record.time_to_first_token_s, record.latency_s),
            dropped_messages=job.dropped_messages,
            cost_usd=record.cost_usd,
            logprobs=None if logprobs is None else tuple(logprobs),
        )

    def _finish(
        self, loaded: LoadedModel, job: Job, endpoint: str, meter: RequestMeter, text: str
    ) -> RequestRecord:
        spec, request = loaded.spec, job.request
        labels = RecordLabels(
            request.request_id, spec.name, loaded.backend.name, self.profile.name, endpoint
        )
        prices = Prices(
            spec.price_per_1m_prompt_usd,
            spec.price_per_1m_completion_usd,
            self.profile.hourly_cost_usd,
        )
        prompt_tokens = len(request.prompt_token_ids)
        texts = (request.prompt_text, text)
        return self.publish(self.accounting.finish(meter, labels, prices, prompt_tokens, texts))

    def reject(
        self, labels: RecordLabels, exc: BaseException, code: str | None = None
    ) -> RequestRecord:
        """Record a request refused before generation (`code`: its OpenAI error code)."""
        return self.publish(self.accounting.reject(labels, exc, code))

    def publish(self, record: RequestRecord) -> RequestRecord:
        """Add `record` to the totals, then hand it to every hook."""
        self.stats.add(record)
        for hook in self.hooks:
            try:
                hook(record)
            except Exception:  # a broken hook must not fail the request
                log.exception("Record hook %r failed", hook)
        return record
