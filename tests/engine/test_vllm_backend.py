"""VLLMBackend without a GPU: the pure mappings, and the backend over a stand-in engine.

vllm cannot be installed here (CUDA-only wheels), so `CompletionOutput` and `RequestOutput` below
are dataclasses with the attribute names of vLLM 0.33's `vllm.outputs` classes, and `FakeAsyncLLM`
has the methods of `vllm.v1.engine.async_llm.AsyncLLM` that lcfin calls (`generate`, `abort`,
`shutdown`, `get_tokenizer`, `model_config`, `output_processor`). `install_fake_vllm` puts modules
with vLLM's import paths into `sys.modules` so that `VLLMBackend.load` runs end to end; the GPU
path itself is tested in tests/gpu/.
"""

from __future__ import annotations

import asyncio
import sys
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from lcfin import BackendUnavailable, DoesNotFit, Settings, get_model, load_profile
from lcfin.engine import planner, profiles as profiles_mod
from lcfin.engine.backend import load_backend, select_backend
from lcfin.engine.manager import ModelManager
from lcfin.engine.profiles import GpuInfo
from lcfin.engine.registry import spec_from_directory
from lcfin.engine.types import GenerationRequest, SamplingParams
from lcfin.engine.vllm.backend import (
    VLLMBackend,
    delta_from_output,
    finish_reason_of,
    sampling_kwargs,
    token_prompt,
    wait_for_release,
)
from lcfin.engine.vllm.mapping import translate_error
from lcfin.errors import ContextLengthExceeded, InvalidParameter, LcfinError, Overloaded

# -- stand-ins for vLLM's classes ----------------------------------------------------------------


@dataclass
class CompletionOutput:
    """Stands in for `vllm.outputs.CompletionOutput` (same attribute names)."""

    index: int = 0
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float | None = None
    logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    """Stands in for `vllm.outputs.RequestOutput` (same attribute names)."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool
    metrics: Any = None
    num_cached_tokens: int | None = 0


def out(text, ids, finish=None, stop=None, prompt=(1, 2, 3), rid="r1") -> RequestOutput:
    comp = CompletionOutput(text=text, token_ids=list(ids), finish_reason=finish, stop_reason=stop)
    return RequestOutput(rid, None, list(prompt), None, [comp], finish is not None)


class FakeModelConfig:
    """Stands in for `vllm.config.ModelConfig` (max_model_len, get_diff_sampling_param)."""

    def __init__(self, max_model_len: int, diff: dict[str, Any], vocab_size: int = 0) -> None:
        self.max_model_len = max_model_len
        self._diff = diff
        self.vocab_size = vocab_size

    def get_diff_sampling_param(self) -> dict[str, Any]:
        return dict(self._diff)

    def get_vocab_size(self) -> int:
        return self.vocab_size


class FakeAsyncLLM:
    """Stands in for `AsyncLLM`: streams scripted DELTA outputs and records every call."""

    instances: ClassVar[list[FakeAsyncLLM]] = []

    def __init__(self, script=None, *, max_model_len=256, diff=None, tokenizer=None, args=None):
        self.script = list(script or [out("Hello", [5], finish="stop")])
        self.model_config = FakeModelConfig(max_model_len, diff or {})
        self.tokenizer = tokenizer or object()
        self.args = args
        self.generated: list[tuple[Any, Any, str]] = []
        self.aborted: list[str] = []
        self.closed_early: list[str] = []
        self.shutdowns = 0
        self.unfinished = 0
        self.output_processor = types.SimpleNamespace(
            get_num_unfinished_requests=lambda: self.unfinished
        )
        self.gate: asyncio.Event | None = None
        #: After this many outputs the request runs on without output (a long generation).
        self.hold_after: int | None = None
        FakeAsyncLLM.instances.append(self)

    errored = False  # AsyncLLM.errored: True once EngineCore has died

    @classmethod
    def from_engine_args(cls, engine_args: Any, stat_loggers: Any = None) -> FakeAsyncLLM:
        from transformers import AutoTokenizer

        max_len = engine_args.kwargs.get("max_model_len", 256)
        tokenizer = AutoTokenizer.from_pretrained(engine_args.kwargs["tokenizer"])  # the real one
        engine = cls(max_model_len=max_len, args=engine_args, tokenizer=tokenizer)
        engine.model_config.vocab_size = len(tokenizer)
        engine.stat_loggers = stat_loggers
        return engine

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    async def generate(self, prompt, sampling_params, request_id):
        self.generated.append((prompt, sampling_params, request_id))
        finished = False
        try:
            for n, item in enumerate(self.script):
                if self.gate is not None:
                    await self.gate.wait()
                if self.hold_after is not None and n >= self.hold_after:
                    await asyncio.Event().wait()  # until aborted (cancelled)
                await asyncio.sleep(0)
                finished = item.finished
                yield item
        finally:
            if not finished:
                self.closed_early.append(request_id)

    async def abort(self, request_id: str, internal: bool = False) -> None:
        self.aborted.append(request_id)

    def shutdown(self, timeout: float | None = None) -> None:
        self.shutdowns += 1

    async def sleep(self, level: int = 1) -> None:
        self.slept = level

    async def wake_up(self, tags: list[str] | None = None) -> None:
        self.slept = 0


class FakeEngineArgs:
    """Stands in for `vllm.engine.arg_utils.AsyncEngineArgs` (keeps the kwargs)."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


