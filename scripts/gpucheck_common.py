"""What the two GPU check scripts share: result rows, the table, verdicts, tiny local models.

Pure Python (torch and transformers are imported inside `build_tiny_model` only), so that
`--help`, `--dry-run` and the unit tests (tests/scripts/) run without a GPU, vLLM or torch.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PASS, FAIL, SKIP, INFO = "PASS", "FAIL", "SKIP", "INFO"
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
#: Tiny shapes (head_dim 64: every vLLM attention backend supports it).
TINY = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2}


@dataclass(frozen=True)
class Row:
    """One checked result: what was expected, what was measured, and the verdict."""

    section: str
    check: str
    expected: str
    measured: str
    verdict: str

    def to_dict(self) -> dict[str, str]:
        """The row as a JSON-ready dict."""
        return asdict(self)


def check(section: str, name: str, ok: bool, expected: str, measured: str) -> Row:
    """A PASS or FAIL row."""
    return Row(section, name, expected, measured, PASS if ok else FAIL)


def within(measured: float, expected: float, rel: float) -> bool:
    """Whether `measured` is within `rel` (a fraction) of `expected`."""
    if expected == 0:
        return measured == 0
    return abs(measured - expected) <= rel * abs(expected)


def render_table(rows: list[Row], width: int = 44) -> str:
    """The rows as one plain-text table (long cells are cut to `width` characters)."""
    head = ("section", "check", "expected", "measured", "verdict")
    cells = [head, *((r.section, r.check, r.expected, r.measured, r.verdict) for r in rows)]
    cells = [tuple(_cut(c, width) for c in row) for row in cells]
    sizes = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(s) for c, s in zip(row, sizes, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * s for s in sizes))
    return "\n".join(line.rstrip() for line in lines)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def summary(rows: list[Row]) -> str:
    """One line: how many rows passed, failed, were skipped or are information only."""
    counts = {v: sum(r.verdict == v for r in rows) for v in (PASS, FAIL, SKIP, INFO)}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "no checks ran"


def exit_code(rows: list[Row]) -> int:
    """1 if any row failed or no row was checked at all, else 0."""
    if any(r.verdict == FAIL for r in rows):
        return 1
    return 0 if any(r.verdict == PASS for r in rows) else 1


def write_json(rows: list[Row], path: Path, **extra: Any) -> None:
    """The rows (and `extra` facts such as versions) as a JSON file."""
    path.write_text(json.dumps({**extra, "rows": [r.to_dict() for r in rows]}, indent=2))


def say(text: str = "") -> None:
    """A progress line on stdout, with the seconds since the script started."""
    print(f"[{time.monotonic() - STARTED:6.1f}s] {text}", flush=True)


def is_compact_json(text: str) -> bool:
    """Whether `text` is one JSON value with no whitespace outside its strings."""
    try:
        json.loads(text)
    except ValueError:
        return False
    in_string = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif in_string and char == "\\":
            escaped = True
        elif char == '"':
            in_string = not in_string
        elif not in_string and char.isspace():
            return False
    return True


def build_tiny_model(
    directory: Path, arch: str = "llama", *, seed: int = 0, dims: dict[str, int] | None = None
) -> Path:
    """Save a tiny random `arch` ('llama' or 'qwen3') model with its own trained tokenizer.

    No hub: the BPE tokenizer is trained on a few sentences, the weights are random.
    """
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
    shape = {**TINY, **(dims or {})}
    heads = shape["hidden_size"] // 64
    common = {
        "vocab_size": len(fast),
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "max_position_embeddings": 512,
        "eos_token_id": fast.convert_tokens_to_ids("<|end|>"),
        "bos_token_id": fast.convert_tokens_to_ids("<|bos|>"),
        "pad_token_id": 0,
        **shape,
    }
    config = tf.Qwen3Config(head_dim=64, **common) if arch == "qwen3" else tf.LlamaConfig(**common)
    torch.manual_seed(seed)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory
