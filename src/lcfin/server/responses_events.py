"""The server-sent events of a streamed response, in the spec's order, numbered from 0.

    response.created                          the Response, status in_progress, no output
    response.in_progress
    per message (text as it is generated; all at the end when the reply may hold calls):
      response.output_item.added              the message, in_progress
      response.content_part.added             an empty output_text
      response.output_text.delta ...
      response.output_text.done
      response.content_part.done
      response.output_item.done               the message, completed (or incomplete)
    per function call:
      response.output_item.added              the call, in_progress, arguments ""
      response.function_call_arguments.delta  the arguments, whole
      response.function_call_arguments.done
      response.output_item.done               the call, completed
    response.completed | response.incomplete | response.failed   the final Response

Each frame is `event: <type>` + `data: <json>`; there is no `data: [DONE]` (OpenAI sends none
for this API). A failure after the first event closes the open message as incomplete and ends
with `response.failed`, whose `error` says why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lcfin.server.responses_objects import (
    delta_logprobs,
    message_item,
    new_item_id,
    output_items,
    output_text,
)

if TYPE_CHECKING:
    from lcfin.engine.types import Completion, TokenLogprob
    from lcfin.server.responses_objects import Response

__all__ = ["ResponseEvents"]

_TERMINAL = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
}


class ResponseEvents:
    """Renders one response's stream: `start`, `text` per delta, then `finish` or `fail`."""

    def __init__(self, response: Response, *, parallel: bool = True, logprobs: bool = False):
        self.response = response
        self.parallel = parallel
        self.logprobs = logprobs
        self.message_id = new_item_id("msg")
        self.sequence_number = 0
        self._open = False
        self._text: list[str] = []

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

    def text(self, delta: str, lps: tuple[TokenLogprob, ...] | None = None) -> Iterator[str]:
        """A piece of the message's text (the message opens with the first piece)."""
        if not self._open:
            yield from self._open_message()
        self._text.append(delta)
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

    def _call(self, index: int, item: dict[str, Any]) -> Iterator[str]:
        at = {"item_id": item["id"], "output_index": index}
        added = {**item, "status": "in_progress", "arguments": ""}
        yield self._frame("response.output_item.added", output_index=index, item=added)
        yield self._frame("response.function_call_arguments.delta", **at, delta=item["arguments"])
        yield self._frame(
            "response.function_call_arguments.done", **at, name=item["name"],
            arguments=item["arguments"],
        )  # fmt: skip
        yield self._frame("response.output_item.done", output_index=index, item=item)

    def finish(self, done: Completion) -> tuple[Response, list[str]]:
        """The final Response (to store) and the closing frames, the terminal event last.

        Text not streamed yet (a reply parsed for calls) is sent whole, as one delta.
        """
        output = output_items(done, self.message_id, parallel=self.parallel, logprobs=self.logprobs)
        frames: list[str] = []
        for index, item in enumerate(output):
            if item["type"] != "message":
                frames += self._call(index, item)
                continue
            if not self._open:
                frames += self._open_message()
                if done.text:
                    frames += self.text(done.text, done.logprobs)
            frames += self._close_message(item, done.logprobs)
        final = self.response.end(done, output)
        last = self.response.end(done, output, cost=True)
        frames.append(self._frame(_TERMINAL[final.status], response=last.body()))
        return final, frames

    def fail(self, exc: Exception) -> tuple[Response, list[str]]:
        """The failed Response and the closing frames after `exc` (mid-stream)."""
        frames: list[str] = []
        output: list[dict[str, Any]] = []
        if self._open:
            item = message_item(self.message_id, "incomplete", [output_text("".join(self._text))])
            frames += self._close_message(item, None)
            output.append(item)
        failed = self.response.fail(exc, output)
        frames.append(self._frame("response.failed", response=failed.body()))
        return failed, frames
