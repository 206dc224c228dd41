#!/usr/bin/env python
"""The planner against vLLM's own KV cache, for scripts/gpu_check.py (one process per case).

Usage (gpu_check.py runs it; by hand it prints one JSON line)::

    python scripts/gpucheck_kv.py qwen3-8b:scw-l40s [--tiny-cpu]

Each case builds the catalog model's real config.json (Qwen3 8B, Llama 3.1 8B, Gemma 3 12B as
its checkpoint ships, which lcfin serves text only) and starts vLLM on it with lcfin's engine
arguments and `load_format="dummy"` (no download), on the profile's budget: on a larger GPU,
`gpu_memory_utilization` is scaled so that the budget is the same GiB. CUDA is initialised in
the case's own process only (to read the GPU's total), and its memory goes with the process.
`--tiny-cpu` runs the same path with shrunk dimensions on vLLM's CPU build.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpucheck_common import INFO, SKIP, Row, check, say, within  # scripts/ is importable now

GIB = 2**30
REAL_MODELS = ("qwen3-8b", "llama3.1-8b", "gemma3-12b")
EMULATED_PROFILES = ("hf-l40", "scw-l40s")
KV_TOLERANCE = 0.10  # the planner estimates activations and overhead; vLLM measures them
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


# -- pure parts (no GPU, no vLLM; tested in tests/scripts/test_gpucheck_kv.py) ---------------


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


# -- one case in its own process ------------------------------------

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
    from lcfin.engine.vllm.args import engine_args

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
    return engine_args(get_model(model), prof, settings, model_dir=model_dir, **options)


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
    cmd = [sys.executable, __file__, f"{model}:{profile}"]
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
                    check(
                        f"tiny {model} @ {profile}",
                        "vLLM starts (CPU)",
                        ok,
                        "started",
                        str(measured)[:80],
                    )
                )
                continue
            rows += kv_rows(f"{model} @ {profile}", plan, measured)
    return rows


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


def main(argv: list[str] | None = None) -> int:
    """Run one case (MODEL:PROFILE) and print its result as one JSON line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("case", help="MODEL:PROFILE, e.g. qwen3-8b:scw-l40s")
    parser.add_argument("--tiny-cpu", action="store_true", help="shrunk, on vLLM's CPU build")
    args = parser.parse_args(argv)
    model, _, profile = args.case.partition(":")
    print(KV_MARK + json.dumps(kv_case(model, profile, args.tiny_cpu)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
