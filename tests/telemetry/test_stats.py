"""Percentiles, summaries, windows and time buckets, against hand-computed values."""

from __future__ import annotations

import pytest

from lcfin.errors import InvalidParameter
from lcfin.telemetry.stats import (
    by_time,
    iso,
    overlap_s,
    parse_window,
    percentile,
    summarize,
    uptime_seconds,
)

# Ten latencies; sorted: 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 5.0
LATENCIES = [0.5, 0.1, 5.0, 0.3, 0.9, 0.2, 0.7, 0.4, 0.8, 0.6]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0, 0.1),
        (50, 0.55),  # rank 4.5: halfway between 0.5 and 0.6
        (90, 1.31),  # rank 8.1: 0.9 + 0.1 x (5.0 - 0.9)
        (95, 3.155),  # rank 8.55: 0.9 + 0.55 x 4.1
        (99, 4.631),  # rank 8.91: 0.9 + 0.91 x 4.1
        (100, 5.0),
    ],
)
def test_percentile_interpolates_between_ranks(q: float, expected: float) -> None:
    assert percentile(LATENCIES, q) == pytest.approx(expected)


def test_percentile_edge_cases() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.5


def test_summarize_skips_missing_values() -> None:
    summary = summarize([*LATENCIES, None, None])

    assert summary["count"] == 10
    assert summary["mean"] == pytest.approx(0.95)
    assert summary["p50"] == pytest.approx(0.55)
    assert summary["p95"] == pytest.approx(3.155)
    assert summary["max"] == 5.0
    assert summarize([None]) == {
        "count": 0, "mean": None, "p50": None, "p90": None, "p95": None, "p99": None, "max": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("label", "seconds"),
    [("1h", 3600), ("24h", 86400), ("7d", 604800), ("30m", 1800), ("90s", 90), ("all", None)],
)
def test_parse_window(label: str, seconds: float | None) -> None:
    window = parse_window(label, now=1_000_000.0)

    assert window.seconds == seconds
    assert window.until == 1_000_000.0
    assert window.since == (None if seconds is None else 1_000_000.0 - seconds)


@pytest.mark.parametrize("label", ["", "1y", "h", "-1h", "0h", "24 hours"])
def test_parse_window_rejects_unknown(label: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_window(label)
    assert info.value.param == "window"


def test_by_time_aligns_buckets_to_utc() -> None:
    rows = [{"time": t} for t in (7200.0, 7259.0, 10799.9, 3600.5, 10800.0)]

    buckets = by_time(rows, 3600)

    assert list(buckets) == [3600.0, 7200.0, 10800.0]
    assert [len(rs) for rs in buckets.values()] == [1, 3, 1]
    assert iso(7200.0) == "1970-01-01T02:00:00Z"


def test_uptime_overlaps_the_window() -> None:
    window = parse_window("1h", now=10_000.0)  # [6400, 10000)
    segments = [
        {"started_at": 0.0, "last_seen": 7000.0, "model": "a"},  # 600 s inside
        {"started_at": 7000.0, "last_seen": 9000.0, "model": "b"},  # 2000 s inside
        {"started_at": 100.0, "last_seen": 200.0, "model": "a"},  # before the window
        {"started_at": 9500.0, "last_seen": 12_000.0, "model": "a"},  # 500 s, clipped at now
    ]

    assert overlap_s(segments[0], window) == 600.0
    assert uptime_seconds(segments, window) == 3100.0
    assert uptime_seconds(segments, window, model="a") == 1100.0
    assert uptime_seconds(segments, parse_window("all", now=10_000.0)) == 9000.0 + 100.0 + 500.0
