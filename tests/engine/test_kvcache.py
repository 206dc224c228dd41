"""GrowingLayer: in-place appends give exactly what DynamicLayer's torch.cat gives."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache
from transformers.cache_utils import DynamicLayer

from lcfin.engine.transformers.kvcache import SPARE_COLUMNS, GrowingLayer, new_cache
from tests.tiny_models import ARCHITECTURES


def _kv(rows: int, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(rows, 2, columns, 4), torch.randn(rows, 2, columns, 4)


def test_appends_match_torch_cat_across_several_growths() -> None:
    grown, reference = GrowingLayer(), DynamicLayer()
    buffers = set()
    for step in range(3 * SPARE_COLUMNS):
        keys, values = _kv(3, 7 if step == 0 else 1)
        got = grown.update(keys, values)
        want = reference.update(keys, values)
        assert torch.equal(got[0], want[0])
        assert torch.equal(got[1], want[1])
        assert grown.get_seq_length() == reference.get_seq_length() == 7 + step
        buffers.add(got[0].untyped_storage().data_ptr())
    assert len(buffers) <= 4  # one buffer per SPARE_COLUMNS steps, not one per step


def test_assigned_tensors_are_kept_as_given_then_appended_to() -> None:
    layer = GrowingLayer()
    layer.update(*_kv(4, 5))
    assert layer.keys is not None
    kept = layer.keys.index_select(0, torch.tensor([0, 2]))[:, :, 1:]  # as BatchKV.keep does
    layer.keys = kept
    layer.values = kept.clone()
    assert torch.equal(layer.keys, kept)
    new_keys, new_values = _kv(2, 1)
    keys, values = layer.update(new_keys, new_values)
    assert torch.equal(keys, torch.cat([kept, new_keys], dim=-2))
    assert torch.equal(values, torch.cat([kept, new_values], dim=-2))
    assert layer.get_seq_length() == 5


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_decoding_is_unchanged_on_every_architecture(
    tiny_models: dict[str, Path], arch: str
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch]).eval()
    kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def decode(cache: object, steps: int = 2 * SPARE_COLUMNS + 5) -> list[int]:
        ids = torch.tensor([[1, 5, 9, 12, 7, 3]])
        tokens = []
        with torch.inference_mode():
            for _ in range(steps):
                out = model(input_ids=ids, use_cache=True, **{kw: cache})
                token = int(out.logits[0, -1].argmax())
                tokens.append(token)
                ids = torch.tensor([[token]])
        return tokens

    assert decode(new_cache()) == decode(DynamicCache())
