"""The official `openai` client against a real uvicorn server on a tiny model.

Text is compared with what the same model answers through the library (`llm.chat`), never
written down. Latencies are measured and logged (run with `--log-cli-level=INFO` to see them),
never asserted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.integration.conftest import API_KEY, LiveServer
from tests.server.support import PROMPT

pytestmark = [pytest.mark.any_backend, pytest.mark.integration]

log = logging.getLogger(__name__)
N = 12  # completion tokens of the greedy reference runs
MESSAGES = [{"role": "user", "content": PROMPT}]


def greedy(**kw: Any) -> dict[str, Any]:
    return {"max_tokens": N, "temperature": 0.0, **kw}


@pytest.fixture(scope="module")
def reference(live: LiveServer) -> dict[str, Any]:
    """The library's own greedy answers, to compare the wire with."""
    chat = live.llm.chat(MESSAGES, **greedy())
    completion = live.llm.complete(PROMPT, **greedy(max_tokens=6))
    assert chat.finish_reason == "length", "the tiny model hit EOS early"
    return {"chat": chat, "completion": completion}


# -- the happy paths -------------------------------------------------------------------------


def test_sync_chat(client: OpenAI, live: LiveServer, reference):
    completion = client.chat.completions.create(model=live.model, messages=MESSAGES, **greedy())

    choice = completion.choices[0]
    assert completion.object == "chat.completion"
    assert completion.model == live.model
    assert choice.message.role == "assistant"
    assert choice.message.content == reference["chat"].text
    assert choice.finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == N
    assert completion.usage.prompt_tokens == reference["chat"].usage.prompt_tokens


@pytest.mark.asyncio
async def test_async_chat(aclient: AsyncOpenAI, live: LiveServer, reference):
    completion = await aclient.chat.completions.create(
        model=live.model, messages=MESSAGES, **greedy()
    )

    assert completion.choices[0].message.content == reference["chat"].text
    assert completion.choices[0].finish_reason == "length"


@pytest.mark.asyncio
async def test_streaming_chat_equals_the_non_streamed_text(
    aclient: AsyncOpenAI, live: LiveServer, reference
):
    stream = await aclient.chat.completions.create(
        model=live.model,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        **greedy(),
    )
    chunks = [chunk async for chunk in stream]

    deltas = [c.choices[0].delta for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == reference["chat"].text
    assert finishes[-1] == "length"
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == N


def test_sync_streaming_chat(client: OpenAI, live: LiveServer, reference):
    with client.chat.completions.create(
        model=live.model, messages=MESSAGES, stream=True, **greedy()
    ) as stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert text == reference["chat"].text


def test_completions(client: OpenAI, live: LiveServer, reference):
    completion = client.completions.create(model=live.model, prompt=PROMPT, **greedy(max_tokens=6))

    assert completion.object == "text_completion"
    assert completion.choices[0].text == reference["completion"].text
    assert completion.usage is not None
    assert completion.usage.completion_tokens == reference["completion"].usage.completion_tokens


def test_models_list(client: OpenAI, live: LiveServer):
    models = list(client.models.list())

    assert models[0].id == live.model
    assert models[0].object == "model"
    assert (models[0].model_extra or {}).get("loaded") is True
    assert "demo" in {m.id for m in models}


# -- errors arrive as the SDK's classes ------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"n": 9}, "n"),
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"response_format": {"type": "xml"}}, "response_format"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_parameters_raise_bad_request(client: OpenAI, live: LiveServer, params, param, stream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=live.model, messages=MESSAGES, max_tokens=2, stream=stream, **params
        )

    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"


def test_too_long_a_prompt_raises_bad_request(client: OpenAI, live: LiveServer):
    huge = [{"role": "user", "content": PROMPT * 100}]

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=live.model, messages=huge, max_tokens=2)

    assert caught.value.code == "context_length_exceeded"


