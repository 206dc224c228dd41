"""FinancialLLM: chat formats, context fitting, model management, sync/async faces, records."""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any

import pytest

from lcfin import FinancialLLM, Settings
from lcfin.engine.chat import PLAIN_STOP, normalize_messages, refuse_overlong, render_chat
from lcfin.engine.manager import ModelManager
from lcfin.engine.profiles import load_profile
from lcfin.engine.sync_bridge import LoopThread
from lcfin.errors import (
    BackendUnavailable,
    ContextLengthExceeded,
    InvalidParameter,
    ModelLoadFailed,
    ModelLoading,
    ModelNotFound,
)
from lcfin.telemetry.records import RequestRecord

Q = "What is the liquidity coverage ratio?"
GREEDY = {"max_tokens": 8, "temperature": 0.0}
SYSTEM = {"role": "system", "content": "You are a bank analyst."}
TURNS = [
    ("What is Basel III?", "Basel III is a framework of bank capital and liquidity rules."),
    ("And Solvency II?", "Solvency II sets capital requirements for insurers in the EU."),
    ("What is value at risk?", "Value at risk estimates the loss a portfolio may suffer."),
]
CONVERSATION = [
    SYSTEM,
    *[{"role": r, "content": c} for q, a in TURNS for r, c in (("user", q), ("assistant", a))],
    {"role": "user", "content": "What is EBITDA?"},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models["llama"])


def template_len(tok, msgs) -> int:
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return len(tok.encode(text, add_special_tokens=False))


def corrupt_copy(src, dst, keep_bytes: int | None = None):
    """A copy of a tiny model dir whose model.safetensors is cut (default: to half its size)."""
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: keep_bytes if keep_bytes is not None else len(data) // 2])
    return dst


# -- chat formats ----------------------------------------------------------------------------


def test_llama_prompt_is_rendered_with_the_chat_template(shared_llm, tokenizer):
    msgs = [SYSTEM, {"role": "user", "content": Q}]
    c = shared_llm.chat(msgs, **GREEDY)
    assert c.usage.prompt_tokens == template_len(tokenizer, msgs)
    plain = f"{SYSTEM['content']}\n\nUser: {Q}\nAssistant:"
    assert c.usage.prompt_tokens != len(tokenizer.encode(plain))


def test_gpt_neox_without_template_uses_the_plain_format(make_llm, tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["gpt_neox"])
    assert not tok.chat_template
    msgs = [*CONVERSATION[:3], {"role": "user", "content": Q}]
    (q1, a1), _, _ = TURNS
    plain = f"{SYSTEM['content']}\n\nUser: {q1}\nAssistant: {a1}\nUser: {Q}\nAssistant:"

    c = make_llm("gpt_neox").chat(msgs, **GREEDY)

    assert c.usage.prompt_tokens == len(tok.encode(plain))
    rendered = render_chat(tok, normalize_messages(msgs))
    assert rendered.text == plain
    assert rendered.extra_stops == (PLAIN_STOP,) == ("\nUser:",)


def test_text_content_parts_are_joined(shared_llm):
    parts = [{"type": "text", "text": "What is the "}, {"type": "text", "text": "LCR?"}]
    a = shared_llm.chat([{"role": "user", "content": parts}], **GREEDY)
    b = shared_llm.chat("What is the LCR?", **GREEDY)
    assert (a.text, a.usage) == (b.text, b.usage)


# -- context fitting ---------------------------------------------------------------------------


def test_long_conversation_drops_the_oldest_turns(make_llm, tokenizer):
    llm = make_llm("llama", max_model_len=96)
    assert llm.status().max_model_len == 96
    assert template_len(tokenizer, CONVERSATION) + 8 > 96
    dropped = next(
        d
        for d in range(2, len(CONVERSATION), 2)
        if template_len(tokenizer, [SYSTEM, *CONVERSATION[1 + d :]]) + 8 <= 96
    )
    assert 0 < dropped < len(CONVERSATION) - 2  # some history stays: a real partial drop

    c = llm.chat(CONVERSATION, **GREEDY)

    assert c.dropped_messages == dropped
    # The system message is kept, the oldest user/assistant pairs go.
    assert c.usage.prompt_tokens == template_len(tokenizer, [SYSTEM, *CONVERSATION[1 + dropped :]])
    assert c.usage.prompt_tokens + 8 <= 96


