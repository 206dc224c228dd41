"""`lcfin doctor`: what this machine has, and what lcfin will do with it."""

from __future__ import annotations

import typer
from rich.table import Table

from lcfin.cli.options import JsonOpt, out, print_json

__all__ = ["register"]

_MARK = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}


def doctor(json_out: JsonOpt = False) -> None:
    """Check Python, torch/CUDA, GPUs, vLLM, tokens (present or not), cache dir and profile."""
    from rich.markup import escape

    from lcfin import Settings, diagnose

    checks = diagnose(Settings())
    if json_out:
        print_json([c.to_dict() for c in checks])
    else:
        table = Table(title="lcfin doctor", show_header=False)
        for check in checks:
            table.add_row(check.name, _MARK[check.level], escape(check.detail))
        out.print(table)
    if any(c.level == "fail" for c in checks):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command()(doctor)
