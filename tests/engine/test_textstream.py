"""IncrementalDetokenizer (on the tiny byte-level tokenizer) and StopStringFilter."""

from __future__ import annotations

import pytest

from lcfin.engine.transformers.textstream import IncrementalDetokenizer, StopStringFilter

REPLACEMENT = "\ufffd"


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models["llama"])


def _byte_to_char() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which ByteLevel tokenizers use as tokens."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def byte_ids(tokenizer, text: str) -> list[int]:
    """One token per UTF-8 byte of `text` (the byte-level alphabet is in the vocabulary)."""
    table = _byte_to_char()
    ids = [tokenizer.convert_tokens_to_ids(table[b]) for b in text.encode()]
    assert None not in ids  # every byte has its own token
    return ids


def run(tokenizer, ids: list[int]) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(i) for i in ids]
    return [*deltas, detok.flush()]


# -- IncrementalDetokenizer ------------------------------------------------------------------


@pytest.mark.parametrize("char", ["€", "é", "ê"])
def test_multibyte_char_fed_byte_by_byte_is_emitted_whole(tokenizer, char):
    ids = byte_ids(tokenizer, char)
    assert len(ids) == len(char.encode()) > 1
    assert tokenizer.decode(ids[:1]) == REPLACEMENT  # a lone lead byte is not text yet

    deltas = run(tokenizer, ids)

    assert deltas[:-2] == [""] * (len(ids) - 1)  # held back until the char is complete
    assert deltas[-2] == char
    assert deltas[-1] == ""


def test_natural_encoding_never_splits_a_character(tokenizer):
    text = "Prix: 3,2 € par action, taux d'intérêt et échéance; naïve 日本"
    ids = tokenizer.encode(text, add_special_tokens=False)
    # The tiny BPE splits some of these characters over several tokens: the interesting case.
    assert any(tokenizer.decode([i]) == REPLACEMENT for i in ids)

    deltas = run(tokenizer, ids)

    assert all(REPLACEMENT not in d for d in deltas)
    assert "".join(deltas) == tokenizer.decode(ids) == text


def test_mixed_ascii_and_byte_tokens(tokenizer):
    ids = [
        *tokenizer.encode("a", add_special_tokens=False),
        *byte_ids(tokenizer, "é€"),
        *tokenizer.encode("b", add_special_tokens=False),
    ]

    deltas = run(tokenizer, ids)

    assert [d for d in deltas if d] == ["a", "é", "€", "b"]
    assert "".join(deltas) == tokenizer.decode(ids)


def raw_byte_ids(tokenizer, data: bytes) -> list[int]:
    """One token per byte, valid UTF-8 or not."""
    table = _byte_to_char()
    return [tokenizer.convert_tokens_to_ids(table[b]) for b in data]


def test_bytes_that_never_form_a_character_stream_as_they_come(tokenizer):
    """Garbage (lone continuation bytes) is not held back until the end of the reply."""
    ids = raw_byte_ids(tokenizer, b"\x82" * 6)

    deltas = run(tokenizer, ids)

    # each byte is settled once the next one arrives; only the last waits for the flush
    assert deltas == ["", *[REPLACEMENT] * 5, REPLACEMENT]
    assert "".join(deltas) == tokenizer.decode(ids)


def test_garbage_then_a_character_split_over_bytes(tokenizer):
    ids = raw_byte_ids(tokenizer, b"\x82\x82" + "€".encode() + b"x")

    deltas = run(tokenizer, ids)

    assert deltas[1] == REPLACEMENT  # the first garbage byte did not wait for the rest
    assert "€" in deltas and all(REPLACEMENT not in d for d in deltas[3:])  # € came whole
    assert "".join(deltas) == tokenizer.decode(ids) == REPLACEMENT * 2 + "€x"


def test_special_tokens_are_skipped(tokenizer):
    ids = [
        tokenizer.bos_token_id,
        *tokenizer.encode("Basel", add_special_tokens=False),
        tokenizer.eos_token_id,
    ]

    deltas = run(tokenizer, ids)

    assert deltas[0] == ""
    assert "".join(deltas) == "Basel" == tokenizer.decode(ids, skip_special_tokens=True)


def test_flush_releases_an_incomplete_tail(tokenizer):
    ids = [*tokenizer.encode("x", add_special_tokens=False), *byte_ids(tokenizer, "€")[:2]]
    detok = IncrementalDetokenizer(tokenizer)

    assert [detok.push(i) for i in ids] == ["x", "", ""]
    tail = detok.flush()

    assert tail.startswith(REPLACEMENT)
    assert "x" + tail == tokenizer.decode(ids)
    assert detok.flush() == ""  # nothing is sent twice


def test_invalid_byte_in_the_middle_does_not_stall_the_stream(tokenizer):
    # A lone continuation byte is permanently invalid; the text after it still flows.
    ids = [*byte_ids(tokenizer, "€")[1:2], *tokenizer.encode("ok", add_special_tokens=False)]

    deltas = run(tokenizer, ids)

    assert "".join(deltas) == tokenizer.decode(ids)
    assert "".join(deltas).endswith("ok")


# -- StopStringFilter ----------------------------------------------------------------------


def feed(stops: tuple[str, ...], chunks: list[str]) -> tuple[list[str], StopStringFilter]:
    f = StopStringFilter(stops)
    out = [f.push(c) for c in chunks]
    out.append(f.flush())
    return out, f


def test_no_stops_passes_text_through():
    out, f = feed((), ["abc", "def"])
    assert out == ["abc", "def", ""]
    assert f.matched is None


def test_stop_inside_one_chunk():
    out, f = feed(("STOP",), ["hello STOP world"])
    assert "".join(out) == "hello "
    assert f.matched == "STOP"


def test_stop_split_across_chunks():
    out, f = feed(("STOP",), ["hello S", "T", "OP and more"])
    assert out[0] == "hello "  # "S" may start the stop: held back
    assert out[1] == ""
    assert "".join(out) == "hello "
    assert f.matched == "STOP"


def test_partial_prefix_is_released_when_it_does_not_complete():
    out, f = feed(("STOP",), ["abc ST", "ART"])
    assert out[0] == "abc "
    assert "".join(out) == "abc START"
    assert f.matched is None


def test_partial_prefix_is_released_on_flush():
    f = StopStringFilter(("\nUser:",))
    assert f.push("answer\nUs") == "answer"
    assert f.pending == "\nUs"
    assert f.flush() == "\nUs"
    assert f.flush() == ""


def test_several_stops_pick_the_earliest():
    out, f = feed(("world", "lo"), ["hello world"])
    assert "".join(out) == "hel"
    assert f.matched == "lo"


def test_earliest_stop_wins_across_chunks():
    out, f = feed(("BBB", "AB"), ["xx A", "BBB"])
    assert "".join(out) == "xx "
    assert f.matched == "AB"


def test_nothing_is_emitted_after_a_match():
    f = StopStringFilter(("#",))
    assert f.push("a#b") == "a"
    assert f.push("more text") == ""
    assert f.flush() == ""
    assert f.matched == "#"


@pytest.mark.parametrize(
    "chunks",
    [
        ["The ratio is END here"],
        ["The ratio is E", "N", "D here"],
        ["The ratio is EN", "D"],
        ["The ratio is ", "END"],
        [*"The ratio is END here"],
    ],
)
def test_stop_text_is_never_emitted(chunks):
    out, f = feed(("END",), chunks)
    joined = "".join(out)
    assert joined == "The ratio is "
    assert "END" not in joined
    assert all("E" not in piece for piece in out)  # not even a fragment of the stop
    assert f.matched == "END"
