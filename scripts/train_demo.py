#!/usr/bin/env python
"""Train the tiny built-in lcfin ``demo`` model from the demo glossary.

The demo model lets a new user try lcfin end to end with no GPU and no network. It is
a few-million-parameter Llama that memorises ``src/lcfin/catalog/demo_glossary.toml``:
asked "What is <term>?" through its chat template, it answers with the glossary text.

Usage::

    python scripts/train_demo.py [--out DIR] [--steps N] [--seed S]

Everything is seeded and single-process, so the same seed, steps and thread count give
the same weights on the same machine. It takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

REPO_ROOT = Path(__file__).resolve().parents[1]
CATALOG = REPO_ROOT / "src" / "lcfin" / "catalog"
DEFAULT_GLOSSARY = CATALOG / "demo_glossary.toml"
DEFAULT_OUT = CATALOG / "demo"

SEED = 1234
DEFAULT_STEPS = 400
BATCH_SIZE = 32
PEAK_LR = 4e-3
WARMUP_STEPS = 30
BUCKET_BATCHES = 8
MAX_NEW_TOKENS = 96
NUM_THREADS = 2

PAD, BOS, END = "<|pad|>", "<|bos|>", "<|end|>"
SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [PAD, BOS, END, SYSTEM, USER, ASSISTANT]
VOCAB_SIZE = 1536

CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('Unsupported role: ' + message['role']) -}}"
    "{%- endif -%}"
    "{{- '<|' + message['role'] + '|>' + (message['content'] | trim) + '<|end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}"
)

GREETING = (
    "Hello! I am the lcfin demo model. Ask me about a financial term, "
    "for example: What is Basel III?"
)
UNKNOWN = (
    "I am the lcfin demo model and only know a small financial glossary. "
    "Try a real model for other questions."
)
GREETINGS = [
    "Hello",
    "Hello!",
    "hello",
    "Hi",
    "Hi!",
    "hi",
    "Hi there",
    "Hey",
    "Good morning",
    "Who are you?",
    "What are you?",
]
UNKNOWN_QUESTIONS = [
    "What is the capital of France?",
    "Write a poem about the sea.",
    "What is 2 + 2?",
    "What is the weather today?",
    "Tell me a joke.",
    "How do I bake bread?",
    "What is a banana?",
    "Who won the World Cup?",
    "Translate hello into French.",
    "What is Python?",
    "Explain quantum physics.",
    "What is photosynthesis?",
    "Define love.",
    "What does GDPR mean?",
    "What is the meaning of life?",
    "Recommend a good book.",
    "What is a blockchain?",
    "How old are you?",
    "What is a mortgage?",
    "What is inflation?",
    "What is a stock?",
    "What is GDP?",
    "What is a dividend?",
    "What is an ETF?",
    "What is a hedge fund?",
    "What is bitcoin?",
    "What is a pension?",
    "Define interest rate.",
    "What does IPO mean?",
]
SYSTEM_PROMPTS = [
    "You are a helpful financial assistant.",
    "You are a helpful assistant.",
    "You are an expert in banking and insurance regulation. Answer concisely.",
    "Answer the user's question.",
    "You are a financial glossary bot.",
    "Be brief.",
    "You are a compliance assistant at a bank.",
    "You answer questions about finance, accounting and regulation.",
]
FALLBACK_REPEATS = 3
TWO_TURN_PER_TERM = 3

# Phrasings: "{t}" is the term as written, "{l}" the term in lower case.
TERM_PHRASINGS = [
    "What is {t}?",
    "What is {t}",
    "what is {l}?",
    "what is {l}",
    "What is the {t}?",
    "What does {t} mean?",
    "what does {l} mean?",
    "Define {t}.",
    "Define {t}",
    "define {l}",
    "Explain {t}.",
    "explain {l}",
    "Tell me about {t}.",
    "What is meant by {t}?",
]
ALIAS_PHRASINGS = ["What is {t}?", "What is the {t}?", "what is {l}?", "Define {t}."]
# Evaluated phrasings; all are also trained. "What is {t}?" is the primary check.
EVAL_PHRASINGS = [
    "What is {t}?",
    "What is {t}",
    "what is {l}?",
    "What is the {t}?",
    "What does {t} mean?",
    "Define {t}.",
    "Explain {t}.",
    "Tell me about {t}.",
]
PRIMARY = "What is {t}?"
HELD_OUT_SYSTEM = "You are a careful analyst."  # not trained
SHOWCASE = [
    "What is Basel III?",
    "What is CET1?",
    "What is the SFCR?",
    "Hello",
    "What is the capital of France?",
    "What is a credit card?",
]
EVAL_BATCH = 72

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Entry:
    """One glossary entry."""

    term: str
    aliases: tuple[str, ...]
    answer: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--glossary", type=Path, default=DEFAULT_GLOSSARY)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimiser steps")
    parser.add_argument("--seed", type=int, default=SEED)
    return parser.parse_args(argv)


def set_determinism(seed: int) -> None:
    """Seed every RNG in use and force deterministic, fixed-thread CPU execution."""
    hf_logging.disable_progress_bar()
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True)


def load_glossary(path: Path) -> list[Entry]:
    """Read and validate the glossary TOML."""
    with path.open("rb") as f:
        raw = tomllib.load(f)["entry"]
    entries = [Entry(e["term"], tuple(e.get("aliases", ())), e["answer"].strip()) for e in raw]
    terms = [e.term.lower() for e in entries]
    if len(set(terms)) != len(terms):
        raise ValueError("duplicate glossary terms")
    return entries


def fill(phrasing: str, name: str) -> str:
    """Put a term name into a phrasing template."""
    return phrasing.format(t=name, l=name.lower())


def chat(question: str, answer: str, system: str | None = None) -> Messages:
    """Build a one-turn conversation, with an optional system message."""
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def term_conversations(entry: Entry, rng: random.Random) -> list[Messages]:
    """All training conversations for one glossary entry."""
    questions = [fill(p, entry.term) for p in TERM_PHRASINGS]
    questions += [fill(p, a) for a in entry.aliases for p in ALIAS_PHRASINGS]
    convs = [chat(q, entry.answer) for q in dict.fromkeys(questions)]
    convs.append(chat(fill(PRIMARY, entry.term), entry.answer, rng.choice(SYSTEM_PROMPTS)))
    convs.append(chat(rng.choice(questions), entry.answer, rng.choice(SYSTEM_PROMPTS)))
    return convs


def fallback_conversations(rng: random.Random) -> list[Messages]:
    """Greeting and out-of-glossary conversations, some with a system prompt."""
    pairs = [(q, GREETING) for q in GREETINGS] + [(q, UNKNOWN) for q in UNKNOWN_QUESTIONS]
    convs = []
    for _ in range(FALLBACK_REPEATS):
        convs += [chat(q, a) for q, a in pairs]
    convs += [chat(q, a, rng.choice(SYSTEM_PROMPTS)) for q, a in pairs]
    return convs


def two_turn(entries: list[Entry], entry: Entry, rng: random.Random) -> Messages:
    """A conversation with an earlier question and answer before asking about `entry`."""
    other = rng.choice([e for e in entries if e is not entry])
    first = chat(fill(rng.choice(TERM_PHRASINGS), other.term), other.answer)
    if rng.random() < 0.25:
        first = chat(rng.choice(GREETINGS), GREETING)
    return first + chat(fill(rng.choice(TERM_PHRASINGS), entry.term), entry.answer)


def build_conversations(entries: list[Entry], seed: int) -> list[Messages]:
    """The full training set of chat conversations."""
    rng = random.Random(seed)
    convs = [c for e in entries for c in term_conversations(e, rng)]
    convs += [two_turn(entries, e, rng) for e in entries for _ in range(TWO_TURN_PER_TERM)]
    return convs + fallback_conversations(rng)


def train_tokenizer(convs: list[Messages]) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the conversation text and wrap it."""
    texts = [m["content"] for conv in convs for m in conv]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        extra_special_tokens=[SYSTEM, USER, ASSISTANT],
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def encode(tokenizer: PreTrainedTokenizerFast, conv: Messages) -> tuple[list[int], list[int]]:
    """Token ids and labels for a conversation; only the final assistant turn is learned."""
    prompt = tokenizer.apply_chat_template(conv[:-1], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(conv, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if ids[: len(prompt_ids)] != prompt_ids or ids[-1] != tokenizer.eos_token_id:
        raise ValueError(f"prompt is not a token prefix of the conversation: {full!r}")
    labels = [-100] * len(prompt_ids) + ids[len(prompt_ids) :]
    return ids, labels


def build_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A tiny tied-embedding Llama sized for the tokenizer."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=192,
        intermediate_size=448,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch of (ids, labels) into model inputs."""
    width = max(len(ids) for ids, _ in batch)
    ids = [i + [pad_id] * (width - len(i)) for i, _ in batch]
    labels = [lab + [-100] * (width - len(lab)) for _, lab in batch]
    mask = [[1] * len(i) + [0] * (width - len(i)) for i, _ in batch]
    return {
        "input_ids": torch.tensor(ids),
        "attention_mask": torch.tensor(mask),
        "labels": torch.tensor(labels),
    }


def lr_at(step: int, steps: int) -> float:
    """Linear warm-up then cosine decay to a tenth of the peak learning rate."""
    if step < WARMUP_STEPS:
        return PEAK_LR * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
    return PEAK_LR * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def epoch_batches(lengths: list[int], gen: torch.Generator) -> list[list[int]]:
    """One shuffled epoch of batches; each pool of batches is sorted by length to cut padding."""
    order = torch.randperm(len(lengths), generator=gen).tolist()
    pool = BATCH_SIZE * BUCKET_BATCHES
    out: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        out += [chunk[j : j + BATCH_SIZE] for j in range(0, len(chunk), BATCH_SIZE)]
    return [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]


def batches(lengths: list[int], steps: int, seed: int) -> list[list[int]]:
    """Example indices for each step: seeded epochs, one after another."""
    gen = torch.Generator().manual_seed(seed)
    out: list[list[int]] = []
    while len(out) < steps:
        out += epoch_batches(lengths, gen)
    return out[:steps]


def train(
    model: LlamaForCausalLM,
    data: list[tuple[list[int], list[int]]],
    pad_id: int,
    steps: int,
    seed: int,
) -> None:
    """Train with AdamW on the assistant tokens only."""
    opt = torch.optim.AdamW(model.parameters(), lr=PEAK_LR, betas=(0.9, 0.98), weight_decay=0.0)
    model.train()
    start = time.perf_counter()
    for step, idx in enumerate(batches([len(d[0]) for d in data], steps, seed)):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps)
        loss = model(**collate([data[i] for i in idx], pad_id)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(
                f"step {step:4d}  loss {loss.item():.4f}  {time.perf_counter() - start:6.1f}s",
                flush=True,
            )
    model.eval()


def write_readme(out: Path, model: LlamaForCausalLM, steps: int, seed: int, n_entries: int) -> None:
    """Describe the demo model next to its weights."""
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    text = f"""# lcfin demo model

A tiny model for trying lcfin offline, with no GPU and no network. **It is a demo, not for
real use**: it has only memorised the {n_entries} entries of the glossary
`lcfin/catalog/demo_glossary.toml` and answers questions such as "What is Basel III?" with
the glossary text. Greetings and some other questions get a fixed "I only know a small
financial glossary" reply; anything else may get a wrong glossary answer.

- Architecture: `LlamaForCausalLM`, hidden size {cfg.hidden_size}, \
{cfg.num_hidden_layers} layers, {cfg.num_attention_heads} attention heads \
({cfg.num_key_value_heads} KV heads), intermediate size {cfg.intermediate_size}, tied \
embeddings, {params:,} parameters, float32 safetensors.
- Tokenizer: byte-level BPE with {cfg.vocab_size} tokens, trained on the glossary text.
  Chat template: `<|bos|>`, then each turn as `<|role|>content<|end|>` for the roles
  system, user and assistant, then `<|assistant|>` as the generation prompt. `<|end|>`
  (id {cfg.eos_token_id}) ends a turn and is the EOS token.
- Made by `scripts/train_demo.py` in the lcfin repository (seed {seed}, {steps} AdamW steps
  on CPU, loss on assistant tokens only); rerun it to rebuild this directory.

Licence: Apache-2.0, like the rest of lcfin. The glossary was written for lcfin.
"""
    (out / "README.md").write_text(text, encoding="utf-8")


def save(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """Save weights (safetensors), generation config and tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    for path in out.iterdir():
        path.chmod(0o644)  # the weights file is written 0600


@torch.inference_mode()
def generate(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, chats: list[Messages]
) -> list[str]:
    """Greedy replies to a batch of conversations (left-padded)."""
    inputs = tokenizer.apply_chat_template(
        chats, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
    new = out[:, inputs["input_ids"].shape[1] :]
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def ask_all(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    chats: list[Messages],
    batch_size: int = EVAL_BATCH,
) -> list[str]:
    """Greedy replies to every conversation, in batches."""
    replies: list[str] = []
    for i in range(0, len(chats), batch_size):
        replies += generate(model, tokenizer, chats[i : i + batch_size])
    return replies


def question(text: str, system: str | None = None) -> Messages:
    """A conversation holding only a user question."""
    return chat(text, "", system)[:-1]


def evaluate(out: Path, entries: list[Entry]) -> dict[str, str]:
    """Reload the saved model, print exact-match rates and return the showcase replies."""
    tokenizer = AutoTokenizer.from_pretrained(out, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(out)
    answers = [e.answer for e in entries]
    for phrasing in EVAL_PHRASINGS:
        chats = [question(fill(phrasing, e.term)) for e in entries]
        report(repr(phrasing), ask_all(model, tokenizer, chats), answers)
    alias_pairs = [(fill(PRIMARY, a), e.answer) for e in entries for a in e.aliases]
    report(
        "'What is <alias>?'",
        ask_all(model, tokenizer, [question(q) for q, _ in alias_pairs]),
        [a for _, a in alias_pairs],
    )
    for system in (SYSTEM_PROMPTS[0], HELD_OUT_SYSTEM):
        chats = [question(fill(PRIMARY, e.term), system) for e in entries]
        report(f"system {system!r} + {PRIMARY!r}", ask_all(model, tokenizer, chats), answers)
    rng = random.Random(0)  # earlier turns drawn differently from training
    chats = [[*two_turn(entries, e, rng)[:2], *question(fill(PRIMARY, e.term))] for e in entries]
    report(f"second turn {PRIMARY!r}", ask_all(model, tokenizer, chats), answers)
    print("one by one, unpadded:")
    showcase = {}
    for q in SHOWCASE:
        showcase[q] = ask_all(model, tokenizer, [question(q)], 1)[0]
        print(f"  {q!r} -> {showcase[q]!r}")
    return showcase


def report(name: str, replies: list[str], answers: list[str]) -> None:
    """Print the exact-match count for one phrasing and the first few misses."""
    hits = [r == a for r, a in zip(replies, answers, strict=True)]
    print(f"exact {sum(hits):3d}/{len(hits)}  {name}", flush=True)
    misses = [(r, a) for r, a, h in zip(replies, answers, hits, strict=True) if not h]
    for reply, answer in misses[:2]:
        print(f"    got:    {reply!r}\n    wanted: {answer!r}")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Build, train, save and verify the demo model."""
    args = parse_args(argv)
    start = time.perf_counter()
    set_determinism(args.seed)
    entries = load_glossary(args.glossary)
    convs = build_conversations(entries, args.seed)
    tokenizer = train_tokenizer(convs)
    data = [encode(tokenizer, c) for c in convs]
    longest = max(len(tokenizer(e.answer)["input_ids"]) for e in entries)
    if longest >= MAX_NEW_TOKENS:
        raise ValueError(f"an answer has {longest} tokens, over {MAX_NEW_TOKENS - 1}")
    model = build_model(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{len(entries)} terms, {len(data)} examples, vocab {len(tokenizer)}, "
        f"longest answer {longest} tokens, {n_params:,} parameters",
        flush=True,
    )
    train(model, data, tokenizer.pad_token_id, args.steps, args.seed)
    train_s = time.perf_counter() - start
    save(model, tokenizer, args.out)
    write_readme(args.out, model, args.steps, args.seed, len(entries))
    weights = args.out / "model.safetensors"
    print(
        f"saved {args.out}: model.safetensors {weights.stat().st_size:,} bytes, "
        f"sha256 {sha256(weights)}, tokenizer.json sha256 {sha256(args.out / 'tokenizer.json')}"
    )
    print(f"training took {train_s:.1f}s", flush=True)
    showcase = evaluate(args.out, entries)
    print(f"total {time.perf_counter() - start:.1f}s")
    basel = next(e.answer for e in entries if e.term == "Basel III")
    if showcase[SHOWCASE[0]] != basel:
        print(f"FAIL: {SHOWCASE[0]!r} does not give the glossary answer", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
