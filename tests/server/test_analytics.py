"""Usage ledger, /metrics and /analytics/* through the in-process server, on a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from lcfin.cli import app as cli
from lcfin.errors import LcfinError
from lcfin.server.security import key_id
from lcfin.telemetry.records import RequestRecord
from tests.server.support import PROMPT, Serve, Served

pytestmark = pytest.mark.asyncio

KEY = "sk-planted-7c1e9a3f5b2d4e60"  # must never reach the database or any output
ADMIN = "sk-admin-4a8b2c6d"
AUTH = {"Authorization": f"Bearer {KEY}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


def db_rows(path: Path) -> list[dict[str, Any]]:
    """The ledger's rows, read with plain sqlite3 (not through lcfin)."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY time")]
    finally:
        conn.close()


def flush(server: Served) -> None:
    assert server.app.state.telemetry.ledger.flush()


@pytest.mark.any_backend
async def test_n_concurrent_requests_make_exactly_n_rows(serve: Serve, tmp_path: Path):
    db = tmp_path / "usage.db"
    server = await serve(usage_db=str(db))
    n = 12

    responses = await asyncio.gather(
        *(server.chat(max_tokens=2 + i % 5, temperature=0.0) for i in range(n))
    )
    flush(server)

    rows = {r["request_id"]: r for r in db_rows(db)}
    assert len(rows) == n
    for response in responses:
        body = response.json()
        row = rows[body["id"]]
        assert row["prompt_tokens"] == body["usage"]["prompt_tokens"]
        assert row["completion_tokens"] == body["usage"]["completion_tokens"]
        assert (row["endpoint"], row["model"], row["status"]) == (
            "/v1/chat/completions", server.model, "ok",
        )  # fmt: skip
        assert row["api_key_id"] is None  # no key sent
        assert float(response.headers["x-lcfin-cost-usd"]) == pytest.approx(
            row["cost_usd"], abs=1e-10
        )
        assert row["hardware_cost_usd"] > 0 and row["token_cost_usd"] == 0
    assert len({r["id"] for r in rows.values()}) == n


@pytest.mark.any_backend
async def test_every_endpoint_is_recorded_and_metrics_match_the_ledger(serve: Serve, tmp_path):
    server = await serve(usage_db=str(tmp_path / "usage.db"))
    c = server.client
    await server.chat(max_tokens=4)
    stream = await server.chat(max_tokens=3, stream=True, stream_options={"include_usage": True})
    await c.post(
        "/v1/completions", json={"model": server.model, "prompt": ["a", "b"], "max_tokens": 2}
    )
    await c.post("/inference", json={"prompt": PROMPT, "max_new_tokens": 3})
    flush(server)

    rows = server.app.state.telemetry.ledger.requests()
    text = (await c.get("/metrics")).text

    assert sorted(r["endpoint"] for r in rows) == sorted(
        ["/v1/chat/completions"] * 2 + ["/v1/completions"] * 2 + ["/inference"]
    )
    usage_chunk = json.loads(stream.text.split("data: ")[-2])
    streamed = next(r for r in rows if r["request_id"] == usage_chunk["id"])
    assert usage_chunk["usage"]["cost_usd"] == pytest.approx(streamed["cost_usd"])
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name] = samples.get(s.name, 0.0) + s.value
    assert samples["lcfin:requests_total"] == len(rows) == 5
    assert samples["lcfin:prompt_tokens_total"] == sum(r["prompt_tokens"] for r in rows)
    assert samples["lcfin:generation_tokens_total"] == sum(r["completion_tokens"] for r in rows)
    assert samples["lcfin:e2e_request_latency_seconds_count"] == 5
    assert samples["lcfin:e2e_request_latency_seconds_sum"] == pytest.approx(
        sum(r["latency_s"] for r in rows)
    )
    assert samples["lcfin:request_cost_usd_total"] == pytest.approx(
        sum(r["cost_usd"] for r in rows)
    )
    assert samples["lcfin:num_requests_running"] == 0


async def test_windows_and_filters(serve: Serve, tmp_path: Path):
    server = await serve(usage_db=str(tmp_path / "usage.db"))
    ledger = server.app.state.telemetry.ledger
    now = time.time()
    for hours_ago, model, key in ((2, "old-model", "k-old"), (30, "older-model", None)):
        ledger.add(RequestRecord(
            request_id=f"hist-{hours_ago}", model=model, backend="transformers", profile="cpu",
            prompt_tokens=5, completion_tokens=5, finish_reason="stop", latency_s=0.3,
            time=now - hours_ago * 3600, api_key_id=key,
        ))  # fmt: skip
    await server.chat(max_tokens=2)

    async def usage(query: str) -> dict[str, Any]:
        r = await server.client.get(f"/analytics/usage?{query}")
        assert r.status_code == 200, r.text
        return r.json()

    assert (await usage("window=1h"))["totals"]["requests"] == 1
    assert (await usage(""))["totals"]["requests"] == 2  # default window: 24h
    assert (await usage("window=7d"))["totals"]["requests"] == 3
    assert (await usage("window=all"))["totals"]["requests"] == 3
    assert set((await usage("window=all&model=old-model"))["by_model"]) == {"old-model"}
    assert (await usage("window=all&key=k-old"))["totals"]["requests"] == 1
    perf = (await server.client.get("/analytics/performance?window=1h")).json()
    assert perf["requests"] == 1 and perf["latency_s"]["p50"] > 0
    costs = (await server.client.get("/analytics/costs?window=all")).json()
    assert costs["total_cost_usd"] > 0
    assert costs["query"]["window"] == "all"
    bad = await server.client.get("/analytics/usage?window=1y")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "window"


