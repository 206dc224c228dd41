"""Cost arithmetic and the busy clock that shares the engine's time among requests."""

from __future__ import annotations

import pytest

from lcfin.telemetry import costs
from lcfin.telemetry.costs import BusyClock, Prices, hardware_cost, token_cost


def test_token_cost_uses_the_price_table() -> None:
    prices = Prices(prompt_per_1m_usd=0.5, completion_per_1m_usd=1.5, hourly_usd=2.0)

    # 1,000 prompt tokens at $0.50/1M + 2,000 completion tokens at $1.50/1M
    assert token_cost(1000, 2000, prices) == pytest.approx(0.0005 + 0.003)
    assert token_cost(1000, 2000, Prices()) == 0.0


def test_hardware_cost_is_gpu_time_at_the_hourly_rate() -> None:
    assert hardware_cost(3600.0, 1.55) == pytest.approx(1.55)
    assert hardware_cost(1.8, 2.0) == pytest.approx(0.001)  # 1.8 s at $2/h


class FakeClock:
    """time.monotonic, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_busy_clock_shares_overlapping_time(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClock()
    monkeypatch.setattr(costs.time, "monotonic", fake)
    clock = BusyClock()

    a, idle_a = clock.start()  # t=100: A alone
    fake.now = 102.0
    b, idle_b = clock.start()  # t=102: A and B share
    fake.now = 106.0
    share_a = clock.stop(a)  # t=106: A ends (2 s alone + 4 s / 2)
    fake.now = 107.0
    share_b = clock.stop(b)  # t=107: B ends (4 s / 2 + 1 s alone)
    fake.now = 200.0  # idle time is nobody's
    c, idle_c = clock.start()
    fake.now = 201.0
    share_c = clock.stop(c)

    assert (idle_a, idle_b, idle_c) == (True, False, True)
    assert share_a == pytest.approx(4.0)
    assert share_b == pytest.approx(3.0)
    assert share_c == pytest.approx(1.0)
    assert clock.busy_seconds == pytest.approx(8.0) == share_a + share_b + share_c
