"""What the model manager holds and reports: `LoadedModel`s, `KvCapacity`, `ModelStatus`."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from lcfin.engine.backend import InferenceBackend
    from lcfin.engine.registry import ModelSpec

__all__ = ["KvCapacity", "LoadedModel", "ModelStatus", "State"]

State = Literal["idle", "loading", "ready", "failed"]


@dataclass(frozen=True)
class KvCapacity:
    """The KV cache an engine reports after loading, beside the planner's prediction.

    vLLM logs it as "KV cache size: N tokens, Maximum concurrency for L tokens per request:
    Cx"; `planned_*` are `lcfin plan`'s figures for the same load.
    """

    max_model_len: int
    engine_tokens: int | None
    engine_max_concurrency: float | None
    planned_tokens: int | None = None
    planned_max_concurrency: float | None = None
    num_blocks: int | None = None
    block_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-ready dict."""
        return asdict(self)

    def describe(self) -> str:
        """One line: the engine's figures, then the plan's."""
        engine = (
            f"KV cache {self.engine_tokens:,} tokens, max concurrency "
            f"{self.engine_max_concurrency:.2f}x at {self.max_model_len:,} tokens"
            if self.engine_tokens is not None and self.engine_max_concurrency is not None
            else "KV cache size not reported"
        )
        if self.planned_tokens is None or self.planned_max_concurrency is None:
            return engine
        return (
            f"{engine} (planned: {self.planned_tokens:,} tokens, "
            f"{self.planned_max_concurrency:.2f}x)"
        )


@dataclass
class LoadedModel:
    """A backend serving one model, with its in-flight request count."""

    spec: ModelSpec
    backend: InferenceBackend
    load_time_s: float
    active: int = 0
    retired: bool = False
    #: The load options it was loaded with (to restore it after a failed switch).
    overrides: dict[str, Any] = field(default_factory=dict)
    #: Memory it holds per GPU (or in RAM) in GiB, from the planner; None if unknown.
    footprint_gib: float | None = None
    #: Its weights per GPU in GiB, from the planner (what a sleeper keeps in host RAM).
    weights_gib: float | None = None

    @property
    def architecture(self) -> str | None:
        """The model class from its config.json (e.g. LlamaForCausalLM), when the backend knows."""
        arch = getattr(self.backend, "architecture", None)
        return arch if isinstance(arch, str) else None

    @property
    def kv_cache(self) -> dict[str, Any] | None:
        """The engine's own KV-cache figures (`KvCapacity.to_dict`); None when it has none."""
        capacity = getattr(self.backend, "capacity", None)
        return capacity.to_dict() if capacity is not None else None

    def close_soon(self) -> None:
        """Close the backend in a thread: a retired model's last request ends on an event loop."""
        threading.Thread(
            target=self.backend.close, name=f"lcfin-close-{self.spec.name}"[:60], daemon=True
        ).start()


@dataclass(frozen=True)
class ModelStatus:
    """Where the model manager stands: state, serving model, and the last error."""

    state: State
    model: str | None
    backend: str | None
    profile: str
    repo_id: str | None = None
    load_time_s: float | None = None
    max_model_len: int | None = None
    loading_model: str | None = None
    loading_elapsed_s: float | None = None
    error: str | None = None
    #: How the switch in progress proceeds: 'blue_green' or 'drain_and_swap' (None when idle).
    strategy: str | None = None
    #: The model whose load failed, and when (Unix time); kept until the next load starts.
    failed_model: str | None = None
    failed_at: float | None = None
    #: The served model's class from its config.json (the seed's /health `architecture`).
    architecture: str | None = None
    #: Models asleep in the warm tier, least recently used first.
    sleeping: tuple[str, ...] = ()
    #: The last completed load: model, previous, strategy, source ('loaded' or 'woken'),
    #: previous_went ('slept', 'closed', or 'closing' after its last request), seconds.
    last_switch: dict[str, Any] | None = None
    #: Engines that died under a loaded model since start (each one restarted or not).
    engine_deaths: int = 0
    #: The serving engine's own KV-cache figures beside the planner's (`KvCapacity.to_dict`).
    kv_cache: dict[str, Any] | None = None

    @property
    def serving(self) -> bool:
        """Whether a model can answer requests right now (not while a drain-and-swap runs)."""
        draining = self.state == "loading" and self.strategy == "drain_and_swap"
        return self.model is not None and not draining

    def to_dict(self) -> dict[str, Any]:
        """The status as a JSON-ready dict."""
        return {**asdict(self), "serving": self.serving}
