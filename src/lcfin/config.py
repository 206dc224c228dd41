"""Settings: every environment variable and `.env` key lcfin reads, in one place.

Seed names keep their names (`HF_TOKEN_LC`, `HF_TOKEN`, `MODEL_NAME`, `DEPLOYMENT_ENV`,
`USE_VLLM`, `HF_HOME`); everything new is `LCFIN_*`. Precedence: init kwargs (CLI flags) >
environment > `.env` > defaults. Obtain the process-wide object with `get_settings()`, never
at import time.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEPLOYMENT_ENV_PROFILES", "Settings", "get_settings"]

#: The seed's `DEPLOYMENT_ENV` values and the profile each one selects.
DEPLOYMENT_ENV_PROFILES = {"huggingface": "hf-l40", "scaleway": "scw-l40s", "koyeb": "scw-l40s"}

LINGUACUSTODIA_ORG = "LinguaCustodia/"


def _alias(seed: str, field: str) -> AliasChoices:
    return AliasChoices(field, f"LCFIN_{seed}", seed)


def default_hf_home() -> Path:
    """`/data/.huggingface` when `/data` is writable (persistent Space storage), else ~/.cache."""
    data = Path("/data")
    if data.is_dir() and os.access(data, os.W_OK):
        return data / ".huggingface"
    return Path.home() / ".cache" / "huggingface"


class Settings(BaseSettings):
    """lcfin configuration from init kwargs, the environment and `.env`."""

    model_config = SettingsConfigDict(
        env_prefix="LCFIN_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,
    )

    hf_token_lc: SecretStr | None = Field(
        None,
        validation_alias=_alias("HF_TOKEN_LC", "hf_token_lc"),
        description="Hub token for LinguaCustodia/* repositories (seed name HF_TOKEN_LC).",
    )
    hf_token: SecretStr | None = Field(
        None,
        validation_alias=_alias("HF_TOKEN", "hf_token"),
        description="Hub token for every other repository (seed name HF_TOKEN).",
    )
    default_model: str | None = Field(
        None,
        validation_alias=_alias("MODEL_NAME", "default_model"),
        description="Model loaded when none is named: alias, repo id or path (seed MODEL_NAME).",
    )
    deployment_env: str = Field(
        "auto",
        validation_alias=_alias("DEPLOYMENT_ENV", "deployment_env"),
        description=(
            "Hardware profile: 'huggingface' (hf-l40), 'scaleway' (scw-l40s), a profile name, "
            "or 'auto' to detect (seed DEPLOYMENT_ENV)."
        ),
    )
    use_vllm: bool | None = Field(
        None,
        validation_alias=_alias("USE_VLLM", "use_vllm"),
        description="Force (true) or forbid (false) the vLLM backend; unset lets 'auto' decide.",
    )
    hf_home: Path = Field(
        default_factory=default_hf_home,
        validation_alias=_alias("HF_HOME", "hf_home"),
        description="Model cache root; /data/.huggingface when /data is writable (seed HF_HOME).",
    )
    backend: Literal["auto", "transformers", "vllm"] = Field(
        "auto",
        description=(
            "Inference backend: auto (vLLM where the profile prefers it and it can run: a CUDA "
            "GPU, or vLLM's CPU build on the cpu-vllm profile), transformers or vllm."
        ),
    )
    catalog: Path | None = Field(
        None, description="A user TOML file whose [models.*] and [profiles.*] extend the catalog."
    )
    device: str = Field(
        "auto", description="Transformers backend device: auto, cpu, cuda or cuda:N."
    )
    offline: bool = Field(
        False, description="Never contact the hub; load only what is already in the cache."
    )
    trust_remote_code: bool = Field(
        False, description="Allow model repositories to run their own Python code (off by default)."
    )
    log_level: str = Field("INFO", description="Log level of the lcfin loggers.")

    # -- server ------------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Address `lcfin serve` binds to.")
    port: int = Field(
        8000,
        ge=1,
        le=65535,
        validation_alias=AliasChoices("port", "LCFIN_PORT", "PORT"),
        description="Port of `lcfin serve` (PORT is honoured: Hugging Face Spaces use 7860).",
    )
    api_keys: SecretStr | None = Field(
        None,
        description=(
            "Comma-separated API keys, or the path of a file with one key per line; when set, "
            "every route except /health and /health/ready needs `Authorization: Bearer <key>`."
        ),
    )
    admin_key: SecretStr | None = Field(
        None,
        description=(
            "Key for admin routes (/load-model). With API keys set and no admin key, admin "
            "routes are refused."
        ),
    )
    allow_any_model: bool = Field(
        False, description="Let /load-model load any hub repo id, not only catalog aliases."
    )
    force_include_usage: bool = Field(
        False, description="Always send the usage chunk in streams, even if the client did not ask."
    )
    cors_origins: str = Field(
        "", description="Comma-separated origins allowed by CORS ('*' for any); empty: no CORS."
    )
    max_body_bytes: int = Field(
        4 * 2**20, gt=0, description="Largest accepted request body in bytes (413 above)."
    )
    shutdown_timeout: float = Field(
        30.0, ge=0, description="Seconds SIGTERM waits for in-flight requests before exiting."
    )

    # -- reliability (docs/reliability.md) -----------------------------------------------------
    max_waiting: int = Field(
        64,
        ge=0,
        description=(
            "Requests that may wait for a place in the running batch (the profile's "
            "max_num_seqs); past running + waiting, new requests get 429 queue_full at once."
        ),
    )
    request_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds a generation may take (queue included) before it is aborted (504).",
    )
    max_messages: int = Field(
        1024, gt=0, description="Most messages one chat request may carry (400 above)."
    )
    on_engine_death: Literal["restart", "exit"] = Field(
        "restart",
        description=(
            "When the engine process dies (vLLM's EngineCore): 'restart' reloads the model in "
            "this process with backoff (1 s, doubling to 60 s); 'exit' makes `lcfin serve` exit "
            "with code 6 so that a supervisor restarts it. Meanwhile /health says failed."
        ),
    )
    rate_limits: str = Field(
        "",
        description=(
            "Per-key rate limits for generation routes, e.g. '60rpm,100000tpm' (requests and "
            "tokens per minute); keyed by API key id, or by client IP without keys; empty: off."
        ),
    )

    # -- telemetry (docs/analytics.md) ---------------------------------------------------------
    usage_db: str | None = Field(
        None,
        description=(
            "Usage ledger: a SQLite file path, or an SQLAlchemy URL (postgresql://...) shared "
            "by replicas; 'off' disables it. Default: lcfin/usage.db next to the HF_HOME "
            "directory (~/.cache/lcfin/usage.db, or /data/lcfin/usage.db on Spaces)."
        ),
    )
    usage_flush_interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds between ledger writes; a crash loses at most this much.",
    )
    audit: bool = Field(
        False,
        description=(
            "Audit log: also store each request's prompt and response text in the ledger "
            "(off by default; see docs/analytics.md)."
        ),
    )
    audit_retention_days: float = Field(
        30.0,
        gt=0,
        description="Days audit texts are kept; older ones are purged (hourly and at start).",
    )

    # -- Responses API (docs/server.md) ---------------------------------------------------------
    response_store: bool = Field(
        True,
        description=(
            "Keep responses created with `store: true` (the Responses API's default) in the "
            "usage database, for `previous_response_id` and GET/DELETE /v1/responses/{id}; "
            "false (or LCFIN_USAGE_DB=off): responses are never stored and `store: true` is a 400."
        ),
    )
    response_store_ttl_s: float = Field(
        3600.0,
        gt=0,
        description="Seconds a stored response is kept; then it is deleted (GET answers 404).",
    )
    response_store_max_bytes: int = Field(
        256 * 2**20,
        gt=0,
        description="Total size of the stored responses; past it the oldest are deleted first.",
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.use_vllm is True and self.backend == "transformers":
            raise ValueError("USE_VLLM=true contradicts LCFIN_BACKEND=transformers")
        return self

    @property
    def profile_name(self) -> str:
        """The profile `deployment_env` selects ('auto' means: detect the hardware)."""
        env = self.deployment_env.strip().lower()
        return DEPLOYMENT_ENV_PROFILES.get(env, env)

    @property
    def hub_cache(self) -> Path:
        """The huggingface_hub cache directory under `hf_home`."""
        return self.hf_home / "hub"

    def token_for(self, repo_id: str) -> str | bool:
        """The token to send for `repo_id`: HF_TOKEN_LC for LinguaCustodia, else HF_TOKEN.

        Returns False (send no token, ignore stored logins) when the relevant one is unset.
        """
        secret = self.hf_token_lc if repo_id.startswith(LINGUACUSTODIA_ORG) else self.hf_token
        return secret.get_secret_value() if secret is not None else False

    def api_key_list(self) -> list[str]:
        """The configured API keys (from the comma list or the key file); empty: auth off."""
        if self.api_keys is None:
            return []
        raw = self.api_keys.get_secret_value().strip()
        path = Path(raw).expanduser()
        if "," not in raw and path.is_file():
            lines = path.read_text().splitlines()
            return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
        return [key.strip() for key in raw.split(",") if key.strip()]

    def usage_db_target(self) -> str | None:
        """The ledger's SQLite path or SQLAlchemy URL; None when it is off."""
        value = (self.usage_db or "").strip()
        if value.lower() in ("off", "none", "false", "0"):
            return None
        if value:
            return value
        return str(self.hf_home.expanduser().parent / "lcfin" / "usage.db")

    def token_name_for(self, repo_id: str) -> str:
        """The environment variable that holds the token for `repo_id` (for error messages)."""
        return "HF_TOKEN_LC" if repo_id.startswith(LINGUACUSTODIA_ORG) else "HF_TOKEN"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (`get_settings.cache_clear()` in tests)."""
    return Settings()
