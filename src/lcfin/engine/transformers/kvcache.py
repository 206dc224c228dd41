"""A KV cache layer that appends in place, for the Transformers backend's running batch.

Transformers' `DynamicLayer` grows by `torch.cat` at every decoding step: each step copies the
whole cache of every layer (on CPU, about a tenth of a step on the benchmark models). This layer
keeps spare columns after the used ones and writes each step's keys and values into them; it
copies only when the spare columns run out (every `SPARE_COLUMNS` steps). Readers get a view of
the used columns, so attention sees exactly what `DynamicLayer` would give it.

Assigning `keys`/`values` (as `BatchKV` does to merge, select or trim rows) stores the tensor
as given, with no spare columns: the next append makes room.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = ["SPARE_COLUMNS", "GrowingLayer", "new_cache"]

#: Columns added each time a layer runs out of room.
SPARE_COLUMNS = 64


def _append(buffer: torch.Tensor | None, used: int, new: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Write `new` after the `used` columns of `buffer` (growing it if needed)."""
    total = used + int(new.shape[-2])
    if buffer is None or buffer.dim() != 4 or used == 0:
        buffer = new.new_empty((*new.shape[:-2], total + SPARE_COLUMNS, new.shape[-1]))
    elif total > buffer.shape[-2]:
        grown = buffer.new_empty((*buffer.shape[:-2], total + SPARE_COLUMNS, buffer.shape[-1]))
        grown[:, :, :used] = buffer[:, :, :used]
        buffer = grown
    buffer[:, :, used:total] = new
    return buffer, total


def _used_columns(buffer: torch.Tensor | None, used: int) -> torch.Tensor | None:
    """The `used` columns of `buffer` (the buffer itself when it has no spare ones)."""
    if buffer is None or buffer.dim() != 4 or used == buffer.shape[-2]:
        return buffer
    return buffer[:, :, :used]


class GrowingLayer(DynamicLayer):  # type: ignore[misc]
    """`DynamicLayer` with spare columns: see the module docstring."""

    def __init__(self) -> None:
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        self._keys_used = self._values_used = 0
        super().__init__()

    @staticmethod
    def _used_of(tensor: torch.Tensor | None) -> int:
        return int(tensor.shape[-2]) if tensor is not None and tensor.dim() == 4 else 0

    @property
    def keys(self) -> torch.Tensor | None:
        """The cached keys, [batch, heads, columns, head_dim] (a view of the used columns)."""
        return _used_columns(self._keys, self._keys_used)

    @keys.setter
    def keys(self, tensor: torch.Tensor | None) -> None:
        self._keys, self._keys_used = tensor, self._used_of(tensor)

    @property
    def values(self) -> torch.Tensor | None:
        """The cached values, shaped like `keys`."""
        return _used_columns(self._values, self._values_used)

    @values.setter
    def values(self, tensor: torch.Tensor | None) -> None:
        self._values, self._values_used = tensor, self._used_of(tensor)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys and values; return all of them (as DynamicLayer does)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys, self._keys_used = _append(self._keys, self._keys_used, key_states)
        values, self._values_used = _append(self._values, self._values_used, value_states)
        self._keys, self._values = keys, values
        return keys[:, :, : self._keys_used], values[:, :, : self._values_used]


def new_cache() -> Any:
    """An empty DynamicCache whose layers (created on first use) are `GrowingLayer`s.

    Every layer is a full one, whatever the model's attention types, so rows merge uniformly;
    sliding windows are applied by the attention mask.
    """
    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer
    return cache
