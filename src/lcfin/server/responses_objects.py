"""The Responses API's response object and its output items (named as in OpenAI's spec).

Data only: `Response.begin` is the object as a request starts (status `in_progress`, no output),
`Response.end` the same object once the core's `Completion` is in. Output items are plain dicts
in the spec's shapes (`message_item`, `call_item`), built the same way for the stream's events
and the final object, so that both carry the same ids.

How a `Completion` ends a response:

    finish_reason  status       details
    stop           completed
    length         incomplete   incomplete_details.reason = "max_output_tokens"
    abort          failed       error.code = "server_error" (shutdown or model switch)
    (exception)    failed       error.code = "rate_limit_exceeded" or "server_error"
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from lcfin.errors import LcfinError, RateLimited

if TYPE_CHECKING:
    from lcfin.engine.types import Completion, TokenLogprob
    from lcfin.server.responses_request import CreateResponse

__all__ = [
    "Response",
    "ResponseUsage",
    "call_item",
    "call_item_id",
    "delta_logprobs",
    "message_item",
    "new_item_id",
    "output_items",
    "output_text",
]

Status = Literal["completed", "failed", "in_progress", "incomplete"]
ABORTED = (
    "The generation was aborted before it finished (the server is shutting down or switching "
    "models); retry"
)


def new_item_id(prefix: str) -> str:
    """An id for a response ("resp") or an output item ("msg"): 128 random bits, unguessable."""
    return f"{prefix}_{secrets.token_hex(16)}"


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8", "replace"))


def delta_logprobs(lps: tuple[TokenLogprob, ...] | None) -> list[dict[str, Any]]:
    """Logprobs as the text delta/done events carry them (the spec's ResponseLogProb)."""
    return [
        {
            "token": lp.token,
            "logprob": lp.logprob,
            "top_logprobs": [{"token": t, "logprob": v} for t, v in lp.top],
        }
        for lp in lps or ()
    ]


def _content_logprobs(lps: tuple[TokenLogprob, ...] | None) -> list[dict[str, Any]]:
    """Logprobs as output text content carries them (the spec's LogProb, with bytes)."""
    return [
        {
            "token": lp.token,
            "logprob": lp.logprob,
            "bytes": _bytes(lp.token),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": _bytes(t)} for t, v in lp.top],
        }
        for lp in lps or ()
    ]


def output_text(text: str, lps: tuple[TokenLogprob, ...] | None = None) -> dict[str, Any]:
    """An `output_text` content part."""
    return {
        "type": "output_text",
        "text": text,
        "annotations": [],
        "logprobs": _content_logprobs(lps),
    }


def message_item(
    item_id: str, status: Status, content: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """An assistant `message` output item."""
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": content or [],
    }


def call_item_id(call_id: str) -> str:
    """The output item id of the function call `call_id`."""
    return "fc_" + call_id.removeprefix("call_")


def call_item(call: Any, status: Status, arguments: str | None = None) -> dict[str, Any]:
    """A `function_call` output item for a core `ToolCall` (its item id derives from its id)."""
    return {
        "type": "function_call",
        "id": call_item_id(call.id),
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments if arguments is None else arguments,
        "status": status,
    }


def item_status(done: Completion) -> Status:
    """An output item's status: incomplete when the generation did not end by itself."""
    return "completed" if done.finish_reason == "stop" else "incomplete"


def output_items(
    done: Completion, message_id: str, *, parallel: bool = True, logprobs: bool = False
) -> list[dict[str, Any]]:
    """The output of a finished generation: its text as a message (when there is text, or no
    call), then one `function_call` per call (only the first without parallel tool calls)."""
    calls = list(done.tool_calls or ())[: None if parallel else 1]
    items = []
    if done.text or not calls:
        part = output_text(done.text, done.logprobs if logprobs else None)
        items.append(message_item(message_id, item_status(done), [part]))
    return items + [call_item(c, item_status(done)) for c in calls]


class ResponseUsage(BaseModel):
    """Token usage as the Responses API reports it (plus lcfin's cost in a stream's last event)."""

    input_tokens: int
    input_tokens_details: dict[str, int] = {"cached_tokens": 0, "cache_write_tokens": 0}
    output_tokens: int
    output_tokens_details: dict[str, int] = {"reasoning_tokens": 0}
    total_tokens: int
    cost_usd: float | None = Field(
        None,
        description=(
            "lcfin extension, in a stream's last event only: what the request cost in USD "
            "(non-streaming responses carry it in the x-lcfin-cost-usd header)."
        ),
    )

    @classmethod
    def of(cls, done: Completion, cost: bool = False) -> ResponseUsage:
        """The usage of a finished generation (with its cost when `cost`)."""
        u = done.usage
        return cls(
            input_tokens=u.prompt_tokens,
            output_tokens=u.completion_tokens,
            total_tokens=u.total_tokens,
            cost_usd=(done.cost_usd or 0.0) if cost else None,
        )


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    keys = ("type", "name", "description", "parameters", "strict")
    echoed = {k: tool.get(k) for k in keys}
    return {k: v for k, v in echoed.items() if v is not None or k in ("parameters", "strict")}


class Response(BaseModel):
    """The response object (POST /v1/responses, GET /v1/responses/{id}, stream events)."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]
    completed_at: int | None = None
    error: dict[str, str] | None = None
    incomplete_details: dict[str, str] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[dict[str, Any]] = []
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: None = None
    store: bool = False
    temperature: float | None = None
    text: dict[str, Any] = {"format": {"type": "text"}}
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = []
    top_p: float | None = None
    top_logprobs: int | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = {}
    background: bool = False
    service_tier: str = "default"

    @classmethod
    def begin(cls, rid: str, model: str, req: CreateResponse, store: bool) -> Response:
        """The object as the request starts: the request's settings echoed, no output yet."""
        text = req.text.model_dump(by_alias=True, exclude_none=True) if req.text else {}
        if text.get("format", {}).get("type") == "json_schema":
            text["format"].setdefault("name", "output")  # as the core names it
        return cls(
            id=rid,
            created_at=int(time.time()),
            status="in_progress",
            instructions=req.instructions,
            max_output_tokens=req.max_output_tokens,
            model=model,
            parallel_tool_calls=req.parallel,
            previous_response_id=req.previous_response_id,
            store=store,
            temperature=req.temperature,
            text={"format": {"type": "text"}, **text},
            tool_choice=req.tool_choice or "auto",
            tools=[_echo_tool(t) for t in req.tools or []],
            top_p=req.top_p,
            top_logprobs=req.top_logprobs,
            truncation=req.truncation or "disabled",
            user=req.user,
            metadata=req.metadata or {},
        )

    def end(
        self, done: Completion, output: list[dict[str, Any]], *, cost: bool = False
    ) -> Response:
        """This response finished by `done`, with `output` (see the module's table)."""
        update: dict[str, Any] = {"output": output, "usage": ResponseUsage.of(done, cost)}
        if done.finish_reason == "stop":
            update.update(status="completed", completed_at=int(time.time()))
        elif done.finish_reason == "length":
            update.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
        else:
            update.update(status="failed", error={"code": "server_error", "message": ABORTED})
        return self.model_copy(update=update)

    def fail(self, exc: Exception, output: list[dict[str, Any]]) -> Response:
        """This response failed with `exc` (after its stream started)."""
        code = "rate_limit_exceeded" if isinstance(exc, RateLimited) else "server_error"
        known = isinstance(exc, LcfinError) and type(exc) is not LcfinError
        message = str(exc) if known else "The server had an error while generating the response"
        return self.model_copy(
            update={
                "status": "failed",
                "output": output,
                "error": {"code": code, "message": message},
            }
        )

    def body(self) -> dict[str, Any]:
        """The JSON body: unset usage and user (not nullable in the spec) and lcfin's cost
        (outside a stream's end) are left out."""
        data = self.model_dump()
        if data["user"] is None:
            del data["user"]
        if data["usage"] is None:
            del data["usage"]
        elif data["usage"]["cost_usd"] is None:
            del data["usage"]["cost_usd"]
        return data
