"""TransformersBackend through FinancialLLM, on the four tiny architectures.

The models are random, so every expectation is derived from the model itself: a greedy run is
taken once per architecture, and other runs are compared with it.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from lcfin.engine.types import Completion, Delta

ARCHS = ("llama", "qwen3", "gpt_neox", "gemma3")
PROMPT = "What does the liquidity coverage ratio require?"
N = 24  # completion tokens of the reference runs
REPLACEMENT = "\ufffd"


def greedy(**kw):
    return {"max_tokens": N, "temperature": 0.0, **kw}


@pytest.fixture(scope="module", params=ARCHS)
def arch_llm(request, tiny_models):
    from lcfin import FinancialLLM, Settings

    llm = FinancialLLM(str(tiny_models[request.param]), profile="cpu", settings=Settings())
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    from transformers import AutoTokenizer

    return {arch: AutoTokenizer.from_pretrained(tiny_models[arch]) for arch in ARCHS}


def events_of(llm, messages=PROMPT, **params) -> tuple[list[Delta], Completion]:
    events = list(llm.stream_events(messages, **params))
    *deltas, final = events
    assert all(isinstance(d, Delta) for d in deltas)
    assert isinstance(final, Completion)
    return deltas, final


@pytest.fixture(scope="module")
def reference(arch_llm):
    """The greedy run every test of this architecture compares with."""
    return events_of(arch_llm, **greedy())


def arch_of(llm) -> str:
    return str(llm.model).rsplit("/", 1)[-1]


def single_token_delta(tok, deltas: list[Delta]) -> tuple[int, int]:
    """(index, token id) of a delta after the first that is exactly one fresh token's text.

    Such a delta carried no held-back bytes, and its token did not occur before it.
    """
    by_text = {}
    for i in range(len(tok)):
        text = tok.decode([i])
        if text and REPLACEMENT not in text:
            by_text.setdefault(text, []).append(i)
    texts = [d.text for d in deltas]
    for k in range(2, len(texts)):
        ids = by_text.get(texts[k], [])
        one_token = deltas[k].num_tokens == 1  # a consumer that fell behind gets merged deltas
        if one_token and len(ids) == 1 and texts[k] not in "".join(texts[:k]):
            return k, ids[0]
    pytest.fail(f"no clean single-token delta in {texts!r}")


# -- greedy, streaming, lengths --------------------------------------------------------------


def test_greedy_chat_is_deterministic(arch_llm, reference):
    _, ref = reference
    first = arch_llm.chat(PROMPT, **greedy())
    second = arch_llm.chat(PROMPT, **greedy())
    assert first.text == second.text == ref.text
    assert first.usage == second.usage == ref.usage
    assert first.finish_reason == ref.finish_reason
    assert first.request_id != second.request_id


def test_streaming_text_equals_non_streaming_text(arch_llm, reference):
    deltas, ref = reference
    streamed = list(arch_llm.stream(PROMPT, **greedy()))
    assert "".join(streamed) == ref.text
    assert all(streamed)  # stream() yields no empty chunks
    assert "".join(d.text for d in deltas) == ref.text


def test_stream_events_end_with_one_completion(arch_llm, reference):
    deltas, ref = reference
    assert sum(d.num_tokens for d in deltas) == ref.usage.completion_tokens
    assert [d.finish_reason for d in deltas[:-1]] == [None] * (len(deltas) - 1)
    assert deltas[-1].finish_reason == ref.finish_reason
    assert deltas[0].prompt_tokens == ref.usage.prompt_tokens
    assert ref.model == arch_llm.model
    assert ref.timings.time_to_first_token_s is not None
    assert ref.timings.total_s >= ref.timings.time_to_first_token_s


def test_max_tokens_is_exact_unless_eos_comes_first(arch_llm, reference):
    c = arch_llm.chat(PROMPT, max_tokens=5, temperature=0.0)
    if c.finish_reason == "length":
        assert c.usage.completion_tokens == 5
    else:
        assert c.finish_reason == "stop"
        assert c.usage.completion_tokens <= 5
    _, ref = reference
    assert ref.finish_reason == "length"  # the reference ran to its limit: no EOS in N tokens
    assert ref.usage.completion_tokens == N


def test_prompt_tokens_equal_the_tokenised_chat_prompt(arch_llm, reference, tokenizer):
    tok = tokenizer[arch_of(arch_llm)]
    msgs = [{"role": "user", "content": PROMPT}]
    if tok.chat_template:
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = tok.encode(text, add_special_tokens=False)
    else:  # gpt_neox: the plain format of lcfin.engine.chat
        ids = tok.encode(f"User: {PROMPT}\nAssistant:")
    _, ref = reference
    assert ref.usage.prompt_tokens == len(ids)


def test_max_tokens_none_fills_the_context(make_llm):
    llm = make_llm("llama", max_model_len=40)
    for c in (
        llm.chat(PROMPT, max_tokens=None, temperature=0.0, ignore_eos=True),
        llm.complete(PROMPT, max_tokens=None, temperature=0.0, ignore_eos=True),
    ):
        assert c.finish_reason == "length"
        assert c.usage.total_tokens == 40


# -- stops -------------------------------------------------------------------------------------


def test_stop_string_cuts_before_its_first_occurrence(arch_llm, reference):
    _, ref = reference
    text = ref.text
    # A clean 3-character piece from the middle whose first occurrence is not at the start.
    stop = next(
        piece
        for i in range(len(text) // 3, len(text) - 3)
        if REPLACEMENT not in (piece := text[i : i + 3]) and text.index(piece) > 0
    )
    expected = text[: text.index(stop)]

    deltas, c = events_of(arch_llm, **greedy(stop=[stop]))

    assert c.text == expected
    assert c.finish_reason == "stop"
    assert deltas[-1].stop_reason == stop
    assert c.usage.completion_tokens < N
    streamed = "".join(arch_llm.stream(PROMPT, **greedy(stop=[stop, "\x00never\x00"])))
    assert streamed == expected


def test_stop_token_id_ends_the_generation(arch_llm, reference, tokenizer):
    deltas, _ = reference
    k, token = single_token_delta(tokenizer[arch_of(arch_llm)], deltas)

    got, c = events_of(arch_llm, **greedy(stop_token_ids=[token]))

    assert c.text == "".join(d.text for d in deltas[:k])
    assert c.finish_reason == "stop"
    before = sum(d.num_tokens for d in deltas[:k])
    assert c.usage.completion_tokens == before + 1  # the stop token is counted, not shown
    assert got[-1].stop_reason == token


def test_plain_format_accepts_the_maximum_number_of_stops(make_llm):
    stops = [f"never-{i}" for i in range(16)]
    c = make_llm("gpt_neox").chat(PROMPT, stop=stops, max_tokens=8, temperature=0.0)
    assert c.usage.completion_tokens == 8


# -- seeds ---------------------------------------------------------------------------------------


def test_seed_makes_sampling_reproducible(arch_llm):
    a = arch_llm.chat(PROMPT, max_tokens=12, temperature=1.0, seed=7)
    b = arch_llm.chat(PROMPT, max_tokens=12, temperature=1.0, seed=7)
    c = arch_llm.chat(PROMPT, max_tokens=12, temperature=1.0, seed=8)
    assert a.text == b.text
    assert a.text != c.text
    assert a.usage.completion_tokens == c.usage.completion_tokens == 12


@pytest.mark.asyncio
async def test_concurrent_requests_do_not_mix(shared_llm):
    other = "Explain Solvency II."
    alone = [shared_llm.chat(p, **greedy()).text for p in (PROMPT, other)]
    together = await asyncio.gather(
        shared_llm.achat(PROMPT, **greedy()), shared_llm.achat(other, **greedy())
    )
    assert [c.text for c in together] == alone
    assert alone[0] != alone[1]


# -- each sampling parameter has an effect (tiny llama only) ---------------------------------


@pytest.fixture(scope="module")
def sampled(shared_llm):
    return shared_llm.chat(PROMPT, max_tokens=N, temperature=1.0, seed=7).text


@pytest.mark.parametrize(
    "param",
    [
        {"temperature": 0.5},
        {"top_p": 0.5},
        {"top_k": 5},
        {"presence_penalty": 2.0},
        {"frequency_penalty": 2.0},
        {"repetition_penalty": 2.0},
    ],
    ids=lambda p: next(iter(p)),
)
def test_sampling_parameter_changes_the_output(shared_llm, sampled, param):
    changed = shared_llm.chat(PROMPT, **{"max_tokens": N, "temperature": 1.0, "seed": 7, **param})
    assert changed.text != sampled


def test_top_k_1_equals_greedy(shared_llm):
    want = shared_llm.chat(PROMPT, **greedy()).text
    got = shared_llm.chat(PROMPT, max_tokens=N, temperature=1.0, top_k=1, seed=3).text
    assert got == want


# -- generation_config.json: defaults and extra EOS ids ------------------------------------


@pytest.fixture(scope="module")
def edited_llama(tiny_models, tmp_path_factory, shared_llm, tokenizer):
    """A copy of the tiny llama whose generation_config says do_sample=false and adds an EOS id.

    The extra EOS id is a token the greedy reference produces in the middle, so the copy
    stops there unless `ignore_eos` is set. Returns (llm, reference deltas, k, eos id).
    """
    from lcfin import FinancialLLM, Settings

    deltas, _ = events_of(shared_llm, **greedy())
    k, token = single_token_delta(tokenizer["llama"], deltas)
    directory = tmp_path_factory.mktemp("edited") / "llama"
    shutil.copytree(tiny_models["llama"], directory)
    config_file = directory / "generation_config.json"
    config = json.loads(config_file.read_text())
    config.update(do_sample=False, eos_token_id=[config["eos_token_id"], token])
    config_file.write_text(json.dumps(config))
    llm = FinancialLLM(str(directory), profile="cpu", settings=Settings())
    yield llm, deltas, k, token
    llm.close()


def test_do_sample_false_makes_greedy_the_default(edited_llama, shared_llm):
    llm, deltas, k, _ = edited_llama
    # No temperature given: generation_config's do_sample=false means greedy, so the copy
    # reproduces the original's greedy text (up to the extra EOS) whatever the seed.
    for seed in (1, 2):
        c = llm.chat(PROMPT, max_tokens=N, seed=seed)
        assert c.text == "".join(d.text for d in deltas[:k])
    # An explicit temperature still wins over the defaults.
    sampled = llm.chat(PROMPT, max_tokens=N, temperature=1.0, seed=7, ignore_eos=True).text
    assert sampled == shared_llm.chat(PROMPT, max_tokens=N, temperature=1.0, seed=7).text


def test_eos_from_generation_config_stops_and_ignore_eos_goes_on(edited_llama):
    llm, deltas, k, _ = edited_llama
    stopped = llm.chat(PROMPT, **greedy())
    assert stopped.finish_reason == "stop"
    assert stopped.usage.completion_tokens == sum(d.num_tokens for d in deltas[:k]) + 1
    assert stopped.text == "".join(d.text for d in deltas[:k])

    full = llm.chat(PROMPT, **greedy(ignore_eos=True))
    assert full.finish_reason == "length"
    assert full.usage.completion_tokens == N
    assert full.text == "".join(d.text for d in deltas)


# -- abort ---------------------------------------------------------------------------------------


def test_breaking_out_of_stream_aborts_the_request(make_llm):
    llm = make_llm("llama")
    chunks = []
    for chunk in llm.stream(PROMPT, max_tokens=200, temperature=0.0):
        chunks.append(chunk)
        if len(chunks) == 2:
            break

    after = llm.chat(PROMPT, max_tokens=3, temperature=0.0)

    assert after.usage.completion_tokens == 3
    first, second = llm.recent_requests()
    assert first.finish_reason == "abort"
    assert first.status == "ok"
    assert 2 <= first.completion_tokens < 200
    assert second.request_id == after.request_id
    assert llm.stats()["requests"] == 2
    assert llm.status().state == "ready"


@pytest.mark.asyncio
async def test_closing_astream_early_aborts_the_request(make_llm):
    llm = make_llm("llama")
    agen = llm.astream(PROMPT, max_tokens=200, temperature=0.0)
    chunks = []
    async for chunk in agen:
        chunks.append(chunk)
        if len(chunks) == 2:
            break
    await agen.aclose()

    after = await llm.achat(PROMPT, max_tokens=3, temperature=0.0)

    assert after.usage.completion_tokens == 3
    first, second = llm.recent_requests()
    assert first.finish_reason == "abort"
    assert 2 <= first.completion_tokens < 200
    assert second.finish_reason == after.finish_reason


def test_in_flight_stream_finishes_on_the_old_model_after_a_switch(make_llm, tiny_models):
    llm = make_llm("llama")
    want = llm.chat(PROMPT, max_tokens=16, temperature=0.0).text
    stream = llm.stream(PROMPT, max_tokens=16, temperature=0.0)
    head = next(stream)

    llm.switch(str(tiny_models["qwen3"]))
    rest = list(stream)

    assert head + "".join(rest) == want
    assert llm.recent_requests()[-1].finish_reason == "length"
    assert llm.chat(PROMPT, max_tokens=2).model == str(tiny_models["qwen3"])
