"""The `lcfin` command line: a thin Typer + Rich face over the core."""

from lcfin.cli.main import app, main

__all__ = ["app", "main"]