def test_context_length_exceeded(make_llm):
    llm = make_llm("llama", max_model_len=96)
    with pytest.raises(ContextLengthExceeded) as info:
        llm.chat(CONVERSATION, truncate=False, **GREEDY)
    assert isinstance(info.value, InvalidParameter)
    assert isinstance(info.value, ValueError)
    assert (info.value.param, "96" in str(info.value)) == ("messages", True)
    # A single over-long message cannot be truncated, chat or raw prompt.
    long = " ".join(["The liquidity coverage ratio requires banks to hold liquid assets."] * 8)
    with pytest.raises(ContextLengthExceeded) as info:
        llm.chat([SYSTEM, {"role": "user", "content": long}], **GREEDY)
    assert info.value.param == "messages"
    with pytest.raises(ContextLengthExceeded):
        llm.complete(long, **GREEDY)
    with pytest.raises(ContextLengthExceeded):  # max_tokens counts too
        llm.chat(Q, max_tokens=96)
    stats = llm.stats()  # refused requests are counted as errors (see #17), without latency
    assert (stats["requests"], stats["errors"], stats["mean_latency_s"]) == (4, 4, None)
    records = llm.recent_requests()
    assert {(r.status, r.error_code, r.finish_reason) for r in records} == {
        ("error", "context_length_exceeded", "rejected")
    }
    assert {r.model for r in records} == {llm.model}


def test_a_refused_batch_is_recorded_once_per_generation(make_llm):
    llm = make_llm("llama", max_model_len=96)
    long = " ".join(["The liquidity coverage ratio requires banks to hold liquid assets."] * 8)

    async def admit(sources: list[str], **kw: Any) -> None:
        async with llm.abatch(sources, **kw):
            pytest.fail("the batch was admitted")

    with pytest.raises(ContextLengthExceeded):  # the second prompt does not fit: none runs
        asyncio.run(admit(["Q", long], raw=True, n=2, request_id="cmpl-1", max_tokens=4))
    with pytest.raises(InvalidParameter, match="at most"):  # more than ever runs at once
        asyncio.run(admit([Q], n=10_000, request_id="chat-2"))

    records = llm.recent_requests()  # each generation asked for once; a request too big once
    ids = ["cmpl-1-0-0", "cmpl-1-0-1", "cmpl-1-1-0", "cmpl-1-1-1", "chat-2"]
    assert [r.request_id for r in records] == ids
    assert [r.error_code for r in records] == ["context_length_exceeded"] * 4 + ["invalid_value"]
    assert {(r.status, r.finish_reason, r.completion_tokens) for r in records} == {
        ("error", "rejected", 0)
    }


def test_a_huge_prompt_is_refused_after_tokenizing_only_a_prefix(make_llm, tokenizer):
    llm = make_llm("llama", max_model_len=96)
    seen: list[int] = []  # lengths of the texts the real tokenizer was asked to encode
    real = tokenizer.encode

    class Spy:
        def encode(self, text: str, **kw: object) -> list[int]:
            seen.append(len(text))
            return list(real(text, **kw))

    huge = "Basel III sets capital ratios for banks. " * 50_000  # 2 MB, far beyond 96 tokens
    with pytest.raises(ContextLengthExceeded) as info:
        refuse_overlong(Spy(), ["short", huge], max_model_len=96, max_tokens=8, param="messages")
    assert info.value.param == "messages" and "96" in str(info.value)
    assert seen and max(seen) == 8 * 96  # a prefix, never the 2 MB

    with pytest.raises(ContextLengthExceeded) as info:  # end to end, chat and raw prompt
        llm.chat([SYSTEM, {"role": "user", "content": huge}], **GREEDY)
    assert info.value.param == "messages"
    with pytest.raises(ContextLengthExceeded) as info:
        llm.complete(huge, **GREEDY)
    assert info.value.param == "prompt"
    # With truncation on, an old long turn is dropped, not refused: only kept turns are sampled.
    c = llm.chat(
        [
            {"role": "user", "content": huge},
            {"role": "assistant", "content": "Yes."},
            {"role": "user", "content": Q},
        ],
        max_tokens=2,
    )
    assert c.dropped_messages == 2


