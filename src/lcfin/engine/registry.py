"""Model specs and the one lookup: `get_model(name)` by alias, repo id or local directory."""

from __future__ import annotations

import difflib
import json
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lcfin.engine.catalog_io import catalog_dir, load_entries
from lcfin.errors import InvalidCatalog, ModelNotFound

if TYPE_CHECKING:
    from lcfin.config import Settings

__all__ = [
    "Architecture",
    "ModelSpec",
    "arch_from_config",
    "complete_spec",
    "get_model",
    "is_repo_id",
    "list_models",
    "spec_from_directory",
]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "fp8": 1, "int8": 1}


class Architecture(BaseModel):
    """The dimensions the memory planner needs, as in the model's config.json."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=0)
    tie_word_embeddings: bool = False
    gated_mlp: bool = True
    sliding_window: int | None = Field(None, gt=0)
    num_sliding_layers: int = Field(0, ge=0)

    def estimate_params(self) -> int:
        """Parameter count from the dimensions (embeddings, attention, MLP, norms)."""
        h, q, kv = self.hidden_size, self.num_attention_heads, self.num_kv_heads
        attn = h * q * self.head_dim * 2 + h * kv * self.head_dim * 2
        mlp = h * self.intermediate_size * (3 if self.gated_mlp else 2)
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return embed + self.num_layers * (attn + mlp + 2 * h) + h


class ModelSpec(BaseModel):
    """One servable model: where it comes from and what the planner needs to know."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    repo_id: str
    display_name: str = ""
    description: str = ""
    params: int | None = Field(None, gt=0)
    dtype: Literal["float32", "float16", "bfloat16"] = "bfloat16"
    gated: bool = False
    demo: bool = False
    chat_format: Literal["template", "plain"] = "template"
    tool_call_format: str | None = None
    revision: str | None = None
    bundled_path: str | None = None
    local_path: Path | None = None
    arch: Architecture | None = None
    price_per_1m_prompt_usd: float | None = Field(None, ge=0)
    price_per_1m_completion_usd: float | None = Field(None, ge=0)

    @property
    def source_dir(self) -> Path | None:
        """The local directory holding the weights, when no download is needed."""
        if self.bundled_path is not None:
            return catalog_dir() / self.bundled_path
        return self.local_path

    @property
    def in_catalog(self) -> bool:
        """Whether the spec is a catalog entry (not an ad-hoc repo id or directory)."""
        return self.local_path is None and self.name != self.repo_id

    def param_count(self) -> int | None:
        """Known or estimated parameter count, None when the architecture is unknown."""
        if self.params is not None:
            return self.params
        return self.arch.estimate_params() if self.arch is not None else None


