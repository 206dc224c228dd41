"""The app itself: --version, --debug keeps exit codes, and help text shown as written."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

import lcfin
from lcfin.cli import app

runner = CliRunner()


def _words(text: str) -> str:
    return " ".join(text.split())


def _commands() -> dict[str, typer.models.CommandInfo]:
    return {c.name or c.callback.__name__: c for c in app.registered_commands if c.callback}


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"lcfin {lcfin.__version__}\n"


def test_debug_shows_the_traceback_and_keeps_the_exit_code() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lcfin", "--debug", "plan", "nosuch"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTEST_CURRENT_TEST": ""},
    )
    assert out.returncode == 4  # model not found, as without --debug
    assert "Traceback" in out.stderr and "error: Unknown model 'nosuch'" in out.stderr


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_help_text_is_shown_as_written(name: str) -> None:
    # Rich markup used to eat "[default: ...]" and "lcfin[plot]" (see #17).
    result = runner.invoke(app, [name, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    shown = _words(result.stdout)
    command = _commands()[name]
    doc = inspect.getdoc(command.callback) or ""
    assert _words(doc.split("\n\n")[0]) in shown
    for param in typer.main.get_command(app).commands[name].params:  # type: ignore[attr-defined]
        if getattr(param, "help", None):
            assert _words(param.help) in shown, f"{name} {param.name}: {param.help!r}"
    assert "<bool>" not in shown  # flags take no value


def test_the_help_texts_with_brackets_survive() -> None:
    serve = _words(runner.invoke(app, ["serve", "--help"], terminal_width=200).stdout)
    assert "Bind address [default: LCFIN_HOST or 127.0.0.1]; see docs/security.md." in serve
    assert "Port to listen on [default: PORT or 8000]." in serve
    usage = _words(runner.invoke(app, ["usage", "--help"], terminal_width=200).stdout)
    assert "Write a PNG chart (lcfin[plot])." in usage


def test_the_cli_reference_shows_the_same_text() -> None:
    from lcfin.docgen import cli_reference

    page = cli_reference()
    assert "[dim]" not in page and "[/]" not in page
    for name in _commands():
        command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
        for param in command.params:
            if getattr(param, "help", None):
                assert _words(param.help) in _words(page), f"{name} {param.name}"


def test_the_readme_lists_every_command_with_real_flags() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("## The CLI") : readme.index("## Configuration")]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `lcfin (\w+)[^|]*\|.*$", table, re.M)}
    group = typer.main.get_command(app)
    assert set(rows) == set(group.commands)  # type: ignore[attr-defined]
    for name, row in rows.items():
        flags = {f for p in group.commands[name].params for f in p.opts}  # type: ignore[attr-defined]
        for flag in re.findall(r"`(--[\w-]+)", row):
            assert flag in flags, f"README: lcfin {name} has no {flag}"
