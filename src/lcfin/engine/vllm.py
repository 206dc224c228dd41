"""VLLMBackend: vLLM's async engine (`AsyncLLM`) in this process, its EngineCore in a child.

Coded against vLLM 0.33 (../shared/VLLM-NOTES.md sections 1-4): `AsyncLLM.from_engine_args`
(`vllm/v1/engine/async_llm.py`), `AsyncEngineArgs` (`vllm/engine/arg_utils.py`),
`SamplingParams` + `RequestOutputKind.DELTA` (`vllm/sampling_params.py`), `vllm.inputs.tokens_input`
(a TokensPrompt dict where it is missing), and `AsyncLLM.generate / abort / shutdown /
get_tokenizer / model_config`. `vllm` is imported only inside `VLLMBackend.load`; the mapping
functions (`sampling_kwargs`, `delta_from_output`, `token_prompt`) take plain objects, so they are
tested without vLLM, which cannot be installed on CPU-only machines.

GPU memory belongs to the EngineCore child process (and its per-GPU workers): `close()` shuts the
engine down, then waits (bounded) until NVML shows the memory it held released. lcfin never
initialises CUDA in this process, so vLLM can fork its engine (VLLM-NOTES section 1).

The engine's output handler starts on the event loop of the first `generate` call: use one
`VLLMBackend` from one event loop (FinancialLLM and the server each keep to theirs).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcfin.engine.backend import BackendStats, Tokenizer
from lcfin.engine.types import Delta, FinishReason, GenerationRequest
from lcfin.engine.vllm_structured import logprobs_from_output, sampling_kwargs
from lcfin.errors import (
    BackendUnavailable,
    ContextLengthExceeded,
    InvalidParameter,
    LcfinError,
    ModelLoadFailed,
)

if TYPE_CHECKING:
    from lcfin.config import Settings
    from lcfin.engine.profiles import HardwareProfile
    from lcfin.engine.registry import ModelSpec

__all__ = ["VLLMBackend", "delta_from_output", "sampling_kwargs", "token_prompt"]

log = logging.getLogger(__name__)

#: vLLM's finish reasons (`FINISH_REASON_STRINGS`) -> lcfin's; "repetition" ends like a stop.
FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "abort": "abort",
    "error": "error",
    "repetition": "stop",
}
#: The generation_config.json values vLLM's server applies as defaults, that lcfin maps too.
_DEFAULT_NAMES = ("temperature", "top_p", "top_k", "repetition_penalty")
#: Memory a closed engine may leave behind (allocator slack) and still count as released.
RELEASE_SLACK_BYTES = 512 * 2**20

MemoryReader = Callable[[], "int | None"]


# -- pure mapping (no vllm) ---------------------------------------------------------------------


def finish_reason_of(reason: str | None, finished: bool) -> FinishReason | None:
    """lcfin's finish reason for vLLM's (None while the sequence runs)."""
    if reason is None:
        return "stop" if finished else None
    return FINISH_REASONS.get(reason, "stop")


def delta_from_output(output: Any, *, first: bool, logprobs: int | None = None) -> Delta:
    """A `Delta` from one DELTA-kind `RequestOutput` (duck-typed: attribute names only).

    `prompt_tokens` is set on the first output only, from `prompt_token_ids`.
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
        logprobs=logprobs_from_output(comp, logprobs),
    )


def token_prompt(
    token_ids: list[int], text: str | None, tokens_input: Callable[..., Any] | None
) -> Any:
    """The prompt as token ids: vLLM 0.33's `tokens_input` (rendered, not re-tokenised) if given."""
    if tokens_input is not None:
        return tokens_input(list(token_ids), prompt=text)
    return {"prompt_token_ids": list(token_ids)}  # TokensPrompt


def _translate(exc: Exception) -> LcfinError | None:
    """An lcfin error for vLLM's request errors (matched by name: vllm is not imported here)."""
    name = type(exc).__name__
    if name == "EngineDeadError":
        return BackendUnavailable(
            "The vLLM engine has died", hint="reload the model (`lcfin switch`, /load-model)"
        )
    if name in {"VLLMValidationError", "VLLMClientError"}:
        return InvalidParameter(f"vLLM rejected the request: {exc}")
    return None


# -- GPU memory (NVML; never CUDA in this process) ---------------------------------------------


