"""The memory planner: the seed's figure, verdicts per profile, TP/PP, hybrid KV, the CPU path."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from lcfin.engine.planner import MemoryPlan, plan_memory
from lcfin.engine.profiles import HardwareProfile, load_profile
from lcfin.engine.registry import Architecture, ModelSpec, get_model
from lcfin.errors import InvalidParameter

GIB = 2**30
SINGLE_L40 = ["hf-l40", "scw-l40s"]


def _full_attention(spec: ModelSpec) -> ModelSpec:
    """The same model with every layer at full attention (the naive KV estimate)."""
    assert spec.arch is not None
    arch = spec.arch.model_copy(update={"sliding_window": None, "num_sliding_layers": 0})
    return spec.model_copy(update={"arch": arch})


def _with(profile: str, **update: object) -> HardwareProfile:
    return load_profile(profile).model_copy(update=update)


def test_seed_figure_qwen3_8b_on_l40s() -> None:
    plan = plan_memory("qwen3-8b", "scw-l40s", max_model_len=4096)
    assert plan.max_concurrency == pytest.approx(37.4, rel=0.10)
    assert plan.max_concurrency == pytest.approx(37.36, abs=0.01)  # the calibration point
    assert plan.kv_bytes_per_token == 36 * 2 * 8 * 128 * 2  # 144 KiB
    assert plan.budget_gib == pytest.approx(math.ceil(44.53 * GIB * 0.85) / GIB, abs=1e-3)
    assert plan.weights_gib == pytest.approx(8_190_735_360 * 2 / GIB, abs=1e-3)
    assert plan.kv_cache_tokens == 9564 * 16
    assert plan.fits
    assert "37.36 requests of 4,096 tokens" in plan.reason


@pytest.mark.parametrize("profile", SINGLE_L40)
@pytest.mark.parametrize("model", ["llama3.1-8b", "qwen3-8b", "fin-pythia-1.4b", "gemma3-12b"])
def test_small_models_fit_one_l40(model: str, profile: str) -> None:
    plan = plan_memory(model, profile)
    assert plan.fits, plan.reason
    assert plan.max_concurrency >= 1
    assert plan.weights_gib + plan.activations_gib + plan.overhead_gib < plan.budget_gib
    assert plan.kv_cache_tokens >= plan.max_model_len


def test_pythia_context_is_capped_at_its_limit() -> None:
    plan = plan_memory("fin-pythia-1.4b", "scw-l40s")  # the profile asks for 4096
    assert plan.max_model_len == 2048
    assert plan.dtype == "bfloat16"  # the profile's dtype, not the checkpoint's float16


@pytest.mark.parametrize("profile", SINGLE_L40)
def test_llama_70b_does_not_fit_one_l40(profile: str) -> None:
    plan = plan_memory("llama3.1-70b", profile)
    assert not plan.fits
    assert plan.weights_gib == pytest.approx(70_553_706_496 * 2 / GIB, abs=1e-3)
    assert plan.kv_cache_gib < 0
    assert plan.max_concurrency == 0
    assert "scw-l40s-x4" in plan.reason
    assert "h100-x2" in plan.reason


@pytest.mark.parametrize(("profile", "tp"), [("scw-l40s-x4", 4), ("h100-x2", 2)])
def test_llama_70b_fits_with_tensor_parallel(profile: str, tp: int) -> None:
    plan = plan_memory("llama3.1-70b", profile)
    assert plan.fits, plan.reason
    assert plan.tensor_parallel_size == tp
    assert plan.weights_gib == pytest.approx(70_553_706_496 * 2 / tp / GIB, abs=1e-3)
    assert plan.kv_bytes_per_token == 80 * 2 * (8 // tp) * 128 * 2
    assert plan.max_concurrency > 1


def test_tensor_parallel_halves_weights_and_kv_per_token() -> None:
    one = plan_memory("qwen3-8b", "scw-l40s")
    two = plan_memory("qwen3-8b", _with("scw-l40s", gpu_count=2, tensor_parallel_size=2))
    assert two.weights_gib == pytest.approx(one.weights_gib / 2, abs=1e-3)
    assert two.kv_bytes_per_token == one.kv_bytes_per_token // 2
    assert two.budget_gib == one.budget_gib  # the budget is per GPU
    assert two.max_concurrency > 2 * one.max_concurrency


def test_kv_heads_are_replicated_when_fewer_than_tp() -> None:
    profile = _with("scw-l40s", gpu_count=16, tensor_parallel_size=16)
    plan = plan_memory("qwen3-8b", profile)  # 8 KV heads over 16 ranks: 1 head per rank
    assert plan.kv_bytes_per_token == 36 * 2 * 1 * 128 * 2


def test_pipeline_parallel_splits_layers() -> None:
    plan = plan_memory("qwen3-8b", _with("scw-l40s", gpu_count=2, pipeline_parallel_size=2))
    assert plan.pipeline_parallel_size == 2
    assert plan.kv_bytes_per_token == 18 * 2 * 8 * 128 * 2
    assert plan.weights_gib == pytest.approx(8_190_735_360 / GIB, abs=1e-3)
    odd = plan_memory("qwen3-8b", _with("scw-l40s", gpu_count=5, pipeline_parallel_size=5))
    assert odd.kv_bytes_per_token == 8 * 2 * 8 * 128 * 2  # ceil(36 / 5) layers on a stage


def test_longer_context_halves_concurrency_not_tokens() -> None:
    short = plan_memory("qwen3-8b", "scw-l40s", max_model_len=4096)
    long = plan_memory("qwen3-8b", "scw-l40s", max_model_len=8192)
    assert long.max_model_len == 8192
    assert long.kv_cache_tokens == short.kv_cache_tokens
    assert long.max_concurrency == pytest.approx(short.max_concurrency / 2, abs=0.002)


def test_more_sequences_cost_more_sampler_memory() -> None:
    few = plan_memory("qwen3-8b", "scw-l40s", max_num_seqs=64)
    many = plan_memory("qwen3-8b", "scw-l40s", max_num_seqs=256)
    extra = (256 - 64) * 151_936 * 4 * 5 / GIB  # rows x vocab x fp32 x copies
    assert few.max_num_seqs == 64
    assert many.activations_gib - few.activations_gib == pytest.approx(extra, abs=2e-3)
    assert few.max_concurrency > many.max_concurrency


def test_enforce_eager_drops_the_cuda_graph_estimate() -> None:
    graphs = plan_memory("qwen3-8b", "scw-l40s")
    eager = plan_memory("qwen3-8b", _with("scw-l40s", enforce_eager=True))
    assert graphs.overhead_gib - eager.overhead_gib == pytest.approx(36 * 12.75 / 1024, abs=2e-3)


def test_context_above_model_limit_does_not_fit() -> None:
    plan = plan_memory("qwen3-8b", "h100-x2", max_model_len=65536)  # Qwen3-8B: 40,960
    assert not plan.fits
    assert plan.max_concurrency > 1  # memory is not the problem
    assert "40,960" in plan.reason
    assert "max_model_len=40960" in plan.reason


def test_context_too_long_for_kv_suggests_a_shorter_one() -> None:
    plan = plan_memory("llama3.1-70b", "h100-x2", max_model_len=131072)
    assert not plan.fits
    assert 0 < plan.max_concurrency < 1
    assert plan.kv_cache_gib > 0
    shortest = plan.kv_cache_tokens  # uniform model: one request of this many tokens fits
    assert f"max_model_len={shortest}" in plan.reason
    assert plan_memory("llama3.1-70b", "h100-x2", max_model_len=shortest).fits
    assert not plan_memory("llama3.1-70b", "h100-x2", max_model_len=shortest + 1).fits


def test_gemma3_hybrid_kv_beats_full_attention_at_8k() -> None:
    gemma = get_model("gemma3-12b")
    hybrid = plan_memory(gemma, "scw-l40s", max_model_len=8192)
    naive = plan_memory(_full_attention(gemma), "scw-l40s", max_model_len=8192)
    assert hybrid.kv_cache_gib == naive.kv_cache_gib  # same weights and overhead
    assert hybrid.kv_bytes_per_token == naive.kv_bytes_per_token == 48 * 2 * 8 * 256 * 2
    # 1 full group of 512 blocks + 5 sliding groups of 321, against 6 groups x 512 (1 MiB blocks)
    assert hybrid.max_concurrency / naive.max_concurrency == pytest.approx(3072 / 2117, rel=2e-3)
    assert hybrid.max_concurrency > 6 > naive.max_concurrency > 4
    assert hybrid.fits


def test_gemma3_window_saves_nothing_at_4k() -> None:
    gemma = get_model("gemma3-12b")
    hybrid = plan_memory(gemma, "scw-l40s", max_model_len=4096)
    naive = plan_memory(_full_attention(gemma), "scw-l40s", max_model_len=4096)
    # window 1023 + 2 x 2048 tokens in flight > 4096: each sliding group holds the whole request
    assert hybrid.max_concurrency / naive.max_concurrency == pytest.approx(1536 / 1541, rel=2e-3)


def _tiny_spec(**arch: object) -> ModelSpec:
    dims: dict[str, object] = {
        "num_layers": 4,
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_attention_heads": 4,
        "num_kv_heads": 2,
        "head_dim": 64,
        "vocab_size": 1000,
        "max_position_embeddings": 4096,
    }
    return ModelSpec(
        name="tiny",
        repo_id="acme/tiny",
        params=10_000_000,
        dtype="bfloat16",
        arch=Architecture.model_validate({**dims, **arch}),
    )


def test_cpu_profile_on_a_hand_built_spec() -> None:
    plan = plan_memory(_tiny_spec(), "cpu")
    assert (plan.backend, plan.dtype, plan.tensor_parallel_size) == ("transformers", "float32", 1)
    assert plan.budget_gib == 16.0
    assert plan.weights_gib == pytest.approx(10_000_000 * 4 / GIB, abs=1e-3)
    assert plan.overhead_gib == 1.0  # runtime only: no CUDA graphs
    per_token = 4 * 2 * 2 * 64 * 4
    assert plan.kv_bytes_per_token == per_token
    activations = 2048 * (2 * 1024 + 4 * 256) * 4 + 32 * 1000 * 4 * 5  # 32 = cpu max_num_seqs
    free = 16 * GIB - 10_000_000 * 4 - activations - GIB
    assert plan.kv_cache_tokens == free // per_token  # block size 1
    assert plan.max_concurrency == pytest.approx(plan.kv_cache_tokens / 2048, abs=1e-3)
    assert plan.fits


def test_cpu_profile_ignores_sliding_windows_and_honours_auto_dtype() -> None:
    spec = _tiny_spec(sliding_window=128, num_sliding_layers=3)
    plan = plan_memory(spec, _with("cpu", dtype="auto"))
    assert plan.dtype == "bfloat16"
    assert plan.kv_cache_tokens == pytest.approx(plan.max_concurrency * 2048, abs=1)


def test_cpu_profile_refuses_an_8b_model_with_advice() -> None:
    plan = plan_memory("qwen3-8b", "cpu")
    assert not plan.fits
    assert "in RAM" in plan.reason
    assert "use profile" in plan.reason


def test_spec_without_architecture_raises() -> None:
    spec = ModelSpec(name="acme/unknown-7b", repo_id="acme/unknown-7b")
    with pytest.raises(InvalidParameter) as err:
        plan_memory(spec, "scw-l40s")
    assert err.value.param == "model"
    assert err.value.hint is not None
    assert "lcfin download" in err.value.hint


def test_repo_id_without_config_raises() -> None:
    with pytest.raises(InvalidParameter, match="architecture"):
        plan_memory("acme/not-downloaded", "scw-l40s")


@pytest.mark.parametrize(("max_model_len", "max_num_seqs"), [(0, None), (4096, -1)])
def test_non_positive_sizes_raise(max_model_len: int, max_num_seqs: int | None) -> None:
    with pytest.raises(InvalidParameter, match="must be positive"):
        plan_memory("qwen3-8b", "scw-l40s", max_model_len=max_model_len, max_num_seqs=max_num_seqs)


def test_user_catalog_profile(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        '[profiles.my-a100]\nbackend = "vllm"\ngpu_count = 1\ngpu_total_gib = 79.15\n'
        "gpu_memory_utilization = 0.9\nmax_model_len = 8192\n"
    )
    plan = plan_memory("llama3.1-8b", "my-a100", user_catalog=catalog)
    assert plan.profile == "my-a100"
    assert plan.budget_gib == pytest.approx(math.ceil(79.15 * GIB * 0.9) / GIB, abs=1e-3)
    assert plan.fits


def test_to_dict_is_json_serialisable() -> None:
    plan = plan_memory("gemma3-12b", "scw-l40s-x2")
    data = plan.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {f.name for f in dataclasses.fields(MemoryPlan)}
    assert data["fits"] is True
    assert data["tensor_parallel_size"] == 2


# -- vLLM's CPU build (the cpu-vllm profile) -------------------------------------------------

LLAMA_25M = Architecture(
    num_layers=8, hidden_size=512, intermediate_size=1376, num_attention_heads=8,
    num_kv_heads=4, head_dim=64, vocab_size=32000, max_position_embeddings=2048,
)  # fmt: skip


def test_cpu_vllm_reproduces_the_measured_kv_line_of_a_25m_llama() -> None:
    """VLLM-NOTES section 9: 'CPU KV cache size: 131,072 tokens, Maximum concurrency for 512
    tokens per request: 256.00x' for this Llama in fp32 with a 2 GiB KV cache."""
    spec = ModelSpec(name="llama-25m", repo_id="x/llama-25m", dtype="float32", arch=LLAMA_25M)
    prof = _with("cpu-vllm", max_model_len=512, max_num_seqs=256)
    plan = plan_memory(spec, prof)
    block = 128 * 2 * 4 * 64 * 4 * 8  # block_size x K,V x kv heads x head_dim x fp32 x layers
    assert plan.kv_cache_bytes == 2 * GIB == 1024 * block  # 256 requests x 4 blocks: the cap
    assert (plan.kv_cache_tokens, plan.max_concurrency) == (131_072, 256.0)
    assert plan.fits
    assert not plan.on_gpu
    assert "in RAM" in plan.reason