def make_sampling(**kwargs: Any) -> dict[str, Any]:
    return {"output_kind": "DELTA", **kwargs}


def fake_tokens_input(ids: list[int], *, prompt: str | None = None) -> dict[str, Any]:
    return {"type": "token", "prompt_token_ids": ids, "prompt": prompt}


def install_fake_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Modules at vLLM's import paths, holding the stand-ins above."""
    mods = {
        name: types.ModuleType(name)
        for name in (
            "vllm",
            "vllm.engine",
            "vllm.engine.arg_utils",
            "vllm.sampling_params",
            "vllm.v1",
            "vllm.v1.engine",
            "vllm.v1.engine.async_llm",
            "vllm.v1.metrics",
            "vllm.v1.metrics.loggers",
            "vllm.inputs",
            "vllm.config",
        )
    }
    mods["vllm.config"].StructuredOutputsConfig = types.SimpleNamespace  # type: ignore[attr-defined]
    mods["vllm.v1.metrics.loggers"].StatLoggerBase = object  # type: ignore[attr-defined]
    mods["vllm.engine.arg_utils"].AsyncEngineArgs = FakeEngineArgs  # type: ignore[attr-defined]
    mods["vllm.sampling_params"].SamplingParams = dict  # type: ignore[attr-defined]
    mods["vllm.sampling_params"].RequestOutputKind = types.SimpleNamespace(DELTA="DELTA")  # type: ignore[attr-defined]
    mods["vllm.v1.engine.async_llm"].AsyncLLM = FakeAsyncLLM  # type: ignore[attr-defined]
    mods["vllm.inputs"].tokens_input = fake_tokens_input  # type: ignore[attr-defined]
    for name, module in mods.items():
        monkeypatch.setitem(sys.modules, name, module)


OPEN: list[VLLMBackend] = []


@pytest.fixture(autouse=True)
def _close_backends() -> Any:
    """Each VLLMBackend runs an event loop in a thread: stop them after every test."""
    yield
    while OPEN:
        OPEN.pop().close()


def backend_over(engine: FakeAsyncLLM, **kw: Any) -> VLLMBackend:
    backend = VLLMBackend(
        engine,
        model_id="m",
        make_sampling=make_sampling,
        tokens_input=fake_tokens_input,
        read_memory=lambda: None,
        **kw,
    )
    OPEN.append(backend)
    return backend


def request(ids=(1, 2, 3), **params: Any) -> GenerationRequest:
    return GenerationRequest(list(ids), SamplingParams(**params), "req-1", "the prompt")


# -- sampling parameters ---------------------------------------------------------------------------


