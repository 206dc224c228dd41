"""Options shared by several commands, and the two consoles (data -> stdout, rest -> stderr)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = [
    "JsonOpt",
    "MaxTokensOpt",
    "ModelOpt",
    "ProfileOpt",
    "SystemOpt",
    "TemperatureOpt",
    "err",
    "out",
    "print_json",
]

#: Data (answers, tables, JSON) goes to stdout; messages and progress go to stderr.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Catalog alias, hub repo id or model directory [default: MODEL_NAME, or demo on CPU].",
    ),
]
ProfileOpt = Annotated[
    str,
    typer.Option(
        "--profile",
        "-p",
        help="Hardware profile (see `lcfin profiles`); 'auto' uses DEPLOYMENT_ENV or detects.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout.")]
SystemOpt = Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")]
MaxTokensOpt = Annotated[
    int | None, typer.Option("--max-tokens", "-n", min=1, help="Most tokens to generate.")
]
TemperatureOpt = Annotated[
    float | None,
    typer.Option(
        "--temperature", "-t", min=0.0, max=2.0, help="0 = greedy [default: the model's]."
    ),
]


def print_json(data: Any) -> None:
    """Write `data` as JSON to stdout (no Rich markup or wrapping)."""
    out.file.write(json.dumps(data, indent=2, default=str) + "\n")
    out.file.flush()
