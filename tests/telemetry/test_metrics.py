"""Prometheus metrics: vLLM-style names, parsed back with prometheus_client's own parser."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lcfin.telemetry import gpu
from lcfin.telemetry.metrics import Metrics, WeightedHistogram
from lcfin.telemetry.records import RequestRecord


def parse(metrics: Metrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {sorted labels: value}."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def record(**kw: Any) -> RequestRecord:
    base: dict[str, Any] = {
        "request_id": "r",
        "model": "m",
        "backend": "b",
        "profile": "cpu",
        "prompt_tokens": 7,
        "completion_tokens": 11,
        "finish_reason": "stop",
        "latency_s": 1.2,
        "time_to_first_token_s": 0.2,
        "queue_s": 0.05,
        "endpoint": "/v1/chat/completions",
        "hardware_cost_usd": 0.001,
    }
    return RequestRecord(**{**base, **kw})


def test_request_metrics_follow_vllm_names() -> None:
    metrics = Metrics()
    metrics.observe(record())
    metrics.observe(record(finish_reason="length"))
    metrics.observe(record(status="error", finish_reason="error", completion_tokens=0,
                           time_to_first_token_s=None))  # fmt: skip

    s = parse(metrics)
    chat = (("endpoint", "/v1/chat/completions"), ("model_name", "m"))
    assert s["lcfin:requests_total"][(*chat, ("status", "ok"))] == 2
    assert s["lcfin:requests_total"][(*chat, ("status", "error"))] == 1
    assert s["lcfin:request_success_total"][(("finished_reason", "stop"), ("model_name", "m"))] == 1
    assert s["lcfin:prompt_tokens_total"][(("model_name", "m"),)] == 21
    assert s["lcfin:generation_tokens_total"][(("model_name", "m"),)] == 22
    assert s["lcfin:request_cost_usd_total"][(("model_name", "m"),)] == pytest.approx(0.003)
    m = (("model_name", "m"),)
    assert s["lcfin:e2e_request_latency_seconds_count"][m] == 3
    assert s["lcfin:time_to_first_token_seconds_count"][m] == 2
    assert s["lcfin:request_queue_time_seconds_count"][m] == 3
    assert s["lcfin:request_time_per_output_token_seconds_sum"][m] == pytest.approx(0.2)
    # inter-token latency counts each of the 10 gaps of the two 11-token requests, at 0.1 s
    assert s["lcfin:inter_token_latency_seconds_count"][m] == 20
    assert s["lcfin:inter_token_latency_seconds_sum"][m] == pytest.approx(2.0)
    assert s["lcfin:inter_token_latency_seconds_bucket"][(("le", "0.1"), *m)] == 20
    assert s["lcfin:inter_token_latency_seconds_bucket"][(("le", "0.075"), *m)] == 0


def test_weighted_histogram_buckets_are_cumulative() -> None:
    hist = WeightedHistogram("x", "doc", [1.0, 2.0])
    hist.observe("m", 0.5, 3)
    hist.observe("m", 1.0, 1)  # le="1.0" includes the bound
    hist.observe("m", 5.0, 2)

    (family,) = hist.collect()
    values = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert values[("x_bucket", "1.0")] == 4
    assert values[("x_bucket", "2.0")] == 4
    assert values[("x_bucket", "+Inf")] == 6
    assert (values[("x_count", None)], values[("x_sum", None)]) == (6, 12.5)


def test_registries_are_per_instance() -> None:
    a, b = Metrics(), Metrics()
    a.observe(record())
    assert "lcfin:requests_total" in parse(a)
    assert parse(b).get("lcfin:requests_total", {}) == {}


@pytest.mark.any_backend
def test_serving_gauges_read_the_model(shared_llm: Any, backend: Any) -> None:
    metrics = Metrics(shared_llm)

    s = parse(metrics)

    model = (("model_name", shared_llm.model),)
    assert s["lcfin:num_requests_running"][model] == 0
    assert s["lcfin:num_requests_waiting"][model] == 0
    assert s["lcfin:model_load_time_seconds"][model] > 0
    assert "lcfin:engine_busy_seconds_total" in s
    if backend.kind == "vllm":  # read from vLLM's scheduler stats
        assert 0.0 <= s["lcfin:kv_cache_usage_perc"][model] <= 1.0
    else:
        assert "lcfin:kv_cache_usage_perc" not in s  # the Transformers backend does not know it
    assert s["lcfin:engine_up"][()] == 1.0
    assert s["lcfin:engine_deaths_total"][()] == 0.0
    assert not any(name.startswith("lcfin:gpu_") for name in s)  # no NVML here


class FakeNvml:
    """pynvml's surface that lcfin uses, for one 80 GB GPU half full and 40% busy."""

    class NVMLError(Exception):
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return type("Mem", (), {"used": 40 * 2**30, "total": 80 * 2**30})()

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return type("Util", (), {"gpu": 40})()

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA H100"


def test_gpu_gauges_come_from_nvml(monkeypatch: pytest.MonkeyPatch, shared_llm: Any) -> None:
    monkeypatch.setattr(gpu, "_nvml", FakeNvml())

    s = parse(Metrics(shared_llm))

    key = (("gpu", "0"), ("name", "NVIDIA H100"))
    assert s["lcfin:gpu_memory_used_bytes"][key] == 40 * 2**30
    assert s["lcfin:gpu_memory_total_bytes"][key] == 80 * 2**30
    assert s["lcfin:gpu_utilization_perc"][key] == pytest.approx(0.4)
