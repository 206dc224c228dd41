"""The Responses API's input items, read into the core's chat messages.

    {"role": "user" | "system" | "developer" | "assistant", "content": str | [text parts]}
    {"type": "message", ...}                      the same, as the spec's item (or our output)
    {"type": "function_call", "call_id", "name", "arguments"}   a call the model made
    {"type": "function_call_output", "call_id", "output"}      its result

Text parts are `input_text` and `output_text`; images, files, audio and every other item type
are a 400 naming the item. Calls that follow an assistant message join that message; a tool
result gets its function's name from the call with the same `call_id`.
"""

from __future__ import annotations

from typing import Any

from lcfin.errors import InvalidParameter
from lcfin.server.limits import check_text

__all__ = ["add_item"]

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = ("input_text", "output_text")


def _bad(message: str, param: str) -> InvalidParameter:
    return InvalidParameter(message, param=param)


def _text(content: object, param: str, checked: bool = True) -> str:
    if isinstance(content, str):
        if checked:
            check_text(content, param)
        return content
    if not isinstance(content, list):
        raise _bad(f"{param} must be a string or a list of text parts", param)
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise _bad(
                f"{param}[{j}]: only text parts (input_text, output_text) are supported by "
                f"lcfin, got {kind!r}",
                f"{param}[{j}].type",
            )
        if checked:
            check_text(part["text"], f"{param}[{j}].text")
        parts.append(part["text"])
    return "".join(parts)


def _string(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or (key != "arguments" and not value):
        raise _bad(f"{param}.{key} must be a non-empty string", f"{param}.{key}")
    return value


def add_item(
    out: list[dict[str, Any]],
    item: object,
    param: str,
    names: dict[str, str],
    checked: bool = True,
) -> None:
    """Append the chat message(s) one input item stands for (`checked`: refuse control
    characters in its text, see limits.py)."""
    if not isinstance(item, dict):
        raise _bad(f"{param} must be an object", param)
    kind = item.get("type", "message")
    if kind == "message":
        role = _ROLES.get(str(item.get("role")))
        if role is None:
            raise _bad(
                f"{param}.role must be user, assistant, system or developer", f"{param}.role"
            )
        content = _text(item.get("content"), f"{param}.content", checked)
        out.append({"role": role, "content": content})
    elif kind == "function_call":
        call_id, name = _string(item, "call_id", param), _string(item, "name", param)
        arguments = _string(item, "arguments", param)
        names[call_id] = name
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        last = out[-1] if out else None
        if last is not None and last["role"] == "assistant":
            last["tool_calls"] = [*last.get("tool_calls", []), call]
        else:
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        call_id = _string(item, "call_id", param)
        result: dict[str, Any] = {"role": "tool", "tool_call_id": call_id}
        if call_id in names:
            result["name"] = names[call_id]
        out.append({**result, "content": _text(item.get("output"), f"{param}.output", checked)})
    else:
        raise _bad(
            f"{param}.type {kind!r} is not supported by lcfin (message, function_call and "
            "function_call_output items are)",
            f"{param}.type",
        )
