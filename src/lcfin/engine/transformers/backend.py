"""TransformersBackend: Hugging Face Transformers on CPU or GPU, with continuous batching.

One model thread does all the compute, loading and warm-up included (see `modelthread.py` for
why, `scheduler.py` for the batching); asyncio callers receive `Delta`s through their own event
loop (`call_soon_threadsafe`), so they never block it. Requests wait in arrival order, join the
running batch at any decoding step and leave it the step they finish.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import torch

from lcfin.engine.transformers.grammar import GrammarCache, RowGrammar
from lcfin.engine.transformers.modelthread import ModelThread
from lcfin.engine.transformers.sampling import RequestSampler
from lcfin.engine.transformers.scheduler import Scheduler, Sequence
from lcfin.engine.transformers.textstream import IncrementalDetokenizer, StopStringFilter
from lcfin.engine.types import BackendStats, Delta, GenerationRequest, Tokenizer
from lcfin.errors import ContextLengthExceeded, LcfinError, ModelLoadFailed

__all__ = ["TransformersBackend"]

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _pick_device(setting: str) -> torch.device:
    if setting != "auto":
        return torch.device(setting)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _eos_ids(model: Any, tokenizer: Tokenizer) -> set[int]:
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


def _generation_defaults(model: Any) -> dict[str, Any]:
    """Sampling defaults from the model's generation_config.json, as vLLM applies them."""
    cfg = getattr(model, "generation_config", None)
    if cfg is None:
        return {}
    given = cfg.to_diff_dict()  # only what the file sets, not GenerationConfig's defaults
    if given.get("do_sample") is False:
        return {"temperature": 0.0}
    names = ("temperature", "top_p", "top_k", "repetition_penalty")
    return {k: given[k] for k in names if given.get(k) is not None}


