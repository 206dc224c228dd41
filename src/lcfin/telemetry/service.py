"""A server's telemetry: the usage ledger and the Prometheus metrics, hooked to its FinancialLLM.

It also holds the Responses API's stored responses, which live in the ledger's database.

`create_app` builds one from the settings; the lifespan starts it (so uptime counts from start-up)
and closes it on shutdown (so the last records are written). A notebook can do the same:

    telemetry = Telemetry.from_settings(llm, llm.settings)   # or UsageLedger(path) + a hook
    ...
    telemetry.close()
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from lcfin.errors import LcfinError
from lcfin.telemetry.ledger import Serving, UsageLedger
from lcfin.telemetry.metrics import Metrics
from lcfin.telemetry.response_store import ResponseStore

if TYPE_CHECKING:
    from lcfin import FinancialLLM, Settings
    from lcfin.telemetry.records import RequestRecord

__all__ = ["Telemetry", "serving_of"]

log = logging.getLogger(__name__)


def serving_of(llm: FinancialLLM) -> Callable[[], Serving]:
    """The ledger heartbeat of a server over `llm`: model, profile, backend, hourly cost."""

    def heartbeat() -> Serving:  # asked every second: the serving model only, not status()
        cur = llm.loaded
        return Serving(
            model=cur.spec.name if cur else "",
            profile=llm.profile.name,
            backend=cur.backend.name if cur else llm.backend_kind,
            hourly_cost_usd=llm.profile.hourly_cost_usd,
        )

    return heartbeat


def _response_store(ledger: UsageLedger | None, settings: Settings) -> ResponseStore | None:
    if not settings.response_store:
        return None
    if ledger is None:
        log.info("Responses are not stored: there is no usage database (LCFIN_USAGE_DB=off)")
        return None
    return ResponseStore(
        ledger.store,
        ttl_s=settings.response_store_ttl_s,
        max_bytes=settings.response_store_max_bytes,
    )


class Telemetry:
    """The ledger (None when LCFIN_USAGE_DB=off), metrics and stored responses of one server.

    `responses` is None when responses are not stored (LCFIN_RESPONSE_STORE=false or no ledger).
    """

    def __init__(
        self,
        llm: FinancialLLM,
        ledger: UsageLedger | None,
        metrics: Metrics,
        responses: ResponseStore | None = None,
    ) -> None:
        self.llm, self.ledger, self.metrics, self.responses = llm, ledger, metrics, responses
        self._hooks: list[Callable[[RequestRecord], None]] = [metrics.observe]
        if ledger is not None:
            self._hooks.append(ledger.add)
            if responses is not None:
                ledger.maintenance.append(responses.maintain)
        llm.record_hooks.extend(self._hooks)

    @classmethod
    def from_settings(cls, llm: FinancialLLM, settings: Settings) -> Telemetry:
        """Open the ledger named by LCFIN_USAGE_DB (with a heartbeat) and create the metrics.

        Without LCFIN_USAGE_DB, a default location that cannot be written only turns the
        ledger off (with a warning); a database named explicitly must open.

        Raises:
            LcfinError: the database LCFIN_USAGE_DB names cannot be opened.
        """
        target = settings.usage_db_target()
        ledger = None
        if target is not None:
            try:
                ledger = UsageLedger(
                    target,
                    flush_interval_s=settings.usage_flush_interval_s,
                    heartbeat=serving_of(llm),
                    audit_retention_days=settings.audit_retention_days,
                )
            except LcfinError as exc:
                if settings.usage_db is not None:
                    raise  # asked for by name: refuse to start without it
                # The default place (under the cache) is not writable, e.g. a read-only
                # container: serve anyway, without analytics, and say how to get them.
                log.warning("Usage ledger off: %s; set LCFIN_USAGE_DB to a writable path", exc)
            else:
                audit = "on" if settings.audit else "off"
                log.info("Usage ledger: %s (audit %s)", ledger.target, audit)
        return cls(llm, ledger, Metrics(llm), _response_store(ledger, settings))

    def start(self) -> None:
        """Start the ledger's writer (and its uptime heartbeat)."""
        if self.ledger is not None:
            self.ledger.start()

    def close(self) -> None:
        """Unhook from the model and write the last records."""
        for hook in self._hooks:
            if hook in self.llm.record_hooks:
                self.llm.record_hooks.remove(hook)
        if self.ledger is not None:
            self.ledger.close()
