"""`lcfin doctor` and the CLI's global behaviour (help speed, error mapping)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lcfin.cli import app

runner = CliRunner()
SECRET = "hf_doctorSECRET0123456789"


def test_doctor_reports_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN_LC", SECRET)
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    for name in ("python", "torch", "gpus", "vllm", "tokens", "cache", "profile"):
        assert name in result.stdout
    assert "HF_TOKEN_LC set" in result.stdout
    assert SECRET not in result.output


def test_doctor_json(monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["profile"]["detail"].endswith("cpu")
    assert checks["gpus"]["level"] == "warn"
    assert checks["torch"]["level"] == "ok"


def test_doctor_fails_on_unusable_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("HF_HOME", str(blocker / "cache"))  # cannot be created, even by root
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "NOT writable" in result.stdout


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from lcfin.cli import main\n"
        "sys.argv = ['lcfin', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    assert "ask" in out.stdout


def test_models_command_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from lcfin.cli import main\n"
        "sys.argv = ['lcfin', 'models', '--json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout


def test_console_script_maps_errors_to_exit_codes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lcfin", "plan", "no-such-model"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTEST_CURRENT_TEST": ""},
    )
    assert out.returncode == 4
    assert out.stderr.startswith("error: Unknown model 'no-such-model'")
    assert "Traceback" not in out.stderr
