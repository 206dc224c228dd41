"""How to switch models: blue/green when both fit at once, else drain-and-swap.

The planner sizes each engine (`MemoryPlan`); `footprint_gib` turns a plan into the memory one
loaded engine holds on each GPU (or in RAM on the CPU profile), and `choose_strategy` compares
the current and the next footprint with what the profile can hold at once:

* vLLM reserves its whole budget, `gpu_memory_utilization x total`, per engine (the KV cache
  fills whatever the weights leave), so two engines share a GPU only when their utilisations sum
  to at most `MAX_SHARED_UTILIZATION` (0.95: each EngineCore process also needs a CUDA context,
  outside its budget). The seed profiles (0.75, 0.85) therefore always drain and swap.
* Transformers, and vLLM's CPU build, hold weights + activations + overhead + the KV cache
  their batch can fill; two tiny models on a CPU profile fit at once, so they switch blue/green.

An unknown footprint (a model whose architecture is not known yet) drains on a GPU, to be safe,
and stays blue/green on the CPU. See docs/switching.md.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from lcfin.errors import InvalidParameter, LcfinError

if TYPE_CHECKING:
    from lcfin.config import Settings
    from lcfin.engine.planner import MemoryPlan
    from lcfin.engine.profiles import HardwareProfile
    from lcfin.engine.registry import ModelSpec

__all__ = [
    "MAX_SHARED_UTILIZATION",
    "STRATEGIES",
    "Strategy",
    "check_strategy",
    "choose_strategy",
    "footprint_gib",
    "plan_for",
    "shared_budget_gib",
]

log = logging.getLogger(__name__)

Strategy = Literal["blue_green", "drain_and_swap"]
STRATEGIES: tuple[Strategy, ...] = ("blue_green", "drain_and_swap")
#: The most of one GPU that two co-resident vLLM engines may reserve together.
MAX_SHARED_UTILIZATION = 0.95
GIB = 2**30


def footprint_gib(plan: MemoryPlan, backend: str) -> float:
    """The memory one engine of `plan` holds per GPU (or in RAM), in GiB."""
    if backend == "vllm" and plan.on_gpu:
        return plan.budget_gib  # preallocated: weights + activations + KV cache = the budget
    need_kv = plan.kv_bytes_per_token * plan.max_model_len * plan.max_num_seqs / GIB
    kv = min(max(plan.kv_cache_gib, 0.0), need_kv)
    return plan.weights_gib + plan.activations_gib + plan.overhead_gib + kv


def shared_budget_gib(profile: HardwareProfile) -> float:
    """What two engines may hold together: a share of one GPU, or the RAM budget."""
    if profile.is_gpu:
        return profile.gpu_total_gib * MAX_SHARED_UTILIZATION
    return profile.ram_budget_gib


def choose_strategy(
    current_gib: float | None, new_gib: float | None, profile: HardwareProfile
) -> Strategy:
    """Blue/green if the current and the new engine fit the profile together, else drain.

    `current_gib` is None when nothing is loaded (nothing to drain); `new_gib` is None when the
    new model cannot be planned (drain on a GPU, blue/green on the CPU).
    """
    if current_gib is None:
        return "blue_green"
    if new_gib is None:
        return "drain_and_swap" if profile.is_gpu else "blue_green"
    together = current_gib + new_gib
    return "blue_green" if together <= shared_budget_gib(profile) else "drain_and_swap"


def plan_for(
    spec: ModelSpec, profile: HardwareProfile, settings: Settings, overrides: dict[str, Any]
) -> MemoryPlan | None:
    """The memory plan of a load (with its profile overrides), or None when it cannot be made.

    On a GPU profile an unknown architecture is fetched (config.json only); on the CPU it is not.
    """
    from lcfin.engine.planner import plan_memory
    from lcfin.engine.profiles import effective_profile
    from lcfin.engine.registry import complete_spec

    try:
        prof = effective_profile(profile, overrides)
        if prof.is_gpu:
            spec = complete_spec(spec, settings)
        if spec.arch is None:
            return None
        return plan_memory(
            spec,
            prof,
            max_model_len=overrides.get("max_model_len"),
            max_num_seqs=overrides.get("max_num_seqs"),
            user_catalog=settings.catalog,
        )
    except LcfinError as exc:  # the load itself will report it, with its own error
        log.debug("No memory plan for %s: %s", spec.name, exc)
        return None


def check_strategy(value: str) -> str:
    """`value` if it is 'auto' or a strategy.

    Raises:
        InvalidParameter: another value.
    """
    allowed = ("auto", *STRATEGIES)
    if value not in allowed:
        raise InvalidParameter(
            f"Unknown switch strategy {value!r}; choose one of {', '.join(allowed)}",
            param="switch_strategy",
        )
    return value
