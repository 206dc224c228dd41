"""Extract the OpenAI schemas lcfin's tests validate against (chat, completions, Responses API).

Source: OpenAI's published OpenAPI spec (openai-openapi, version 2.3.0, licence MIT), as kept in
../shared/openai-openapi.yaml. Writes tests/data/openai_schemas.json: the named component schemas
plus every schema they reference, so the tests run without ../shared.

    python scripts/extract_openai_schemas.py ../shared/openai-openapi.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOTS = [
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "ListModelsResponse",
    "ErrorResponse",
    "Error",
    # the Responses API (/v1/responses): the response object and every streamed event
    "Response",
    "ResponseStreamEvent",
]
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "openai_schemas.json"


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def main(spec_path: str) -> None:
    spec = yaml.safe_load(Path(spec_path).read_text())
    schemas = spec["components"]["schemas"]
    keep: dict[str, Any] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = schemas[name]
        todo.extend(_refs(schemas[name]) - set(keep))
    doc = {
        "source": "OpenAI OpenAPI spec (openai-openapi) version "
        f"{spec['info']['version']}, components/schemas",
        "licence": "MIT (c) OpenAI",
        "components": {"schemas": dict(sorted(keep.items()))},
    }
    OUT.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    print(f"wrote {len(keep)} schemas to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/openai-openapi.yaml")
