"""Plain recommendations computed from the ledger: each rule is a threshold on the data.

- low utilisation (busy < 25% of >= 1 h uptime): a smaller or cheaper profile, fewer replicas;
- long queues (p95 queue > 1 s, or > 25% of p95 latency and > 0.25 s): a larger profile (more
  KV cache, more requests in the batch) or more replicas;
- many errors (> 5% of >= 20 requests): the most common error code, to look at first;
- a model loaded >= 10 min in the window that served nothing: unload it or switch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lcfin.telemetry.stats import percentile, uptime_seconds

if TYPE_CHECKING:
    from lcfin.telemetry.stats import Window

__all__ = ["recommendations"]

Row = dict[str, Any]
LOW_UTILISATION = 0.25
MIN_UPTIME_S = 3600.0
QUEUE_P95_S = 1.0
QUEUE_SHARE = 0.25
ERROR_RATE = 0.05
MIN_REQUESTS = 20
UNUSED_MODEL_S = 600.0


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{math.ceil(seconds / 60)} min"


def _utilisation(rows: list[Row], uptime: list[Row], window: Window) -> str | None:
    up = uptime_seconds(uptime, window)
    busy = sum(r["gpu_seconds"] for r in rows)
    if up < MIN_UPTIME_S or busy / up >= LOW_UTILISATION:
        return None
    return (
        f"The engine was busy {busy / up:.0%} of its {_duration(up)} uptime: a smaller or "
        "cheaper profile, fewer replicas, or stopping the server when idle would cost less."
    )


def _queueing(rows: list[Row]) -> str | None:
    queue = percentile([r["queue_s"] for r in rows if r["queue_s"] is not None], 95)
    latency = percentile([r["latency_s"] for r in rows], 95)
    if queue is None or latency is None:
        return None
    if queue > QUEUE_P95_S or (queue > QUEUE_SHARE * latency and queue > QUEUE_P95_S / 4):
        return (
            f"Requests waited {queue:.2f} s (p95) before being served, {queue / latency:.0%} of "
            "their p95 latency: a larger profile (more KV cache, more requests per batch) or "
            "more replicas would cut it."
        )
    return None


def _errors(rows: list[Row]) -> str | None:
    failed = [r for r in rows if r["status"] != "ok"]
    if len(rows) < MIN_REQUESTS or len(failed) / len(rows) <= ERROR_RATE:
        return None
    codes: dict[str, int] = {}
    for r in failed:
        codes[r["error_code"] or "unknown"] = codes.get(r["error_code"] or "unknown", 0) + 1
    top = max(codes, key=lambda c: codes[c])
    return (
        f"{len(failed) / len(rows):.0%} of requests failed, most with '{top}' "
        f"({codes[top]}): see the server log for these requests."
    )


def _unused_models(rows: list[Row], uptime: list[Row], window: Window) -> list[str]:
    used = {r["model"] for r in rows}
    loaded = sorted({seg["model"] for seg in uptime if seg["model"]} - used)
    notes = []
    for model in loaded:
        up = uptime_seconds(uptime, window, model)
        if up >= UNUSED_MODEL_S:
            notes.append(
                f"Model {model} was loaded for {_duration(up)} and served no request: "
                "unload it, or switch to a model that is used."
            )
    return notes


def recommendations(
    rows: list[Row], uptime: list[Row], window: Window, model: str | None = None
) -> list[str]:
    """What the data suggests, in plain words (empty when nothing stands out)."""
    if model is not None:
        uptime = [seg for seg in uptime if seg["model"] == model]
    notes = [_utilisation(rows, uptime, window), _queueing(rows), _errors(rows)]
    found = [note for note in notes if note is not None]
    return found + _unused_models(rows, uptime, window)
