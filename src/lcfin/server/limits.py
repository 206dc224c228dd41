"""Input limits the request models do not express: message count and the characters of text.

Each failure is an `InvalidParameter` (400 `invalid_request_error`) naming the parameter:

- more than LCFIN_MAX_MESSAGES messages -> `messages`;
- more than LCFIN_MAX_PROMPTS prompts in a completions list -> `prompt`;
- a NUL or another C0 control character (other than tab, newline, carriage return), DEL, or a
  lone UTF-16 surrogate (a `\\ud800` JSON escape, which is not valid UTF-8) in a message's text
  -> `messages[i].content`, in a prompt -> `prompt` (or `prompt[i]`). Stop strings may hold
  any character (a stop that can never match is a common idiom): only their count is limited.

Raw bytes that are not UTF-8 never get this far: `read_json` answers 400 `body` for them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from lcfin.errors import InvalidParameter

if TYPE_CHECKING:
    from lcfin.server.protocol import ChatCompletionRequest, CompletionRequest

__all__ = ["check_chat", "check_completion", "check_text"]

_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def check_text(text: str, param: str) -> None:
    """Refuse control characters and lone surrogates in `text`.

    Raises:
        InvalidParameter: naming `param` and the offending character's code point.
    """
    found = _BAD.search(text)
    if found is not None:
        raise InvalidParameter(
            f"{param} contains the character U+{ord(found[0]):04X} at offset {found.start()}, "
            "which is not allowed (control characters other than tab and newlines, and "
            "invalid UTF-8, are refused)",
            param=param,
        )


def _parts_text(content: str | list[dict[str, Any]] | None) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    return [str(part.get("text", "")) for part in content if isinstance(part, dict)]


def check_chat(req: ChatCompletionRequest, max_messages: int) -> None:
    """Apply the message-count and character limits to a chat request.

    Raises:
        InvalidParameter: naming `messages` or `messages[i].content`.
    """
    if len(req.messages) > max_messages:
        raise InvalidParameter(
            f"At most {max_messages} messages are allowed, got {len(req.messages)}",
            param="messages",
            hint="drop older turns, or ask the operator to raise LCFIN_MAX_MESSAGES",
        )
    for i, msg in enumerate(req.messages):
        for text in _parts_text(msg.content):
            check_text(text, f"messages[{i}].content")


def check_completion(req: CompletionRequest, max_prompts: int) -> None:
    """Apply the list-length and character limits to a completions request's prompt(s).

    Raises:
        InvalidParameter: naming `prompt` or `prompt[i]`.
    """
    prompts = req.prompts()
    if len(prompts) > max_prompts:
        raise InvalidParameter(
            f"At most {max_prompts} prompts are allowed in one request, got {len(prompts)}",
            param="prompt",
            hint="split the list over several requests, or ask the operator to raise "
            "LCFIN_MAX_PROMPTS",
        )
    for i, prompt in enumerate(prompts):
        check_text(prompt, "prompt" if isinstance(req.prompt, str) else f"prompt[{i}]")