def nvml_used_bytes() -> int | None:
    """Memory in use on this process's visible GPUs, per NVML; None without NVML."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver
        return None
    try:
        count = pynvml.nvmlDeviceGetCount()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        wanted = [int(i) for i in visible.split(",") if i.strip().isdigit()] or range(count)
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in wanted if i < count]
        return int(sum(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in handles))
    finally:
        pynvml.nvmlShutdown()


def wait_for_release(
    start: int | None,
    held: int,
    *,
    read: MemoryReader = nvml_used_bytes,
    timeout_s: float = 60.0,
    poll_s: float = 0.25,
) -> bool:
    """Wait until GPU memory in use drops by `held` bytes from `start`; False on timeout."""
    if start is None or held <= 0:
        return True
    target = start - held + RELEASE_SLACK_BYTES
    deadline = time.monotonic() + timeout_s
    while True:
        used = read()
        if used is None or used <= target:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


# -- the backend ----------------------------------------------------------------------------------


class VLLMBackend:
    """Serves one model with vLLM's `AsyncLLM`; see the module docstring."""

    name = "vllm"

    def __init__(
        self,
        engine: Any,
        *,
        model_id: str,
        make_sampling: Callable[..., Any],
        tokens_input: Callable[..., Any] | None = None,
        held_bytes: int = 0,
        read_memory: MemoryReader = nvml_used_bytes,
        release_timeout_s: float = 60.0,
    ) -> None:
        self.engine: Any = engine
        self.model_id = model_id
        self.tokenizer: Tokenizer = engine.get_tokenizer()
        self.max_model_len = int(engine.model_config.max_model_len)
        self.default_sampling = _generation_defaults(engine)
        self._make_sampling = make_sampling
        self._tokens_input = tokens_input
        self._held = held_bytes
        self._read_memory = read_memory
        self._release_timeout_s = release_timeout_s
        self._closed = False

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        profile: HardwareProfile,
        settings: Settings,
        *,
        model_dir: Path | None = None,
        **overrides: Any,
    ) -> VLLMBackend:
        """Pre-flight with the planner, download, then start vLLM (blocking: minutes at most).

        Raises:
            DoesNotFit: the planner says the model cannot fit (checked before vLLM is imported).
            InvalidParameter: an invalid or reserved load option.
            BackendUnavailable: vllm is not installed; or the hub is unreachable.
            GatedModel, Unauthorized, ModelNotFound: the hub refused or has no such model.
            ModelLoadFailed: vLLM could not start the engine.
        """
        from lcfin.engine.hub import resolve_model_dir
        from lcfin.engine.switching import complete_spec
        from lcfin.engine.vllm_args import check_fits, effective_profile, engine_args

        prof = effective_profile(profile, overrides)
        spec = complete_spec(spec, settings)
        check_fits(spec, prof, settings, max_model_len=overrides.get("max_model_len"))
        api = _vllm_api()
        path = model_dir or resolve_model_dir(spec, settings)
        kwargs = engine_args(prof, spec, settings, model_dir=path, **overrides)
        log.info("Starting vLLM for %s with %s", spec.name, kwargs)  # no secret in kwargs
        before = nvml_used_bytes()
        started = time.monotonic()
        try:
            engine = api["AsyncLLM"].from_engine_args(api["AsyncEngineArgs"](**kwargs))
        except Exception as exc:
            raise ModelLoadFailed(
                f"vLLM could not start {spec.name}: {type(exc).__name__}: {exc}",
                model=spec.name,
                hint="see vLLM's log above; try a lower max_model_len or `lcfin plan`",
            ) from exc
        after = nvml_used_bytes()
        held = after - before if after is not None and before is not None else 0
        elapsed = time.monotonic() - started
        log.info("vLLM serves %s (%.1fs, %.1f GiB of GPU memory)", spec.name, elapsed, held / 2**30)
        return cls(
            engine,
            model_id=spec.name,
            make_sampling=api["make_sampling"],
            tokens_input=api["tokens_input"],
            held_bytes=held,
        )

    # -- generation ---------------------------------------------------------------------------

    def _admit(self, request: GenerationRequest) -> tuple[Any, Any]:
        if self._closed:
            raise BackendUnavailable("The vLLM backend is closed", hint="load a model again")
        prompt_len = len(request.prompt_token_ids)
        if prompt_len >= self.max_model_len:
            raise ContextLengthExceeded(
                f"The prompt has {prompt_len} tokens; the context is {self.max_model_len}",
                param="messages",
                hint="shorten the prompt",
            )
        params = self._make_sampling(**sampling_kwargs(request, self.max_model_len))
        prompt = token_prompt(request.prompt_token_ids, request.prompt_text, self._tokens_input)
        return prompt, params

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream deltas for `request`; closing the iterator early aborts it in the engine."""
        prompt, params = self._admit(request)
        stream = self.engine.generate(prompt, params, request.request_id)
        done, first = False, True
        try:
            async for output in stream:
                delta = delta_from_output(output, first=first, logprobs=request.params.logprobs)
                first, done = False, delta.finish_reason is not None
                yield delta
                if done:
                    return
            done = True  # the engine ended the stream without a finish reason
            yield Delta("", finish_reason="abort")
        except Exception as exc:
            mapped = _translate(exc)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            await self._finish(stream, request.request_id, abort=not done)

    async def _finish(self, stream: Any, request_id: str, *, abort: bool) -> None:
        """Abort an unfinished request in the engine, then close vLLM's generator."""
        # Failures are expected when the engine is dead or closed: nothing is left to free.
        if abort:
            try:
                await self.engine.abort(request_id)
            except Exception as exc:
                log.debug("Abort of %s failed: %s", request_id, exc)
        try:
            await stream.aclose()
        except Exception as exc:
            log.debug("Closing the stream of %s failed: %s", request_id, exc)

    def stats(self) -> BackendStats:
        """Unfinished requests (running + waiting) in the engine."""
        if self._closed:
            return BackendStats()
        name = "get_num_unfinished_requests"
        count = getattr(self.engine, name, None)
        if count is None:  # where the engine does not expose it, its output processor does
            count = getattr(getattr(self.engine, "output_processor", None), name, None)
        return BackendStats(running=int(count()) if callable(count) else 0)

    # -- sleep mode (engines built with enable_sleep_mode=True; the warm tier, engine/warm.py) --

    @property
    def can_sleep(self) -> bool:
        """Whether the engine was built with vLLM's sleep mode (checked before any sleep)."""
        config = getattr(self.engine, "model_config", None)
        return not self._closed and bool(getattr(config, "enable_sleep_mode", False))

    async def sleep(self, level: int = 1) -> None:
        """Free the GPU: level 1 moves the weights to CPU RAM, level 2 discards them.

        Raises:
            BackendUnavailable: the engine was built without sleep mode (or is closed).
        """
        if not self.can_sleep:
            raise BackendUnavailable(
                f"The vLLM engine of {self.model_id} cannot sleep: it was built without sleep mode",
                hint="set LCFIN_SLEEP_MODE=auto (CUDA GPUs) and load the model again",
            )
        before = self._read_memory()
        await self.engine.sleep(level)
        after = self._read_memory()
        if before is not None and after is not None:  # what close() must wait for shrinks
            self._held = max(0, self._held - max(0, before - after))

    async def wake_up(self) -> None:
        """Bring a sleeping engine back onto the GPU."""
        before = self._read_memory()
        await self.engine.wake_up()
        after = self._read_memory()
        if before is not None and after is not None:
            self._held += max(0, after - before)

    # -- shutdown -------------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the engine down (in-flight requests end) and wait until its GPU memory is free."""
        if self._closed:
            return
        self._closed = True
        start = self._read_memory()
        try:
            self.engine.shutdown()
        except Exception as exc:
            log.warning("vLLM shutdown of %s failed: %s", self.model_id, exc)
        self.engine = None
        gc.collect()
        if not wait_for_release(
            start, self._held, read=self._read_memory, timeout_s=self._release_timeout_s
        ):
            log.warning(
                "GPU memory of %s not released after %.0fs; the next load may not fit",
                self.model_id,
                self._release_timeout_s,
            )


