"""Settings: seed names, LCFIN_ names, precedence, token routing, secrets kept secret."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from lcfin.config import Settings, default_hf_home, get_settings

LC_TOKEN = "hf_lcSECRETlc0123456789"
HUB_TOKEN = "hf_hubSECREThub0123456789"


def test_seed_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_NAME", "qwen3-8b")
    monkeypatch.setenv("DEPLOYMENT_ENV", "huggingface")
    monkeypatch.setenv("USE_VLLM", "false")
    s = Settings()
    assert s.default_model == "qwen3-8b"
    assert s.profile_name == "hf-l40"
    assert s.use_vllm is False


@pytest.mark.parametrize(
    ("env", "profile"),
    [("huggingface", "hf-l40"), ("scaleway", "scw-l40s"), ("cpu", "cpu"), ("auto", "auto")],
)
def test_deployment_env_selects_profile(
    monkeypatch: pytest.MonkeyPatch, env: str, profile: str
) -> None:
    monkeypatch.setenv("DEPLOYMENT_ENV", env)
    assert Settings().profile_name == profile


def test_prefixed_name_beats_nothing_and_kwargs_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LCFIN_MODEL_NAME", "from-lcfin-env")
    assert Settings().default_model == "from-lcfin-env"
    assert Settings(default_model="from-flag").default_model == "from-flag"


def test_precedence_env_over_dotenv_over_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert Settings().log_level == "INFO"  # default
    (tmp_path / ".env").write_text("LCFIN_LOG_LEVEL=DEBUG\nMODEL_NAME=from-dotenv\n")
    s = Settings()
    assert s.log_level == "DEBUG"
    assert s.default_model == "from-dotenv"
    monkeypatch.setenv("LCFIN_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("MODEL_NAME", "from-env")
    s = Settings()
    assert s.log_level == "WARNING"
    assert s.default_model == "from-env"


def test_hf_home_from_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert Settings().hf_home == tmp_path / "hf-home"  # set by the autouse fixture
    assert Settings().hub_cache == tmp_path / "hf-home" / "hub"
    monkeypatch.delenv("HF_HOME")
    assert Settings().hf_home == default_hf_home()
    data = Path("/data")
    writable = data.is_dir() and __import__("os").access(data, __import__("os").W_OK)
    expected = data / ".huggingface" if writable else Path.home() / ".cache" / "huggingface"
    assert default_hf_home() == expected


def test_token_routing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN_LC", LC_TOKEN)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    s = Settings()
    assert s.token_for("LinguaCustodia/qwen3-8b-fin-v0.3") == LC_TOKEN
    assert s.token_for("meta-llama/Llama-3.1-8B") == HUB_TOKEN
    assert s.token_name_for("LinguaCustodia/x") == "HF_TOKEN_LC"
    assert s.token_name_for("org/x") == "HF_TOKEN"


def test_missing_token_sends_none_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    assert Settings().token_for("LinguaCustodia/x") is False


def test_secrets_never_in_repr_str_or_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HF_TOKEN_LC", LC_TOKEN)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    s = Settings()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("lcfin.test").info("settings: %s %r", s, s)
        text = f"{s} {s!r} {s.model_dump()} {s.model_dump_json()}"
    for secret in (LC_TOKEN, HUB_TOKEN):
        assert secret not in text
        assert secret not in caplog.text


def test_contradiction_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USE_VLLM", "true")
    monkeypatch.setenv("LCFIN_BACKEND", "transformers")
    with pytest.raises(ValidationError, match="contradicts"):
        Settings()


def test_use_vllm_with_the_cpu_profile_means_vllms_cpu_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USE_VLLM", "true")
    monkeypatch.setenv("DEPLOYMENT_ENV", "cpu")
    s = Settings()  # no longer a contradiction: the cpu profile's alternate is cpu-vllm
    assert (s.use_vllm, s.profile_name) == (True, "cpu")


def test_bad_value_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LCFIN_BACKEND", "tensorrt")
    with pytest.raises(ValidationError, match="backend"):
        Settings()


def test_get_settings_is_cached_and_resettable(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_settings()
    assert get_settings() is first
    monkeypatch.setenv("MODEL_NAME", "other")
    get_settings.cache_clear()
    assert get_settings().default_model == "other"


def test_every_field_has_a_description() -> None:
    missing = [n for n, f in Settings.model_fields.items() if not f.description]
    assert missing == []
