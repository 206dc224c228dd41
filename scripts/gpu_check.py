#!/usr/bin/env python
"""Check lcfin on a GPU machine: versions, each backend, two model switches, memory, tokens/s.

Usage::

    python scripts/gpu_check.py [MODEL_A [MODEL_B]] [--max-tokens N] [--requests N]

MODEL_A and MODEL_B are local model directories or hub repo ids (tokens from HF_TOKEN_LC /
HF_TOKEN). By default it builds two tiny random-weight models (Llama and Qwen3 architectures,
head_dim 64) with a locally trained tokenizer, so it needs no hub and no download.

For each available backend (vLLM first, while CUDA is still untouched in this process, then
Transformers) it loads MODEL_A, generates, switches to MODEL_B (the planner picks the strategy:
blue/green at the 0.30 utilisation used here), then back to MODEL_A forcing drain-and-swap, and
prints GPU memory (NVML per device, torch.cuda for this process) before and after each switch,
and the aggregate tokens/s of concurrent requests. vLLM engines start with enforce_eager, which
keeps the whole run under 5 minutes.

On a machine without a GPU it prints "no GPU", runs the Transformers path on the CPU, and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import platform
import resource
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BUDGET_S = 270.0  # stop starting new steps after this, to stay under 5 minutes
STARTED = time.monotonic()
CORPUS = [
    "Basel III is a framework of bank capital and liquidity rules.",
    "The liquidity coverage ratio requires banks to hold high quality liquid assets.",
    "Solvency II sets capital requirements for insurers in the European Union.",
    "IFRS 9 covers the classification of financial instruments and expected credit losses.",
    "Value at risk estimates the loss a portfolio may suffer over a horizon.",
    "EBITDA means earnings before interest, taxes, depreciation and amortisation.",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


def say(text: str = "") -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {text}", flush=True)


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def build_tiny_model(directory: Path, arch: str = "llama", *, seed: int = 0) -> Path:
    """Save a tiny random `arch` ('llama' or 'qwen3') model with its own tokenizer."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|end|>", pad_token="<|pad|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    # head_dim 64: a size every attention backend of vLLM supports.
    common = {
        "vocab_size": len(fast),
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "eos_token_id": fast.convert_tokens_to_ids("<|end|>"),
        "bos_token_id": fast.convert_tokens_to_ids("<|bos|>"),
        "pad_token_id": 0,
    }
    config = tf.Qwen3Config(head_dim=64, **common) if arch == "qwen3" else tf.LlamaConfig(**common)
    torch.manual_seed(seed)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def memory() -> str:
    """GPU memory per device (NVML) and this process's torch.cuda use, or RAM on a CPU."""
    parts = []
    try:
        import pynvml

        pynvml.nvmlInit()
        for i in range(pynvml.nvmlDeviceGetCount()):
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i))
            parts.append(f"GPU{i} {info.used / 2**30:.2f}/{info.total / 2**30:.1f} GiB")
        pynvml.nvmlShutdown()
    except Exception:
        parts.append("NVML n/a")
    import torch

    # is_initialized() only reads a flag; is_available() would touch the driver before vLLM forks.
    if torch.cuda.is_initialized():
        alloc, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
        parts.append(f"torch.cuda {alloc / 2**30:.2f} alloc / {reserved / 2**30:.2f} reserved GiB")
    elif torch.version.cuda:
        parts.append("torch.cuda not initialised here (vLLM's memory is in its EngineCore)")
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    parts.append(f"peak RSS {rss_gib:.2f} GiB")
    return "; ".join(parts)


def print_versions(gpus: list[object]) -> None:
    import torch

    say(f"python {platform.python_version()} on {platform.platform()}")
    say(f"lcfin {version('lcfin')}, torch {torch.__version__} (CUDA {torch.version.cuda})")
    say(f"transformers {version('transformers')}, vllm {version('vllm')}, ray {version('ray')}")
    say(f"GPUs (NVML): {gpus or 'none'}")


