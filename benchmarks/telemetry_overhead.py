"""What the usage ledger and the Prometheus metrics cost under the batching benchmark's load.

    python benchmarks/telemetry_overhead.py [--shape llama-25m] [--reps 10] [--n 16]

One FinancialLLM on the benchmark model (random weights, built by benchmarks/run.py's `build`),
N concurrent requests x M tokens in-process (run.py's burst), alternately with no record hook and
with the server's hooks (Metrics.observe + UsageLedger.add on a real SQLite file, its writer
thread and uptime heartbeat running, and one /metrics exposition per burst). Same process, same
model, interleaved A/B (the order flips every repetition), so drift hits both sides alike; the
ratio reported is the median of the per-repetition ratios (with / without).

Each burst is measured twice: wall-clock throughput (tokens/s), and CPU throughput (tokens per
second of this process's CPU time, all threads), which other load on a shared machine disturbs
far less. Also times the hooks alone (microseconds per request, the writer thread included), the
noise-free view of the same cost. Prints all three and writes JSON to
benchmarks/results/telemetry_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))  # tests.tiny_models (the tokenizer), via run.py's build


def _build(shape: str) -> Path:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "run.py")
    assert spec is not None
    assert spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    return run.build(shape, ROOT / "models" / shape)  # type: ignore[no-any-return]


def _telemetry(llm: Any, db: Path) -> tuple[list[Any], Any, Any]:
    from lcfin.telemetry.ledger import UsageLedger
    from lcfin.telemetry.metrics import Metrics
    from lcfin.telemetry.service import serving_of

    ledger = UsageLedger(str(db), heartbeat=serving_of(llm))
    ledger.start()
    metrics = Metrics(llm)
    return [metrics.observe, ledger.add], ledger, metrics


def _micro(hooks: list[Any], record: Any, n: int = 20_000) -> float:
    """Microseconds per record for all hooks (ids differ, as in real use)."""
    import dataclasses
    import uuid

    records = [dataclasses.replace(record, id=uuid.uuid4().hex) for _ in range(n)]
    started = time.perf_counter()
    for r in records:
        for hook in hooks:
            hook(r)
    return (time.perf_counter() - started) / n * 1e6


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The interleaved A/B runs and the micro-benchmark."""
    from lcfin import FinancialLLM, Settings

    model_dir = _build(args.shape)
    llm = FinancialLLM(str(model_dir), profile="cpu", settings=Settings(usage_db="off"))
    db = Path(tempfile.mkdtemp(prefix="lcfin-overhead-")) / "usage.db"
    hooks, ledger, metrics = _telemetry(llm, db)
    kw = {"max_tokens": args.max_tokens, "temperature": 0, "ignore_eos": True}
    prompt = "Explain the liquidity coverage ratio, Basel III capital buffers and question {i}"

    async def burst(on: bool) -> tuple[float, float]:
        llm.record_hooks[:] = hooks if on else []
        started, cpu = time.perf_counter(), time.process_time()
        done = await asyncio.gather(
            *(llm.acomplete(prompt.format(i=i), **kw) for i in range(args.n))
        )
        if on:
            metrics.exposition()  # a Prometheus scrape per burst (real ones come every 15 s)
            ledger.flush()  # the writer's work for this burst is counted in this burst
        tokens = sum(c.usage.completion_tokens for c in done)
        return tokens / (time.perf_counter() - started), tokens / (time.process_time() - cpu)

    async def run() -> dict[bool, list[tuple[float, float]]]:
        await burst(False)
        await burst(True)  # warm both paths
        seen: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for rep in range(args.reps):
            for on in (False, True) if rep % 2 == 0 else (True, False):
                seen[on].append(await burst(on))
        return seen

    try:
        seen = asyncio.run(run())
        assert ledger.flush(), "the ledger did not catch up"
        micro = _micro(hooks, llm.recent_requests()[-1])
        assert ledger.flush(timeout=60), "the ledger did not catch up"
        rows = len(ledger.requests())
    finally:
        llm.record_hooks.clear()
        ledger.close()
        llm.close()
    return _summary(args, seen, micro, rows)


def _paired(without: list[float], with_: list[float]) -> tuple[list[float], float]:
    ratios = [b / a for a, b in zip(without, with_, strict=True)]
    return ratios, statistics.median(ratios)


def _summary(
    args: argparse.Namespace,
    seen: dict[bool, list[tuple[float, float]]],
    micro_us: float,
    rows: int,
) -> dict[str, Any]:
    wall = {on: [w for w, _ in runs] for on, runs in seen.items()}
    cpu = {on: [c for _, c in runs] for on, runs in seen.items()}
    off, on = statistics.median(wall[False]), statistics.median(wall[True])
    ratios, ratio = _paired(wall[False], wall[True])
    cpu_ratios, cpu_ratio = _paired(cpu[False], cpu[True])
    per_request_ms = 1000 * args.max_tokens / (off / args.n)  # each request gets off / n tok/s
    return {
        "shape": args.shape,
        "concurrency": args.n,
        "max_tokens": args.max_tokens,
        "repetitions": args.reps,
        "platform": platform.platform(),
        "tok_s_without_hooks": wall[False],
        "tok_s_with_hooks": wall[True],
        "tok_per_cpu_s_without_hooks": cpu[False],
        "tok_per_cpu_s_with_hooks": cpu[True],
        "cpu_paired_ratios": cpu_ratios,
        "cpu_throughput_ratio": cpu_ratio,
        "cpu_overhead_pct": 100 * (1 - cpu_ratio),
        "median_tok_s_without_hooks": off,
        "median_tok_s_with_hooks": on,
        "paired_ratios": ratios,
        "throughput_ratio": ratio,
        "overhead_pct": 100 * (1 - ratio),
        "hooks_us_per_request": micro_us,
        "request_ms_under_load": per_request_ms,
        "hooks_share_of_request_pct": 100 * micro_us / 1000 / per_request_ms,
        "ledger_rows_written": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="llama-25m")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "telemetry_overhead.json")
    args = parser.parse_args()
    result = measure(args)
    print(
        f"{args.n} concurrent x {args.max_tokens} tokens, {args.reps} repetitions ({args.shape}):\n"
        f"  without hooks  median {result['median_tok_s_without_hooks']:.1f} tok/s "
        f"{[round(x, 1) for x in result['tok_s_without_hooks']]}\n"
        f"  with hooks     median {result['median_tok_s_with_hooks']:.1f} tok/s "
        f"{[round(x, 1) for x in result['tok_s_with_hooks']]}\n"
        f"  throughput ratio (median of paired runs) {result['throughput_ratio']:.4f} "
        f"(overhead {result['overhead_pct']:+.2f}%)\n"
        f"  tokens per CPU-second ratio (median of paired runs) "
        f"{result['cpu_throughput_ratio']:.4f} (overhead {result['cpu_overhead_pct']:+.2f}%)\n"
        f"  hooks alone: {result['hooks_us_per_request']:.1f} us per request = "
        f"{result['hooks_share_of_request_pct']:.4f}% of a "
        f"{result['request_ms_under_load']:.0f} ms request under this load; "
        f"ledger rows written: {result['ledger_rows_written']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
