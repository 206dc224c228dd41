"""scripts/gpucheck_kv.py without a GPU: config synthesis, budget scaling, the verdicts.

The cases run on an operator's CUDA machine (scripts/gpu_check.py); these tests pin what is
computed before an engine starts: the synthesised configs read back as the catalog's, the
emulated budget is the profile's in bytes, and the planner and vLLM must agree.
"""

from __future__ import annotations

import json
import math

import pytest

from lcfin import get_model, load_profile, plan_memory
from lcfin.engine.registry import arch_from_config
from lcfin.engine.vllm.args import is_multimodal_checkpoint

GIB = 2**30
H100 = int(79.19 * GIB)


@pytest.mark.parametrize("name", ["qwen3-8b", "llama3.1-8b", "gemma3-12b"])
def test_synthesised_configs_read_back_as_the_catalog_architecture(kv, name) -> None:
    config = kv.hf_config(name)
    assert arch_from_config(config) == get_model(name).arch


def test_synthesised_configs_are_what_transformers_builds(kv, tmp_path) -> None:
    import transformers as tf

    for name, kind in (("qwen3-8b", "qwen3"), ("llama3.1-8b", "llama"), ("gemma3-12b", "gemma3")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(kv.hf_config(name)))
        config = tf.AutoConfig.from_pretrained(tmp_path / name)
        assert config.model_type == kind
    gemma = tf.AutoConfig.from_pretrained(tmp_path / "gemma3-12b")
    text = gemma.text_config
    assert (text.num_hidden_layers, text.head_dim, text.sliding_window) == (48, 256, 1024)
    assert text.layer_types.count("sliding_attention") == 40  # 5 local per global layer
    assert gemma.vision_config.num_hidden_layers == 27
    llama = tf.AutoConfig.from_pretrained(tmp_path / "llama3.1-8b")
    assert llama.rope_parameters["rope_type"] == "llama3"


def test_gemma_is_built_as_served_text_only_from_the_multimodal_checkpoint(kv, tmp_path):
    kwargs = kv.kv_engine_kwargs("gemma3-12b", "hf-l40", tmp_path, H100)
    assert is_multimodal_checkpoint(tmp_path / "gemma3-12b")
    assert kwargs["language_model_only"] is True
    assert kwargs["model"] == str(tmp_path / "gemma3-12b")
    assert (kwargs["load_format"], kwargs["skip_tokenizer_init"]) == ("dummy", True)
    assert "enable_sleep_mode" not in kwargs  # the planner assumes no sleep-mode pool
    text_only = kv.hf_config("gemma3-12b", text_only=True)
    assert text_only["architectures"] == ["Gemma3ForCausalLM"]
    assert "vision_config" not in text_only


@pytest.mark.parametrize("profile", ["hf-l40", "scw-l40s"])
def test_the_emulated_budget_is_the_profiles_in_bytes(kv, profile, tmp_path) -> None:
    prof = load_profile(profile)
    util = kv.emulated_utilization(prof, H100)
    wanted = math.ceil(prof.gpu_total_gib * GIB * prof.gpu_memory_utilization)
    assert abs(math.ceil(H100 * util) - wanted) <= 1  # vLLM: ceil(total x utilisation)
    kwargs = kv.kv_engine_kwargs("qwen3-8b", profile, tmp_path, H100)
    assert kwargs["gpu_memory_utilization"] == util
    assert kwargs["max_model_len"] == prof.max_model_len
    assert kwargs["max_num_seqs"] == prof.max_num_seqs  # the same batch as on the real GPU
    assert kwargs["enforce_eager"] is prof.enforce_eager


def test_a_gpu_smaller_than_the_budget_is_skipped(kv, tmp_path) -> None:
    small = int(24 * GIB)
    assert kv.emulated_utilization(load_profile("scw-l40s"), small) is None
    reason = kv.kv_engine_kwargs("qwen3-8b", "scw-l40s", tmp_path, small)
    assert reason == "this GPU (24.0 GiB) is smaller than the budget"


def plan(model: str = "qwen3-8b", profile: str = "scw-l40s") -> dict:
    return plan_memory(model, profile).to_dict()


def test_kv_verdicts(kv) -> None:
    p = plan()  # 153,024 tokens, 37.36x
    close = {"started": True, "kv_tokens": 150_000, "max_concurrency": 36.6}
    assert [r.verdict for r in kv.kv_rows("q", p, close)] == ["PASS", "PASS"]
    far = {"started": True, "kv_tokens": 120_000, "max_concurrency": 29.3}
    assert [r.verdict for r in kv.kv_rows("q", p, far)] == ["FAIL", "FAIL"]
    older = {"started": True, "kv_tokens": 150_000, "max_concurrency": None}
    assert [r.verdict for r in kv.kv_rows("q", p, older)] == ["PASS", "INFO"]


def test_the_planner_and_vllm_must_agree_on_whether_it_fits(kv) -> None:
    refused = {"started": False, "error": "ValueError: No available memory for the cache blocks"}
    (row,) = kv.kv_rows("gemma", plan("gemma3-12b", "hf-l40"), refused)
    assert (row.verdict, row.expected) == ("FAIL", "fits")  # the seed's L40 failure
    assert "No available memory" in row.measured
    too_big = plan("llama3.1-70b", "hf-l40")
    assert not too_big["fits"]
    assert kv.kv_rows("70b", too_big, refused)[0].verdict == "PASS"
    assert kv.kv_rows("70b", too_big, {"started": True})[0].verdict == "FAIL"
    (skipped,) = kv.kv_rows("q", plan(), {"skipped": "this GPU is too small"})
    assert skipped.verdict == "SKIP"
