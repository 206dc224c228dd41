"""The vLLM mapping of structured outputs and logprobs (pure: no vLLM needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lcfin.engine.types import SamplingParams
from lcfin.engine.vllm.backend import delta_from_output
from lcfin.engine.vllm.sampling import logprobs_from_output, structured_outputs_kwargs


@dataclass
class Logprob:
    """Stands in for `vllm.logprobs.Logprob`."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class Comp:
    """Stands in for `vllm.outputs.CompletionOutput` (the attributes used)."""

    text: str
    token_ids: list[int]
    logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: Any = None


@dataclass
class Out:
    """Stands in for `vllm.outputs.RequestOutput` (the attributes used)."""

    outputs: list[Comp]
    finished: bool = False
    prompt_token_ids: list[int] = field(default_factory=lambda: [1, 2])


def test_no_format_no_structured_outputs() -> None:
    assert structured_outputs_kwargs(SamplingParams()) is None


def test_json_object_and_schema() -> None:
    obj = SamplingParams(response_format={"type": "json_object"})
    assert structured_outputs_kwargs(obj) == {"json_object": True}
    schema = {"type": "object", "properties": {"lcr": {"type": "number"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    kw = structured_outputs_kwargs(SamplingParams(response_format=fmt))
    assert kw == {"json": schema}


def test_logprobs_mapping_chosen_and_top_sorted() -> None:
    positions = [
        {5: Logprob(-0.5, 1, " LCR"), 6: Logprob(-1.5, 2, " NSFR"), 7: Logprob(-0.1, 1, "A")},
    ]
    comp = Comp(" LCR", [5], positions)
    (entry,) = logprobs_from_output(comp, 2) or ()
    assert (entry.token, entry.logprob, entry.token_id) == (" LCR", -0.5, 5)
    assert entry.top == (("A", -0.1), (" LCR", -0.5))


def test_logprobs_leave_out_what_the_grammar_forbids_and_decode_each_token() -> None:
    inf = float("-inf")
    positions = [{5: Logprob(-0.5, 1, ""), 6: Logprob(inf, 2, "x"), 7: Logprob(-2.0, 3, "y")}]
    comp = Comp("\ufffd", [5], positions)
    (entry,) = logprobs_from_output(comp, 3, decode=lambda ids: f"<{ids[0]}>") or ()
    assert (entry.token, entry.logprob) == ("<5>", -0.5)  # the tokenizer's text, not ""
    assert entry.top == (("<5>", -0.5), ("<7>", -2.0))  # no -inf: JSON cannot carry it


def test_logprobs_not_asked_or_absent() -> None:
    assert logprobs_from_output(Comp("x", [1]), 2) is None
    assert logprobs_from_output(Comp("x", [1], [{1: Logprob(-1.0)}]), None) is None


def test_delta_carries_logprobs() -> None:
    comp = Comp("x", [3], [{3: Logprob(-0.25, 1, "x")}], finish_reason="stop")
    delta = delta_from_output(Out([comp], finished=True), first=True, logprobs=0)
    assert delta.logprobs is not None and delta.logprobs[0].logprob == -0.25
    assert delta.logprobs[0].top == ()
