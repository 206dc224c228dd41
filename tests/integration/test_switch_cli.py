"""`lcfin switch` against a real server: exit 3 for a model that cannot fit, 0 when ready."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lcfin.cli import app
from lcfin.errors import EXIT_DOES_NOT_FIT

pytestmark = pytest.mark.integration

runner = CliRunner()


def test_switch_exit_codes(make_live, tiny_models: dict[str, Path]) -> None:
    server = make_live(local_models_root=tiny_models["qwen3"].parent)
    served = server.model

    too_big = runner.invoke(app, ["switch", "llama3.1-70b", "--url", server.url])
    assert too_big.exit_code == EXIT_DOES_NOT_FIT, too_big.output
    assert "does not fit profile cpu" in too_big.stderr
    assert server.model == served  # nothing was unloaded

    again = runner.invoke(app, ["switch", served, "--url", server.url])
    assert again.exit_code == 0, again.output  # already loaded: ready at once
    assert f"{served} is ready" in again.stdout

    other = str(tiny_models["qwen3"])
    switched = runner.invoke(app, ["switch", other, "--url", server.url])
    assert switched.exit_code == 0, switched.output
    assert server.model == other
