"""The lcfin error tree, mapped once to HTTP/OpenAI errors and once to CLI exit codes.

    LcfinError                      500 server_error            exit 1
     ├── InvalidParameter           400 invalid_request_error   exit 2   (also ValueError)
     │    ├── ContextLengthExceeded 400 context_length_exceeded exit 2
     │    ├── MethodNotAllowed      405 method_not_allowed      exit 2
     │    ├── PayloadTooLarge       413 payload_too_large       exit 2
     │    └── UnsupportedMediaType  415 unsupported_media_type  exit 2
     ├── InvalidCatalog             500 server_error            exit 2   (also ValueError)
     ├── ModelNotFound              404 model_not_found         exit 4   (also LookupError)
 ├── NotFound                   404 not_found               exit 1   (also LookupError)
     ├── Unauthorized               401 invalid_api_key         exit 5
     │    ├── GatedModel            403 gated_model             exit 5
     │    └── Forbidden             403 insufficient_permissions exit 5
     ├── DoesNotFit                 422 model_does_not_fit      exit 3
     ├── BackendUnavailable         503 backend_unavailable     exit 6
     │    └── ModelLoading          503 model_loading           exit 6   (+ Retry-After)
     ├── ModelLoadFailed            500 model_load_failed       exit 6
     ├── PortUnavailable            (CLI only)                  exit 7   (port in use, bind refused)
     ├── Conflict                   409 conflict                exit 1
     ├── RequestTimeout             504 timeout                 exit 1
     ├── OutputTruncated            500 output_truncated        exit 1   (library: cut JSON)
     └── RateLimited                429 rate_limit_exceeded     exit 1   (+ Retry-After)
          └── Overloaded            429 queue_full              exit 1   (+ Retry-After)

Every message says what to do next. Secrets never appear in a message.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "EXIT_BACKEND_UNAVAILABLE",
    "EXIT_DOES_NOT_FIT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_MODEL_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PORT_UNAVAILABLE",
    "EXIT_UNAUTHORIZED",
    "EXIT_USAGE",
    "BackendUnavailable",
    "Conflict",
    "ContextLengthExceeded",
    "DoesNotFit",
    "Forbidden",
    "GatedModel",
    "InvalidCatalog",
    "InvalidParameter",
    "LcfinError",
    "MethodNotAllowed",
    "ModelLoadFailed",
    "ModelLoading",
    "ModelNotFound",
    "NotFound",
    "OutputTruncated",
    "Overloaded",
    "PayloadTooLarge",
    "PortUnavailable",
    "RateLimited",
    "RequestTimeout",
    "Unauthorized",
    "UnsupportedMediaType",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DOES_NOT_FIT = 3
EXIT_MODEL_NOT_FOUND = 4
EXIT_UNAUTHORIZED = 5
EXIT_BACKEND_UNAVAILABLE = 6
#: `lcfin serve` cannot listen on its host and port (in use, privileged, not an address here).
EXIT_PORT_UNAVAILABLE = 7
EXIT_INTERRUPTED = 130


class LcfinError(Exception):
    """Base of every error lcfin raises on purpose."""

    http_status: ClassVar[int] = 500
    openai_type: ClassVar[str] = "server_error"
    openai_code: ClassVar[str | None] = None
    exit_code: ClassVar[int] = EXIT_ERROR

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        model: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.model = model
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_openai(self) -> dict[str, object]:
        """The OpenAI error envelope for this error."""
        return {
            "error": {
                "message": str(self),
                "type": self.openai_type,
                "param": self.param,
                "code": self.openai_code,
            }
        }


class InvalidParameter(LcfinError, ValueError):
    """A request or call parameter has a wrong value."""

    http_status = 400
    openai_type = "invalid_request_error"
    openai_code = "invalid_value"
    exit_code = EXIT_USAGE


class ContextLengthExceeded(InvalidParameter):
    """Prompt plus max_tokens do not fit the model's context window."""

    openai_code = "context_length_exceeded"

    #: The numbers behind the message (None when it was built from a message alone).
    sizes: tuple[int, int | None, int] | None = None  # limit, prompt tokens, max tokens
    #: Whether the prompt tokens are a lower bound (counted from a prefix of a long text).
    at_least: bool = False

    @classmethod
    def of(
        cls,
        limit: int,
        prompt_tokens: int | None,
        wanted: int,
        *,
        prompt: str = "messages",
        max_tokens: str = "max_tokens",
        at_least: bool = False,
    ) -> ContextLengthExceeded:
        """The error in the request's own field names (`prompt_tokens` None: max_tokens alone;
        `at_least`: the prompt was counted from a prefix, and needs more than `prompt_tokens`)."""
        if prompt_tokens is None:
            exc = cls(
                f"{max_tokens} is too large: {wanted}; this model's maximum context length is "
                f"{limit} tokens, prompt included",
                param=max_tokens,
                hint=f"ask for fewer than {limit} tokens",
            )
        else:
            need = "need" if prompt.endswith("s") else "needs"
            more = "more than " if at_least else ""
            exc = cls(
                f"This model's maximum context length is {limit} tokens; the {prompt} {need} "
                f"{more}{prompt_tokens} tokens and {max_tokens} asks for {wanted}",
                param=prompt,
                hint=f"shorten the {prompt} or lower {max_tokens}",
            )
        exc.sizes, exc.at_least = (limit, prompt_tokens, wanted), at_least
        return exc

    def renamed(self, *, prompt: str, max_tokens: str) -> ContextLengthExceeded:
        """The same error for a route whose fields have other names (e.g. /inference)."""
        if self.sizes is None:
            return self
        return self.of(*self.sizes, prompt=prompt, max_tokens=max_tokens, at_least=self.at_least)


