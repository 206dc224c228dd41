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
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpucheck_common import (  # the line above makes scripts/ importable
    INFO,
    SKIP,
    Row,
    build_tiny_model,
    check,
    exit_code,
    is_compact_json,
    render_table,
    say,
    summary,
    within,
    write_json,
)

__all__ = ["build_tiny_model", "write_catalog"]  # tests/gpu/ uses these two

GIB = 2**30
REAL_MODELS = ("qwen3-8b", "llama3.1-8b", "gemma3-12b")
EMULATED_PROFILES = ("hf-l40", "scw-l40s")
KV_TOLERANCE = 0.10  # the planner estimates activations and overhead; vLLM measures them
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
EXTRA_CONFIG: dict[str, dict[str, Any]] = {
    "qwen3-8b": {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "attention_bias": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "llama3.1-8b": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "bos_token_id": 128000,
        "eos_token_id": 128009,
    },
    "gemma3-12b": {
        "model_type": "gemma3_text",
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "sliding_window_pattern": 6,
        "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-6,
        "hidden_activation": "gelu_pytorch_tanh",
    },
}
#: The SigLIP tower of Gemma 3 4B-27B checkpoints (Gemma3ForConditionalGeneration).
GEMMA3_VISION = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 896,
    "patch_size": 14,
    "vision_use_head": False,
}


# -- pure parts (no GPU, no vLLM; tested in tests/scripts/test_gpu_check.py) ------------------


def hf_config(
    name: str, shrink: dict[str, Any] | None = None, *, text_only: bool = False
) -> dict[str, Any]:
    """The config.json of catalog model `name`, from the catalog's architecture and EXTRA_CONFIG.

    Gemma 3 is written as its checkpoint ships (multimodal, the text model in `text_config`),
    which lcfin serves text only (`language_model_only`); `text_only` writes the text model
    alone (Gemma3ForCausalLM). `shrink` replaces dimensions, so that the same code path runs
    small (the CPU smoke test).
    """
    from lcfin import get_model

    arch = get_model(name).arch
    assert arch is not None, f"{name} has no architecture in the catalog"
    text: dict[str, Any] = {
        "hidden_size": arch.hidden_size,
        "intermediate_size": arch.intermediate_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_attention_heads,
        "num_key_value_heads": arch.num_kv_heads,
        "head_dim": arch.head_dim,
        "vocab_size": arch.vocab_size,
        "max_position_embeddings": arch.max_position_embeddings,
        "tie_word_embeddings": arch.tie_word_embeddings,
        "torch_dtype": "bfloat16",
        **EXTRA_CONFIG[name],
        **(shrink or {}),
    }
    if arch.sliding_window:
        text["sliding_window"] = arch.sliding_window
    if name != "gemma3-12b":
        return text
    if text_only:
        return {"architectures": ["Gemma3ForCausalLM"], **text}
    return {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": text,
        "vision_config": dict(GEMMA3_VISION),
        "mm_tokens_per_image": 256,
        "boi_token_index": 255999,
        "eoi_token_index": 256000,
        "image_token_index": 262144,
        "bos_token_id": 2,
        "eos_token_id": [1, 106],
        "pad_token_id": 0,
        "tie_word_embeddings": arch.tie_word_embeddings,
        "torch_dtype": "bfloat16",
    }


def emulated_utilization(profile: Any, total_bytes: int) -> float | None:
    """The `gpu_memory_utilization` that gives a GPU of `total_bytes` the profile's budget.

    vLLM's budget is ceil(total x utilization) (VLLM-NOTES.md section 5), with `profile`'s
    gpu_total_gib and gpu_memory_utilization. None when the budget does not fit: more than 95%
    of this GPU (each engine needs a CUDA context beside it).
    """
    budget = math.ceil(profile.gpu_total_gib * GIB * profile.gpu_memory_utilization)
    if budget > 0.95 * total_bytes:
        return None
    return budget / total_bytes


