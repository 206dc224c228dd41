"""`lcfin ask` on the built-in demo model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from lcfin.cli import app
from lcfin.engine.catalog_io import catalog_dir
from lcfin.errors import EXIT_MODEL_NOT_FOUND

runner = CliRunner()


def glossary() -> dict[str, str]:
    data = tomllib.loads((catalog_dir() / "demo_glossary.toml").read_text())
    entries = data.get("terms") or data.get("entries") or next(iter(data.values()))
    return {e["term"]: e["answer"] for e in entries}


def test_ask_demo_prints_the_glossary_answer() -> None:
    result = runner.invoke(app, ["ask", "--model", "demo", "What is Basel III?"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == glossary()["Basel III"].strip()


@pytest.mark.parametrize("term", ["CET1", "Solvency II", "IFRS 9", "VaR"])
def test_demo_knows_other_terms(term: str) -> None:
    result = runner.invoke(app, ["ask", "--model", "demo", f"What is {term}?"])
    assert result.exit_code == 0
    assert result.stdout.strip() == glossary()[term].strip()


def test_ask_json_parses() -> None:
    result = runner.invoke(app, ["ask", "--model", "demo", "--json", "What is CET1?"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "demo"
    assert data["finish_reason"] == "stop"
    assert data["text"] == glossary()["CET1"].strip()
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert data["timings"]["time_to_first_token_s"] > 0


def test_ask_max_tokens_says_it_stopped() -> None:
    result = runner.invoke(app, ["ask", "-m", "demo", "-n", "3", "What is Basel III?"])
    assert result.exit_code == 0
    assert "stopped at max tokens" in result.stderr
    assert len(result.stdout.strip()) < len(glossary()["Basel III"])


def test_ask_default_model_is_demo_without_gpu() -> None:
    result = runner.invoke(app, ["ask", "--json", "What is LCR?"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "demo"


def test_ask_unknown_model() -> None:
    result = runner.invoke(app, ["ask", "--model", "qwen3-9b", "hi"])
    assert result.exit_code == EXIT_MODEL_NOT_FOUND
    assert "did you mean qwen3-8b" in result.stderr


def test_ask_bad_temperature_is_a_usage_error() -> None:
    result = runner.invoke(app, ["ask", "-m", "demo", "--temperature", "5", "hi"])
    assert result.exit_code == 2
    assert "temperature" in result.output


def test_ask_url_unreachable_is_backend_unavailable() -> None:
    result = runner.invoke(app, ["ask", "--url", "http://127.0.0.1:9", "hi"])
    assert result.exit_code == 6
    assert "Could not reach" in result.stderr


def test_ask_json_schema_answers_in_that_schema(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"term": {"enum": ["CET1", "LCR"]}, "bp": {"type": "integer", "maximum": 99}},
        "required": ["term", "bp"],
        "additionalProperties": False,
    }
    path = tmp_path / "ratio.json"
    path.write_text(json.dumps(schema))
    result = runner.invoke(
        app, ["ask", "-m", "demo", "-n", "60", "--json-schema", str(path), "What is CET1?"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["term"] in {"CET1", "LCR"} and data["bp"] <= 99


def test_ask_json_schema_unreadable_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    result = runner.invoke(app, ["ask", "-m", "demo", "--json-schema", str(path), "Hi"])
    assert result.exit_code == 2
    assert "JSON Schema" in result.stderr
