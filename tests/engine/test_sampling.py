"""RequestSampler on hand-made logits, and SamplingParams validation."""

from __future__ import annotations

from collections import Counter

import pytest

from lcfin.engine.transformers.sampling import RequestSampler
from lcfin.engine.types import SamplingParams
from lcfin.errors import InvalidParameter

torch = pytest.importorskip("torch")

CPU = torch.device("cpu")
# Ten tokens, distinct logits, best first; token 0 has about 30% of the mass at temperature 1.
LOGITS = [2.0, 1.7, 1.4, 1.1, 0.8, 0.5, 0.2, -0.1, -0.4, -0.7]


def logits(values=LOGITS):
    return torch.tensor(values, dtype=torch.float32)


def sampler(prompt_ids=(), **params):
    return RequestSampler(SamplingParams(**params), list(prompt_ids), CPU)


def draw(s: RequestSampler, n: int, values=LOGITS) -> list[int]:
    return [s.next_token(logits(values)) for _ in range(n)]


def test_greedy_is_argmax():
    shuffled = [0.1, -2.0, 3.5, 0.2, 3.4]
    s = sampler(temperature=0.0)
    assert draw(s, 5, shuffled) == [2] * 5


@pytest.mark.parametrize("temperature", [1e-39, 1e-20, 9e-6])
def test_a_vanishing_temperature_is_greedy_not_an_overflow(temperature: float):
    # Dividing logits by 1e-39 overflows float32 to inf, and sampling from inf crashed the
    # model thread (found by tests/server/test_fuzz.py). Below 1e-5 decoding is greedy, as vLLM's.
    assert SamplingParams(temperature=temperature).greedy
    shuffled = [0.1, -2.0, 3.5, 0.2, 3.4]
    assert draw(sampler(temperature=temperature), 3, shuffled) == [2] * 3


def test_greedy_accepts_half_precision_logits():
    s = sampler(temperature=0.0)
    assert s.next_token(logits().half()) == 0


def test_same_seed_gives_the_same_samples():
    a = draw(sampler(seed=7, temperature=1.0), 40)
    b = draw(sampler(seed=7, temperature=1.0), 40)
    assert a == b
    assert len(set(a)) > 1  # it really sampled


def test_different_seeds_give_different_samples():
    assert draw(sampler(seed=7), 40) != draw(sampler(seed=8), 40)


def test_top_k_1_is_greedy():
    s = sampler(seed=3, temperature=2.0, top_k=1)
    assert s.params.greedy
    assert draw(s, 30) == [0] * 30


@pytest.mark.parametrize("k", [2, 3, 5])
def test_top_k_only_picks_among_the_k_best(k):
    picks = Counter(draw(sampler(seed=11, temperature=2.0, top_k=k), 400))
    assert set(picks) == set(range(k))  # the k best, all of them reachable, nothing else


def test_top_k_larger_than_vocab_is_harmless():
    picks = set(draw(sampler(seed=1, temperature=2.0, top_k=1000), 400))
    assert len(picks) > 5


def test_small_top_p_keeps_only_the_top_token():
    # Token 0 has ~30% of the mass: any top_p under that keeps it alone.
    assert set(draw(sampler(seed=5, top_p=0.05), 200)) == {0}


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.softmax(logits(), dim=-1)
    mass_two = float(probs[0] + probs[1])
    picks = set(draw(sampler(seed=5, top_p=mass_two - 0.01), 400))
    assert picks == {0, 1}


def test_low_temperature_concentrates_the_distribution():
    cold = Counter(draw(sampler(seed=9, temperature=0.2), 400))
    hot = Counter(draw(sampler(seed=9, temperature=1.5), 400))
    # Token 0's probability: 27% at temperature 1, 78% at 0.2, 21% at 1.5.
    assert cold[0] > 270
    assert hot[0] < 130
    assert len(hot) > len(cold)


def test_repetition_penalty_lowers_a_prompt_token():
    values = [2.0, 1.5, 0.0]
    assert sampler(temperature=0.0).next_token(logits(values)) == 0
    # 2.0 / 2 = 1.0 < 1.5: the prompt token loses its lead.
    assert sampler([0], temperature=0.0, repetition_penalty=2.0).next_token(logits(values)) == 1


