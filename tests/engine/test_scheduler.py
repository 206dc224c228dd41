"""Continuous batching: output does not depend on the neighbours; slots, order and bounds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lcfin import FinancialLLM, Settings
from tests.tiny_models import ARCHITECTURES

PROMPTS = [f"Question {i}: what is Basel {'III ' * i}and why?" for i in range(6)]
GREEDY = {"max_tokens": 24, "temperature": 0.0, "ignore_eos": True}


@pytest.fixture(scope="module")
def llms(tiny_models: dict[str, Path]):
    made = {
        a: FinancialLLM(str(tiny_models[a]), profile="cpu", settings=Settings())
        for a in ARCHITECTURES
    }
    yield made
    for llm in made.values():
        llm.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("arch", ARCHITECTURES)
async def test_batched_equals_alone(llms, arch: str) -> None:
    llm = llms[arch]
    alone = [(await llm.acomplete(p, **GREEDY)).text for p in PROMPTS]
    together = await asyncio.gather(*(llm.acomplete(p, **GREEDY) for p in PROMPTS))
    assert [c.text for c in together] == alone
    assert all(c.usage.completion_tokens == 24 for c in together)


@pytest.mark.asyncio
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
async def test_staggered_arrivals_equal_alone_and_join_mid_batch(llms, arch: str) -> None:
    llm = llms[arch]
    alone = [(await llm.acomplete(p, **GREEDY)).text for p in PROMPTS]

    async def late(i: int, prompt: str):
        await asyncio.sleep(0.02 * i)
        return await llm.acomplete(prompt, **GREEDY)

    done = await asyncio.gather(*(late(i, p) for i, p in enumerate(PROMPTS)))
    assert [c.text for c in done] == alone


@pytest.mark.asyncio
async def test_sampled_rows_keep_their_own_seed(llms) -> None:
    llm = llms["qwen3"]
    kw = {"max_tokens": 16, "temperature": 1.0, "seed": 11, "ignore_eos": True}
    alone = (await llm.acomplete(PROMPTS[0], **kw)).text
    mixed = await asyncio.gather(
        llm.acomplete(PROMPTS[0], **kw),
        llm.acomplete(PROMPTS[1], max_tokens=16, temperature=1.0, seed=99),
        llm.acomplete(PROMPTS[2], **GREEDY),
    )
    assert mixed[0].text == alone


@pytest.mark.asyncio
async def test_abort_frees_the_slot_and_others_continue(llms) -> None:
    llm = llms["llama"]
    expected = (await llm.acomplete(PROMPTS[1], **GREEDY)).text
    stream = llm.astream_completion(PROMPTS[0], max_tokens=200, temperature=0.0, ignore_eos=True)
    other = asyncio.create_task(llm.acomplete(PROMPTS[1], **GREEDY))
    await stream.__anext__()
    await stream.aclose()  # abort mid-batch
    assert (await other).text == expected
    backend = llm.loaded.backend  # white-box: the batch is empty again
    for _ in range(100):
        if backend.stats().running == 0:
            break
        await asyncio.sleep(0.01)
    assert backend.stats().running == 0
    assert llm.recent_requests()[-2].finish_reason in {"abort", "stop"}


@pytest.mark.asyncio
async def test_a_request_whose_sampling_fails_fails_alone(llms, monkeypatch) -> None:
    """A sampler that raises (fault injected: seed 666 only) fails its own request; its
    neighbours in the batch finish as if alone, and the model thread serves the next one."""
    from lcfin.engine.transformers.sampling import RequestSampler
    from lcfin.errors import LcfinError

    llm = llms["llama"]
    expected = (await llm.acomplete(PROMPTS[1], **GREEDY)).text
    real = RequestSampler.next_token

    def faulty(self: RequestSampler, logits):  # type: ignore[no-untyped-def]
        if self.params.seed == 666 and self.steps > 2:
            raise FloatingPointError("injected")
        self.steps += 1
        return real(self, logits)

    monkeypatch.setattr(RequestSampler, "steps", 0, raising=False)
    monkeypatch.setattr(RequestSampler, "next_token", faulty)
    doomed = asyncio.create_task(
        llm.acomplete(PROMPTS[0], max_tokens=24, temperature=0.7, seed=666, ignore_eos=True)
    )
    other = asyncio.create_task(llm.acomplete(PROMPTS[1], **GREEDY))
    with pytest.raises(LcfinError, match="injected"):
        await doomed
    assert (await other).text == expected
    monkeypatch.undo()
    assert (await llm.acomplete(PROMPTS[1], **GREEDY)).text == expected  # still serving


@pytest.mark.asyncio
async def test_running_rows_bounded_by_max_num_seqs_and_fifo(tiny_models, tmp_path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text("[profiles.cpu]\nmax_num_seqs = 2\n")  # a 2-row batch
    settings = Settings(catalog=catalog)
    llm = FinancialLLM(
        str(tiny_models["llama"]), profile="cpu", settings=settings, max_model_len=256
    )
    try:
        assert llm.profile.max_num_seqs == 2
        backend = llm.loaded.backend
        finished: list[int] = []
        peak = 0

        async def run(i: int) -> None:
            await llm.acomplete(PROMPTS[i], max_tokens=12, temperature=0.0, ignore_eos=True)
            finished.append(i)

        def arrived() -> int:  # requests the scheduler has seen, finished ones included
            stats = backend.stats()
            return stats.running + stats.waiting + len(finished)

        tasks = []
        for i in range(6):  # one after the other: prompts render in worker threads (see #16),
            tasks.append(asyncio.create_task(run(i)))  # so tasks started together arrive in
            while arrived() <= i and not tasks[-1].done():  # any order; FIFO is about arrival
                peak = max(peak, backend.stats().running)
                await asyncio.sleep(0.002)
        while not all(t.done() for t in tasks):
            peak = max(peak, backend.stats().running)
            await asyncio.sleep(0.002)
        assert peak <= 2
        assert finished[:2] == sorted(finished[:2]) and set(finished[:2]) == {0, 1}
    finally:
        llm.close()
