"""lcfin requests to vLLM sampling parameters, and logprobs back: pure, tested without vLLM.

vLLM 0.33 takes `SamplingParams.structured_outputs = StructuredOutputsParams(json=schema)` (or
`json_object=True`) and `logprobs=N`; its outputs carry, per generated token, a dict
`{token_id: Logprob(logprob, rank, decoded_token)}` holding the chosen token and the top N.

As on the Transformers backend (engine/transformers/grammar.py): a schema keyword no grammar
enforces is refused (400); tokens holding a raw control character are banned under a JSON
format (xgrammar's string rule admits them, strict JSON parsers do not); logprob tokens are each
token decoded on its own, and alternatives the grammar forbids (-inf) are left out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from lcfin.engine.structured import check_schema
from lcfin.engine.types import GenerationRequest, SamplingParams, TokenLogprob

__all__ = [
    "control_token_ids",
    "logprobs_from_output",
    "sampling_kwargs",
    "structured_outputs_kwargs",
]

Decode = Callable[[list[int]], str]


def control_token_ids(tokenizer: Any, vocab_size: int) -> list[int]:
    """The ids of the tokens whose text holds a raw control character (U+0000-U+001F)."""
    import xgrammar  # a dependency of lcfin, and of vLLM

    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
    return [i for i, text in enumerate(info.decoded_vocab) if any(c < 0x20 for c in text)]


def sampling_kwargs(
    request: GenerationRequest, max_model_len: int, banned_in_json: Iterable[int] = ()
) -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams` (all but `output_kind`) for `request`.

    `max_tokens` is capped at what the context leaves (vLLM's default would be 16).
    `banned_in_json` (control-character tokens) get a -inf logit bias under a JSON format.

    Raises:
        InvalidParameter: the JSON schema uses a keyword constrained decoding cannot enforce.
    """
    p = request.params
    room = max_model_len - len(request.prompt_token_ids)
    structured = structured_outputs_kwargs(p)
    bias = dict.fromkeys(banned_in_json, -math.inf) if structured is not None else {}
    return {
        "n": 1,
        "max_tokens": room if p.max_tokens is None else min(p.max_tokens, room),
        "temperature": p.temperature,
        "top_p": p.top_p,
        "top_k": p.top_k if p.top_k > 0 else 0,  # lcfin's 0 / -1 = off = vLLM's 0
        "stop": list(request.all_stops) or None,
        "stop_token_ids": list(p.stop_token_ids) or None,
        "seed": p.seed,
        "presence_penalty": p.presence_penalty,
        "frequency_penalty": p.frequency_penalty,
        "repetition_penalty": p.repetition_penalty,
        "ignore_eos": p.ignore_eos,
        "skip_special_tokens": True,
        "include_stop_str_in_output": False,
        "logprobs": p.logprobs,
        "structured_outputs": structured,
        "logit_bias": bias or None,
    }


def structured_outputs_kwargs(params: SamplingParams) -> dict[str, Any] | None:
    """Keyword arguments for `StructuredOutputsParams`, or None for free text.

    The JSON is compact (no free whitespace), as on the Transformers backend: the engine is
    built with `disable_any_whitespace` (args.STRUCTURED_OUTPUTS), because vLLM ignores
    the per-request flag. A forced tool call's literal `<tool_call>` wrapper cannot be
    expressed here: the call is bare JSON, which the Qwen3 parser also accepts.
    """
    fmt = params.response_format
    if fmt is None:
        return None
    if fmt.schema_json is None:
        return {"json_object": True}
    schema = json.loads(fmt.schema_json)
    check_schema(schema)
    return {"json": schema}


def _entry(token_id: int, positions: dict[int, Any], k: int, decode: Decode | None) -> TokenLogprob:
    def text(tid: int, lp: Any) -> str:
        return decode([tid]) if decode is not None else str(lp.decoded_token or "")

    chosen = positions[token_id]
    finite = [(tid, lp) for tid, lp in positions.items() if math.isfinite(float(lp.logprob))]
    ranked = sorted(finite, key=lambda item: -float(item[1].logprob))[:k]
    top = tuple((text(tid, lp), float(lp.logprob)) for tid, lp in ranked)
    return TokenLogprob(text(token_id, chosen), float(chosen.logprob), token_id, top)


def logprobs_from_output(
    comp: Any, k: int | None, decode: Decode | None = None
) -> tuple[TokenLogprob, ...] | None:
    """lcfin's logprobs from one DELTA `CompletionOutput` (None when not asked for).

    `decode` (the tokenizer's) gives each token's text on its own, as the Transformers backend
    does; without it, vLLM's `decoded_token` (empty for a token that ends mid-character).
    """
    if k is None or comp is None or not comp.logprobs:
        return None
    pairs = zip(comp.token_ids, comp.logprobs, strict=False)
    return tuple(_entry(int(tid), positions, k, decode) for tid, positions in pairs if positions)
