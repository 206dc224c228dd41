"""Constrained decoding for the Transformers backend, with xgrammar (loaded lazily).

A request with a `ResponseFormat` gets its own `RowGrammar`: a `GrammarMatcher` over a compiled
grammar (cached by schema JSON) that masks that row's logits before sampling and accepts each
sampled token. Rows without a grammar are untouched, so constrained and free requests share the
continuous batch. JSON is compact: xgrammar's `any_whitespace=False` with `(",", ":")`
separators allows no free whitespace. Tokens holding a raw control character (U+0000-U+001F) are
also masked, since xgrammar's string rule admits them and strict JSON parsers do not.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import torch

from lcfin.engine.structured import check_schema
from lcfin.errors import BackendUnavailable, InvalidParameter

if TYPE_CHECKING:
    from lcfin.engine.types import ResponseFormat

__all__ = ["GrammarCache", "RowGrammar", "summarize_error"]

CACHE_SIZE = 64
#: json_object mode: any JSON object (xgrammar's builtin JSON grammar also allows arrays).
ANY_OBJECT = '{"type":"object"}'


def _xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError as exc:  # pragma: no cover - a dependency of lcfin
        raise BackendUnavailable(
            f"Structured outputs need xgrammar, which cannot be imported ({exc})",
            hint="pip install 'xgrammar>=0.2,<0.3'",
        ) from None
    return xgrammar


_LOG_PREFIX = re.compile(r"^\s*\[[^\]]*\]\s*")  # xgrammar's "[18:50:43] "
_SOURCE = re.compile(r"(?:[A-Za-z]:)?[\\/]?(?:[\w.-]+[\\/])+[\w.-]+\.\w+(?::\d+)?:?\s*")


def summarize_error(exc: BaseException, limit: int = 200) -> str:
    """The reason in a grammar library's error, without its time stamp or source paths."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    text = _SOURCE.sub("", _LOG_PREFIX.sub("", lines[0])).strip()
    return (text or type(exc).__name__)[:limit]


class GrammarCache:
    """Compiles response formats for one tokenizer, keeping the most recent grammars."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: set[int]) -> None:
        self._xgr = _xgrammar()
        info = self._xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_token_ids) or None
        )
        self.vocab_size = vocab_size
        controls = [i for i, b in enumerate(info.decoded_vocab) if any(c < 0x20 for c in b)]
        self._controls = torch.tensor(controls, dtype=torch.long)
        self._compiler = self._xgr.GrammarCompiler(info, cache_enabled=False)
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, fmt: ResponseFormat) -> Any:
        """The compiled grammar of `fmt` (from the cache when seen before).

        Raises:
            InvalidParameter: the schema is invalid or uses an unsupported feature.
        """
        key = json.dumps([fmt.schema_json, fmt.strict, fmt.prefix, fmt.suffix])
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        compiled = self._compile(fmt)
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return compiled

    def _compile(self, fmt: ResponseFormat) -> Any:
        schema = fmt.schema_json or ANY_OBJECT
        check_schema(json.loads(schema))
        xgr = self._xgr
        try:
            grammar = xgr.Grammar.from_json_schema(
                schema, any_whitespace=False, separators=(",", ":"), strict_mode=fmt.strict
            )
            if fmt.prefix or fmt.suffix:  # literal text around the JSON (tool calls)
                literal = xgr.Grammar.from_ebnf
                grammar = xgr.Grammar.concat(
                    *([literal(f"root ::= {json.dumps(fmt.prefix)}")] if fmt.prefix else []),
                    grammar,
                    *([literal(f"root ::= {json.dumps(fmt.suffix)}")] if fmt.suffix else []),
                )
            return self._compiler.compile_grammar(grammar)
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError with its reason
            raise InvalidParameter(
                "response_format: the JSON schema cannot be used for constrained decoding: "
                f"{summarize_error(exc)}",
                param="response_format",
            ) from None

    def matcher(self, fmt: ResponseFormat) -> RowGrammar:
        """A fresh per-request matcher for `fmt`."""
        return RowGrammar(self._xgr, self.compile(fmt), self.vocab_size, self._controls)


class RowGrammar:
    """One request's grammar state: masks its logits row and follows its tokens."""

    def __init__(self, xgr: Any, compiled: Any, vocab_size: int, controls: torch.Tensor) -> None:
        self._xgr = xgr
        self._controls = controls
        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """A float copy of the 1-D `logits` with the tokens the grammar forbids set to -inf."""
        row = logits.float().clone().unsqueeze(0)
        self._matcher.fill_next_token_bitmask(self._bitmask)
        bitmask = self._bitmask.to(row.device, non_blocking=True)
        self._xgr.apply_token_bitmask_inplace(row, bitmask, vocab_size=row.shape[-1])
        if self._controls.numel():
            row[0, self._controls.to(row.device)] = float("-inf")
        return row[0]

    def accept(self, token: int) -> None:
        """Advance the matcher past the sampled token."""
        self._matcher.accept_token(token)

    @property
    def terminated(self) -> bool:
        """Whether the grammar accepted its stop token (nothing more may follow)."""
        return bool(self._matcher.is_terminated())
