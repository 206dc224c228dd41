"""`lcfin bench`: load-test any OpenAI-compatible server and report latency and throughput."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from lcfin.cli.options import JsonOpt, err, out, print_json

if TYPE_CHECKING:
    from lcfin.loadgen import BenchReport

__all__ = ["register"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def bench(
    url: Annotated[str, typer.Option(help="Server root or /v1 URL.")] = "http://127.0.0.1:8000",
    model: Annotated[str | None, typer.Option(help="Model id [default: the served one].")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once.")] = 16,
    requests: Annotated[int, typer.Option(min=1, help="Requests to send.")] = 32,
    prompt_tokens: Annotated[
        int, typer.Option(min=1, help="Prompt length, at one token per word (tokenizers vary).")
    ] = 32,
    max_tokens: Annotated[int, typer.Option(min=1, help="max_tokens of each request.")] = 64,
    stream: Annotated[bool, typer.Option(help="Stream (needed for TTFT and ITL).")] = True,
    ignore_eos: Annotated[bool, typer.Option(help="Send ignore_eos (lcfin, vLLM).")] = False,
    warmup: Annotated[int, typer.Option(min=0, help="Unmeasured requests sent first.")] = 0,
    timeout: Annotated[float, typer.Option(min=1, help="Bound on the whole run (s).")] = 600,
    api_key: Annotated[
        str | None, typer.Option(envvar="LCFIN_API_KEY", help="Bearer key.", show_default=False)
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Send REQUESTS chat completions, CONCURRENCY at a time, and report the latencies."""
    import asyncio

    from lcfin.loadgen import BenchConfig, run_bench

    cfg = BenchConfig(
        url=url,
        model=model,
        requests=requests,
        concurrency=concurrency,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        stream=stream,
        ignore_eos=ignore_eos,
        warmup=warmup,
        timeout_s=timeout,
        api_key=api_key,
    )
    with err.status(f"Benchmarking {url} ({requests} requests, {concurrency} at a time) ..."):
        report = asyncio.run(run_bench(cfg))
    if json_out:
        print_json(report.to_dict())
    else:
        _print_report(report, url)
    if report.errors:
        raise typer.Exit(1)


def _print_report(report: BenchReport, url: str) -> None:
    """The latency table, the throughput line, and what went wrong."""
    table = Table(title=f"lcfin bench: {url}")
    for col in ("metric", "mean", "p50", "p95", "p99"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for name, stats in (
        ("time to first token (ms)", report.ttft_s),
        ("inter-token latency (ms)", report.itl_s),
        ("end-to-end latency (ms)", report.latency_s),
    ):
        table.add_row(name, *(_ms(stats[k]) for k in ("mean", "p50", "p95", "p99")))
    out.print(table)
    out.print(
        f"{report.completed} ok, {report.errors} errors in {report.wall_s:.2f}s: "
        f"{report.requests_per_s:.2f} req/s, {report.output_tokens_per_s:.1f} output tok/s"
    )
    if report.prompt_echoes:
        out.print(
            f"{report.prompt_echoes} streams began by repeating the prompt: "
            "that chunk is not counted as the first token"
        )
    for sample in report.error_samples:
        err.print(f"[red]error:[/] {sample}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command()(bench)
