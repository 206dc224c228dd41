"""Pydantic models of the OpenAI wire format's responses (named as in OpenAI's spec).

Data only, like protocol.py (the requests): each response model owns its conversion from the
core's `Completion` (`from_completion`, for n choices too: see `Completion.of_choices`), and the
stream renderers at the end turn the core's events into chunks (`ChatStream`, `CompletionStream`).
The wire format of logprobs and tool calls comes first: chat (`choices[].logprobs.content`,
`message.tool_calls`, `delta.tool_calls`) and legacy completions (`tokens`, `token_logprobs`,
`top_logprobs`, `text_offset`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from lcfin.engine.types import Completion, Delta, FinishReason, TokenLogprob, ToolCallDelta

if TYPE_CHECKING:
    from lcfin.server.protocol import ChatCompletionRequest, CompletionRequest

__all__ = [
    "ChatCompletionChunk",
    "ChatCompletionResponse",
    "ChatStream",
    "CompletionChunk",
    "CompletionResponse",
    "CompletionStream",
    "ErrorResponse",
    "ModelCard",
    "ModelList",
    "UsageInfo",
    "chat_delta_chunks",
    "chat_finish_chunk",
    "chat_logprobs",
    "completion_logprobs",
    "tool_call_delta_wire",
    "tool_calls_wire",
    "wire_finish",
]


def _token(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def chat_logprobs(entries: Sequence[TokenLogprob] | None) -> dict[str, Any] | None:
    """`choices[].logprobs` of a chat completion or chunk (None when not asked for)."""
    if entries is None:
        return None
    content = [
        {**_token(e.token, e.logprob), "top_logprobs": [_token(t, lp) for t, lp in e.top]}
        for e in entries
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(
    entries: Sequence[TokenLogprob] | None, offset: int = 0
) -> dict[str, Any] | None:
    """`choices[].logprobs` of a legacy completion; `offset` is where this text starts."""
    if entries is None:
        return None
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [dict(e.top) for e in entries],
        "text_offset": offsets,
    }


def tool_calls_wire(calls: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """`message.tool_calls` from the engine's `ToolCall`s (None when there are none)."""
    return [c.to_openai() for c in calls] if calls else None


def tool_call_delta_wire(piece: ToolCallDelta) -> dict[str, Any]:
    """One `delta.tool_calls[]` entry: a call's start (id, name, empty arguments), or more of
    its arguments (as OpenAI streams them)."""
    if piece.id is None:
        return {"index": piece.index, "function": {"arguments": piece.arguments}}
    return {
        "index": piece.index,
        "id": piece.id,
        "type": "function",
        "function": {"name": piece.name, "arguments": ""},
    }


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

    @classmethod
    def of_completion(cls, done: Completion, *, cost: bool = False) -> UsageInfo:
        """A (merged, see `Completion.of_choices`) completion's usage, with its cost if asked."""
        usage = done.usage
        cost_usd = (done.cost_usd or 0.0) if cost else None
        return cls.of(usage.prompt_tokens, usage.completion_tokens, cost_usd)

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
    def from_completion(cls, rid: str, model: str, done: Completion) -> ChatCompletionResponse:
        """One choice per `done.choices`; usage counts the prompt once (as OpenAI does)."""
        choices = [_ChatChoice.of(i, c) for i, c in enumerate(done.choices)]
        return cls(id=rid, model=model, choices=choices, usage=UsageInfo.of_completion(done))


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
        cls,
        rid: str,
        created: int,
        model: str,
        index: int,
        *,
        role: bool = False,
        content: str | None = None,
        finish: str | None = None,
        logprobs: dict[str, Any] | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> ChatCompletionChunk:
        """A chunk carrying a role, some text (and its logprobs), tool calls, or the finish."""
        delta = _Delta(role="assistant" if role else None, content=content, tool_calls=tool_calls)
        choice = _ChunkChoice(index=index, delta=delta, finish_reason=finish, logprobs=logprobs)
        return cls(id=rid, created=created, model=model, choices=[choice])


def chat_delta_chunks(
    rid: str, created: int, model: str, index: int, delta: Delta
) -> list[ChatCompletionChunk]:
    """The chunks of one streamed step of choice `index`: its text, then each piece of a tool
    call (a call's id and name first, then its arguments as they are generated).

    The step's logprobs ride on its first chunk (a step with only logprobs sends `delta: {}`).
    """
    lps = chat_logprobs(delta.logprobs)
    chunks = []
    if delta.text or (lps is not None and not delta.tool_calls):
        chunks.append(
            ChatCompletionChunk.text(rid, created, model, index, content=delta.text, logprobs=lps)
        )
        lps = None
    for piece in delta.tool_calls:
        call = [tool_call_delta_wire(piece)]
        chunks.append(
            ChatCompletionChunk.text(rid, created, model, index, tool_calls=call, logprobs=lps)
        )
        lps = None
    return chunks


