"""Ledger targets: a SQLite file, and PostgreSQL when LCFIN_TEST_POSTGRES_URL names a server.

`.ci/run` installs and starts PostgreSQL and sets LCFIN_TEST_POSTGRES_URL; elsewhere the
PostgreSQL cases skip with that reason. Each PostgreSQL test gets a schema of its own (through
the URL's `options=-csearch_path=...`), dropped afterwards, so concurrent runs do not collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Read at import: the autouse clean_environ fixture removes LCFIN_* variables from each test.
POSTGRES_URL = os.environ.get("LCFIN_TEST_POSTGRES_URL")


def _execute(url: str, sql: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(sql))
    engine.dispose()


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """`url` pointed at a fresh schema, dropped on exit."""
    schema = f"lcfin_test_{uuid.uuid4().hex[:12]}"
    _execute(url, f"CREATE SCHEMA {schema}")
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        _execute(url, f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a test's ledger lives: a fresh SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "usage.db")
        return
    if not POSTGRES_URL:
        pytest.skip("set LCFIN_TEST_POSTGRES_URL to a PostgreSQL database (.ci/run does)")
    with postgres_schema(POSTGRES_URL) as url:
        yield url
