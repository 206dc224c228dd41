"""RequestRecord's derived fields and the in-memory stats."""

from __future__ import annotations

import pytest

from lcfin.telemetry.records import RequestRecord, StatsCollector


def _record(**kw: object) -> RequestRecord:
    base: dict[str, object] = {
        "request_id": "r",
        "model": "m",
        "backend": "b",
        "profile": "cpu",
        "prompt_tokens": 4,
        "completion_tokens": 11,
        "finish_reason": "stop",
        "latency_s": 1.2,
        "time_to_first_token_s": 0.2,
    }
    return RequestRecord(**{**base, **kw})  # type: ignore[arg-type]


def test_derived_fields() -> None:
    record = _record(token_cost_usd=0.25, hardware_cost_usd=0.5)

    assert record.inter_token_latency_s == pytest.approx(0.1)  # 1.0 s for 10 gaps
    assert record.decode_tokens_per_s == pytest.approx(10.0)
    assert record.cost_usd == 0.75
    data = record.to_dict()
    assert data["cost_usd"] == 0.75 and data["decode_tokens_per_s"] == pytest.approx(10.0)
    assert len(record.id) == 32 and record.id != _record().id


def test_derived_fields_need_two_tokens() -> None:
    assert _record(completion_tokens=1).inter_token_latency_s is None
    assert _record(time_to_first_token_s=None).decode_tokens_per_s is None


def test_texts_stay_out_of_repr() -> None:
    record = _record(prompt_text="secret prompt", response_text="secret answer")
    assert "secret" not in repr(record)


def test_stats_collector_sums_costs() -> None:
    stats = StatsCollector()
    stats.add(_record(hardware_cost_usd=0.5))
    stats.add(_record(status="error", hardware_cost_usd=0.25))

    summary = stats.summary()
    assert (summary["requests"], summary["errors"], summary["cost_usd"]) == (2, 1, 0.75)
