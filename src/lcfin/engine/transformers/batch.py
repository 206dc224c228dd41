"""The running batch of the Transformers backend: a left-padded KV cache shared by all rows.

Continuous (iteration-level) batching: newly admitted requests are prefilled together, then their
KV cache is merged into the running batch, padded on the left so every row ends at the same
column; each decoding step runs all rows at once; a row leaves the batch the step it finishes or
is aborted, and columns that are padding for every row are trimmed away. Rows keep their own
positions (`position_ids`) and mask, so a request's tokens do not depend on its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["BatchKV", "prefill_inputs"]


def prefill_inputs(
    prompts: list[list[int]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded input ids, attention mask and position ids for a batch of prompts."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def _kv_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


@dataclass
class BatchKV:
    """KV cache, attention mask and next positions of the running rows (row i = rows[i])."""

    cache: Any = None
    mask: torch.Tensor | None = None  # [rows, columns], 1 = real token
    positions: torch.Tensor | None = None  # [rows], position of each row's next token
    size: int = 0

    @property
    def columns(self) -> int:
        """Width of the padded cache (tokens per row, padding included)."""
        return 0 if self.mask is None else int(self.mask.shape[1])

    def merge(self, cache: Any, mask: torch.Tensor, positions: torch.Tensor) -> None:
        """Append prefilled rows (their cache, mask, next positions) to the batch."""
        if self.size == 0:
            self.cache, self.mask, self.positions = cache, mask, positions
            self.size = int(mask.shape[0])
            return
        assert self.mask is not None
        assert self.positions is not None
        width = max(self.columns, int(mask.shape[1]))
        for layer, (keys, values) in zip(self.cache.layers, _kv_tensors(cache), strict=True):
            layer.keys = torch.cat([_pad_left(layer.keys, width, 2), _pad_left(keys, width, 2)])
            layer.values = torch.cat(
                [_pad_left(layer.values, width, 2), _pad_left(values, width, 2)]
            )
        self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(mask, width, 1)])
        self.positions = torch.cat([self.positions, positions])
        self.size += int(mask.shape[0])

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (in that order), then drop columns that are padding everywhere."""
        if len(rows) == self.size:
            return
        if not rows:
            self.cache = self.mask = self.positions = None
            self.size = 0
            return
        assert self.mask is not None
        assert self.positions is not None
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        used = mask.any(dim=0).nonzero()
        first = int(used[0].item()) if used.numel() else 0
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]
        self.mask = mask[:, first:]
        self.positions = self.positions.index_select(0, index)
        self.size = len(rows)

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask (with a new column for the token being fed) and position ids of a step."""
        assert self.mask is not None
        assert self.positions is not None
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.size, 1))], dim=1)
        return self.mask, self.positions.unsqueeze(1)

    def advance(self) -> None:
        """Every row consumed one token."""
        assert self.positions is not None
        self.positions = self.positions + 1
