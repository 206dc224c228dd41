"""Context fitting on a real (tiny, locally trained) tokenizer and its chat template."""

from __future__ import annotations

import random

import pytest

from lcfin.engine.chat import (
    ChatTurn,
    RenderedPrompt,
    count_prefix_tokens,
    fit_messages,
    render_chat,
)
from lcfin.errors import ContextLengthExceeded

WORDS = [
    "capital",
    "liquidity",
    "ratio",
    "bank",
    "asset",
    "risk",
    "Basel",
    "buffer",
    "coverage",
    "loan",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models["llama"])


def conversation(turns: int, seed: int) -> list[ChatTurn]:
    rng = random.Random(seed)
    said = [
        {
            "role": ("user", "assistant")[i % 2],
            "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 30))),
        }
        for i in range(turns)
    ]
    return [{"role": "system", "content": "You are a bank analyst."}, *said]


def fit(tokenizer, messages, limit, *, counted: bool, renders: list[int] | None = None):
    def render(turns: list[ChatTurn]) -> RenderedPrompt:
        if renders is not None:
            renders.append(len(turns))
        return render_chat(tokenizer, turns)

    count = (lambda text: count_prefix_tokens(tokenizer, text, limit)) if counted else None
    return fit_messages(
        messages, render, max_model_len=limit, max_tokens=8, truncate=True, count_tokens=count
    )


@pytest.mark.parametrize("seed", range(12))
def test_skipping_ahead_drops_exactly_what_one_by_one_dropping_does(tokenizer, seed: int):
    rng = random.Random(seed)
    messages = conversation(rng.randint(2, 40), seed)
    limit = rng.choice([64, 96, 160, 256])
    try:
        slow = fit(tokenizer, messages, limit, counted=False)
    except ContextLengthExceeded:
        with pytest.raises(ContextLengthExceeded):
            fit(tokenizer, messages, limit, counted=True)
        return
    fast = fit(tokenizer, messages, limit, counted=True)

    assert (fast.dropped_messages, fast.token_ids) == (slow.dropped_messages, slow.token_ids)


def test_a_long_conversation_costs_a_few_renders_not_one_per_dropped_turn(tokenizer):
    messages = conversation(2000, seed=7)  # about 30,000 tokens of history for 256 of context
    renders: list[int] = []

    fitted = fit(tokenizer, messages, 256, counted=True, renders=renders)

    assert fitted.dropped_messages > 1900 and len(fitted.token_ids) + 8 <= 256
    assert len(renders) <= 3, renders  # one by one, this took about 1,990 renders of the history
    assert max(renders) < 100