def test_unknown_model_raises_not_found(client: OpenAI, live: LiveServer):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)

    assert caught.value.code == "model_not_found"
    assert live.model in caught.value.message


@pytest.mark.parametrize("key", ["sk-not-the-key", API_KEY + "x"])
def test_wrong_key_raises_authentication_error(live_keyed: LiveServer, key):
    with (
        OpenAI(base_url=live_keyed.base_url, api_key=key, max_retries=0) as wrong,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        wrong.models.list()

    assert caught.value.status_code == 401
    assert key not in str(caught.value.body)


def test_right_key_works_on_the_keyed_server(live_keyed: LiveServer):
    with OpenAI(base_url=live_keyed.base_url, api_key=API_KEY, max_retries=0) as right:
        completion = right.chat.completions.create(
            model=live_keyed.model, messages=MESSAGES, max_tokens=2
        )

    assert completion.usage is not None
    assert completion.usage.completion_tokens <= 2


def test_admin_route_refuses_an_api_key(live_keyed: LiveServer):
    params = {"model_name": "demo"}
    with (
        OpenAI(base_url=live_keyed.url, api_key=API_KEY, max_retries=0) as right,
        pytest.raises(openai.PermissionDeniedError) as caught,
    ):
        right.post("/load-model", cast_to=httpx.Response, options={"params": params})

    assert caught.value.code == "insufficient_permissions"


# -- request ids -----------------------------------------------------------------------------


def test_request_id_round_trips(client: OpenAI, live: LiveServer):
    raw = client.chat.completions.with_raw_response.create(
        model=live.model,
        messages=MESSAGES,
        max_tokens=2,
        extra_headers={"X-Request-ID": "itest-trace-123"},
    )
    generated = client.models.with_raw_response.list()

    assert raw.headers["x-request-id"] == "itest-trace-123"
    assert raw.parse().choices[0].message.role == "assistant"
    assert generated.headers["x-request-id"]
    assert generated.headers["x-request-id"] != "itest-trace-123"


# -- many clients at once --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_50_concurrent_streams_are_well_formed(aclient: AsyncOpenAI, live: LiveServer):
    async def one(i: int) -> tuple[str, str | None, int]:
        stream = await aclient.chat.completions.create(
            model=live.model,
            messages=[{"role": "user", "content": f"{PROMPT} ({i})"}],
            max_tokens=8,
            temperature=0.8,
            seed=i,
            stream=True,
            stream_options={"include_usage": True},
        )
        role, text, finishes, usage = None, [], [], None
        async for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                assert choice.index == 0
                role = role or choice.delta.role
                text.append(choice.delta.content or "")
                finishes.append(choice.finish_reason)
        assert role == "assistant"
        assert finishes[-1] in {"stop", "length"}
        assert all(f is None for f in finishes[:-1])
        assert usage is not None
        return "".join(text), finishes[-1], usage.completion_tokens

    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(50)))
    elapsed = time.perf_counter() - started

    assert len(results) == 50
    for _, finish, tokens in results:
        assert tokens == 8 if finish == "length" else 1 <= tokens <= 8
    log.info("50 concurrent streams of 8 tokens: %.2f s", elapsed)


# -- latency (measured, logged, not asserted) ------------------------------------------------


@pytest.mark.asyncio
async def test_time_to_first_byte_and_round_trip(live: LiveServer):
    body = {"model": live.model, "messages": MESSAGES, "max_tokens": 8, "temperature": 0.0}
    ttfb, round_trip = [], []
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
        await http.post("/v1/chat/completions", json=body)  # warm the connection and model
        for _ in range(5):
            started = time.perf_counter()
            async with http.stream(
                "POST", "/v1/chat/completions", json={**body, "stream": True}
            ) as r:
                assert r.status_code == 200
                body_bytes = r.aiter_raw()
                await anext(body_bytes)
                ttfb.append(time.perf_counter() - started)
                async for _ in body_bytes:
                    pass
            started = time.perf_counter()
            r = await http.post("/v1/chat/completions", json=body)
            round_trip.append(time.perf_counter() - started)
            assert r.status_code == 200

    ttfb.sort()
    round_trip.sort()
    log.info(
        "tiny llama on %s: time to first byte median %.1f ms (min %.1f), "
        "non-streaming round trip (8 tokens) median %.1f ms (min %.1f)",
        live.llm.status().backend,
        1000 * ttfb[2], 1000 * ttfb[0], 1000 * round_trip[2], 1000 * round_trip[0],
    )  # fmt: skip