def test_every_sampling_field_is_mapped() -> None:
    params = SamplingParams(
        max_tokens=50,
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        stop=("END", "\n\n"),
        stop_token_ids=(7, 9),
        seed=1234,
        presence_penalty=0.5,
        frequency_penalty=-0.25,
        repetition_penalty=1.1,
        ignore_eos=True,
        logprobs=3,
        response_format={"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
    )
    req = GenerationRequest([1] * 10, params, "r", extra_stops=("\nUser:", "END"))
    assert sampling_kwargs(req, max_model_len=4096) == {
        "n": 1,
        "max_tokens": 50,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["END", "\n\n", "\nUser:"],
        "stop_token_ids": [7, 9],
        "seed": 1234,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "repetition_penalty": 1.1,
        "ignore_eos": True,
        "skip_special_tokens": True,
        "include_stop_str_in_output": False,
        "logprobs": 3,
        "structured_outputs": {"json": {"type": "object"}},
        "logit_bias": None,
    }


def test_control_character_tokens_are_banned_under_a_json_format_only(tiny_models) -> None:
    import math

    from transformers import AutoTokenizer

    from lcfin.engine.vllm.sampling import control_token_ids

    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    banned = control_token_ids(tok, len(tok))
    assert banned  # the byte-level vocabulary has "\n", "\t", ...
    assert all(any(ord(c) < 0x20 for c in tok.decode([i])) for i in banned if tok.decode([i]))
    fmt = {"type": "json_object"}
    kw = sampling_kwargs(request(response_format=fmt), 100, banned)
    assert kw["logit_bias"] == dict.fromkeys(banned, -math.inf)
    assert sampling_kwargs(request(), 100, banned)["logit_bias"] is None  # free text: none


def test_an_unenforceable_schema_keyword_is_refused_before_vllm() -> None:
    schema = {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    with pytest.raises(InvalidParameter, match="'not'") as info:
        sampling_kwargs(request(response_format=fmt), 100)
    assert info.value.param == "response_format"


@pytest.mark.parametrize(("top_k", "expected"), [(0, 0), (-1, 0), (1, 1), (50, 50)])
def test_top_k_off_is_vllm_zero(top_k: int, expected: int) -> None:
    assert sampling_kwargs(request(top_k=top_k), 100)["top_k"] == expected


def test_max_tokens_fills_or_is_capped_by_the_context() -> None:
    assert sampling_kwargs(request(max_tokens=None), 100)["max_tokens"] == 97
    assert sampling_kwargs(request(max_tokens=500), 100)["max_tokens"] == 97
    assert sampling_kwargs(request(max_tokens=5), 100)["max_tokens"] == 5


def test_defaults_send_no_stops_and_no_seed() -> None:
    kw = sampling_kwargs(request(), 100)
    assert (kw["stop"], kw["stop_token_ids"], kw["seed"]) == (None, None, None)
    assert kw["max_tokens"] == 97  # lcfin's default 256, capped; vLLM's own default is 16


# -- outputs -> deltas ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "finished", "expected"),
    [
        (None, False, None),
        ("stop", True, "stop"),
        ("length", True, "length"),
        ("abort", True, "abort"),
        ("error", True, "error"),
        ("repetition", True, "stop"),
        (None, True, "stop"),
    ],
)
def test_finish_reasons(reason, finished, expected) -> None:
    assert finish_reason_of(reason, finished) == expected


def test_first_delta_carries_the_prompt_length() -> None:
    first = delta_from_output(out("Hel", [1, 2], prompt=range(11)), first=True)
    later = delta_from_output(out("lo", [3], prompt=range(11)), first=False)
    assert (first.text, first.num_tokens, first.prompt_tokens) == ("Hel", 2, 11)
    assert (later.text, later.num_tokens, later.prompt_tokens) == ("lo", 1, None)
    assert first.finish_reason is None
    assert first.stop_reason is None


def test_last_delta_carries_finish_and_stop_reason() -> None:
    by_string = delta_from_output(out("", [], finish="stop", stop="END"), first=False)
    assert (by_string.finish_reason, by_string.stop_reason, by_string.num_tokens) == (
        "stop",
        "END",
        0,
    )
    by_token = delta_from_output(out("x", [9], finish="stop", stop=128009), first=False)
    assert by_token.stop_reason == 128009
    eos = delta_from_output(out(".", [4], finish="stop"), first=False)
    assert (eos.finish_reason, eos.stop_reason) == ("stop", None)
    length = delta_from_output(out("a", [4], finish="length"), first=False)
    assert length.finish_reason == "length"


def test_an_output_without_completions_is_empty() -> None:
    empty = RequestOutput("r", None, None, None, [], finished=True)
    delta = delta_from_output(empty, first=True)
    assert (delta.text, delta.num_tokens, delta.finish_reason, delta.prompt_tokens) == (
        "",
        0,
        "stop",
        None,
    )


def test_prompt_is_given_as_token_ids() -> None:
    assert token_prompt([1, 2], "hi", fake_tokens_input) == {
        "type": "token",
        "prompt_token_ids": [1, 2],
        "prompt": "hi",
    }
    assert token_prompt([1, 2], "hi", None) == {"prompt_token_ids": [1, 2]}


# -- the backend over a stand-in engine ------------------------------------------------------


def test_backend_takes_tokenizer_length_and_defaults_from_the_engine() -> None:
    tok = object()
    diff = {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0, "max_tokens": 99}
    engine = FakeAsyncLLM(max_model_len=4096, diff=diff, tokenizer=tok)
    backend = backend_over(engine)
    assert backend.tokenizer is tok
    assert backend.max_model_len == 4096
    assert backend.default_sampling == {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
    assert backend.name == "vllm"


async def collect(backend: VLLMBackend, req: GenerationRequest) -> list[Any]:
    return [d async for d in backend.generate(req)]


@pytest.mark.asyncio
async def test_generate_streams_deltas_with_mapped_params() -> None:
    script = [out("Basel", [11, 12], prompt=[1, 2, 3]), out(" III", [13], finish="length")]
    engine = FakeAsyncLLM(script, max_model_len=64)
    deltas = await collect(backend_over(engine), request(max_tokens=3, seed=7))
    assert [d.text for d in deltas] == ["Basel", " III"]
    assert [d.num_tokens for d in deltas] == [2, 1]
    assert [d.prompt_tokens for d in deltas] == [3, None]
    assert deltas[-1].finish_reason == "length"
    ((prompt, params, rid),) = engine.generated
    assert rid.startswith("req-1-")  # the caller's id + a suffix: unique in the engine
    assert prompt == {"type": "token", "prompt_token_ids": [1, 2, 3], "prompt": "the prompt"}
    assert params["output_kind"] == "DELTA"
    assert (params["max_tokens"], params["seed"]) == (3, 7)
    assert engine.aborted == []
    assert engine.closed_early == []


@pytest.mark.asyncio
async def test_stopping_early_aborts_the_request_in_the_engine() -> None:
    script = [out("a", [1]), out("b", [2]), out("c", [3], finish="stop")]
    engine = FakeAsyncLLM(script)
    engine.hold_after = 1
    gen = backend_over(engine).generate(request())
    first = await gen.__anext__()
    assert first.text == "a"
    await gen.aclose()  # what `break` and a client disconnect do
    ((_, _, rid),) = engine.generated
    assert engine.aborted == [rid]
    assert engine.closed_early == [rid]


@pytest.mark.asyncio
async def test_cancelling_the_consumer_aborts_the_request() -> None:
    engine = FakeAsyncLLM([out("a", [1]), out("b", [2], finish="stop")])
    engine.gate = asyncio.Event()
    backend = backend_over(engine)

    async def consume() -> list[Any]:
        return await collect(backend, request())

    task = asyncio.create_task(consume())
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ((_, _, rid),) = engine.generated
    assert engine.aborted == [rid]


@pytest.mark.asyncio
async def test_two_requests_with_one_client_id_do_not_abort_each_other() -> None:
    # A client may send the same X-Request-ID twice; vLLM's abort(id) ends every request
    # with that id, so the engine must see two ids.
    engine = FakeAsyncLLM([out("a", [1]), out("b", [2]), out("c", [3], finish="stop")])
    engine.hold_after = 1
    backend = backend_over(engine)
    first, second = backend.generate(request()), backend.generate(request())
    assert (await first.__anext__()).text == "a"
    assert (await second.__anext__()).text == "a"
    await first.aclose()
    assert engine.aborted  # the first one is gone from the engine ...
    engine.hold_after = None
    (_, _, second_id) = engine.generated[1]
    assert second_id not in engine.aborted  # ... and the second one was not aborted with it
    await second.aclose()
    ids = [rid for _, _, rid in engine.generated]
    assert len(set(ids)) == 2
    assert engine.aborted == ids  # each by its own id, once


def test_the_engine_runs_on_its_own_loop_for_sync_and_async_callers() -> None:
    engine = FakeAsyncLLM([out("a", [1], finish="stop")])
    backend = backend_over(engine)
    seen: list[Any] = []
    real = engine.generate

    async def recording(*args: Any) -> Any:
        seen.append(asyncio.get_running_loop())
        async for item in real(*args):
            yield item

    engine.generate = recording  # type: ignore[method-assign]
    for _ in range(2):  # two callers, each on a loop of its own (then closed)
        assert [d.text for d in asyncio.run(collect(backend, request()))] == ["a"]
    assert len(seen) == 2
    assert seen[0] is seen[1]  # both ran on the backend's loop, which outlives the callers
    assert not seen[0].is_closed()


@pytest.mark.asyncio
async def test_a_stream_that_ends_without_a_reason_reports_abort() -> None:
    engine = FakeAsyncLLM([out("a", [1])])
    deltas = await collect(backend_over(engine), request())
    assert [d.finish_reason for d in deltas] == [None, "abort"]


@pytest.mark.asyncio
async def test_too_long_a_prompt_is_refused_before_the_engine() -> None:
    engine = FakeAsyncLLM(max_model_len=8)
    with pytest.raises(ContextLengthExceeded):
        await collect(backend_over(engine), request(ids=range(8)))
    assert engine.generated == []


# Named like vLLM's exception tree (vllm/exceptions.py, vllm/v1/engine/exceptions.py, 0.32).
class VLLMError(Exception):
    pass


class VLLMClientError(VLLMError):
    pass


class VLLMServerError(VLLMError):
    pass


class VLLMUnprocessableEntityError(VLLMClientError):
    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class GracefulHTTPError(VLLMError):
    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.message, self.http_status = message, http_status


class QueueOverflowError(GracefulHTTPError):
    def __init__(self) -> None:
        super().__init__("The engine is currently busy", 503)


class EngineGenerateError(VLLMServerError):
    pass


class EngineDeadError(VLLMServerError):
    pass


class GenerationError(VLLMServerError):
    pass


class RetryableRequestError(GenerationError):
    pass


@pytest.mark.parametrize(
    ("exc", "expected", "status"),
    [
        (VLLMUnprocessableEntityError("bad image", parameter="messages"), InvalidParameter, 400),
        (QueueOverflowError(), Overloaded, 429),
        (EngineGenerateError(), LcfinError, 500),
        (EngineDeadError(), BackendUnavailable, 503),
        (RetryableRequestError("try again"), BackendUnavailable, 503),
        (GenerationError("boom"), LcfinError, 500),
    ],
)
def test_vllm_errors_map_by_class_hierarchy(exc, expected, status) -> None:
    mapped = translate_error(exc)
    assert type(mapped) is expected
    assert mapped.http_status == status
    if isinstance(exc, VLLMUnprocessableEntityError):
        assert mapped.param == "messages"


def test_non_vllm_errors_are_not_mapped() -> None:
    assert translate_error(ValueError("x")) is None
    assert translate_error(KeyboardInterrupt()) is None


@pytest.mark.asyncio
async def test_a_dead_engine_is_backend_unavailable() -> None:
    engine = FakeAsyncLLM()

    async def dead(*args: Any) -> Any:
        raise EngineDeadError()
        yield  # an async generator, like AsyncLLM.generate

    engine.generate = dead  # type: ignore[method-assign]
    with pytest.raises(BackendUnavailable, match="died"):
        await collect(backend_over(engine), request())


def test_stats_count_unfinished_requests() -> None:
    engine = FakeAsyncLLM()
    engine.unfinished = 3
    backend = backend_over(engine)
    assert backend.stats().running == 3
    backend.close()
    assert backend.stats().running == 0


@pytest.mark.asyncio
async def test_close_shuts_down_once_and_refuses_new_requests() -> None:
    engine = FakeAsyncLLM()
    backend = backend_over(engine)
    backend.close()
    backend.close()
    assert engine.shutdowns == 1
    with pytest.raises(BackendUnavailable, match="closed"):
        await collect(backend, request())


def test_close_waits_until_the_gpu_memory_is_released() -> None:
    gib = 2**30
    readings = iter([40 * gib, 40 * gib, 30 * gib, 2 * gib])
    backend = backend_over(FakeAsyncLLM(), held_bytes=38 * gib, release_timeout_s=5)
    backend._read_memory = lambda: next(readings)
    backend.close()
    with pytest.raises(StopIteration):
        next(readings)  # it polled until the 2 GiB reading


def test_wait_for_release_gives_up_after_the_timeout() -> None:
    gib = 2**30
    assert not wait_for_release(
        40 * gib, 38 * gib, read=lambda: 40 * gib, timeout_s=0.05, poll_s=0.01
    )
    assert wait_for_release(None, 38 * gib, read=lambda: 40 * gib)  # no NVML: nothing to wait for
    assert wait_for_release(40 * gib, 0, read=lambda: 40 * gib)  # held nothing


@pytest.mark.asyncio
async def test_sleep_and_wake_up_reach_the_engine() -> None:
    engine = FakeAsyncLLM()
    engine.model_config.enable_sleep_mode = True  # type: ignore[attr-defined]  # built for it
    backend = backend_over(engine)
    await backend.sleep(1)
    assert engine.slept == 1
    await backend.wake_up()
    assert engine.slept == 0


# -- load: pre-flight, import, arguments ---------------------------------------------------------


def test_a_model_that_cannot_fit_fails_before_vllm_is_imported(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # any `import vllm...` would raise
    with pytest.raises(DoesNotFit) as info:
        load_backend(get_model("llama3.1-70b"), load_profile("hf-l40"), Settings(), kind="vllm")
    assert "131.4 GiB of weights" in info.value.message


def test_missing_vllm_is_backend_unavailable_before_any_download(monkeypatch, tiny_models) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    spec = get_model("qwen3-8b")  # fits scw-l40s; not downloaded (and the hub is off)
    with pytest.raises(BackendUnavailable, match="vllm") as info:
        VLLMBackend.load(spec, load_profile("scw-l40s"), Settings())
    assert "lcfin[vllm]" in (info.value.hint or "")


def counted_plans(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The `max_num_seqs` of every memory plan made from now on (planner.plan_memory calls)."""
    calls: list[int | None] = []
    real = planner.plan_memory

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("max_num_seqs"))
        return real(*args, **kwargs)

    monkeypatch.setattr(planner, "plan_memory", counting)
    return calls


@pytest.mark.asyncio
@pytest.mark.parametrize("profile", ["scw-l40s", "cpu-vllm"])
async def test_the_manager_plans_a_load_once_and_the_backend_uses_that_plan(
    monkeypatch, tiny_models, profile: str
) -> None:
    install_fake_vllm(monkeypatch)
    plans = counted_plans(monkeypatch)
    manager = ModelManager(Settings(), load_profile(profile), "vllm")
    try:
        await manager.load(spec_from_directory(tiny_models["llama"]), max_num_seqs=4)
        assert plans == [4]  # the manager's plan, with the override; VLLMBackend.load made none
        loaded = manager.current
        assert loaded is not None
        args = loaded.backend.engine.args.kwargs  # type: ignore[attr-defined]
        assert args["max_num_seqs"] == 4
        if profile == "cpu-vllm":  # the CPU build's KV cache is the plan's, not a second plan's
            plan = planner.plan_memory(
                spec_from_directory(tiny_models["llama"]), load_profile(profile), max_num_seqs=4
            )
            assert args["kv_cache_memory_bytes"] == plan.kv_cache_bytes
    finally:
        manager.close()


def test_a_direct_load_plans_once(monkeypatch, tiny_models) -> None:
    install_fake_vllm(monkeypatch)
    plans = counted_plans(monkeypatch)
    spec = spec_from_directory(tiny_models["llama"])
    backend = VLLMBackend.load(spec, load_profile("cpu-vllm"), Settings(), max_num_seqs=2)
    try:
        assert plans == [2]
    finally:
        backend.close()


def test_load_builds_the_engine_from_the_downloaded_directory(monkeypatch, tiny_models) -> None:
    install_fake_vllm(monkeypatch)
    directory = tiny_models["llama"]
    spec = spec_from_directory(directory)
    backend = load_backend(
        spec, load_profile("scw-l40s"), Settings(), kind="vllm", max_model_len=128
    )
    try:
        args = backend.engine.args.kwargs
        assert args["model"] == args["tokenizer"] == str(directory)
        assert (args["max_model_len"], args["gpu_memory_utilization"]) == (128, 0.85)
        assert backend.max_model_len == 128
        assert isinstance(backend, VLLMBackend)
    finally:
        backend.close()


# -- backend selection ----------------------------------------------------------------------------
# What is installed and which GPUs NVML sees are edges: both are replaced by fixed answers.


def _machine(monkeypatch, *, has_vllm: bool, gpus: int, cpu_build: bool = False) -> None:
    monkeypatch.setattr(profiles_mod, "vllm_available", lambda: has_vllm)
    monkeypatch.setattr(profiles_mod, "vllm_cpu_build", lambda: has_vllm and cpu_build)
    monkeypatch.setattr(profiles_mod, "detect_gpus", lambda: [GpuInfo("NVIDIA L40S", 44.53)] * gpus)


@pytest.mark.parametrize(
    ("has_vllm", "gpus", "cpu_build", "profile", "use_vllm", "expected"),
    [
        (True, 1, False, "scw-l40s", None, "vllm"),
        (False, 1, False, "scw-l40s", None, "transformers"),  # vllm not installed
        (True, 0, False, "scw-l40s", None, "transformers"),  # no CUDA GPU
        (True, 0, True, "scw-l40s", None, "transformers"),  # a GPU profile needs the GPU
        (True, 1, False, "scw-l40s", False, "transformers"),  # USE_VLLM=false
        (True, 1, False, "cpu", None, "transformers"),  # the profile prefers it
        (True, 0, True, "cpu", None, "transformers"),  # ... even with vLLM's CPU build
        (True, 0, True, "cpu-vllm", None, "vllm"),  # vLLM's CPU build on its profile
        (True, 0, False, "cpu-vllm", None, "transformers"),  # the CUDA wheel cannot run it
        (False, 0, False, "cpu-vllm", None, "transformers"),  # nothing installed
    ],
)
def test_auto_selection(
    monkeypatch, caplog, has_vllm, gpus, cpu_build, profile, use_vllm, expected
) -> None:
    _machine(monkeypatch, has_vllm=has_vllm, gpus=gpus, cpu_build=cpu_build)
    settings = Settings(use_vllm=use_vllm)
    with caplog.at_level("INFO", logger="lcfin.engine.backend"):
        assert select_backend("auto", load_profile(profile), settings) == expected
    assert f"Backend: {expected}" in caplog.text  # and it says why


@pytest.mark.parametrize(
    ("has_vllm", "gpus", "profile", "match"),
    [
        (False, 1, "scw-l40s", "not installed"),
        (True, 0, "scw-l40s", "GPU"),
        (True, 0, "cpu", "CPU build is not installed"),
    ],
)
def test_asking_for_vllm_without_it_is_refused(monkeypatch, has_vllm, gpus, profile, match):
    _machine(monkeypatch, has_vllm=has_vllm, gpus=gpus)
    with pytest.raises(BackendUnavailable, match=match):
        select_backend("vllm", load_profile(profile), Settings())


def test_use_vllm_true_asks_for_vllm(monkeypatch) -> None:
    _machine(monkeypatch, has_vllm=True, gpus=1)
    settings = Settings(use_vllm=True, deployment_env="scaleway")
    assert select_backend("auto", load_profile("scw-l40s"), settings) == "vllm"
    with pytest.raises(BackendUnavailable, match="CPU build"):  # the CUDA wheel, a CPU profile
        select_backend("auto", load_profile("cpu"), settings)


@pytest.mark.parametrize("profile", ["cpu", "cpu-vllm"])
def test_vllm_on_cpu_with_the_cpu_build(monkeypatch, profile) -> None:
    _machine(monkeypatch, has_vllm=True, gpus=0, cpu_build=True)
    assert select_backend("vllm", load_profile(profile), Settings()) == "vllm"
    assert select_backend("auto", load_profile(profile), Settings(use_vllm=True)) == "vllm"


def test_auto_on_cpu_takes_transformers_for_a_model_the_cpu_build_cannot_run(
    monkeypatch, caplog
) -> None:
    _machine(monkeypatch, has_vllm=True, gpus=0, cpu_build=True)
    demo = get_model("demo")  # head_dim 48: runs on the CPU build
    assert demo.arch is not None
    narrow = demo.model_copy(update={"arch": demo.arch.model_copy(update={"head_dim": 16})})
    cpu_vllm = load_profile("cpu-vllm")
    assert select_backend("auto", cpu_vllm, Settings(), demo) == "vllm"
    with caplog.at_level("INFO", logger="lcfin.engine.backend"):
        assert select_backend("auto", cpu_vllm, Settings(), narrow) == "transformers"
    assert "head_dim 16" in caplog.text
    with pytest.raises(BackendUnavailable, match="head_dim 16"):
        select_backend("vllm", cpu_vllm, Settings(), narrow)
