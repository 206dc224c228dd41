"""Function calls parsed out of a reply as it is generated, for streaming.

`CallStream` reads the generated text piece by piece and says, after each piece, which text is
the reply's content and which is a function call. Content streams as it comes, holding back
only what could still begin a call: trailing whitespace and a partial `<tool_call>` marker
(and, at the very start, a reply that opens with `{` or `<|python_tag|>`, which may be a
JSON call). A call is announced (its id and name) as soon as its name is known, then its
arguments follow as they are generated: the raw text of the `"arguments"` (or `"parameters"`)
value, so that the deltas joined are exactly the call's final `arguments`.

The formats (see `function_calls`):

- `<tool_call>{"name": "f", "arguments": {...}}</tool_call>` blocks, after some text
  (Qwen3, Hermes style; watched for unless the format is `llama3_json`);
- a reply that is one JSON call `{"name": "f", "parameters": {...}}`, maybe after
  `<|python_tag|>`, several separated by `;` (Llama 3.1; also how a call forced on vLLM
  looks, for any model).

What is decided: the content is the text before the first call, its trailing whitespace
dropped when a call follows; text after a call is dropped. A candidate that turns out not to
be a call (`{"answer": 1}`, a block that is not JSON) is content, when no call came before
it. A call cut short (max_tokens) keeps the arguments generated so far. The non-streaming
parse (`parse_tool_calls`) is this same machine fed the whole text at once.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from lcfin.engine.call_object import WS, CallObject
from lcfin.engine.function_calls import ToolCall
from lcfin.engine.types import Completion, Delta, ToolCallDelta

__all__ = ["CallStream", "parse_tool_calls", "stream_function_calls"]

TAG_OPEN = "<tool_call>"
PYTHON_TAG = "<|python_tag|>"


@dataclass
class _ParsedCall:
    """One call as parsed so far: its id, name and the argument text generated so far."""

    id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    def done(self) -> ToolCall:
        return ToolCall(self.name, "".join(self.arguments), self.id)


def _prefix_kept(text: str, marker: str) -> int:
    """How many characters at the end of `text` could be the start of `marker`."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class CallStream:
    """Splits generated text into content and function calls as it arrives (see module doc).

    `feed` each piece of text and `close` at the end; both return the content released and
    the call deltas, in order (all content comes before the first call).
    """

    def __init__(self, fmt: str | None) -> None:
        self.tags = fmt != "llama3_json"  # watch for <tool_call> blocks
        self.content: list[str] = []
        self.calls: list[_ParsedCall] = []
        self._mode = "start"
        self._buf = ""  # input not consumed yet
        self._ws = ""  # whitespace before a candidate call (dropped if it is one)
        self._raw = ""  # the candidate's text so far (content after all if it is not a call)
        self._obj: CallObject | None = None
        self._committed = False  # the candidate is a call (announced)
        self._chain = False  # after a bare JSON call: `;` and another may follow
        self._sent = 0  # how much of the current call's argument text was sent
        self._out: list[ToolCallDelta] = []
        self._released = ""

    def feed(self, text: str) -> tuple[str, tuple[ToolCallDelta, ...]]:
        """Read `text`; the content and call deltas it releases."""
        self._buf += text
        self._run(final=False)
        return self._take()

    def close(self) -> tuple[str, tuple[ToolCallDelta, ...]]:
        """End of the reply: release what was held back, end the call in progress."""
        self._run(final=True)
        while self._mode == "call":
            self._end_candidate()
            self._run(final=True)
        if self._mode in ("start", "text"):
            self._emit_text(self._ws + self._buf)
        self._buf, self._ws, self._mode, self._chain = "", "", "after", False
        return self._take()

    # -- the modes: each consumes what it can of the buffer ------------------------------

    def _run(self, final: bool) -> None:
        while self._buf:
            before = (self._mode, len(self._buf))
            getattr(self, "_" + self._mode)(final)
            if (self._mode, len(self._buf)) == before:
                return  # waiting for more text

    def _start(self, final: bool) -> None:
        body = self._buf.lstrip(WS)
        self._ws += self._buf[: len(self._buf) - len(body)]
        self._buf = body
        if body.startswith("{"):
            self._begin_candidate("")
        elif body.startswith(PYTHON_TAG):
            self._buf = body[len(PYTHON_TAG) :]
            self._begin_candidate(PYTHON_TAG)
        elif body and (final or not (PYTHON_TAG.startswith(body) or TAG_OPEN.startswith(body))):
            self._buf, self._ws, self._mode = self._ws + body, "", "text"

    def _text(self, final: bool) -> None:
        if not self.tags:
            self._emit_text(self._buf)
            self._buf = ""
            return
        at = self._buf.find(TAG_OPEN)
        if at >= 0:
            before = self._buf[:at]
            kept = before.rstrip(WS)
            self._emit_text(kept)
            self._ws = before[len(kept) :]
            self._buf = self._buf[at + len(TAG_OPEN) :]
            self._begin_candidate(TAG_OPEN)
        elif not final:  # at the end, close() releases the rest
            cut = len(self._buf) - _prefix_kept(self._buf, TAG_OPEN)
            sent = self._buf[:cut].rstrip(WS)
            self._emit_text(sent)
            self._buf = self._buf[len(sent) :]

    def _call(self, final: bool) -> None:
        obj = self._obj
        assert obj is not None
        for i, c in enumerate(self._buf):
            if c == "<" and not obj.in_string:
                self._buf = self._buf[i:]  # not JSON: the call (or candidate) ends here
                self._end_candidate()
                return
            self._raw += c
            obj.push(c)
            if obj.failed or obj.ended:
                self._buf = self._buf[i + 1 :]
                self._end_candidate()
                return
            self._maybe_commit()
        self._buf = ""
        self._send_args()

    def _after(self, final: bool) -> None:
        """After a call: skip to the next one (`<tool_call>`, or `;` then `{`), drop the rest."""
        if self._chain:
            body = self._buf.lstrip(WS + ";")
            if body.startswith("{"):
                self._buf = body
                self._begin_candidate("")
                return
            self._chain = not body
            self._buf = body
        at = self._buf.find(TAG_OPEN) if self.tags else -1
        if at >= 0:
            self._buf = self._buf[at + len(TAG_OPEN) :]
            self._begin_candidate(TAG_OPEN)
            return
        keep = 0 if final or not self.tags else _prefix_kept(self._buf, TAG_OPEN)
        self._buf = self._buf[len(self._buf) - keep :] if keep else ""

    # -- candidates and calls -------------------------------------------------------------

    def _begin_candidate(self, opener: str) -> None:
        self._mode, self._raw, self._obj = "call", opener, CallObject()
        self._committed, self._sent = False, 0

    def _maybe_commit(self) -> None:
        obj = self._obj
        assert obj is not None
        tagged = self._raw.startswith(TAG_OPEN)
        if not self._committed and obj.name is not None and (tagged or obj.args is not None):
            self._commit(obj.name)

    def _commit(self, name: str) -> None:
        self._committed, self._ws = True, ""
        call = _ParsedCall(f"call_{uuid.uuid4().hex[:24]}", name)
        self.calls.append(call)
        self._out.append(ToolCallDelta(len(self.calls) - 1, call.id, name))

    def _send_args(self) -> None:
        obj = self._obj
        if not self._committed or obj is None or obj.args is None or not obj.args_stream:
            return
        new = obj.args.text[self._sent :]
        if new:
            self._sent += len(new)
            self._add_args(new)

    def _add_args(self, text: str) -> None:
        self.calls[-1].arguments.append(text)
        self._out.append(ToolCallDelta(len(self.calls) - 1, arguments=text))

    def _end_candidate(self) -> None:
        """The candidate ended (closed, broken or cut off): a call, or content after all."""
        obj = self._obj
        assert obj is not None
        tagged = self._raw.startswith(TAG_OPEN)
        if not self._committed and obj.name is not None and obj.ended:
            self._commit(obj.name)  # a bare call without arguments
        if self._committed:
            if obj.args_stream:
                self._send_args()
            else:
                self._add_args(obj.finished_args())
        self._mode, self._obj, self._chain = "after", None, self._committed and not tagged
        if self._committed:
            return
        if not self.calls:  # not a call, and no call before it: it was content
            raw = self._ws + self._raw
            sent = raw.rstrip(WS)
            self._emit_text(sent)
            self._buf = raw[len(sent) :] + self._buf
            self._ws, self._mode = "", "text"

    def _emit_text(self, text: str) -> None:
        if text:
            self.content.append(text)
            self._released += text

    def _take(self) -> tuple[str, tuple[ToolCallDelta, ...]]:
        text, out = self._released, tuple(_merged(self._out))
        self._released, self._out = "", []
        return text, out


