"""Prometheus metrics named after vLLM's (`vllm:x` -> `lcfin:x`), so dashboards port over.

Each `Metrics` has its own `CollectorRegistry` (never the global one), so several apps in one
process do not clash. Request metrics are updated by `observe`, a `FinancialLLM.record_hooks`
hook; gauges (running / waiting requests, KV cache usage, model load time, GPU memory and
utilisation) are read from the `FinancialLLM` and NVML when Prometheus scrapes.

`lcfin:inter_token_latency_seconds` counts every gap between two tokens, like vLLM's; lcfin sees
a request's tokens only as a whole, so each of its n - 1 gaps is counted at the request's mean
gap. `lcfin:request_time_per_output_token_seconds` is that mean, once per request.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from lcfin.telemetry.gpu import gpu_samples

if TYPE_CHECKING:
    from lcfin import FinancialLLM
    from lcfin.telemetry.records import RequestRecord

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
P = "lcfin:"


def _bounds(text: str) -> tuple[float, ...]:
    """Histogram bucket bounds from a space-separated list."""
    return tuple(float(bound) for bound in text.split())


# vLLM's bucket bounds (vllm/v1/metrics/loggers.py), with finer low ends for small models.
TTFT_BUCKETS = _bounds(
    "0.001 0.005 0.01 0.02 0.04 0.06 0.08 0.1 0.25 0.5 0.75 1.0 2.5 5.0 7.5 10.0 "
    "20.0 40.0 80.0 160.0 640.0 2560.0"
)
ITL_BUCKETS = _bounds(
    "0.001 0.0025 0.005 0.01 0.025 0.05 0.075 0.1 0.15 0.2 0.3 0.4 0.5 0.75 1.0 2.5 "
    "5.0 7.5 10.0 20.0 40.0 80.0"
)
LATENCY_BUCKETS = _bounds(
    "0.01 0.05 0.1 0.3 0.5 0.8 1.0 1.5 2.0 2.5 5.0 10.0 15.0 20.0 30.0 40.0 50.0 "
    "60.0 120.0 240.0 480.0 960.0 1920.0 7680.0"
)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)


class WeightedHistogram:
    """A histogram whose `observe` can count one value several times (a collector)."""

    def __init__(self, name: str, doc: str, buckets: Sequence[float]) -> None:
        self.name, self.doc, self.bounds = name, doc, tuple(buckets)
        self._lock = threading.Lock()
        self._series: dict[str, tuple[list[int], list[float]]] = {}  # model -> counts, [sum]

    def observe(self, model: str, value: float, count: int) -> None:
        """Count `value` `count` times for `model`."""
        with self._lock:
            counts, total = self._series.setdefault(model, ([0] * (len(self.bounds) + 1), [0.0]))
            counts[bisect_left(self.bounds, value)] += count
            total[0] += value * count

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=["model_name"])
        with self._lock:
            for model, (counts, total) in self._series.items():
                cumulative, running = [], 0
                for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
                    running += n
                    cumulative.append((_bound(bound), float(running)))
                family.add_metric([model], cumulative, total[0])
        yield family


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


class ServingCollector:
    """Gauges read from the `FinancialLLM` and NVML at scrape time."""

    def __init__(self, llm: FinancialLLM) -> None:
        self.llm = llm

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        st = self.llm.status()
        labels = [st.model] if st.model else None
        yield from self._engine(labels)
        load = GaugeMetricFamily(
            f"{P}model_load_time_seconds",
            "Seconds the served model took to load.",
            labels=["model_name"],
        )
        if labels and st.load_time_s is not None:
            load.add_metric(labels, st.load_time_s)
        yield load
        busy = CounterMetricFamily(
            f"{P}engine_busy_seconds", "Seconds the engine had at least one request in flight."
        )
        busy.add_metric([], float(self.llm.stats()["busy_s"]))
        yield busy
        yield from _engine_health(st.model is not None, st.engine_deaths)
        yield from _gpu_metrics()

    def _engine(self, labels: list[str] | None) -> Iterator[Metric]:
        stats = self.llm.backend_stats()
        running = GaugeMetricFamily(
            f"{P}num_requests_running", "Requests in the running batch.", labels=["model_name"]
        )
        waiting = GaugeMetricFamily(
            f"{P}num_requests_waiting",
            "Requests waiting for a place in the batch.",
            labels=["model_name"],
        )
        kv = GaugeMetricFamily(
            f"{P}kv_cache_usage_perc",
            "KV cache usage, 0..1 (when the backend knows it).",
            labels=["model_name"],
        )
        if labels and stats is not None:
            running.add_metric(labels, stats.running)
            waiting.add_metric(labels, stats.waiting)
            if stats.kv_cache_usage is not None:
                kv.add_metric(labels, stats.kv_cache_usage)
        yield from (running, waiting, kv)


def _engine_health(serving: bool, deaths: int) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        f"{P}engine_up", "1 while a model serves; 0 while none does (loading, failed, engine dead)."
    )
    up.add_metric([], 1.0 if serving else 0.0)
    died = CounterMetricFamily(
        f"{P}engine_deaths", "Engines that died under a loaded model (restarted or not since)."
    )
    died.add_metric([], float(deaths))
    yield from (up, died)


def _gpu_metrics() -> Iterator[Metric]:
    samples = gpu_samples()
    if not samples:
        return
    names = ("gpu_memory_used_bytes", "gpu_memory_total_bytes", "gpu_utilization_perc")
    used, total, util = (GaugeMetricFamily(f"{P}{n}", n, labels=["gpu", "name"]) for n in names)
    for s in samples:
        key = [str(s.index), s.name]
        used.add_metric(key, s.memory_used_bytes)
        total.add_metric(key, s.memory_total_bytes)
        if s.utilization is not None:
            util.add_metric(key, s.utilization)
    yield from (used, total, util)


@dataclass(frozen=True)
class _ModelSeries:
    """One model's labelled children of the per-model metrics."""

    prompt_tokens: Any
    generation_tokens: Any
    cost: Any
    e2e: Any
    prompt_hist: Any
    gen_hist: Any
    ttft: Any
    queue: Any
    tpot: Any


