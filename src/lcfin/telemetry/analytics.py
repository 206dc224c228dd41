"""Analytics over the usage ledger: performance, usage and costs (what /analytics/* and
`lcfin usage` show). Pure functions of the ledger's rows, so they are tested on hand-made sets.

Definitions (docs/analytics.md explains them for readers):

- throughput: requests and completion tokens per second over the *active span*, from the first
  request's start to the last one's end within the window;
- error rate: requests with status 'error' / all requests (aborted requests are not errors);
  requests refused before generation (finish reason 'rejected': bad input, unknown model, full
  queue) count as errors with their code, but not in the latency percentiles;
- hardware cost: each server session's uptime in the window x its profile's hourly cost (from
  the `uptime` heartbeats), whether the engine was busy or idle; utilisation is the engines'
  busy time (the sum of the requests' `gpu_seconds`) / uptime;
- total cost: hardware cost + the token-priced part of the requests. Filtered by API key, the
  hardware part is the key's attributed share (`hardware_cost_usd` of its requests) instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lcfin.telemetry.advice import recommendations
from lcfin.telemetry.stats import (
    Window,
    by_time,
    group_by,
    iso,
    overlap_s,
    parse_window,
    summarize,
    uptime_seconds,
)

if TYPE_CHECKING:
    from lcfin.telemetry.ledger import LedgerQuery, UsageLedger

__all__ = [
    "AnalyticsQuery",
    "costs_report",
    "performance_report",
    "report",
    "time_buckets",
    "usage_report",
]

Row = dict[str, Any]
REPORTS = ("performance", "usage", "costs")


@dataclass(frozen=True)
class AnalyticsQuery:
    """A window ending now, optionally one model and one API key id."""

    window: Window
    model: str | None = None
    key: str | None = None

    @classmethod
    def parse(
        cls, window: str = "24h", model: str | None = None, key: str | None = None
    ) -> AnalyticsQuery:
        """From the query parameters / CLI options (raises InvalidParameter on a bad window)."""
        return cls(parse_window(window), model or None, key or None)

    def ledger_query(self) -> LedgerQuery:
        """The ledger filter for this query."""
        from lcfin.telemetry.ledger import LedgerQuery

        return LedgerQuery(self.window.since, self.window.until, self.model, self.key)

    def to_dict(self) -> dict[str, Any]:
        """The query as echoed in every report."""
        return {**self.window.to_dict(), "model": self.model, "key": self.key}


def _sum(rows: Iterable[Row], column: str) -> float:
    return sum(r[column] or 0 for r in rows)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _span(rows: list[Row]) -> float:
    if not rows:
        return 0.0
    end = max(float(r["time"] + r["latency_s"]) for r in rows)
    return end - min(float(r["time"]) for r in rows)


def _perf(rows: list[Row]) -> dict[str, Any]:
    n = len(rows)
    errors = [r for r in rows if r["status"] != "ok"]
    served = [r for r in rows if r["finish_reason"] != "rejected"]  # refused ones took no time
    span = _span(rows)
    codes = group_by(errors, lambda r: r["error_code"] or "unknown")
    return {
        "requests": n,
        "errors": len(errors),
        "error_rate": _ratio(len(errors), n),
        "error_codes": {code: len(rs) for code, rs in codes.items()},
        "aborted": sum(r["finish_reason"] == "abort" for r in rows),
        "latency_s": summarize(r["latency_s"] for r in served),
        "time_to_first_token_s": summarize(r["ttft_s"] for r in served),
        "queue_s": summarize(r["queue_s"] for r in served),
        "decode_tokens_per_s": summarize(r["decode_tokens_per_s"] for r in served),
        "throughput": {
            "span_s": span,
            "requests_per_s": _ratio(n, span),
            "completion_tokens_per_s": _ratio(_sum(rows, "completion_tokens"), span),
        },
    }


def performance_report(rows: list[Row], uptime: list[Row], query: AnalyticsQuery) -> dict[str, Any]:
    """Latency percentiles, throughput and error rates, overall and by model."""
    by_model = group_by(rows, lambda r: r["model"])
    return {
        "query": query.to_dict(),
        **_perf(rows),
        "by_model": {model: _perf(rs) for model, rs in by_model.items()},
        "recommendations": recommendations(rows, uptime, query.window, query.model),
    }


def _tokens(rows: list[Row]) -> dict[str, Any]:
    prompt, completion = int(_sum(rows, "prompt_tokens")), int(_sum(rows, "completion_tokens"))
    return {
        "requests": len(rows),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "errors": sum(r["status"] != "ok" for r in rows),
        "cost_usd": _sum(rows, "cost_usd"),
    }


def time_buckets(rows: list[Row], bucket_s: float) -> list[dict[str, Any]]:
    """Requests, tokens and latency percentiles per time bucket."""
    buckets = []
    for start, rs in by_time(rows, bucket_s).items():
        served = [r for r in rs if r["finish_reason"] != "rejected"]
        latency = summarize(r["latency_s"] for r in served)
        ttft = summarize(r["ttft_s"] for r in served)
        buckets.append(
            {
                "start": start,
                "start_iso": iso(start),
                **_tokens(rs),
                "latency_p50_s": latency["p50"],
                "latency_p95_s": latency["p95"],
                "ttft_p50_s": ttft["p50"],
                "ttft_p95_s": ttft["p95"],
            }
        )
    return buckets


def usage_report(rows: list[Row], query: AnalyticsQuery, bucket_s: float = 3600) -> dict[str, Any]:
    """Requests and tokens in total, by model, endpoint, API key id and hour."""

    def split(key: str) -> dict[str, Any]:
        return {k: _tokens(rs) for k, rs in group_by(rows, lambda r: r[key] or "none").items()}

    return {
        "query": query.to_dict(),
        "totals": _tokens(rows),
        "by_model": split("model"),
        "by_endpoint": split("endpoint"),
        "by_key": split("api_key_id"),
        "by_hour" if bucket_s == 3600 else "by_bucket": time_buckets(rows, bucket_s),
    }


def _uptime_cost(uptime: list[Row], window: Window, model: str | None) -> float:
    return sum(
        float(seg["hourly_cost_usd"]) * overlap_s(seg, window) / 3600.0
        for seg in uptime
        if model is None or seg["model"] == model
    )


def _costs(rows: list[Row], uptime: list[Row], window: Window, model: str | None) -> dict[str, Any]:
    up = uptime_seconds(uptime, window, model)
    busy = _sum(rows, "gpu_seconds")
    token_cost, attributed = _sum(rows, "token_cost_usd"), _sum(rows, "hardware_cost_usd")
    hardware = _uptime_cost(uptime, window, model) if up else attributed
    total = hardware + token_cost
    tokens = _sum(rows, "prompt_tokens") + _sum(rows, "completion_tokens")
    return {
        "requests": len(rows),
        "tokens": int(tokens),
        "token_cost_usd": token_cost,
        "attributed_hardware_cost_usd": attributed,
        "uptime_s": up,
        "busy_s": busy,
        "utilisation": _ratio(busy, up),
        "hardware_cost_usd": hardware,
        "idle_hardware_cost_usd": max(0.0, hardware - attributed) if up else 0.0,
        "total_cost_usd": total,
        "cost_per_1k_tokens_usd": _ratio(total * 1000, tokens),
        "cost_per_1k_completion_tokens_usd": _ratio(total * 1000, _sum(rows, "completion_tokens")),
    }


def costs_report(rows: list[Row], uptime: list[Row], query: AnalyticsQuery) -> dict[str, Any]:
    """Token and hardware costs, cost per 1K tokens, by model and key, and recommendations."""
    window = query.window
    overall = _costs(rows, [] if query.key else uptime, window, query.model)
    models = {r["model"] for r in rows} | {seg["model"] for seg in uptime if seg["model"]}
    if query.model:
        models &= {query.model}
    by_model_rows = group_by(rows, lambda r: r["model"])
    by_key = group_by(rows, lambda r: r["api_key_id"] or "none")
    return {
        "query": query.to_dict(),
        **overall,
        "by_model": {
            m: _costs(by_model_rows.get(m, []), [] if query.key else uptime, window, m)
            for m in sorted(models)
        },
        "by_key": {k: _costs(rs, [], window, None) for k, rs in by_key.items()},
        "recommendations": recommendations(rows, uptime, window, query.model),
    }


def report(
    ledger: UsageLedger, kind: str, query: AnalyticsQuery, bucket_s: float = 3600
) -> dict[str, Any]:
    """Read the ledger and build one report: 'performance', 'usage' or 'costs'."""
    rows = ledger.requests(query.ledger_query())
    if kind == "usage":
        return usage_report(rows, query, bucket_s)
    uptime = ledger.uptime(query.ledger_query())
    if kind == "performance":
        return performance_report(rows, uptime, query)
    if kind == "costs":
        return costs_report(rows, uptime, query)
    raise ValueError(f"unknown report {kind!r}; one of {', '.join(REPORTS)}")
