"""Load progress names the model and the stage: a spinner on a terminal, lines on stderr else."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any

from typer.testing import CliRunner

from lcfin.cli import app
from lcfin.cli.progress import loading


class TerminalConsole:
    """Records what a terminal's spinner would show (Rich draws it on a timer thread)."""

    is_terminal = True

    def __init__(self) -> None:
        self.shown: list[str] = []

    @contextmanager
    def status(self, text: str) -> Any:
        self.shown.append(text)

        class Status:
            def update(inner, text: str) -> None:
                self.shown.append(text)

        yield Status()


def test_a_terminal_spinner_names_the_model_and_each_stage() -> None:
    console = TerminalConsole()
    with loading(console, "qwen3-8b"):  # type: ignore[arg-type]
        logging.getLogger("lcfin.engine.hub").info("Downloading %s", "LinguaCustodia/qwen3")
        logging.getLogger("lcfin.engine.manager").info("Now serving qwen3-8b (vllm)")
    assert console.shown == [
        "Loading qwen3-8b ...",
        "Loading qwen3-8b: Downloading LinguaCustodia/qwen3",
        "Loading qwen3-8b: Now serving qwen3-8b (vllm)",
    ]
    assert not logging.getLogger("lcfin.engine").handlers  # removed afterwards


def test_without_a_terminal_each_stage_is_a_line_on_stderr() -> None:
    result = CliRunner().invoke(app, ["ask", "--model", "demo", "What is CET1?"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "Loading demo ..."
    assert "  Reading the weights of demo (float32 on cpu)" in lines
    assert "  Warming up demo" in lines
    assert "  Now serving demo (transformers)" in lines
    assert "CET1" in result.stdout and "Loading" not in result.stdout  # data stays on stdout
