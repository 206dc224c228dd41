"""lcfin: serve LinguaCustodia's financial LLMs (vLLM on GPUs, Transformers anywhere).

    >>> from lcfin import FinancialLLM
    >>> llm = FinancialLLM("demo")
    >>> llm.ask("What is Basel III?")

Names are imported on first use (PEP 562), so `import lcfin` and `lcfin --help` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lcfin.config import Settings, get_settings
    from lcfin.engine.doctor import Check, diagnose
    from lcfin.engine.hub import download_model, is_cached
    from lcfin.engine.llm import FinancialLLM
    from lcfin.engine.planner import MemoryPlan, plan_memory
    from lcfin.engine.profiles import HardwareProfile, list_profiles, load_profile
    from lcfin.engine.registry import ModelSpec, get_model, list_models
    from lcfin.engine.types import Completion, Delta, SamplingParams, Usage
    from lcfin.errors import (
        BackendUnavailable,
        ContextLengthExceeded,
        DoesNotFit,
        GatedModel,
        InvalidCatalog,
        InvalidParameter,
        LcfinError,
        ModelLoadFailed,
        ModelLoading,
        ModelNotFound,
        RateLimited,
        Unauthorized,
    )

__version__ = "0.1.0"

_EXPORTS = {
    "BackendUnavailable": "lcfin.errors",
    "Check": "lcfin.engine.doctor",
    "Completion": "lcfin.engine.types",
    "ContextLengthExceeded": "lcfin.errors",
    "Delta": "lcfin.engine.types",
    "DoesNotFit": "lcfin.errors",
    "FinancialLLM": "lcfin.engine.llm",
    "GatedModel": "lcfin.errors",
    "HardwareProfile": "lcfin.engine.profiles",
    "InvalidCatalog": "lcfin.errors",
    "InvalidParameter": "lcfin.errors",
    "LcfinError": "lcfin.errors",
    "MemoryPlan": "lcfin.engine.planner",
    "ModelLoadFailed": "lcfin.errors",
    "ModelLoading": "lcfin.errors",
    "ModelNotFound": "lcfin.errors",
    "ModelSpec": "lcfin.engine.registry",
    "RateLimited": "lcfin.errors",
    "SamplingParams": "lcfin.engine.types",
    "Settings": "lcfin.config",
    "Unauthorized": "lcfin.errors",
    "Usage": "lcfin.engine.types",
    "diagnose": "lcfin.engine.doctor",
    "download_model": "lcfin.engine.hub",
    "get_model": "lcfin.engine.registry",
    "get_settings": "lcfin.config",
    "is_cached": "lcfin.engine.hub",
    "list_models": "lcfin.engine.registry",
    "list_profiles": "lcfin.engine.profiles",
    "load_profile": "lcfin.engine.profiles",
    "plan_memory": "lcfin.engine.planner",
}

__all__ = [
    "BackendUnavailable",
    "Check",
    "Completion",
    "ContextLengthExceeded",
    "Delta",
    "DoesNotFit",
    "FinancialLLM",
    "GatedModel",
    "HardwareProfile",
    "InvalidCatalog",
    "InvalidParameter",
    "LcfinError",
    "MemoryPlan",
    "ModelLoadFailed",
    "ModelLoading",
    "ModelNotFound",
    "ModelSpec",
    "RateLimited",
    "SamplingParams",
    "Settings",
    "Unauthorized",
    "Usage",
    "diagnose",
    "download_model",
    "get_model",
    "get_settings",
    "is_cached",
    "list_models",
    "list_profiles",
    "load_profile",
    "plan_memory",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lcfin' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*_EXPORTS, "__version__", "__all__"})
