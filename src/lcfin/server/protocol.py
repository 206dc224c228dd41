"""Pydantic models of the OpenAI wire format (named as in OpenAI's spec), and lcfin's admin bodies.

Data only: no I/O, no FinancialLLM. Requests accept unknown fields (as OpenAI does) but are strict
about types; fields whose behaviour lcfin does not implement are rejected by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

from lcfin.engine.types import SamplingParams, SamplingSource, new_request_id
from lcfin.errors import InvalidParameter

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "Generation",
    "InferenceRequest",
]

MAX_N = 8
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for the legacy completions API


@dataclass(frozen=True)
class Generation:
    """What a request asks the core to run: the arguments of `FinancialLLM.abatch`."""

    sources: Sequence[Any]  # conversations, or raw prompts when `raw`
    sampling: SamplingSource
    n: int = 1
    raw: bool = False
    truncate: bool = False  # a conversation too long for the context is a 400
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


class _Request(BaseModel):
    """Unknown fields pass (OpenAI clients send many); known ones must have the right type."""

    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(_Request):
    """`stream_options`: only include_usage matters here."""

    include_usage: bool = False


class ChatMessage(_Request):
    """One message of a conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class _Sampling(_Request):
    """The sampling fields chat and completions share."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    logit_bias: dict[str, float] | None = None
    top_k: int | None = Field(None, ge=-1, description="lcfin extension: sample from the k best.")
    repetition_penalty: float | None = Field(
        None, gt=0, description="lcfin extension: penalise tokens already in prompt or output."
    )
    ignore_eos: bool | None = Field(
        None, description="lcfin extension (as vLLM): keep generating past end-of-sequence."
    )
    response_format: dict[str, Any] | None = None

    def check_supported(self) -> None:
        """Reject, by name, fields whose behaviour lcfin does not implement.

        Raises:
            InvalidParameter: naming the field in `param`.
        """
        if self.n > MAX_N:
            raise InvalidParameter(f"n must be at most {MAX_N}, got {self.n}", param="n")
        if self.logit_bias:
            raise InvalidParameter("logit_bias is not supported by lcfin", param="logit_bias")
        if not self.stream and self.stream_options is not None:
            raise InvalidParameter(
                "stream_options is only allowed with stream=true", param="stream_options"
            )

    @property
    def include_usage(self) -> bool:
        """Whether the client asked for the final usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def to_sampling_params(self, defaults: Mapping[str, Any]) -> SamplingParams:
        """The fields that were given, over `defaults` (the model's generation_config).

        Raises:
            InvalidParameter: a value the engine refuses.
        """
        return SamplingParams.over(defaults, self._sampling_fields())

    def _sampling_fields(self) -> dict[str, Any]:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return {
            "max_tokens": self._max_tokens(),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "stop": tuple(stop) if stop else None,
            "seed": self.seed,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "repetition_penalty": self.repetition_penalty,
            "ignore_eos": self.ignore_eos,
            "response_format": self.response_format,
        }

    def _max_tokens(self) -> int | None:
        return self.max_tokens


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def check_supported(self) -> None:
        """As `_Sampling.check_supported`, plus the chat-only fields."""
        super().check_supported()
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidParameter("top_logprobs needs logprobs=true", param="top_logprobs")

    def _sampling_fields(self) -> dict[str, Any]:
        top = (self.top_logprobs or 0) if self.logprobs else None
        return {**super()._sampling_fields(), "logprobs": top}

    def generation(self) -> Generation:
        """The conversation, its n choices, sampling, and tools (validated by the core)."""
        return Generation(
            [self.core_messages()], self, self.n, tools=self.tools, tool_choice=self.tool_choice
        )

    def _max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def core_messages(self) -> list[dict[str, object]]:
        """Messages for FinancialLLM ('developer' is OpenAI's new name for 'system')."""
        return [
            {
                **(m.model_extra or {}),  # tool_calls, tool_call_id
                "role": "system" if m.role == "developer" else m.role,
                "content": m.content or "",
            }
            for m in self.messages
        ]


class CompletionRequest(_Sampling):
    """POST /v1/completions (the legacy text completion API)."""

    prompt: str | list[str]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None
    logprobs: int | None = None

    def check_supported(self) -> None:
        """As `_Sampling.check_supported`, plus the completion-only fields."""
        super().check_supported()
        if isinstance(self.prompt, list) and not self.prompt:
            raise InvalidParameter("prompt must not be an empty list", param="prompt")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise InvalidParameter("logprobs must be in [0, 20]", param="logprobs")
        for name in ("echo", "best_of", "suffix"):
            value = getattr(self, name)
            if value not in (None, False) and not (name == "best_of" and value == self.n):
                raise InvalidParameter(f"{name} is not supported by lcfin", param=name)

    def _sampling_fields(self) -> dict[str, Any]:
        return {**super()._sampling_fields(), "logprobs": self.logprobs}

    def _max_tokens(self) -> int | None:
        return self.max_tokens or COMPLETIONS_DEFAULT_MAX_TOKENS

    def generation(self) -> Generation:
        """The raw prompts, n choices of each, and sampling."""
        return Generation(self.prompts(), self, self.n, raw=True)

    def prompts(self) -> list[str]:
        """The prompt(s) as a list."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class InferenceRequest(_Request):
    """POST /inference (the seed's simple endpoint)."""

    prompt: str = Field(min_length=1)
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0, le=2)

    def to_sampling_params(self, defaults: Mapping[str, Any]) -> SamplingParams:
        """`max_new_tokens` and `temperature` over `defaults`."""
        given = {"max_tokens": self.max_new_tokens, "temperature": self.temperature}
        return SamplingParams.over(defaults, given)

    def generation(self) -> Generation:
        """The prompt as one user message (as the seed's /inference sent it)."""
        return Generation([self.prompt], self, truncate=True)


def chunk_id(prefix: str) -> str:
    """An id for a response or stream."""
    return new_request_id(prefix)