def test_a_long_but_sparse_text_goes_on_to_the_exact_count():
    class TenCharsPerToken:  # stands in for a tokenizer that packs long runs into one token
        def encode(self, text: str, **kw: object) -> list[int]:
            return [0] * (len(text) // 10)

    refuse_overlong(
        TenCharsPerToken(), ["x" * 100_000], max_model_len=96, max_tokens=8, param="prompt"
    )


# -- model management ---------------------------------------------------------------------------


@pytest.mark.any_backend
def test_switching_between_two_models(make_llm, tiny_models, backend):
    llm = make_llm("llama")
    qwen = str(tiny_models["qwen3"])
    spec = llm.switch(qwen)
    st = llm.status()
    assert spec.name == st.model == llm.model == qwen
    assert (st.state, st.backend, st.profile) == ("ready", backend.kind, backend.profile)
    assert st.load_time_s is not None
    assert st.load_time_s >= 0
    assert llm.chat(Q, **GREEDY).model == qwen
    assert llm.recent_requests()[-1].model == qwen
    # The same model again: nothing reloads (same status, same load time), and at once.
    started = time.perf_counter()
    assert llm.switch(qwen) == spec
    assert time.perf_counter() - started < 2.0
    assert llm.status() == st


@pytest.mark.asyncio
async def test_manager_states_from_idle_to_ready_and_reuse(tiny_models):
    settings = Settings()
    mgr = ModelManager(settings, load_profile("cpu", settings.catalog), "transformers")
    llama = str(tiny_models["llama"])
    assert (mgr.status().state, mgr.status().serving) == ("idle", False)
    task = asyncio.create_task(mgr.load(llama))
    await asyncio.sleep(0)  # the task runs up to its load in a worker thread
    try:
        st = mgr.status()
        assert (st.state, st.model, st.loading_model) == ("loading", None, llama)
        with pytest.raises(ModelLoading) as info:  # nothing to serve yet
            async with mgr.lease():
                pass
        assert info.value.retry_after > 0
    finally:
        await task
    try:
        assert mgr.status().state == "ready"
        async with mgr.lease() as first:
            pass
        await mgr.load(llama)
        async with mgr.lease() as second:
            assert second is first  # reused, not reloaded
    finally:
        mgr.close()
    assert mgr.status().state == "idle"


@pytest.mark.asyncio
async def test_status_is_loading_while_a_switch_runs(make_llm, tiny_models):
    llm = make_llm("llama")
    llama, qwen = str(tiny_models["llama"]), str(tiny_models["qwen3"])

    task = asyncio.create_task(llm.aswitch(qwen))
    # One turn of the loop runs the switch up to its load (in a worker thread); the loading
    # flag is cleared only when the task resumes on this loop, so this check cannot race.
    await asyncio.sleep(0)
    st = llm.status()
    assert (st.state, st.loading_model, st.model) == ("loading", qwen, llama)
    # The old model keeps answering meanwhile.
    served = await llm.achat(Q, **GREEDY)
    assert served.model == llama

    await task
    st = llm.status()
    assert (st.state, st.loading_model, st.model) == ("ready", None, qwen)


@pytest.mark.any_backend
def test_failed_load_keeps_the_previous_model(make_llm, tiny_models, tmp_path):
    llm = make_llm("llama")
    bad = corrupt_copy(tiny_models["llama"], tmp_path / "corrupt")

    with pytest.raises(ModelLoadFailed):
        llm.switch(str(bad))

    st = llm.status()
    assert (st.state, st.model, st.loading_model) == ("failed", str(tiny_models["llama"]), None)
    assert st.error
    assert st.serving
    assert llm.chat(Q, **GREEDY).model == str(tiny_models["llama"])
    # A directory that is no model at all is refused before loading anything.
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound) as info:
        llm.switch(str(tmp_path / "empty"))
    assert isinstance(info.value, LookupError)
    assert "config.json" in str(info.value)
    # A later successful switch clears the failure.
    llm.switch(str(tiny_models["qwen3"]))
    assert (llm.status().state, llm.status().error) == ("ready", None)


