"""Pydantic models of the OpenAI wire format (named as in OpenAI's spec), and lcfin's admin bodies.

Data only: no I/O, no FinancialLLM. Requests accept unknown fields (as OpenAI does) but are strict
about types; fields whose behaviour lcfin does not implement are rejected by name.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from lcfin.engine.types import Completion, FinishReason, new_request_id
from lcfin.errors import InvalidParameter
from lcfin.server.protocol_extras import chat_logprobs, completion_logprobs, tool_calls_wire

__all__ = [
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessage",
    "CompletionChunk",
    "CompletionRequest",
    "CompletionResponse",
    "ErrorResponse",
    "InferenceRequest",
    "ModelCard",
    "ModelList",
    "UsageInfo",
]

MAX_N = 8


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

    def sampling_kwargs(self, default_max_tokens: int | None) -> dict[str, Any]:
        """Keyword arguments for FinancialLLM (only the fields that were given)."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        values = {
            "max_tokens": self._max_tokens() or default_max_tokens,
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
        return {k: v for k, v in values.items() if v is not None or k == "max_tokens"}

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

    def sampling_kwargs(self, default_max_tokens: int | None) -> dict[str, Any]:
        """As `_Sampling.sampling_kwargs`, plus logprobs and tools (validated by the core)."""
        top = (self.top_logprobs or 0) if self.logprobs else None
        extra = {"logprobs": top, "tools": self.tools, "tool_choice": self.tool_choice}
        given = {k: v for k, v in extra.items() if v is not None}
        return {**super().sampling_kwargs(default_max_tokens), **given}

    @property
    def tools_enabled(self) -> bool:
        """Whether the reply is parsed for tool calls (then streamed whole at the end)."""
        return bool(self.tools) and self.tool_choice != "none"

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

    def sampling_kwargs(self, default_max_tokens: int | None) -> dict[str, Any]:
        """As `_Sampling.sampling_kwargs`, plus the legacy `logprobs` (top-n count)."""
        kwargs = super().sampling_kwargs(default_max_tokens)
        return kwargs if self.logprobs is None else {**kwargs, "logprobs": self.logprobs}

    def prompts(self) -> list[str]:
        """The prompt(s) as a list."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


# -- responses ----------------------------------------------------------------------------


class UsageInfo(BaseModel):
    """Token usage (CompletionUsage), plus lcfin's `cost_usd` in a stream's usage chunk."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float | None = Field(
        None,
        description=(
            "lcfin extension, in a stream's usage chunk only: what the request cost in USD "
            "(non-streaming responses carry it in the x-lcfin-cost-usd header)."
        ),
    )

    @classmethod
    def of(cls, prompt: int, completion: int, cost_usd: float | None = None) -> UsageInfo:
        """Usage from the two counts (and the cost, for a stream's usage chunk)."""
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cost_usd=cost_usd,
        )

    @model_serializer(mode="wrap")
    def _drop_null_cost(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("cost_usd") is None:
            data.pop("cost_usd", None)
        return data


def wire_finish(reason: FinishReason | None) -> str | None:
    """OpenAI's finish reasons are stop/length: an aborted request reports where it ended."""
    return {"abort": "stop", "error": "stop"}.get(reason or "", reason)


class _ChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: None = None
    tool_calls: list[dict[str, Any]] | None = None

    @model_serializer(mode="wrap")
    def _drop_no_calls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("tool_calls") is None:
            data.pop("tool_calls", None)
        return data


class _ChatChoice(BaseModel):
    index: int
    message: _ChoiceMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None

    @classmethod
    def of(cls, index: int, c: Completion) -> _ChatChoice:
        """A choice from a completion: its text or tool calls, and its logprobs."""
        calls = tool_calls_wire(c.tool_calls)
        return cls(
            index=index,
            message=_ChoiceMessage(content=c.text or (None if calls else ""), tool_calls=calls),
            finish_reason="tool_calls" if calls else wire_finish(c.finish_reason),
            logprobs=chat_logprobs(c.logprobs),
        )


class ChatCompletionResponse(BaseModel):
    """The non-streaming chat completion."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[_ChatChoice]
    usage: UsageInfo

    @classmethod
    def from_completions(
        cls, rid: str, model: str, done: list[Completion]
    ) -> ChatCompletionResponse:
        """One choice per completion; usage counts the prompt once (as OpenAI does)."""
        choices = [_ChatChoice.of(i, c) for i, c in enumerate(done)]
        usage = UsageInfo.of(
            done[0].usage.prompt_tokens, sum(c.usage.completion_tokens for c in done)
        )
        return cls(id=rid, model=model, choices=choices, usage=usage)


class _Delta(BaseModel):
    """Only the fields a chunk carries are sent (OpenAI sends `{}` in the last chunk)."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class _ChunkChoice(BaseModel):
    index: int
    delta: _Delta
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(BaseModel):
    """One SSE event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[_ChunkChoice]
    usage: UsageInfo | None = None

    @classmethod
    def text(
        cls, rid: str, created: int, model: str, index: int, *, role: bool = False,
        content: str | None = None, finish: str | None = None,
        logprobs: dict[str, Any] | None = None, tool_calls: list[dict[str, Any]] | None = None,
    ) -> ChatCompletionChunk:  # fmt: skip
        """A chunk carrying a role, some text (and its logprobs), tool calls, or the finish."""
        delta = _Delta(role="assistant" if role else None, content=content, tool_calls=tool_calls)
        choice = _ChunkChoice(index=index, delta=delta, finish_reason=finish, logprobs=logprobs)
        return cls(id=rid, created=created, model=model, choices=[choice])


class _TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class CompletionResponse(BaseModel):
    """The non-streaming text completion."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[_TextChoice]
    usage: UsageInfo

    @classmethod
    def from_completions(
        cls, rid: str, model: str, done: list[Completion], n: int
    ) -> CompletionResponse:
        """Choices in prompt order, n per prompt; each prompt's tokens counted once."""
        choices = [
            _TextChoice(
                index=i,
                text=c.text,
                finish_reason=wire_finish(c.finish_reason),
                logprobs=completion_logprobs(c.logprobs),
            )
            for i, c in enumerate(done)
        ]
        prompt_tokens = sum(c.usage.prompt_tokens for c in done[::n])
        usage = UsageInfo.of(prompt_tokens, sum(c.usage.completion_tokens for c in done))
        return cls(id=rid, model=model, choices=choices, usage=usage)


class CompletionChunk(BaseModel):
    """One SSE event of a streamed text completion (`usage` only in the usage chunk)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[_TextChoice]
    usage: UsageInfo | None = None

    @model_serializer(mode="wrap")
    def _drop_null_usage(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("usage") is None:
            data.pop("usage", None)
        return data


class ModelCard(BaseModel):
    """One entry of /v1/models; `loaded` says whether it serves now (else: switchable)."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "lcfin"
    loaded: bool = False
    demo: bool = False
    description: str = ""
    max_model_len: int | None = None


class ModelList(BaseModel):
    """GET /v1/models."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class _ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The OpenAI error envelope."""

    error: _ErrorBody


class InferenceRequest(_Request):
    """POST /inference (the seed's simple endpoint)."""

    prompt: str = Field(min_length=1)
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0, le=2)
    model_config = ConfigDict(extra="allow", strict=False)


def chunk_id(prefix: str) -> str:
    """An id for a response or stream."""
    return new_request_id(prefix)
