"""The analytics reports over hand-made ledger rows: every number is checked by hand."""

from __future__ import annotations

from typing import Any

import pytest

from lcfin.telemetry.analytics import (
    AnalyticsQuery,
    costs_report,
    performance_report,
    usage_report,
)
from lcfin.telemetry.stats import parse_window

NOW = 1_000_000.0
HOUR = 3600.0


def row(t: float, **kw: Any) -> dict[str, Any]:
    """A ledger row at NOW - t seconds."""
    base = {
        "time": NOW - t, "model": "m1", "endpoint": "/v1/chat/completions", "api_key_id": "k1",
        "prompt_tokens": 10, "completion_tokens": 20, "latency_s": 1.0, "ttft_s": 0.1,
        "queue_s": 0.0, "decode_tokens_per_s": 20.0, "finish_reason": "stop", "status": "ok",
        "error_code": None, "gpu_seconds": 0.5, "token_cost_usd": 0.0,
        "hardware_cost_usd": 0.5 * 3.6 / 3600, "cost_usd": 0.5 * 3.6 / 3600,
    }  # fmt: skip
    return {**base, **kw}


def query(window: str = "all", **kw: Any) -> AnalyticsQuery:
    return AnalyticsQuery(parse_window(window, now=NOW), **kw)


def test_performance_percentiles_throughput_and_errors() -> None:
    latencies = [0.5, 0.1, 5.0, 0.3, 0.9, 0.2, 0.7, 0.4, 0.8, 0.6]  # see test_stats
    rows = [row(100 - i, latency_s=lat) for i, lat in enumerate(latencies)]
    rows[3].update(status="error", error_code="server_error", finish_reason="error")
    rows[4].update(finish_reason="abort")

    report = performance_report(rows, [], query())

    assert report["requests"] == 10
    assert (report["errors"], report["error_rate"], report["aborted"]) == (1, 0.1, 1)
    assert report["error_codes"] == {"server_error": 1}
    assert report["latency_s"]["p50"] == pytest.approx(0.55)
    assert report["latency_s"]["p95"] == pytest.approx(3.155)
    assert report["latency_s"]["p99"] == pytest.approx(4.631)
    # active span: first start (NOW - 100) to the last end (NOW - 91 + 0.6)
    span = 9.6
    assert report["throughput"]["span_s"] == pytest.approx(span)
    assert report["throughput"]["requests_per_s"] == pytest.approx(10 / span)
    assert report["throughput"]["completion_tokens_per_s"] == pytest.approx(200 / span)
    assert report["by_model"]["m1"]["requests"] == 10


def test_usage_groups_by_model_endpoint_key_and_hour() -> None:
    rows = [
        row(2 * HOUR + 10, model="m1", api_key_id="k1"),
        row(2 * HOUR + 20, model="m2", api_key_id=None, endpoint="/v1/completions"),
        row(30, model="m1", api_key_id="k2", prompt_tokens=5, completion_tokens=7),
    ]

    report = usage_report(rows, query())

    assert report["totals"] == {
        "requests": 3, "prompt_tokens": 25, "completion_tokens": 47, "total_tokens": 72,
        "errors": 0, "cost_usd": pytest.approx(3 * 0.5 * 3.6 / 3600),
    }  # fmt: skip
    assert report["by_model"]["m1"]["requests"] == 2
    assert report["by_model"]["m2"]["completion_tokens"] == 20
    assert set(report["by_endpoint"]) == {"/v1/chat/completions", "/v1/completions"}
    assert set(report["by_key"]) == {"k1", "k2", "none"}
    hours = report["by_hour"]
    assert [h["requests"] for h in hours] == [2, 1]
    assert hours[0]["start"] % HOUR == 0 and hours[0]["start_iso"].endswith(":00:00Z")


def test_costs_hardware_uptime_and_cost_per_1k_tokens() -> None:
    # one session of 2 h on a $3.60/h profile: $7.20 of hardware, busy 0.5 s per request
    uptime = [
        {"session_id": "s", "started_at": NOW - 2 * HOUR, "last_seen": NOW, "model": "m1",
         "profile": "p", "backend": "b", "hourly_cost_usd": 3.6},
    ]  # fmt: skip
    rows = [row(60 * i, token_cost_usd=0.001) for i in range(1, 5)]

    report = costs_report(rows, uptime, query("24h"))

    assert report["uptime_s"] == pytest.approx(2 * HOUR)
    assert report["hardware_cost_usd"] == pytest.approx(7.2)
    assert report["token_cost_usd"] == pytest.approx(0.004)
    assert report["total_cost_usd"] == pytest.approx(7.204)
    assert report["busy_s"] == pytest.approx(2.0)
    assert report["utilisation"] == pytest.approx(2.0 / 7200)
    assert report["attributed_hardware_cost_usd"] == pytest.approx(4 * 0.5 * 3.6 / 3600)
    assert report["cost_per_1k_tokens_usd"] == pytest.approx(7.204 / 120 * 1000)
    assert report["cost_per_1k_completion_tokens_usd"] == pytest.approx(7.204 / 80 * 1000)
    assert report["by_model"]["m1"]["hardware_cost_usd"] == pytest.approx(7.2)
    assert any("busy 0%" in note for note in report["recommendations"])


def test_costs_without_uptime_use_the_attributed_share() -> None:
    rows = [row(10), row(20)]

    report = costs_report(rows, [], query())

    assert report["hardware_cost_usd"] == pytest.approx(2 * 0.5 * 3.6 / 3600)
    assert report["utilisation"] is None


def test_window_clips_uptime_and_a_key_filter_uses_its_share() -> None:
    uptime = [
        {"session_id": "s", "started_at": NOW - 10 * HOUR, "last_seen": NOW, "model": "m1",
         "profile": "p", "backend": "b", "hourly_cost_usd": 1.0},
    ]  # fmt: skip
    assert costs_report([], uptime, query("1h"))["hardware_cost_usd"] == pytest.approx(1.0)
    assert costs_report([], uptime, query("all"))["hardware_cost_usd"] == pytest.approx(10.0)
    keyed = costs_report([row(10)], uptime, query("1h", key="k1"))
    assert keyed["hardware_cost_usd"] == pytest.approx(0.5 * 3.6 / 3600)


def test_recommendations() -> None:
    slow = [row(i, queue_s=2.0, latency_s=3.0) for i in range(30)]
    failing = [row(i, status="error", error_code="model_loading") for i in range(5)]
    uptime = [
        {"session_id": "s", "started_at": NOW - HOUR, "last_seen": NOW, "model": "idle-model",
         "profile": "p", "backend": "b", "hourly_cost_usd": 1.0},
    ]  # fmt: skip

    notes = costs_report(slow + failing, uptime, query("24h"))["recommendations"]

    text = "\n".join(notes)
    assert "larger profile" in text  # p95 queue 2 s
    assert "'model_loading'" in text  # 5 of 35 failed
    assert "idle-model was loaded for 1.0 h and served no request" in text
    assert performance_report([row(1)], [], query())["recommendations"] == []
