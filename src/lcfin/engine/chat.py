"""Chat formatting (the tokenizer's template, or the plain fallback) and context fitting.

The plain template, used for base models without a chat template (Fin-Pythia) and for models
whose catalog entry says `chat_format = "plain"`::

    <system prompt>            (only when there is a system message)

    User: <message>
    Assistant: <message>
    ...
    Assistant:

Generation then stops at the next "\\nUser:" so a base model does not write both sides.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lcfin.engine.types import Message
from lcfin.errors import ContextLengthExceeded, InvalidParameter

if TYPE_CHECKING:
    from lcfin.engine.types import Tokenizer

__all__ = ["PLAIN_STOP", "RenderedPrompt", "fit_messages", "normalize_messages", "render_chat"]

ROLES = ("system", "user", "assistant", "tool")
#: A normalised message: role and text content, plus `tool_calls` / `tool_call_id` when given.
ChatTurn = dict[str, Any]
PLAIN_STOP = "\nUser:"


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt ready for the backend: its text, token ids, and stops the format needs."""

    text: str
    token_ids: list[int]
    extra_stops: tuple[str, ...] = ()
    dropped_messages: int = 0


def _content_text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidParameter(
                    f"messages[{index}].content: only text parts are supported",
                    param=f"messages[{index}].content",
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise InvalidParameter(
        f"messages[{index}].content must be a string or a list of text parts",
        param=f"messages[{index}].content",
    )


def _tool_calls(calls: object, index: int) -> list[dict[str, Any]]:
    """An assistant's OpenAI tool calls, with JSON-string arguments decoded for the template."""
    if not isinstance(calls, list):
        raise InvalidParameter(
            f"messages[{index}].tool_calls must be a list", param=f"messages[{index}].tool_calls"
        )
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidParameter(
                f"messages[{index}].tool_calls entries need function.name",
                param=f"messages[{index}].tool_calls",
            )
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            with contextlib.suppress(ValueError):  # else the template shows the string as is
                args = json.loads(args or "{}")
        out.append({**call, "function": {"name": fn["name"], "arguments": args}})
    return out


def _turn(msg: Message, index: int) -> ChatTurn:
    turn: ChatTurn = {"role": str(msg["role"]), "content": ""}
    if msg.get("content") is not None or not msg.get("tool_calls"):
        turn["content"] = _content_text(msg.get("content"), index)
    if msg.get("tool_calls"):
        turn["tool_calls"] = _tool_calls(msg["tool_calls"], index)
    for key in ("tool_call_id", "name"):
        if isinstance(msg.get(key), str):
            turn[key] = msg[key]
    return turn


def normalize_messages(messages: str | Sequence[Message]) -> list[ChatTurn]:
    """Validate chat messages into `{"role", "content", ...}` dicts (a str is one user message).

    Assistant `tool_calls` and tool messages' `tool_call_id` / `name` are kept for the template.
    """
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not messages:
        raise InvalidParameter("messages must contain at least one message", param="messages")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg:
            raise InvalidParameter(f"messages[{i}] must be an object with a role", param="messages")
        role = msg["role"]
        if role not in ROLES:
            raise InvalidParameter(
                f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}",
                param=f"messages[{i}].role",
            )
        out.append(_turn(msg, i))
    return out


def _plain(messages: list[ChatTurn]) -> str:
    lines: list[str] = []
    for msg in messages:
        if msg["role"] == "system":
            lines.append(msg["content"] + "\n")
        else:
            label = {"user": "User", "tool": "Tool"}.get(msg["role"], "Assistant")
            lines.append(f"{label}: {msg['content']}")
    return "\n".join(lines) + "\nAssistant:"


def render_chat(
    tokenizer: Tokenizer,
    messages: list[ChatTurn],
    *,
    plain: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> RenderedPrompt:
    """Render messages (and `tools`, if any) with the chat template, or the plain fallback."""
    if plain or not getattr(tokenizer, "chat_template", None):
        text = _plain(messages)
        return RenderedPrompt(text, tokenizer.encode(text), (PLAIN_STOP,))
    try:
        extra = {"tools": tools} if tools else {}
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **extra
        )
    except Exception as exc:  # jinja TemplateError, raised by the template's own checks
        raise InvalidParameter(
            f"The model's chat template rejected the messages: {exc}", param="messages"
        ) from None
    # The template already wrote the BOS token, if any; don't add it twice.
    return RenderedPrompt(str(text), tokenizer.encode(str(text), add_special_tokens=False))


#: How many characters per context token a text may have before `refuse_overlong` samples it.
_SAMPLE_CHARS_PER_TOKEN = 8
#: Tokens a prefix may gain or lose at its cut (a word split in two) on top of the limit.
_CUT_MARGIN = 16


def refuse_overlong(
    tokenizer: Any, texts: Sequence[str], *, max_model_len: int, param: str
) -> None:
    """Refuse a text that alone cannot fit the context, tokenizing only a prefix of it.

    A multi-megabyte prompt takes seconds of CPU to tokenize in full; a prefix of
    8 x max_model_len characters that already has more tokens than the context proves it
    too long at a fraction of the cost. Shorter or denser texts pass to the exact check.

    Raises:
        ContextLengthExceeded: a text whose prefix alone exceeds the context.
    """
    sample = _SAMPLE_CHARS_PER_TOKEN * max_model_len
    for text in texts:
        if len(text) <= sample:
            continue
        count = len(tokenizer.encode(text[:sample], add_special_tokens=False))
        if count > max_model_len + _CUT_MARGIN:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {max_model_len} tokens; the "
                f"{param} need more than {count - _CUT_MARGIN} tokens "
                f"({len(text)} characters in one text)",
                param=param,
                hint=f"shorten the {param}",
            )


def fit_messages(
    messages: list[ChatTurn],
    render: Callable[[list[ChatTurn]], RenderedPrompt],
    *,
    max_model_len: int,
    max_tokens: int | None,
    truncate: bool,
) -> RenderedPrompt:
    """Render, dropping the oldest non-system turns until prompt + max_tokens fit.

    The last message is never dropped. Without `truncate`, or when even the shortest
    conversation does not fit, raise ContextLengthExceeded.
    """
    needed = max_tokens or 1
    if needed >= max_model_len:  # no prompt could fit: the fault is max_tokens (as OpenAI says)
        raise ContextLengthExceeded.of(max_model_len, None, needed)
    current = list(messages)
    dropped = 0
    while True:
        prompt = render(current)
        if len(prompt.token_ids) + needed <= max_model_len:
            return RenderedPrompt(prompt.text, prompt.token_ids, prompt.extra_stops, dropped)
        droppable = [i for i, m in enumerate(current[:-1]) if m["role"] != "system"]
        if not truncate or not droppable:
            raise ContextLengthExceeded.of(max_model_len, len(prompt.token_ids), needed)
        del current[droppable[0]]
        dropped += 1
        # Keep turns alternating: a conversation may not start with an orphan assistant reply.
        rest = [i for i, m in enumerate(current[:-1]) if m["role"] != "system"]
        if rest and current[rest[0]]["role"] == "assistant":
            del current[rest[0]]
            dropped += 1
