"""Several generations run as one request (a list of prompts, n choices): admitted, run and
stopped as a unit (see #16).

`FinancialLLM.abatch` leases places for all of them at once (or refuses with one 429), renders
every prompt off the event loop, and yields a `Batch` whose `admission` tells the caller what the
request may use before anything starts (rate limits reserve it). `Batch.events()` interleaves
their streams; when one fails, the siblings still running are cancelled and recorded as
`cancelled` with no cost, and the failure is raised once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lcfin.engine.types import Admission, Completion, Delta, GenerationRequest
from lcfin.errors import InvalidParameter

if TYPE_CHECKING:
    from lcfin.engine.manager import LoadedModel

__all__ = ["Batch", "Job", "batch_request_ids", "check_size"]

Event = Delta | Completion


@dataclass(frozen=True)
class Job:
    """One generation of a batch, ready for the backend."""

    request: GenerationRequest
    parse_tools: bool = False  # parse tool calls out of the reply (in `tool_format`)
    tool_format: str | None = None
    dropped_messages: int = 0

    def token_budget(self, max_model_len: int) -> int:
        """Prompt tokens plus the most completion tokens this generation may produce."""
        prompt = len(self.request.prompt_token_ids)
        wanted = self.request.params.max_tokens
        room = max_model_len - prompt
        return prompt + (min(wanted, room) if wanted is not None else room)


def batch_request_ids(base: str, prompts: int, n: int) -> list[str]:
    """`base` for a lone generation; `base-i` for n choices; `base-p-i` for a list of prompts."""
    if prompts == 1 and n == 1:
        return [base]
    if prompts == 1:
        return [f"{base}-{i}" for i in range(n)]
    return [f"{base}-{p}-{i}" for p in range(prompts) for i in range(n)]


def check_size(n: int, count: int, capacity: int, raw: bool) -> None:
    """Refuse n below 1, or `count` generations when the server runs at most `capacity`.

    Raises:
        InvalidParameter: naming `n`, or `prompt` for a list of raw prompts.
    """
    if not isinstance(n, int) or n < 1:
        raise InvalidParameter(f"n must be an integer >= 1, got {n!r}", param="n")
    if count > capacity:
        raise InvalidParameter(
            f"This request needs {count} generations; the server runs at most {capacity} at once",
            param="prompt" if raw else "n",
            hint="send fewer prompts or choices per request",
        )


#: Runs one job on the leased model: FinancialLLM._events(loaded, job, endpoint, cancelled).
Runner = Callable[["LoadedModel", Job, str, asyncio.Event], AsyncIterator[Event]]


class Batch:
    """The generations of one request, admitted together (see `FinancialLLM.abatch`)."""

    def __init__(
        self, loaded: LoadedModel, jobs: list[Job], prompts: int, endpoint: str, runner: Runner
    ) -> None:
        self.jobs = jobs
        self.admission = Admission(
            prompts,
            {j.request.request_id: j.token_budget(loaded.backend.max_model_len) for j in jobs},
        )
        self._loaded = loaded
        self._endpoint = endpoint
        self._runner = runner
        #: Set when one generation failed: the others stop, recorded as cancelled.
        self.failed = asyncio.Event()

    async def events(self) -> AsyncGenerator[tuple[int, Event], None]:
        """Every generation's events as they come, tagged with the job's index.

        Raises:
            LcfinError: the first failure of any generation (the others are cancelled).
        """
        streams = [self._runner(self._loaded, j, self._endpoint, self.failed) for j in self.jobs]
        if len(streams) == 1:
            async for event in streams[0]:
                yield 0, event
            return
        queue: asyncio.Queue[tuple[int, Event | BaseException | None]] = asyncio.Queue()

        async def pump(index: int, stream: AsyncIterator[Event]) -> None:
            try:
                async for event in stream:
                    await queue.put((index, event))
                await queue.put((index, None))
            except BaseException as exc:  # hand every failure to the consumer
                await queue.put((index, exc))

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
        try:
            running = len(tasks)
            while running:
                index, item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    self.failed.set()
                    raise item
                else:
                    yield index, item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
