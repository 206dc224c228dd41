"""The `InferenceBackend` protocol every engine implements, and backend selection."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from lcfin.errors import BackendUnavailable, InvalidParameter

if TYPE_CHECKING:
    from lcfin.config import Settings
    from lcfin.engine.profiles import HardwareProfile
    from lcfin.engine.registry import ModelSpec
    from lcfin.engine.types import Delta, GenerationRequest

__all__ = [
    "BACKENDS",
    "BackendStats",
    "InferenceBackend",
    "Tokenizer",
    "load_backend",
    "select_backend",
]

log = logging.getLogger(__name__)

#: What `backend=` / `--backend` accepts.
BACKENDS = ("auto", "vllm", "transformers")


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer lcfin uses (vLLM returns the same kind)."""

    chat_template: Any
    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class BackendStats:
    """What a backend knows about its own load right now."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float | None = None


class InferenceBackend(Protocol):
    """An engine that streams completions for tokenised prompts.

    `generate` is an async iterator of `Delta`s; closing it early (client gone, timeout)
    aborts the request and frees its slot within one decoding step.
    """

    name: str
    model_id: str
    max_model_len: int
    tokenizer: Tokenizer

    def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]: ...

    def stats(self) -> BackendStats: ...

    def close(self) -> None: ...


def vllm_available() -> bool:
    """Whether the `vllm` package is importable (without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def select_backend(requested: str, profile: HardwareProfile, settings: Settings) -> str:
    """Resolve 'auto' to 'vllm' or 'transformers', logging why.

    Raises:
        InvalidParameter: `requested` is not auto, vllm or transformers.
        BackendUnavailable: vLLM was asked for but is not installed or there is no GPU.
    """
    from lcfin.engine.profiles import detect_gpus

    if requested not in BACKENDS:
        raise InvalidParameter(
            f"Unknown backend {requested!r}",
            param="backend",
            hint=f"choose one of: {', '.join(BACKENDS)}",
        )
    wanted = requested if requested != "auto" else settings.backend
    if settings.use_vllm is True and wanted == "auto":
        wanted = "vllm"
    if wanted == "transformers":
        return "transformers"
    has_vllm, has_gpu = vllm_available(), bool(detect_gpus())
    if wanted == "vllm":
        if not has_vllm:
            raise BackendUnavailable(
                "The vLLM backend was requested but vllm is not installed",
                hint="pip install 'lcfin[vllm]' on a CUDA machine, or use the transformers "
                "backend (--backend transformers; backend='transformers' in Python)",
            )
        if not has_gpu:
            raise BackendUnavailable(
                "The vLLM backend needs a CUDA GPU and none was found",
                hint="use the transformers backend on this machine (--backend transformers, "
                "or --profile cpu; backend='transformers' in Python)",
            )
        return "vllm"
    if settings.use_vllm is False:
        log.info("Backend: transformers (USE_VLLM=false)")
        return "transformers"
    if profile.backend == "vllm" and has_vllm and has_gpu:
        log.info("Backend: vllm (installed, CUDA GPU present, profile %s)", profile.name)
        return "vllm"
    reason = "no CUDA GPU" if not has_gpu else "vllm not installed"
    if profile.backend == "transformers":
        reason = f"profile {profile.name} prefers it"
    log.info("Backend: transformers (%s)", reason)
    return "transformers"


def load_backend(
    kind: str, spec: ModelSpec, profile: HardwareProfile, settings: Settings, **overrides: Any
) -> InferenceBackend:
    """Build and load a backend of `kind` (blocking: call it from a worker thread).

    Raises:
        DoesNotFit: (vLLM) the planner says the model cannot fit the profile.
        BackendUnavailable: vllm is not installed, or the hub cannot be reached.
        ModelLoadFailed, GatedModel, Unauthorized, ModelNotFound: loading failed.
    """
    if kind == "vllm":
        from lcfin.engine.vllm import VLLMBackend  # imports vllm itself, lazily

        return VLLMBackend.load(spec, profile, settings, **overrides)
    from lcfin.engine.transformers import TransformersBackend

    return TransformersBackend.load(spec, profile, settings, **overrides)
