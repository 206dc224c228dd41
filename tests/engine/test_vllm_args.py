"""Profile + model -> vLLM engine arguments, for every shipped profile; and the pre-flight check.

The mapping is pure, so it is tested here without vLLM; in `nox -s vllm` (vLLM's CPU build) a
contract test also builds the real `AsyncEngineArgs` from the arguments.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lcfin import (
    DoesNotFit,
    InvalidParameter,
    Settings,
    get_model,
    list_profiles,
    load_profile,
    plan_memory,
)
from lcfin.engine import profiles as profiles_mod
from lcfin.engine.planner import check_fits
from lcfin.engine.profiles import GpuInfo, effective_profile
from lcfin.engine.registry import spec_from_directory
from lcfin.engine.vllm.args import engine_args, executor_backend, is_multimodal_checkpoint

PROFILES = sorted(list_profiles())
VLLM_PROFILES = sorted(n for n, p in list_profiles().items() if p.backend == "vllm")

#: The seed's vLLM settings (hf-l40 = DEPLOYMENT_ENV=huggingface, scw-l40s = scaleway), and the
#: parallel layouts of the multi-GPU and multi-node profiles.
EXPECTED = {
    "hf-l40": {
        "gpu_memory_utilization": 0.75,
        "max_model_len": 2048,
        "enforce_eager": True,
        "disable_custom_all_reduce": True,
        "dtype": "bfloat16",
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "distributed_executor_backend": None,
        "max_num_seqs": 256,
    },
    "scw-l40s": {
        "gpu_memory_utilization": 0.85,
        "max_model_len": 4096,
        "enforce_eager": False,
        "disable_custom_all_reduce": False,
        "dtype": "bfloat16",
        "tensor_parallel_size": 1,
        "distributed_executor_backend": None,
    },
    "scw-l40s-x2": {"tensor_parallel_size": 2, "distributed_executor_backend": "mp"},
    "scw-l40s-x4": {
        "tensor_parallel_size": 4,
        "distributed_executor_backend": "mp",
        "max_num_seqs": 128,
    },
    "h100-x2": {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.92},
    "cpu-vllm": {
        "max_model_len": 2048,
        "enforce_eager": True,
        "dtype": "float32",
        "block_size": 128,
        "distributed_executor_backend": None,  # vLLM's CPU build picks "mp" itself
        "max_num_seqs": 32,
    },
    "ray-h100-2x4": {
        "tensor_parallel_size": 4,
        "pipeline_parallel_size": 2,
        "distributed_executor_backend": "ray",
        "max_model_len": 32768,
    },
}


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_maps_its_fields(name: str, settings: Settings) -> None:
    prof = load_profile(name)
    spec = get_model("llama3.1-70b")  # 131,072 tokens of context: the profile's length wins
    kw = engine_args(spec, prof, settings)
    if prof.is_gpu:
        assert kw["gpu_memory_utilization"] == prof.gpu_memory_utilization
        assert "kv_cache_memory_bytes" not in kw
    else:  # vLLM's CPU build: the planner's KV cache, never a fraction of the machine's RAM
        assert "gpu_memory_utilization" not in kw
        assert kw["kv_cache_memory_bytes"] == max(1, plan_memory(spec, prof).kv_cache_bytes)
    assert kw["max_model_len"] == prof.max_model_len
    assert kw["enforce_eager"] is prof.enforce_eager
    assert kw["disable_custom_all_reduce"] is prof.disable_custom_all_reduce
    assert kw["dtype"] == prof.dtype
    assert kw["tensor_parallel_size"] == prof.tensor_parallel_size
    assert kw["pipeline_parallel_size"] == prof.pipeline_parallel_size
    assert kw["max_num_seqs"] == prof.max_num_seqs
    assert kw["max_num_batched_tokens"] == prof.max_num_batched_tokens
    assert kw["enable_prefix_caching"] is prof.enable_prefix_caching
    assert kw["distributed_executor_backend"] == executor_backend(prof)
    assert kw["download_dir"] == str(settings.hub_cache)
    assert kw["disable_log_stats"] is True  # lcfin's own stat logger reads the scheduler
    # compact JSON, engine-wide, with a named backend (vLLM ignores the per-request flag)
    assert kw["structured_outputs_config"] == {
        "backend": "xgrammar",
        "disable_any_whitespace": True,
    }
    assert kw["trust_remote_code"] is False
    assert kw["served_model_name"] == "llama3.1-70b"
    if prof.block_size == 16:
        assert "block_size" not in kw  # 16: vLLM chooses
    else:
        assert kw["block_size"] == prof.block_size
    assert ("enable_sleep_mode" in kw) is prof.is_gpu  # LCFIN_SLEEP_MODE=auto: CUDA GPUs only
    assert "language_model_only" not in kw
    for key, value in EXPECTED.get(name, {}).items():
        assert kw[key] == value, key


def test_every_vllm_profile_is_pinned_here() -> None:
    assert set(VLLM_PROFILES) == set(EXPECTED)


@pytest.mark.parametrize(
    ("tp", "pp", "nodes", "gpus", "expected"),
    [(1, 1, 1, 1, None), (2, 1, 1, 2, "mp"), (1, 2, 1, 2, "mp"), (4, 2, 2, 4, "ray")],
)
def test_executor_backend(tp, pp, nodes, gpus, expected) -> None:
    prof = load_profile("h100-x2").model_copy(
        update={
            "tensor_parallel_size": tp,
            "pipeline_parallel_size": pp,
            "num_nodes": nodes,
            "gpu_count": gpus,
        }
    )
    assert executor_backend(prof) == expected


def test_ray_profile_spans_two_nodes_and_fits_llama_70b() -> None:
    from lcfin import plan_memory

    prof = load_profile("ray-h100-2x4")
    assert (prof.num_nodes, prof.gpu_count, prof.multi_node) == (2, 4, True)
    plan = plan_memory("llama3.1-70b", prof)
    assert plan.fits, plan.reason
    assert plan.weights_gib == pytest.approx(70_553_706_496 * 2 / 2**30 / 8, abs=1e-3)


def test_auto_never_picks_the_multi_node_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    four = [GpuInfo("NVIDIA H100 80GB HBM3", 79.19)] * 4
    monkeypatch.setattr(profiles_mod, "detect_gpus", lambda: four)
    assert not load_profile("auto").multi_node


def test_local_snapshot_is_the_model_and_tokenizer(settings: Settings, tmp_path: Path) -> None:
    spec = get_model("qwen3-8b").model_copy(update={"revision": "abc123"})
    kw = engine_args(spec, load_profile("scw-l40s"), settings, model_dir=tmp_path)
    assert kw["model"] == kw["tokenizer"] == str(tmp_path)
    assert kw["revision"] is None  # the snapshot already is that revision
    without = engine_args(spec, load_profile("scw-l40s"), settings)
    assert without["model"] == without["tokenizer"] == "LinguaCustodia/qwen3-8b-fin-v0.3"
    assert without["revision"] == "abc123"


def test_bundled_model_uses_its_directory(settings: Settings) -> None:
    spec = get_model("demo")
    kw = engine_args(spec, load_profile("scw-l40s"), settings)
    assert kw["model"] == str(spec.source_dir)


def test_max_model_len_is_capped_by_the_model(settings: Settings) -> None:
    pythia = get_model("fin-pythia-1.4b")  # max_position_embeddings 2048
    assert engine_args(pythia, load_profile("scw-l40s"), settings)["max_model_len"] == 2048
    shorter = engine_args(pythia, load_profile("scw-l40s"), settings, max_model_len=1024)
    assert shorter["max_model_len"] == 1024


def test_profile_overrides_and_pass_through_options(settings: Settings) -> None:
    spec = get_model("qwen3-8b")
    kw = engine_args(
        spec,
        load_profile("scw-l40s"),
        settings,
        gpu_memory_utilization=0.5,
        enforce_eager=True,
        block_size=32,
        kv_cache_dtype="fp8",
        enable_sleep_mode=True,
    )
    assert (kw["gpu_memory_utilization"], kw["enforce_eager"]) == (0.5, True)
    assert kw["block_size"] == 32
    assert kw["kv_cache_dtype"] == "fp8"  # unknown to lcfin: vLLM validates it
    assert kw["enable_sleep_mode"] is True


@pytest.mark.parametrize("key", ["hf_token", "model", "download_dir"])
def test_reserved_options_are_refused(settings: Settings, key: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        engine_args(get_model("qwen3-8b"), load_profile("scw-l40s"), settings, **{key: "x"})
    assert info.value.param == key


def test_invalid_profile_override_names_the_field() -> None:
    with pytest.raises(InvalidParameter) as info:
        effective_profile(load_profile("scw-l40s"), {"gpu_memory_utilization": 1.5})
    assert info.value.param == "gpu_memory_utilization"
    assert (
        effective_profile(load_profile("scw-l40s"), {"max_model_len": None}).max_model_len == 4096
    )


def test_tokens_never_reach_the_engine_arguments() -> None:
    settings = Settings(hf_token_lc="hf_lc_secret_123", hf_token="hf_other_secret_456")
    for name in ("qwen3-8b", "llama3.1-8b"):
        kw = engine_args(get_model(name), load_profile("scw-l40s"), settings)
        text = repr(kw)
        assert "secret" not in text
        assert "hf_token" not in kw


def test_trust_remote_code_follows_settings() -> None:
    kw = engine_args(
        get_model("qwen3-8b"), load_profile("hf-l40"), Settings(trust_remote_code=True)
    )
    assert kw["trust_remote_code"] is True


def _gemma3_multimodal_dir(tmp_path: Path) -> Path:
    """A config.json shaped like Gemma 3 12B's (text_config + vision_config), no weights."""
    text = {
        "hidden_size": 3840,
        "intermediate_size": 15360,
        "num_attention_heads": 16,
        "num_hidden_layers": 48,
        "num_key_value_heads": 8,
        "head_dim": 256,
        "vocab_size": 262208,
        "sliding_window": 1024,
        "sliding_window_pattern": 6,
        "max_position_embeddings": 131072,
    }
    config = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": text,
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152},
        "torch_dtype": "bfloat16",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_gemma3_with_a_vision_tower_loads_language_model_only(settings, tmp_path) -> None:
    model_dir = _gemma3_multimodal_dir(tmp_path)
    assert is_multimodal_checkpoint(model_dir)
    spec = spec_from_directory(model_dir, name="gemma3-12b")
    kw = engine_args(spec, load_profile("scw-l40s-x2"), settings, model_dir=model_dir)
    assert kw["language_model_only"] is True


