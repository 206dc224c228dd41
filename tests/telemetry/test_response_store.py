"""Stored responses on a real SQLite file, and on PostgreSQL when one is configured."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from lcfin.telemetry.ledger import UsageLedger
from lcfin.telemetry.response_store import ResponseStore, StoredResponse


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(ledger_target: str) -> Iterator[UsageLedger]:
    ledger = UsageLedger(ledger_target)
    yield ledger
    ledger.close()


def make(ledger: UsageLedger, clock: Clock, **kw: Any) -> ResponseStore:
    return ResponseStore(ledger.store, **{"ttl_s": 60.0, "max_bytes": 10_000, "clock": clock, **kw})


def body(rid: str, text: str = "hello") -> dict[str, Any]:
    message = {"type": "message", "role": "assistant", "content": [{"text": text}]}
    return {"id": rid, "object": "response", "output": [message]}


class StoredSize:
    """What ResponseStore counts as a response's size (its two JSON texts, in bytes)."""

    @staticmethod
    def of(response: dict[str, Any]) -> bytes:
        compact: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":")}
        return (json.dumps(response, **compact) + json.dumps([], **compact)).encode()


def count(ledger: UsageLedger) -> int:
    with ledger.store.transaction(write=False) as tx:
        return int(tx.query("SELECT COUNT(*) AS n FROM responses")[0]["n"])


def test_round_trip_and_conversation(ledger: UsageLedger, clock: Clock) -> None:
    store = make(ledger, clock)
    items = [{"role": "user", "content": "What is CET1?"}]
    assert store.put("resp_1", "key-a", body("resp_1", "Ça va"), items)

    found = store.get("resp_1", "key-a")

    assert found == StoredResponse(body("resp_1", "Ça va"), items)
    assert found.conversation == [*items, body("resp_1", "Ça va")["output"][0]]


def test_another_owner_sees_nothing(ledger: UsageLedger, clock: Clock) -> None:
    store = make(ledger, clock)
    store.put("resp_k", "key-a", body("resp_k"), [])
    store.put("resp_anon", None, body("resp_anon"), [])

    assert store.get("resp_k", "key-b") is None
    assert store.get("resp_k", None) is None  # no key is not a wildcard
    assert store.get("resp_anon", "key-a") is None
    assert store.get("resp_anon", None) is not None
    assert store.get("resp_anon", "") is not None  # '' and None are the same anonymous owner
    assert not store.delete("resp_k", "key-b")
    assert store.get("resp_k", "key-a") is not None  # the failed delete left it alone


def test_delete(ledger: UsageLedger, clock: Clock) -> None:
    store = make(ledger, clock)
    store.put("resp_1", "key-a", body("resp_1"), [])

    assert store.delete("resp_1", "key-a")
    assert store.get("resp_1", "key-a") is None
    assert not store.delete("resp_1", "key-a")
    assert count(ledger) == 0


def test_expired_responses_are_never_returned_and_get_purged(
    ledger: UsageLedger, clock: Clock
) -> None:
    store = make(ledger, clock, ttl_s=60.0)
    store.put("resp_old", None, body("resp_old"), [])
    clock.now += 30
    store.put("resp_new", None, body("resp_new"), [])
    clock.now += 31  # resp_old is 61 s old, resp_new 31 s

    assert store.get("resp_old", None) is None
    assert not store.delete("resp_old", None)  # an expired response is gone for delete too
    assert store.get("resp_new", None) is not None

    store.put("resp_2", None, body("resp_2"), [])  # each write purges the expired rows
    assert count(ledger) == 2
    clock.now += 1000
    store.maintain(clock.now)
    assert count(ledger) == 0


def test_maintain_purges_at_most_once_a_minute(ledger: UsageLedger, clock: Clock) -> None:
    store = make(ledger, clock, ttl_s=1.0)
    store.maintain(clock.now)  # first call purges (nothing yet)
    store.put("resp_1", None, body("resp_1"), [])
    clock.now += 2

    store.maintain(clock.now)  # within the minute: no purge
    assert count(ledger) == 1
    store.maintain(clock.now + 60)
    assert count(ledger) == 0


def test_size_cap_evicts_the_oldest_first(ledger: UsageLedger, clock: Clock) -> None:
    one = len(StoredSize.of(body("resp_0", "x" * 200)))
    store = make(ledger, clock, max_bytes=3 * one + one // 2)  # room for three
    for i in range(5):
        clock.now += 1
        assert store.put(f"resp_{i}", None, body(f"resp_{i}", "x" * 200), [])

    kept = [i for i in range(5) if store.get(f"resp_{i}", None) is not None]
    assert kept == [2, 3, 4]


def test_a_response_larger_than_the_cap_is_not_stored(ledger: UsageLedger, clock: Clock) -> None:
    store = make(ledger, clock, max_bytes=500)
    store.put("resp_small", None, body("resp_small"), [])

    assert not store.put("resp_big", None, body("resp_big", "x" * 1000), [])
    assert store.get("resp_big", None) is None
    assert store.get("resp_small", None) is not None  # nothing was evicted for it


def test_the_new_response_is_never_the_one_evicted(ledger: UsageLedger, clock: Clock) -> None:
    one = len(StoredSize.of(body("resp_a", "y" * 100)))
    store = make(ledger, clock, max_bytes=one + 10)
    store.put("resp_b", None, body("resp_b", "y" * 100), [])
    # same timestamp and a smaller id: it would sort after resp_b among equals
    assert store.put("resp_a", None, body("resp_a", "y" * 100), [])

    assert store.get("resp_a", None) is not None
    assert store.get("resp_b", None) is None


def test_the_ledger_writer_runs_the_maintenance_hooks(ledger: UsageLedger) -> None:
    ran = threading.Event()
    ledger.maintenance.append(lambda now: ran.set())
    ledger.start()

    assert ran.wait(timeout=30), "the writer thread never ran its maintenance hooks"
