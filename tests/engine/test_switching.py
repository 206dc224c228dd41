"""Switching models: the planner's blue/green vs drain-and-swap decision, and the state machine.

The state machine runs the real TransformersBackend on the tiny models (the strategy forced where
the planner would pick blue/green on the CPU), and the vLLM path over the stand-in engine of
test_vllm_backend.py (vllm cannot be installed here), where the planner itself picks the strategy.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import threading
import time
from typing import Any, ClassVar

import pytest

from lcfin import Settings, get_model, load_profile, plan_memory
from lcfin.engine.manager import ModelManager
from lcfin.engine.profiles import effective_profile
from lcfin.engine.registry import spec_from_directory
from lcfin.engine.switching import (
    MAX_SHARED_UTILIZATION,
    choose_strategy,
    footprint_gib,
    shared_budget_gib,
)
from lcfin.engine.types import GenerationRequest, SamplingParams
from lcfin.errors import (
    BackendUnavailable,
    DoesNotFit,
    InvalidParameter,
    ModelLoadFailed,
    ModelLoading,
)
from tests.backends import BackendUnderTest
from tests.engine.conftest import RecordingLLM


def corrupt_copy(src, dst):
    """A copy of a tiny model directory whose weights file is cut in half (fails to load)."""
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return dst


# -- the decision, pure ----------------------------------------------------------------------------


def vllm_footprint(model: str, profile: str, **overrides: Any) -> float:
    prof = effective_profile(load_profile(profile), overrides)
    return footprint_gib(plan_memory(model, prof), "vllm")


def test_nothing_loaded_needs_no_drain() -> None:
    assert choose_strategy(None, 10.0, load_profile("scw-l40s")) == "blue_green"
    assert choose_strategy(None, None, load_profile("scw-l40s")) == "blue_green"


@pytest.mark.parametrize("profile", ["hf-l40", "scw-l40s", "h100-x2"])
def test_seed_vllm_profiles_drain_because_each_engine_reserves_its_budget(profile: str) -> None:
    small = vllm_footprint("fin-pythia-1.4b", profile)
    # vLLM preallocates gpu_memory_utilization x total, whatever the model's size.
    assert small == plan_memory("fin-pythia-1.4b", profile).budget_gib
    assert choose_strategy(small, small, load_profile(profile)) == "drain_and_swap"


def test_two_vllm_engines_share_a_gpu_when_their_utilisations_fit() -> None:
    prof = load_profile("scw-l40s")
    low = vllm_footprint("fin-pythia-1.4b", "scw-l40s", gpu_memory_utilization=0.45)
    assert choose_strategy(low, low, prof) == "blue_green"  # 0.90 <= 0.95
    high = vllm_footprint("fin-pythia-1.4b", "scw-l40s", gpu_memory_utilization=0.51)
    assert choose_strategy(low, high, prof) == "drain_and_swap"  # 0.96 > 0.95
    assert shared_budget_gib(prof) == pytest.approx(44.53 * MAX_SHARED_UTILIZATION)


def test_transformers_footprint_is_what_the_batch_can_fill(tiny_models) -> None:
    spec = spec_from_directory(tiny_models["llama"])
    plan = plan_memory(spec, "cpu")
    fp = footprint_gib(plan, "transformers")
    kv = plan.kv_bytes_per_token * plan.max_model_len * plan.max_num_seqs / 2**30
    assert fp == pytest.approx(plan.weights_gib + plan.activations_gib + plan.overhead_gib + kv)
    assert fp < plan.budget_gib / 2  # so two of them switch blue/green on the CPU
    assert choose_strategy(fp, fp, load_profile("cpu")) == "blue_green"


def test_cpu_models_too_big_for_ram_together_drain() -> None:
    cpu = load_profile("cpu")  # 16 GiB of RAM
    pythia = footprint_gib(plan_memory("fin-pythia-1.4b", cpu), "transformers")
    assert pythia > cpu.ram_budget_gib / 2
    assert choose_strategy(pythia, pythia, cpu) == "drain_and_swap"


def test_unknown_size_drains_on_a_gpu_only() -> None:
    assert choose_strategy(5.0, None, load_profile("scw-l40s")) == "drain_and_swap"
    assert choose_strategy(5.0, None, load_profile("cpu")) == "blue_green"


# -- the state machine with Transformers on tiny models --------------------------------------------

GREEDY = SamplingParams(max_tokens=4, temperature=0.0)


def manager(backend: BackendUnderTest, **kw: Any) -> ModelManager:
    settings = backend.settings()
    return ModelManager(
        settings, load_profile(backend.profile, settings.catalog), backend.kind, **kw
    )


async def generate_once(mgr: ModelManager) -> str:
    async with mgr.lease() as loaded:
        ids = loaded.backend.tokenizer.encode("What is Basel III?")
        deltas = [d async for d in loaded.backend.generate(GenerationRequest(ids, GREEDY))]
        assert deltas[-1].finish_reason in {"stop", "length"}
        return loaded.spec.name


async def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.any_backend
@pytest.mark.asyncio
async def test_auto_on_cpu_is_blue_green_and_the_old_model_serves_meanwhile(
    tiny_models, backend, load_gate
):
    mgr = manager(backend)
    llama, qwen = str(tiny_models["llama"]), str(tiny_models["qwen3"])
    await mgr.load(llama)
    try:
        load_gate.close()  # the new model's load waits while the test looks
        task = asyncio.create_task(mgr.load(qwen))
        await wait_for(lambda: mgr.status().strategy is not None)
        st = mgr.status()
        assert (st.state, st.strategy, st.model) == ("loading", "blue_green", llama)
        assert st.serving  # what /health/ready reports: ready all through a blue/green switch
        assert await generate_once(mgr) == llama  # still serving
        load_gate.open()
        await task
        assert (mgr.status().state, mgr.status().model, mgr.status().strategy) == (
            "ready",
            qwen,
            None,
        )
    finally:
        mgr.close()


@pytest.mark.any_backend
@pytest.mark.asyncio
async def test_drain_and_swap_waits_for_in_flight_requests_and_refuses_new_ones(
    tiny_models, backend
):
    mgr = manager(backend, strategy="drain_and_swap")
    llama, qwen = str(tiny_models["llama"]), str(tiny_models["qwen3"])
    await mgr.load(llama)
    try:
        async with mgr.lease() as old:  # an in-flight request
            task = asyncio.create_task(mgr.load(qwen))
            await wait_for(lambda: mgr.status().strategy == "drain_and_swap")
            await asyncio.sleep(0.1)
            assert not task.done()  # waiting for this request
            assert mgr.status().model == llama
            assert not mgr.status().serving  # draining: new requests get 503, not ready
            with pytest.raises(ModelLoading) as info:
                async with mgr.lease():
                    pass
            assert info.value.retry_after > 0
            assert info.value.http_status == 503
            assert not old.backend._closed  # type: ignore[attr-defined]
        await task
        assert old.backend._closed  # type: ignore[attr-defined]
        st = mgr.status()
        assert (st.state, st.model, st.error) == ("ready", qwen, None)
        assert await generate_once(mgr) == qwen
    finally:
        mgr.close()


@pytest.mark.any_backend
@pytest.mark.asyncio
async def test_a_drain_that_times_out_closes_the_old_model_anyway(tiny_models, backend):
    mgr = manager(backend, strategy="drain_and_swap", drain_timeout_s=0.05)
    llama, qwen = str(tiny_models["llama"]), str(tiny_models["qwen3"])
    await mgr.load(llama)
    try:
        async with mgr.lease() as old:
            await mgr.load(qwen)  # does not wait for the lease
            assert old.backend._closed  # type: ignore[attr-defined]
        assert mgr.status().model == qwen
    finally:
        mgr.close()


@pytest.mark.any_backend
def test_switch_strategy_can_be_forced_per_load(make_llm, tiny_models, backend):
    llm = make_llm("llama")
    qwen = str(tiny_models["qwen3"])
    llm.switch(qwen, switch_strategy="drain_and_swap")
    assert (llm.status().state, llm.model) == ("ready", qwen)
    assert llm.chat("What is EBITDA?", max_tokens=4, temperature=0.0).model == qwen
    with pytest.raises(InvalidParameter) as info:
        llm.switch(str(tiny_models["llama"]), switch_strategy="sideways")
    assert info.value.param == "switch_strategy"
    assert llm.model == qwen
    with pytest.raises(InvalidParameter):
        manager(backend, strategy="sideways")


@pytest.mark.any_backend
def test_failed_drain_and_swap_restores_the_previous_model(make_llm, tiny_models, tmp_path):
    llm = make_llm("llama")
    llama = str(tiny_models["llama"])
    bad = corrupt_copy(tiny_models["llama"], tmp_path / "corrupt")
    with pytest.raises(ModelLoadFailed):
        llm.switch(str(bad), switch_strategy="drain_and_swap")
    st = llm.status()
    assert (st.state, st.model, st.loading_model, st.strategy) == ("failed", llama, None, None)
    assert st.error
    assert "restoring" not in st.error
    assert llm.chat("What is EBITDA?", max_tokens=4, temperature=0.0).model == llama
    llm.switch(str(tiny_models["qwen3"]), switch_strategy="drain_and_swap")
    assert (llm.status().state, llm.status().error) == ("ready", None)


def test_a_failed_switch_names_the_failed_model_and_keeps_the_served_ones_load_time(
    make_llm, tiny_models, tmp_path
):
    llm = make_llm("llama")
    llama = str(tiny_models["llama"])
    loaded_in = llm.status().load_time_s
    bad = corrupt_copy(tiny_models["qwen3"], tmp_path / "corrupt")
    before = time.time()
    with pytest.raises(ModelLoadFailed):
        llm.switch(str(bad), switch_strategy="drain_and_swap")  # unloads llama, then restores it
    st = llm.status()
    assert (st.state, st.model, st.failed_model) == ("failed", llama, str(bad))
    assert st.failed_at is not None and st.failed_at >= before and st.error
    assert st.load_time_s == loaded_in  # the served model's load time, not the restore's
    assert st.serving
    llm.switch(str(tiny_models["qwen3"]))  # the next load clears the failure
    st = llm.status()
    assert (st.state, st.failed_model, st.failed_at, st.error) == ("ready", None, None, None)


@pytest.mark.asyncio
async def test_transformers_refuses_a_model_that_cannot_fit_before_unloading(tiny_models):
    mgr = manager(BackendUnderTest("transformers", "cpu"))  # the cpu profile: 16 GiB of RAM
    llama = str(tiny_models["llama"])
    await mgr.load(llama)
    try:
        current = mgr.current
        assert current is not None
        with pytest.raises(DoesNotFit, match=r"does not fit profile cpu") as info:
            await mgr.load("llama3.1-70b")
        assert info.value.exit_code == 3 and info.value.http_status == 422
        assert mgr.current is current and not current.backend._closed  # type: ignore[attr-defined]
        st = mgr.status()
        assert (st.state, st.model, st.failed_model) == ("failed", llama, "llama3.1-70b")
        assert await generate_once(mgr) == llama  # still serving
    finally:
        mgr.close()


def test_a_model_too_big_for_the_profile_is_refused_before_any_download(tmp_path):
    from lcfin import FinancialLLM

    settings = Settings()
    with pytest.raises(DoesNotFit, match="qwen3-8b does not fit profile cpu"):
        FinancialLLM("qwen3-8b", profile="cpu", settings=settings)
    assert not any(settings.hub_cache.glob("models--*"))  # nothing was fetched
    llm = FinancialLLM("demo", profile="cpu", settings=settings, load=False)
    try:
        assert llm.preflight().name == "demo"  # the demo fits, and nothing is loaded
        assert llm.status().state == "idle"
        with pytest.raises(DoesNotFit):
            llm.preflight("llama3.1-70b")
    finally:
        llm.close()


def test_when_the_restore_fails_too_both_reasons_are_reported(make_llm, tiny_models, tmp_path):
    first = shutil.copytree(tiny_models["llama"], tmp_path / "first")
    llm = make_llm("llama")
    llm.switch(str(first))
    shutil.rmtree(first)  # the previous model cannot be loaded again
    bad = corrupt_copy(tiny_models["qwen3"], tmp_path / "corrupt")
    with pytest.raises(ModelLoadFailed, match=r"restoring the previous model .* failed too"):
        llm.switch(str(bad), switch_strategy="drain_and_swap")
    st = llm.status()
    assert (st.state, st.model) == ("failed", None)
    with pytest.raises(BackendUnavailable, match="failed too"):
        llm.chat("What is EBITDA?", max_tokens=4)
    llm.switch(str(tiny_models["qwen3"]))
    assert llm.status().state == "ready"


# -- the vLLM path over the stand-in engine ------------------------------------------------------


def vllm_manager(profile: str = "scw-l40s") -> ModelManager:
    settings = Settings()
    return ModelManager(settings, load_profile(profile, settings.catalog), "vllm")


@pytest.mark.asyncio
async def test_vllm_on_one_l40s_drains_before_starting_the_next_engine(fake_vllm, tiny_models):
    mgr = vllm_manager()
    llama, qwen = str(tiny_models["llama"]), str(tiny_models["qwen3"])
    try:
        await mgr.load(llama)
        await mgr.load(qwen)
        assert fake_vllm == [f"start {llama}", f"stop {llama}", f"start {qwen}"]
        assert mgr.status().model == qwen
    finally:
        mgr.close()
    assert fake_vllm[-1] == f"stop {qwen}"


@pytest.mark.asyncio
async def test_vllm_engines_that_fit_together_switch_blue_green(fake_vllm, tiny_models):
    mgr = vllm_manager()
    llama, qwen = str(tiny_models["llama"]), str(tiny_models["qwen3"])
    try:
        await mgr.load(llama, gpu_memory_utilization=0.45)
        await mgr.load(qwen, gpu_memory_utilization=0.45)
        assert fake_vllm == [f"start {llama}", f"start {qwen}", f"stop {llama}"]
    finally:
        mgr.close()


@pytest.mark.asyncio
async def test_vllm_refuses_a_model_that_cannot_fit_before_unloading(fake_vllm, tiny_models):
    mgr = vllm_manager("hf-l40")
    llama = str(tiny_models["llama"])
    try:
        await mgr.load(llama)
        with pytest.raises(DoesNotFit, match=r"131\.4 GiB of weights"):
            await mgr.load(get_model("llama3.1-70b"))
        assert fake_vllm == [f"start {llama}"]  # nothing was stopped
        st = mgr.status()
        assert (st.state, st.model) == ("failed", llama)
        assert "does not fit" in (st.error or "")
    finally:
        mgr.close()


class ThreadRecordingLLM(RecordingLLM):
    """The stand-in AsyncLLM, noting which thread each shutdown ran in."""

    threads: ClassVar[list[threading.Thread]] = []

    def shutdown(self, timeout: float | None = None) -> None:
        self.threads.append(threading.current_thread())
        super().shutdown(timeout)


@pytest.mark.asyncio
async def test_engines_close_off_the_event_loop(fake_vllm, tiny_models):
    # A vLLM shutdown blocks for seconds: neither a blue/green swap nor the end of a retired
    # model's last request may run it on the serving loop.
    sys.modules["vllm.v1.engine.async_llm"].AsyncLLM = ThreadRecordingLLM  # type: ignore[attr-defined]
    ThreadRecordingLLM.threads = []
    loop_thread = threading.current_thread()
    mgr = vllm_manager()
    llama, qwen = str(tiny_models["llama"]), str(tiny_models["qwen3"])
    try:
        await mgr.load(llama, gpu_memory_utilization=0.45)
        await mgr.load(qwen, gpu_memory_utilization=0.45)  # blue/green, old one idle
        assert fake_vllm[-1] == f"stop {llama}"  # closed before the switch returned
        async with mgr.lease():  # a request on qwen while llama comes back
            await mgr.load(llama, gpu_memory_utilization=0.45)
            assert fake_vllm[-1] == f"start {llama}"  # qwen is busy: not closed yet
        await wait_for(lambda: fake_vllm[-1] == f"stop {qwen}")  # its last request ended
        assert len(ThreadRecordingLLM.threads) == 2
        assert loop_thread not in ThreadRecordingLLM.threads
    finally:
        mgr.close()
