"""The Typer app and `main()`: errors become one red line plus an exit code (STYLE S10).

`LcfinError` -> `error: <message>` (+ hint) on stderr and `exc.exit_code` (with `--debug` /
`LCFIN_DEBUG=1`, after its traceback); Ctrl-C -> 130; anything else -> "internal error" and 1,
or the traceback with `--debug`.
The mapping lives in the app's group class, so `CliRunner` tests see the same exit codes.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from lcfin.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, LcfinError

__all__ = ["app", "main"]

err = Console(stderr=True, highlight=False, soft_wrap=True)


def debug_enabled() -> bool:
    """Whether tracebacks are wanted (`--debug` or LCFIN_DEBUG=1)."""
    return os.environ.get("LCFIN_DEBUG", "") not in ("", "0", "false") or "--debug" in sys.argv


def _traceback_if_debug() -> None:
    if debug_enabled():
        traceback.print_exc(file=sys.stderr)


def _version(value: bool) -> None:
    if value:
        from lcfin import __version__

        typer.echo(f"lcfin {__version__}")
        raise typer.Exit()


class LcfinGroup(TyperGroup):
    """Maps lcfin errors and Ctrl-C to messages and exit codes, once for every command."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except LcfinError as exc:
            _traceback_if_debug()  # and still the error's own exit code (see #17)
            err.print(f"[bold red]error:[/] {escape(exc.message)}")
            if exc.hint:
                err.print(f"[dim]hint: {escape(exc.hint)}[/]")
            raise typer.Exit(exc.exit_code) from None
        except ValueError as exc:
            if type(exc).__module__.split(".")[0] != "pydantic_core":
                raise
            # pydantic's ValidationError: a bad LCFIN_*/seed environment value or .env entry
            _traceback_if_debug()
            err.print(f"[bold red]error:[/] invalid configuration: {escape(str(exc))}")
            raise typer.Exit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None


app = typer.Typer(
    name="lcfin",
    cls=LcfinGroup,
    help="Serve and use LinguaCustodia's financial LLMs (vLLM on GPUs, Transformers anywhere).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Help text is shown as written: Rich markup would eat "[default: ...]" and "lcfin[plot]"
    # (see #17), so no markup in help strings, and Click's plain layout.
    rich_markup_mode=None,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show info logs on stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """lcfin: financial LLMs as a library, a CLI and an OpenAI-compatible server."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lcfin").setLevel(level)
    if debug:
        os.environ["LCFIN_DEBUG"] = "1"


def _register_commands() -> None:
    from lcfin.cli import (
        ask_cmds,
        bench_cmds,
        catalog_cmds,
        chat_cmds,
        doctor_cmds,
        serve_cmds,
        usage_cmds,
    )

    commands = (serve_cmds, ask_cmds, chat_cmds, catalog_cmds, bench_cmds, usage_cmds, doctor_cmds)
    for module in commands:
        module.register(app)


_register_commands()


def main() -> None:
    """Entry point of the `lcfin` console script."""
    try:
        app()
    except Exception as exc:  # anything LcfinGroup did not map is a bug: say so briefly
        if debug_enabled():
            raise
        err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc}\n"
            "[dim]set LCFIN_DEBUG=1 (or pass --debug) for the traceback[/]"
        )
        sys.exit(EXIT_ERROR)
