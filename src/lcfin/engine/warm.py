"""The warm tier: a model switched away from sleeps in host RAM and wakes instead of reloading.

The seed's three-tier cache (disk, same model, warm), built on vLLM's sleep mode (CUDA only,
../shared/VLLM-NOTES.md section 4): `AsyncLLM.sleep(level=1)` copies the weights to pinned host
RAM and discards the KV cache; `wake_up()` maps them back, in seconds rather than a reload.

* Engines can sleep only if they were built with `enable_sleep_mode=True`. `sleep_mode_for`
  decides that at build time from `LCFIN_SLEEP_MODE`: `auto` turns it on for CUDA GPU profiles
  only (vLLM refuses it elsewhere), `on` insists (refused on a CPU profile), `off` never.
* Level 1 only: level 2 discards the weights, and reloading them works only for the same
  architecture and shapes (in-place weight updates, not model switching).
* A sleeper is kept only if `keep_refusal` finds nothing against it: the tier has room
  (`LCFIN_WARM_MODELS`, least recently used sleepers are closed first), its engine was built with
  sleep mode, host RAM holds its weights plus `HOST_MARGIN_GIB` while `HOST_RESERVE_FRACTION`
  of the machine's RAM stays free, and the GPU holds the next engine's budget beside every
  sleeper's residue (`SLEEP_RESIDUAL_GIB` per engine: CUDA context, NCCL and cuBLAS workspace
  stay allocated while asleep). Otherwise the engine is closed, as before.

See docs/switching.md ("Warm tier").
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcfin.errors import InvalidParameter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from lcfin.engine.backend import InferenceBackend
    from lcfin.engine.manager import LoadedModel
    from lcfin.engine.profiles import HardwareProfile
    from lcfin.engine.registry import ModelSpec

__all__ = [
    "HOST_MARGIN_GIB",
    "HOST_RESERVE_FRACTION",
    "SLEEP_RESIDUAL_GIB",
    "HostMemory",
    "WarmTier",
    "can_sleep",
    "evictions_to_park",
    "host_weights_gib",
    "keep_refusal",
    "read_host_memory",
    "sleep_mode_for",
]

log = logging.getLogger(__name__)

#: GPU memory a sleeping engine keeps per GPU (CUDA context, NCCL, cuBLAS workspace); vLLM says
#: "several hundred MiB", so 1 GiB is a safe bound. scripts/gpu_check.py measures the real one.
SLEEP_RESIDUAL_GIB = 1.0
#: Host RAM a level-1 sleeper needs beyond its weights (runtime and CUDA-graph pools backed up).
HOST_MARGIN_GIB = 1.0
#: The share of the machine's RAM that sleepers must leave free for everything else.
HOST_RESERVE_FRACTION = 0.10
_MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class HostMemory:
    """The machine's RAM: what is available to new allocations, and the total, in GiB."""

    available_gib: float
    total_gib: float


