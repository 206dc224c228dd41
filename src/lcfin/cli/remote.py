"""A minimal OpenAI-compatible streaming client for `lcfin ask --url` (httpx, SSE)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lcfin.errors import (
    BackendUnavailable,
    DoesNotFit,
    InvalidParameter,
    LcfinError,
    ModelNotFound,
    Unauthorized,
)

__all__ = ["RemoteResult", "raise_for_status", "served_model", "server_root", "stream_chat"]


@dataclass
class RemoteResult:
    """What the server reported at the end of the stream."""

    model: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)


def _error_for(status: int, body: str) -> LcfinError:
    try:
        error = json.loads(body)["error"]
        message, code = error["message"], error.get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        message, code = body[:300] or f"HTTP {status}", None
    if code == "model_does_not_fit":  # exit 3, as `lcfin plan` says for the same model
        return DoesNotFit(f"The server refused: {message}")
    if status == 401 or status == 403:
        return Unauthorized(f"The server refused the request: {message}", hint="pass --api-key")
    if status == 404:
        return ModelNotFound(f"The server says: {message}")
    if 400 <= status < 500:
        return InvalidParameter(f"The server rejected the request: {message}")
    return BackendUnavailable(f"The server failed (HTTP {status}): {message}")


def raise_for_status(response: Any) -> None:
    """Raise the lcfin error matching an httpx response's error status."""
    if response.status_code >= 400:
        raise _error_for(response.status_code, response.text)


def _chunks(lines: Iterator[str], result: RemoteResult) -> Iterator[str]:
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        chunk: dict[str, Any] = json.loads(data)
        if "error" in chunk:
            raise BackendUnavailable(
                f"The server failed mid-stream: {chunk['error'].get('message')}"
            )
        result.model = chunk.get("model", result.model)
        if chunk.get("usage"):
            result.usage = chunk["usage"]
        for choice in chunk.get("choices", []):
            result.finish_reason = choice.get("finish_reason") or result.finish_reason
            text = (choice.get("delta") or {}).get("content")
            if text:
                yield text


def server_root(url: str) -> str:
    """The server root from any of http://h:p, http://h:p/v1 or .../v1/chat/completions."""
    return url.rstrip("/").removesuffix("/chat/completions").removesuffix("/v1")


def _get_json(url: str, path: str, api_key: str | None) -> dict[str, Any]:
    """GET `path` of the server at `url` and return its JSON body.

    Raises:
        BackendUnavailable: the server cannot be reached or failed.
        Unauthorized, ModelNotFound, InvalidParameter: the server refused the request.
    """
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.get(f"{server_root(url)}{path}", headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise BackendUnavailable(
            f"Could not reach {server_root(url)}: {type(exc).__name__}",
            hint="check the URL and that the server is running (`lcfin serve`)",
        ) from None
    raise_for_status(resp)
    body: dict[str, Any] = resp.json()
    return body


def served_model(url: str, api_key: str | None = None) -> str:
    """The id of the model a server is serving (the first `loaded` one in /v1/models)."""
    models = _get_json(url, "/v1/models", api_key).get("data", [])
    loaded = [m for m in models if m.get("loaded")] or models
    if not loaded:
        raise BackendUnavailable(f"{server_root(url)} lists no model", hint="pass --model")
    return str(loaded[0]["id"])


def stream_chat(
    url: str, payload: dict[str, Any], result: RemoteResult, *, api_key: str | None = None
) -> Iterator[str]:
    """POST a streaming chat completion to `url` and yield the text deltas.

    Raises:
        BackendUnavailable: the server cannot be reached or failed.
        Unauthorized, ModelNotFound, InvalidParameter: the server refused the request.
    """
    import httpx

    base = url.rstrip("/")
    endpoint = (
        base
        if base.endswith("/chat/completions")
        else (f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions")
    )
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {**payload, "stream": True, "stream_options": {"include_usage": True}}
    try:
        with httpx.stream("POST", endpoint, json=body, headers=headers, timeout=600) as resp:
            if resp.status_code != 200:
                raise _error_for(resp.status_code, resp.read().decode(errors="replace"))
            yield from _chunks(resp.iter_lines(), result)
    except httpx.HTTPError as exc:
        raise BackendUnavailable(
            f"Could not reach {endpoint}: {type(exc).__name__}",
            hint="check the URL and that the server is running (`lcfin serve`)",
        ) from None


def served_kv_cache(
    url: str, api_key: str | None = None
) -> tuple[str | None, dict[str, Any] | None]:
    """The model a server serves and its engine's own KV-cache figures (GET /models)."""
    body = _get_json(url, "/models", api_key)
    return body.get("current_model"), body.get("kv_cache")
