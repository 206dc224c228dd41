"""Backpressure (admission -> 429), the per-request timeout (-> 504), input limits (-> 400)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lcfin.engine.types import Completion, Delta
from tests.backends import BackendUnderTest
from tests.server.schemas import assert_valid
from tests.server.support import PROMPT, Serve, Served

pytestmark = pytest.mark.asyncio

SLOW = {"max_tokens": 200, "temperature": 1.0, "ignore_eos": True}  # tiny context: 256


async def hold(served: Served) -> AsyncIterator[Delta | Completion]:
    """A slow generation, started and kept open (its lease held) until closed."""
    events = served.llm.astream_events(PROMPT, **SLOW)
    assert isinstance(await events.__anext__(), Delta)
    return events


def assert_error(response: Any, status: int, code: str | None, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert_valid(response.json(), "ErrorResponse")
    error = response.json()["error"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param, error


@pytest.mark.any_backend
async def test_a_full_queue_answers_429_at_once_and_frees_up(
    serve: Serve, backend: BackendUnderTest, tmp_path: Path
) -> None:
    one_row = backend.catalog_with(tmp_path, max_num_seqs=1)  # 1 running + 1 waiting
    served = await serve(max_waiting=1, catalog=one_row)
    held = [await hold(served), await hold(served)]  # 1 running + 1 waiting = capacity
    try:
        started = time.monotonic()
        response = await served.chat(max_tokens=4)
        assert time.monotonic() - started < 2.0  # refused now, not after the queue drains
        assert_error(response, 429, "queue_full")
        assert response.json()["error"]["type"] == "rate_limit_error"
        assert response.headers["retry-after"] == "1"
        stream = await served.chat(max_tokens=4, stream=True)
        assert_error(stream, 429, "queue_full")  # before the first byte: a real status
    finally:
        for events in held:
            await events.aclose()  # closing a stream releases its place
    assert served.llm.loaded is not None
    assert served.llm.loaded.active == 0
    assert (await served.chat(max_tokens=4)).status_code == 200


def slow_down(served: Served, delay_s: float = 0.05) -> None:
    """Make the backend's token stream slow after its first delta (a test double at the edge:
    the real engine runs).

    The first delta passes at once. How many tokens it carries depends on how far the engine ran
    ahead of the event loop before the loop first read: on a busy machine, tens. Delaying it by
    its size put the first byte seconds late, after a 0.5 s request timeout, which then rightly
    answered 504 before the stream began (see #17). Later deltas wait `delay_s` per token.
    """
    current = served.llm.loaded
    assert current is not None
    backend, real = current.backend, current.backend.generate

    async def slow(request: Any) -> AsyncIterator[Delta]:
        events = real(request)
        first = True
        try:
            async for delta in events:
                if not first:  # per token: the backend merges a slow consumer's deltas
                    await asyncio.sleep(delay_s * max(delta.num_tokens, 1))
                first = False
                yield delta
        finally:
            await events.aclose()

    backend.generate = slow  # type: ignore[method-assign]


async def settled(served: Served) -> bool:
    """Whether the backend runs nothing, within 3 s."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        stats = served.llm.backend_stats()
        if stats is not None and stats.running + stats.waiting == 0:
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.any_backend
async def test_the_request_timeout_aborts_and_frees_the_slot(serve: Serve) -> None:
    served = await serve(request_timeout=0.5)
    slow_down(served)
    started = time.monotonic()
    response = await served.chat(**SLOW)
    assert time.monotonic() - started < 3
    assert_error(response, 504, "timeout")
    assert "LCFIN_REQUEST_TIMEOUT" in response.json()["error"]["message"]
    current = served.llm.loaded
    assert current is not None and current.active == 0
    assert await settled(served)
    assert (await served.chat(max_tokens=2)).status_code == 200


@pytest.mark.any_backend
async def test_a_streamed_timeout_ends_with_an_error_event(serve: Serve) -> None:
    served = await serve(request_timeout=0.5)
    slow_down(served)
    response = await served.chat(**SLOW, stream=True)
    assert response.status_code == 200
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "timeout"
    assert await settled(served)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "a\x00b"}]}, "messages[0].content"),
        (
            {
                "messages": [
                    {"role": "system", "content": "ok"},
                    {"role": "user", "content": "\x07"},
                ]
            },
            "messages[1].content",
        ),
        ({"messages": [{"role": "user", "content": "\ud800"}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x\x1b"}]}]},
            "messages[0].content",
        ),
        ({"stop": [str(i) for i in range(17)]}, "stop"),
        ({"max_tokens": 5000}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}] * 5}, "messages"),
    ],
)
async def test_bad_input_is_a_400_naming_the_parameter(
    serve: Serve, body: dict[str, Any], param: str
) -> None:
    served = await serve(max_messages=4)
    payload = {"model": served.model, "messages": [{"role": "user", "content": PROMPT}], **body}
    raw = json.dumps(payload)  # ASCII escapes: a lone surrogate travels as \\ud800
    response = await served.client.post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert_valid(response.json(), "ErrorResponse")
    assert response.json()["error"]["param"] == param


