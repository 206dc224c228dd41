"""Function calling: OpenAI tools in, the model's tool-call syntax parsed back out.

The chat template renders the tools (`apply_chat_template(..., tools=...)`). What the model
writes back depends on its family, named by the catalog's `tool_call_format`:

- `qwen3_xml_json` (Qwen3, Hermes style): one or more
  `<tool_call>{"name": "f", "arguments": {...}}</tool_call>` blocks, maybe after some text.
- `llama3_json` (Llama 3.1 JSON tool calling): the whole reply is one JSON object
  `{"name": "f", "parameters": {...}}` (optionally after `<|python_tag|>`; several are
  separated by `;`).

With no format (a local model), both are tried. `tool_choice` "required" or a named function
is enforced with the grammar engine: the reply must be one call of the allowed function(s) in
the model's format (see `forced_call_format`). Reading the calls back out of the reply, as it
streams or once it is complete, is `function_call_stream`'s job.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from lcfin.engine.types import ResponseFormat
from lcfin.errors import InvalidParameter

__all__ = [
    "ToolCall",
    "check_tools",
    "forced_call_format",
    "tools_enabled",
]


@dataclass(frozen=True)
class ToolCall:
    """One function call: its name and its arguments as a JSON string (as OpenAI sends them)."""

    name: str
    arguments: str
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", f"call_{uuid.uuid4().hex[:24]}")

    def to_openai(self) -> dict[str, Any]:
        """The `tool_calls[]` entry of an OpenAI message."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def _bad(message: str, param: str = "tools") -> InvalidParameter:
    return InvalidParameter(message, param=param)


def _names(tools: list[dict[str, Any]]) -> list[str]:
    return [str(t["function"]["name"]) for t in tools]


def check_tools(tools: list[dict[str, Any]] | None, tool_choice: object) -> None:
    """Validate OpenAI `tools` and `tool_choice`.

    Raises:
        InvalidParameter: naming `tools` or `tool_choice`.
    """
    for i, tool in enumerate(tools or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type", "function") != "function" or not isinstance(fn, dict):
            raise _bad(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _bad(f"tools[{i}].function.name must be a non-empty string")
        if not isinstance(fn.get("parameters", {}), dict):
            raise _bad(f"tools[{i}].function.parameters must be a JSON Schema object")
    if tool_choice in (None, "none", "auto"):
        return
    if not tools:
        raise _bad("tool_choice needs tools", "tool_choice")
    if tool_choice == "required":
        return
    name = _choice_name(tool_choice)
    if name not in _names(tools):
        raise _bad(f"tool_choice names a function that is not in tools: {name!r}", "tool_choice")


def _choice_name(tool_choice: object) -> str | None:
    fn = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _bad(
            "tool_choice must be none, auto, required or "
            "{'type': 'function', 'function': {'name': ...}}",
            "tool_choice",
        )
    return str(fn["name"])


def tools_enabled(tools: list[dict[str, Any]] | None, tool_choice: object) -> bool:
    """Whether the tools are shown to the model and its reply parsed for calls."""
    return bool(tools) and tool_choice != "none"


def _call_schema(tool: dict[str, Any], args_key: str) -> dict[str, Any]:
    fn = tool["function"]
    params = fn.get("parameters") or {"type": "object"}
    return {
        "type": "object",
        "properties": {"name": {"enum": [fn["name"]]}, args_key: params},
        "required": ["name", args_key],
        "additionalProperties": False,
    }


def forced_call_format(
    tools: list[dict[str, Any]] | None, tool_choice: object, fmt: str | None
) -> ResponseFormat | None:
    """The grammar that forces one call when tool_choice is "required" or named, else None."""
    if not tools or tool_choice in (None, "none", "auto"):
        return None
    chosen = tools
    if tool_choice != "required":
        name = _choice_name(tool_choice)
        chosen = [t for t in tools if t["function"]["name"] == name]
    args_key = "parameters" if fmt == "llama3_json" else "arguments"
    schemas = [_call_schema(t, args_key) for t in chosen]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    text = json.dumps(schema, separators=(",", ":"))
    if fmt == "llama3_json":
        return ResponseFormat(text, "tool_call")
    return ResponseFormat(text, "tool_call", prefix="<tool_call>", suffix="</tool_call>")
