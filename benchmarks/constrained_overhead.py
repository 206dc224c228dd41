"""What constrained decoding (a JSON schema) costs under the batching benchmark's load.

    python benchmarks/constrained_overhead.py [--shape llama-25m] [--reps 6] [--n 16]

One FinancialLLM on the benchmark model (random weights, built by benchmarks/run.py's `build`),
N concurrent requests x M tokens in-process, alternately free and with a JSON schema
(`response_format`, so each row is masked by its own xgrammar matcher). The schema is an array
of bounded integers with `minItems` large enough that every request runs to max_tokens, so both
sides generate the same number of tokens. Interleaved A/B (the order flips every repetition);
the ratio reported is the median of the per-repetition ratios (constrained / free). Prints the
figures and writes JSON to benchmarks/results/constrained_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))  # tests.tiny_models (the tokenizer), via run.py's build

SCHEMA = {
    "type": "object",
    "properties": {
        "exposures": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 9999},
            "minItems": 500,
        }
    },
    "required": ["exposures"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "exposures", "schema": SCHEMA}}


def _build(shape: str) -> Path:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "run.py")
    assert spec is not None
    assert spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    return run.build(shape, ROOT / "models" / shape)  # type: ignore[no-any-return]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The interleaved A/B runs."""
    from lcfin import FinancialLLM, Settings

    model_dir = _build(args.shape)
    llm = FinancialLLM(str(model_dir), profile="cpu", settings=Settings(usage_db="off"))
    base = {"max_tokens": args.max_tokens, "temperature": 0, "ignore_eos": True}
    prompt = "List the exposures of counterparty {i} in thousands of euros"

    async def burst(constrained: bool) -> float:
        kw = {**base, "response_format": FORMAT} if constrained else base
        started = time.perf_counter()
        done = await asyncio.gather(*(llm.achat(prompt.format(i=i), **kw) for i in range(args.n)))
        tokens = sum(c.usage.completion_tokens for c in done)
        assert tokens == args.n * args.max_tokens, "every request runs to max_tokens"
        return tokens / (time.perf_counter() - started)

    async def run() -> dict[bool, list[float]]:
        await burst(False)
        await burst(True)  # warm both paths (and compile the grammar once)
        seen: dict[bool, list[float]] = {False: [], True: []}
        for rep in range(args.reps):
            for constrained in (False, True) if rep % 2 == 0 else (True, False):
                seen[constrained].append(await burst(constrained))
        return seen

    try:
        seen = asyncio.run(run())
    finally:
        llm.close()
    ratios = [b / a for a, b in zip(seen[False], seen[True], strict=True)]
    ratio = statistics.median(ratios)
    return {
        "shape": args.shape,
        "concurrency": args.n,
        "max_tokens": args.max_tokens,
        "repetitions": args.reps,
        "platform": platform.platform(),
        "tok_s_free": seen[False],
        "tok_s_constrained": seen[True],
        "median_tok_s_free": statistics.median(seen[False]),
        "median_tok_s_constrained": statistics.median(seen[True]),
        "paired_ratios": ratios,
        "throughput_ratio": ratio,
        "overhead_pct": 100 * (1 - ratio),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="llama-25m")
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "constrained_overhead.json")
    args = parser.parse_args()
    result = measure(args)
    print(
        f"{args.n} concurrent x {args.max_tokens} tokens, {args.reps} repetitions ({args.shape}):\n"
        f"  free         median {result['median_tok_s_free']:.1f} tok/s "
        f"{[round(x, 1) for x in result['tok_s_free']]}\n"
        f"  JSON schema  median {result['median_tok_s_constrained']:.1f} tok/s "
        f"{[round(x, 1) for x in result['tok_s_constrained']]}\n"
        f"  throughput ratio (median of paired runs) {result['throughput_ratio']:.4f} "
        f"(overhead {result['overhead_pct']:+.2f}%)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
