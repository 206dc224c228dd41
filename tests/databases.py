"""Test databases: PostgreSQL when LCFIN_TEST_POSTGRES_URL names a server (`ledger_target`).

`.ci/run` installs and starts PostgreSQL and sets LCFIN_TEST_POSTGRES_URL; elsewhere the
PostgreSQL cases skip with that reason. Each PostgreSQL test gets a schema of its own (through
the URL's `options=-csearch_path=...`), dropped afterwards, so concurrent runs do not collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

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
