"""FinancialLLM: the one object notebooks, the CLI and the server all use."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from lcfin.config import Settings, get_settings
from lcfin.engine.backend import select_backend
from lcfin.engine.fanout import Batch, Job, batch_request_ids, check_size
from lcfin.engine.function_call_stream import stream_function_calls
from lcfin.engine.function_calls import check_tools
from lcfin.engine.manager import LoadedModel, ModelManager, ModelStatus
from lcfin.engine.metering import Metering
from lcfin.engine.prepare import Prompt, SamplingKeywords, prepare_jobs, question_messages
from lcfin.engine.profiles import HardwareProfile, load_profile, profile_for_backend
from lcfin.engine.registry import ModelSpec, get_model
from lcfin.engine.structured import parse_output, response_format_for
from lcfin.engine.sync_bridge import LoopThread
from lcfin.engine.types import (
    BackendStats,
    Completion,
    Delta,
    SamplingSource,
    collect,
    new_request_id,
)
from lcfin.errors import InvalidParameter, LcfinError
from lcfin.telemetry.meter import RecordLabels
from lcfin.telemetry.records import RequestRecord

__all__ = ["FinancialLLM"]

log = logging.getLogger(__name__)


def default_model_for(profile: HardwareProfile) -> str:
    """The model to load when none is named: the demo on CPU, the seed's Qwen3 8B on a GPU."""
    return "demo" if not profile.is_gpu else "qwen3-8b"


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
        catalog = self.settings.catalog
        self.profile = load_profile(name, catalog)
        #: The model loaded at start (or to load later with `aswitch`, when load=False).
        self.initial_model = model or self.settings.default_model or default_model_for(self.profile)
        kind = select_backend(backend, self.profile, self.settings, _spec_or_none(self))
        self.profile = profile_for_backend(self.profile, kind, catalog)
        self._manager = ModelManager(self.settings, self.profile, kind)
        self._loop = LoopThread()
        self._gpus: bool | None = None
        self._metering = Metering(self.settings, self.profile)
        #: Called with each `RequestRecord` (the server's ledger and metrics are hooks).
        self.record_hooks: list[Callable[[RequestRecord], None]] = self._metering.hooks
        if load:
            try:
                self._loop.run(self._manager.load(self.initial_model, **overrides))
            except BaseException:
                self._loop.close()
                raise

    # -- model management --------------------------------------------------------------

    @property
    def gpu_available(self) -> bool:
        """Whether this machine has a CUDA GPU (NVML; CUDA itself is never initialised)."""
        from lcfin.engine.profiles import detect_gpus

        if self._gpus is None:
            self._gpus = bool(detect_gpus())
        return self._gpus

    @property
    def backend_kind(self) -> str:
        """The backend this object loads models with: 'vllm' or 'transformers'."""
        return self._manager.backend_kind

    @property
    def model(self) -> str | None:
        """The alias (or path / repo id) of the model being served."""
        cur = self._manager.current
        return None if cur is None else cur.spec.name

    @property
    def loaded(self) -> LoadedModel | None:
        """The model serving now: its spec, backend and requests in flight (None while none is
        loaded). A read-only view: load and switch with `switch` / `aswitch`."""
        return self._manager.current

    def status(self) -> ModelStatus:
        """State (idle / loading / ready / failed), model, backend, profile, load time."""
        return self._manager.status()

    def stats(self) -> dict[str, Any]:
        """Request, token, latency and cost totals since this object was created."""
        busy = {"busy_s": self._metering.accounting.clock.busy_seconds}
        return {"status": self.status().to_dict(), **self._metering.stats.summary(), **busy}

    def backend_stats(self) -> BackendStats | None:
        """Requests running and waiting in the serving backend (None when none is loaded)."""
        cur = self._manager.current
        return None if cur is None else cur.backend.stats()

    @property
    def failure_hooks(self) -> list[Callable[[str], None]]:
        """Called with the reason (from another thread) when the serving engine dies."""
        return self._manager.recovery.hooks

    def recent_requests(self) -> list[RequestRecord]:
        """The most recent request records, oldest first."""
        return self._metering.stats.recent()

    async def aswitch(self, model: str | ModelSpec, **overrides: Any) -> ModelSpec:
        """Serve another model; the current one keeps serving until the new one is ready.

        Raises:
            ModelNotFound, ModelLoadFailed, GatedModel, BackendUnavailable: the previous
                model (if any) keeps serving.
        """
        return await self._manager.load(model, **overrides)

    def model_for_client(self, name: str) -> ModelSpec:
        """The model a remote client may load by `name` (see `engine/sources.py`).

        Raises:
            ModelNotFound: not a catalog alias, an allowed hub id or a directory under
                LCFIN_LOCAL_MODELS_ROOT (the same message whether or not a path exists).
        """
        from lcfin.engine.sources import model_for_client

        return model_for_client(name, self.settings)

    def switch(self, model: str | ModelSpec, **overrides: Any) -> ModelSpec:
        """Sync twin of `aswitch`."""
        return self._loop.run(self.aswitch(model, **overrides))

    async def abegin_switch(
        self, model: str | ModelSpec, **overrides: Any
    ) -> asyncio.Task[ModelSpec] | None:
        """Start `aswitch` and return once it is under way, with the task that finishes it.

        What a switch refuses before unloading anything is raised here, at once; later
        failures show in `status()` (and the task). None when `model` is already loaded.

        Raises:
            ModelNotFound, InvalidCatalog, DoesNotFit, ModelLoading: as `aswitch`, up front.
        """
        _, rest = await self._manager.start(model, **overrides)
        return None if rest is None else asyncio.ensure_future(rest)

    async def apreflight(self, model: str | ModelSpec | None = None, **overrides: Any) -> ModelSpec:
        """Resolve `model` (default: `initial_model`) and check it fits, loading nothing.

        Raises:
            ModelNotFound, InvalidCatalog: the name does not resolve.
            DoesNotFit: the model cannot fit this profile's memory budget.
        """
        return await self._manager.check(model or self.initial_model, **overrides)

    def preflight(self, model: str | ModelSpec | None = None, **overrides: Any) -> ModelSpec:
        """Sync twin of `apreflight`."""
        return self._loop.run(self.apreflight(model, **overrides))

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
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        **params: Any,
    ) -> AsyncIterator[Delta | Completion]:
        """Stream `Delta`s, then one final `Completion` (what the `stream` methods build on).

        Give chat `messages` (a str is one user message) or a raw `prompt`. With OpenAI
        `tools`, the final `Completion.tool_calls` holds the calls parsed from the reply;
        `tool_choice` "required" or a named function forces one call (see
        `engine/function_calls.py`).
        Templating, tokenization and context fitting run in a worker thread, off the loop.

        Raises:
            InvalidParameter, ContextLengthExceeded: bad parameters or too long a prompt.
            BackendUnavailable, ModelLoading: no model is ready.
            Overloaded: max_num_seqs + LCFIN_MAX_WAITING requests are already in flight.
            RequestTimeout: the generation ran past LCFIN_REQUEST_TIMEOUT (aborted).
        """
        if (messages is None) == (prompt is None) or params.get("n", 1) != 1:
            exc = _one_stream_error(messages, prompt)
            self.record_rejection(exc, endpoint=endpoint, request_id=request_id)
            raise exc
        source: Prompt = prompt if prompt is not None else messages  # type: ignore[assignment]
        async with (
            self.abatch(
                [source],
                raw=prompt is not None,
                truncate=truncate,
                endpoint=endpoint,
                request_id=request_id,
                tools=tools,
                tool_choice=tool_choice,
                **params,
            ) as batch,
            contextlib.aclosing(batch.events()) as events,
        ):
            async for _, event in events:  # closed at once when the caller stops early
                yield event

    @contextlib.asynccontextmanager
    async def abatch(
        self,
        sources: Sequence[Prompt],
        *,
        raw: bool = False,
        n: int = 1,
        truncate: bool = True,
        endpoint: str = "library",
        request_id: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        sampling: SamplingSource | None = None,
        **params: Any,
    ) -> AsyncIterator[Batch]:
        """Several generations admitted as one: `n` choices of each source, all or none.

        `sources` are conversations, or raw prompts with `raw=True`. Sampling comes from the
        keyword `params`, or from `sampling` (the server's request models), over the model's
        own defaults. Choice i of a seeded request gets seed + i. Places for every generation
        are leased at once, every prompt is rendered (off the loop) before any starts, and
        `Batch.admission` says what they may use at most; `Batch.events()` runs them and
        cancels the rest when one fails. A request
        refused here is recorded (finish reason `rejected`): once per generation it asked for,
        or once when it asks for more than the server ever runs.

        Raises:
            InvalidParameter: more generations than the server ever runs at once (`param` is
                "prompt" for raw prompts, "n" otherwise), or a bad parameter or prompt.
            Overloaded: not enough free places for all of them (nothing started).
            ContextLengthExceeded, BackendUnavailable, ModelLoading: as `astream_events`.
        """
        count, base = len(sources) * n, request_id or new_request_id()
        if sampling is not None and params:
            raise TypeError("give sampling= or keyword parameters, not both")
        source = SamplingKeywords(params) if sampling is None else sampling
        async with contextlib.AsyncExitStack() as stack:
            try:  # a request refused before it starts is counted too (see #17)
                check_size(n, count, self._manager.capacity, raw)
                ids = batch_request_ids(base, len(sources), n)
                check_tools(tools, tool_choice)
                loaded = await stack.enter_async_context(self._manager.lease(count))
                jobs = await asyncio.to_thread(
                    prepare_jobs, loaded, sources, raw, n, ids, truncate, tools, tool_choice, source
                )
            except LcfinError as exc:  # one record per generation; one for a request too big
                fits = 0 < count <= self._manager.capacity
                for rid in batch_request_ids(base, len(sources), n) if fits else [base]:
                    self.record_rejection(exc, endpoint=endpoint, request_id=rid)
                raise
            yield Batch(loaded, jobs, len(sources), endpoint, self._events)

    async def _events(
        self, loaded: LoadedModel, job: Job, endpoint: str, cancelled: asyncio.Event
    ) -> AsyncIterator[Delta | Completion]:
        events = self._metering.run(loaded, job, endpoint, cancelled)
        if job.parse_tools:  # text and calls split as they are generated
            events = stream_function_calls(events, job.tool_format)
        async for event in events:
            yield event

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

    async def achat(
        self, messages: Prompt, *, n: int = 1, json_schema: Any = None, **params: Any
    ) -> Completion:
        """Answer a conversation; returns the full `Completion` (text, usage, finish reason).

        Args:
            n: how many choices to generate (choice i of a seeded request gets seed + i). The
                `Completion` returned is choice 0's, with usage and cost summed over all of
                them; `Completion.choices` holds every one.
            json_schema: a JSON Schema dict or a pydantic model class; the reply is decoded
                under it and `Completion.parsed` holds the parsed dict or model instance.
                `response_format=` (OpenAI's dict) constrains without parsing.

        Raises:
            OutputTruncated: with `json_schema`, the reply was cut by max_tokens.
        """
        if json_schema is None:
            return await self._agenerate(messages, False, n, params)
        params["response_format"] = response_format_for(json_schema)
        done = await self._agenerate(messages, False, n, params)
        parsed = [dataclasses.replace(c, parsed=parse_output(c, json_schema)) for c in done.choices]
        return Completion.of_choices(parsed, n, done.request_id)

    async def acomplete(self, prompt: str, *, n: int = 1, **params: Any) -> Completion:
        """Complete a raw prompt (no chat template); `n` as in `achat`."""
        return await self._agenerate(prompt, True, n, params)

    async def _agenerate(
        self, source: Prompt, raw: bool, n: int, params: dict[str, Any]
    ) -> Completion:
        """The `n` choices of one conversation or raw prompt, as one `Completion`."""
        rid = params.pop("request_id", None) or new_request_id()
        async with (
            self.abatch([source], raw=raw, n=n, request_id=rid, **params) as batch,
            contextlib.aclosing(batch.events()) as events,
        ):
            return Completion.of_choices(await collect(events), n, rid)

    async def aask(self, question: str, *, system: str | None = None, **params: Any) -> str:
        """Ask one question; returns the answer's text."""
        return (await self.achat(question_messages(question, system), **params)).text

    # -- generation: sync twins (safe inside Jupyter's running loop) ------------------------

    def chat(
        self, messages: Prompt, *, n: int = 1, json_schema: Any = None, **params: Any
    ) -> Completion:
        """Sync twin of `achat`."""
        return self._loop.run(self.achat(messages, n=n, json_schema=json_schema, **params))

    def complete(self, prompt: str, *, n: int = 1, **params: Any) -> Completion:
        """Sync twin of `acomplete`."""
        return self._loop.run(self.acomplete(prompt, n=n, **params))

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

    def record_rejection(
        self,
        exc: BaseException,
        *,
        endpoint: str = "library",
        request_id: str | None = None,
        code: str | None = None,
    ) -> RequestRecord:
        """Count a request refused before generation (bad input, no model, full queue).

        The generation methods call it themselves; the server calls it for what it refuses
        before reaching them (an unknown model, a malformed body). `code`: the OpenAI error
        code when `exc` has none (default: the error's own).
        """
        st = self.status()
        labels = RecordLabels(
            request_id or new_request_id(),
            st.model or "",
            st.backend or self.backend_kind,
            self.profile.name,
            endpoint,
        )
        return self._metering.reject(labels, exc, code)


def _one_stream_error(messages: object, prompt: object) -> InvalidParameter:
    """What `astream_events` refuses: both or neither of messages and prompt, or n > 1."""
    if (messages is None) == (prompt is None):
        return InvalidParameter("give either messages or prompt", param="messages")
    return InvalidParameter(
        "a stream carries one choice; use chat(..., n=...) for several", param="n"
    )


def _spec_or_none(llm: FinancialLLM) -> ModelSpec | None:
    """The initial model's spec for backend selection; None if it does not resolve (yet)."""
    try:
        return get_model(llm.initial_model, llm.settings.catalog)
    except LcfinError:  # the load reports it, with its own error
        return None
