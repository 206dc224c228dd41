"""Fetching model files from the Hugging Face hub, with the right token and clear errors.

The token is chosen per repository (`Settings.token_for`): HF_TOKEN_LC for LinguaCustodia,
HF_TOKEN otherwise, and `False` (no token, ignore stored logins) when unset. `cache_dir` is
always passed, because huggingface_hub freezes HF_HOME at import time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcfin.errors import BackendUnavailable, GatedModel, LcfinError, ModelNotFound, Unauthorized

if TYPE_CHECKING:
    from lcfin.config import Settings
    from lcfin.engine.registry import ModelSpec

__all__ = [
    "WEIGHT_PATTERNS",
    "download_model",
    "fetch_config",
    "free_disk_gib",
    "is_cached",
    "resolve_model_dir",
]

log = logging.getLogger(__name__)

#: What a text model needs: weights (safetensors only: no pickles), configs, tokenizer files.
WEIGHT_PATTERNS = ["*.safetensors", "*.json", "*.model", "*.txt", "*.jinja", "tokenizer*"]


def _hub_error(exc: Exception, spec: ModelSpec, settings: Settings) -> LcfinError:
    """Translate a huggingface_hub exception into an actionable lcfin error."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    var = settings.token_name_for(spec.repo_id)
    has_token = settings.token_for(spec.repo_id) is not False
    repo = spec.repo_id
    if isinstance(exc, GatedRepoError):
        return GatedModel(
            f"Access to '{repo}' is gated and the token in {var} was refused",
            model=spec.name,
            hint=f"request access on the hub page of {repo}, then set {var} to a token that has it",
        )
    if isinstance(exc, RepositoryNotFoundError):
        if not has_token:
            return Unauthorized(
                f"'{repo}' was not found or needs authentication, and {var} is not set",
                model=spec.name,
                hint=f"set {var} to a hub token with read access to {repo}",
            )
        return ModelNotFound(
            f"Repository '{repo}' does not exist or the token in {var} cannot see it",
            model=spec.name,
            hint=f"check the repo id, or use a token in {var} that can read it",
        )
    if isinstance(exc, RevisionNotFoundError):
        return ModelNotFound(
            f"Revision '{spec.revision}' of '{repo}' does not exist", model=spec.name
        )
    if isinstance(exc, LocalEntryNotFoundError):
        return _unreachable(spec, settings, var, has_token)
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            return Unauthorized(
                f"The hub rejected the token in {var} for '{repo}' (401)",
                model=spec.name,
                hint=f"set {var} to a valid read token",
            )
        return BackendUnavailable(f"The hub answered an error for '{repo}': HTTP {status}")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return BackendUnavailable(
            f"No disk space left in {settings.hub_cache} while downloading '{repo}'",
            hint="free space or point HF_HOME at a larger disk",
        )
    return BackendUnavailable(f"Could not fetch '{repo}' from the hub: {type(exc).__name__}")


def _offline_switch(settings: Settings) -> str | None:
    """The variable that turned offline mode on, if one did."""
    if settings.offline:
        return "LCFIN_OFFLINE"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE"
    return None


def _unreachable(spec: ModelSpec, settings: Settings, var: str, has_token: bool) -> LcfinError:
    """Not cached and not downloadable: say why (offline, or no network) and what to set."""
    switch = _offline_switch(settings)
    why = f"offline mode is on ({switch})" if switch else "the hub cannot be reached"
    first = f"unset {switch}" if switch else "check the network (or HF_ENDPOINT)"
    hint = f"{first}, then run `lcfin download {spec.name}`"
    if spec.gated and not has_token:  # the next error would be the token: say it now
        hint += f"; it is gated, so set {var} to a token with access first"
    return BackendUnavailable(
        f"'{spec.repo_id}' is not in the cache ({settings.hub_cache}) and {why}",
        model=spec.name,
        hint=hint,
    )


def _download(spec: ModelSpec, settings: Settings, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    kwargs: dict[str, Any] = {
        "revision": spec.revision,
        "cache_dir": settings.hub_cache,
        "token": settings.token_for(spec.repo_id),
        "allow_patterns": patterns,
    }
    try:
        return Path(str(snapshot_download(spec.repo_id, local_files_only=True, **kwargs)))
    except Exception:  # not fully cached yet: fetch it below unless offline
        if settings.offline:
            raise
    settings.hub_cache.mkdir(parents=True, exist_ok=True)
    log.info("Downloading %s into %s", spec.repo_id, settings.hub_cache)
    return Path(str(snapshot_download(spec.repo_id, **kwargs)))


def resolve_model_dir(spec: ModelSpec, settings: Settings) -> Path:
    """The local directory of the model's files, downloading them when needed.

    Raises:
        GatedModel, Unauthorized: the hub refused the token (the message names the variable).
        ModelNotFound: the repository or revision does not exist.
        BackendUnavailable: offline and not cached, no disk space, or the hub is unreachable.
    """
    local = spec.source_dir
    if local is not None:
        if not local.is_dir():
            raise ModelNotFound(f"Model directory {local} does not exist", model=spec.name)
        return local
    try:
        return _download(spec, settings, WEIGHT_PATTERNS)
    except LcfinError:
        raise
    except Exception as exc:
        raise _hub_error(exc, spec, settings) from None


def fetch_config(spec: ModelSpec, settings: Settings) -> dict[str, Any]:
    """The model's config.json (downloads that one small file if needed)."""
    try:
        directory = spec.source_dir or _download(spec, settings, ["config.json"])
        return dict(json.loads((directory / "config.json").read_text()))
    except LcfinError:
        raise
    except Exception as exc:
        raise _hub_error(exc, spec, settings) from None


def free_disk_gib(path: Path) -> float:
    """Free space on the disk holding `path` (or its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 2**30


def is_cached(spec: ModelSpec, settings: Settings) -> bool:
    """Whether the model's files are on disk (bundled, a local directory, or in the hub cache)."""
    if spec.source_dir is not None:
        return spec.source_dir.is_dir()
    repo_dir = settings.hub_cache / f"models--{spec.repo_id.replace('/', '--')}" / "snapshots"
    return repo_dir.is_dir() and any(
        any(snap.glob("*.safetensors")) for snap in repo_dir.iterdir() if snap.is_dir()
    )


def download_model(spec: ModelSpec, settings: Settings) -> Path:
    """Fetch every file the model needs into the cache (with the hub's progress bars).

    Raises:
        GatedModel, Unauthorized, ModelNotFound, BackendUnavailable: as `resolve_model_dir`.
    """
    if spec.source_dir is None and settings.offline:
        raise BackendUnavailable(
            f"Cannot download '{spec.repo_id}': offline mode is on (LCFIN_OFFLINE)",
            hint="unset LCFIN_OFFLINE",
        )
    return resolve_model_dir(spec, settings)