@pytest.mark.parametrize("keep_bytes", [4, 40])
def test_weights_cut_inside_the_header_raise_model_load_failed(
    make_llm, tiny_models, tmp_path, keep_bytes
):
    llm = make_llm("llama")
    bad = corrupt_copy(tiny_models["llama"], tmp_path / "cut", keep_bytes)
    with pytest.raises(ModelLoadFailed):
        llm.switch(str(bad))
    assert llm.status().state == "failed"


def test_context_manager_closes(tiny_models):
    with FinancialLLM(str(tiny_models["llama"]), profile="cpu", settings=Settings()) as llm:
        assert llm.chat(Q, **GREEDY).usage.completion_tokens == 8
    try:
        assert (llm.status().state, llm.status().model) == ("idle", None)
        with pytest.raises(BackendUnavailable):
            llm.chat(Q, **GREEDY)
    finally:
        llm.close()  # the failed call restarted the helper loop


def test_loop_thread_close_closes_its_event_loop():
    async def running_loop():
        return asyncio.get_running_loop()

    lt = LoopThread()
    loop = lt.run(running_loop())
    lt.close()
    deadline = time.monotonic() + 5
    while loop.is_running() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert loop.is_closed()
    finally:
        if not loop.is_closed():  # don't leak it into the rest of the session
            loop.close()


# -- parameters and messages -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "robot", "content": "hi"}], "messages[0].role"),
        ([], "messages"),
        ([{"content": "no role"}], "messages"),
        (["not a dict"], "messages"),
        (
            [SYSTEM, {"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            "messages[1].content",
        ),
        ([{"role": "user", "content": 42}], "messages[0].content"),
    ],
)
def test_bad_messages_raise_invalid_parameter(shared_llm, messages, param):
    with pytest.raises(InvalidParameter) as info:
        shared_llm.chat(messages, **GREEDY)
    assert info.value.param == param
    with pytest.raises(InvalidParameter):  # messages and a raw prompt at once
        list(shared_llm.stream_events(Q, prompt="both"))


# -- sync and async faces -----------------------------------------------------------------------


@pytest.mark.any_backend
@pytest.mark.asyncio
async def test_sync_api_works_in_a_running_loop_and_matches_async(shared_llm):
    llm = shared_llm  # called synchronously from a coroutine, as in Jupyter
    assert (await llm.achat(Q, **GREEDY)).text == llm.chat(Q, **GREEDY).text
    assert (await llm.acomplete(Q, **GREEDY)).text == llm.complete(Q, **GREEDY).text
    answer = llm.ask(Q, system="Be brief.", **GREEDY)
    assert isinstance(answer, str)
    assert answer == await llm.aask(Q, system="Be brief.", **GREEDY)
    brief = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": Q}]
    assert answer == llm.chat(brief, **GREEDY).text
    # Chunk boundaries depend on timing (a consumer that falls behind gets merged deltas).
    assert "".join([c async for c in llm.astream(Q, **GREEDY)]) == "".join(llm.stream(Q, **GREEDY))
    assert "".join([c async for c in llm.astream_completion(Q, **GREEDY)]) == "".join(
        llm.stream_completion(Q, **GREEDY)
    )
    # complete() takes the raw text: no chat template, so a shorter prompt.
    assert llm.complete(Q, **GREEDY).usage.prompt_tokens < llm.chat(Q, **GREEDY).usage.prompt_tokens
    assert llm.ask(Q, **GREEDY) == "".join(llm.stream(Q, **GREEDY)) == llm.chat(Q, **GREEDY).text