async def test_usage_time_series_in_a_chosen_bucket(serve: Serve, tmp_path: Path):
    server = await serve(usage_db=str(tmp_path / "usage.db"))
    ledger = server.app.state.telemetry.ledger
    now = time.time()
    for seconds_ago in (5, 6, 125):
        ledger.add(RequestRecord(
            request_id=f"b-{seconds_ago}", model="m", backend="transformers", profile="cpu",
            prompt_tokens=3, completion_tokens=7, finish_reason="stop", latency_s=0.2,
            time=now - seconds_ago,
        ))  # fmt: skip

    body = (await server.client.get("/analytics/usage?window=15m&bucket=1m")).json()

    assert "by_hour" not in body
    buckets = body["by_bucket"]
    assert sum(b["requests"] for b in buckets) == 3
    assert all(b["start"] % 60 == 0 for b in buckets)
    assert sorted(b["requests"] for b in buckets) in ([1, 2], [1, 1, 1])  # 5 s and 6 s ago
    assert "by_hour" in (await server.client.get("/analytics/usage?window=15m")).json()


@pytest.mark.parametrize("bucket", ["0s", "0.5s", "all", "1y", "-5m", ""])
async def test_a_bad_bucket_is_400_naming_it(serve: Serve, tmp_path: Path, bucket: str):
    server = await serve(usage_db=str(tmp_path / "usage.db"))

    r = await server.client.get(f"/analytics/usage?window=1h&bucket={bucket}")

    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "bucket"


async def test_admin_key_guards_metrics_and_analytics(serve: Serve, tmp_path: Path):
    server = await serve(api_keys=KEY, admin_key=ADMIN, usage_db=str(tmp_path / "u.db"))
    for path in ("/metrics", "/analytics/performance", "/analytics/usage", "/analytics/costs"):
        assert (await server.client.get(path)).status_code == 401
        assert (await server.client.get(path, headers=AUTH)).status_code == 403
        assert (await server.client.get(path, headers=ADMIN_AUTH)).status_code == 200


async def test_analytics_need_the_ledger(serve: Serve):
    server = await serve(usage_db="off")
    await server.chat(max_tokens=2)

    assert (await server.client.get("/analytics/usage")).status_code == 404
    assert (await server.client.get("/metrics")).status_code == 200


async def test_planted_key_never_reaches_the_database_or_any_output(serve: Serve, tmp_path):
    db = tmp_path / "usage.db"
    server = await serve(api_keys=KEY, admin_key=ADMIN, usage_db=str(db), audit=True)
    await server.chat(max_tokens=3, headers=AUTH)
    await server.chat(max_tokens=3, stream=True, headers=AUTH)
    outputs = [
        (await server.client.get(p, headers=ADMIN_AUTH)).text
        for p in ("/metrics", "/analytics/performance?window=all", "/analytics/usage",
                  "/analytics/costs")
    ]  # fmt: skip
    server.app.state.telemetry.close()  # the last records written, the WAL checkpointed
    runner = CliRunner()
    for args in (["usage", "--db", str(db)], ["usage", "--db", str(db), "--json"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)

    rows = db_rows(db)
    assert len(rows) == 2
    assert {r["api_key_id"] for r in rows} == {key_id(KEY)}
    files = [p for p in tmp_path.iterdir() if p.name.startswith("usage.db")]
    assert files and all(KEY.encode() not in p.read_bytes() for p in files)
    assert all(KEY not in text for text in outputs)
    assert key_id(KEY) in outputs[2]  # usage by key shows the id


async def test_unwritable_default_ledger_only_turns_analytics_off(
    serve: Serve, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    (tmp_path / "ro" / "lcfin").parent.mkdir()
    (tmp_path / "ro" / "lcfin").write_text("a file where the ledger's folder would go")

    server = await serve(hf_home=str(tmp_path / "ro" / "hf"))

    assert server.app.state.telemetry.ledger is None
    assert "Usage ledger off" in caplog.text
    assert (await server.chat(max_tokens=2)).status_code == 200


async def test_a_named_ledger_must_open(serve: Serve, tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(LcfinError, match="Cannot open the usage database"):
        await serve(usage_db=str(tmp_path / "file" / "usage.db"))


async def test_refused_requests_are_counted_with_their_error_codes(serve: Serve, tmp_path: Path):
    server = await serve(usage_db=str(tmp_path / "usage.db"))
    limit = server.llm.status().max_model_len
    assert limit is not None
    for _ in range(2):  # too long for the context: 400 context_length_exceeded (in the core)
        assert (await server.chat(max_tokens=limit)).status_code == 400
    for _ in range(4):  # another model than the served one: 404 (in the handler)
        assert (await server.chat(model="gpt-4o", max_tokens=2)).status_code == 404
    assert (await server.client.post("/inference", json={"prompt": 3})).status_code == 400

    perf = (await server.client.get("/analytics/performance?window=1h")).json()

    assert (perf["requests"], perf["errors"]) == (7, 7)
    assert perf["error_codes"] == {
        "context_length_exceeded": 2,
        "model_not_found": 4,
        "invalid_value": 1,
    }
    assert perf["latency_s"]["count"] == 0  # refused requests have no latency to report
    assert (server.llm.stats()["requests"], server.llm.stats()["errors"]) == (7, 7)
    metrics = (await server.client.get("/metrics")).text
    errors = [
        s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "lcfin:requests_total" and s.labels["status"] == "error"
    ]
    assert sum(errors) == 7
