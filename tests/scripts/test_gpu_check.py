"""scripts/gpu_check.py without a GPU: config synthesis, budget scaling, verdicts, --dry-run.

The script's GPU part runs on an operator's CUDA machine (docs/deployment.md); these tests pin
what it computes before any engine starts, and that it runs as a command without vLLM.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from lcfin import get_model, load_profile, plan_memory
from lcfin.engine.backend import vllm_available
from lcfin.engine.profiles import detect_gpus
from lcfin.engine.registry import arch_from_config
from lcfin.engine.vllm_args import is_multimodal_checkpoint
from tests.scripts.conftest import SCRIPTS

GIB = 2**30
H100 = int(79.19 * GIB)


@pytest.mark.parametrize("name", ["qwen3-8b", "llama3.1-8b", "gemma3-12b"])
def test_synthesised_configs_read_back_as_the_catalog_architecture(gpu_check, name) -> None:
    config = gpu_check.hf_config(name)
    assert arch_from_config(config) == get_model(name).arch


def test_synthesised_configs_are_what_transformers_builds(gpu_check, tmp_path) -> None:
    import transformers as tf

    for name, kind in (("qwen3-8b", "qwen3"), ("llama3.1-8b", "llama"), ("gemma3-12b", "gemma3")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(gpu_check.hf_config(name)))
        config = tf.AutoConfig.from_pretrained(tmp_path / name)
        assert config.model_type == kind
    gemma = tf.AutoConfig.from_pretrained(tmp_path / "gemma3-12b")
    text = gemma.text_config
    assert (text.num_hidden_layers, text.head_dim, text.sliding_window) == (48, 256, 1024)
    assert text.layer_types.count("sliding_attention") == 40  # 5 local per global layer
    assert gemma.vision_config.num_hidden_layers == 27
    llama = tf.AutoConfig.from_pretrained(tmp_path / "llama3.1-8b")
    assert llama.rope_parameters["rope_type"] == "llama3"


def test_gemma_is_built_as_served_text_only_from_the_multimodal_checkpoint(gpu_check, tmp_path):
    kwargs = gpu_check.kv_engine_kwargs("gemma3-12b", "hf-l40", tmp_path, H100)
    assert is_multimodal_checkpoint(tmp_path / "gemma3-12b")
    assert kwargs["language_model_only"] is True
    assert kwargs["model"] == str(tmp_path / "gemma3-12b")
    assert (kwargs["load_format"], kwargs["skip_tokenizer_init"]) == ("dummy", True)
    assert "enable_sleep_mode" not in kwargs  # the planner assumes no sleep-mode pool
    text_only = gpu_check.hf_config("gemma3-12b", text_only=True)
    assert text_only["architectures"] == ["Gemma3ForCausalLM"]
    assert "vision_config" not in text_only


@pytest.mark.parametrize("profile", ["hf-l40", "scw-l40s"])
def test_the_emulated_budget_is_the_profiles_in_bytes(gpu_check, profile, tmp_path) -> None:
    prof = load_profile(profile)
    util = gpu_check.emulated_utilization(prof, H100)
    wanted = math.ceil(prof.gpu_total_gib * GIB * prof.gpu_memory_utilization)
    assert abs(math.ceil(H100 * util) - wanted) <= 1  # vLLM: ceil(total x utilisation)
    kwargs = gpu_check.kv_engine_kwargs("qwen3-8b", profile, tmp_path, H100)
    assert kwargs["gpu_memory_utilization"] == util
    assert kwargs["max_model_len"] == prof.max_model_len
    assert kwargs["max_num_seqs"] == prof.max_num_seqs  # the same batch as on the real GPU
    assert kwargs["enforce_eager"] is prof.enforce_eager


def test_a_gpu_smaller_than_the_budget_is_skipped(gpu_check, tmp_path) -> None:
    small = int(24 * GIB)
    assert gpu_check.emulated_utilization(load_profile("scw-l40s"), small) is None
    reason = gpu_check.kv_engine_kwargs("qwen3-8b", "scw-l40s", tmp_path, small)
    assert reason == "this GPU (24.0 GiB) is smaller than the budget"


def plan(model: str = "qwen3-8b", profile: str = "scw-l40s") -> dict:
    return plan_memory(model, profile).to_dict()


def test_kv_verdicts(gpu_check) -> None:
    p = plan()  # 153,024 tokens, 37.36x
    close = {"started": True, "kv_tokens": 150_000, "max_concurrency": 36.6}
    assert [r.verdict for r in gpu_check.kv_rows("q", p, close)] == ["PASS", "PASS"]
    far = {"started": True, "kv_tokens": 120_000, "max_concurrency": 29.3}
    assert [r.verdict for r in gpu_check.kv_rows("q", p, far)] == ["FAIL", "FAIL"]
    older = {"started": True, "kv_tokens": 150_000, "max_concurrency": None}
    assert [r.verdict for r in gpu_check.kv_rows("q", p, older)] == ["PASS", "INFO"]


def test_the_planner_and_vllm_must_agree_on_whether_it_fits(gpu_check) -> None:
    refused = {"started": False, "error": "ValueError: No available memory for the cache blocks"}
    (row,) = gpu_check.kv_rows("gemma", plan("gemma3-12b", "hf-l40"), refused)
    assert (row.verdict, row.expected) == ("FAIL", "fits")  # the seed's L40 failure
    assert "No available memory" in row.measured
    too_big = plan("llama3.1-70b", "hf-l40")
    assert not too_big["fits"]
    assert gpu_check.kv_rows("70b", too_big, refused)[0].verdict == "PASS"
    assert gpu_check.kv_rows("70b", too_big, {"started": True})[0].verdict == "FAIL"
    (skipped,) = gpu_check.kv_rows("q", plan(), {"skipped": "this GPU is too small"})
    assert skipped.verdict == "SKIP"


def test_memory_rows_allow_allocator_slack(gpu_check) -> None:
    assert gpu_check.memory_row("s", "after", 12.3, 12.0).verdict == "PASS"
    assert gpu_check.memory_row("s", "after", 24.1, 12.0).verdict == "FAIL"  # the old one stayed


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "gpu_check.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_help_and_dry_run_need_neither_a_gpu_nor_vllm() -> None:
    helped = run_script("--help")
    assert helped.returncode == 0
    assert "--dry-run" in helped.stdout
    dry = run_script("--dry-run", "--gpu-total-gib", "139.8")
    assert dry.returncode == 0, dry.stderr
    lines = [line for line in dry.stdout.splitlines() if line.startswith("planner")]
    assert len(lines) == 6  # 3 models x 2 budgets
    assert any("qwen3-8b @ scw-l40s" in line and "37.36x" in line for line in lines)


@pytest.mark.skipif(
    bool(detect_gpus()) and vllm_available(), reason="this machine can run the real check"
)
def test_without_a_gpu_it_says_so_and_exits_6() -> None:
    done = run_script("--skip-kv")
    assert done.returncode == 6
    assert "needs a CUDA GPU" in done.stdout
