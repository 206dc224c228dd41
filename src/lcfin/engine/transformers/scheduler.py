"""The Transformers backend's scheduler: continuous batching in one model thread.

Each iteration admits waiting requests in arrival order (bounded by `max_num_seqs` running rows
and `max_num_batched_tokens` prompt tokens per prefill; one request is always admitted when the
batch has room, however long its prompt), prefills them together, merges them into the running
batch, then runs one decoding step for every row. A row leaves the step it finishes or is
aborted. Each request keeps its own sampler (parameters, penalties, seeded generator), stop
strings and detokenizer, so its tokens do not depend on the other rows.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from lcfin.engine.transformers.batch import BatchKV, prefill_inputs
from lcfin.engine.transformers.kvcache import new_cache
from lcfin.engine.transformers.sampling import RequestSampler, logprobs_of
from lcfin.engine.transformers.textstream import IncrementalDetokenizer, StopStringFilter
from lcfin.engine.types import Delta, FinishReason, GenerationRequest, TokenLogprob
from lcfin.errors import LcfinError

if TYPE_CHECKING:
    from lcfin.engine.transformers.grammar import RowGrammar

__all__ = ["Scheduler", "Sequence"]

log = logging.getLogger(__name__)


@dataclass
class Sequence:
    """One request's state: its output channel, sampler, text state and progress."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Delta | BaseException]
    sampler: RequestSampler
    detok: IncrementalDetokenizer
    stops: StopStringFilter
    max_tokens: int
    #: The request's grammar matcher (structured outputs), or None for free text.
    grammar: RowGrammar | None = None
    aborted: bool = False
    generated: int = 0
    last_token: int = 0
    enqueued_at: float = field(default_factory=time.monotonic)

    def post(self, item: Delta | BaseException) -> None:
        """Hand a delta (or an error) to the caller's event loop."""
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody is listening any more
            self.aborted = True