def chat_finish_chunk(
    rid: str, created: int, model: str, index: int, done: Completion
) -> ChatCompletionChunk:
    """A choice's last chunk: its finish reason ("tool_calls" when it called functions)."""
    finish = "tool_calls" if done.tool_calls else wire_finish(done.finish_reason)
    return ChatCompletionChunk.text(rid, created, model, index, finish=finish)


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
    def from_completion(cls, rid: str, model: str, done: Completion) -> CompletionResponse:
        """Choices in prompt order, n per prompt; each prompt's tokens counted once."""
        choices = [
            _TextChoice(
                index=i,
                text=c.text,
                finish_reason=wire_finish(c.finish_reason),
                logprobs=completion_logprobs(c.logprobs),
            )
            for i, c in enumerate(done.choices)
        ]
        return cls(id=rid, model=model, choices=choices, usage=UsageInfo.of_completion(done))


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


Chunk = ChatCompletionChunk | CompletionChunk


class _Stream:
    """A stream's renderer: every event of the core goes through `on`, in arrival order."""

    def __init__(self, rid: str, model: str, n: int, usage: bool) -> None:
        self.rid, self.model, self.n, self.usage = rid, model, n, usage
        self.created = int(time.time())
        self.finals: dict[int, Completion] = {}  # each generation's, by index

    def start(self) -> Sequence[Chunk]:
        """The chunks sent before any event."""
        return []

    def on(self, index: int, event: Delta | Completion) -> Sequence[Chunk]:
        """The chunks one event of generation `index` makes."""
        if isinstance(event, Completion):
            self.finals[index] = event
            return self._final(index, event)
        return self._delta(index, event)

    def end(self) -> Sequence[Chunk]:
        """The usage chunk, when the client asked for it (or the server forces it)."""
        if not (self.usage and self.finals):
            return []
        done = Completion.of_choices([self.finals[i] for i in sorted(self.finals)], self.n)
        return [self._usage(UsageInfo.of_completion(done, cost=True))]

    def _delta(self, index: int, delta: Delta) -> Sequence[Chunk]:
        raise NotImplementedError

    def _final(self, index: int, done: Completion) -> Sequence[Chunk]:
        raise NotImplementedError

    def _usage(self, usage: UsageInfo) -> Chunk:
        raise NotImplementedError


class ChatStream(_Stream):
    """The chunks of a streamed chat completion: a role chunk per choice, then each one's."""

    def __init__(self, rid: str, model: str, req: ChatCompletionRequest, usage: bool) -> None:
        super().__init__(rid, model, req.n, usage)

    def _chunk(self, index: int, **fields: Any) -> ChatCompletionChunk:
        return ChatCompletionChunk.text(self.rid, self.created, self.model, index, **fields)

    def start(self) -> list[ChatCompletionChunk]:
        """Every choice's first chunk: the assistant role."""
        return [self._chunk(i, role=True, content="") for i in range(self.n)]

    def _delta(self, index: int, delta: Delta) -> list[ChatCompletionChunk]:
        """Text as it is generated; a tool call's id and name, then its arguments' pieces."""
        return chat_delta_chunks(self.rid, self.created, self.model, index, delta)

    def _final(self, index: int, done: Completion) -> list[ChatCompletionChunk]:
        """A choice's finish chunk ("tool_calls" when it called functions)."""
        return [chat_finish_chunk(self.rid, self.created, self.model, index, done)]

    def _usage(self, usage: UsageInfo) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.rid, created=self.created, model=self.model, choices=[], usage=usage
        )


class CompletionStream(_Stream):
    """The chunks of a streamed text completion, n per prompt (indexes in prompt order)."""

    def __init__(self, rid: str, model: str, req: CompletionRequest, usage: bool) -> None:
        super().__init__(rid, model, req.n, usage)
        self._offsets: dict[int, int] = {}  # text_offset of each choice's next token

    def _chunk(
        self, index: int, text: str, finish: str | None, lps: Sequence[TokenLogprob] | None = None
    ) -> CompletionChunk:
        offset = self._offsets.get(index, 0)
        self._offsets[index] = offset + sum(len(lp.token) for lp in lps or ())
        logprobs = completion_logprobs(lps, offset)
        choice = _TextChoice(index=index, text=text, finish_reason=finish, logprobs=logprobs)
        return CompletionChunk(
            id=self.rid, created=self.created, model=self.model, choices=[choice]
        )

    def _delta(self, index: int, delta: Delta) -> list[CompletionChunk]:
        if not (delta.text or delta.logprobs):
            return []
        return [self._chunk(index, delta.text, None, delta.logprobs)]

    def _final(self, index: int, done: Completion) -> list[CompletionChunk]:
        return [self._chunk(index, "", wire_finish(done.finish_reason))]

    def _usage(self, usage: UsageInfo) -> CompletionChunk:
        return CompletionChunk(
            id=self.rid, created=self.created, model=self.model, choices=[], usage=usage
        )


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
