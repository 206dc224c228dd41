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
#: Tokens a prefix's count may exceed its characters' share of the whole text's (a cut word).
_CUT_MARGIN = 16


def count_prefix_tokens(tokenizer: Any, text: str, max_model_len: int) -> int:
    """A lower bound of `text`'s tokens at a bounded cost: its exact count, or, for a text over
    8 x max_model_len characters, its first 8 x max_model_len characters' count less what a
    cut through a word may add."""
    sample = _SAMPLE_CHARS_PER_TOKEN * max_model_len
    count = len(tokenizer.encode(text[:sample], add_special_tokens=False))
    return count if len(text) <= sample else max(0, count - _CUT_MARGIN)


def refuse_overlong(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_model_len: int,
    max_tokens: int | None,
    param: str,
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
        count = count_prefix_tokens(tokenizer, text, max_model_len)
        if count > max_model_len:
            raise ContextLengthExceeded.of(
                max_model_len, count, max_tokens or 1, prompt=param, at_least=True
            )


def fit_messages(
    messages: list[ChatTurn],
    render: Callable[[list[ChatTurn]], RenderedPrompt],
    *,
    max_model_len: int,
    max_tokens: int | None,
    truncate: bool,
    count_tokens: Callable[[str], int] | None = None,
) -> RenderedPrompt:
    """Render, dropping the oldest non-system turns until prompt + max_tokens fit.

    The last message is never dropped. Without `truncate`, or when even the shortest
    conversation does not fit, raise ContextLengthExceeded. With `count_tokens` (a lower
    bound of a text's tokens), turns that cannot fit are dropped before the first render, so a
    long conversation costs a few renders, not one per dropped turn.
    """
    needed = max_tokens or 1
    if needed >= max_model_len:  # no prompt could fit: the fault is max_tokens (as OpenAI says)
        raise ContextLengthExceeded.of(max_model_len, None, needed)
    current = list(messages)
    dropped = 0
    if truncate and count_tokens is not None:
        dropped = _drop_what_cannot_fit(current, count_tokens, max_model_len - needed)
    while True:
        prompt = render(current)
        if len(prompt.token_ids) + needed <= max_model_len:
            return RenderedPrompt(prompt.text, prompt.token_ids, prompt.extra_stops, dropped)
        if not truncate or not _droppable(current):
            raise ContextLengthExceeded.of(max_model_len, len(prompt.token_ids), needed)
        dropped += _drop_oldest(current)


def _droppable(turns: list[ChatTurn]) -> list[int]:
    """Indices of the turns truncation may drop: not a system turn, not the last one."""
    return [i for i, m in enumerate(turns[:-1]) if m["role"] != "system"]


def _drop_oldest(turns: list[ChatTurn]) -> int:
    """Drop the oldest droppable turn (and an assistant reply it orphans); how many went."""
    del turns[_droppable(turns)[0]]
    # Keep turns alternating: a conversation may not start with an orphan assistant reply.
    rest = _droppable(turns)
    if rest and turns[rest[0]]["role"] == "assistant":
        del turns[rest[0]]
        return 2
    return 1


def _drop_what_cannot_fit(
    turns: list[ChatTurn], count_tokens: Callable[[str], int], room: int
) -> int:
    """Drop the oldest turns (as `_drop_oldest` would) while the contents left need more than
    `room` tokens; how many went.

    Each content's count may be one token off where the template joins it to the next, so
    each turn is counted one token short: this never drops a turn the exact check would keep.
    """
    counts = [max(0, count_tokens(str(t.get("content") or "")) - 1) for t in turns]
    total, order, gone = sum(counts), _droppable(turns), set()
    j = 0
    while total > room and j < len(order):
        total -= counts[order[j]]
        gone.add(order[j])
        j += 1
        if j < len(order) and turns[order[j]]["role"] == "assistant":  # orphaned: goes too
            total -= counts[order[j]]
            gone.add(order[j])
            j += 1
    turns[:] = [t for i, t in enumerate(turns) if i not in gone]
    return len(gone)
