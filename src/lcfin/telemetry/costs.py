"""Cost arithmetic: the model's token prices plus the hardware's hourly cost.

A request costs

    prompt_tokens x price_per_1m_prompt / 1e6 + completion_tokens x price_per_1m_completion / 1e6
    + gpu_seconds x hourly_cost_usd / 3600

where `gpu_seconds` is the request's share of the engine's busy time (`BusyClock`): while k
requests are in flight, each is charged 1/k of the elapsed time. The token part applies only to
models whose catalog entry sets prices; the hardware part always applies, so a self-hosted model
never shows $0 because no price was set.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

__all__ = ["BusyClock", "Prices", "hardware_cost", "token_cost"]


@dataclass(frozen=True)
class Prices:
    """What serving costs: per 1M prompt / completion tokens (None: unpriced) and per hour."""

    prompt_per_1m_usd: float | None = None
    completion_per_1m_usd: float | None = None
    hourly_usd: float = 0.0


def token_cost(prompt_tokens: int, completion_tokens: int, prices: Prices) -> float:
    """The price-table part of a request's cost (0 for an unpriced model)."""
    prompt = prompt_tokens * (prices.prompt_per_1m_usd or 0.0)
    completion = completion_tokens * (prices.completion_per_1m_usd or 0.0)
    return (prompt + completion) / 1e6


def hardware_cost(gpu_seconds: float, hourly_usd: float) -> float:
    """The hardware part: `gpu_seconds` at `hourly_usd` per hour."""
    return gpu_seconds * hourly_usd / 3600.0


class BusyClock:
    """The engine's busy time, shared fairly among the requests in flight.

    `share` integrates dt / k over time, k being the requests in flight; a request's share of
    the busy time is the difference between its `stop()` and `start()` readings, so the shares
    of all requests add up to the busy time. O(1) and thread-safe (requests may come from
    several event loops).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._last = time.monotonic()
        self._share = 0.0
        self.busy_seconds = 0.0

    def _advance(self, now: float) -> None:
        if self._active:
            elapsed = now - self._last
            self._share += elapsed / self._active
            self.busy_seconds += elapsed
        self._last = now

    def start(self) -> tuple[float, bool]:
        """A request begins: its start mark, and whether the engine was idle until now."""
        with self._lock:
            self._advance(time.monotonic())
            idle = self._active == 0
            self._active += 1
            return self._share, idle

    def stop(self, mark: float) -> float:
        """A request ends: its share of the busy time since `mark`, in seconds."""
        with self._lock:
            self._advance(time.monotonic())
            self._active -= 1
            return self._share - mark
