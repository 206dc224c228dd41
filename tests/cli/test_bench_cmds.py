"""`lcfin bench` against a server that is not there: exit 6 with a hint, not an internal error."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lcfin.cli import app
from lcfin.errors import EXIT_BACKEND_UNAVAILABLE
from tests.integration.test_usage_restart import _free_port

runner = CliRunner()


@pytest.mark.parametrize("model", [[], ["--model", "demo"]], ids=["served", "named"])
def test_a_dead_server_is_backend_unavailable(model: list[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there

    result = runner.invoke(app, ["bench", "--url", url, "--requests", "2", *model])

    assert result.exit_code == EXIT_BACKEND_UNAVAILABLE, result.output
    assert f"error: Could not reach {url}: ConnectError" in result.stderr
    assert "`lcfin serve`" in result.stderr
    assert "internal error" not in result.stderr
