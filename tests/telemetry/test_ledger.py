"""The usage ledger on a real SQLite file, and on PostgreSQL when one is configured."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lcfin.errors import LcfinError
from lcfin.telemetry.ledger import LedgerQuery, Serving, UsageLedger
from lcfin.telemetry.records import RequestRecord
from lcfin.telemetry.schema import SCHEMA_VERSION, migrate, schema_version
from lcfin.telemetry.store import describe_target, open_store


def record(i: int = 0, **kw: Any) -> RequestRecord:
    base: dict[str, Any] = {
        "request_id": f"req-{i}",
        "model": "m1",
        "backend": "transformers",
        "profile": "cpu",
        "prompt_tokens": 10 + i,
        "completion_tokens": 20 + i,
        "finish_reason": "stop",
        "latency_s": 0.5,
        "time_to_first_token_s": 0.05,
        "hardware_cost_usd": 1e-6,
        "gpu_seconds": 0.01,
    }
    return RequestRecord(**{**base, **kw})


def make(target: str, **kw: Any) -> UsageLedger:
    return UsageLedger(target, flush_interval_s=0.05, **kw)


def stored_segments(ledger: UsageLedger) -> list[dict[str, Any]]:
    """The uptime rows as written in the database (no live view)."""
    with ledger.store.transaction(write=False) as tx:
        return tx.query("SELECT * FROM uptime", {})


def test_records_round_trip(ledger_target: str) -> None:
    ledger = make(ledger_target)
    records = [record(i, api_key_id="k1" if i % 2 else None) for i in range(5)]
    for r in records:
        ledger.add(r)
    assert ledger.flush()

    rows = ledger.requests()
    ledger.close()

    assert [r["request_id"] for r in rows] == [r.request_id for r in records]
    first = rows[1]
    assert (first["prompt_tokens"], first["completion_tokens"], first["api_key_id"]) == (
        11,
        21,
        "k1",
    )
    assert first["ttft_s"] == 0.05 and first["decode_tokens_per_s"] == pytest.approx(20 / 0.45)
    assert first["cost_usd"] == pytest.approx(1e-6)
    assert first["session_id"] == ledger.session_id


def test_queries_filter_by_time_model_and_key(ledger_target: str) -> None:
    ledger = make(ledger_target)
    for i, (t, model, key) in enumerate(
        [(100.0, "m1", "k1"), (200.0, "m2", "k1"), (300.0, "m1", "k2"), (400.0, "m1", None)]
    ):
        ledger.add(record(i, time=t, model=model, api_key_id=key))
    ledger.flush()

    def ids(**q: Any) -> list[str]:
        return [r["request_id"] for r in ledger.requests(LedgerQuery(**q))]

    assert ids(since=200.0) == ["req-1", "req-2", "req-3"]
    assert ids(since=150.0, until=300.0) == ["req-1"]
    assert ids(model="m1") == ["req-0", "req-2", "req-3"]
    assert ids(model="m1", key="k2") == ["req-2"]
    ledger.close()


def test_a_retried_batch_is_not_written_twice(ledger_target: str) -> None:
    ledger = make(ledger_target)
    real_write, calls = ledger._write, []

    def commit_then_lose_the_answer(batch: list[RequestRecord]) -> None:
        calls.append(len(batch))
        real_write(batch)
        if len(calls) == 1:  # committed, but the writer never learns it: it will retry
            raise ConnectionError("connection lost after COMMIT")

    ledger._write = commit_then_lose_the_answer  # type: ignore[method-assign]
    for i in range(3):
        ledger.add(record(i))

    assert ledger.flush()
    assert len(calls) >= 2  # written, then retried
    assert len(ledger.requests()) == 3
    ledger.close()


def test_close_writes_what_is_queued(ledger_target: str) -> None:
    ledger = UsageLedger(ledger_target, flush_interval_s=60)  # no tick before close
    for i in range(50):
        ledger.add(record(i))
    ledger.close()
    ledger.add(record(99))  # after close: dropped with a warning, no error

    again = make(ledger_target)
    assert len(again.requests()) == 50
    again.close()


def test_concurrent_writers_share_one_database(ledger_target: str) -> None:
    ledgers = [make(ledger_target), make(ledger_target)]

    def write(ledger: UsageLedger, offset: int) -> None:
        for i in range(100):
            ledger.add(record(offset + i))

    threads = [
        threading.Thread(target=write, args=(led, n * 1000)) for n, led in enumerate(ledgers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ledger in ledgers:
        ledger.close()

    reader = make(ledger_target)
    rows = reader.requests()
    reader.close()
    assert len(rows) == 200 == len({r["id"] for r in rows})


def test_heartbeat_segments_follow_the_served_model(ledger_target: str) -> None:
    serving = [Serving("a", "cpu", "transformers", 0.1)]
    ledger = make(ledger_target, heartbeat=lambda: serving[0])
    ledger._beat(1000.0)
    ledger._beat(1005.0)
    serving[0] = Serving("b", "cpu", "transformers", 0.1)
    ledger._beat(1010.0)
    ledger._beat(1020.0)

    segments = [(s["model"], s["started_at"], s["last_seen"]) for s in ledger.uptime()]
    ledger.close()

    assert segments[:2] == [("a", 1000.0, 1010.0), ("b", 1010.0, 1020.0)]


def test_a_switch_starts_its_segment_at_the_next_tick_not_the_next_heartbeat(
    ledger_target: str,
) -> None:
    serving = [Serving("", "cpu", "transformers", 0.1)]  # loading: no model yet
    ledger = make(ledger_target, heartbeat=lambda: serving[0])
    ledger._tick()
    serving[0] = Serving("a", "cpu", "transformers", 0.1)  # loaded, well before HEARTBEAT_S
    ledger._tick()

    models = [s["model"] for s in ledger.uptime()]
    ledger.close()

    assert models == ["", "a"]


def test_a_running_session_reads_its_uptime_up_to_now(ledger_target: str) -> None:
    ledger = make(ledger_target, heartbeat=lambda: Serving("a", "cpu", "transformers", 0.1))
    ledger.start()
    try:
        deadline = time.monotonic() + 30
        while not stored_segments(ledger):  # the writer thread's first heartbeat
            assert time.monotonic() < deadline, "no heartbeat written"
            time.sleep(0.01)
        asked = time.time()  # after the first heartbeat, long before the second (5 s)
        (segment,) = ledger.uptime()
    finally:
        ledger.close()

    assert segment["last_seen"] >= asked > segment["started_at"]


def test_audit_texts_are_purged_after_the_retention(ledger_target: str) -> None:
    ledger = make(ledger_target, audit_retention_days=1)
    now = time.time()
    ledger.add(record(1, time=now - 2 * 86400, prompt_text="old prompt", response_text="old"))
    ledger.add(record(2, time=now - 60, prompt_text="new prompt", response_text="new"))
    ledger.add(record(3, time=now))  # not audited
    ledger.flush()

    # the writer purges at start (then hourly): the 2-day-old texts are gone already
    assert [a["prompt_text"] for a in ledger.audit()] == ["new prompt"]
    ledger.purge_audit(now + 2 * 86400)
    assert ledger.audit() == []
    assert len(ledger.requests()) == 3  # usage rows stay
    ledger.close()


def test_migrates_an_older_schema(ledger_target: str) -> None:
    store = open_store(ledger_target)
    assert migrate(store, target=1) == 0
    assert schema_version(store) == 1
    store.close()

    ledger = make(ledger_target)  # v1 -> v3: adds the audit table, then the responses table
    ledger.add(record(1, prompt_text="p", response_text="r"))
    ledger.flush()

    assert schema_version(ledger.store) == SCHEMA_VERSION == 3
    assert len(ledger.audit()) == 1
    ledger.close()


def test_refuses_a_newer_schema(ledger_target: str) -> None:
    ledger = make(ledger_target)
    with ledger.store.transaction() as tx:
        tx.execute("UPDATE lcfin_meta SET value = '99' WHERE key = 'schema_version'")
    ledger.close()

    with pytest.raises(LcfinError, match="schema version 99"):
        make(ledger_target)


def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "usage.db"
    ledger = make(str(path))
    ledger.close()

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unopenable_database_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LcfinError, match="Cannot open the usage database"):
        UsageLedger(str(blocker / "usage.db"))
    with pytest.raises(LcfinError, match=r"SQLAlchemy|Cannot use"):
        UsageLedger("nosuchdialect://user:pw@host/db")


def test_describe_target_hides_passwords() -> None:
    assert (
        describe_target("postgresql://lcfin:s3cret@db:5432/x") == "postgresql://lcfin:***@db:5432/x"
    )
    assert describe_target("postgresql://db/x") == "postgresql://db/x"
    assert describe_target("/tmp/usage.db") == "/tmp/usage.db"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://db/x?password=s3cret", "postgresql://db/x?password=***"),
        (
            "postgresql://db/x?sslmode=require&PassWord=s3cret&application_name=a",
            "postgresql://db/x?sslmode=require&PassWord=***&application_name=a",
        ),
        ("postgresql://u:p@s?s3cret@db/x", "postgresql://u:***@db/x"),
        ("postgresql://db/x?sslpassword=s3cret&user=u", "postgresql://db/x?sslpassword=***&user=u"),
    ],
)
def test_describe_target_hides_query_string_passwords(url: str, shown: str) -> None:
    assert describe_target(url) == shown
    assert "s3cret" not in describe_target(url)


def test_scrub_hides_the_passwords_of_a_url_in_a_driver_message() -> None:
    from lcfin.telemetry.store import scrub

    url = "postgresql://u:p%40ss@db/x?password=s3cret"
    message = "login for u with p@ss / p%40ss failed; password s3cret rejected"

    assert scrub(message, url) == "login for u with *** / *** failed; password *** rejected"