# -- a client that leaves ---------------------------------------------------------------------

LONG = 200  # tokens; the prompt (18 tokens) plus this fits the tiny models' 256-token context


@pytest.fixture(scope="module")
def long_params(live: LiveServer) -> dict[str, Any]:
    """Sampling parameters whose answer runs the full LONG tokens (no early EOS).

    The tiny model's greedy answer ends early, so a seed is searched whose sampled answer
    does not; seeded sampling is reproducible, so the server's answer runs as long.
    """
    for seed in range(50):
        params = {"max_tokens": LONG, "temperature": 1.0, "seed": seed}
        if live.llm.chat(MESSAGES, **params).finish_reason == "length":
            return params
    pytest.fail(f"no seed in 0..49 gives a {LONG}-token answer")


async def _poll(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_disconnect_aborts_the_generation(live: LiveServer, long_params):
    body = {"model": live.model, "messages": MESSAGES, "stream": True, **long_params}
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    stream_id = json.loads(line[len("data: ") :])["id"]
                    break
        # The response is closed after its first chunk: the server must stop generating.
        after = await http.post(
            "/v1/chat/completions",
            json={"model": live.model, "messages": MESSAGES, "max_tokens": 2},
        )
        assert after.status_code == 200

    def aborted() -> Any:
        return next(
            (
                rec
                for rec in live.llm.recent_requests()
                if rec.request_id == stream_id and rec.finish_reason == "abort"
            ),
            None,
        )

    record = await _poll(aborted)
    assert record.completion_tokens < LONG
    assert record.status == "ok"
    await _poll(lambda: _idle(live))  # the engine's batch slot is free again


def _idle(live: LiveServer) -> bool:
    stats = live.llm.backend_stats()
    return stats is not None and stats.running + stats.waiting == 0


@pytest.mark.asyncio
async def test_two_requests_with_one_request_id_do_not_abort_each_other(
    live: LiveServer, long_params
):
    # Issue 15: the client's X-Request-ID was the engine's request id, and vLLM's abort(id)
    # ends every request with that id: the client that left took the other one down.
    body = {"model": live.model, "messages": MESSAGES, "stream": True, **long_params}
    same = {"X-Request-ID": "one-id-for-two"}
    url = "/v1/chat/completions"
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=60) as http,
        http.stream("POST", url, json=body, headers=same) as kept,
    ):
        lines = kept.aiter_lines()
        assert (await anext(lines)).startswith("data: {")
        async with http.stream("POST", url, json=body, headers=same) as left:
            assert (await anext(left.aiter_lines())).startswith("data: {")
        # `left` is closed after its first chunk: that request is aborted, not `kept`
        events = [line[6:] async for line in lines if line.startswith("data: {")]
    finals = [json.loads(e)["choices"][0]["finish_reason"] for e in events]
    assert finals[-1] == "length"  # the whole answer, not "abort"
    await _poll(lambda: _idle(live))


