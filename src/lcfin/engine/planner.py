"""Memory planner: does a model fit a hardware profile, and how many requests run at once?

It follows vLLM 0.33's KV-cache sizing (../shared/VLLM-NOTES.md section 5):
`vllm/v1/worker/gpu_worker.py::determine_available_memory`, `vllm/v1/kv_cache_interface.py`
(page sizes), `vllm/v1/core/kv_cache_utils.py` (`_get_kv_cache_groups_uniform_page_size`,
`get_max_concurrency_for_kv_cache_config`). Every size is per GPU (per rank); T is one GPU's
CUDA total (cudaMemGetInfo), u the utilisation, tp/pp the tensor/pipeline parallel sizes:

    R      = ceil(T x u)                                     budget in bytes
    A_kv   = R - W - A - O                                   left for the KV cache
    W      = params x dtype_bytes / (tp x pp)                weights
    page   = block_size x 2 x max(1, kv_heads // tp) x head_dim x dtype_bytes   (one layer)
    blocks = floor(A_kv / (group_size x page))               one shared block pool
    conc   = blocks / blocks_per_request                     vLLM's "Maximum concurrency"

Layers split per pipeline stage (ceil(num_layers / pp)); KV heads are replicated below tp. A
uniform model is one group of all its layers: ceil(L / block_size) blocks per request of L
tokens. A hybrid model (Gemma 3) is split into groups of `group_size` layers (the smaller
per-type count, or the larger one when under 1.5x the smaller): Gemma 3 12B has 1 full + 5
sliding groups of 8, and each sliding group needs only ceil(min(window - 1 + 2 x
max_num_batched_tokens, L) / block_size) + 1 blocks (2 batches in flight, async scheduling).
KV tokens are blocks x block_size (uniform) or conc x L (hybrid, as vLLM 0.33 logs them).

vLLM measures A and O in a profiling run; here they are estimated, with the constants below
tuned so that Qwen3-8B on one L40S (u 0.85, L 4096) gives the seed's 37.36x:

    A = batched_tokens x (2 x intermediate / tp + 4 x hidden) x dtype_bytes      activations
        + min(max_num_seqs, batched_tokens) x vocab x 4 B x SAMPLER_COPIES       sampler
    O = NON_TORCH_GIB + CUDAGRAPH_MIB_PER_LAYER x layers (no graphs with enforce_eager)

The CPU profile (Transformers) uses ram_budget_gib, a plain dynamic cache (block_size 1, all
layers at full length), one prefill of L tokens as batched_tokens and O = CPU_RUNTIME_GIB.

vLLM's CPU build (the cpu-vllm profile) lays out its KV cache as on a GPU (paged, block_size
128 there); its budget is ram_budget_gib, O = VLLM_CPU_RUNTIME_GIB (the frontend, EngineCore and
worker processes), and the KV cache it is given (`kv_cache_memory_bytes`, which vLLM uses as is)
is what the budget leaves, capped at what max_num_seqs requests of L tokens can fill:

    A_kv   = min(R - W - A - O, max_num_seqs x blocks_per_request x block_bytes)
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from lcfin.engine.profiles import HardwareProfile, list_profiles, load_profile
from lcfin.engine.registry import DTYPE_BYTES, Architecture, ModelSpec, get_model
from lcfin.errors import DoesNotFit, InvalidParameter

if TYPE_CHECKING:
    from lcfin.config import Settings

__all__ = ["MemoryPlan", "check_fits", "does_not_fit", "plan_memory"]

log = logging.getLogger(__name__)

GIB = 2**30
SAMPLER_COPIES = 5  # fp32 logits, probabilities, log-probabilities and top-k/top-p sort buffers
NON_TORCH_GIB = 0.25  # cuBLAS workspaces, attention workspace, allocator slack
CUDAGRAPH_MIB_PER_LAYER = 12.75  # captured graphs' private memory pool, per decoder layer
CPU_RUNTIME_GIB = 1.0  # torch + transformers resident memory
# vLLM's CPU build: frontend + EngineCore + worker processes, each with torch and vllm
# imported (~0.6 GiB each, measured with vllm-cpu 0.32 on the demo model).
VLLM_CPU_RUNTIME_GIB = 2.0
ASYNC_BATCHES = 2  # batches in flight with async scheduling (sliding-window blocks)


@dataclass(frozen=True)
class MemoryPlan:
    """A model on a profile: memory per GPU in GiB, KV-cache capacity and the verdict."""

    model: str
    profile: str
    backend: str
    dtype: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    max_model_len: int
    max_num_seqs: int
    budget_gib: float
    weights_gib: float
    activations_gib: float
    overhead_gib: float
    kv_cache_gib: float
    #: The KV cache in bytes (what vLLM's CPU build is given as kv_cache_memory_bytes).
    kv_cache_bytes: int
    kv_bytes_per_token: int
    kv_cache_tokens: int
    max_concurrency: float
    fits: bool
    reason: str
    #: Whether the budget is GPU memory (per GPU) rather than host RAM.
    on_gpu: bool = True

    def to_dict(self) -> dict[str, object]:
        """The plan as a JSON-serialisable dict."""
        return asdict(self)


@dataclass(frozen=True)
class _KvLayout:
    """How vLLM (or a dynamic cache) lays out one rank's KV cache."""

    block_size: int
    block_bytes: int  # group_size layers x one page
    token_bytes: int  # every layer of the rank, at full length
    layers: int
    full_groups: int
    sliding_groups: int
    sliding_span: int  # window - 1 + tokens in flight

    def blocks_per_request(self, max_len: int) -> int:
        full = math.ceil(max_len / self.block_size)
        window = math.ceil(min(self.sliding_span, max_len) / self.block_size) + 1
        return self.full_groups * full + self.sliding_groups * window

    def longest_fit(self, blocks: int) -> int:
        """The largest max_model_len one request of which fits in `blocks` (0 if none)."""
        low, high = 0, blocks * self.block_size
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self.blocks_per_request(mid) <= blocks else (low, mid - 1)
        return low