class Scheduler:
    """Owns the running batch; every method runs in the model thread."""

    def __init__(
        self,
        model: Any,
        eos_ids: set[int],
        *,
        max_num_seqs: int,
        max_batched_tokens: int,
        cache_kw: str,
    ) -> None:
        self.model = model
        self.eos_ids = eos_ids
        self.max_num_seqs = max_num_seqs
        self.max_batched_tokens = max_batched_tokens
        self.cache_kw = cache_kw
        self.device = next(model.parameters()).device
        self.rows: list[Sequence] = []
        self.pending: deque[Sequence] = deque()
        self.batch = BatchKV()
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[Sequence, Delta]]] = {}

    # -- admission and prefill ---------------------------------------------------------------

    def take(self, inbox: queue.Queue[Sequence | None], *, block: bool) -> bool:
        """Move arrivals from the thread-safe inbox to `pending`; False on shutdown."""
        try:
            item = inbox.get(block=block)
            while True:
                if item is None:
                    return False
                self.pending.append(item)
                item = inbox.get_nowait()
        except queue.Empty:
            return True

    def _admissible(self) -> list[Sequence]:
        chosen: list[Sequence] = []
        tokens = 0
        while self.pending and len(self.rows) + len(chosen) < self.max_num_seqs:
            seq = self.pending[0]
            if seq.aborted:
                self.pending.popleft()
                seq.post(Delta("", finish_reason="abort"))
                continue
            cost = len(seq.request.prompt_token_ids)
            if chosen and tokens + cost > self.max_batched_tokens:
                break
            chosen.append(self.pending.popleft())
            tokens += cost
        return chosen

    def admit(self) -> None:
        """Prefill the requests that fit and merge the survivors into the batch."""
        new = self._admissible()
        if not new:
            return
        try:
            logits, cache, mask, positions = self._prefill(
                [s.request.prompt_token_ids for s in new]
            )
        except Exception as exc:  # fail only these requests; the batch goes on
            self._fail(new, exc)
            return
        survivors = [i for i, seq in enumerate(new) if not self._emit_or_fail(seq, logits[i])]
        if not survivors:
            return
        index = torch.tensor(survivors, dtype=torch.long, device=mask.device)
        for layer in cache.layers:
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        self.batch.merge(cache, mask.index_select(0, index), positions.index_select(0, index))
        self.rows.extend(new[i] for i in survivors)

    def _prefill(
        self, prompts: list[list[int]]
    ) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        ids, mask, positions = prefill_inputs(prompts, self.device)
        cache = new_cache()
        out = self._forward(ids, mask, positions, cache)
        next_positions = positions[:, -1] + 1
        return out.logits[:, -1], cache, mask, next_positions

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> Any:
        """One forward pass over `cache`, keeping only the last position's logits."""
        kwargs = {"attention_mask": mask, "position_ids": positions, self.cache_kw: cache}
        return self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **kwargs)

    def warm_up(self) -> None:
        """Run a small batch through prefill and two steps, so the first request is not slow."""
        _, cache, mask, positions = self._prefill([[0] * 8, [0] * 4])
        warm = BatchKV()
        warm.merge(cache, mask, positions)
        for _ in range(2):
            step_mask, step_positions = warm.step_inputs()
            ids = torch.zeros((2, 1), dtype=torch.long, device=self.device)
            self._forward(ids, step_mask, step_positions, warm.cache)
            warm.advance()

    # -- decoding ------------------------------------------------------------------------------

    def step(self) -> None:
        """One decoding step for every running row."""
        self._drop([i for i, seq in enumerate(self.rows) if seq.aborted], abort=True)
        if not self.rows:
            return
        ids = torch.tensor([[s.last_token] for s in self.rows], device=self.device)
        mask, positions = self.batch.step_inputs()
        try:
            out = self._forward(ids, mask, positions, self.batch.cache)
        except Exception as exc:
            rows, self.rows, self.batch = self.rows, [], BatchKV()
            self._fail(rows, exc)
            return
        self.batch.advance()
        logits = out.logits[:, -1]
        finished = [i for i, seq in enumerate(self.rows) if self._emit_or_fail(seq, logits[i])]
        self._drop(finished, abort=False)

    def _drop(self, indexes: list[int], *, abort: bool) -> None:
        if not indexes:
            return
        gone = set(indexes)
        for i in indexes:
            if abort:
                self.rows[i].post(Delta("", finish_reason="abort"))
        keep = [i for i in range(len(self.rows)) if i not in gone]
        self.rows = [self.rows[i] for i in keep]
        self.batch.keep(keep)

    def _emit_or_fail(self, seq: Sequence, logits: torch.Tensor) -> bool:
        """`_emit`, failing only this request if its sampling, grammar or decoding raises
        (the model thread, and every other request, go on); True when it is done."""
        try:
            return self._emit(seq, logits)
        except Exception as exc:
            self._fail([seq], exc)
            return True

    def _emit(self, seq: Sequence, logits: torch.Tensor) -> bool:
        """Sample the row's next token and post its delta; True when the request finished."""
        if seq.grammar is not None:  # only this row is masked; the others stay untouched
            logits = seq.grammar.mask(logits)
        token = seq.sampler.next_token(logits)
        if seq.grammar is not None:
            seq.grammar.accept(token)
        seq.generated += 1
        seq.last_token = token
        params = seq.request.params
        finish: FinishReason | None = None
        stop_reason: str | int | None = None
        if token in params.stop_token_ids:
            finish, stop_reason = "stop", token
        elif (token in self.eos_ids and not params.ignore_eos) or (
            seq.grammar is not None and seq.grammar.terminated
        ):
            finish = "stop"
        text = "" if finish else seq.stops.push(seq.detok.push(token))
        if seq.stops.matched is not None:
            finish, stop_reason = "stop", seq.stops.matched
        elif finish is None and seq.generated >= seq.max_tokens:
            finish = "length"
        if finish is not None and seq.stops.matched is None:
            text += seq.stops.push(seq.detok.flush()) + seq.stops.flush()
        prompt_tokens = len(seq.request.prompt_token_ids) if seq.generated == 1 else None
        logprobs = _logprobs(seq, token) if params.logprobs is not None else None
        delta = Delta(text, 1, finish, prompt_tokens, stop_reason, logprobs)
        self._outbox.setdefault(seq.loop, []).append((seq, delta))
        return finish is not None

    def flush(self) -> None:
        """Hand this step's deltas over: one callback per caller loop, not one per row.

        Each wake-up of an event loop costs CPU that the model's threads would otherwise use,
        so a step's deltas travel together.
        """
        for loop, items in self._outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # that loop is closed: nobody is listening any more
                for seq, _ in items:
                    seq.aborted = True
        self._outbox.clear()

    def _fail(self, seqs: list[Sequence], exc: Exception) -> None:
        log.error("Generation failed for %d request(s): %s", len(seqs), exc, exc_info=exc)
        for seq in seqs:
            seq.post(LcfinError(f"Generation failed: {type(exc).__name__}: {exc}"))

    def abort_all(self) -> None:
        """End every running and pending request with 'abort' (shutdown)."""
        for seq in [*self.rows, *self.pending]:
            seq.post(Delta("", finish_reason="abort"))
        self.rows, self.batch = [], BatchKV()
        self.pending.clear()


def _deliver(items: list[tuple[Sequence, Delta]]) -> None:
    """Runs on the caller's event loop: queue each delta for its request."""
    for seq, delta in items:
        seq.out.put_nowait(delta)


def _logprobs(seq: Sequence, token: int) -> tuple[TokenLogprob, ...] | None:
    """The chosen token's logprob and its alternatives, from the sampler's processed logits."""
    processed = seq.sampler.processed
    if processed is None:
        return None
    chosen, top = logprobs_of(processed, token, seq.request.params.logprobs or 0)
    decode = seq.detok.tokenizer.decode
    alternatives = tuple((decode([i]), v) for i, v in top)
    return (TokenLogprob(decode([token]), chosen, token, alternatives),)
