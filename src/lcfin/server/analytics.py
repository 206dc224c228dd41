"""/metrics (Prometheus) and /analytics/{performance,usage,costs} (JSON): thin routes.

The computations live in `lcfin.telemetry.analytics`; these handlers parse `?window=` (1h, 24h,
7d, all), `?model=`, `?key=` (an API key id, never a key) and, for usage, `?bucket=` (the time
series' step, e.g. 30s; default 1h: `by_hour`, else `by_bucket`), write the ledger's pending records
(so a report includes the requests just answered), and read it in a worker thread. The admin
key guards every route here when keys are configured (`security.ADMIN_PREFIXES`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lcfin.errors import InvalidParameter
from lcfin.telemetry.analytics import AnalyticsQuery, report
from lcfin.telemetry.metrics import CONTENT_TYPE
from lcfin.telemetry.stats import parse_window

if TYPE_CHECKING:
    from lcfin.telemetry.ledger import UsageLedger
    from lcfin.telemetry.service import Telemetry

__all__ = ["routes"]


async def metrics(request: Request) -> Response:
    """GET /metrics: Prometheus text format."""
    telemetry: Telemetry = request.app.state.telemetry
    body = await asyncio.to_thread(telemetry.metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE)


def _ledger(request: Request) -> UsageLedger:
    ledger: UsageLedger | None = request.app.state.telemetry.ledger
    if ledger is None:
        raise HTTPException(
            404, "Analytics need the usage ledger, which is off (LCFIN_USAGE_DB=off)"
        )
    return ledger


def _compute(
    ledger: UsageLedger, kind: str, query: AnalyticsQuery, bucket_s: float
) -> dict[str, Any]:
    ledger.flush(timeout=2.0)
    return report(ledger, kind, query, bucket_s)


def _bucket_s(value: str | None) -> float:
    """`?bucket=` in seconds: `<number><s|m|h|d>` of at least 1 s (default 1 hour)."""
    if value is None:
        return 3600.0
    try:
        seconds = parse_window(value).seconds
    except InvalidParameter:
        seconds = None
    if seconds is None or seconds < 1:
        raise InvalidParameter(
            f"Unknown bucket {value!r}: use a step of at least 1 s such as 30s, 5m or 1h",
            param="bucket",
        )
    return seconds


async def _report(request: Request, kind: str) -> Response:
    params = request.query_params
    query = AnalyticsQuery.parse(
        params.get("window", "24h"), params.get("model"), params.get("key")
    )
    bucket_s = _bucket_s(params.get("bucket"))
    body = await asyncio.to_thread(_compute, _ledger(request), kind, query, bucket_s)
    return JSONResponse(body)


async def performance(request: Request) -> Response:
    """GET /analytics/performance: latency percentiles, throughput, error rates."""
    return await _report(request, "performance")


async def usage(request: Request) -> Response:
    """GET /analytics/usage: requests and tokens by model, endpoint, key and hour."""
    return await _report(request, "usage")


async def costs(request: Request) -> Response:
    """GET /analytics/costs: token and hardware costs, cost per 1K tokens, recommendations."""
    return await _report(request, "costs")


def routes() -> list[Route]:
    """The metrics and analytics routes."""
    return [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/analytics/performance", performance, methods=["GET"]),
        Route("/analytics/usage", usage, methods=["GET"]),
        Route("/analytics/costs", costs, methods=["GET"]),
    ]
