"""TransformersBackend: Hugging Face Transformers on CPU or GPU, streaming token by token.

One model thread does all the compute; asyncio callers receive `Delta`s through their own
event loop (`call_soon_threadsafe`), so they never block it. Requests wait in arrival order.
Each request runs prefill, then one decoding step at a time, checking for abort between steps.
The request state (`_Sequence`) is self-contained so a scheduler can interleave several.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lcfin.engine.backend import BackendStats, Tokenizer
from lcfin.engine.sampling import RequestSampler
from lcfin.engine.textstream import IncrementalDetokenizer, StopStringFilter
from lcfin.engine.types import Delta, FinishReason, GenerationRequest
from lcfin.errors import ContextLengthExceeded, LcfinError, ModelLoadFailed

__all__ = ["TransformersBackend"]

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SHUTDOWN = None


@dataclass
class _Sequence:
    """One request's state inside the model thread."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Delta | BaseException]
    sampler: RequestSampler
    detok: IncrementalDetokenizer
    stops: StopStringFilter
    max_tokens: int
    aborted: bool = False
    generated: int = 0
    cache: Any = None
    last_token: int | None = None
    enqueued_at: float = field(default_factory=time.monotonic)

    def post(self, item: Delta | BaseException) -> None:
        """Hand a delta (or an error) to the caller's event loop."""
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody is listening any more
            self.aborted = True


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
    if getattr(cfg, "do_sample", None) is False:
        return {"temperature": 0.0}
    found = {
        "temperature": getattr(cfg, "temperature", None),
        "top_p": getattr(cfg, "top_p", None),
        "top_k": getattr(cfg, "top_k", None),
        "repetition_penalty": getattr(cfg, "repetition_penalty", None),
    }
    return {k: v for k, v in found.items() if v is not None}


class TransformersBackend:
    """Serves one Transformers causal LM; see the module docstring for the threading model."""

    name = "transformers"

    def __init__(
        self, model: Any, tokenizer: Tokenizer, *, model_id: str, max_model_len: int
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.max_model_len = max_model_len
        self.device = next(model.parameters()).device
        self.eos_ids = _eos_ids(model, tokenizer)
        self.default_sampling = _generation_defaults(model)
        # transformers renamed `past_key_values` to `cache` (5.2x); accept both spellings.
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._waiting: queue.Queue[_Sequence | None] = queue.Queue()
        self._running = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="lcfin-model", daemon=True)
        self._thread.start()

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
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype, trust_remote_code=settings.trust_remote_code
            )
            model.to(device).eval()
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
                hint="the files may be incomplete or corrupt; re-download with `lcfin download`",
            ) from None
        limit = int(getattr(model.config, "max_position_embeddings", 0) or profile.max_model_len)
        context = min(max_model_len or profile.max_model_len, limit)
        log.info(
            "Loaded %s on %s (%s) in %.1fs, context %d",
            spec.name,
            device,
            name,
            time.monotonic() - started,
            context,
        )
        return cls(model, tokenizer, model_id=spec.name, max_model_len=context)

    # -- the caller's side (any event loop) ----------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream deltas for `request`; closing the iterator aborts it."""
        seq = self._admit(request)
        try:
            while True:
                item = await seq.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            seq.aborted = True

    def _admit(self, request: GenerationRequest) -> _Sequence:
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
        seq = _Sequence(
            request=request,
            loop=asyncio.get_running_loop(),
            out=asyncio.Queue(),
            sampler=RequestSampler(request.params, request.prompt_token_ids, self.device),
            detok=IncrementalDetokenizer(self.tokenizer),
            stops=StopStringFilter(request.params.stop),
            max_tokens=min(wanted, room) if wanted is not None else room,
        )
        self._waiting.put(seq)
        return seq

    def stats(self) -> BackendStats:
        """Requests running (0 or 1 here) and waiting."""
        return BackendStats(running=self._running, waiting=self._waiting.qsize())

    def close(self) -> None:
        """Stop the model thread (in-flight requests end with 'abort') and free the model."""
        if self._closed:
            return
        self._closed = True
        self._waiting.put(_SHUTDOWN)
        self._thread.join(timeout=30)
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- the model thread -----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            seq = self._waiting.get()
            if seq is _SHUTDOWN:
                self._drain()
                return
            if seq.aborted:
                continue
            self._running = 1
            try:
                with torch.inference_mode():
                    self._run(seq)
            except Exception as exc:  # one request's failure must not kill the thread
                log.exception("Generation failed for %s", seq.request.request_id)
                seq.post(LcfinError(f"Generation failed: {type(exc).__name__}: {exc}"))
            finally:
                seq.cache = None
                self._running = 0

    def _drain(self) -> None:
        while not self._waiting.empty():
            seq = self._waiting.get_nowait()
            if seq is not None:
                seq.post(Delta("", finish_reason="abort"))

    def _run(self, seq: _Sequence) -> None:
        ids = torch.tensor([seq.request.prompt_token_ids], device=self.device)
        logits = self._forward(seq, ids)
        while True:
            if seq.aborted or self._closed:
                seq.post(Delta("", finish_reason="abort"))
                return
            if self._step(seq, logits):
                return
            logits = self._forward(seq, torch.tensor([[seq.last_token]], device=self.device))

    def _forward(self, seq: _Sequence, input_ids: torch.Tensor) -> torch.Tensor:
        kwargs = {self._cache_kw: seq.cache}
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **kwargs)
        cache = getattr(out, "cache", None)
        seq.cache = cache if cache is not None else out.past_key_values
        return out.logits[0, -1]

    def _step(self, seq: _Sequence, logits: torch.Tensor) -> bool:
        """Sample one token, post its delta; True when the request finished."""
        token = seq.sampler.next_token(logits)
        seq.generated += 1
        seq.last_token = token
        params = seq.request.params
        finish: FinishReason | None = None
        stop_reason: str | int | None = None
        if token in params.stop_token_ids:
            finish, stop_reason = "stop", token
        elif token in self.eos_ids and not params.ignore_eos:
            finish = "stop"
        text = "" if finish else seq.stops.push(seq.detok.push(token))
        if seq.stops.matched is not None:
            finish, stop_reason = "stop", seq.stops.matched
        elif finish is None and seq.generated >= seq.max_tokens:
            finish = "length"
        if finish is not None and seq.stops.matched is None:
            text += seq.stops.push(seq.detok.flush()) + seq.stops.flush()
        first = seq.generated == 1
        prompt_tokens = len(seq.request.prompt_token_ids) if first else None
        seq.post(Delta(text, 1, finish, prompt_tokens=prompt_tokens, stop_reason=stop_reason))
        return finish is not None
