"""The Responses API's request, `CreateResponse` (named as in OpenAI's spec), and its conversion.

Data only (S5): the model validates the body, refuses by name what lcfin does not implement
(`check_supported`), and turns itself into the core's parameters: chat messages from
`instructions` and the input items (`core_messages`), sampling and output format
(`to_sampling_params`), and the function tools (`generation`). The input items themselves are
read by `responses_items.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lcfin.engine.types import SamplingParams
from lcfin.errors import InvalidParameter
from lcfin.server.limits import check_text
from lcfin.server.protocol import Generation
from lcfin.server.responses_items import add_item

__all__ = ["CreateResponse", "TextFormat", "TextParam"]

#: The include value that asks for logprobs; the others name outputs lcfin never produces.
LOGPROBS_INCLUDE = "message.output_text.logprobs"
_METADATA_LIMITS = (16, 64, 512)  # pairs, key length, value length (the spec's Metadata)
#: Fields refused unless null (or false/empty): what each would need that lcfin does not have.
_REFUSED = {
    "background": "background responses",
    "conversation": "the Conversations API (use previous_response_id)",
    "prompt": "stored prompt templates",
    "context_management": "server-side context compaction",
    "moderation": "moderation",
}


def _bad(message: str, param: str) -> InvalidParameter:
    return InvalidParameter(message, param=param)


class _Request(BaseModel):
    """Unknown fields pass (clients send many); known ones must have the right type."""

    model_config = ConfigDict(extra="allow", strict=True)


class TextFormat(_Request):
    """`text.format`: plain text, any JSON object, or JSON under a schema."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    def to_response_format(self) -> dict[str, Any] | None:
        """The core's (chat's) `response_format`; None for plain text."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        if self.json_schema is None:
            raise _bad("text.format.schema is required with type json_schema", "text.format.schema")
        spec: dict[str, Any] = {"name": self.name or "output", "schema": self.json_schema}
        if self.strict is not None:
            spec["strict"] = self.strict
        return {"type": "json_schema", "json_schema": spec}


class TextParam(_Request):
    """`text`: the output format; `verbosity` is accepted and ignored (a hint)."""

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class CreateResponse(_Request):
    """POST /v1/responses."""

    model: str
    input: str | list[Any] | None = Field(
        None, description="A string (one user message) or a list of message/function items."
    )
    instructions: str | None = Field(
        None, description="The system message; not carried over by previous_response_id."
    )
    max_output_tokens: int | None = Field(
        None, ge=16, description="Default: as many as the context allows."
    )
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    text: TextParam | None = None
    tools: list[Any] | None = Field(
        None, description="Function tools only; built-in tool types are a 400."
    )
    tool_choice: str | dict[str, Any] | None = Field(
        None, description="none, auto, required, a named function, or allowed_tools."
    )
    parallel_tool_calls: bool | None = Field(
        None, description="false keeps only the first function call of a reply."
    )
    store: bool | None = Field(
        None,
        description=(
            "Keep the response for GET and previous_response_id (default: true when the "
            "server keeps responses, see LCFIN_RESPONSE_STORE)."
        ),
    )
    previous_response_id: str | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = Field(
        None, description="Only with stream=true; include_obfuscation is ignored."
    )
    include: list[str] | None = Field(
        None,
        description=(
            "message.output_text.logprobs returns logprobs; other values name outputs lcfin "
            "never produces and are ignored."
        ),
    )
    top_logprobs: int | None = Field(None, ge=0, le=20)
    truncation: Literal["auto", "disabled"] | None = Field(
        None, description="auto drops the oldest turns to fit the context; default disabled."
    )
    metadata: dict[str, str] | None = Field(
        None, description="Up to 16 pairs, echoed in the response."
    )
    user: str | None = Field(None, description="Echoed; not used otherwise.")
    reasoning: dict[str, Any] | None = Field(
        None, description="Refused unless null (or effort none): no reasoning models."
    )
    background: bool | None = Field(None, description="Refused when true.")
    conversation: str | dict[str, Any] | None = Field(
        None, description="Refused unless null: use previous_response_id."
    )
    prompt: dict[str, Any] | None = Field(
        None, description="Refused unless null: no stored prompt templates."
    )
    context_management: list[Any] | None = Field(None, description="Refused unless null.")
    moderation: dict[str, Any] | None = Field(None, description="Refused unless null.")

    def check_supported(self) -> None:
        """Refuse, by name, fields whose behaviour lcfin does not implement.

        Raises:
            InvalidParameter: naming the field in `param`.
        """
        for name, what in _REFUSED.items():
            if getattr(self, name) not in (None, False, []):
                raise _bad(f"{name} is not supported by lcfin ({what}); omit it", name)
        self._check_reasoning()
        if self.input is None or self.input == []:
            raise _bad("input is required (a string or a list of items)", "input")
        if not self.stream and self.stream_options is not None:
            raise _bad("stream_options is only allowed with stream=true", "stream_options")
        self._check_metadata()
        self._check_tools()

    def _check_reasoning(self) -> None:
        for key, value in (self.reasoning or {}).items():
            if value is not None and (key, value) != ("effort", "none"):
                raise _bad(
                    f"reasoning.{key} is not supported by lcfin: its models have no reasoning "
                    "effort or summaries; omit reasoning",
                    f"reasoning.{key}",
                )

    def _check_metadata(self) -> None:
        pairs, key_len, value_len = _METADATA_LIMITS
        meta = self.metadata or {}
        if len(meta) > pairs:
            raise _bad(f"metadata holds at most {pairs} pairs, got {len(meta)}", "metadata")
        for key, value in meta.items():
            if len(key) > key_len or len(value) > value_len:
                raise _bad(
                    f"metadata keys are at most {key_len} characters, values {value_len}",
                    f"metadata.{key[:key_len]}",
                )

    def _check_tools(self) -> None:
        for i, tool in enumerate(self.tools or []):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise _bad(
                    f"tools[{i}]: tool type {kind!r} is not supported by lcfin (built-in tools "
                    "such as web search are not available); use function tools",
                    f"tools[{i}].type",
                )
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise _bad(f"tools[{i}].name must be a non-empty string", f"tools[{i}].name")
            params = tool.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise _bad(
                    f"tools[{i}].parameters must be a JSON Schema object",
                    f"tools[{i}].parameters",
                )

    # -- conversion to the core's parameters ----------------------------------------------------

    @property
    def parallel(self) -> bool:
        """Whether several function calls may come back (the spec's default: true)."""
        return self.parallel_tool_calls is not False

    @property
    def logprobs(self) -> int | None:
        """How many alternatives per token to return with logprobs; None: no logprobs."""
        if self.top_logprobs is None and LOGPROBS_INCLUDE not in (self.include or []):
            return None
        return self.top_logprobs or 0

    def core_tools(self) -> list[dict[str, Any]] | None:
        """The function tools in the core's (chat's) shape, limited by `allowed_tools`."""
        allowed = self._allowed_names()
        tools = [
            {
                "type": "function",
                "function": {
                    k: t[k] for k in ("name", "description", "parameters") if t.get(k) is not None
                },
            }
            for t in self.tools or []
            if allowed is None or t["name"] in allowed
        ]
        return tools or None

    def _allowed_names(self) -> set[str] | None:
        choice = self.tool_choice
        if not isinstance(choice, dict) or choice.get("type") != "allowed_tools":
            return None
        names = {t.get("name") for t in choice.get("tools") or [] if isinstance(t, dict)}
        return {n for n in names if isinstance(n, str)}

    def core_tool_choice(self) -> str | dict[str, Any] | None:
        """`tool_choice` in the core's shape (a named function: {"function": {"name": ...}}).

        Raises:
            InvalidParameter: a choice other than none/auto/required, a function or allowed_tools.
        """
        choice = self.tool_choice
        if choice is None or choice in ("none", "auto", "required"):
            return choice
        kind = choice.get("type") if isinstance(choice, dict) else None
        if isinstance(choice, dict) and kind == "function" and isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": choice["name"]}}
        if isinstance(choice, dict) and kind == "allowed_tools":
            mode = choice.get("mode", "auto")
            if mode in ("auto", "required") and self._allowed_names():
                return str(mode)
        raise _bad(
            "tool_choice must be none, auto, required, {'type': 'function', 'name': ...} or "
            "{'type': 'allowed_tools', 'mode': 'auto' | 'required', 'tools': [...]}; built-in "
            "tools are not supported by lcfin",
            "tool_choice",
        )

    def to_sampling_params(self, defaults: Mapping[str, Any]) -> SamplingParams:
        """The fields that were given (in the core's names), over `defaults`.

        `max_output_tokens` None means as many as the context allows (the spec's default).

        Raises:
            InvalidParameter: a `text.format` without its schema, or a value the core refuses.
        """
        return SamplingParams.over(defaults, self._sampling_fields())

    def _sampling_fields(self) -> dict[str, Any]:
        fmt = self.text.format if self.text and self.text.format else None
        return {
            "max_tokens": self.max_output_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "response_format": fmt.to_response_format() if fmt else None,
            "logprobs": self.logprobs,
        }

    def generation(self, messages: list[dict[str, Any]]) -> Generation:
        """What to ask the core for: the conversation, sampling, and the function tools.

        Raises:
            InvalidParameter: a `tool_choice` or `text.format` lcfin cannot use (checked now,
                before anything is generated).
        """
        self._sampling_fields()
        return Generation(
            [messages],
            self,
            truncate=self.truncation == "auto",
            tools=self.core_tools(),
            tool_choice=self.core_tool_choice(),
        )

    def input_items(self) -> list[Any]:
        """The input as a list of items (a string is one user message)."""
        if isinstance(self.input, str):
            return [{"role": "user", "content": self.input}]
        return list(self.input or [])

    def core_messages(self, history: list[Any], max_messages: int) -> list[dict[str, Any]]:
        """Chat messages: `instructions` as the system message, `history`, then the input.

        `history` holds the items of the previous response's conversation (when
        `previous_response_id` is given): validated when they were stored, and holding the
        model's own output, so their characters are not checked again.

        Raises:
            InvalidParameter: an item lcfin cannot use, naming it (`input[2].type`), or more
                than `max_messages` items.
        """
        items = self.input_items()
        if len(history) + len(items) > max_messages:
            raise _bad(
                f"At most {max_messages} input items are allowed (previous response's "
                f"included), got {len(history) + len(items)}",
                "input",
            )
        out: list[dict[str, Any]] = []
        if self.instructions:
            check_text(self.instructions, "instructions")
            out.append({"role": "system", "content": self.instructions})
        names: dict[str, str] = {}
        for item in history:
            add_item(out, item, "previous_response_id", names, checked=False)
        for i, item in enumerate(items):
            add_item(out, item, f"input[{i}]", names)
        return out
