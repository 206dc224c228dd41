"""Per-key rate limits: token buckets, the 429 envelope and OpenAI's x-ratelimit-* headers."""

from __future__ import annotations

import pytest

from lcfin.errors import InvalidParameter
from lcfin.server.ratelimit import Limits, RateLimiter
from tests.server.schemas import assert_valid
from tests.server.support import Serve

KEY1, KEY2 = "sk-lcfin-rl-k1-0b7e", "sk-lcfin-rl-k2-3c9a"


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("60rpm", Limits(60, None)),
        ("60rpm,100000tpm", Limits(60, 100000)),
        (" 5 TPM , 2rpm ", Limits(2, 5)),
    ],
)
def test_parse(text: str, expected: Limits | None) -> None:
    assert Limits.parse(text) == expected


@pytest.mark.parametrize("text", ["60", "60rph", "0rpm", "-1tpm", "rpm"])
def test_parse_refuses_bad_items(text: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        Limits.parse(text)
    assert info.value.param == "LCFIN_RATE_LIMITS"


def test_requests_bucket_refills_over_a_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(Limits(rpm=2), clock)
    headers, refusal = limiter.admit("a")
    assert refusal is None
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "1"  # this one taken
    assert headers["x-ratelimit-reset-requests"] == "30s"
    assert limiter.admit("a")[1] is None
    headers, refusal = limiter.admit("a")
    assert refusal is not None and refusal.http_status == 429
    assert refusal.retry_after == 30  # one request comes back every 30 s
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1m0s"
    assert limiter.admit("b")[1] is None  # callers do not share buckets
    clock.now += 30
    assert limiter.admit("a")[1] is None


def test_tokens_are_charged_after_the_fact() -> None:
    clock = Clock()
    limiter = RateLimiter(Limits(tpm=600), clock)
    assert limiter.admit("a")[1] is None
    limiter.charge("a", 700)  # may overdraw: the actual count is known only at the end
    headers, refusal = limiter.admit("a")
    assert refusal is not None and "tokens" in refusal.message
    assert refusal.retry_after == 11  # 101 tokens at 10 per second
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    clock.now += 11
    assert limiter.admit("a")[1] is None


def test_durations_use_openai_format() -> None:
    from lcfin.server.ratelimit import _duration

    assert [_duration(s) for s in (0, 0.02, 1, 17.2, 360)] == ["0s", "20ms", "1s", "18s", "6m0s"]


@pytest.mark.asyncio
async def test_server_limits_each_key_and_sends_headers(serve: Serve) -> None:
    served = await serve(api_keys=f"{KEY1},{KEY2}", rate_limits="2rpm,100000tpm")

    async def chat(key: str):
        return await served.chat(max_tokens=2, headers={"Authorization": f"Bearer {key}"})

    first = await chat(KEY1)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-limit-tokens"] == "100000"
    assert (await chat(KEY1)).status_code == 200
    refused = await chat(KEY1)
    assert refused.status_code == 429
    assert_valid(refused.json(), "ErrorResponse")
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert KEY1 not in refused.text
    assert (await chat(KEY2)).status_code == 200  # another key has its own budget
    models = await served.client.get("/v1/models", headers={"Authorization": f"Bearer {KEY1}"})
    assert models.status_code == 200  # only generation routes are limited


@pytest.mark.asyncio
async def test_server_charges_generated_tokens(serve: Serve) -> None:
    served = await serve(rate_limits="100tpm")  # no keys: callers are client IPs
    first = await served.chat(max_tokens=8)
    assert first.status_code == 200
    used = first.json()["usage"]["total_tokens"]
    second = await served.chat(max_tokens=8)
    remaining = int(second.headers["x-ratelimit-remaining-tokens"])
    assert remaining <= 100 - used + 2  # charged, give or take a refill
    while second.status_code == 200:
        second = await served.chat(max_tokens=8)
    assert second.status_code == 429
    assert "tokens per minute" in second.json()["error"]["message"]
