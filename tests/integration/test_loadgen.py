"""lcfin's load generator (`lcfin bench`) against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from lcfin.loadgen import BenchConfig, bench_messages, percentile, run_bench
from tests.integration.conftest import LiveServer, run_uvicorn

pytestmark = pytest.mark.integration


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0


def test_bench_messages_are_one_user_turn_of_the_asked_length_and_differ_by_request() -> None:
    first, second = bench_messages(32, 0), bench_messages(32, 1)
    assert [m["role"] for m in first] == ["user"]
    assert len(first[0]["content"].split()) == 32 - 8 + 3  # "Request 0. Explain:" + 24 words
    assert first != second
    assert bench_messages(32, 0) == first  # the same request index gives the same prompt


@pytest.mark.any_backend
def test_streamed_run_against_lcfin_counts_every_token(live: LiveServer) -> None:
    cfg = BenchConfig(url=live.url, requests=4, concurrency=2, max_tokens=8, ignore_eos=True)

    report = asyncio.run(run_bench(cfg))

    assert (report.completed, report.errors) == (4, 0)
    assert report.output_tokens == 4 * 8  # from the usage chunk the server sends
    assert report.ttft_s["p50"] is not None and report.ttft_s["p50"] > 0
    assert report.latency_s["p50"] is not None
    assert report.latency_s["p50"] >= report.ttft_s["p50"]
    assert report.prompt_echoes == 0


@pytest.mark.any_backend
def test_non_streamed_run_and_errors_are_reported(live: LiveServer) -> None:
    ok = asyncio.run(run_bench(BenchConfig(url=live.url, requests=2, stream=False, max_tokens=4)))
    bad = asyncio.run(run_bench(BenchConfig(url=live.url, model="no-such-model", requests=2)))

    assert (ok.completed, ok.errors) == (2, 0)
    assert (bad.completed, bad.errors) == (0, 2)
    assert "HTTP 404" in bad.error_samples[0]


def _echoing_server() -> Starlette:
    """A peer that streams the prompt back before generating, as `transformers serve` does
    with some models; it stands in for that external server."""

    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        prompt = body["messages"][-1]["content"]

        async def events() -> AsyncIterator[str]:
            def chunk(text: str) -> str:
                return f"data: {json.dumps({'choices': [{'delta': {'content': text}}]})}\n\n"

            yield chunk(f"<|user|>{prompt}<|assistant|>")
            for word in ("one", " two", " three"):
                await asyncio.sleep(0.02)
                yield chunk(word)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"data": [{"id": "echo"}]})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models),
        ]
    )


def test_a_prompt_streamed_back_is_not_the_first_token() -> None:
    with run_uvicorn(_echoing_server()) as url:
        report = asyncio.run(run_bench(BenchConfig(url=url, requests=3, concurrency=3)))

    assert (report.completed, report.prompt_echoes) == (3, 3)
    assert report.output_tokens == 3 * 3  # one per generated chunk, the echo left out
    assert report.ttft_s["p50"] is not None and report.ttft_s["p50"] >= 0.02  # not the echo
