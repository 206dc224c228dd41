"""`lcfin chat`: an interactive streaming REPL with history and slash commands."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer

from lcfin.cli.options import (
    MaxTokensOpt,
    ModelOpt,
    ProfileOpt,
    SystemOpt,
    TemperatureOpt,
    err,
    out,
)
from lcfin.cli.progress import loading, open_llm
from lcfin.engine.types import Message
from lcfin.errors import LcfinError

if TYPE_CHECKING:
    from lcfin import FinancialLLM

__all__ = ["chat", "register"]

HELP = "/reset clears history · /system TEXT sets the system prompt · /model NAME switches · /exit"


@dataclass
class Session:
    """The conversation so far and the system prompt."""

    system: str | None = None
    history: list[Message] = field(default_factory=list)

    def messages(self) -> list[Message]:
        head: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history


def _command(line: str, session: Session, llm: FinancialLLM) -> bool:
    """Handle a slash command; False means exit."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/exit", "/quit"):
        return False
    if name == "/reset":
        session.history.clear()
        err.print("[dim]history cleared[/]")
    elif name == "/system":
        session.system = arg or None
        err.print(f"[dim]system prompt {'set' if arg else 'cleared'}[/]")
    elif name == "/model" and arg:
        try:
            with loading(err, arg):
                llm.switch(arg)
            err.print(f"[green]now chatting with {llm.model}[/]")
        except LcfinError as exc:  # keep the REPL alive; the old model still serves
            err.print(f"[red]error:[/] {exc}")
    else:
        err.print(f"[dim]{HELP}[/]")
    return True


def _answer(llm: FinancialLLM, session: Session, params: dict[str, Any]) -> None:
    parts: list[str] = []
    stream = llm.stream(session.messages(), **params)
    try:
        for text in stream:
            parts.append(text)
            sys.stdout.write(text)
            sys.stdout.flush()
    except KeyboardInterrupt:  # stop this answer, keep the REPL
        err.print("\n[yellow](stopped)[/]")
    finally:
        stream.close()  # type: ignore[attr-defined]
    sys.stdout.write("\n")
    if parts:
        session.history.append({"role": "assistant", "content": "".join(parts)})
    else:
        session.history.pop()  # nothing answered: forget the question too


def chat(
    model: ModelOpt = None,
    profile: ProfileOpt = "auto",
    system: SystemOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
) -> None:
    """Chat interactively, streaming answers (/reset, /system TEXT, /model NAME, /exit)."""
    params = {
        k: v for k, v in (("max_tokens", max_tokens), ("temperature", temperature)) if v is not None
    }
    session = Session(system=system)
    with open_llm(model, profile) as llm:
        err.print(f"[bold]lcfin chat[/] with {llm.model} · {HELP}")
        while True:
            try:
                line = out.input("[bold cyan]> [/]").strip()
            except (EOFError, KeyboardInterrupt):
                break
            if not line:
                continue
            if line.startswith("/"):
                if not _command(line, session, llm):
                    break
                continue
            session.history.append({"role": "user", "content": line})
            try:
                _answer(llm, session, params)
            except LcfinError as exc:
                session.history.pop()
                err.print(f"[red]error:[/] {exc}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command()(chat)
