"""Imports point down (DESIGN.md): engine/ never imports server/ or cli; faces use the core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lcfin"
FACE_ALLOWED = (
    "lcfin",
    "lcfin.engine.types",
    "lcfin.errors",
    "lcfin.config",
    "lcfin.telemetry",
    "lcfin.loadgen",  # a client of the HTTP API, not part of the engine
)
HEAVY = ("torch", "transformers", "vllm")


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at_top_level) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in top))
    return found


def _modules(sub: str) -> list[Path]:
    return sorted((SRC / sub).rglob("*.py")) if (SRC / sub).is_dir() else [SRC / sub]


@pytest.mark.parametrize("path", _modules("engine"), ids=lambda p: p.name)
def test_engine_never_imports_faces(path: Path) -> None:
    for module, _ in _imports(path):
        assert not module.startswith(("lcfin.server", "lcfin.cli")), f"{path.name}: {module}"


@pytest.mark.parametrize("path", [*_modules("server"), *_modules("cli")], ids=lambda p: p.name)
def test_faces_import_only_the_public_core(path: Path) -> None:
    for module, _ in _imports(path):
        if module.startswith("lcfin.") and not module.startswith(("lcfin.server", "lcfin.cli")):
            # the CLI's --help must stay fast: only the light core modules at top level
            assert module in FACE_ALLOWED or module.startswith("lcfin.telemetry"), (
                f"{path.name} imports {module}"
            )
        assert not module.startswith(HEAVY), f"{path.name} imports {module}"


BACKENDS = ("transformers", "vllm")  # engine/<backend>/: loaded only by load_backend


def _backend_of(path: Path) -> str | None:
    parts = path.relative_to(SRC).parts
    return parts[1] if len(parts) > 2 and parts[0] == "engine" and parts[1] in BACKENDS else None


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: p.name)
def test_heavy_modules_never_imported_at_top_level(path: Path) -> None:
    if _backend_of(path):
        return
    for module, top in _imports(path):
        if module.split(".")[0] in HEAVY:
            assert not top, f"{path.relative_to(SRC)} imports {module} at module level"


def test_lazy_only_modules_are_imported_lazily() -> None:
    for path in sorted(SRC.rglob("*.py")):
        if _backend_of(path):
            continue
        for module, top in _imports(path):
            if module.startswith(tuple(f"lcfin.engine.{b}" for b in BACKENDS)):
                assert not top, f"{path.name} imports {module} at module level"
