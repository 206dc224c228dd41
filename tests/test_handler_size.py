"""Route handlers and CLI commands stay thin: at most 25 lines of body (STYLE S6).

Found by reading the source, so a new route or command is checked without being listed: a
handler is a function named in `Route(path, handler, ...)`, a command one registered with
`app.command()(function)`. The docstring does not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lcfin"
MAX_LINES = 25


def _registered(tree: ast.Module) -> set[str]:
    """Names passed to `Route(path, name)` or `app.command()(name)` in a module."""
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, args = node.func, node.args
        route = isinstance(func, ast.Name) and func.id == "Route" and len(args) > 1
        command = (
            isinstance(func, ast.Call)
            and isinstance(func.func, ast.Attribute)
            and func.func.attr == "command"
            and len(args) == 1
        )
        target = args[1] if route else args[0] if command else None
        if isinstance(target, ast.Name):
            names.add(target.id)
    return names


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = fn.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    first = body[1] if has_doc and len(body) > 1 else body[0]
    assert fn.end_lineno is not None
    return fn.end_lineno - first.lineno + 1


def _handlers() -> list[tuple[str, int]]:
    found = []
    for path in sorted([*(SRC / "server").rglob("*.py"), *(SRC / "cli").rglob("*.py")]):
        tree = ast.parse(path.read_text())
        names = _registered(tree)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in names:
                found.append((f"{path.relative_to(SRC)}::{node.name}", _body_lines(node)))
    return found


def test_the_scan_finds_the_routes_and_commands() -> None:
    found = dict(_handlers())
    assert "server/openai.py::chat_completions" in found
    assert "cli/bench_cmds.py::bench" in found
    assert len(found) > 30  # every route and command, not a few


@pytest.mark.parametrize(("name", "lines"), _handlers(), ids=lambda v: str(v))
def test_handlers_and_commands_are_at_most_25_lines(name: str, lines: int) -> None:
    assert lines <= MAX_LINES, f"{name} has {lines} lines of body; move the work into helpers"