def test_a_single_row_cpu_vllm_profile_leaves_room_for_vllms_null_block() -> None:
    """vLLM refuses to start unless one request fits beside the block its pool holds back
    ("estimated maximum model length is 128" for a 256-token context in exactly 2 blocks)."""
    spec = ModelSpec(name="llama-25m", repo_id="x/llama-25m", dtype="float32", arch=LLAMA_25M)
    plan = plan_memory(spec, _with("cpu-vllm", max_model_len=256, max_num_seqs=1))
    block = 128 * 2 * 4 * 64 * 4 * 8
    assert plan.kv_cache_bytes == 3 * block  # 2 blocks of 128 tokens, and the null block
    assert plan.fits and plan.max_concurrency == 1.5  # as vLLM counts it: blocks / request


def test_cpu_vllm_kv_cache_is_what_the_ram_budget_leaves_when_that_is_less() -> None:
    spec = ModelSpec(name="llama-25m", repo_id="x/llama-25m", dtype="float32", arch=LLAMA_25M)
    prof = _with("cpu-vllm", max_model_len=512, max_num_seqs=256, ram_budget_gib=3.0)
    plan = plan_memory(spec, prof)
    left = 3.0 - plan.weights_gib - plan.activations_gib - plan.overhead_gib
    assert plan.overhead_gib == 2.0  # frontend + EngineCore + worker processes
    assert plan.kv_cache_gib == pytest.approx(left, abs=2e-3)
    assert plan.kv_cache_bytes % (2 * 2**20) == 0  # whole 2 MiB blocks
    assert 0 < plan.max_concurrency < 256
    starved = plan_memory(spec, _with("cpu-vllm", ram_budget_gib=2.0))
    assert not starved.fits
    assert "in RAM" in starved.reason


def test_the_demo_model_fits_cpu_vllm_in_a_small_share_of_its_budget() -> None:
    plan = plan_memory("demo", "cpu-vllm")
    assert plan.fits, plan.reason
    assert plan.max_concurrency == pytest.approx(32.0)  # capped at max_num_seqs
    assert plan.kv_cache_gib < 1.0  # not the whole 16 GiB RAM budget