@pytest.mark.any_backend
@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"temprature": 0.5}, InvalidParameter, "temprature"),  # unknown kwarg
        ({"temperature": 5}, InvalidParameter, "temperature"),
        ({"max_tokens": 250}, ContextLengthExceeded, "messages"),  # prompt + max_tokens
        ({"max_tokens": 256}, ContextLengthExceeded, "max_tokens"),  # max_tokens alone
    ],
)
async def test_sync_and_async_raise_the_same_errors(shared_llm, kwargs, error, param):
    llm, raised = shared_llm, []

    async def drain(agen):
        return [x async for x in agen]

    sync = (llm.chat, lambda q, **kw: list(llm.stream(q, **kw)), llm.complete)
    for call in sync:
        with pytest.raises(InvalidParameter) as info:
            call(Q, **kwargs)
        raised.append((type(info.value), info.value.param))
    for acall in (llm.achat, lambda q, **kw: drain(llm.astream(q, **kw)), llm.acomplete):
        with pytest.raises(InvalidParameter) as info:
            await acall(Q, **kwargs)
        raised.append((type(info.value), info.value.param))
    assert raised == [(error, param)] * 6


@pytest.mark.any_backend
def test_sync_then_async_then_sync_on_one_engine_and_several_loops(make_llm):
    # Issue 15: vLLM ties its output handler to the first loop that generates; a notebook's
    # llm.chat() runs on FinancialLLM's loop, `await llm.achat()` on Jupyter's. Both must work,
    # in either order, and from loops that come and go (asyncio.run closes its loop).
    llm = make_llm("llama")
    first = llm.chat(Q, **GREEDY).text

    async def a_chat() -> str:
        return (await llm.achat(Q, **GREEDY)).text

    async def a_stream() -> str:
        return "".join([c async for c in llm.astream(Q, **GREEDY)])

    assert asyncio.run(a_chat()) == first  # a second loop, closed after
    assert asyncio.run(a_stream()) == first  # a third one
    assert llm.chat(Q, **GREEDY).text == first  # and the first loop again


# -- n choices ----------------------------------------------------------------------------------

SAMPLED = {"max_tokens": 6, "temperature": 1.0, "ignore_eos": True}


@pytest.mark.any_backend
def test_chat_with_n_returns_every_choice_with_usage_and_cost_summed(make_llm):
    llm = make_llm("llama")

    done = llm.chat(Q, n=3, seed=7, **SAMPLED)

    first = done.choices[0]
    assert len(done.choices) == 3
    assert (done.text, done.finish_reason) == (first.text, first.finish_reason)
    assert str(done) == first.text
    assert done.usage.prompt_tokens == first.usage.prompt_tokens  # the prompt counted once
    assert (
        done.usage.completion_tokens
        == 3 * 6
        == sum(c.usage.completion_tokens for c in done.choices)
    )
    assert all(c.cost_usd is not None and c.cost_usd > 0 for c in done.choices)
    assert done.cost_usd == pytest.approx(sum(c.cost_usd for c in done.choices))
    # Each choice is its own generation and record: request id base-i.
    assert [c.request_id for c in done.choices] == [f"{done.request_id}-{i}" for i in range(3)]
    recorded = {r.request_id for r in llm.recent_requests()}
    assert recorded == {c.request_id for c in done.choices}
    # Choice i of a seeded request gets seed + i: the same text as a lone request with it.
    for i, choice in enumerate(done.choices):
        assert choice.text == llm.chat(Q, seed=7 + i, **SAMPLED).text
        assert choice.choices == (choice,)


