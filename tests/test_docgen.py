"""The generated reference docs match the code (CLI from Typer, configuration from Settings)."""

from __future__ import annotations

from pathlib import Path

from lcfin.docgen import cli_reference, configuration_reference

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_is_current() -> None:
    assert (DOCS / "cli.md").read_text() == cli_reference(), "run: python -m lcfin.docgen"


def test_configuration_reference_is_current() -> None:
    text = configuration_reference()
    assert (DOCS / "configuration.md").read_text() == text, "run: python -m lcfin.docgen"
    for seed in ("HF_TOKEN_LC", "HF_TOKEN", "MODEL_NAME", "DEPLOYMENT_ENV", "USE_VLLM", "HF_HOME"):
        assert f"`{seed}`" in text
