"""Turning generated token ids into clean text deltas, with stop strings cut out.

Used by backends that decode themselves (Transformers); vLLM does the same in its engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lcfin.engine.types import Tokenizer

__all__ = ["IncrementalDetokenizer", "StopStringFilter"]

_REPLACEMENT = "\ufffd"
_CONTEXT = 5


@dataclass
class IncrementalDetokenizer:
    """Decodes a growing list of token ids and returns only the new, settled text.

    Only a short window is decoded per token (the tokens since the last emitted text, plus a
    few before them for context, as vLLM and TGI do), so the cost per token stays flat however
    long the output grows. An incomplete UTF-8 sequence at the end decodes as one U+FFFD: that
    last character is held back until the next tokens complete it, and the text before it goes
    out at once. Bytes that can never form a character (a model generating garbage) therefore
    stream as U+FFFD as they come, instead of being held to the end of the reply.
    """

    tokenizer: Tokenizer
    token_ids: list[int] = field(default_factory=list)
    prefix_offset: int = 0
    read_offset: int = 0
    #: Characters of the pending text (after read_offset) already returned.
    sent: int = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the text it settles (may be empty)."""
        self.token_ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Return whatever is still held back (at the end of generation)."""
        return self._advance(final=True)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _advance(self, *, final: bool) -> str:
        prefix = self._decode(self.token_ids[self.prefix_offset : self.read_offset])
        text = self._decode(self.token_ids[self.prefix_offset :])
        if len(text) <= len(prefix):
            return ""
        new = text[len(prefix) :]
        if new.endswith(_REPLACEMENT) and not final:  # the last character may be incomplete
            settled = len(new) - 1
            out = new[self.sent : settled]
            self.sent = max(self.sent, settled)
            return out
        out = new[self.sent :]
        # Keep a few tokens of context: decoding a token alone can lose its leading space.
        self.prefix_offset = max(self.read_offset - _CONTEXT, 0)
        self.read_offset = len(self.token_ids)
        self.sent = 0
        return out


@dataclass
class StopStringFilter:
    """Holds back text that may be the start of a stop string; cuts output at a match.

    The stop string itself is never emitted (OpenAI semantics).
    """

    stops: tuple[str, ...]
    pending: str = ""
    matched: str | None = None

    def push(self, text: str) -> str:
        """Feed new text; return the part that is safe to emit."""
        if self.matched is not None or not self.stops:
            return "" if self.matched is not None else text
        combined = self.pending + text
        hits = [(combined.find(s), s) for s in self.stops if s in combined]
        if hits:
            index, stop = min(hits)
            self.matched, self.pending = stop, ""
            return combined[:index]
        keep = self._longest_partial(combined)
        self.pending = combined[len(combined) - keep :] if keep else ""
        return combined[: len(combined) - keep]

    def flush(self) -> str:
        """Release the held-back text when generation ended without a match."""
        out, self.pending = ("" if self.matched else self.pending), ""
        return out

    def _longest_partial(self, text: str) -> int:
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