def test_text_only_checkpoints_load_as_they_are(settings, tiny_models) -> None:
    for arch in ("gemma3", "llama"):
        directory = tiny_models[arch]
        assert not is_multimodal_checkpoint(directory)
        spec = spec_from_directory(directory)
        kw = engine_args(spec, load_profile("scw-l40s"), settings, model_dir=directory)
        assert "language_model_only" not in kw
        assert kw["max_model_len"] == 256  # the tiny models' max_position_embeddings
    assert not is_multimodal_checkpoint(None)


# -- pre-flight --------------------------------------------------------------------------------


def test_check_fits_refuses_70b_on_one_l40_with_the_breakdown(settings: Settings) -> None:
    with pytest.raises(DoesNotFit) as info:
        check_fits(get_model("llama3.1-70b"), load_profile("hf-l40"), settings, max_model_len=None)
    err = info.value
    assert err.model == "llama3.1-70b"
    assert "131.4 GiB of weights" in err.message
    assert "33.4 GiB budget" in err.message
    assert err.hint is not None
    assert "h100-x2" in err.hint
    assert "smaller model" in err.hint
    assert err.exit_code == 3
    assert err.http_status == 422


def test_check_fits_refuses_a_context_beyond_the_model(settings: Settings) -> None:
    with pytest.raises(DoesNotFit, match="max_position_embeddings"):
        check_fits(get_model("qwen3-8b"), load_profile("h100-x2"), settings, max_model_len=65536)


def test_check_fits_returns_the_plan(settings: Settings) -> None:
    plan = check_fits(get_model("qwen3-8b"), load_profile("scw-l40s"), settings, max_model_len=None)
    assert plan.fits
    assert plan.max_concurrency > 30


# -- contract with the real vLLM -----------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.parametrize("name", VLLM_PROFILES)
def test_real_async_engine_args_accept_the_mapping(name: str, settings, tiny_models) -> None:
    from lcfin.engine.vllm.backend import _vllm_api

    spec = spec_from_directory(tiny_models["llama"])
    kwargs = engine_args(spec, load_profile(name), settings, model_dir=tiny_models["llama"])
    args = _vllm_api()["engine_args"](kwargs)  # the real AsyncEngineArgs
    config = kwargs.pop("structured_outputs_config")
    for key, value in kwargs.items():
        assert getattr(args, key) == value, key
    built = args.structured_outputs_config  # a StructuredOutputsConfig, validated by vLLM
    assert (built.backend, built.disable_any_whitespace) == (
        config["backend"],
        config["disable_any_whitespace"],
    )
