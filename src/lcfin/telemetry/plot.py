"""`lcfin usage --plot`: requests, tokens and latency percentiles per time bucket, as a PNG.

matplotlib is an optional extra (`pip install 'lcfin[plot]'`), imported only here and only when
a chart is asked for; the figure is drawn without pyplot (no global state, no display needed).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lcfin.errors import LcfinError

__all__ = ["draw_usage", "with_gaps", "write_usage_plot"]

Bucket = dict[str, Any]
_BLUE, _ORANGE, _GREEN, _RED, _GREY = "#3366aa", "#ee8833", "#339955", "#cc4444", "#888888"
_UNITS = {60: "minute", 600: "10 minutes", 3600: "hour", 86400: "day"}


def _figure() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise LcfinError(
            "--plot needs matplotlib, which is not installed",
            hint="pip install 'lcfin[plot]'",
        ) from None
    return Figure(figsize=(10, 6.6), dpi=110, layout="constrained")


def _times(buckets: list[Bucket], offset_s: float = 0.0) -> list[datetime]:
    return [datetime.fromtimestamp(b["start"] + offset_s, tz=timezone.utc) for b in buckets]


def _legend(ax: Any, handles: Any = None) -> None:
    """A legend in one row above the axes, where it hides no data."""
    kw = {"handles": handles} if handles is not None else {}
    ax.legend(
        **kw,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncols=4,
        fontsize=8,
        frameon=False,
        borderaxespad=0.2,
    )


def _traffic(ax: Any, buckets: list[Bucket], bucket_s: float) -> None:
    ax.bar(
        _times(buckets),
        [b["requests"] for b in buckets],
        width=bucket_s / 86400 * 0.85,
        color=_BLUE,
        label="requests",
        align="edge",
    )
    ax.set_ylabel("requests", color=_BLUE)
    times = _times(buckets, bucket_s / 2)  # points at the middle of their bucket
    tokens = ax.twinx()
    tokens.plot(
        times,
        [b["completion_tokens"] for b in buckets],
        color=_ORANGE,
        marker="o",
        markersize=3,
        label="completion tokens",
    )
    tokens.plot(
        times,
        [b["prompt_tokens"] for b in buckets],
        color=_GREY,
        linestyle="--",
        label="prompt tokens",
    )
    tokens.set_ylabel("tokens", color=_ORANGE)
    tokens.set_ylim(bottom=0)
    _legend(ax, ax.get_legend_handles_labels()[0] + tokens.get_legend_handles_labels()[0])


def _latency(ax: Any, buckets: list[Bucket], bucket_s: float) -> None:
    times = _times(buckets, bucket_s / 2)
    for key, label, color, style in (
        ("latency_p50_s", "latency p50", _GREEN, "-"),
        ("latency_p95_s", "latency p95", _RED, "-"),
        ("ttft_p50_s", "time to first token p50", _GREEN, ":"),
        ("ttft_p95_s", "time to first token p95", _RED, ":"),
    ):
        values = [b[key] if b[key] is not None else float("nan") for b in buckets]
        ax.plot(times, values, color=color, linestyle=style, marker="o", markersize=3, label=label)
    ax.set_ylabel("seconds")
    ax.set_ylim(bottom=0)
    _legend(ax)


def _time_axis(ax: Any, bucket_s: float) -> None:
    from matplotlib.dates import DateFormatter

    pattern = "%H:%M" if bucket_s < 3600 else "%m-%d %H:%M" if bucket_s < 86400 else "%Y-%m-%d"
    formatter = DateFormatter(pattern, tz=timezone.utc)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(formatter)


def with_gaps(buckets: list[Bucket], bucket_s: float) -> list[Bucket]:
    """`buckets` with the empty ones in between: no requests, no tokens, no latency.

    The analytics list only buckets that had requests; drawn as they are, a line would join
    two busy minutes across an idle hour, as if traffic had gone on (see #17). Counts drop to
    0 there, and latency lines break (None is drawn as a gap).
    """
    if not buckets:
        return []
    by_start = {round(b["start"] / bucket_s): b for b in buckets}
    first, last = min(by_start), max(by_start)
    empty = {
        "requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "latency_p50_s": None,
        "latency_p95_s": None,
        "ttft_p50_s": None,
        "ttft_p95_s": None,
    }
    return [by_start.get(i, {**empty, "start": i * bucket_s}) for i in range(first, last + 1)]


def write_usage_plot(
    buckets: list[Bucket], path: Path, *, title: str, bucket_s: float, subtitle: str = ""
) -> Path:
    """Draw the per-bucket traffic (top) and latency percentiles (bottom) into a PNG at `path`.

    Buckets without requests are drawn as such (zero traffic, a gap in latency).

    Raises:
        LcfinError: matplotlib is not installed.
    """
    fig = draw_usage(buckets, title=title, bucket_s=bucket_s, subtitle=subtitle)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def draw_usage(buckets: list[Bucket], *, title: str, bucket_s: float, subtitle: str = "") -> Any:
    """The figure `write_usage_plot` saves (a matplotlib Figure)."""
    buckets = with_gaps(buckets, bucket_s)
    fig = _figure()
    top, bottom = fig.subplots(2, 1, sharex=True)
    unit = _UNITS.get(int(bucket_s), f"{bucket_s:g} s")
    heading = f"{title}, per {unit} (UTC)" + (f"\n{subtitle}" if subtitle else "")
    fig.suptitle(heading.replace("$", r"\$"), x=0.01, ha="left", fontsize=11)  # not mathtext
    if buckets:
        _traffic(top, buckets, bucket_s)
        _latency(bottom, buckets, bucket_s)
        _time_axis(bottom, bucket_s)
    else:
        top.text(0.5, 0.5, "no requests in this window", ha="center", transform=top.transAxes)
    for ax in (top, bottom):
        ax.grid(True, axis="y", alpha=0.3)
    bottom.set_xlabel("time (UTC)")
    return fig