@pytest.mark.any_backend
@pytest.mark.asyncio
async def test_async_twins_and_raw_completions_take_n_too(shared_llm):
    llm = shared_llm

    chat = await llm.achat(Q, n=2, **GREEDY)
    raw = await llm.acomplete(Q, n=2, **GREEDY)

    for done, single in (
        (chat, await llm.achat(Q, **GREEDY)),
        (raw, llm.complete(Q, n=1, **GREEDY)),
    ):
        assert [c.text for c in done.choices] == [single.text] * 2  # greedy: the same text
        assert done.usage.prompt_tokens == single.usage.prompt_tokens
        assert done.usage.completion_tokens == 2 * single.usage.completion_tokens
        assert single.choices == (single,)  # n=1: the completion as before


@pytest.mark.any_backend
@pytest.mark.parametrize("n", [10_000, 0, -1])
def test_n_too_large_or_below_one_is_refused_naming_n(shared_llm, n):
    with pytest.raises(InvalidParameter) as info:
        shared_llm.chat(Q, n=n, **GREEDY)
    assert info.value.param == "n"


def test_a_stream_carries_one_choice(shared_llm):
    with pytest.raises(InvalidParameter) as info:  # not n streams interleaved without an index
        list(shared_llm.stream(Q, n=2, **GREEDY))
    assert info.value.param == "n"


# -- stats, records, repr ---------------------------------------------------------------------


@pytest.mark.any_backend
def test_stats_and_repr(make_llm, tiny_models, backend):
    llm = make_llm("llama")
    a = llm.chat(Q, **GREEDY, ignore_eos=True)
    b = llm.complete(Q, max_tokens=3, temperature=0.0, ignore_eos=True)

    stats = llm.stats()

    assert (stats["requests"], stats["errors"]) == (2, 0)
    assert stats["prompt_tokens"] == a.usage.prompt_tokens + b.usage.prompt_tokens
    assert stats["completion_tokens"] == a.usage.completion_tokens + b.usage.completion_tokens == 11
    assert stats["mean_latency_s"] > 0
    assert (stats["status"]["state"], stats["status"]["serving"]) == ("ready", True)
    assert [r.request_id for r in llm.recent_requests()] == [a.request_id, b.request_id]
    text = repr(llm)
    assert text.startswith("FinancialLLM(")
    parts = (str(tiny_models["llama"]), f"'{backend.kind}'", f"'{backend.profile}'")
    assert all(part in text for part in parts)


@pytest.mark.any_backend
def test_record_hooks_receive_one_record_per_request(make_llm, tiny_models, backend):
    llm = make_llm("llama")
    seen = []

    def broken(record):
        raise RuntimeError("hook failure must not fail the request")

    llm.record_hooks.extend([broken, seen.append])

    c = llm.chat(Q, **GREEDY)
    events = list(llm.stream_events(Q, endpoint="test", request_id="req-42", **GREEDY))

    assert len(seen) == 2
    assert all(isinstance(r, RequestRecord) for r in seen)
    first, second = seen
    assert (first.request_id, first.finish_reason) == (c.request_id, c.finish_reason)
    assert first.prompt_tokens == c.usage.prompt_tokens
    assert first.completion_tokens == c.usage.completion_tokens
    assert first.model == str(tiny_models["llama"])
    assert (first.backend, first.profile) == (backend.kind, backend.profile)
    assert (first.status, first.error, first.endpoint) == ("ok", None, "library")
    assert first.latency_s > 0
    assert first.time_to_first_token_s is not None
    assert (second.request_id, second.endpoint) == ("req-42", "test")
    assert events[-1].request_id == "req-42"


def test_the_default_model_is_the_seeds_on_a_gpu_and_the_demo_on_cpu() -> None:
    from lcfin import FinancialLLM, Settings

    gpu = FinancialLLM(profile="scw-l40s", backend="transformers", load=False, settings=Settings())
    cpu = FinancialLLM(profile="cpu", load=False, settings=Settings())
    try:
        assert gpu.initial_model == "qwen3-8b"  # the seed's MODEL_NAME default
        assert cpu.initial_model == "demo"
    finally:
        gpu.close()
        cpu.close()
