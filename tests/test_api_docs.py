"""docs/api.md is rendered from the server's OpenAPI document and must match it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from lcfin.server.docs import openapi_document

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    """scripts/gen_api_docs.py, imported from its path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_api_docs", ROOT / "scripts/gen_api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_current(gen: ModuleType) -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    assert text == gen.api_reference(), "run: python scripts/gen_api_docs.py"
    assert gen.main(["--check"]) == 0


def test_every_route_and_schema_is_documented(gen: ModuleType) -> None:
    document = openapi_document()
    text = gen.render(document)
    for path, ops in document["paths"].items():
        for method in ops:
            assert f"### `{method.upper()} {path}`" in text
    for name in document["components"]["schemas"]:
        assert f"### `{name}`" in text


def test_every_anchor_link_resolves(gen: ModuleType) -> None:
    text = gen.render(openapi_document())
    anchors = {gen.slug(h) for h in re.findall(r"^#+ `?([^`\n]+)`?$", text, flags=re.M)}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links, "expected schema links"
    assert links <= anchors, f"dangling links: {sorted(links - anchors)}"


def test_extensions_are_marked(gen: ModuleType) -> None:
    text = gen.render(openapi_document())
    for field in ("top_k", "repetition_penalty"):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{field}`"))
        assert "lcfin extension" in row


def test_check_reports_drift(
    gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "api.md"
    stale.write_text("old\n")
    monkeypatch.setattr(gen, "OUT", stale)
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0
