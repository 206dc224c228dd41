"""Where the usage ledger lives: a SQLite file (stdlib sqlite3) or PostgreSQL (SQLAlchemy).

Both stores run the same SQL (see `schema.py`) through the same small interface: a transaction
yields a `Tx` with `execute`, `executemany` and `query` (named `:param`s, rows as dicts).
SQLite runs in WAL mode with `synchronous=NORMAL`: a committed batch survives a killed
process, and readers never block the writer. PostgreSQL needs the `postgres` extra
(SQLAlchemy + psycopg 3); `postgresql://` URLs use psycopg 3.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote_plus

from lcfin.errors import LcfinError

__all__ = [
    "SQLAlchemyStore",
    "SQLiteStore",
    "Store",
    "Tx",
    "describe_target",
    "open_store",
    "scrub",
]

Params = Mapping[str, Any]
_MIGRATION_LOCK = 7_007_007  # PostgreSQL advisory lock key: one migrating replica at a time


class Tx(Protocol):
    """One transaction's statements."""

    def execute(self, sql: str, params: Params | None = None) -> None: ...

    def executemany(self, sql: str, rows: Sequence[Params]) -> None: ...

    def query(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]: ...


class Store(Protocol):
    """A database the ledger can write to and read from."""

    dialect: str

    def transaction(
        self, *, write: bool = True, migration: bool = False
    ) -> AbstractContextManager[Tx]: ...

    def close(self) -> None: ...


class _SQLiteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params | None = None) -> None:
        self._conn.execute(sql, dict(params or {}))

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self._conn.executemany(sql, [dict(r) for r in rows])

    def query(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        cursor = self._conn.execute(sql, dict(params or {}))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class SQLiteStore:
    """A SQLite file in WAL mode, created private (0600) since it may hold audit texts."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise LcfinError(
                f"Cannot open the usage database {self.path}: {exc}",
                hint="set LCFIN_USAGE_DB to a writable path, or LCFIN_USAGE_DB=off",
            ) from None
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self, *, write: bool = True, migration: bool = False) -> Iterator[Tx]:
        """BEGIN IMMEDIATE for writes (takes the write lock up front), BEGIN for reads."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE" if write or migration else "BEGIN")
            try:
                yield _SQLiteTx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        with self._lock:
            self._conn.close()


class _SQLAlchemyTx:
    def __init__(self, conn: Any, text: Any) -> None:
        self._conn, self._text = conn, text

    def execute(self, sql: str, params: Params | None = None) -> None:
        self._conn.execute(self._text(sql), dict(params or {}))

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if rows:
            self._conn.execute(self._text(sql), [dict(r) for r in rows])

    def query(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        result = self._conn.execute(self._text(sql), dict(params or {}))
        return [dict(row) for row in result.mappings().all()]


def _driver_url(url: str) -> str:
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


class SQLAlchemyStore:
    """A database behind an SQLAlchemy URL (tested with PostgreSQL)."""

    def __init__(self, url: str) -> None:
        try:
            import sqlalchemy
        except ImportError:
            raise LcfinError(
                "LCFIN_USAGE_DB is a database URL, but SQLAlchemy is not installed",
                hint="pip install 'lcfin[postgres]'",
            ) from None
        self._text = sqlalchemy.text
        try:
            self._engine = sqlalchemy.create_engine(_driver_url(url), pool_pre_ping=True)
        except (ImportError, sqlalchemy.exc.ArgumentError) as exc:
            # an ArgumentError's text may quote the URL, password and all
            reason = exc if isinstance(exc, ImportError) else type(exc).__name__
            raise LcfinError(
                f"Cannot use the usage database URL {describe_target(url)}: {reason}",
                hint="pip install 'lcfin[postgres]' for postgresql:// URLs",
            ) from None
        self.dialect = str(self._engine.dialect.name)

    @contextmanager
    def transaction(self, *, write: bool = True, migration: bool = False) -> Iterator[Tx]:
        """One transaction on a pooled connection; migrations hold an advisory lock."""
        with self._engine.begin() as conn:
            if migration and self.dialect == "postgresql":
                conn.execute(self._text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            yield _SQLAlchemyTx(conn, self._text)

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()


def _is_url(target: str) -> bool:
    scheme, sep, _ = target.partition("://")
    return bool(sep) and scheme.replace("+", "").isalnum()


#: Query parameters of a database URL that carry a secret (libpq's and drivers' names).
_SECRET_PARAMS = re.compile(r"(?i)(pass(word)?|pwd|secret|token|sslpassword|sslkey|api_?key)")


def _mask_query(query: str) -> str:
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        secret = eq and _SECRET_PARAMS.search(unquote_plus(name))
        parts.append(f"{name}=***" if secret else part)
    return "&".join(parts)


#: `user:password@` at the start of a URL, up to the last `@`: a password may hold `@` or `?`
#: unescaped, and hiding too much of a description is harmless where too little is not.
_USERINFO = re.compile(r"^(?P<user>[^:/@]*):(?P<password>.*)@")


def _secrets_of(target: str) -> list[str]:
    """The password values in a database URL (raw and unquoted), longest first."""
    if not _is_url(target):
        return []
    rest = target.partition("://")[2]
    found = []
    userinfo = _USERINFO.match(rest)
    if userinfo:
        found.append(userinfo["password"])
        rest = rest[userinfo.end() :]
    for part in rest.partition("?")[2].split("&"):
        name, eq, value = part.partition("=")
        if eq and _SECRET_PARAMS.search(unquote_plus(name)):
            found.append(value)
    found += [unquote_plus(v) for v in found]
    return sorted({v for v in found if v}, key=len, reverse=True)


def scrub(text: str, target: str) -> str:
    """`text` (a driver's error message) with the passwords of `target` replaced by ***."""
    for secret in _secrets_of(target):
        text = text.replace(secret, "***")
    return text


def describe_target(target: str) -> str:
    """The target with any password hidden (in `user:pw@` and in `?password=`), safe to log."""
    if not _is_url(target):
        return target
    scheme, _, rest = target.partition("://")
    rest = _USERINFO.sub(lambda m: f"{m['user']}:***@", rest, count=1)
    rest, question, query = rest.partition("?")
    return f"{scheme}://{rest}" + (f"?{_mask_query(query)}" if question else "")


def open_store(target: str) -> Store:
    """A store for a SQLite path, a `sqlite:///path` URL or an SQLAlchemy URL.

    Raises:
        LcfinError: the database cannot be opened, or its driver is not installed.
    """
    if target.startswith("sqlite:///"):
        return SQLiteStore(Path(target[len("sqlite:///") :]))
    if _is_url(target):
        return SQLAlchemyStore(target)
    return SQLiteStore(Path(target))
