"""A load generator for any OpenAI-compatible server (behind `lcfin bench`): a client only.

It sends `requests` chat completions, `concurrency` at a time, and measures per request the
time to first token, the gaps between streamed chunks (inter-token latency), the end-to-end
latency and the output tokens (from the usage the server reports, else one per chunk). The
whole run is bounded by `timeout_s`. A chunk that repeats the request's prompt before any other
text (`transformers serve` streams the prompt back first with some models) is not a generated
token: it is counted in `prompt_echoes` and left out of the time to first token.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from lcfin.errors import BackendUnavailable, Unauthorized

__all__ = [
    "BenchConfig",
    "BenchReport",
    "RequestResult",
    "bench_messages",
    "percentile",
    "run_bench",
]

_WORDS = [
    "capital",
    "liquidity",
    "ratio",
    "bank",
    "risk",
    "asset",
    "market",
    "credit",
    "equity",
    "bond",
    "yield",
    "rate",
    "fund",
    "loan",
    "insurer",
    "reserve",
    "exposure",
    "hedge",
    "swap",
    "index",
]


@dataclass(frozen=True)
class BenchConfig:
    """What to send, how much, and how fast."""

    url: str
    model: str | None = None
    requests: int = 32
    concurrency: int = 16
    prompt_tokens: int = 32
    max_tokens: int = 64
    stream: bool = True
    ignore_eos: bool = False
    warmup: int = 0
    timeout_s: float = 600.0
    api_key: str | None = None


@dataclass
class RequestResult:
    """One request's measurements (times in seconds)."""

    ok: bool
    latency_s: float = 0.0
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    error: str | None = None
    #: Whether the server streamed the prompt back before generating (see the module docstring).
    echoed_prompt: bool = False


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class BenchReport:
    """Aggregates of a run."""

    config: dict[str, Any]
    wall_s: float
    completed: int
    errors: int
    requests_per_s: float
    output_tokens: int
    output_tokens_per_s: float
    ttft_s: dict[str, float | None]
    itl_s: dict[str, float | None]
    latency_s: dict[str, float | None]
    error_samples: list[str]
    #: Requests whose stream began with the prompt itself (not counted as a first token).
    prompt_echoes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return asdict(self)


def _summary(values: list[float]) -> dict[str, float | None]:
    return {
        "mean": statistics.fmean(values) if values else None,
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
    }


def bench_messages(prompt_tokens: int, index: int) -> list[dict[str, str]]:
    """The chat messages of request `index`: one user turn of `prompt_tokens` - 5 words.

    With a chat template's few tokens that makes about `prompt_tokens` tokens at one token
    per word; subword tokenizers make more (the benchmark's tiny tokenizer about 3 per word).

    Benchmarks that compare against a raw `model.generate` build its prompts from these, so that
    every contender works on the same tokens.
    """
    words = [_WORDS[(index + i) % len(_WORDS)] for i in range(max(prompt_tokens - 8, 1))]
    return [{"role": "user", "content": f"Request {index}. Explain: " + " ".join(words)}]


def _payload(cfg: BenchConfig, model: str, index: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": bench_messages(cfg.prompt_tokens, index),
        "max_tokens": cfg.max_tokens,
        "temperature": 0,
        "stream": cfg.stream,
    }
    if cfg.stream:
        body["stream_options"] = {"include_usage": True}
    if cfg.ignore_eos:
        body["ignore_eos"] = True
    return body


async def _one(client: Any, cfg: BenchConfig, model: str, index: int) -> RequestResult:
    started = time.perf_counter()
    try:
        if not cfg.stream:
            resp = await client.post("/v1/chat/completions", json=_payload(cfg, model, index))
            if resp.status_code != 200:
                return RequestResult(False, error=f"HTTP {resp.status_code}: {resp.text[:200]}")
            usage = resp.json().get("usage") or {}
            latency = time.perf_counter() - started
            tokens = int(usage.get("completion_tokens", 0))
            return RequestResult(True, latency, latency, [], tokens)
        return await _streamed(client, cfg, model, index, started)
    except Exception as exc:  # a failed request is a data point, not a crash
        return RequestResult(False, error=f"{type(exc).__name__}: {exc}"[:300])


