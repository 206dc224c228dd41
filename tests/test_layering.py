"""Imports point down (DESIGN.md, docs/architecture.md), checked on the source with `ast`.

- engine/ never imports server/ or cli/; the faces (server/, cli/) use the public core only.
- Only a backend's own folder, engine/<backend>/, imports its heavy library (torch and
  transformers for engine/transformers/, vllm for engine/vllm/) at module level; everything
  else imports them, and the backend folders themselves, inside functions.
- No import cycles in src/lcfin, counting every import but those under `if TYPE_CHECKING:`.
"""

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
#: engine/<backend>/ and the heavy libraries it alone may import at module level.
BACKENDS = {"transformers": ("torch", "transformers"), "vllm": ("vllm",)}
HEAVY = tuple(lib for libs in BACKENDS.values() for lib in libs)


def _name(path: Path) -> str:
    """The module name of a file under src/lcfin (a package is its __init__)."""
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


ALL = sorted(SRC.rglob("*.py"))
MODULES = {_name(path): path for path in ALL}


def _rel(path: Path) -> str:
    return str(path.relative_to(SRC))


def _type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> list[tuple[str, bool, bool]]:
    """(module, at_top_level, for_type_checking_only) for every absolute import in the file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    typing_only = {
        id(inner) for node in ast.walk(tree) if _type_checking(node) for inner in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        flags = (id(node) in top, id(node) in typing_only)
        if isinstance(node, ast.Import):
            found += [(alias.name, *flags) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from lcfin.engine import profiles` imports the module lcfin.engine.profiles
            found += [(_target(node.module, alias.name), *flags) for alias in node.names]
    return found


def _target(module: str, name: str) -> str:
    return f"{module}.{name}" if f"{module}.{name}" in MODULES else module


def _backend_of(path: Path) -> str | None:
    """The backend whose folder holds `path` (engine/<backend>/...), if any."""
    parts = path.relative_to(SRC).parts
    return parts[1] if len(parts) > 2 and parts[0] == "engine" and parts[1] in BACKENDS else None


def _under(sub: str) -> list[Path]:
    return [path for path in ALL if path.relative_to(SRC).parts[0] == sub]


@pytest.mark.parametrize("path", _under("engine"), ids=_rel)
def test_engine_never_imports_faces(path: Path) -> None:
    for module, _, _ in _imports(path):
        assert not module.startswith(("lcfin.server", "lcfin.cli")), f"{_rel(path)}: {module}"


@pytest.mark.parametrize("path", [*_under("server"), *_under("cli")], ids=_rel)
def test_faces_import_only_the_public_core(path: Path) -> None:
    for module, _, _ in _imports(path):
        if module.startswith("lcfin.") and not module.startswith(("lcfin.server", "lcfin.cli")):
            # the CLI's --help must stay fast: only the light core modules at top level
            assert module in FACE_ALLOWED or module.startswith("lcfin.telemetry"), (
                f"{_rel(path)} imports {module}"
            )
        assert not module.startswith(HEAVY), f"{_rel(path)} imports {module}"


@pytest.mark.parametrize("path", ALL, ids=_rel)
def test_heavy_libraries_only_at_the_top_of_their_backend(path: Path) -> None:
    own = BACKENDS.get(_backend_of(path) or "", ())
    for module, top, _ in _imports(path):
        library = module.split(".")[0]
        if top and library in HEAVY:
            assert library in own, f"{_rel(path)} imports {module} at module level"


@pytest.mark.parametrize("path", ALL, ids=_rel)
def test_backend_folders_are_imported_lazily_and_not_by_each_other(path: Path) -> None:
    mine = _backend_of(path)
    for module, top, _ in _imports(path):
        parts = module.split(".")
        if parts[:2] != ["lcfin", "engine"] or len(parts) < 3 or parts[2] not in BACKENDS:
            continue
        if mine is None:  # only load_backend and the like, inside a function
            assert not top, f"{_rel(path)} imports {module} at module level"
        else:
            assert parts[2] == mine, f"{_rel(path)}: one backend imports another ({module})"


def _graph() -> dict[str, set[str]]:
    """Module -> the lcfin modules it imports (at any depth, but not for type checking only)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        found = {m for m, _, typing_only in _imports(path) if not typing_only}
        graph[name] = {m for m in found if m in MODULES and m != name}
    return graph


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle through `start` (its modules in order), by depth-first search; None if none."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, trail = stack.pop()
        for nxt in sorted(graph[node]):
            if nxt == start:
                return [*trail, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*trail, nxt]))
    return None


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = [c for name in sorted(graph) if (c := _cycle_from(name, graph))]
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle() -> None:
    """The check itself: a two-module cycle and a longer one are both found."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert _cycle_from("a", graph) == ["a", "b", "a"]
    assert _cycle_from("c", graph) == ["c", "d", "e", "c"]
    assert _cycle_from("f", graph) is None
