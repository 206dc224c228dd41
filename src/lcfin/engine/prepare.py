"""From a request's parameters and prompt(s) to `Job`s ready for the backend.

Sampling parameters, the chat template, tokenization and context fitting: CPU work that can take
seconds for a multi-megabyte prompt, so `FinancialLLM` runs `prepare_jobs` in a worker thread and
the event loop keeps answering (see #16).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lcfin.engine.chat import (
    RenderedPrompt,
    count_prefix_tokens,
    fit_messages,
    normalize_messages,
    refuse_overlong,
    render_chat,
)
from lcfin.engine.fanout import Job
from lcfin.engine.function_calls import forced_call_format, tools_enabled
from lcfin.engine.types import (
    GenerationRequest,
    Message,
    SamplingParams,
    SamplingSource,
)
from lcfin.errors import InvalidParameter

if TYPE_CHECKING:
    from lcfin.engine.manager import LoadedModel

__all__ = [
    "Prompt",
    "SamplingKeywords",
    "prepare_jobs",
    "question_messages",
    "render_prompt",
    "sampling_for",
]

#: Chat messages (a str is one user message), or a raw prompt.
Prompt = str | Sequence[Message]


@dataclass(frozen=True)
class SamplingKeywords:
    """The library's keyword parameters (`llm.chat(..., temperature=0)`) as a `SamplingSource`."""

    params: Mapping[str, Any]

    def to_sampling_params(self, defaults: Mapping[str, Any]) -> SamplingParams:
        """The keywords over `defaults`.

        Raises:
            InvalidParameter: an unknown parameter or a bad value.
        """
        return SamplingParams.over(defaults, self.params)


def sampling_for(loaded: LoadedModel, source: SamplingSource) -> SamplingParams:
    """`SamplingParams` from `source` over the model's own defaults.

    Raises:
        InvalidParameter: an unknown parameter or a bad value.
    """
    return source.to_sampling_params(getattr(loaded.backend, "default_sampling", {}))


def render_prompt(
    loaded: LoadedModel,
    messages: Prompt | None,
    prompt: str | None,
    sampling: SamplingParams,
    truncate: bool,
    tools: list[dict[str, Any]] | None = None,
) -> RenderedPrompt:
    """Chat messages through the template, or a raw prompt, tokenized and fitted to the context.

    Raises:
        InvalidParameter, ContextLengthExceeded: an empty prompt, or one that does not fit.
    """
    tok, limit = loaded.backend.tokenizer, loaded.backend.max_model_len
    if prompt is not None:
        refuse_overlong(
            tok, [prompt], max_model_len=limit, max_tokens=sampling.max_tokens, param="prompt"
        )
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
    turns = normalize_messages(messages or [])
    kept = [  # what truncation never drops: system turns and the last one
        t["content"]
        for i, t in enumerate(turns)
        if not truncate or t["role"] == "system" or i == len(turns) - 1
    ]
    refuse_overlong(
        tok, kept, max_model_len=limit, max_tokens=sampling.max_tokens, param="messages"
    )
    return fit_messages(
        turns,
        lambda msgs: render_chat(tok, msgs, plain=plain, tools=tools),
        max_model_len=limit,
        max_tokens=sampling.max_tokens,
        truncate=truncate,
        count_tokens=lambda text: count_prefix_tokens(tok, text, limit),
    )


def prepare_jobs(
    loaded: LoadedModel,
    sources: Sequence[Prompt],
    raw: bool,
    n: int,
    ids: list[str],
    truncate: bool,
    tools: list[dict[str, Any]] | None,
    tool_choice: str | dict[str, Any] | None,
    sampling: SamplingSource,
) -> list[Job]:
    """The n jobs of each source (rendered once; choice i gets seed + i), named by `ids`."""
    fmt = loaded.spec.tool_call_format
    first = sampling_for(loaded, sampling)  # validates the seed (and wraps it to 64 bits)
    forced = forced_call_format(tools, tool_choice, fmt)
    if forced is not None:
        first = dataclasses.replace(first, response_format=forced)
    shown = tools if tools_enabled(tools, tool_choice) else None
    jobs: list[Job] = []
    samplings = [first] * n  # unseeded choices differ by themselves
    if first.seed is not None:  # choice i gets seed + i, wrapped too
        samplings[1:] = [dataclasses.replace(first, seed=first.seed + i) for i in range(1, n)]
    for source in sources:
        messages, prompt = (None, str(source)) if raw else (source, None)
        rendered = render_prompt(loaded, messages, prompt, samplings[0], truncate, shown)
        for params in samplings:
            request = GenerationRequest(
                rendered.token_ids,
                params,
                ids[len(jobs)],
                rendered.text,
                extra_stops=rendered.extra_stops,
            )
            jobs.append(Job(request, shown is not None, fmt, rendered.dropped_messages))
    return jobs


def question_messages(text: str, system: str | None) -> list[Message]:
    """One user question, after an optional system prompt."""
    msgs: list[Message] = [{"role": "system", "content": system}] if system else []
    return [*msgs, {"role": "user", "content": text}]
