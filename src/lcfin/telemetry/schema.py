"""The usage ledger's tables, versioned: each migration moves the schema one version up.

The SQL is written once for SQLite and PostgreSQL (types both accept, `ON CONFLICT DO
NOTHING`, named `:param`s). `migrate` runs the missing migrations in one transaction (DDL is
transactional in both), under a lock so that replicas starting together migrate once.

    requests  one row per generation (RequestRecord); `id` is unique, so a retried write of the
              same batch inserts nothing twice
    uptime    one row per (server session, model segment): when it started and was last seen
              alive (a heartbeat), with the profile's hourly cost -> hardware cost x uptime
    audit     prompt and response text per request id, only with LCFIN_AUDIT=true; purged after
              LCFIN_AUDIT_RETENTION_DAYS
    responses stored responses of the Responses API (`store: true`): body and conversation items,
              scoped to the API key id that created them (`owner`, '' without a key), deleted
              after LCFIN_RESPONSE_STORE_TTL_S or when past LCFIN_RESPONSE_STORE_MAX_BYTES
    lcfin_meta  key/value; `schema_version`
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lcfin.errors import LcfinError

if TYPE_CHECKING:
    from lcfin.telemetry.store import Store

__all__ = ["MIGRATIONS", "REQUEST_COLUMNS", "SCHEMA_VERSION", "migrate", "schema_version"]

#: The columns of `requests`, in insert order (RequestRecord fields, plus derived ones).
REQUEST_COLUMNS = (
    "id",
    "time",
    "request_id",
    "session_id",
    "api_key_id",
    "endpoint",
    "model",
    "backend",
    "profile",
    "prompt_tokens",
    "completion_tokens",
    "queue_s",
    "ttft_s",
    "latency_s",
    "decode_tokens_per_s",
    "finish_reason",
    "status",
    "error_code",
    "error",
    "gpu_seconds",
    "token_cost_usd",
    "hardware_cost_usd",
    "cost_usd",
)

_V1 = (
    """CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        time DOUBLE PRECISION NOT NULL,
        request_id TEXT NOT NULL,
        session_id TEXT,
        api_key_id TEXT,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        backend TEXT NOT NULL,
        profile TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        queue_s DOUBLE PRECISION,
        ttft_s DOUBLE PRECISION,
        latency_s DOUBLE PRECISION NOT NULL,
        decode_tokens_per_s DOUBLE PRECISION,
        finish_reason TEXT NOT NULL,
        status TEXT NOT NULL,
        error_code TEXT,
        error TEXT,
        gpu_seconds DOUBLE PRECISION NOT NULL,
        token_cost_usd DOUBLE PRECISION NOT NULL,
        hardware_cost_usd DOUBLE PRECISION NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX requests_time ON requests (time)",
    """CREATE TABLE uptime (
        session_id TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL,
        model TEXT NOT NULL,
        profile TEXT NOT NULL,
        backend TEXT NOT NULL,
        hourly_cost_usd DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (session_id, started_at)
    )""",
)
_V2 = (
    """CREATE TABLE audit (
        id TEXT PRIMARY KEY,
        time DOUBLE PRECISION NOT NULL,
        prompt_text TEXT,
        response_text TEXT
    )""",
    "CREATE INDEX audit_time ON audit (time)",
    "CREATE INDEX requests_key_time ON requests (api_key_id, time)",
)

_V3 = (
    """CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        size_bytes INTEGER NOT NULL,
        body TEXT NOT NULL,
        items TEXT NOT NULL
    )""",
    "CREATE INDEX responses_expires ON responses (expires_at)",
    "CREATE INDEX responses_created ON responses (created_at)",
)

#: MIGRATIONS[i] takes the schema from version i to version i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3)
SCHEMA_VERSION = len(MIGRATIONS)

_META = "CREATE TABLE IF NOT EXISTS lcfin_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_GET_VERSION = "SELECT value FROM lcfin_meta WHERE key = 'schema_version'"
_SET_VERSION = (
    "INSERT INTO lcfin_meta (key, value) VALUES ('schema_version', :v) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


def schema_version(store: Store) -> int:
    """The version of the store's schema (0 for an empty database)."""
    with store.transaction() as tx:
        tx.execute(_META)
        rows = tx.query(_GET_VERSION)
    return int(str(rows[0]["value"])) if rows else 0


def migrate(store: Store, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema up to `target`; returns the version found before.

    Raises:
        LcfinError: the database was written by a newer lcfin (its schema is ahead).
    """
    with store.transaction(migration=True) as tx:
        tx.execute(_META)
        rows = tx.query(_GET_VERSION)
        found = int(str(rows[0]["value"])) if rows else 0
        if found > SCHEMA_VERSION:
            raise LcfinError(
                f"The usage database has schema version {found}; this lcfin knows up to "
                f"{SCHEMA_VERSION}",
                hint="upgrade lcfin, or point LCFIN_USAGE_DB at another database",
            )
        for statements in MIGRATIONS[found:target]:
            for sql in statements:
                tx.execute(sql)
        if target > found:
            tx.execute(_SET_VERSION, {"v": str(target)})
    return found
