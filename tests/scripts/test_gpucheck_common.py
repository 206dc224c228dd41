"""scripts/gpucheck_common.py: the rows, table, verdicts and tiny models both GPU checks share."""

from __future__ import annotations

import json

import pytest


def test_the_table_has_one_line_per_row_and_cuts_long_cells(common) -> None:
    rows = [
        common.check("generation", "completion tokens", True, "16, length", "16, length"),
        common.Row("planner", "KV tokens", "1,000", "x" * 200, common.INFO),
    ]
    text = common.render_table(rows, width=30)
    lines = text.splitlines()
    assert len(lines) == 4  # header, rule, two rows
    assert lines[0].split() == ["section", "check", "expected", "measured", "verdict"]
    assert lines[2].endswith("PASS")
    assert "x" * 29 + "…" in lines[3]
    assert "x" * 30 not in text


def test_any_wrong_result_fails_the_run(common) -> None:
    ok = common.check("a", "b", True, "1", "1")
    bad = common.check("a", "c", False, "1", "2")
    skipped = common.Row("a", "d", "-", "-", common.SKIP)
    assert bad.verdict == common.FAIL
    assert common.exit_code([ok, skipped]) == 0
    assert common.exit_code([ok, bad, skipped]) == 1
    assert common.exit_code([skipped]) == 1  # nothing was checked: not a pass
    assert common.exit_code([]) == 1
    assert common.summary([ok, bad, skipped]) == "1 PASS, 1 FAIL, 1 SKIP"


def test_rows_are_written_as_json(common, tmp_path) -> None:
    path = tmp_path / "out.json"
    common.write_json([common.check("a", "b", True, "1", "1")], path, versions={"vllm": "0.33.0"})
    data = json.loads(path.read_text())
    assert data["versions"] == {"vllm": "0.33.0"}
    assert data["rows"][0]["verdict"] == "PASS"


@pytest.mark.parametrize(
    ("text", "compact"),
    [
        ('{"rating":"AAA","investment_grade":true}', True),
        ('{"a":"two words","b":"tab\\there"}', True),  # whitespace inside strings is content
        ('{"a":"quote \\" then space"}', True),
        ('{"a":"ends with backslash\\\\"}', True),
        ('{"a": 1}', False),
        ('{\r \n\r\r\t\r"a"\t\n:1}', False),  # what vLLM 0.33 produced without the engine flag
        ('{"a":1}\n', False),
        ('{"a":', False),  # does not parse
        ("", False),
    ],
)
def test_compact_json(common, text: str, compact: bool) -> None:
    assert common.is_compact_json(text) is compact


def test_within_is_relative(common) -> None:
    assert common.within(109, 100, 0.10)
    assert not common.within(111, 100, 0.10)
    assert common.within(0, 0, 0.10)
    assert not common.within(1, 0, 0.10)


def test_tiny_models_load_with_transformers(common, tmp_path) -> None:
    import transformers as tf

    path = common.build_tiny_model(tmp_path / "qwen3", "qwen3", dims={"num_hidden_layers": 1})
    config = tf.AutoConfig.from_pretrained(path)
    assert (config.model_type, config.num_hidden_layers, config.head_dim) == ("qwen3", 1, 64)
    tok = tf.AutoTokenizer.from_pretrained(path)
    messages = [{"role": "user", "content": "What is EBITDA?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|user|>What is EBITDA?<|end|><|assistant|>"
    assert len(tok(text).input_ids) > 3
