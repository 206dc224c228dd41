"""Validate responses against OpenAI's published component schemas (tests/data/openai_schemas.json).

The file is a `components.schemas` document whose `$ref`s point at `#/components/schemas/X`.
It mixes OpenAPI 3.0's `nullable: true` with JSON Schema; `nullable` is rewritten here as
`anyOf: [<schema>, {"type": "null"}]` so a JSON Schema 2020-12 validator understands it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "data" / "openai_schemas.json"


def _allow_null(node: Any) -> Any:
    if isinstance(node, list):
        return [_allow_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _allow_null(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@cache
def _components() -> dict[str, Any]:
    document = json.loads(SCHEMA_FILE.read_text())
    return _allow_null(document["components"])


@cache
def validator(name: str) -> Draft202012Validator:
    """A validator for `#/components/schemas/<name>`; the wrapper makes the refs resolve."""
    components = _components()
    assert name in components["schemas"], f"{name} is not in {SCHEMA_FILE.name}"
    root = {"$ref": f"#/components/schemas/{name}", "components": components}
    Draft202012Validator.check_schema(root)
    return Draft202012Validator(root)


def assert_valid(instance: Any, name: str) -> None:
    """Fail with every schema violation listed (not only the first)."""
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    details = "\n".join(f"  at {list(e.absolute_path)}: {e.message}" for e in errors)
    assert not errors, f"response does not match OpenAI's {name}:\n{details}"