async def test_tabs_and_newlines_are_fine(server: Served) -> None:
    response = await server.chat(messages=[{"role": "user", "content": "a\tb\r\nc"}], max_tokens=2)
    assert response.status_code == 200, response.text


async def test_raw_bytes_that_are_not_utf8_are_a_400(server: Served) -> None:
    body = b'{"model": "x", "messages": [{"role": "user", "content": "\xff\xfe"}]}'
    response = await server.client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_value", "body")


async def test_completions_prompts_are_checked(server: Served) -> None:
    payload = {"model": server.model, "prompt": ["fine", "bad\x00"], "max_tokens": 2}
    response = await server.client.post("/v1/completions", json=payload)
    assert_error(response, 400, "invalid_value", "prompt[1]")
    response = await server.client.post("/inference", json={"prompt": "bad\x01"})
    assert_error(response, 400, "invalid_value", "prompt")


async def test_a_fault_in_the_model_fails_one_request_and_the_engine_serves_on(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = await serve(raise_app_exceptions=False)
    current = served.llm.loaded
    assert current is not None
    model = current.backend.model  # type: ignore[attr-defined]
    real, calls = model.forward, []

    def faulty(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected fault in the forward pass")
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "forward", faulty)
    broken = await served.chat(max_tokens=4, headers={"X-Request-ID": "fault-1"})
    assert_error(broken, 500, None)
    assert "fault-1" in broken.json()["error"]["message"]
    assert "injected" not in broken.text
    healthy = await served.chat(max_tokens=4)
    assert healthy.status_code == 200, healthy.text
    assert len(calls) > 1


async def test_remote_code_is_off_unless_configured(
    tiny_models: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    from lcfin import Settings
    from lcfin.engine.profiles import load_profile
    from lcfin.engine.registry import get_model
    from lcfin.engine.transformers.backend import TransformersBackend

    seen: list[object] = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    spec, profile = get_model(str(tiny_models["llama"])), load_profile("cpu")
    for settings in (Settings(), Settings(trust_remote_code=True)):
        TransformersBackend.load(spec, profile, settings).close()
    assert seen == [False, True]


@pytest.mark.parametrize("name", ["../../etc", "/etc", "/etc/passwd", "..", "~/.ssh", "a/../../b"])
async def test_load_model_refuses_paths(server: Served, name: str) -> None:
    response = await server.client.post("/load-model", params={"model_name": name})
    assert_error(response, 404, "model_not_found", "model_name")
    assert server.llm.status().loading_model is None


async def test_an_empty_prompt_is_a_400_not_a_500(server: Served) -> None:  # found by the fuzz
    payload = {"model": server.model, "prompt": ["ok", ""], "max_tokens": 2}
    response = await server.client.post("/v1/completions", json=payload)
    assert_error(response, 400, "invalid_value", "prompt")
