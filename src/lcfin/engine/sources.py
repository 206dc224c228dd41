"""Which models a remote client may ask the server to load (POST /load-model; see #16).

- catalog aliases, always;
- hub repo ids (`org/name`), only with LCFIN_ALLOW_ANY_MODEL (never a local directory, even one
  whose relative path looks like a repo id);
- local model directories, only inside LCFIN_LOCAL_MODELS_ROOT (after resolving `..` and links).

Anything else gets one `ModelNotFound` whose message is the same whether or not a path by that
name exists, so a client cannot probe the server's file system.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lcfin.engine.registry import ModelSpec, is_repo_id, list_models, spec_from_directory
from lcfin.errors import InvalidCatalog, ModelNotFound

if TYPE_CHECKING:
    from lcfin.config import Settings

__all__ = ["model_for_client"]


def _local(name: str, root: Path) -> ModelSpec | None:
    """The model directory `name` (absolute, or relative to `root`) if it lies inside `root`."""
    try:
        base = root.expanduser().resolve(strict=True)
        path = (base / Path(name).expanduser()).resolve(strict=True)  # absolute names stay
    except (OSError, RuntimeError, ValueError):  # missing, a link loop, a NUL byte
        return None
    if path == base or not path.is_relative_to(base) or not path.is_dir():
        return None
    try:
        return spec_from_directory(path)
    except (ModelNotFound, InvalidCatalog):
        return None


def model_for_client(name: str, settings: Settings) -> ModelSpec:
    """The model a remote client may load by `name` under `settings`.

    Raises:
        ModelNotFound: `name` is none of the allowed kinds (one message for every case).
    """
    catalog = list_models(settings.catalog)
    if name in catalog:
        return catalog[name]
    root = settings.local_models_root
    found = _local(name, root) if root is not None else None
    if found is not None:
        return found
    if settings.allow_any_model and is_repo_id(name):
        return next(
            (spec for spec in catalog.values() if spec.repo_id == name),
            ModelSpec(name=name, repo_id=name, display_name=name),
        )
    raise ModelNotFound(
        f"'{name}' is not a model this server loads for clients",
        param="model_name",
        model=name,
        hint="use a catalog alias from GET /models; the operator can allow hub repo ids "
        "(LCFIN_ALLOW_ANY_MODEL) or a directory of local models (LCFIN_LOCAL_MODELS_ROOT)",
    )
