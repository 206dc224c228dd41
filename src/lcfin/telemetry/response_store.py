"""Stored responses of the Responses API (`store: true`), in the usage ledger's database.

A response is kept for `ttl_s` seconds and belongs to its owner: the API key id that created it
('' for a request without a key). `get` and `delete` by another owner find nothing, exactly as
for an id that never existed. The stored responses together stay under `max_bytes`: each new
one evicts the oldest first, and one larger than the cap alone is not stored. Expired rows are
never returned; they are deleted by each write and by the ledger's writer thread (`maintain`,
at most a minute after they expire).

Each row holds the response body (what GET returns) and `items`: the input items of the whole
conversation before this response's output (the previous response's items and output, then this
request's input). A follow-up with `previous_response_id` needs one read, and a conversation
survives the eviction of its earlier responses.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lcfin.telemetry.store import Store

__all__ = ["ResponseStore", "StoredResponse"]

log = logging.getLogger(__name__)

PURGE_EVERY_S = 60.0

_INSERT = (
    "INSERT INTO responses (id, owner, created_at, expires_at, size_bytes, body, items) "
    "VALUES (:id, :owner, :created_at, :expires_at, :size_bytes, :body, :items)"
)
_SELECT = (
    "SELECT body, items FROM responses WHERE id = :id AND owner = :owner AND expires_at > :now"
)
_DELETE = "DELETE FROM responses WHERE id = :id AND owner = :owner"
_PURGE = "DELETE FROM responses WHERE expires_at <= :now"
# The new row first, then newest first, with a running total of sizes: rows past the cap go.
_EVICT = (
    "DELETE FROM responses WHERE id IN (SELECT id FROM ("
    "SELECT id, SUM(size_bytes) OVER (ORDER BY CASE WHEN id = :keep THEN 0 ELSE 1 END, "
    "created_at DESC, id DESC) AS running FROM responses) ranked WHERE running > :cap)"
)


@dataclass(frozen=True)
class StoredResponse:
    """One stored response: its body, and the conversation's input items before its output."""

    body: dict[str, Any]
    items: list[dict[str, Any]]

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """The items a follow-up continues from: the input items, then this response's output."""
        output = self.body.get("output")
        return [*self.items, *(output if isinstance(output, list) else [])]


class ResponseStore:
    """Responses kept for `ttl_s` seconds, under `max_bytes` in all, scoped to their owner."""

    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.clock = clock
        self._next_purge = 0.0

    def put(
        self,
        response_id: str,
        owner: str | None,
        body: dict[str, Any],
        items: list[dict[str, Any]],
    ) -> bool:
        """Store a response for `owner`; False when it alone is larger than the cap."""
        body_json = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        items_json = json.dumps(items, ensure_ascii=False, separators=(",", ":"))
        size = len(body_json.encode()) + len(items_json.encode())
        if size > self.max_bytes:
            log.warning(
                "Response %s not stored: %d bytes is over LCFIN_RESPONSE_STORE_MAX_BYTES (%d)",
                response_id,
                size,
                self.max_bytes,
            )
            return False
        now = self.clock()
        row = {
            "id": response_id,
            "owner": owner or "",
            "created_at": now,
            "expires_at": now + self.ttl_s,
            "size_bytes": size,
            "body": body_json,
            "items": items_json,
        }
        with self.store.transaction() as tx:
            tx.execute(_PURGE, {"now": now})
            tx.execute(_INSERT, row)
            tx.execute(_EVICT, {"cap": self.max_bytes, "keep": response_id})
        return True

    def get(self, response_id: str, owner: str | None) -> StoredResponse | None:
        """The response if it exists, has not expired and belongs to `owner`; else None."""
        params = {"id": response_id, "owner": owner or "", "now": self.clock()}
        with self.store.transaction(write=False) as tx:
            rows = tx.query(_SELECT, params)
        if not rows:
            return None
        return StoredResponse(json.loads(rows[0]["body"]), json.loads(rows[0]["items"]))

    def delete(self, response_id: str, owner: str | None) -> bool:
        """Delete `owner`'s response; False when there is none to delete (as `get` sees it)."""
        params = {"id": response_id, "owner": owner or "", "now": self.clock()}
        with self.store.transaction() as tx:
            found = tx.query(_SELECT, params)
            tx.execute(_DELETE, {"id": response_id, "owner": owner or ""})
        return bool(found)

    def purge(self, now: float | None = None) -> None:
        """Delete every expired response."""
        with self.store.transaction() as tx:
            tx.execute(_PURGE, {"now": self.clock() if now is None else now})

    def maintain(self, now: float) -> None:
        """Ledger writer hook: purge, at most once every PURGE_EVERY_S seconds."""
        if now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY_S
            self.purge(now)