def _merged(deltas: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """Consecutive argument pieces of one call as one delta."""
    out: list[ToolCallDelta] = []
    for d in deltas:
        last = out[-1] if out else None
        if last is not None and last.index == d.index and d.id is None and last.arguments:
            out[-1] = replace(last, arguments=last.arguments + d.arguments)
        else:
            out.append(d)
    return out


def parse_tool_calls(text: str, fmt: str | None) -> tuple[str | None, list[ToolCall]]:
    """Split a whole reply into its content and its calls (no call: the text as is).

    With calls, the content is None when there is none before the first call.
    """
    stream = CallStream(fmt)
    stream.feed(text)
    stream.close()
    content = "".join(stream.content)
    if not stream.calls:
        return content, []
    return content or None, [c.done() for c in stream.calls]


async def stream_function_calls(
    events: AsyncIterator[Delta | Completion], fmt: str | None
) -> AsyncIterator[Delta | Completion]:
    """`events` with each `Delta`'s text split into content and call pieces as generated,
    and the final `Completion` carrying the content as `text` and the calls as `tool_calls`.

    A step that releases nothing (its text held back) is sent with the next one, so that
    every `Delta` carries text or call pieces (logprobs and token counts are kept).
    """
    stream = CallStream(fmt)
    held: Delta | None = None
    async for event in events:
        if isinstance(event, Delta):
            text, calls = stream.feed(event.text)
            step = replace(event, text=text, tool_calls=calls)
        else:
            text, calls = stream.close()
            step = Delta(text, tool_calls=calls)
        held = step if held is None else held.then(step)
        if held.text or held.tool_calls or (isinstance(event, Completion) and held.logprobs):
            yield held
            held = None
        if isinstance(event, Completion):
            if stream.calls:
                found = tuple(c.done() for c in stream.calls)
                event = replace(event, text="".join(stream.content), tool_calls=found)
            yield event
