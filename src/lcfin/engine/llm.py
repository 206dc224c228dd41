"""FinancialLLM: the one object notebooks, the CLI and the server all use."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from lcfin.config import Settings, get_settings
from lcfin.engine.aio import LoopThread
from lcfin.engine.backend import select_backend
from lcfin.engine.chat import RenderedPrompt, fit_messages, normalize_messages, render_chat
from lcfin.engine.manager import LoadedModel, ModelManager, ModelStatus
from lcfin.engine.profiles import HardwareProfile, load_profile
from lcfin.engine.registry import ModelSpec
from lcfin.engine.types import (
    Completion,
    Delta,
    GenerationRequest,
    Message,
    SamplingParams,
    Timings,
    Usage,
    new_request_id,
)
from lcfin.errors import InvalidParameter
from lcfin.telemetry.records import RequestRecord, StatsCollector

__all__ = ["FinancialLLM"]

log = logging.getLogger(__name__)

_PARAM_NAMES = {f.name for f in dataclasses.fields(SamplingParams)}
Prompt = str | Sequence[Message]


def default_model_for(profile: HardwareProfile) -> str:
    """The model to load when none is named: the demo on CPU, Llama 3.1 8B on a GPU."""
    return "demo" if not profile.is_gpu else "llama3.1-8b"


class FinancialLLM:
    """Load a financial LLM and chat with it, sync or async, streaming or not.

    Args:
        model: alias, hub repo id or directory; default `MODEL_NAME`, else `demo` on CPU.
        profile: hardware profile name, or 'auto' (from `DEPLOYMENT_ENV`, else detected).
        backend: 'auto', 'vllm' or 'transformers'.
        settings: a `Settings`; default `get_settings()` (env and `.env`).
        load: load the model now (blocking); False leaves it to `aswitch(llm.initial_model)`,
            as the server does so that it answers /health while the model loads.
        **overrides: backend load options (`max_model_len`, `dtype`, ...).

    Raises:
        ModelNotFound, InvalidParameter, BackendUnavailable, ModelLoadFailed, GatedModel:
            the model could not be resolved or loaded.
    """

    def __init__(
        self,
        model: str | None = None,
        profile: str = "auto",
        backend: str = "auto",
        *,
        settings: Settings | None = None,
        load: bool = True,
        **overrides: Any,
    ) -> None:
        self.settings = settings or get_settings()
        name = self.settings.profile_name if profile == "auto" else profile
        self.profile = load_profile(name, self.settings.catalog)
        kind = select_backend(backend, self.profile, self.settings)
        self._manager = ModelManager(self.settings, self.profile, kind)
        self._loop = LoopThread()
        self._stats = StatsCollector()
        self.record_hooks: list[Callable[[RequestRecord], None]] = []
        #: The model loaded at start (or to load later with `aswitch`, when load=False).
        self.initial_model = model or self.settings.default_model or default_model_for(self.profile)
        if load:
            try:
                self._loop.run(self._manager.load(self.initial_model, **overrides))
            except BaseException:
                self._loop.close()
                raise

    # -- model management --------------------------------------------------------------

    @property
    def backend_kind(self) -> str:
        """The backend this object loads models with: 'vllm' or 'transformers'."""
        return self._manager.backend_kind

    @property
    def model(self) -> str | None:
        """The alias (or path / repo id) of the model being served."""
        return self._manager.status().model

    def status(self) -> ModelStatus:
        """State (idle / loading / ready / failed), model, backend, profile, load time."""
        return self._manager.status()

    def stats(self) -> dict[str, Any]:
        """Request, token and latency totals since this object was created."""
        return {"status": self.status().to_dict(), **self._stats.summary()}

    def recent_requests(self) -> list[RequestRecord]:
        """The most recent request records, oldest first."""
        return self._stats.recent()

    async def aswitch(self, model: str | ModelSpec, **overrides: Any) -> ModelSpec:
        """Serve another model; the current one keeps serving until the new one is ready.

        Raises:
            ModelNotFound, ModelLoadFailed, GatedModel, BackendUnavailable: the previous
                model (if any) keeps serving.
        """
        return await self._manager.load(model, **overrides)

    def switch(self, model: str | ModelSpec, **overrides: Any) -> ModelSpec:
        """Sync twin of `aswitch`."""
        return self._loop.run(self.aswitch(model, **overrides))

    def close(self) -> None:
        """Free the model and stop the helper thread."""
        self._manager.close()
        self._loop.close()

    def __enter__(self) -> FinancialLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        st = self.status()
        return f"FinancialLLM(model={st.model!r}, backend={st.backend!r}, profile={st.profile!r})"

    # -- generation: async ----------------------------------------------------------------

    async def astream_events(
        self,
        messages: Prompt | None = None,
        *,
        prompt: str | None = None,
        truncate: bool = True,
        endpoint: str = "library",
        request_id: str | None = None,
        **params: Any,
    ) -> AsyncIterator[Delta | Completion]:
        """Stream `Delta`s, then one final `Completion` (the building block of the others).

        Give chat `messages` (a str is one user message) or a raw `prompt`.

        Raises:
            InvalidParameter, ContextLengthExceeded: bad parameters or too long a prompt.
            BackendUnavailable, ModelLoading: no model is ready.
        """
        if (messages is None) == (prompt is None):
            raise InvalidParameter("give either messages or prompt", param="messages")
        async with self._manager.lease() as loaded:
            sampling = self._sampling(loaded, params)
            rendered = self._render(loaded, messages, prompt, sampling, truncate)
            request = GenerationRequest(
                rendered.token_ids,
                sampling,
                request_id or new_request_id(),
                rendered.text,
                extra_stops=rendered.extra_stops,
            )
            async for event in self._run(loaded, request, endpoint, rendered.dropped_messages):
                yield event

    async def _run(
        self, loaded: LoadedModel, request: GenerationRequest, endpoint: str, dropped: int
    ) -> AsyncIterator[Delta | Completion]:
        started = time.perf_counter()
        ttft: float | None = None
        parts: list[str] = []
        tokens, finish, error = 0, "abort", None
        try:
            async for delta in loaded.backend.generate(request):
                if ttft is None and delta.num_tokens:
                    ttft = time.perf_counter() - started
                parts.append(delta.text)
                tokens += delta.num_tokens
                if delta.finish_reason is not None:
                    finish = delta.finish_reason
                yield delta
        except Exception as exc:
            finish, error = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            total = time.perf_counter() - started
            self._record(loaded, request, endpoint, tokens, finish, total, ttft, error)
        yield Completion(
            text="".join(parts),
            finish_reason=finish,  # type: ignore[arg-type]
            usage=Usage(len(request.prompt_token_ids), tokens),
            model=loaded.spec.name,
            request_id=request.request_id,
            timings=Timings(time_to_first_token_s=ttft, total_s=total),
            dropped_messages=dropped,
        )

    async def astream(self, messages: Prompt, **params: Any) -> AsyncIterator[str]:
        """Stream the reply's text as it is generated."""
        async for event in self.astream_events(messages, **params):
            if isinstance(event, Delta) and event.text:
                yield event.text

    async def astream_completion(self, prompt: str, **params: Any) -> AsyncIterator[str]:
        """Stream a raw completion of `prompt` (no chat template)."""
        async for event in self.astream_events(prompt=prompt, **params):
            if isinstance(event, Delta) and event.text:
                yield event.text

    async def achat(self, messages: Prompt, **params: Any) -> Completion:
        """Answer a conversation; returns the full `Completion` (text, usage, finish reason)."""
        return await _final(self.astream_events(messages, **params))

    async def acomplete(self, prompt: str, **params: Any) -> Completion:
        """Complete a raw prompt (no chat template)."""
        return await _final(self.astream_events(prompt=prompt, **params))

    async def aask(self, question: str, *, system: str | None = None, **params: Any) -> str:
        """Ask one question; returns the answer's text."""
        return (await self.achat(_question(question, system), **params)).text

    # -- generation: sync twins (safe inside Jupyter's running loop) ------------------------

    def chat(self, messages: Prompt, **params: Any) -> Completion:
        """Sync twin of `achat`."""
        return self._loop.run(self.achat(messages, **params))

    def complete(self, prompt: str, **params: Any) -> Completion:
        """Sync twin of `acomplete`."""
        return self._loop.run(self.acomplete(prompt, **params))

    def ask(self, question: str, *, system: str | None = None, **params: Any) -> str:
        """Sync twin of `aask`."""
        return self._loop.run(self.aask(question, system=system, **params))

    def stream(self, messages: Prompt, **params: Any) -> Iterator[str]:
        """Sync twin of `astream`; breaking out of the loop aborts the generation."""
        return self._loop.iterate(self.astream(messages, **params))

    def stream_completion(self, prompt: str, **params: Any) -> Iterator[str]:
        """Sync twin of `astream_completion`."""
        return self._loop.iterate(self.astream_completion(prompt, **params))

    def stream_events(
        self, messages: Prompt | None = None, **kw: Any
    ) -> Iterator[Delta | Completion]:
        """Sync twin of `astream_events`."""
        return self._loop.iterate(self.astream_events(messages, **kw))

    # -- helpers ----------------------------------------------------------------------------

    def _sampling(self, loaded: LoadedModel, params: dict[str, Any]) -> SamplingParams:
        unknown = sorted(set(params) - _PARAM_NAMES)
        if unknown:
            raise InvalidParameter(f"Unknown parameter(s): {', '.join(unknown)}", param=unknown[0])
        defaults = getattr(loaded.backend, "default_sampling", {})
        given = {k: v for k, v in params.items() if v is not None or k == "max_tokens"}
        return SamplingParams(**{**defaults, **given})

    def _render(
        self,
        loaded: LoadedModel,
        messages: Prompt | None,
        prompt: str | None,
        sampling: SamplingParams,
        truncate: bool,
    ) -> RenderedPrompt:
        tok, limit = loaded.backend.tokenizer, loaded.backend.max_model_len
        if prompt is not None:
            ids = tok.encode(prompt)
            rendered = RenderedPrompt(prompt, ids)
            return fit_messages(
                [{"role": "user", "content": prompt}],
                lambda _: rendered,
                max_model_len=limit,
                max_tokens=sampling.max_tokens,
                truncate=False,
            )
        plain = loaded.spec.chat_format == "plain"
        return fit_messages(
            normalize_messages(messages or []),
            lambda msgs: render_chat(tok, msgs, plain=plain),
            max_model_len=limit,
            max_tokens=sampling.max_tokens,
            truncate=truncate,
        )

    def _record(
        self,
        loaded: LoadedModel,
        request: GenerationRequest,
        endpoint: str,
        tokens: int,
        finish: str,
        total: float,
        ttft: float | None,
        error: str | None,
    ) -> None:
        record = RequestRecord(
            request_id=request.request_id,
            model=loaded.spec.name,
            backend=loaded.backend.name,
            profile=self.profile.name,
            prompt_tokens=len(request.prompt_token_ids),
            completion_tokens=tokens,
            finish_reason=finish,
            latency_s=total,
            time_to_first_token_s=ttft,
            status="error" if error else "ok",
            error=error,
            endpoint=endpoint,
        )
        self._stats.add(record)
        for hook in self.record_hooks:
            try:
                hook(record)
            except Exception:  # a broken hook must not fail the request
                log.exception("Record hook %r failed", hook)


def _question(question: str, system: str | None) -> list[Message]:
    msgs: list[Message] = [{"role": "system", "content": system}] if system else []
    return [*msgs, {"role": "user", "content": question}]


async def _final(events: AsyncIterator[Delta | Completion]) -> Completion:
    result: Completion | None = None
    async for event in events:
        if isinstance(event, Completion):
            result = event
    assert result is not None  # _run always ends with a Completion
    return result
