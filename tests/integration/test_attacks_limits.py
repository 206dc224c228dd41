"""Issue #16, limits: prompt lists and rate limits against a real uvicorn server.

- a list of prompts is bounded, admitted whole or refused whole with one 429, counted prompt by
  prompt, and when one part fails the others stop and are not billed;
- rate-limit buckets cannot be dodged with a made-up Bearer token or X-Forwarded-For, and the
  tokens limit is not overshot by concurrent requests.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from lcfin.engine.types import Delta, GenerationRequest
from lcfin.errors import BackendUnavailable
from tests.integration.conftest import LiveServer

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Define EBITDA."}]


def _ledger_rows(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY time")]
    finally:
        conn.close()


def _post(server: LiveServer, path: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=120, **kw)


# -- "completions with a list of prompts is uncapped" --------------------------------------------


def test_a_list_over_the_cap_is_refused_before_anything_runs(
    make_live: Callable[..., LiveServer],
):
    server = make_live()
    before = len(server.llm.recent_requests())

    r = _post(server, "/v1/completions", {"model": server.model, "prompt": ["Q"] * 5000})

    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "prompt"
    (refused,) = server.llm.recent_requests()[before:]  # nothing ran, nothing was billed:
    assert (refused.finish_reason, refused.error_code) == ("rejected", "invalid_value")
    assert refused.completion_tokens == 0 and refused.cost_usd == 0.0  # one refusal (#17)


def test_a_list_without_room_gets_one_429_up_front(make_live: Callable[..., LiveServer]):
    server = make_live(max_waiting=0)  # room: the cpu profile's 32 rows, no queue
    text = {"model": server.model, "max_tokens": 200, "ignore_eos": True}
    with httpx.Client(base_url=server.url, timeout=120) as c:
        held = {**text, "prompt": ["Define EBITDA."] * 31, "stream": True}
        with c.stream("POST", "/v1/completions", json=held) as running:
            lines = running.iter_lines()
            next(lines)  # 31 of the 32 places are taken until this stream ends
            before = len(server.llm.recent_requests())
            listed = c.post("/v1/completions", json={**text, "prompt": ["Q", "Q"]})
            single = c.post(
                "/v1/chat/completions",
                json={"model": server.model, "messages": MESSAGES, "max_tokens": 2},
            )
            new = server.llm.recent_requests()[before:]
            rest = "\n".join(lines)

    assert listed.status_code == 429, listed.text
    assert listed.json()["error"]["code"] == "queue_full"
    assert single.status_code == 200, "an unrelated request still gets in"
    ran = [rec for rec in new if rec.finish_reason != "rejected"]
    assert [rec.endpoint for rec in ran] == ["/v1/chat/completions"], "no part of the list ran"
    refused = [rec for rec in new if rec.finish_reason == "rejected"]  # one per prompt (#17)
    assert sorted(rec.request_id[-4:] for rec in refused) == ["-0-0", "-1-0"]
    assert {rec.error_code for rec in refused} == {"queue_full"}
    assert rest.count('"finish_reason":"length"') == 31, "the held list was running throughout"


class FailingBackend:
    """A test double at the engine edge: the real backend, except that the generation whose
    prompt holds MARK fails with BackendUnavailable after two deltas (a mid-stream engine
    failure, which a tiny model cannot produce on demand)."""

    MARK = "FAIL-HERE"

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        seen = 0
        async for delta in self.real.generate(request):
            yield delta
            seen += 1
            if self.MARK in (request.prompt_text or "") and seen == 2:
                raise BackendUnavailable("the engine failed mid-stream")


def test_when_one_prompt_fails_its_siblings_stop_unbilled(
    make_live: Callable[..., LiveServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    db = tmp_path / "usage.db"
    server = make_live(usage_db=str(db), usage_flush_interval_s=0.1, rate_limits="100000tpm")
    current = server.llm.loaded  # the served model: wrap its backend
    monkeypatch.setattr(current, "backend", FailingBackend(current.backend))
    prompts = [
        "Define EBITDA.",
        "Define WACC.",
        f"{FailingBackend.MARK} Define ROE.",
        "Define P/E.",
    ]
    body = {"model": server.model, "prompt": prompts, "max_tokens": 200, "ignore_eos": True}

    r = _post(server, "/v1/completions", body)
    after = _post(server, "/v1/chat/completions", {"model": server.model, "messages": MESSAGES,
                                                    "max_tokens": 1})  # fmt: skip

    assert r.status_code == 503, r.text
    records = [rec for rec in server.llm.recent_requests() if rec.endpoint == "/v1/completions"]
    assert len(records) == 4
    (failed,) = [rec for rec in records if rec.error_code == "backend_unavailable"]
    cancelled = [rec for rec in records if rec.error_code == "cancelled"]
    assert len(cancelled) == 3
    for rec in cancelled:
        assert rec.completion_tokens < 200, "the siblings stopped"
        assert rec.cost_usd == 0.0
    # The token budgets reserved for the list came back, but for what the failed part used.
    spent = failed.prompt_tokens + failed.completion_tokens
    assert int(after.headers["x-ratelimit-remaining-tokens"]) >= 100_000 - spent - 1
    deadline = time.monotonic() + 30
    while len(rows := _ledger_rows(db)) < 5:
        assert time.monotonic() < deadline, "the ledger did not get the records"
        time.sleep(0.1)
    codes = sorted(row["error_code"] or "ok" for row in rows)
    assert codes == ["backend_unavailable", "cancelled", "cancelled", "cancelled", "ok"]
    for row in rows:
        if row["error_code"] == "cancelled":
            assert row["token_cost_usd"] == row["hardware_cost_usd"] == 0


# -- "rate limits can be dodged, and the token limit overshoots" --------------------------------


def _chat_many(server: LiveServer, headers: list[dict[str, str]]) -> list[httpx.Response]:
    body = {"model": server.model, "messages": MESSAGES, "max_tokens": 2}
    return [_post(server, "/v1/chat/completions", body, headers=h) for h in headers]


def test_a_made_up_bearer_is_no_identity_without_keys(
    make_live: Callable[..., LiveServer], tmp_path: Path
):
    server = make_live(rate_limits="5rpm")

    answers = _chat_many(server, [{"Authorization": f"Bearer made-up-{i}"} for i in range(12)])

    assert [r.status_code for r in answers].count(200) == 5
    assert {r.status_code for r in answers[5:]} == {429}
    assert all(rec.api_key_id is None for rec in server.llm.recent_requests())


def test_x_forwarded_for_is_believed_only_from_trusted_proxies(
    make_live: Callable[..., LiveServer],
):
    untrusted = make_live(rate_limits="5rpm")
    trusted = make_live(rate_limits="5rpm", trusted_proxies="127.0.0.1")
    forged = [{"X-Forwarded-For": f"203.0.113.{i}"} for i in range(12)]

    dodged = _chat_many(untrusted, forged)
    proxied = _chat_many(trusted, forged)

    assert [r.status_code for r in dodged].count(200) == 5  # one bucket: the real peer
    assert [r.status_code for r in proxied].count(200) == 12  # the control: 12 clients


def test_each_prompt_of_a_list_counts_against_rpm(make_live: Callable[..., LiveServer]):
    server = make_live(rate_limits="5rpm")
    text = {"model": server.model, "max_tokens": 2}

    first = _chat_many(server, [{}])[0]  # 5 -> 4
    five = _post(server, "/v1/completions", {**text, "prompt": ["Q"] * 5})  # 1 on arrival, 4 more
    three = _post(server, "/v1/completions", {**text, "prompt": ["Q"] * 3})  # 3 -> 0
    last = _chat_many(server, [{}])[0]

    assert first.status_code == 200
    assert five.status_code == 429, "before #16 a list counted as one request"
    assert "requests per minute" in five.json()["error"]["message"]
    assert three.status_code == 200, three.text
    assert last.status_code == 429


@pytest.mark.asyncio
async def test_concurrent_requests_cannot_overshoot_tpm(make_live: Callable[..., LiveServer]):
    limit = 400
    server = make_live(rate_limits=f"{limit}tpm")
    body = {"model": server.model, "messages": MESSAGES, "max_tokens": 30, "ignore_eos": True}
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=body) for _ in range(20))
        )
    elapsed = time.monotonic() - started

    served = [r for r in answers if r.status_code == 200]
    used = sum(r.json()["usage"]["total_tokens"] for r in served)
    assert {r.status_code for r in answers} == {200, 429}
    refill = limit / 60 * elapsed  # what the bucket regained while the test ran
    assert used <= limit + refill, (used, len(served), elapsed)
