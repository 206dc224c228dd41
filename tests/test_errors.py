"""The error tree: OpenAI envelope, status and exit codes, builtin mixins."""

from __future__ import annotations

import pytest

from lcfin import errors as e


@pytest.mark.parametrize(
    ("cls", "status", "exit_code", "builtin"),
    [
        (e.InvalidParameter, 400, e.EXIT_USAGE, ValueError),
        (e.ContextLengthExceeded, 400, e.EXIT_USAGE, ValueError),
        (e.ModelNotFound, 404, e.EXIT_MODEL_NOT_FOUND, LookupError),
        (e.NotFound, 404, e.EXIT_ERROR, LookupError),
        (e.Unauthorized, 401, e.EXIT_UNAUTHORIZED, Exception),
        (e.GatedModel, 403, e.EXIT_UNAUTHORIZED, Exception),
        (e.DoesNotFit, 422, e.EXIT_DOES_NOT_FIT, Exception),
        (e.BackendUnavailable, 503, e.EXIT_BACKEND_UNAVAILABLE, Exception),
        (e.ModelLoading, 503, e.EXIT_BACKEND_UNAVAILABLE, Exception),
        (e.RateLimited, 429, e.EXIT_ERROR, Exception),
        (e.Overloaded, 429, e.EXIT_ERROR, e.RateLimited),
        (e.RequestTimeout, 504, e.EXIT_ERROR, Exception),
    ],
)
def test_mapping(cls: type[e.LcfinError], status: int, exit_code: int, builtin: type) -> None:
    exc = cls("boom", param="x", hint="do this")
    assert exc.http_status == status
    assert exc.exit_code == exit_code
    assert isinstance(exc, builtin)
    assert isinstance(exc, e.LcfinError)
    body = exc.to_openai()["error"]
    assert isinstance(body, dict)
    assert body["message"] == "boom (do this)"
    assert body["param"] == "x"
    assert body["code"] is None or isinstance(body["code"], str)
    assert body["type"] == cls.openai_type


def test_context_length_code() -> None:
    body = e.ContextLengthExceeded("too long").to_openai()["error"]
    assert isinstance(body, dict)
    assert body["code"] == "context_length_exceeded"
    assert body["type"] == "invalid_request_error"


def test_retry_after_defaults() -> None:
    assert e.ModelLoading("loading").retry_after == 5
    assert e.RateLimited("slow down", retry_after=3).retry_after == 3