def _paged(prof: HardwareProfile) -> bool:
    """Whether vLLM's paged KV cache is planned (GPU profiles, and vLLM's CPU build)."""
    return prof.is_gpu or prof.backend == "vllm"


def _layout(arch: Architecture, prof: HardwareProfile, dtype_bytes: int) -> _KvLayout:
    tp, pp, paged = prof.tensor_parallel_size, prof.pipeline_parallel_size, _paged(prof)
    block = prof.block_size if paged else 1
    page = block * 2 * max(1, arch.num_kv_heads // tp) * arch.head_dim * dtype_bytes
    layers = math.ceil(arch.num_layers / pp)
    sliding = math.ceil(arch.num_sliding_layers / pp) if paged and arch.sliding_window else 0
    full = layers - sliding
    counts = [n for n in (full, sliding) if n]
    size = min(counts) if max(counts) >= 1.5 * min(counts) else max(counts)
    return _KvLayout(
        block_size=block,
        block_bytes=size * page,
        token_bytes=layers * page // block,
        layers=layers,
        full_groups=math.ceil(full / size),
        sliding_groups=math.ceil(sliding / size),
        sliding_span=(arch.sliding_window or 0) - 1 + ASYNC_BATCHES * prof.max_num_batched_tokens,
    )


def _activation_bytes(
    arch: Architecture, prof: HardwareProfile, dtype_bytes: int, max_len: int, seqs: int
) -> int:
    tokens = min(prof.max_num_batched_tokens, seqs * max_len) if _paged(prof) else max_len
    hidden = tokens * (2 * arch.intermediate_size // prof.tensor_parallel_size)
    hidden += tokens * 4 * arch.hidden_size
    sampler = min(seqs, tokens) * arch.vocab_size * 4 * SAMPLER_COPIES
    return hidden * dtype_bytes + sampler


def _overhead_bytes(prof: HardwareProfile, layers: int) -> int:
    if not prof.is_gpu:
        runtime = VLLM_CPU_RUNTIME_GIB if prof.backend == "vllm" else CPU_RUNTIME_GIB
        return int(runtime * GIB)
    graphs = 0.0 if prof.enforce_eager else CUDAGRAPH_MIB_PER_LAYER * layers * 2**20
    return int(NON_TORCH_GIB * GIB + graphs)


def _budget_bytes(prof: HardwareProfile) -> int:
    if not prof.is_gpu:
        return int(prof.ram_budget_gib * GIB)
    return math.ceil(prof.gpu_total_gib * GIB * prof.gpu_memory_utilization)


def _reason(plan: MemoryPlan, arch: Architecture, longest: int, others: list[str]) -> str:
    name, where, length = plan.model, plan.profile, plan.max_model_len
    limit = arch.max_position_embeddings
    per = "per GPU" if plan.on_gpu else "in RAM"
    elsewhere = f"use profile {' or '.join(others)}" if others else "use a profile with more GPUs"
    if length > limit:
        return (
            f"max_model_len {length:,} exceeds {name}'s limit of {limit:,} tokens "
            f"(max_position_embeddings); pass max_model_len={limit} or less."
        )
    need = plan.weights_gib + plan.activations_gib + plan.overhead_gib
    if need >= plan.budget_gib:
        return (
            f"{name} needs {plan.weights_gib:.1f} GiB of weights plus "
            f"{plan.activations_gib + plan.overhead_gib:.1f} GiB of activations and overhead "
            f"{per}, but {where} gives {plan.budget_gib:.1f} GiB; {elsewhere}."
        )
    if not plan.fits:
        shorter = f"pass max_model_len={longest} or less, or " if longest else ""
        return (
            f"{name} on {where} leaves {plan.kv_cache_gib:.2f} GiB for the KV cache, less than "
            f"one request of {length:,} tokens; {shorter}{elsewhere}."
        )
    return (
        f"{name} fits {where}: {plan.kv_cache_gib:.1f} GiB of KV cache {per} holds "
        f"{plan.kv_cache_tokens:,} tokens, {plan.max_concurrency:.2f} requests of "
        f"{length:,} tokens."
    )


def _architecture(spec: ModelSpec) -> Architecture:
    if spec.arch is None:
        raise InvalidParameter(
            f"The architecture of '{spec.name}' is unknown, so its memory cannot be planned",
            param="model",
            model=spec.name,
            hint=f"run `lcfin download {spec.repo_id}` first so that its config.json is read",
        )
    return spec.arch


def _plan(
    spec: ModelSpec, prof: HardwareProfile, max_len: int | None, seqs: int | None, others: list[str]
) -> MemoryPlan:
    arch = _architecture(spec)
    dtype = spec.dtype if prof.dtype == "auto" else prof.dtype
    nbytes = DTYPE_BYTES[dtype]
    max_model_len = max_len or min(prof.max_model_len, arch.max_position_embeddings)
    seqs = seqs or prof.max_num_seqs
    ranks = prof.tensor_parallel_size * prof.pipeline_parallel_size
    weights = math.ceil((spec.param_count() or 0) * nbytes / ranks)
    layout = _layout(arch, prof, nbytes)
    activations = _activation_bytes(arch, prof, nbytes, max_model_len, seqs)
    overhead = _overhead_bytes(prof, layout.layers)
    budget = _budget_bytes(prof)
    left = budget - weights - activations - overhead
    per_request = layout.blocks_per_request(max_model_len)
    kv = left
    if prof.backend == "vllm" and not prof.is_gpu:  # vLLM's CPU build: given, not preallocated
        # vLLM starts only if one request fits beside the block its pool holds back (the null
        # block): a single-row profile gets that one block more.
        wanted = max(seqs * per_request, per_request + 1)
        kv = min(left, wanted * layout.block_bytes)
    blocks = max(0, kv // layout.block_bytes)
    concurrency = blocks / per_request
    uniform = layout.sliding_groups == 0
    plan = MemoryPlan(
        model=spec.name,
        profile=prof.name,
        backend=prof.backend,
        dtype=dtype,
        tensor_parallel_size=prof.tensor_parallel_size,
        pipeline_parallel_size=prof.pipeline_parallel_size,
        max_model_len=max_model_len,
        max_num_seqs=seqs,
        budget_gib=round(budget / GIB, 3),
        weights_gib=round(weights / GIB, 3),
        activations_gib=round(activations / GIB, 3),
        overhead_gib=round(overhead / GIB, 3),
        kv_cache_gib=round(kv / GIB, 3),
        kv_cache_bytes=max(0, blocks * layout.block_bytes),
        kv_bytes_per_token=layout.token_bytes,
        kv_cache_tokens=blocks * layout.block_size if uniform else int(concurrency * max_model_len),
        max_concurrency=round(concurrency, 3),
        fits=kv > 0 and blocks >= per_request and max_model_len <= arch.max_position_embeddings,
        reason="",
        on_gpu=prof.is_gpu,
    )
    return replace(plan, reason=_reason(plan, arch, layout.longest_fit(blocks), others))


def _fitting_profiles(
    spec: ModelSpec, current: str, max_len: int | None, user_catalog: Path | None
) -> list[str]:
    """The two cheapest catalog profiles where the model fits, for the advice in a reason."""
    profiles = sorted(list_profiles(user_catalog).values(), key=lambda p: p.hourly_cost_usd)
    fit = [p.name for p in profiles if p.name != current and _plan(spec, p, max_len, None, []).fits]
    return fit[:2]


def plan_memory(
    model: str | ModelSpec,
    profile: str | HardwareProfile = "auto",
    *,
    max_model_len: int | None = None,
    max_num_seqs: int | None = None,
    user_catalog: Path | None = None,
) -> MemoryPlan:
    """Plan a model's memory on a hardware profile, per GPU (or in RAM), as vLLM would size it.

    Args:
        model: a catalog alias, repo id or directory (see `get_model`), or a `ModelSpec`.
        profile: a profile name, 'auto' (detect the hardware), or a `HardwareProfile`.
        max_model_len: context length to plan for; default the profile's, capped at the
            model's max_position_embeddings.
        max_num_seqs: the engine's batch size; default the profile's.
        user_catalog: an extra models/profiles TOML file (`LCFIN_CATALOG`).

    Raises:
        InvalidParameter: the model's architecture is unknown (download it first), a length or
            batch size is not positive, or the profile name is unknown.
        ModelNotFound: the model name matches nothing.
        InvalidCatalog: a catalog file is malformed.
    """
    for param, value in (("max_model_len", max_model_len), ("max_num_seqs", max_num_seqs)):
        if value is not None and value <= 0:
            raise InvalidParameter(f"{param} must be positive, not {value}", param=param)
    spec = model if isinstance(model, ModelSpec) else get_model(model, user_catalog)
    _architecture(spec)  # fail before the profile is detected
    prof = profile if isinstance(profile, HardwareProfile) else load_profile(profile, user_catalog)
    plan = _plan(spec, prof, max_model_len, max_num_seqs, [])
    if plan.fits:
        return plan
    others = _fitting_profiles(spec, prof.name, max_model_len, user_catalog)
    return _plan(spec, prof, max_model_len, max_num_seqs, others)


def does_not_fit(plan: MemoryPlan) -> DoesNotFit:
    """The `DoesNotFit` error for a plan that does not fit: breakdown, then what to change."""
    per = "per GPU" if plan.on_gpu else "in RAM"
    return DoesNotFit(
        f"{plan.model} does not fit profile {plan.profile}: {plan.weights_gib:.1f} GiB of "
        f"weights + {plan.activations_gib:.1f} GiB of activations + {plan.overhead_gib:.1f} GiB "
        f"of overhead {per}, of a {plan.budget_gib:.1f} GiB budget, leaves "
        f"{plan.kv_cache_gib:.2f} GiB for the KV cache "
        f"(max_model_len {plan.max_model_len:,}, {plan.max_concurrency:.2f} requests)",
        model=plan.model,
        hint=f"{plan.reason} Or choose a smaller model (see `lcfin plan`).",
    )


def check_fits(
    spec: ModelSpec,
    profile: HardwareProfile,
    settings: Settings,
    *,
    max_model_len: int | None = None,
    max_num_seqs: int | None = None,
) -> MemoryPlan:
    """The memory plan of `spec` on `profile`; raises unless it fits (before an engine starts).

    Raises:
        DoesNotFit: the plan says no; the message has the breakdown, the hint what to change.
        InvalidParameter: the architecture is unknown or a length or batch size is not positive.
    """
    plan = plan_memory(
        spec,
        profile,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        user_catalog=settings.catalog,
    )
    if not plan.fits:
        raise does_not_fit(plan)
    log.info("Pre-flight: %s", plan.reason)
    return plan
