"""The OpenAI wire format of logprobs and tool calls (split from protocol.py by size).

Data only, like protocol.py: conversions from lcfin's `TokenLogprob` / tool calls to the JSON
that chat (`choices[].logprobs.content`, `message.tool_calls`, `delta.tool_calls`) and legacy
completions (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`) send.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lcfin.engine.types import TokenLogprob

__all__ = ["chat_logprobs", "completion_logprobs", "tool_call_chunks", "tool_calls_wire"]


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


def tool_call_chunks(calls: Sequence[Any]) -> list[dict[str, Any]]:
    """`delta.tool_calls` carrying whole calls, each with its index (one chunk, as vLLM can)."""
    return [{"index": i, **c.to_openai()} for i, c in enumerate(calls)]