async def _streamed(
    client: Any, cfg: BenchConfig, model: str, index: int, started: float
) -> RequestResult:
    result = RequestResult(True)
    chunks, last = 0, started
    body = _payload(cfg, model, index)
    prompt = body["messages"][-1]["content"]
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            text = (await resp.aread()).decode(errors="replace")
            return RequestResult(False, error=f"HTTP {resp.status_code}: {text[:200]}")
        async for line in resp.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if "error" in chunk:
                return RequestResult(False, error=str(chunk["error"])[:300])
            if chunk.get("usage"):
                result.output_tokens = int(chunk["usage"].get("completion_tokens", 0))
            for choice in chunk.get("choices", []):
                text = (choice.get("delta") or {}).get("content")
                if text and result.ttft_s is None and prompt in text:
                    result.echoed_prompt = True
                    continue
                if text:
                    now = time.perf_counter()
                    if result.ttft_s is None:
                        result.ttft_s = now - started
                    else:
                        result.itl_s.append(now - last)
                    last, chunks = now, chunks + 1
    result.output_tokens = result.output_tokens or chunks
    result.latency_s = time.perf_counter() - started
    return result


async def _resolve_model(client: Any, cfg: BenchConfig) -> str:
    """The model to ask for; first checks that the server answers (an error, not N failures).

    Raises:
        BackendUnavailable: the server cannot be reached, fails, or lists no model.
        Unauthorized: it refused the API key.
    """
    import httpx

    where = cfg.url.rstrip("/")
    try:
        resp = await client.get("/v1/models")
    except httpx.HTTPError as exc:
        raise BackendUnavailable(
            f"Could not reach {where}: {type(exc).__name__}",
            hint="check the URL and that the server is running (`lcfin serve`)",
        ) from None
    if resp.status_code in (401, 403):
        raise Unauthorized(
            f"{where} refused the request (HTTP {resp.status_code})",
            hint="pass --api-key (or LCFIN_API_KEY)",
        )
    try:
        models = resp.json().get("data", []) if resp.status_code == 200 else []
    except (ValueError, AttributeError):  # not an OpenAI-compatible /v1/models
        models = []
    loaded = [m for m in models if m.get("loaded")] or models
    if cfg.model:
        return cfg.model
    if not loaded:
        raise BackendUnavailable(
            f"{where} lists no model (GET /v1/models: HTTP {resp.status_code})", hint="pass --model"
        )
    return str(loaded[0]["id"])


async def _drive(client: Any, cfg: BenchConfig, model: str) -> list[RequestResult]:
    gate = asyncio.Semaphore(cfg.concurrency)

    async def guarded(i: int) -> RequestResult:
        async with gate:
            return await _one(client, cfg, model, i)

    return list(await asyncio.gather(*(guarded(i) for i in range(cfg.requests))))


async def run_bench(cfg: BenchConfig) -> BenchReport:
    """Run the load described by `cfg` and aggregate it (the warm-up is not counted)."""
    import httpx

    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    base = cfg.url.rstrip("/").removesuffix("/v1")
    limits = httpx.Limits(max_connections=cfg.concurrency + 4)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=cfg.timeout_s, limits=limits
    ) as client:
        model = await _resolve_model(client, cfg)
        if cfg.warmup:
            warm = BenchConfig(**{**asdict(cfg), "requests": cfg.warmup})
            await asyncio.wait_for(_drive(client, warm, model), cfg.timeout_s)
        started = time.perf_counter()
        try:
            results = await asyncio.wait_for(_drive(client, cfg, model), cfg.timeout_s)
        except asyncio.TimeoutError:
            results = [RequestResult(False, error=f"run exceeded {cfg.timeout_s}s")]
        wall = time.perf_counter() - started
    return _report(cfg, results, wall)


def _report(cfg: BenchConfig, results: list[RequestResult], wall: float) -> BenchReport:
    ok = [r for r in results if r.ok]
    tokens = sum(r.output_tokens for r in ok)
    return BenchReport(
        config={k: v for k, v in asdict(cfg).items() if k != "api_key"},
        wall_s=wall,
        completed=len(ok),
        errors=len(results) - len(ok),
        requests_per_s=len(ok) / wall if wall else 0.0,
        output_tokens=tokens,
        output_tokens_per_s=tokens / wall if wall else 0.0,
        ttft_s=_summary([r.ttft_s for r in ok if r.ttft_s is not None]),
        itl_s=_summary([gap for r in ok for gap in r.itl_s]),
        latency_s=_summary([r.latency_s for r in ok]),
        error_samples=sorted({r.error or "" for r in results if not r.ok})[:5],
        prompt_echoes=sum(r.echoed_prompt for r in ok),
    )