class Metrics:
    """lcfin's Prometheus metrics in a registry of their own.

    Args:
        llm: adds the gauges read from it at scrape time (running / waiting, load time, ...).
    """

    def __init__(self, llm: FinancialLLM | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._counters(self.registry)
        self._histograms(self.registry)
        self.itl = WeightedHistogram(
            f"{P}inter_token_latency_seconds", "Time between two output tokens.", ITL_BUCKETS
        )
        self.registry.register(self.itl)
        if llm is not None:
            self.registry.register(ServingCollector(llm))
        self._by_model: dict[str, _ModelSeries] = {}

    def _counters(self, registry: CollectorRegistry) -> None:
        req = ["model_name", "endpoint", "status"]
        self.requests = Counter(f"{P}requests", "Finished requests.", req, registry=registry)
        self.success = Counter(
            f"{P}request_success",
            "Requests that finished without an error, by finish reason.",
            ["model_name", "finished_reason"],
            registry=registry,
        )
        self.prompt_tokens = Counter(
            f"{P}prompt_tokens", "Prompt tokens processed.", ["model_name"], registry=registry
        )
        self.generation_tokens = Counter(
            f"{P}generation_tokens", "Tokens generated.", ["model_name"], registry=registry
        )
        self.cost = Counter(
            f"{P}request_cost_usd",
            "Cost of the requests in USD (tokens + hardware share).",
            ["model_name"],
            registry=registry,
        )

    def _histograms(self, registry: CollectorRegistry) -> None:
        def hist(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(f"{P}{name}", doc, ["model_name"], buckets=buckets, registry=registry)

        self.ttft = hist("time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS)
        self.e2e = hist("e2e_request_latency_seconds", "End-to-end latency.", LATENCY_BUCKETS)
        self.queue = hist("request_queue_time_seconds", "Estimated queue time.", LATENCY_BUCKETS)
        self.tpot = hist(
            "request_time_per_output_token_seconds", "Mean time per output token.", ITL_BUCKETS
        )
        self.prompt_hist = hist("request_prompt_tokens", "Prompt tokens.", TOKEN_BUCKETS)
        self.gen_hist = hist("request_generation_tokens", "Generated tokens.", TOKEN_BUCKETS)

    def _series(self, model: str) -> _ModelSeries:
        series = self._by_model.get(model)
        if series is None:  # label lookups once per model, not per request
            per_model: list[Counter | Histogram] = [self.prompt_tokens, self.generation_tokens]
            per_model += [self.cost, self.e2e, self.prompt_hist, self.gen_hist, self.ttft]
            per_model += [self.queue, self.tpot]
            series = self._by_model[model] = _ModelSeries(*(m.labels(model) for m in per_model))
        return series

    def observe(self, record: RequestRecord) -> None:
        """Account for one finished request (the record hook)."""
        model = record.model
        self.requests.labels(model, record.endpoint, record.status).inc()
        if record.finish_reason == "rejected":  # refused before the engine: no tokens, no times
            return
        s = self._series(model)
        if record.status == "ok":
            self.success.labels(model, record.finish_reason).inc()
        s.prompt_tokens.inc(record.prompt_tokens)
        s.generation_tokens.inc(record.completion_tokens)
        s.cost.inc(record.cost_usd)
        s.e2e.observe(record.latency_s)
        s.prompt_hist.observe(record.prompt_tokens)
        s.gen_hist.observe(record.completion_tokens)
        if record.time_to_first_token_s is not None:
            s.ttft.observe(record.time_to_first_token_s)
        if record.queue_s is not None:
            s.queue.observe(record.queue_s)
        itl = record.inter_token_latency_s
        if itl is not None:
            s.tpot.observe(itl)
            self.itl.observe(model, itl, record.completion_tokens - 1)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
