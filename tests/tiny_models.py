"""Tiny random-weight models of the catalog's architectures, built locally (no hub).

A byte-level BPE tokenizer is trained on a small financial corpus; each architecture gets a
model of a few hundred thousand parameters saved with `save_pretrained`, so the tests load it
through lcfin's real loading code.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]

CORPUS = [
    "Basel III is a framework of bank capital and liquidity rules.",
    "The liquidity coverage ratio requires banks to hold high quality liquid assets.",
    "Solvency II sets capital requirements for insurers in the European Union.",
    "IFRS 9 covers the classification of financial instruments and expected credit losses.",
    "Value at risk estimates the loss a portfolio may suffer over a horizon.",
    "EBITDA means earnings before interest, taxes, depreciation and amortisation.",
    "Common equity tier one capital is the highest quality regulatory capital.",
    "A yield curve plots interest rates of bonds against their maturities.",
    "Credit default swaps transfer the credit risk of a reference entity.",
    "Stress tests measure how a bank would fare in a severe downturn.",
    "Prix, taux d'intérêt et échéance: 5 % à 10 ans, 3,2 € par action.",
    "The answer is 42. Numbers 0 1 2 3 4 5 6 7 8 9 and symbols $ % & ( ) : ; ? !",
]

ARCHITECTURES = ("llama", "qwen3", "gpt_neox", "gemma3")


def build_tokenizer(directory: Path, *, chat_template: bool = True) -> object:
    """Train a byte-level BPE tokenizer and save it as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        clean_up_tokenization_spaces=False,
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return fast


def _config(arch: str, vocab: int, eos: int, bos: int, *, wide: bool = False) -> object:
    import transformers as tf

    # head_dim 16 by default; `wide`: 64, which vLLM's CPU attention supports (16 fails there)
    hidden, heads, kv_heads, head_dim = (128, 2, 1, 64) if wide else (64, 4, 2, 16)
    common = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": heads,
        "max_position_embeddings": 256,
        "eos_token_id": eos,
        "bos_token_id": bos,
        "pad_token_id": 0,
    }
    if arch == "llama":
        return tf.LlamaConfig(num_key_value_heads=kv_heads, **common)
    if arch == "qwen3":
        return tf.Qwen3Config(num_key_value_heads=kv_heads, head_dim=head_dim, **common)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(rotary_pct=0.25, **common)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            sliding_window=16,
            layer_types=["sliding_attention", "full_attention"],
            **common,
        )
    raise ValueError(arch)


def build_model(directory: Path, arch: str = "llama", *, seed: int = 0, wide: bool = False) -> Path:
    """Save a tiny random `arch` model plus tokenizer into `directory`; returns it.

    `wide`: head_dim 64 (hidden 128, 2 heads, 1 KV head), a shape vLLM's CPU build runs.
    """
    import torch
    from transformers import AutoModelForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(directory, chat_template=arch != "gpt_neox")
    eos = tok.convert_tokens_to_ids("<|end|>")  # type: ignore[attr-defined]
    bos = tok.convert_tokens_to_ids("<|bos|>")  # type: ignore[attr-defined]
    torch.manual_seed(seed)
    config = _config(arch, len(tok), eos, bos, wide=wide)  # type: ignore[arg-type]
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory, safe_serialization=True)
    return directory
