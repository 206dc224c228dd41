"""Per-request logits processing and sampling for the Transformers backend.

Each request keeps its own parameters and its own seeded `torch.Generator`, so a request
samples the same tokens whether it runs alone or inside a batch. Semantics follow vLLM:
repetition penalty over prompt + output tokens; presence/frequency penalties over output tokens.
"""

from __future__ import annotations

import secrets
from collections import Counter

import torch

from lcfin.engine.types import SamplingParams

__all__ = ["RequestSampler", "logprobs_of"]


class RequestSampler:
    """Chooses the next token of one request from its logits row."""

    def __init__(self, params: SamplingParams, prompt_ids: list[int], device: torch.device) -> None:
        self.params = params
        self.prompt_ids = set(prompt_ids)
        self.output_counts: Counter[int] = Counter()
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        #: The processed logits of the last step (kept only when the request wants logprobs).
        self.processed: torch.Tensor | None = None

    def next_token(self, logits: torch.Tensor) -> int:
        """Sample from a 1-D float logits tensor and record the chosen token."""
        logits = self._penalise(logits.float())
        p = self.params
        if p.logprobs is not None:
            self.processed = logits
        if p.greedy:
            token = int(torch.argmax(logits).item())
        else:
            logits = logits / p.temperature
            if p.top_k > 0:
                kth = torch.topk(logits, min(p.top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            if p.top_p < 1.0:
                probs = _top_p(probs, p.top_p)
            token = int(torch.multinomial(probs, 1, generator=self.generator).item())
        self.output_counts[token] += 1
        return token

    def _penalise(self, logits: torch.Tensor) -> torch.Tensor:
        p = self.params
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(self.prompt_ids | set(self.output_counts)), dtype=torch.long)
            if seen.numel():
                seen = seen.to(logits.device)
                vals = logits[seen]
                vals = torch.where(
                    vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty
                )
                logits = logits.index_copy(0, seen, vals)
        if (p.presence_penalty or p.frequency_penalty) and self.output_counts:
            ids = torch.tensor(list(self.output_counts), dtype=torch.long, device=logits.device)
            counts = torch.tensor(
                list(self.output_counts.values()), dtype=logits.dtype, device=logits.device
            )
            logits = logits.index_add(0, ids, -(p.frequency_penalty * counts + p.presence_penalty))
        return logits


def logprobs_of(
    processed: torch.Tensor, token: int, k: int
) -> tuple[float, list[tuple[int, float]]]:
    """The chosen token's logprob and the `k` most likely tokens (-inf ones left out)."""
    logp = torch.log_softmax(processed.float(), dim=-1)
    chosen = float(logp[token].item())
    if k <= 0:
        return chosen, []
    values, ids = torch.topk(logp, min(k, logp.numel()))
    top = [
        (int(i), float(v))
        for i, v in zip(ids.tolist(), values.tolist(), strict=True)
        if v != float("-inf")
    ]
    return chosen, top


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches top_p."""
    sorted_probs, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    remove = cumulative - sorted_probs > top_p
    sorted_probs = sorted_probs.masked_fill(remove, 0.0)
    filtered = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return filtered / filtered.sum()