def _first(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def arch_from_config(config: dict[str, Any]) -> Architecture:
    """An `Architecture` from a Hugging Face config.json dict (text_config for multimodal)."""
    cfg = {**config, **config.get("text_config", {})}
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    layer_types = cfg.get("layer_types") or []
    sliding = sum(1 for t in layer_types if t == "sliding_attention")
    pattern = cfg.get("sliding_window_pattern")
    if not layer_types and cfg.get("sliding_window") and pattern:
        sliding = int(cfg["num_hidden_layers"]) - int(cfg["num_hidden_layers"]) // int(pattern)
    return Architecture(
        num_layers=int(cfg["num_hidden_layers"]),
        hidden_size=hidden,
        intermediate_size=int(_first(cfg, "intermediate_size", default=4 * hidden)),
        num_attention_heads=heads,
        num_kv_heads=int(_first(cfg, "num_key_value_heads", default=heads)),
        head_dim=int(_first(cfg, "head_dim", default=hidden // heads)),
        vocab_size=int(cfg["vocab_size"]),
        max_position_embeddings=int(_first(cfg, "max_position_embeddings", default=2048)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        gated_mlp=cfg.get("model_type") not in {"gpt_neox", "gpt2", "gptj"},
        sliding_window=cfg.get("sliding_window") if sliding else None,
        num_sliding_layers=sliding,
    )


def _safetensors_params(directory: Path) -> int | None:
    """Exact parameter count from the safetensors headers (no tensor data is read)."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    try:
        for file in files:
            with file.open("rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
            for key, meta in header.items():
                if key != "__metadata__":
                    count = 1
                    for dim in meta["shape"]:
                        count *= dim
                    total += count
    except (struct.error, ValueError, KeyError, TypeError, OSError):
        return None  # a damaged file: estimate from the config; loading will report it
    return total


def _torch_dtype(config: dict[str, Any]) -> str:
    dtype = str(_first(config, "torch_dtype", "dtype", default="float32"))
    return dtype if dtype in {"float32", "float16", "bfloat16"} else "float32"


def spec_from_directory(directory: Path, *, name: str | None = None) -> ModelSpec:
    """A spec for a local model directory, its dimensions read from its config.json."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ModelNotFound(
            f"Directory {directory} has no config.json, so it is not a model directory",
            model=str(directory),
            hint="point at a directory written by save_pretrained",
        )
    try:
        config = json.loads(config_file.read_text())
        arch = arch_from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCatalog(
            f"{config_file} is not a usable model config ({exc})", model=str(directory)
        ) from None
    return ModelSpec(
        name=name or str(directory),
        repo_id=str(directory),
        display_name=directory.name,
        params=_safetensors_params(directory) or arch.estimate_params(),
        dtype=_torch_dtype(config),
        local_path=None if name else directory.resolve(),
        arch=arch,
    )


def _complete(spec: ModelSpec) -> ModelSpec:
    """Fill a bundled model's params and arch from the config it ships."""
    src = spec.source_dir
    if spec.bundled_path is None or src is None or not (src / "config.json").is_file():
        return spec
    found = spec_from_directory(src, name=spec.name)
    return spec.model_copy(update={"arch": spec.arch or found.arch, "params": found.params})


def list_models(user_catalog: Path | None = None) -> dict[str, ModelSpec]:
    """Every catalog model by alias: the shipped ones plus the user file's."""
    entries = load_entries(ModelSpec, "models", "models.toml", user_catalog)
    return {name: _complete(spec) for name, spec in entries.items()}


def is_repo_id(name: str) -> bool:
    """Whether `name` has the shape of a hub repo id (`org/name`), and is no path."""
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1
    return bool(_REPO_ID.match(name)) and ".." not in name and not looks_like_path


def get_model(name: str, user_catalog: Path | None = None) -> ModelSpec:
    """Look a model up by catalog alias, repo id, or local directory.

    Args:
        name: an alias (`qwen3-8b`), a hub repo id (`org/name`) or a directory path.
        user_catalog: an extra models TOML file (`LCFIN_CATALOG`).

    Raises:
        ModelNotFound: nothing matches; the message suggests close aliases.
        InvalidCatalog: the catalog or the directory's config.json is malformed.
    """
    catalog = list_models(user_catalog)
    if name in catalog:
        return catalog[name]
    for spec in catalog.values():
        if spec.repo_id == name:
            return spec
    path = Path(name).expanduser()
    if path.is_dir():
        return spec_from_directory(path)
    if is_repo_id(name):
        return ModelSpec(name=name, repo_id=name, display_name=name)
    close = difflib.get_close_matches(name, list(catalog), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "run `lcfin models` for the catalog"
    raise ModelNotFound(
        f"Unknown model '{name}': not a catalog alias, a hub repo id or a model directory",
        model=name,
        hint=hint,
    )


def complete_spec(spec: ModelSpec, settings: Settings) -> ModelSpec:
    """`spec` with its architecture read from config.json when the catalog does not give it.

    Only config.json is fetched (a few KiB), so a model that cannot fit is refused before its
    weights are downloaded.

    Raises:
        GatedModel, Unauthorized, ModelNotFound, BackendUnavailable: config.json is unreachable.
        InvalidCatalog: config.json is not a usable model config.
    """
    if spec.arch is not None:
        return spec
    from lcfin.engine.hub import fetch_config

    config = fetch_config(spec, settings)
    try:
        arch = arch_from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCatalog(
            f"The config.json of {spec.repo_id} is not a usable model config ({exc})",
            model=spec.name,
        ) from None
    return spec.model_copy(update={"arch": arch})