@pytest.mark.asyncio
async def test_disconnect_aborts_a_non_streaming_request(live: LiveServer, long_params):
    # The shared server may still be finishing an earlier test's request: start from idle, so
    # that the in-flight count below can only be this request's.
    await _poll(lambda: live.llm.loaded.active == 0)  # type: ignore[union-attr]
    before = {rec.request_id for rec in live.llm.recent_requests()}
    body = {"model": live.model, "messages": MESSAGES, **long_params}
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
        pending = asyncio.create_task(http.post("/v1/chat/completions", json=body))

        # Wait until the engine is generating it (in flight counts from admission, before the
        # prompt is rendered: a client gone then leaves no generation to abort).
        await _poll(lambda: live.llm.loaded.backend.stats().running > 0)  # type: ignore[union-attr]
        pending.cancel()  # closes the connection mid-request
        with pytest.raises(asyncio.CancelledError):
            await pending

    def aborted() -> Any:
        return next(
            (
                rec
                for rec in live.llm.recent_requests()
                if rec.request_id not in before and rec.finish_reason == "abort"
            ),
            None,
        )

    record = await _poll(aborted)
    assert record.completion_tokens < LONG
    await _poll(lambda: _idle(live))  # the engine's batch slot is free again


# -- switching while requests run -------------------------------------------------------------


@pytest.mark.asyncio
async def test_switching_models_under_load(make_live, tiny_models, long_params):
    server = make_live(local_models_root=tiny_models["qwen3"].parent)
    models = [server.model, str(tiny_models["qwen3"])]
    outcomes: list[tuple[str, int]] = []
    overlapping = 0  # in-flight answers still running when a switch started

    async def ask(http: httpx.AsyncClient, model: str, *, delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        r = await http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": MESSAGES, "max_tokens": 6},
        )
        if r.status_code != 200:
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) > 0
            assert r.json()["error"]["code"] == "model_loading"
        outcomes.append((model, r.status_code))

    async def in_flight(http: httpx.AsyncClient, model: str, started: asyncio.Event) -> None:
        # Long answers (found on the shared llama; qwen3 answers as it may) span the switch.
        body = {"model": model, "messages": MESSAGES, "stream": True, **long_params}
        async with http.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            started.set()
            events = [line async for line in r.aiter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert all('"error"' not in e for e in events)  # the old model finished the answer
        outcomes.append((model, r.status_code))

    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        for old, new in [(models[0], models[1]), (models[1], models[0])]:
            started = [asyncio.Event() for _ in range(3)]
            running = [asyncio.create_task(in_flight(http, old, e)) for e in started]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 30)

            r = await http.post("/load-model", params={"model_name": new})
            assert r.status_code == 202, r.text
            overlapping += sum(not task.done() for task in running)
            await asyncio.gather(*(ask(http, new, delay=0.01 * i) for i in range(10)), *running)

            await _poll(  # a load: seconds on Transformers, a minute for a vLLM engine on CPU
                lambda new=new: server.llm.model == new and server.llm.status().state == "ready",
                timeout=300,
            )
            await ask(http, new)
            assert outcomes[-1] == (new, 200)

    codes = [code for _, code in outcomes]
    assert set(codes) <= {200, 503}
    log.info(
        "switching under load: %d ok, %d 503; %d of 6 long answers spanned a switch start",
        codes.count(200), codes.count(503), overlapping,
    )  # fmt: skip


# -- the plan beside what the engine reports -----------------------------------------------------


def test_lcfin_plan_shows_the_serving_engines_own_kv_cache(
    live: LiveServer, backend, monkeypatch: pytest.MonkeyPatch
):
    from typer.testing import CliRunner

    from lcfin.cli import app

    if backend.catalog is not None:
        monkeypatch.setenv("LCFIN_CATALOG", str(backend.catalog))
    args = ["plan", live.model, "--profile", backend.profile, "--url", live.url, "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    engine = shown["engine"]
    if backend.kind == "transformers":
        assert engine is None  # it reports no KV-cache figures of its own
        return
    assert engine["engine_tokens"] == pytest.approx(shown["kv_cache_tokens"], rel=0.05)
    assert engine["engine_max_concurrency"] == pytest.approx(shown["max_concurrency"], rel=0.05)
    table = CliRunner().invoke(app, args[:-1])
    assert "the engine's own" in table.stdout
