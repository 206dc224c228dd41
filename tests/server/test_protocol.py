"""The request models turn themselves into the core's typed request (`to_sampling_params`,
`generation`): only the fields a client gave override the model's defaults."""

from __future__ import annotations

from typing import Any

import pytest

from lcfin.engine.types import ResponseFormat, SamplingParams
from lcfin.errors import InvalidParameter
from lcfin.server.protocol import ChatCompletionRequest, CompletionRequest, InferenceRequest

MODEL_DEFAULTS = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
MESSAGES = [{"role": "user", "content": "What is CET1?"}]


def chat(**body: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": MESSAGES, **body})


def completion(**body: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "m", "prompt": "CET1 is", **body})


def test_fields_not_given_take_the_models_defaults() -> None:
    params = chat(temperature=0, stop="\n", seed=3).to_sampling_params(MODEL_DEFAULTS)

    assert params == SamplingParams(
        max_tokens=None, temperature=0, top_p=0.95, top_k=20, stop=("\n",), seed=3
    )


def test_max_tokens_none_means_the_context_for_chat_and_16_for_completions() -> None:
    assert chat().to_sampling_params({}).max_tokens is None
    assert chat(max_tokens=5, max_completion_tokens=7).to_sampling_params({}).max_tokens == 7
    assert completion().to_sampling_params({}).max_tokens == 16  # OpenAI's legacy default
    assert completion(max_tokens=3).to_sampling_params({}).max_tokens == 3


def test_logprobs_and_output_format_are_sampling_tools_are_not() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    req = chat(
        logprobs=True,
        top_logprobs=2,
        response_format={"type": "json_object"},
        tools=[tool],
        tool_choice="required",
    )

    params = req.to_sampling_params({})
    gen = req.generation()

    assert (params.logprobs, params.response_format) == (2, ResponseFormat())
    assert (gen.tools, gen.tool_choice, gen.n, gen.raw) == ([tool], "required", 1, False)
    assert gen.sources == [MESSAGES] and gen.sampling is req
    assert chat(logprobs=False, top_logprobs=None).to_sampling_params({}).logprobs is None
    assert completion(logprobs=3).to_sampling_params({}).logprobs == 3


def test_completions_send_every_prompt_raw_with_n_each() -> None:
    gen = completion(prompt=["a", "b"], n=2).generation()

    assert (gen.sources, gen.raw, gen.n, gen.tools) == (["a", "b"], True, 2, None)


def test_inference_sends_its_own_defaults() -> None:
    req = InferenceRequest.model_validate({"prompt": "hi"})

    assert req.to_sampling_params(MODEL_DEFAULTS) == SamplingParams(
        max_tokens=256, temperature=0.7, top_p=0.95, top_k=20
    )
    assert req.generation().truncate


def test_bad_values_are_refused_by_the_engine_naming_the_field() -> None:
    with pytest.raises(InvalidParameter) as caught:
        chat(stop=[""]).to_sampling_params({})
    assert caught.value.param == "stop"
    with pytest.raises(InvalidParameter) as caught:  # the library's unknown keywords
        SamplingParams.over({}, {"temprature": 1.0})
    assert caught.value.param == "temprature"
