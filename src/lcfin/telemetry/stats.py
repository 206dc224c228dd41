"""Small statistics over ledger rows: percentiles, summaries, windows, grouping, time buckets."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from lcfin.errors import InvalidParameter

__all__ = [
    "PERCENTILES",
    "Window",
    "by_time",
    "group_by",
    "iso",
    "overlap_s",
    "parse_window",
    "percentile",
    "summarize",
    "uptime_seconds",
]

Row = dict[str, Any]
#: The percentiles every summary reports.
PERCENTILES = (50, 90, 95, 99)
_WINDOW = re.compile(r"^(\d{1,12}(?:\.\d{1,6})?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest window but 'all' (ten years), so a window can never reach before year 1 (#16).
MAX_WINDOW_S = 3650 * 86400


class Window:
    """A time window ending now: '1h', '24h', '7d', '30m', ... or 'all'."""

    def __init__(self, label: str, seconds: float | None, now: float | None = None) -> None:
        self.label = label
        self.seconds = seconds
        self.until = time.time() if now is None else now
        self.since = None if seconds is None else self.until - seconds

    def to_dict(self) -> dict[str, Any]:
        """The window as JSON: its label and bounds (Unix times and ISO 8601)."""
        return {
            "window": self.label,
            "since": self.since,
            "until": self.until,
            "since_iso": iso(self.since) if self.since is not None else None,
            "until_iso": iso(self.until),
        }


def parse_window(label: str, now: float | None = None) -> Window:
    """Parse '1h' / '24h' / '7d' / 'all' (any `<number><s|m|h|d>`).

    Raises:
        InvalidParameter: an unknown window.
    """
    text = label.strip().lower()
    if text == "all":
        return Window("all", None, now)
    match = _WINDOW.match(text)
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)] if match else 0.0
    if not 0 < seconds <= MAX_WINDOW_S:
        raise InvalidParameter(
            f"Unknown window {label[:40]!r}: use 1h, 24h, 7d, all (or any <number><s|m|h|d> "
            "up to 3650d)",
            param="window",
        )
    return Window(text, seconds, now)


def iso(ts: float) -> str:
    """A Unix time as ISO 8601 UTC, to the second."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's
    default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """count, mean, p50/p90/p95/p99 and max of the values that are not None."""
    xs = sorted(v for v in values if v is not None)
    summary: dict[str, float | int | None] = {
        "count": len(xs),
        "mean": sum(xs) / len(xs) if xs else None,
    }
    for q in PERCENTILES:
        summary[f"p{q}"] = percentile(xs, q)
    summary["max"] = xs[-1] if xs else None
    return summary


def group_by(rows: Iterable[Row], key: Callable[[Row], str]) -> dict[str, list[Row]]:
    """Rows grouped by `key(row)`, groups in first-seen order."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


def by_time(rows: Iterable[Row], bucket_s: float) -> dict[float, list[Row]]:
    """Rows grouped by the start of their `bucket_s`-long time bucket (UTC aligned), sorted."""
    groups: dict[float, list[Row]] = {}
    for row in rows:
        groups.setdefault(math.floor(row["time"] / bucket_s) * bucket_s, []).append(row)
    return dict(sorted(groups.items()))


def overlap_s(segment: Row, window: Window) -> float:
    """Seconds of an uptime segment (`started_at`..`last_seen`) inside the window."""
    start = float(segment["started_at"])
    if window.since is not None:
        start = max(start, window.since)
    return max(0.0, min(float(segment["last_seen"]), window.until) - start)


def uptime_seconds(uptime: Iterable[Row], window: Window, model: str | None = None) -> float:
    """Seconds of server uptime inside the window (all models, or one)."""
    return sum(overlap_s(seg, window) for seg in uptime if model is None or seg["model"] == model)
