"""Model spec + profile -> keyword arguments of vLLM's `AsyncEngineArgs` (the fit: planner.py).

Pure: nothing here imports vllm. The names and defaults are vLLM 0.33's
(`vllm/engine/arg_utils.py::EngineArgs` / `AsyncEngineArgs`, ../shared/VLLM-NOTES.md section 2).

The hub token never enters these arguments. `VLLMBackend.load` first downloads the files with
lcfin's hub code (`engine/hub.py`, which sends `Settings.token_for(repo_id)`: HF_TOKEN_LC for
LinguaCustodia, HF_TOKEN otherwise) and passes the local snapshot directory as `model`, so vLLM
reads local files only. vLLM therefore never needs HF_TOKEN, and the engine configuration it
logs holds nothing secret. An `hf_token` override is refused for the same reason.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcfin.engine.profiles import PROFILE_OVERRIDES, HardwareProfile, effective_profile
from lcfin.engine.warm import sleep_mode_for
from lcfin.errors import InvalidParameter

if TYPE_CHECKING:
    from lcfin.config import Settings
    from lcfin.engine.planner import MemoryPlan
    from lcfin.engine.registry import ModelSpec

__all__ = [
    "STRUCTURED_OUTPUTS",
    "engine_args",
    "executor_backend",
    "is_multimodal_checkpoint",
]

log = logging.getLogger(__name__)

#: Options lcfin sets itself; an override may not replace them.
_RESERVED = frozenset({"model", "tokenizer", "download_dir", "served_model_name", "hf_token"})
#: vLLM picks the block size itself (16, or an attention backend's preference) unless told.
_VLLM_DEFAULT_BLOCK_SIZE = 16
#: vLLM's `StructuredOutputsConfig`: xgrammar (a dependency of lcfin and of vLLM), compact JSON.
STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}


def executor_backend(profile: HardwareProfile) -> str | None:
    """vLLM's `distributed_executor_backend`: Ray across nodes, processes on one node."""
    if profile.multi_node:
        return "ray"
    if profile.tensor_parallel_size * profile.pipeline_parallel_size > 1:
        return "mp"
    return None  # one GPU: vLLM's "uni" executor in the EngineCore process


def is_multimodal_checkpoint(model_dir: Path | None) -> bool:
    """Whether the checkpoint has a vision tower (Gemma 3 `Gemma3ForConditionalGeneration`).

    lcfin serves text only, so such checkpoints load with `language_model_only=True`.
    """
    if model_dir is None or not (model_dir / "config.json").is_file():
        return False
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "vision_config" in config


def _check_overrides(extra: dict[str, Any]) -> None:
    reserved = sorted(set(extra) & _RESERVED)
    if reserved:
        raise InvalidParameter(
            f"Load option {reserved[0]!r} is set by lcfin and cannot be overridden",
            param=reserved[0],
            hint="hub tokens come from HF_TOKEN_LC / HF_TOKEN; the model from its name",
        )


def _memory_args(
    spec: ModelSpec,
    prof: HardwareProfile,
    settings: Settings,
    max_model_len: int,
    plan: MemoryPlan | None,
) -> dict[str, Any]:
    """GPU: a fraction of the device. vLLM's CPU build: the planner's KV cache, in bytes.

    On the CPU, `gpu_memory_utilization` would be a fraction of the machine's RAM (measured
    after the processes have started); lcfin gives `kv_cache_memory_bytes` instead, the
    engine-argument form of VLLM_CPU_KVCACHE_SPACE (`vllm/platforms/cpu.py`), so that vLLM's
    KV cache is exactly what `lcfin plan` predicts. A VLLM_CPU_KVCACHE_SPACE in the
    environment still overrides it (vLLM reads it last).
    """
    if prof.is_gpu:
        return {"gpu_memory_utilization": prof.gpu_memory_utilization}
    if plan is None:  # a bare mapping (VLLMBackend.load passes the load's plan)
        if spec.arch is None:
            return {}
        from lcfin.engine.planner import plan_memory

        plan = plan_memory(spec, prof, max_model_len=max_model_len, user_catalog=settings.catalog)
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        log.warning(
            "VLLM_CPU_KVCACHE_SPACE=%s overrides the profile's KV cache (%.2f GiB)",
            os.environ["VLLM_CPU_KVCACHE_SPACE"],
            plan.kv_cache_bytes / 2**30,
        )
    return {"kv_cache_memory_bytes": max(plan.kv_cache_bytes, 1)}


