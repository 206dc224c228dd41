"""The model catalog: lookup by alias, repo id and directory; user files; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lcfin import InvalidCatalog, ModelNotFound, get_model, list_models
from lcfin.engine.registry import arch_from_config

SEED_MODELS = {
    "llama3.1-8b": "LinguaCustodia/llama3.1-8b-fin-v0.3",
    "qwen3-8b": "LinguaCustodia/qwen3-8b-fin-v0.3",
    "fin-pythia-1.4b": "LinguaCustodia/fin-pythia-1.4b",
}


@pytest.mark.parametrize(("alias", "repo"), SEED_MODELS.items())
def test_seed_models(alias: str, repo: str) -> None:
    spec = get_model(alias)
    assert spec.repo_id == repo
    assert spec.arch is not None
    assert get_model(repo) == spec  # lookup by repo id finds the same entry


def test_catalog_has_every_seed_model_with_dims() -> None:
    models = list_models()
    assert {
        "demo",
        "llama3.1-8b",
        "qwen3-8b",
        "fin-pythia-1.4b",
        "gemma3-12b",
        "llama3.1-70b",
    } <= set(models)
    for name, spec in models.items():
        if name == "demo":
            continue
        assert spec.arch is not None
        assert spec.params is not None and spec.params > 1e9


@pytest.mark.parametrize("alias", ["llama3.1-8b", "llama3.1-70b"])
def test_param_counts_match_architecture(alias: str) -> None:
    spec = get_model(alias)
    assert spec.arch is not None
    assert spec.arch.estimate_params() == spec.params


def test_published_dims() -> None:
    qwen = get_model("qwen3-8b").arch
    gemma = get_model("gemma3-12b").arch
    assert qwen is not None and gemma is not None
    assert (qwen.num_layers, qwen.num_kv_heads, qwen.head_dim) == (36, 8, 128)
    assert (gemma.num_layers, gemma.num_sliding_layers, gemma.sliding_window) == (48, 40, 1024)


def test_unknown_alias_suggests_close_match() -> None:
    with pytest.raises(ModelNotFound, match="qwen3-8b") as info:
        get_model("qwen3-9b")
    assert isinstance(info.value, LookupError)
    assert info.value.model == "qwen3-9b"


@pytest.mark.parametrize("name", ["../../etc/passwd", "not a model", "a/b/c/d"])
def test_garbage_names_are_not_found(name: str) -> None:
    with pytest.raises(ModelNotFound):
        get_model(name)


def test_any_repo_id_is_accepted_without_dims() -> None:
    spec = get_model("mistralai/Mistral-7B-v0.1")
    assert spec.repo_id == "mistralai/Mistral-7B-v0.1"
    assert spec.arch is None
    assert not spec.in_catalog


def test_local_directory_reads_config(llama_dir: Path) -> None:
    spec = get_model(str(llama_dir))
    assert spec.source_dir == llama_dir.resolve()
    assert spec.arch is not None and spec.arch.num_layers == 2
    assert spec.params is not None and 10_000 < spec.params < 5_000_000


def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match=r"config\.json"):
        get_model(str(tmp_path / "empty"))


def test_arch_from_gemma3_multimodal_config() -> None:
    config = {
        "model_type": "gemma3",
        "text_config": {
            "hidden_size": 3840,
            "num_hidden_layers": 48,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 256,
            "vocab_size": 262208,
            "intermediate_size": 15360,
            "sliding_window": 1024,
            "sliding_window_pattern": 6,
        },
    }
    arch = arch_from_config(config)
    assert (arch.num_layers, arch.num_sliding_layers, arch.head_dim) == (48, 40, 256)


def test_arch_from_gpt_neox_config() -> None:
    arch = arch_from_config(
        {
            "model_type": "gpt_neox",
            "hidden_size": 2048,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "vocab_size": 50304,
            "intermediate_size": 8192,
        }
    )
    assert arch.num_kv_heads == 16 and arch.head_dim == 128 and not arch.gated_mlp


def test_user_catalog_adds_and_overrides(tmp_path: Path) -> None:
    user = tmp_path / "mine.toml"
    user.write_text(
        '[models.my-model]\nrepo_id = "acme/fin-7b"\nparams = 7000000000\n'
        '[models."qwen3-8b"]\nrepo_id = "acme/qwen-mirror"\n'
    )
    models = list_models(user)
    assert models["my-model"].repo_id == "acme/fin-7b"
    assert models["qwen3-8b"].repo_id == "acme/qwen-mirror"


def test_a_partial_user_entry_merges_with_the_shipped_one(tmp_path: Path) -> None:
    from lcfin import list_profiles

    user = tmp_path / "prices.toml"
    user.write_text(
        "[models.demo]\nprice_per_1m_prompt_usd = 0.5\nprice_per_1m_completion_usd = 1.5\n"
        '[models."qwen3-8b".arch]\nmax_position_embeddings = 32768\n'
        "[profiles.cpu]\nhourly_cost_usd = 0.42\n"
    )
    shipped, merged = list_models()["demo"], list_models(user)["demo"]
    assert merged.price_per_1m_prompt_usd == 0.5 and merged.price_per_1m_completion_usd == 1.5
    assert merged.model_copy(
        update={"price_per_1m_prompt_usd": None, "price_per_1m_completion_usd": None}
    ) == shipped.model_copy(
        update={"price_per_1m_prompt_usd": None, "price_per_1m_completion_usd": None}
    )
    qwen = list_models(user)["qwen3-8b"]
    assert qwen.arch is not None and qwen.arch.max_position_embeddings == 32768
    assert qwen.arch.num_layers == 36 and qwen.repo_id == "LinguaCustodia/qwen3-8b-fin-v0.3"
    cpu = list_profiles(user)["cpu"]
    assert cpu.hourly_cost_usd == 0.42 and cpu.backend == "transformers"


def test_bad_user_catalog_names_file_table_and_field(tmp_path: Path) -> None:
    user = tmp_path / "bad.toml"
    user.write_text('[models.broken]\nrepo_id = "acme/x"\nparams = -5\n')
    with pytest.raises(InvalidCatalog) as info:
        list_models(user)
    message = str(info.value)
    assert str(user) in message and "[models.broken]" in message and "params" in message


def test_unknown_field_in_user_catalog(tmp_path: Path) -> None:
    user = tmp_path / "typo.toml"
    user.write_text('[models.x]\nrepo_id = "acme/x"\nparamz = 5\n')
    with pytest.raises(InvalidCatalog, match="paramz"):
        list_models(user)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    user = tmp_path / "syntax.toml"
    user.write_text("[models.x\n")
    with pytest.raises(InvalidCatalog, match="not valid TOML"):
        list_models(user)
    with pytest.raises(InvalidCatalog, match="does not exist"):
        list_models(tmp_path / "missing.toml")


def test_local_dir_with_broken_config(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(InvalidCatalog, match="config"):
        get_model(str(tmp_path / "m"))