def kv_rows(case: str, plan: dict[str, Any], measured: dict[str, Any]) -> list[Row]:
    """Rows comparing the planner's `plan` (MemoryPlan.to_dict()) with what vLLM reported."""
    section = f"planner {case}"
    if measured.get("skipped"):
        return [Row(section, "KV cache", "-", str(measured["skipped"]), SKIP)]
    if not measured.get("started"):
        error = str(measured.get("error", "did not start"))[-120:]
        agree = not plan["fits"]
        expected = "fits" if plan["fits"] else "does not fit"
        return [check(section, "vLLM starts as planned", agree, expected, f"failed: {error}")]
    if not plan["fits"]:
        return [check(section, "vLLM starts as planned", False, "does not fit", "started")]
    rows = []
    for key, label in (("kv_tokens", "KV tokens"), ("max_concurrency", "max concurrency")):
        got = measured.get(key)
        want = plan["kv_cache_tokens" if key == "kv_tokens" else "max_concurrency"]
        if got is None:
            rows.append(Row(section, label, f"{want:,}", "not reported", INFO))
            continue
        ok = within(float(got), float(want), KV_TOLERANCE)
        ratio = float(got) / float(want) if want else float("inf")
        text = (
            f"{got:,.2f} ({ratio:.2f}x planned)"
            if key != "kv_tokens"
            else f"{got:,} ({ratio:.2f}x)"
        )
        rows.append(check(section, label, ok, f"{want:,} ±{KV_TOLERANCE:.0%}", text))
    return rows


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
    from lcfin.engine.vllm import nvml_used_bytes

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
    from lcfin.engine.vllm import nvml_used_bytes

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


# -- the planner against vLLM's KV cache, one process per case ------------------------------------

KV_MARK = "GPU-CHECK-KV "
#: Dimensions for `--tiny-cpu`: the real configs' code path, small enough for vLLM's CPU build.
TINY_SHRINK: dict[str, dict[str, Any]] = {
    name: {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 6,
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
           "vocab_size": 1024, "max_position_embeddings": 4096}
    for name in REAL_MODELS
}  # fmt: skip
TINY_SHRINK["gemma3-12b"]["sliding_window"] = 64


def kv_engine_kwargs(
    model: str, profile_name: str, work: Path, total_bytes: int | None
) -> dict[str, Any] | str:
    """lcfin's engine arguments for `model` on the profile's budget with dummy weights.

    Writes the model's config.json under `work`. `total_bytes` is this GPU's total memory, or
    None for the CPU smoke test (shrunk config, vLLM's CPU build). Returns a skip reason (str)
    when this GPU is too small for the budget.
    """
    from lcfin import Settings, get_model, load_profile
    from lcfin.engine.vllm_args import engine_args

    tiny = total_bytes is None
    model_dir = work / model
    model_dir.mkdir(parents=True, exist_ok=True)
    # vLLM's CPU build cannot inspect Gemma3ForConditionalGeneration without torchvision, which
    # must be uninstalled there (VLLM-NOTES.md section 9): the CPU smoke runs the text model.
    config = hf_config(model, TINY_SHRINK[model] if tiny else None, text_only=tiny)
    (model_dir / "config.json").write_text(json.dumps(config))
    prof = load_profile(profile_name)
    options: dict[str, Any] = {"load_format": "dummy", "skip_tokenizer_init": True}
    options["enable_sleep_mode"] = False  # as the planner assumes: no cumem pool
    if total_bytes is None:
        options.update(max_model_len=512, enforce_eager=True, dtype="float32")
    else:
        util = emulated_utilization(prof, total_bytes)
        if util is None:
            return f"this GPU ({total_bytes / GIB:.1f} GiB) is smaller than the budget"
        options["gpu_memory_utilization"] = util
    settings = Settings(hf_home=work / "hf")
    return engine_args(prof, get_model(model), settings, model_dir=model_dir, **options)


