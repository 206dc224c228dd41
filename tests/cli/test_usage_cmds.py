"""`lcfin usage`: tables, JSON and a PNG from a usage ledger (SQLite, or PostgreSQL if set)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lcfin.cli import app
from lcfin.telemetry.ledger import UsageLedger
from lcfin.telemetry.records import RequestRecord
from tests.databases import POSTGRES_URL, postgres_schema

runner = CliRunner()


def fill(target: str, n: int = 6) -> None:
    """n requests over the last few minutes, two models, one key."""
    ledger = UsageLedger(target)
    now = time.time()
    for i in range(n):
        ledger.add(
            RequestRecord(
                request_id=f"r{i}", model="m-a" if i % 3 else "m-b", backend="transformers",
                profile="cpu", prompt_tokens=10, completion_tokens=5 + i, finish_reason="stop",
                latency_s=0.1 * (i + 1), time_to_first_token_s=0.01, time=now - 60 * i,
                api_key_id="key1" if i % 2 else None, hardware_cost_usd=1e-5,
            )
        )  # fmt: skip
    ledger.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "usage.db"
    fill(str(path))
    return path


def test_tables(db: Path) -> None:
    result = runner.invoke(app, ["usage", "--db", str(db)])

    assert result.exit_code == 0, result.output
    for text in ("6 requests, 0 errors", "Latency (s)", "By model", "m-a", "By API key id", "key1"):
        assert text in result.stdout


def test_json_and_filters(db: Path) -> None:
    result = runner.invoke(app, ["usage", "--db", str(db), "--json", "--model", "m-a"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"performance", "usage", "costs"}
    assert data["usage"]["totals"]["requests"] == 4
    assert set(data["usage"]["by_model"]) == {"m-a"}
    assert data["costs"]["total_cost_usd"] == pytest.approx(4e-5)
    window = runner.invoke(app, ["usage", "--db", str(db), "--json", "--window", "90s"])
    assert json.loads(window.stdout)["usage"]["totals"]["requests"] == 2  # now and 60 s ago


def test_plot(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "chart.png"
    result = runner.invoke(app, ["usage", "--db", str(db), "--plot", str(out), "--bucket", "1m"])

    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG")
    assert f"wrote {out}" in result.stderr


def test_default_ledger_comes_from_the_settings(db: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LCFIN_USAGE_DB", str(db))
    result = runner.invoke(app, ["usage", "--json"])
    assert json.loads(result.stdout)["usage"]["totals"]["requests"] == 6


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--db", "x.db", "--url", "postgresql://h/db"], 2, "not both"),
        (["--db", "missing.db"], 1, "No usage ledger at missing.db"),
        (["--window", "1y"], 2, "Unknown window"),
        (["--bucket", "xyz"], 2, "Unknown bucket 'xyz': use auto, 1m, 10m, 1h, 1d"),
        (["--bucket", "all"], 2, "Unknown bucket 'all'"),
    ],
)
def test_errors(args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, ["usage", *args])
    assert result.exit_code == code
    assert message in result.stderr


@pytest.mark.skipif(not POSTGRES_URL, reason="set LCFIN_TEST_POSTGRES_URL (.ci/run does)")
def test_url_reads_a_postgresql_ledger() -> None:
    assert POSTGRES_URL is not None
    with postgres_schema(POSTGRES_URL) as url:
        fill(url, n=3)
        result = runner.invoke(app, ["usage", "--url", url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["usage"]["totals"]["requests"] == 3
    assert "lcfin:lcfin@" not in result.output  # the URL's password is never printed