def read_host_memory(meminfo: Path = _MEMINFO) -> HostMemory | None:
    """MemAvailable and MemTotal from /proc/meminfo; None where it cannot be read (not Linux)."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    fields: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if name in ("MemAvailable", "MemTotal") and parts and parts[0].isdigit():
            fields[name] = int(parts[0]) / 2**20  # kB -> GiB
    if len(fields) < 2:
        return None
    return HostMemory(fields["MemAvailable"], fields["MemTotal"])


def sleep_mode_for(setting: str, profile: HardwareProfile) -> bool:
    """Whether to build a vLLM engine with `enable_sleep_mode` (see the module docstring).

    Raises:
        InvalidParameter: `on` for a profile without a CUDA GPU (vLLM refuses sleep mode there).
    """
    if setting == "off":
        return False
    if setting == "on" and not profile.is_gpu:
        raise InvalidParameter(
            f"LCFIN_SLEEP_MODE=on needs a CUDA GPU profile, and {profile.name} has none",
            param="sleep_mode",
            hint="vLLM's sleep mode works on CUDA only: set LCFIN_SLEEP_MODE=auto or off",
        )
    return profile.is_gpu


def can_sleep(backend: Any) -> bool:
    """Whether `backend` can sleep: a vLLM engine built with sleep mode (False for others)."""
    return bool(getattr(backend, "can_sleep", False))


def host_weights_gib(weights_per_gpu_gib: float, profile: HardwareProfile) -> float:
    """The host RAM a level-1 sleeper's weights take on this machine (every local GPU's share)."""
    local = profile.tensor_parallel_size * profile.pipeline_parallel_size
    if profile.multi_node:
        local = min(local, profile.gpu_count)  # the other nodes keep their shares
    return weights_per_gpu_gib * local


def keep_refusal(
    *,
    weights_gib: float,
    host: HostMemory,
    sleepers: int,
    next_gib: float | None,
    profile: HardwareProfile,
) -> str | None:
    """Why a model of `weights_gib` (per GPU) cannot sleep beside `sleepers` others; None: it can.

    `host` is the machine's RAM now, and `next_gib` the GPU budget of the engine that serves
    next (None: the profile's).
    """
    need = host_weights_gib(weights_gib, profile) + HOST_MARGIN_GIB
    reserve = host.total_gib * HOST_RESERVE_FRACTION
    if host.available_gib - need < reserve:
        return (
            f"host RAM: its weights need {need:.1f} GiB, {host.available_gib:.1f} GiB is "
            f"available and {reserve:.1f} GiB must stay free"
        )
    budget = next_gib if next_gib is not None else _profile_budget_gib(profile)
    residue = (sleepers + 2) * SLEEP_RESIDUAL_GIB  # every sleeper, this one, the next engine
    if budget + residue > profile.gpu_total_gib:
        return (
            f"GPU memory: {sleepers + 1} sleeping engine(s) would leave too little beside the "
            f"next engine's {budget:.1f} GiB of {profile.gpu_total_gib:.1f} GiB"
        )
    return None


def evictions_to_park(
    weights_gib: float,
    sleepers_gib: list[float],
    *,
    capacity: int,
    host: HostMemory,
    next_gib: float | None,
    profile: HardwareProfile,
) -> tuple[int, str | None]:
    """How many of the oldest sleepers to close so that a new one can sleep.

    Returns (n, None), or (0, the reason) when closing all of them would not make room.
    `sleepers_gib` holds the sleepers' weights per GPU, oldest first; closing one gives its
    weights' host RAM back.
    """
    reason = "the warm tier is off (LCFIN_WARM_MODELS=0)"
    for k in range(len(sleepers_gib) + 1):
        staying = len(sleepers_gib) - k
        if staying >= capacity:
            continue
        freed = sum(host_weights_gib(w, profile) for w in sleepers_gib[:k])
        after = HostMemory(host.available_gib + freed, host.total_gib)
        found = keep_refusal(
            weights_gib=weights_gib,
            host=after,
            sleepers=staying,
            next_gib=next_gib,
            profile=profile,
        )
        if found is None:
            return k, None
        reason = found
    return 0, reason


def _profile_budget_gib(profile: HardwareProfile) -> float:
    return profile.gpu_total_gib * profile.gpu_memory_utilization


class WarmTier:
    """Sleeping engines, least recently parked first; see the module docstring.

    `read_host` reads the machine's RAM (/proc/meminfo); tests replace it, the one edge of this
    class that a test cannot control.
    """

    def __init__(
        self,
        capacity: int,
        profile: HardwareProfile,
        *,
        read_host: Callable[[], HostMemory | None] = read_host_memory,
    ) -> None:
        self.capacity = capacity
        self.profile = profile
        self.read_host = read_host
        self._sleepers: list[LoadedModel] = []
        self._waking: LoadedModel | None = None

    def names(self) -> tuple[str, ...]:
        """The sleeping models' names, least recently parked first."""
        waking = [] if self._waking is None else [self._waking]
        return tuple(m.spec.name for m in [*self._sleepers, *waking])

    def take(self, spec: ModelSpec, overrides: dict[str, Any]) -> LoadedModel | None:
        """Remove and return the sleeper of `spec` loaded with the same options, if any."""
        for model in [self._waking, *self._sleepers]:
            if model is not None and model.spec == spec and model.overrides == overrides:
                if model is self._waking:
                    self._waking = None
                else:
                    self._sleepers.remove(model)
                return model
        return None

    def reserve(self, spec: ModelSpec, overrides: dict[str, Any]) -> None:
        """Set aside the sleeper a switch is about to wake, so that parking cannot close it."""
        self._waking = self.take(spec, overrides)

    def unreserve(self) -> None:
        """Put a set-aside sleeper back, if the switch ended without waking it."""
        if self._waking is not None:
            self._sleepers.append(self._waking)
            self._waking = None

    async def park(self, model: LoadedModel, next_gib: float | None) -> bool:
        """Put `model` (idle, switched away from) to sleep and keep it; False: close it instead.

        Sleepers the tier has no room for (count, host RAM, GPU residue) are closed first,
        least recently parked first.
        """
        reason = await self._refusal(model, next_gib)
        if reason is not None:  # INFO only where a sleep could have happened (RAM, GPU room)
            level = logging.INFO if can_sleep(model.backend) and self.capacity else logging.DEBUG
            log.log(level, "Not keeping %s warm: %s", model.spec.name, reason)
            return False
        started = time.monotonic()
        try:
            await model.backend.sleep(1)  # type: ignore[attr-defined]
        except Exception as exc:  # a failed sleep: the engine is closed instead
            log.warning("Sleeping %s failed (%s); closing it", model.spec.name, exc)
            return False
        self._sleepers.append(model)
        log.info("%s sleeps in host RAM (%.1fs)", model.spec.name, time.monotonic() - started)
        return True

    async def _refusal(self, model: LoadedModel, next_gib: float | None) -> str | None:
        """Why `model` cannot sleep here (None: it can, once the sleepers in the way closed)."""
        if self.capacity <= 0:
            return "the warm tier is off (LCFIN_WARM_MODELS=0)"
        if not can_sleep(model.backend):
            return "its engine was built without sleep mode (LCFIN_SLEEP_MODE)"
        host = self.read_host()
        if model.weights_gib is None or host is None:
            return "its weights' size or the machine's free RAM is unknown"
        count, reason = evictions_to_park(
            model.weights_gib,
            [m.weights_gib or 0.0 for m in self._sleepers],
            capacity=self.capacity,
            host=host,
            next_gib=next_gib,
            profile=self.profile,
        )
        for _ in range(count if reason is None else 0):
            await self._evict_oldest()
        return reason

    async def release(self, old: LoadedModel, next_gib: float | None) -> str:
        """Put `old` to sleep here if it is idle, else close it: 'slept' or 'closed'."""
        if old.active == 0 and await self.park(old, next_gib):  # never with requests in flight
            return "slept"
        await asyncio.to_thread(old.backend.close)  # returns once the memory is released
        return "closed"

    async def bring_up(
        self,
        spec: ModelSpec,
        overrides: dict[str, Any],
        load: Callable[[ModelSpec, dict[str, Any]], Awaitable[InferenceBackend]],
    ) -> tuple[InferenceBackend, str]:
        """Wake the sleeper of `spec`, else `load` it: the backend, and 'woken' or 'loaded'."""
        sleeper = self.take(spec, overrides)
        if sleeper is not None and await self.wake(sleeper):
            return sleeper.backend, "woken"
        return await load(spec, overrides), "loaded"

    async def wake(self, model: LoadedModel) -> bool:
        """Wake a sleeper taken with `take`; False (and the engine closed) if it fails."""
        started = time.monotonic()
        try:
            await model.backend.wake_up()  # type: ignore[attr-defined]
        except Exception as exc:
            log.warning("Waking %s failed (%s); it will be loaded again", model.spec.name, exc)
            await asyncio.to_thread(model.backend.close)
            return False
        log.info("Woke %s (%.1fs)", model.spec.name, time.monotonic() - started)
        return True

    async def _evict_oldest(self) -> None:
        oldest = self._sleepers.pop(0)
        log.info("Closing the sleeping %s to make room in the warm tier", oldest.spec.name)
        await asyncio.to_thread(oldest.backend.close)

    def close(self) -> None:
        """Close every sleeping engine."""
        self.unreserve()
        sleepers, self._sleepers = self._sleepers, []
        for model in sleepers:
            model.backend.close()