class PayloadTooLarge(InvalidParameter):
    """The request body is larger than the server accepts."""

    http_status = 413
    openai_code = "payload_too_large"


class MethodNotAllowed(InvalidParameter):
    """The HTTP method is not served (OPTIONS outside an allowed CORS preflight)."""

    http_status = 405
    openai_code = "method_not_allowed"


class UnsupportedMediaType(InvalidParameter):
    """A request body that is not JSON."""

    http_status = 415
    openai_code = "unsupported_media_type"


class InvalidCatalog(LcfinError, ValueError):
    """A models/profiles TOML file has a bad entry."""

    openai_code = "invalid_catalog"
    exit_code = EXIT_USAGE


class ModelNotFound(LcfinError, LookupError):
    """No catalog alias, repo id or local directory matches the name."""

    http_status = 404
    openai_type = "invalid_request_error"
    openai_code = "model_not_found"
    exit_code = EXIT_MODEL_NOT_FOUND


class NotFound(LcfinError, LookupError):
    """A stored object (a response of the Responses API) does not exist, expired, or is not yours.

    The same answer for all three, so that another key cannot learn that an id exists.
    """

    http_status = 404
    openai_type = "invalid_request_error"
    openai_code = "not_found"


class Unauthorized(LcfinError):
    """Missing or wrong credentials (API key, or hub token)."""

    http_status = 401
    openai_type = "authentication_error"
    openai_code = "invalid_api_key"
    exit_code = EXIT_UNAUTHORIZED


class GatedModel(Unauthorized):
    """The hub refused access to a gated or private repository."""

    http_status = 403
    openai_type = "permission_error"
    openai_code = "gated_model"


class Forbidden(Unauthorized):
    """The credentials are valid but not for this route (e.g. admin routes)."""

    http_status = 403
    openai_type = "permission_error"
    openai_code = "insufficient_permissions"


class Conflict(LcfinError):
    """The request conflicts with the current state (e.g. a load already running)."""

    http_status = 409
    openai_type = "invalid_request_error"
    openai_code = "conflict"


class DoesNotFit(LcfinError):
    """The model does not fit the hardware profile's memory budget."""

    http_status = 422
    openai_type = "invalid_request_error"
    openai_code = "model_does_not_fit"
    exit_code = EXIT_DOES_NOT_FIT


class BackendUnavailable(LcfinError):
    """No backend can serve right now (not installed, no model, engine dead)."""

    http_status = 503
    openai_code = "backend_unavailable"
    exit_code = EXIT_BACKEND_UNAVAILABLE


class ModelLoading(BackendUnavailable):
    """A model is loading or switching; retry after `retry_after` seconds."""

    openai_code = "model_loading"

    def __init__(self, message: str, *, retry_after: int = 5, **kwargs: str | None) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ModelLoadFailed(LcfinError):
    """Loading a model failed (corrupt files, out of memory, ...)."""

    openai_code = "model_load_failed"
    exit_code = EXIT_BACKEND_UNAVAILABLE


class PortUnavailable(LcfinError):
    """`lcfin serve` cannot listen on its host and port (checked before the model loads)."""

    openai_code = "port_unavailable"
    exit_code = EXIT_PORT_UNAVAILABLE


class RateLimited(LcfinError):
    """Too many requests or tokens for this key, or the queue is full."""

    http_status = 429
    openai_type = "rate_limit_error"
    openai_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int = 1, **kwargs: str | None) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Overloaded(RateLimited):
    """The admission queue is full: every running and waiting place is taken."""

    openai_code = "queue_full"


class RequestTimeout(LcfinError):
    """A generation ran past the per-request timeout (LCFIN_REQUEST_TIMEOUT) and was aborted."""

    http_status = 504
    openai_code = "timeout"

    @classmethod
    def after(cls, timeout_s: float) -> RequestTimeout:
        """The error for a generation aborted after `timeout_s` seconds."""
        return cls(
            f"The request took longer than {timeout_s:g} s and was aborted",
            hint="ask for fewer tokens (max_tokens), or raise LCFIN_REQUEST_TIMEOUT",
        )


class OutputTruncated(LcfinError):
    """Structured output was cut by max_tokens (finish_reason "length"), so it does not parse."""

    openai_code = "output_truncated"
