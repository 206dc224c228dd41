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

from lcfin.errors import InvalidParameter

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

    # -- model switching (docs/switching.md) ---------------------------------------------------
    sleep_mode: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "Build vLLM engines with sleep mode, so that a model switched away from can sleep "
            "in host RAM (the warm tier): auto = on CUDA GPU profiles only, where vLLM supports "
            "it; on (refused without a GPU); off."
        ),
    )
    warm_models: int = Field(
        1,
        ge=0,
        le=8,
        description=(
            "Models kept asleep in the warm tier (vLLM sleep mode, level 1: weights in host "
            "RAM, woken in seconds instead of reloaded) when host RAM allows; 0 turns it off."
        ),
    )

    # -- server ------------------------------------------------------------------------------
    host: str = Field(
        "127.0.0.1",
        description=(
            "Address `lcfin serve` binds to; a non-loopback one (0.0.0.0) needs API keys or "
            "LCFIN_ALLOW_UNAUTHENTICATED."
        ),
    )
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
            "Comma-separated API keys, or the path of a file with one key per line (a value "
            "starting with /, ~ or . is a path; a missing, unreadable or empty file refuses to "
            "start); when set, every route except /health and /health/ready needs "
            "`Authorization: Bearer <key>`."
        ),
    )
    admin_key: SecretStr | None = Field(
        None,
        description=(
            "Key for admin routes (/load-model, /metrics, /analytics). With API keys set, or a "
            "non-loopback bind, and no admin key, admin routes are refused."
        ),
    )
    allow_unauthenticated: bool = Field(
        False,
        description=(
            "Let `lcfin serve` listen beyond loopback with no API keys (every non-admin route "
            "open to the network; a warning at every start); off: such a bind refuses to start."
        ),
    )
    allowed_hosts: str = Field(
        "",
        description=(
            "Comma-separated Host header names accepted besides the loopback names "
            "('*.example.com' wildcards, '*' for any); checked while API keys are off, and "
            "always once set (stops DNS rebinding)."
        ),
    )
    trusted_proxies: str = Field(
        "",
        description=(
            "Comma-separated proxy addresses (IPs or CIDRs) whose X-Forwarded-For / "
            "X-Forwarded-Proto are believed; empty: none, the TCP peer is the client."
        ),
    )
    allow_any_model: bool = Field(
        False,
        description=(
            "Let /load-model load any hub repo id (org/name), not only catalog aliases; never "
            "a local directory (see LCFIN_LOCAL_MODELS_ROOT)."
        ),
    )
    local_models_root: Path | None = Field(
        None,
        description=(
            "Directory whose model sub-directories /load-model may load by path; unset: "
            "clients cannot load local directories."
        ),
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
    ui: bool = Field(
        True,
        description=(
            "Serve the web console (chat playground and operations dashboard) at /ui. The page "
            "holds no data and every API call it makes needs the same keys as any client "
            "(docs/ui.md); false: /ui and / answer 404."
        ),
    )
    ui_frame_ancestors: str = Field(
        "",
        description=(
            "Origins allowed to show the console in a frame (CSP frame-ancestors), e.g. "
            "'https://huggingface.co' for a Space page; empty: no framing."
        ),
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
    max_prompts: int = Field(
        32,
        gt=0,
        description=(
            "Most prompts one /v1/completions request may list (400 naming `prompt` above); "
            "a list is admitted, rate-limited and cancelled as a unit."
        ),
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
            "Per-key rate limits for generation routes, e.g. '60rpm,100000tpm' (requests, each "
            "prompt of a list counting as one, and tokens per minute); keyed by API key id, or "
            "by client address without keys; empty: off."
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
        if self.sleep_mode == "on" and self.profile_name == "cpu":
            raise ValueError("LCFIN_SLEEP_MODE=on needs a CUDA GPU; the 'cpu' profile has none")
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
        """The configured API keys (from the comma list or the key file); empty: auth off.

        Raises:
            InvalidParameter: LCFIN_API_KEYS is set but names a missing, unreadable or empty
                file, or holds no key: auth must never switch off (or on a wrong key) silently.
        """
        if self.api_keys is None:
            return []
        raw = self.api_keys.get_secret_value().strip()
        if "," not in raw and (raw.startswith(KEY_FILE_PREFIXES) or Path(raw).is_file()):
            keys = _read_key_file(Path(raw).expanduser())
        else:
            keys = [key.strip() for key in raw.split(",") if key.strip()]
        if not keys:
            raise InvalidParameter(
                "LCFIN_API_KEYS is set but holds no key",
                param="LCFIN_API_KEYS",
                hint="give comma-separated keys or a file with one key per line, or unset it",
            )
        return keys

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


#: A LCFIN_API_KEYS value starting with one of these is a key file's path, never a key.
KEY_FILE_PREFIXES = ("/", "~", ".")


def _read_key_file(path: Path) -> list[str]:
    """The keys of a key file: one per line, blank lines and `#` comments skipped."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = "does not exist" if isinstance(exc, FileNotFoundError) else "cannot be read"
        raise InvalidParameter(
            f"LCFIN_API_KEYS names a key file that {reason} ({type(exc).__name__})",
            param="LCFIN_API_KEYS",
            hint="fix the path or the file's permissions; the server will not start without it",
        ) from None
    keys = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not keys:
        raise InvalidParameter(
            "LCFIN_API_KEYS names a key file with no key in it",
            param="LCFIN_API_KEYS",
            hint="put one key per line in the file (lines starting with # are comments)",
        )
    return keys


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (`get_settings.cache_clear()` in tests)."""
    return Settings()
