"""Structured outputs in the library: schemas from dicts or pydantic models, and parsed results;
and the JSON Schema keywords no backend's constrained decoding enforces (refused, 400).

`FinancialLLM.chat(..., json_schema=Model)` turns the schema into an OpenAI `response_format`
(`response_format_for`), decodes under that grammar, then parses the text (`parse_output`):
a pydantic model class gives a validated instance, a dict schema gives the decoded JSON.
"""

from __future__ import annotations

import json
from typing import Any

from lcfin.engine.types import Completion
from lcfin.errors import InvalidParameter, LcfinError, OutputTruncated

__all__ = ["UNSUPPORTED_KEYWORDS", "check_schema", "parse_output", "response_format_for"]

#: JSON Schema keywords xgrammar does not enforce; a schema using one is refused (400).
UNSUPPORTED_KEYWORDS = ("not", "if", "then", "else", "dependentSchemas", "patternProperties")


def _is_model(schema: object) -> bool:
    return isinstance(schema, type) and hasattr(schema, "model_json_schema")


def response_format_for(schema: Any) -> dict[str, Any]:
    """OpenAI's `response_format` for a JSON Schema dict or a pydantic model class.

    Raises:
        InvalidParameter: `schema` is neither.
    """
    if _is_model(schema):
        body, name = schema.model_json_schema(), schema.__name__
    elif isinstance(schema, dict):
        body, name = schema, str(schema.get("title") or "output")
    else:
        raise InvalidParameter(
            f"json_schema must be a JSON Schema dict or a pydantic model class, got {schema!r}",
            param="json_schema",
        )
    return {"type": "json_schema", "json_schema": {"name": name, "schema": body, "strict": True}}


def parse_output(completion: Completion, schema: Any) -> Any:
    """The completion's JSON, as a `schema` instance when `schema` is a pydantic model class.

    Raises:
        OutputTruncated: generation stopped at max_tokens, so the JSON is incomplete.
        LcfinError: the text does not parse (e.g. a stop sequence cut it).
    """
    if completion.finish_reason == "length":
        raise OutputTruncated(
            f"The structured output was cut at {completion.usage.completion_tokens} tokens "
            "(finish_reason 'length') and is not complete JSON",
            hint="raise max_tokens, or bound the schema (maxLength, maxItems, enum)",
        )
    try:
        if _is_model(schema):
            return schema.model_validate_json(completion.text)
        return json.loads(completion.text)
    except ValueError as exc:  # json.JSONDecodeError and pydantic's ValidationError
        raise LcfinError(
            f"The output does not match the schema ({completion.finish_reason}): {exc}",
            hint="do not pass stop sequences with json_schema",
        ) from None


def _find_unsupported(node: Any, path: str) -> str | None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            found = _find_unsupported(item, f"{path}[{i}]")
            if found:
                return found
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in UNSUPPORTED_KEYWORDS and path.split("/")[-1] != "properties":
                return f"{path}/{key}"
            found = _find_unsupported(value, f"{path}/{key}")
            if found:
                return found
    return None


def check_schema(schema: dict[str, Any]) -> None:
    """Refuse schema keywords the grammar engine cannot enforce.

    Raises:
        InvalidParameter: naming the keyword and where it is, param "response_format".
    """
    where = _find_unsupported(schema, "#")
    if where is not None:
        keyword = where.rsplit("/", 1)[-1]
        raise InvalidParameter(
            f"response_format: the JSON Schema keyword '{keyword}' (at {where}) is not supported "
            "by constrained decoding",
            param="response_format",
            hint="rewrite the schema without it (anyOf, enum and const are supported)",
        )