def engine_args(
    spec: ModelSpec,
    profile: HardwareProfile,
    settings: Settings,
    *,
    plan: MemoryPlan | None = None,
    model_dir: Path | None = None,
    enable_sleep_mode: bool | None = None,
    language_model_only: bool | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for `vllm.AsyncEngineArgs` serving `spec` on `profile`.

    Args:
        plan: the load's memory plan (the KV cache vLLM's CPU build is given); planned here
            when not given.
        model_dir: the downloaded snapshot; `model` and `tokenizer` point at it (see the module
            docstring). Without it, the model's bundled/local directory or its repo id.
        enable_sleep_mode: build the engine so that it can sleep (vLLM sleep mode, the warm
            tier); default: `settings.sleep_mode` (`auto`: on CUDA GPU profiles).
        language_model_only: skip a vision tower; default: detected from the config.json.
        **overrides: profile fields (`max_model_len`, `gpu_memory_utilization`, ...); any other
            key is passed to vLLM as is (e.g. `kv_cache_dtype="fp8"`, `quantization`).

    Raises:
        InvalidParameter: an override is invalid or reserved (`hf_token`, `model`, ...), or
            sleep mode is asked for on a profile without a CUDA GPU.
    """
    prof = effective_profile(profile, overrides)
    extra = {k: v for k, v in overrides.items() if k not in PROFILE_OVERRIDES}
    _check_overrides(extra)
    source = model_dir or spec.source_dir
    model = str(source) if source is not None else spec.repo_id
    limit = spec.arch.max_position_embeddings if spec.arch is not None else None
    max_model_len = min(prof.max_model_len, limit) if limit else prof.max_model_len
    kwargs: dict[str, Any] = {
        "model": model,
        "tokenizer": model,
        # A local snapshot is already the right revision; vLLM must not look it up again.
        "revision": None if source is not None else spec.revision,
        "download_dir": str(settings.hub_cache),
        "dtype": prof.dtype,
        **_memory_args(spec, prof, settings, max_model_len, plan),
        "max_model_len": max_model_len,
        "enforce_eager": prof.enforce_eager,
        "disable_custom_all_reduce": prof.disable_custom_all_reduce,
        "tensor_parallel_size": prof.tensor_parallel_size,
        "pipeline_parallel_size": prof.pipeline_parallel_size,
        "distributed_executor_backend": executor_backend(prof),
        # Explicit: AsyncLLM's default usage context would cap max_num_seqs at 128.
        "max_num_seqs": prof.max_num_seqs,
        "max_num_batched_tokens": prof.max_num_batched_tokens,
        "enable_prefix_caching": prof.enable_prefix_caching,
        "trust_remote_code": settings.trust_remote_code,
        "served_model_name": spec.name,
        # vLLM's own stat loggers (its log line, its global Prometheus registry) off: lcfin
        # reads the scheduler's stats through a logger of its own (VLLMBackend.load), for
        # BackendStats and /metrics.
        "disable_log_stats": True,
        # Compact JSON for every structured output: vLLM reads disable_any_whitespace from here
        # only (never per request), and only with a named backend ("auto" refuses the flag).
        "structured_outputs_config": dict(STRUCTURED_OUTPUTS),
    }
    if prof.block_size != _VLLM_DEFAULT_BLOCK_SIZE:
        kwargs["block_size"] = prof.block_size
    if language_model_only is None:
        language_model_only = is_multimodal_checkpoint(source)
    if language_model_only:
        kwargs["language_model_only"] = True
    if enable_sleep_mode is None:
        enable_sleep_mode = sleep_mode_for(settings.sleep_mode, prof)
    elif enable_sleep_mode:
        sleep_mode_for("on", prof)  # refused without a CUDA GPU
    if enable_sleep_mode:
        kwargs["enable_sleep_mode"] = True
    return {**kwargs, **extra}
