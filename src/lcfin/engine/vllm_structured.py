"""lcfin requests to vLLM sampling parameters, and logprobs back: pure, tested without vLLM.

vLLM 0.33 takes `SamplingParams.structured_outputs = StructuredOutputsParams(json=schema)` (or
`json_object=True`) and `logprobs=N`; its outputs carry, per generated token, a dict
`{token_id: Logprob(logprob, rank, decoded_token)}` holding the chosen token and the top N.
"""

from __future__ import annotations

import json
from typing import Any

from lcfin.engine.types import GenerationRequest, SamplingParams, TokenLogprob

__all__ = ["logprobs_from_output", "sampling_kwargs", "structured_outputs_kwargs"]


def sampling_kwargs(request: GenerationRequest, max_model_len: int) -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams` (all but `output_kind`) for `request`.

    `max_tokens` is capped at what the context leaves (vLLM's default would be 16).
    """
    p = request.params
    room = max_model_len - len(request.prompt_token_ids)
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
        "structured_outputs": structured_outputs_kwargs(p),
    }


def structured_outputs_kwargs(params: SamplingParams) -> dict[str, Any] | None:
    """Keyword arguments for `StructuredOutputsParams`, or None for free text.

    The JSON is compact (no free whitespace), as on the Transformers backend: the engine is
    built with `disable_any_whitespace` (vllm_args.STRUCTURED_OUTPUTS), because vLLM ignores
    the per-request flag. A forced tool call's literal `<tool_call>` wrapper cannot be
    expressed here: the call is bare JSON, which the Qwen3 parser also accepts.
    """
    fmt = params.response_format
    if fmt is None:
        return None
    if fmt.schema_json is None:
        return {"json_object": True}
    return {"json": json.loads(fmt.schema_json)}


def _entry(token_id: int, positions: dict[int, Any], k: int) -> TokenLogprob:
    chosen = positions[token_id]
    ranked = sorted(positions.items(), key=lambda item: -float(item[1].logprob))[:k]
    top = tuple((str(lp.decoded_token or ""), float(lp.logprob)) for _, lp in ranked)
    return TokenLogprob(str(chosen.decoded_token or ""), float(chosen.logprob), token_id, top)


def logprobs_from_output(comp: Any, k: int | None) -> tuple[TokenLogprob, ...] | None:
    """lcfin's logprobs from one DELTA `CompletionOutput` (None when not asked for)."""
    if k is None or comp is None or not comp.logprobs:
        return None
    pairs = zip(comp.token_ids, comp.logprobs, strict=False)
    return tuple(_entry(int(tid), positions, k) for tid, positions in pairs if positions)