def write_catalog(path: Path, gpu_name: str, total_gib: float) -> Path:
    """A user catalog with a small-budget profile per backend for this machine."""
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


def bench(llm: object, requests: int, max_tokens: int) -> float:
    """Run `requests` concurrent greedy chats of `max_tokens` tokens; print and return tok/s."""
    question = "What does the liquidity coverage ratio require?"

    def one(_: int) -> int:
        done = llm.chat(question, max_tokens=max_tokens, temperature=0.0, ignore_eos=True)  # type: ignore[attr-defined]
        return int(done.usage.completion_tokens)

    started = time.perf_counter()
    with ThreadPoolExecutor(requests) as pool:
        tokens = sum(pool.map(one, range(requests)))
    rate = tokens / (time.perf_counter() - started)
    answer = llm.chat(question, max_tokens=12, temperature=0.0)  # type: ignore[attr-defined]
    say(f"  {requests} x {max_tokens} tokens: {rate:,.0f} tokens/s; sample: {answer.text!r}")
    return rate


def check_backend(kind: str, profile: str, models: list[str], settings: object, args) -> None:
    from lcfin import FinancialLLM

    say(f"== {kind} (profile {profile}) ==")
    say(f"  before load: {memory()}")
    started = time.monotonic()
    llm = FinancialLLM(models[0], profile=profile, backend=kind, settings=settings)  # type: ignore[arg-type]
    try:
        say(f"  loaded {models[0]} in {time.monotonic() - started:.1f}s: {memory()}")
        bench(llm, args.requests, args.max_tokens)
        for target, strategy in ((models[1], "auto"), (models[0], "drain_and_swap")):
            if time.monotonic() - STARTED > BUDGET_S:
                say("  time budget reached: skipping the remaining switches")
                return
            say(f"  switch to {target} (strategy {strategy}); before: {memory()}")
            started = time.monotonic()
            llm.switch(target, switch_strategy=strategy)
            say(f"  switched in {time.monotonic() - started:.1f}s; after: {memory()}")
            bench(llm, args.requests, args.max_tokens)
    finally:
        llm.close()
        say(f"  closed: {memory()}")


def run(args: argparse.Namespace, work: Path) -> int:
    """The whole check, with `work` as scratch space; the exit status."""
    from lcfin import Settings
    from lcfin.engine.backend import vllm_available
    from lcfin.engine.profiles import detect_gpus

    gpus = detect_gpus()
    print_versions(gpus)
    models = list(args.models)
    if len(models) < 2:
        built = [build_tiny_model(work / a, a) for a in ("llama", "qwen3")[len(models) :]]
        models += [str(p) for p in built]
        say(f"built tiny models: {models}")
    if not gpus:
        say("no GPU: NVML found no CUDA device; checking the Transformers backend on the CPU only")
        check_backend("transformers", "cpu", models, Settings(), args)
        say("done (no GPU): the vLLM and GPU checks need a CUDA machine")
        return 0
    catalog = write_catalog(work / "profiles.toml", gpus[0].name, gpus[0].total_gib or 40.0)
    settings = Settings(catalog=catalog)  # HF_HOME and tokens from the environment, as usual
    failed = []
    kinds = [("vllm", "gpu-check-vllm")] if vllm_available() else []
    if not kinds:
        say("vllm is not installed: skipping the vLLM backend (pip install 'lcfin[vllm]')")
    for kind, profile in [*kinds, ("transformers", "gpu-check-transformers")]:
        try:
            check_backend(kind, profile, models, settings, args)
        except Exception:
            failed.append(kind)
            say(f"{kind} FAILED:\n{traceback.format_exc()}")
    say(f"done in {time.monotonic() - STARTED:.0f}s; failed: {failed or 'none'}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="MODEL_A [MODEL_B]: directories or repo ids")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lcfin").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="lcfin-gpu-check-") as work:
        return run(args, Path(work))


if __name__ == "__main__":
    sys.exit(main())