class TransformersBackend:
    """Serves one Transformers causal LM; see the module docstring for the threading model."""

    name = "transformers"

    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer,
        *,
        model_id: str,
        max_model_len: int,
        max_num_seqs: int = 32,
        max_batched_tokens: int = 2048,
        warm_up: bool = True,
        thread: ModelThread | None = None,
    ) -> None:
        """Serve `model` (already loaded); `thread` is the one that loaded it, if any."""
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.max_model_len = max_model_len
        #: The model class its config.json names (the seed's /health `architecture`).
        self.architecture = next(iter(getattr(model.config, "architectures", None) or []), None)
        self.device = next(model.parameters()).device
        self.eos_ids = _eos_ids(model, tokenizer)
        self.default_sampling = _generation_defaults(model)
        # transformers renamed `past_key_values` to `cache` (5.2x); accept both spellings.
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._inbox: queue.Queue[Sequence | None] = queue.Queue()
        self._scheduler = Scheduler(
            model,
            self.eos_ids,
            max_num_seqs=max_num_seqs,
            max_batched_tokens=max(max_batched_tokens, 1),
            cache_kw=self._cache_kw,
        )
        self._grammars: GrammarCache | None = None
        self._grammars_lock = threading.Lock()
        self._closed = False
        self._thread = thread or ModelThread()
        if warm_up:
            log.info("Warming up %s", model_id)
            try:
                self._thread.call(self._warm_up)
            except BaseException:
                self._thread.stop()
                raise
        self._thread.submit(self._loop)

    @classmethod
    def load(
        cls,
        spec: Any,
        profile: Any,
        settings: Any,
        *,
        model_dir: Path | None = None,
        dtype: str | None = None,
        max_model_len: int | None = None,
        **_: Any,
    ) -> TransformersBackend:
        """Load the model's files (resolved or downloaded) with `from_pretrained`.

        Raises:
            ModelLoadFailed: the files are missing, corrupt or do not fit in memory.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lcfin.engine.hub import resolve_model_dir

        path = model_dir or resolve_model_dir(spec, settings)
        device = _pick_device(settings.device)
        name = dtype or (profile.dtype if device.type == "cuda" else "float32")
        torch_dtype = _DTYPES.get(name, torch.float32)
        started = time.monotonic()

        def read() -> tuple[Any, Any]:  # runs on the model thread
            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=torch_dtype, trust_remote_code=settings.trust_remote_code
                )
                return model.to(device).eval(), tokenizer
            except torch.OutOfMemoryError:
                raise ModelLoadFailed(
                    f"Out of memory while loading {spec.name} on {device}",
                    model=spec.name,
                    hint="use a smaller model or a profile with more memory (`lcfin plan`)",
                ) from None
            except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
                raise ModelLoadFailed(
                    f"Could not load {spec.name} from {path}: {type(exc).__name__}: {exc}",
                    model=spec.name,
                    hint=(
                        "the files may be incomplete or corrupt; re-download with `lcfin download`"
                    ),
                ) from None

        thread = ModelThread()  # loads, warms up and then serves the model: see modelthread.py
        try:
            log.info("Reading the weights of %s (%s on %s)", spec.name, name, device)
            model, tokenizer = thread.call(read)
            limit = int(
                getattr(model.config, "max_position_embeddings", 0) or profile.max_model_len
            )
            context = min(max_model_len or profile.max_model_len, limit)
            log.info(
                "Loaded %s on %s (%s) in %.1fs, context %d",
                spec.name,
                device,
                name,
                time.monotonic() - started,
                context,
            )
            return cls(
                model,
                tokenizer,
                model_id=spec.name,
                max_model_len=context,
                max_num_seqs=profile.max_num_seqs,
                max_batched_tokens=max(profile.max_num_batched_tokens, context),
                thread=thread,
            )
        except BaseException:
            thread.stop()  # a failed load ends its thread (and the model goes with it)
            raise

    # -- the caller's side (any event loop) ----------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream deltas for `request`; closing the iterator aborts it."""
        grammar = None
        if request.params.response_format is not None:  # compiling may take a while: off-loop
            grammar = await asyncio.to_thread(self._grammar, request)
        seq = self._admit(request, grammar)
        try:
            while True:
                item = await seq.out.get()
                if isinstance(item, BaseException):
                    raise item
                # A consumer that fell behind gets what is queued as one delta (as vLLM's
                # DELTA mode does): fewer, larger chunks instead of an ever-longer backlog.
                while item.finish_reason is None and not seq.out.empty():
                    later = seq.out.get_nowait()
                    if isinstance(later, BaseException):
                        yield item
                        raise later
                    item = item.then(later)
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            seq.aborted = True

    def _admit(self, request: GenerationRequest, grammar: RowGrammar | None = None) -> Sequence:
        if self._closed:
            raise LcfinError("The backend is closed", hint="load a model again")
        prompt_len = len(request.prompt_token_ids)
        room = self.max_model_len - prompt_len
        if room < 1:
            raise ContextLengthExceeded(
                f"The prompt has {prompt_len} tokens; the context is {self.max_model_len}",
                param="messages",
                hint="shorten the prompt",
            )
        wanted = request.params.max_tokens
        seq = Sequence(
            request=request,
            loop=asyncio.get_running_loop(),
            out=asyncio.Queue(),
            sampler=RequestSampler(request.params, request.prompt_token_ids, self.device),
            detok=IncrementalDetokenizer(self.tokenizer),
            stops=StopStringFilter(request.all_stops),
            max_tokens=min(wanted, room) if wanted is not None else room,
            grammar=grammar,
        )
        self._inbox.put(seq)
        return seq

    def _grammar(self, request: GenerationRequest) -> RowGrammar | None:
        """The request's grammar matcher (compiled here, so a bad schema fails the call)."""
        fmt = request.params.response_format
        if fmt is None:
            return None
        with self._grammars_lock:  # built once, on the first structured request
            if self._grammars is None:
                vocab = int(self.model.get_output_embeddings().weight.shape[0])
                self._grammars = GrammarCache(self.tokenizer, vocab, self.eos_ids)
        return self._grammars.matcher(fmt)

    def stats(self) -> BackendStats:
        """Requests in the running batch, and waiting for a place in it."""
        sched = self._scheduler
        return BackendStats(
            running=len(sched.rows), waiting=len(sched.pending) + self._inbox.qsize()
        )

    def close(self) -> None:
        """Stop the model thread (in-flight requests end with 'abort') and free the model."""
        if self._closed:
            return
        self._closed = True
        self._inbox.put(None)
        self._thread.stop()
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- the model thread -----------------------------------------------------------------

    def _warm_up(self) -> None:
        with torch.inference_mode():
            self._scheduler.warm_up()

    def _loop(self) -> None:
        sched = self._scheduler
        while True:
            idle = not sched.rows and not sched.pending
            if not sched.take(self._inbox, block=idle):
                sched.abort_all()
                return
            with torch.inference_mode():
                sched.admit()
                sched.flush()
                sched.step()
                sched.flush()
