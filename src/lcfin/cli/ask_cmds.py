"""`lcfin ask`: stream one answer from a local model or a remote server."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lcfin.cli.options import (
    JsonOpt,
    MaxTokensOpt,
    ModelOpt,
    ProfileOpt,
    SystemOpt,
    TemperatureOpt,
    err,
    print_json,
)
from lcfin.cli.progress import open_llm
from lcfin.engine.types import Completion, Delta, Message
from lcfin.errors import InvalidParameter

if TYPE_CHECKING:
    from lcfin import FinancialLLM

__all__ = ["register"]

JsonSchemaOpt = Annotated[
    Path | None,
    typer.Option(
        "--json-schema",
        exists=True,
        dir_okay=False,
        help="Answer in JSON matching this JSON Schema file (constrained decoding).",
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="Ask a running lcfin (or any OpenAI-compatible) server instead."),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="LCFIN_API_KEY", help="Bearer key for --url.", show_default=False
    ),
]


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _messages(question: str, system: str | None) -> list[Message]:
    msgs: list[Message] = [{"role": "system", "content": system}] if system else []
    return [*msgs, {"role": "user", "content": question}]


def _ask_local(
    llm: FinancialLLM, messages: list[Message], params: dict[str, Any], echo: bool
) -> Completion:
    final: Completion | None = None
    for event in llm.stream_events(messages, **params):
        if isinstance(event, Delta):
            if echo and event.text:
                _write(event.text)
        else:
            final = event
    assert final is not None
    return final


def _ask_remote(
    url: str,
    api_key: str | None,
    model: str | None,
    messages: list[Message],
    params: dict[str, Any],
    echo: bool,
) -> dict[str, Any]:
    from lcfin.cli.remote import RemoteResult, served_model, stream_chat

    result = RemoteResult()
    payload = {"model": model or served_model(url, api_key), "messages": messages, **params}
    started, first, parts = time.perf_counter(), None, []
    for text in stream_chat(url, payload, result, api_key=api_key):
        first = first if first is not None else time.perf_counter() - started
        parts.append(text)
        if echo:
            _write(text)
    usage = result.usage or {}
    return {
        "text": "".join(parts),
        "model": result.model,
        "usage": usage,
        "finish_reason": result.finish_reason,
        "timings": {"time_to_first_token_s": first, "total_s": time.perf_counter() - started},
    }


def _schema_format(path: Path) -> dict[str, Any]:
    """OpenAI's response_format for a JSON Schema file."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidParameter(
            f"Cannot read a JSON Schema from {path}: {exc}", param="json_schema"
        ) from None
    spec = {"name": path.stem, "schema": schema, "strict": True}
    return {"type": "json_schema", "json_schema": spec}


def _local_json(done: Completion) -> dict[str, Any]:
    return {
        "text": done.text,
        "model": done.model,
        "usage": {
            "prompt_tokens": done.usage.prompt_tokens,
            "completion_tokens": done.usage.completion_tokens,
            "total_tokens": done.usage.total_tokens,
        },
        "finish_reason": done.finish_reason,
        "timings": {
            "time_to_first_token_s": done.timings.time_to_first_token_s,
            "total_s": done.timings.total_s,
            "decode_tokens_per_s": done.decode_tokens_per_s,
        },
    }


def ask(
    question: Annotated[str, typer.Argument(help="The question to ask.")],
    model: ModelOpt = None,
    profile: ProfileOpt = "auto",
    system: SystemOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    json_schema: JsonSchemaOpt = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Ask one question and stream the answer (locally, or from a server with --url)."""
    params: dict[str, Any] = {
        k: v for k, v in (("max_tokens", max_tokens), ("temperature", temperature)) if v is not None
    }
    if json_schema is not None:
        params["response_format"] = _schema_format(json_schema)
    messages = _messages(question, system)
    if url:
        data = _ask_remote(url, api_key, model, messages, params, echo=not json_out)
    else:
        with open_llm(model, profile) as llm:
            data = _local_json(_ask_local(llm, messages, params, echo=not json_out))
    if json_out:
        print_json(data)
    else:
        _write("\n")
        if data["finish_reason"] == "length":
            err.print("[dim](stopped at max tokens; raise --max-tokens for more)[/]")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command()(ask)