def test_repetition_penalty_pushes_negative_logits_further_down():
    values = [-1.0, -1.2, -5.0]
    # -1.0 * 1.5 = -1.5 < -1.2
    assert sampler([0], temperature=0.0, repetition_penalty=1.5).next_token(logits(values)) == 1


def test_repetition_penalty_counts_output_tokens():
    values = [2.0, 1.5, 0.0]
    s = sampler(temperature=0.0, repetition_penalty=2.0)
    assert draw(s, 3, values) == [0, 1, 0]  # 0 then 1 seen: 1.0 vs 0.75 -> 0 again


def test_repetition_penalty_lowers_the_sampled_frequency():
    plain = Counter(draw(sampler(seed=2), 400))
    penalised = Counter(draw(sampler([0], seed=2, repetition_penalty=1.8), 400))
    # Token 0's probability drops from 27% to 13% (its logit 2.0 becomes 2.0 / 1.8).
    assert penalised[0] < plain[0] * 0.75


def test_presence_penalty_is_a_flat_push_on_output_tokens():
    values = [1.0, 0.5, -3.0]
    s = sampler(temperature=0.0, presence_penalty=0.3)
    # After the first pick, token 0 sits at 0.7 > 0.5 however often it repeats.
    assert draw(s, 4, values) == [0, 0, 0, 0]
    s = sampler(temperature=0.0, presence_penalty=1.0)
    # 0 -> 0.0 < 0.5 -> pick 1; then 0.0 vs -0.5 -> back to 0.
    assert draw(s, 3, values) == [0, 1, 0]


def test_frequency_penalty_scales_with_the_count():
    values = [1.0, 0.5, -3.0]
    s = sampler(temperature=0.0, frequency_penalty=0.3)
    # Token 0: 1.0, 0.7, 0.4 (< 0.5) -> token 1 wins on the third step.
    assert draw(s, 3, values) == [0, 0, 1]


def test_penalties_ignore_prompt_tokens():
    values = [1.0, 0.5, -3.0]
    s = sampler([0], temperature=0.0, presence_penalty=2.0, frequency_penalty=2.0)
    assert s.next_token(logits(values)) == 0


def test_presence_penalty_spreads_sampled_tokens():
    plain = draw(sampler(seed=4, temperature=0.7), 60)
    spread = draw(sampler(seed=4, temperature=0.7, presence_penalty=2.0), 60)
    assert Counter(spread)[0] < Counter(plain)[0]


def test_negative_frequency_penalty_makes_repeats_snowball():
    plain = draw(sampler(seed=4), 100)
    rich = draw(sampler(seed=4, frequency_penalty=-1.0), 100)
    assert Counter(plain).most_common(1)[0][1] < 50
    assert Counter(rich).most_common(1)[0][1] > 80


# -- SamplingParams validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"stop": [f"s{i}" for i in range(17)]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stop": ["ok", ""]}, "stop"),
    ],
)
def test_invalid_params_raise_invalid_parameter(kwargs, param):
    with pytest.raises(InvalidParameter) as info:
        SamplingParams(**kwargs)
    assert info.value.param == param
    assert param in str(info.value)
    assert isinstance(info.value, ValueError)


def test_edge_values_are_accepted():
    p = SamplingParams(
        temperature=2, top_p=1, top_k=-1, max_tokens=None, stop=[f"s{i}" for i in range(16)]
    )
    assert len(p.stop) == 16
    assert isinstance(p.stop, tuple)


def test_a_single_stop_string_becomes_a_tuple():
    assert SamplingParams(stop="END").stop == ("END",)
    assert SamplingParams(stop_token_ids=[3, 4]).stop_token_ids == (3, 4)


@pytest.mark.parametrize(
    ("kwargs", "greedy"),
    [({"temperature": 0}, True), ({"top_k": 1}, True), ({}, False), ({"top_k": 2}, False)],
)
def test_greedy_property(kwargs, greedy):
    assert SamplingParams(**kwargs).greedy is greedy
