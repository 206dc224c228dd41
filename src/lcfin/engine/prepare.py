"""From a call's arguments to what the engine runs: sampling parameters and the fitted prompt."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from lcfin.engine.chat import RenderedPrompt, fit_messages, normalize_messages, render_chat
from lcfin.engine.types import Completion, Delta, Message, SamplingParams
from lcfin.errors import InvalidParameter

if TYPE_CHECKING:
    from lcfin.engine.manager import LoadedModel

__all__ = ["Prompt", "final", "question_messages", "render_prompt", "sampling_params"]

_PARAM_NAMES = {f.name for f in dataclasses.fields(SamplingParams)}
Prompt = str | Sequence[Message]


def sampling_params(loaded: LoadedModel, params: dict[str, Any]) -> SamplingParams:
    """The request's sampling parameters over the model's generation defaults.

    Raises:
        InvalidParameter: an unknown or invalid parameter.
    """
    unknown = sorted(set(params) - _PARAM_NAMES)
    if unknown:
        raise InvalidParameter(f"Unknown parameter(s): {', '.join(unknown)}", param=unknown[0])
    defaults = getattr(loaded.backend, "default_sampling", {})
    given = {k: v for k, v in params.items() if v is not None or k == "max_tokens"}
    return SamplingParams(**{**defaults, **given})


def render_prompt(
    loaded: LoadedModel,
    messages: Prompt | None,
    prompt: str | None,
    sampling: SamplingParams,
    truncate: bool,
    tools: list[dict[str, Any]] | None = None,
) -> RenderedPrompt:
    """The chat `messages` (templated) or raw `prompt`, fitted to the model's context.

    Raises:
        InvalidParameter: an empty prompt.
        ContextLengthExceeded: the prompt plus max_tokens do not fit.
    """
    tok, limit = loaded.backend.tokenizer, loaded.backend.max_model_len
    if prompt is not None:
        ids = tok.encode(prompt)
        if not ids:  # nothing to prefill: the engine would fail on an empty batch
            raise InvalidParameter("The prompt is empty (no tokens)", param="prompt")
        rendered = RenderedPrompt(prompt, ids)
        return fit_messages(
            [{"role": "user", "content": prompt}],
            lambda _: rendered,
            max_model_len=limit,
            max_tokens=sampling.max_tokens,
            truncate=False,
        )
    plain = loaded.spec.chat_format == "plain"
    return fit_messages(
        normalize_messages(messages or []),
        lambda msgs: render_chat(tok, msgs, plain=plain, tools=tools),
        max_model_len=limit,
        max_tokens=sampling.max_tokens,
        truncate=truncate,
    )


def question_messages(text: str, system: str | None) -> list[Message]:
    """One user question, after an optional system prompt."""
    msgs: list[Message] = [{"role": "system", "content": system}] if system else []
    return [*msgs, {"role": "user", "content": text}]


async def final(events: AsyncIterator[Delta | Completion]) -> Completion:
    """The `Completion` that ends a stream of events."""
    result: Completion | None = None
    async for event in events:
        if isinstance(event, Completion):
            result = event
    assert result is not None  # a generation always ends with a Completion
    return result