def kv_case(model: str, profile_name: str, tiny_cpu: bool) -> dict[str, Any]:
    """Start vLLM on `model`'s real config (dummy weights) with the profile's budget; report.

    Runs in its own process (see `run_kv_case`): CUDA is initialised here to read the GPU's total.
    """
    total = None
    if not tiny_cpu:
        import torch

        total = int(torch.cuda.mem_get_info()[1])  # cudaMemGetInfo: what vLLM multiplies
    kwargs = kv_engine_kwargs(
        model, profile_name, Path(tempfile.mkdtemp(prefix="lcfin-kv-")), total
    )
    if isinstance(kwargs, str):
        return {"skipped": kwargs}
    util = kwargs["gpu_memory_utilization"] if total else None
    from vllm import LLM

    try:
        llm = LLM(**kwargs)
    except Exception as exc:  # e.g. "No available memory for the cache blocks"
        return {"started": False, "error": f"{type(exc).__name__}: {exc}", "utilization": util}
    cache = llm.llm_engine.vllm_config.cache_config
    blocks, block = cache.num_gpu_blocks, cache.block_size
    tokens = getattr(cache, "kv_cache_size_tokens", None) or (blocks or 0) * block
    return {
        "started": True,
        "kv_tokens": int(tokens),
        "max_concurrency": getattr(cache, "kv_cache_max_concurrency", None),
        "num_blocks": blocks,
        "block_size": block,
        "utilization": util,
        "language_model_only": kwargs.get("language_model_only", False),
    }


def run_kv_case(model: str, profile: str, work: Path, tiny_cpu: bool) -> dict[str, Any]:
    """`kv_case` in a fresh Python process (its GPU memory goes with it); its result dict."""
    cmd = [sys.executable, __file__, "--kv-case", f"{model}:{profile}"]
    cmd += ["--tiny-cpu"] if tiny_cpu else []
    env = {**os.environ, "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
    if tiny_cpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    log = work / f"kv-{model}-{profile}.log"
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    except subprocess.TimeoutExpired:
        return {"started": False, "error": "timed out after 20 minutes"}
    log.write_text(done.stdout + done.stderr)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(KV_MARK):
            result: dict[str, Any] = json.loads(line[len(KV_MARK) :])
            return result
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"started": False, "error": f"exit {done.returncode}: {' | '.join(tail)}"}


def kv_checks(work: Path, tiny_cpu: bool = False) -> list[Row]:
    """The planner against vLLM for every real model on every emulated profile."""
    from lcfin import plan_memory

    rows = []
    for model in REAL_MODELS:
        for profile in EMULATED_PROFILES:
            say(f"KV cache: {model} on the {profile} budget (vLLM, dummy weights)")
            measured = run_kv_case(model, profile, work, tiny_cpu)
            plan = plan_memory(model, profile).to_dict()
            if tiny_cpu:  # the CPU budget is VLLM_CPU_KVCACHE_SPACE: only the path is checked
                ok = bool(measured.get("started"))
                rows.append(
                    check(f"tiny {model}", "vLLM starts (CPU)", ok, "started", str(measured)[:80])
                )
                continue
            rows += kv_rows(f"{model} @ {profile}", plan, measured)
    return rows


# -- the command ---------------------------------------------------------------------------------


def dry_run(total_gib: float) -> list[Row]:
    """What a run would check, with the planner's figures and the scaled utilisations."""
    from lcfin import load_profile, plan_memory

    rows = [Row("engine", n, "see the module docstring", "not run", SKIP) for n in (
        "generation", "structured", "switching", "sleep/wake")]  # fmt: skip
    for model in REAL_MODELS:
        for name in EMULATED_PROFILES:
            prof, plan = load_profile(name), plan_memory(model, name)
            util = emulated_utilization(prof, int(total_gib * GIB))
            scaled = "GPU too small" if util is None else f"gpu_memory_utilization {util:.4f}"
            planned = f"{plan.kv_cache_tokens:,} tokens, {plan.max_concurrency:.2f}x"
            planned = planned if plan.fits else "does not fit"
            rows.append(Row(f"planner {model} @ {name}", "KV cache", planned, scaled, SKIP))
    return rows


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
    from lcfin.engine.backend import vllm_available
    from lcfin.engine.profiles import detect_gpus

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
    parser.add_argument("--kv-case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.kv_case:
        model, _, profile = args.kv_case.partition(":")
        print(KV_MARK + json.dumps(kv_case(model, profile, args.tiny_cpu)), flush=True)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
