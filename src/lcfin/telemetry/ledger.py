"""The usage ledger: every request record, persisted off the request path, read back for analytics.

`UsageLedger.add` (a `FinancialLLM.record_hooks` hook) only appends to an in-memory queue. A
writer thread commits the queue in one transaction every `flush_interval_s` (1 s by default)
and on `close()`, so a crash loses at most that interval. A failed write (database locked,
connection lost) is retried on the next tick with the same records; their unique ids and
`ON CONFLICT DO NOTHING` make a retry of a batch that was in fact committed write nothing twice.

A server's ledger also writes a heartbeat (`uptime` table) every few seconds, and at once when
the served model changes: which model it serves on which profile, at what hourly cost, so
hardware cost x uptime survives restarts. A running session reads its own segment as seen now.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lcfin.errors import LcfinError
from lcfin.telemetry.records import RequestRecord
from lcfin.telemetry.schema import REQUEST_COLUMNS, migrate
from lcfin.telemetry.store import Store, describe_target, open_store, scrub

__all__ = ["LedgerQuery", "Serving", "UsageLedger"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
PURGE_EVERY_S = 3600.0
MAX_PENDING = 100_000  # beyond this (database down for long), the oldest records are dropped
_BATCH = 5000

_INSERT_REQUEST = (
    f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in REQUEST_COLUMNS)}) ON CONFLICT (id) DO NOTHING"
)
_INSERT_AUDIT = (
    "INSERT INTO audit (id, time, prompt_text, response_text) "
    "VALUES (:id, :time, :prompt_text, :response_text) ON CONFLICT (id) DO NOTHING"
)
_BEAT = (
    "INSERT INTO uptime (session_id, started_at, last_seen, model, profile, backend, "
    "hourly_cost_usd) VALUES (:session_id, :started_at, :last_seen, :model, :profile, "
    ":backend, :hourly_cost_usd) "
    "ON CONFLICT (session_id, started_at) DO UPDATE SET last_seen = excluded.last_seen"
)


@dataclass(frozen=True)
class Serving:
    """What a server runs right now (for the uptime heartbeat)."""

    model: str
    profile: str
    backend: str
    hourly_cost_usd: float


@dataclass(frozen=True)
class LedgerQuery:
    """Which records to read: since/until (Unix times, None: unbounded), model, API key id."""

    since: float | None = None
    until: float | None = None
    model: str | None = None
    key: str | None = None

    def where(self, table: str = "") -> tuple[str, dict[str, Any]]:
        """A WHERE clause (built, so PostgreSQL never sees an untyped NULL parameter)."""
        parts, params = [], {}
        t = f"{table}." if table else ""
        for name, value, sql in (
            ("since", self.since, f"{t}time >= :since"),
            ("until", self.until, f"{t}time < :until"),
            ("model", self.model, f"{t}model = :model"),
            ("key", self.key, f"{t}api_key_id = :key"),
        ):
            if value is not None:
                parts.append(sql)
                params[name] = value
        return (" WHERE " + " AND ".join(parts) if parts else ""), params


def _row(record: RequestRecord, session_id: str) -> dict[str, Any]:
    return {
        "id": record.id,
        "time": record.time,
        "request_id": record.request_id,
        "session_id": session_id,
        "api_key_id": record.api_key_id,
        "endpoint": record.endpoint,
        "model": record.model,
        "backend": record.backend,
        "profile": record.profile,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "queue_s": record.queue_s,
        "ttft_s": record.time_to_first_token_s,
        "latency_s": record.latency_s,
        "decode_tokens_per_s": record.decode_tokens_per_s,
        "finish_reason": record.finish_reason,
        "status": record.status,
        "error_code": record.error_code,
        "error": record.error,
        "gpu_seconds": record.gpu_seconds,
        "token_cost_usd": record.token_cost_usd,
        "hardware_cost_usd": record.hardware_cost_usd,
        "cost_usd": record.cost_usd,
    }


class UsageLedger:
    """Request records in SQLite or PostgreSQL, written in batches by a background thread.

    Args:
        target: a SQLite path or an SQLAlchemy URL (see `open_store`).
        heartbeat: returns what the server serves now; None for a ledger that only records
            (a notebook's), which writes no uptime.
        audit_retention_days: audit texts older than this are deleted (at start, then hourly).

    Raises:
        LcfinError: the database cannot be opened or has a newer schema.
    """

    def __init__(
        self,
        target: str,
        *,
        flush_interval_s: float = 1.0,
        heartbeat: Callable[[], Serving | None] | None = None,
        audit_retention_days: float = 30.0,
    ) -> None:
        self.target = describe_target(target)
        self.store: Store = open_store(target)
        try:
            migrate(self.store)
        except LcfinError:
            self.store.close()
            raise
        except Exception as exc:  # the driver's own error (unreachable server, bad login)
            self.store.close()
            lines = str(exc).strip().splitlines() or [""]
            reason = scrub(lines[0], target)
            raise LcfinError(
                f"Cannot open the usage database {self.target}: {type(exc).__name__}: {reason}",
                hint="check LCFIN_USAGE_DB, or set LCFIN_USAGE_DB=off",
            ) from None
        self.flush_interval_s = flush_interval_s
        self.audit_retention_days = audit_retention_days
        self.session_id = uuid.uuid4().hex
        self._heartbeat = heartbeat
        self._pending: deque[RequestRecord] = deque()
        self._batch: list[RequestRecord] = []
        self._cond = threading.Condition()
        self._added = self._written = self.dropped = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._segment: tuple[float, Serving] | None = None
        self._next_beat = self._next_purge = 0.0
        #: Called with the time on every writer tick: housekeeping of tables that share this
        #: database (the response store's purge of expired responses).
        self.maintenance: list[Callable[[float], object]] = []
        self._closed = False
        atexit.register(self.close)

    # -- writing --------------------------------------------------------------------------

    def add(self, record: RequestRecord) -> None:
        """Queue `record` for the next write (the record hook: O(1), never blocks on I/O)."""
        if self._closed:
            log.warning("Usage ledger is closed; record %s not written", record.request_id)
            return
        with self._cond:
            self._pending.append(record)
            self._added += 1
            if len(self._pending) > MAX_PENDING:
                self._pending.popleft()
                self.dropped += 1
                self._written += 1  # counted as done, or flush() would wait for it forever
        if self._thread is None:
            self.start()

    def start(self) -> None:
        """Start the writer thread (a server starts it at start-up, so uptime counts from then)."""
        with self._cond:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="lcfin-ledger", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record added so far is committed; False on timeout."""
        with self._cond:
            goal = self._added
            if self._written >= goal:
                return True
            if self._thread is None or not self._thread.is_alive():
                return False
            self._wake.set()
            return self._cond.wait_for(lambda: self._written >= goal, timeout)

    def close(self) -> None:
        """Write what is queued, the last heartbeat, and close the database."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        atexit.unregister(self.close)
        self._stop.set()
        self._wake.set()
        if thread is not None:
            thread.join(timeout=30)
        else:
            self._write_pending()
        self.store.close()

    def _run(self) -> None:
        self._tick()  # the first heartbeat marks the start of this session's uptime
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self._tick()
        self._write_pending()
        self._guarded(self._beat, time.time(), True)
        if self._pending or self._batch:
            log.error(
                "Usage ledger %s: %d records could not be written before closing",
                self.target,
                len(self._pending) + len(self._batch),
            )

    def _tick(self) -> None:
        self._write_pending()
        now = time.time()
        if self._heartbeat is not None:
            self._guarded(self._beat, now, False)
        if now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY_S
            self._guarded(self.purge_audit, now)
        for work in list(self.maintenance):
            self._guarded(work, now)

    def _take(self) -> list[RequestRecord]:
        with self._cond:
            while self._pending and len(self._batch) < _BATCH:
                self._batch.append(self._pending.popleft())
            return list(self._batch)

    def _write_pending(self) -> None:
        while batch := self._take():
            if not self._guarded(self._write, batch):
                return  # keep the batch: the next tick retries it
            with self._cond:
                self._batch.clear()
                self._written += len(batch)
                self._cond.notify_all()

    def _write(self, batch: list[RequestRecord]) -> None:
        audit = [
            {
                "id": r.id,
                "time": r.time,
                "prompt_text": r.prompt_text,
                "response_text": r.response_text,
            }
            for r in batch
            if r.prompt_text is not None or r.response_text is not None
        ]
        with self.store.transaction() as tx:
            tx.executemany(_INSERT_REQUEST, [_row(r, self.session_id) for r in batch])
            if audit:
                tx.executemany(_INSERT_AUDIT, audit)

    def _guarded(self, work: Callable[..., object], *args: Any) -> bool:
        try:
            work(*args)
        except Exception as exc:  # the database is down or locked: retry later, keep serving
            log.warning(
                "Usage ledger %s: %s: %s (will retry)", self.target, type(exc).__name__, exc
            )
            return False
        return True

    def _beat(self, now: float, force: bool = True) -> None:
        """Write the heartbeat when it is due, forced, or when the served model changed.

        Asked every tick: a switch starts its segment within one flush interval, not at the
        next heartbeat (see #17: a report then showed 0 s for a model that had served 4 s).
        """
        serving = self._heartbeat() if self._heartbeat is not None else None
        if serving is None:
            return
        changed = self._segment is None or self._segment[1] != serving
        if not (force or changed or now >= self._next_beat):
            return
        self._next_beat = now + HEARTBEAT_S
        if changed:
            if self._segment is not None:  # close the previous model's segment at this moment
                self._guarded(self._write_beat, self._segment, now)
            self._segment = (now, serving)
        self._guarded(self._write_beat, self._segment, now)

    def _write_beat(self, segment: tuple[float, Serving], now: float) -> None:
        started, s = segment
        row = {
            "session_id": self.session_id,
            "started_at": started,
            "last_seen": now,
            "model": s.model,
            "profile": s.profile,
            "backend": s.backend,
            "hourly_cost_usd": s.hourly_cost_usd,
        }
        with self.store.transaction() as tx:
            tx.execute(_BEAT, row)

    def purge_audit(self, now: float | None = None) -> None:
        """Delete audit texts older than the retention (LCFIN_AUDIT_RETENTION_DAYS)."""
        cutoff = (now or time.time()) - self.audit_retention_days * 86400
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM audit WHERE time < :cutoff", {"cutoff": cutoff})

    # -- reading --------------------------------------------------------------------------

    def requests(self, query: LedgerQuery | None = None) -> list[dict[str, Any]]:
        """The request rows matching `query`, oldest first."""
        where, params = (query or LedgerQuery()).where()
        sql = f"SELECT {', '.join(REQUEST_COLUMNS)} FROM requests{where} ORDER BY time"
        with self.store.transaction(write=False) as tx:
            return tx.query(sql, params)

    def uptime(self, query: LedgerQuery | None = None) -> list[dict[str, Any]]:
        """Uptime segments overlapping the query's time range (model and key filters ignored)."""
        q = query or LedgerQuery()
        parts, params = [], {}
        if q.since is not None:
            parts.append("last_seen >= :since")
            params["since"] = q.since
        if q.until is not None:
            parts.append("started_at < :until")
            params["until"] = q.until
        where = " WHERE " + " AND ".join(parts) if parts else ""
        with self.store.transaction(write=False) as tx:
            rows = tx.query(f"SELECT * FROM uptime{where} ORDER BY started_at", params)
        return self._with_live_segment(rows, q)

    def _with_live_segment(
        self, rows: list[dict[str, Any]], q: LedgerQuery
    ) -> list[dict[str, Any]]:
        """`rows` with this running session's segment seen now, not at its last heartbeat.

        The table lags up to HEARTBEAT_S behind a live server, so a report read in its first
        seconds showed no uptime and no hardware cost (see #17).
        """
        live, thread = self._segment, self._thread
        if live is None or self._closed or thread is None or not thread.is_alive():
            return rows
        started, serving = live
        now = time.time()
        for row in rows:
            if row["session_id"] == self.session_id and float(row["started_at"]) == started:
                row["last_seen"] = max(float(row["last_seen"]), now)
                return rows
        if q.until is not None and started >= q.until:
            return rows
        row = {
            "session_id": self.session_id,
            "started_at": started,
            "last_seen": now,
            "model": serving.model,
            "profile": serving.profile,
            "backend": serving.backend,
            "hourly_cost_usd": serving.hourly_cost_usd,
        }
        return sorted([*rows, row], key=lambda r: float(r["started_at"]))

    def audit(self, query: LedgerQuery | None = None) -> list[dict[str, Any]]:
        """Audit texts joined with their request's id, time and model."""
        where, params = (query or LedgerQuery()).where("r")
        sql = (
            "SELECT r.id, r.request_id, r.time, r.model, a.prompt_text, a.response_text "
            f"FROM audit a JOIN requests r ON r.id = a.id{where} ORDER BY r.time"
        )
        with self.store.transaction(write=False) as tx:
            return tx.query(sql, params)