def _generation_defaults(engine: Any) -> dict[str, Any]:
    """Sampling defaults from generation_config.json, as vLLM's OpenAI server applies them."""
    getter = getattr(getattr(engine, "model_config", None), "get_diff_sampling_param", None)
    given = getter() if callable(getter) else {}
    return {k: given[k] for k in _DEFAULT_NAMES if given.get(k) is not None}


def _vllm_api() -> dict[str, Any]:
    """The vLLM names the backend uses, imported now.

    Raises:
        BackendUnavailable: vllm is not installed.
    """
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.sampling_params import RequestOutputKind, SamplingParams
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError as exc:
        raise BackendUnavailable(
            f"The vLLM backend needs vllm, which cannot be imported ({exc})",
            hint="pip install 'lcfin[vllm]' on a CUDA machine, or use backend='transformers'",
        ) from None
    try:
        from vllm.inputs import tokens_input
    except ImportError:  # before the rendered-input API: TokensPrompt dicts
        tokens_input = None

    def make_sampling(structured_outputs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        if structured_outputs is not None:  # imported only when a request needs it
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(**structured_outputs)
        return SamplingParams(output_kind=RequestOutputKind.DELTA, **kwargs)

    return {
        "AsyncEngineArgs": AsyncEngineArgs,
        "AsyncLLM": AsyncLLM,
        "make_sampling": make_sampling,
        "tokens_input": tokens_input,
    }
