"""Turning one request's measurements into a record: queue estimate, cost, audit, errors."""

from __future__ import annotations

import pytest

from lcfin.errors import ContextLengthExceeded
from lcfin.telemetry.costs import Prices
from lcfin.telemetry.meter import Accounting, QueueEstimator, RecordLabels
from lcfin.telemetry.records import attribute_to, current_api_key_id

LABELS = RecordLabels("req-1", "m", "transformers", "cpu", "/v1/chat/completions")


def test_queue_estimate_learns_prefill_from_idle_requests() -> None:
    est = QueueEstimator(alpha=0.5)

    assert est.estimate("m", 0.5, 10, idle=False) is None  # nothing learnt yet
    assert est.estimate("m", 0.2, 10, idle=True) == 0.0  # idle: 0.02 s per prompt token
    assert est.estimate("m", 0.5, 10, idle=False) == pytest.approx(0.3)  # 0.5 - 10 x 0.02
    assert est.estimate("m", 0.1, 10, idle=False) == 0.0  # never negative
    assert est.estimate("m", 0.4, 10, idle=True) == 0.0  # EWMA: (0.02 + 0.04) / 2
    assert est.estimate("m", 0.5, 10, idle=False) == pytest.approx(0.2)
    assert est.estimate("other", 0.5, 10, idle=False) is None
    assert est.estimate("m", None, 10, idle=False) is None


def test_accounting_makes_a_priced_record() -> None:
    acc = Accounting()
    meter = acc.begin()
    for finish in (None, None, "stop"):
        meter.on_delta(1, finish)
    prices = Prices(prompt_per_1m_usd=1.0, completion_per_1m_usd=2.0, hourly_usd=3600.0)

    with attribute_to("abc123"):
        record = acc.finish(meter, LABELS, prices, 10, ("the prompt", "the answer"))

    assert current_api_key_id() is None
    assert (record.request_id, record.endpoint, record.api_key_id) == (
        "req-1", "/v1/chat/completions", "abc123",
    )  # fmt: skip
    assert (record.prompt_tokens, record.completion_tokens, record.finish_reason) == (10, 3, "stop")
    assert record.status == "ok" and record.error_code is None
    assert record.time_to_first_token_s is not None and record.latency_s > 0
    assert record.queue_s == 0.0  # it found the engine idle
    assert record.token_cost_usd == pytest.approx((10 * 1.0 + 3 * 2.0) / 1e6)
    assert record.gpu_seconds == pytest.approx(record.latency_s, rel=0.05, abs=1e-3)
    assert record.hardware_cost_usd == pytest.approx(record.gpu_seconds)  # $3600/h = $1/s
    assert record.cost_usd == record.token_cost_usd + record.hardware_cost_usd > 0
    assert (record.prompt_text, record.response_text) == (None, None)  # audit is off


def test_audit_keeps_texts_and_errors_carry_their_code() -> None:
    acc = Accounting(audit=True)
    meter = acc.begin()
    meter.fail(ContextLengthExceeded("too long", param="messages"))

    record = acc.finish(meter, LABELS, Prices(hourly_usd=1.0), 5, ("p", "r"))

    assert (record.status, record.finish_reason) == ("error", "error")
    assert record.error_code == "context_length_exceeded"
    assert record.error == "ContextLengthExceeded: too long"
    assert (record.prompt_text, record.response_text) == ("p", "r")
    assert record.hardware_cost_usd > 0  # never $0 for a self-hosted model
