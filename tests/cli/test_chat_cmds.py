"""`lcfin chat` on the built-in demo model (and a tiny model for switching)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from lcfin.cli import app
from tests.cli.test_ask_cmds import glossary

runner = CliRunner()


def test_chat_repl(tiny_models: dict[str, Path]) -> None:
    script = "\n".join(
        [
            "What is CET1?",
            "/system You are terse.",
            "/reset",
            f"/model {tiny_models['llama']}",
            "/model no-such-model",
            "/help",
            "/exit",
        ]
    )
    result = runner.invoke(app, ["chat", "--model", "demo", "-n", "64"], input=script + "\n")
    assert result.exit_code == 0, result.output
    assert glossary()["CET1"].strip() in result.stdout
    assert "system prompt set" in result.stderr
    assert "history cleared" in result.stderr
    assert "now chatting with" in result.stderr
    assert "Unknown model 'no-such-model'" in result.stderr
    assert "/reset clears history" in result.stderr


def test_chat_ends_on_eof() -> None:
    result = runner.invoke(app, ["chat", "--model", "demo"], input="")
    assert result.exit_code == 0
