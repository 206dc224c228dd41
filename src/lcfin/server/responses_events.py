"""The server-sent events of a streamed response, in the spec's order, numbered from 0.

    response.created                          the Response, status in_progress, no output
    response.in_progress
    per message (text as it is generated):
      response.output_item.added              the message, in_progress
      response.content_part.added             an empty output_text
      response.output_text.delta ...
      response.output_text.done
      response.content_part.done
      response.output_item.done               the message, completed (or incomplete)
    per function call (after the message, if any, is done):
      response.output_item.added              the call, in_progress, arguments ""
      response.function_call_arguments.delta ...  the arguments as they are generated
      response.function_call_arguments.done
      response.output_item.done               the call, completed (or incomplete)
    response.completed | response.incomplete | response.failed   the final Response

Each frame is `event: <type>` + `data: <json>`; there is no `data: [DONE]` (OpenAI sends none
for this API). A failure after the first event closes the open item as incomplete and ends with
`response.failed`, whose `error` says why. An item closed before the end (the message when a
call starts, a call when the next starts) is completed; the last one gets the response's status.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lcfin.engine.types import ToolCallDelta
from lcfin.server.responses_objects import (
    Status,
    call_item,
    call_item_id,
    delta_logprobs,
    item_status,
    message_item,
    new_item_id,
    output_items,
    output_text,
)

if TYPE_CHECKING:
    from lcfin.engine.types import Completion, Delta, TokenLogprob
    from lcfin.server.responses_objects import Response

__all__ = ["ResponseEvents"]

_TERMINAL = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
}


@dataclass
class _OpenCall:
    """The function call being streamed: its output index and item, its arguments so far."""

    index: int
    id: str
    name: str
    arguments: str = ""

    def item(self, status: Status) -> dict[str, Any]:
        return call_item(self, status)


class ResponseEvents:
    """Renders one response's stream: `start`, `delta` per step, then `finish` or `fail`."""

    def __init__(self, response: Response, *, parallel: bool = True, logprobs: bool = False):
        self.response = response
        self.parallel = parallel
        self.logprobs = logprobs
        self.message_id = new_item_id("msg")
        self.sequence_number = 0
        self._open = False
        self._text: list[str] = []
        self._lps: list[TokenLogprob] = []
        self._call: _OpenCall | None = None
        self._done: list[dict[str, Any]] = []  # items closed so far, in output order

    def _frame(self, kind: str, **fields: Any) -> str:
        data = {"type": kind, **fields, "sequence_number": self.sequence_number}
        self.sequence_number += 1
        return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

    def start(self) -> Iterator[str]:
        """response.created, then response.in_progress."""
        body = self.response.body()
        yield self._frame("response.created", response=body)
        yield self._frame("response.in_progress", response=body)

    def _at(self) -> dict[str, Any]:
        return {"item_id": self.message_id, "output_index": 0, "content_index": 0}

    def delta(self, event: Delta) -> Iterator[str]:
        """One step of the generation: its text, then the pieces of function calls."""
        no_calls = not event.tool_calls and self._call is None and not self._done
        if event.text or (event.logprobs and no_calls):
            yield from self.text(event.text, event.logprobs)
        for piece in event.tool_calls:
            yield from self.call(piece)

    def text(self, delta: str, lps: tuple[TokenLogprob, ...] | None = None) -> Iterator[str]:
        """A piece of the message's text (the message opens with the first piece)."""
        if not self._open:
            yield from self._open_message()
        self._text.append(delta)
        self._lps += lps or ()
        lp = delta_logprobs(lps if self.logprobs else None)
        yield self._frame("response.output_text.delta", **self._at(), delta=delta, logprobs=lp)

    def _open_message(self) -> Iterator[str]:
        self._open = True
        item = message_item(self.message_id, "in_progress")
        yield self._frame("response.output_item.added", output_index=0, item=item)
        yield self._frame("response.content_part.added", **self._at(), part=output_text(""))

    def _close_message(
        self, item: dict[str, Any], lps: tuple[TokenLogprob, ...] | None
    ) -> Iterator[str]:
        part = item["content"][0]
        lp = delta_logprobs(lps if self.logprobs else None)
        yield self._frame("response.output_text.done", **self._at(), text=part["text"], logprobs=lp)
        yield self._frame("response.content_part.done", **self._at(), part=part)
        yield self._frame("response.output_item.done", output_index=0, item=item)
        self._open = False

    def call(self, piece: ToolCallDelta) -> Iterator[str]:
        """A piece of a function call: its start (which closes the item before), or more of
        its arguments. Without parallel tool calls, only the first call is sent."""
        if piece.index > 0 and not self.parallel:
            return
        if piece.id is not None:
            yield from self._close_items("completed")
            self._call = _OpenCall(len(self._done), piece.id, piece.name or "")
            added = self._call.item("in_progress")
            index = self._call.index
            yield self._frame("response.output_item.added", output_index=index, item=added)
        if piece.arguments and self._call is not None:
            self._call.arguments += piece.arguments
            at = {"item_id": call_item_id(self._call.id), "output_index": self._call.index}
            yield self._frame("response.function_call_arguments.delta", **at, delta=piece.arguments)

    def _close_items(self, status: Status) -> Iterator[str]:
        """Close the open message or call with `status`."""
        if self._open:
            lps = tuple(self._lps) if self.logprobs else None
            part = output_text("".join(self._text), lps)
            item = message_item(self.message_id, status, [part])
            yield from self._close_message(item, tuple(self._lps))
            self._done.append(item)
        if self._call is not None:
            item = self._call.item(status)
            index, name, arguments = self._call.index, item["name"], item["arguments"]
            at = {"item_id": item["id"], "output_index": index}
            done = "response.function_call_arguments.done"
            yield self._frame(done, **at, name=name, arguments=arguments)
            yield self._frame("response.output_item.done", output_index=index, item=item)
            self._done.append(item)
            self._call = None

    def finish(self, done: Completion) -> tuple[Response, list[str]]:
        """The final Response (to store) and the closing frames, the terminal event last.

        A reply without streamed calls ends as `output_items` says (text not streamed yet is
        sent whole, as one delta); with calls, the output is the items streamed.
        """
        frames: list[str] = []
        if self._call is None and done.tool_calls:  # not streamed (the core streams them)
            if done.text and not self._open:
                frames += self.text(done.text, done.logprobs)
            for i, c in enumerate(done.tool_calls):
                frames += self.call(ToolCallDelta(i, c.id, c.name, c.arguments))
        if self._call is not None:
            frames += self._close_items(item_status(done))
            output = self._done
        else:
            output = output_items(
                done, self.message_id, parallel=self.parallel, logprobs=self.logprobs
            )
            frames += self._finish_message(output, done)
        final = self.response.end(done, output)
        last = self.response.end(done, output, cost=True)
        frames.append(self._frame(_TERMINAL[final.status], response=last.body()))
        return final, frames

    def _finish_message(self, output: list[dict[str, Any]], done: Completion) -> list[str]:
        frames: list[str] = []
        for item in output:  # the message alone
            if not self._open:
                frames += self._open_message()
                if done.text:
                    frames += self.text(done.text, done.logprobs)
            frames += self._close_message(item, done.logprobs)
        return frames

    def fail(self, exc: Exception) -> tuple[Response, list[str]]:
        """The failed Response and the closing frames after `exc` (mid-stream)."""
        frames = list(self._close_items("incomplete"))
        failed = self.response.fail(exc, self._done)
        frames.append(self._frame("response.failed", response=failed.body()))
        return failed, frames
