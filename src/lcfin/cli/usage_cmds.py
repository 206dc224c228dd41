"""`lcfin usage`: the usage ledger's performance, usage and costs as Rich tables, JSON or a PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from lcfin.cli.options import JsonOpt, err, out, print_json
from lcfin.errors import InvalidParameter, LcfinError

if TYPE_CHECKING:
    from lcfin.telemetry.analytics import AnalyticsQuery
    from lcfin.telemetry.ledger import UsageLedger

__all__ = ["register"]

_AUTO_BUCKETS = ((3 * 3600, 60), (12 * 3600, 600), (7 * 86400, 3600))  # span up to -> bucket


def _open(db: Path | None, url: str | None) -> UsageLedger:
    from lcfin import Settings
    from lcfin.telemetry.ledger import UsageLedger

    if db is not None and url is not None:
        raise InvalidParameter("give --db or --url, not both", param="--db")
    target = url or (str(db) if db is not None else Settings().usage_db_target())
    if target is None:
        raise LcfinError("The usage ledger is off (LCFIN_USAGE_DB=off)", hint="use --db or --url")
    if url is None and not Path(target).expanduser().is_file():
        raise LcfinError(
            f"No usage ledger at {target}",
            hint="`lcfin serve` writes one there; or point --db / LCFIN_USAGE_DB at yours",
        )
    return UsageLedger(target)


def _fixed_bucket(choice: str) -> float | None:
    """The --bucket length in seconds; None for auto.

    Raises:
        InvalidParameter: not auto nor a <number><s|m|h|d> length.
    """
    from lcfin.telemetry.stats import parse_window

    if choice == "auto":
        return None
    try:
        seconds = parse_window(choice).seconds
    except InvalidParameter:
        seconds = None
    if seconds is None:  # "all" is a window, not a bucket
        raise InvalidParameter(
            f"Unknown bucket {choice!r}: use auto, 1m, 10m, 1h, 1d (or any <number><s|m|h|d>)",
            param="bucket",
        )
    return seconds


def _bucket_s(fixed: float | None, rows: list[dict[str, Any]]) -> float:
    if fixed is not None:
        return fixed
    span = max((r["time"] for r in rows), default=0) - min((r["time"] for r in rows), default=0)
    return next((b for limit, b in _AUTO_BUCKETS if span <= limit), 86400)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:.4f}" if value >= 0.01 or value == 0 else f"${value:.2e}"


def _latency_table(perf: dict[str, Any]) -> Table:
    table = Table(title="Latency (s)", title_justify="left")
    for col in ("metric", "count", "mean", "p50", "p90", "p95", "p99", "max"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, key in (
        ("end-to-end", "latency_s"),
        ("time to first token", "time_to_first_token_s"),
        ("queue (estimated)", "queue_s"),
    ):
        s = perf[key]
        table.add_row(
            name, *(_fmt(s[k]) for k in ("count", "mean", "p50", "p90", "p95", "p99", "max"))
        )
    return table


def _group_table(title: str, groups: dict[str, dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("name", "requests", "errors", "prompt tok", "completion tok", "request cost"):
        table.add_column(col, justify="left" if col == "name" else "right", overflow="fold")
    for name, g in sorted(groups.items(), key=lambda kv: -kv[1]["requests"]):
        table.add_row(
            name,
            str(g["requests"]),
            str(g["errors"]),
            str(g["prompt_tokens"]),
            str(g["completion_tokens"]),
            _usd(g["cost_usd"]),
        )
    return table


def _time_table(buckets: list[dict[str, Any]], last: int = 24) -> Table:
    table = Table(title=f"Per time bucket (last {last})", title_justify="left")
    for col in ("start (UTC)", "requests", "completion tokens", "p50 (s)", "p95 (s)"):
        table.add_column(col, justify="left" if col.startswith("start") else "right")
    for b in buckets[-last:]:
        table.add_row(
            b["start_iso"],
            str(b["requests"]),
            str(b["completion_tokens"]),
            _fmt(b["latency_p50_s"]),
            _fmt(b["latency_p95_s"]),
        )
    return table


def _summary(perf: dict[str, Any], costs: dict[str, Any]) -> str:
    tput = perf["throughput"]
    return (
        f"{perf['requests']} requests, {perf['errors']} errors "
        f"({_fmt((perf['error_rate'] or 0) * 100, 1)}%), "
        f"{_fmt(tput['completion_tokens_per_s'], 1)} completion tok/s over the active span; "
        f"cost {_usd(costs['total_cost_usd'])} (hardware {_usd(costs['hardware_cost_usd'])}, "
        f"tokens {_usd(costs['token_cost_usd'])}), "
        f"{_usd(costs['cost_per_1k_tokens_usd'])} per 1K tokens, "
        f"utilisation {_fmt((costs['utilisation'] or 0) * 100, 1)}%"
    )


def _render(reports: dict[str, dict[str, Any]]) -> None:
    perf, use, costs = reports["performance"], reports["usage"], reports["costs"]
    out.print(f"[bold]lcfin usage[/] ({perf['query']['window']}): {_summary(perf, costs)}")
    out.print(_latency_table(perf))
    out.print(_group_table("By model", use["by_model"]))
    out.print(_group_table("By endpoint", use["by_endpoint"]))
    out.print(_group_table("By API key id", use["by_key"]))
    out.print(_time_table(use.get("by_hour") or use.get("by_bucket") or []))
    for note in costs["recommendations"]:
        out.print(f"[yellow]recommendation:[/] {note}")


def usage(
    db: Annotated[
        Path | None, typer.Option("--db", help="SQLite ledger [default: LCFIN_USAGE_DB].")
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="SQLAlchemy URL of a shared ledger.")
    ] = None,
    window: Annotated[str, typer.Option(help="1h, 24h, 7d or all.")] = "24h",
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    key: Annotated[str | None, typer.Option(help="Only this API key id (not a key).")] = None,
    bucket: Annotated[str, typer.Option(help="Time bucket: auto, 1m, 10m, 1h, 1d.")] = "auto",
    plot: Annotated[Path | None, typer.Option(help="Write a PNG chart (lcfin[plot]).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Performance, usage and costs from the usage ledger (what /analytics/* serve)."""
    from lcfin.telemetry.analytics import (
        AnalyticsQuery,
        costs_report,
        performance_report,
        usage_report,
    )

    query = AnalyticsQuery.parse(window, model, key)
    fixed = _fixed_bucket(bucket)  # bad options fail before the ledger is opened
    rows, uptime = _read(db, url, query)
    bucket_s = _bucket_s(fixed, rows)
    reports = {
        "performance": performance_report(rows, uptime, query),
        "usage": usage_report(rows, query, bucket_s),
        "costs": costs_report(rows, uptime, query),
    }
    if plot is not None:
        _plot(reports, plot, bucket_s)
    if json_out:
        print_json(reports)
    else:
        _render(reports)


def _read(
    db: Path | None, url: str | None, query: AnalyticsQuery
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ledger's requests and uptime for `query`."""
    ledger = _open(db, url)
    try:
        return ledger.requests(query.ledger_query()), ledger.uptime(query.ledger_query())
    finally:
        ledger.close()


def _plot(reports: dict[str, dict[str, Any]], path: Path, bucket_s: float) -> None:
    from lcfin.telemetry.plot import write_usage_plot

    perf, use, costs = reports["performance"], reports["usage"], reports["costs"]
    buckets = use.get("by_hour") or use.get("by_bucket") or []
    title = f"lcfin usage, last {perf['query']['window']}"
    totals, latency = use["totals"], perf["latency_s"]
    subtitle = (
        f"{totals['requests']:,} requests, {totals['completion_tokens']:,} completion tokens, "
        f"latency p50 {_fmt(latency['p50'], 2)} s / p95 {_fmt(latency['p95'], 2)} s, "
        f"cost {_usd(costs['total_cost_usd'])} ({_usd(costs['cost_per_1k_tokens_usd'])} per 1K "
        f"tokens)"
    )
    write_usage_plot(buckets, path, title=title, bucket_s=bucket_s, subtitle=subtitle)
    err.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command()(usage)
