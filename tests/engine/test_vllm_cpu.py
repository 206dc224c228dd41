"""VLLMBackend on vLLM's CPU build: the KV cache the planner predicts, and real engine shutdowns.

Runs in `nox -s vllm` only (marker `vllm`): the engines are real vLLM engines on the tiny models
(head_dim 64) with the test profile of tests/backends.py; the rest of the vLLM path is covered
by the `any_backend` tests, which that session runs on the same build.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from lcfin import plan_memory
from lcfin.engine.vllm.backend import VLLMBackend
from tests.backends import BackendUnderTest

pytestmark = pytest.mark.vllm


def engine_pids(backend: Any) -> list[int]:
    """The pids of a VLLMBackend's EngineCore processes (vLLM internals, read by the test)."""
    manager = backend.engine.engine_core.resources.engine_manager
    return [proc.pid for proc in manager.processes]


def test_the_planner_predicts_the_kv_cache_vllm_reports(shared_llm: Any, backend: BackendUnderTest):
    """Issue 15: within 5% of vLLM's own 'CPU KV cache size' and 'Maximum concurrency'."""
    st = shared_llm.status()
    kv = st.kv_cache
    assert kv is not None, "the vLLM backend reports its KV cache after the load"
    assert kv["engine_tokens"] and kv["engine_max_concurrency"]
    plan = plan_memory(
        shared_llm.model, shared_llm.profile, user_catalog=backend.settings().catalog
    )
    assert (kv["planned_tokens"], kv["planned_max_concurrency"]) == (
        plan.kv_cache_tokens,
        plan.max_concurrency,
    )
    assert plan.kv_cache_tokens == pytest.approx(kv["engine_tokens"], rel=0.05)
    assert plan.max_concurrency == pytest.approx(kv["engine_max_concurrency"], rel=0.05)
    assert kv["block_size"] == shared_llm.profile.block_size == 128
    assert kv["max_model_len"] == st.max_model_len


def test_the_demo_model_on_cpu_vllm_matches_the_plan_too(fresh_engines: None) -> None:
    """The shipped cpu-vllm profile and the demo model (head_dim 48, 4 layers): a second shape."""
    from lcfin import FinancialLLM, Settings

    settings = Settings()
    with FinancialLLM("demo", profile="cpu-vllm", settings=settings, max_num_seqs=4) as llm:
        assert (llm.backend_kind, llm.profile.name) == ("vllm", "cpu-vllm")
        kv = llm.status().kv_cache
        assert kv is not None
        assert kv["planned_tokens"] == pytest.approx(kv["engine_tokens"], rel=0.05)
        assert kv["planned_max_concurrency"] == pytest.approx(
            kv["engine_max_concurrency"], rel=0.05
        )
        assert llm.chat("What is Basel III?", max_tokens=8, temperature=0).text


def test_switching_closes_the_old_engine_off_the_loop_and_its_processes_end(
    tiny_models: dict[str, Path], backend: BackendUnderTest, engine_cache: Any, monkeypatch
) -> None:
    import psutil

    closed_in: list[threading.Thread] = []
    real_close = VLLMBackend.close

    def close(self: VLLMBackend) -> None:
        closed_in.append(threading.current_thread())
        real_close(self)

    monkeypatch.setattr(VLLMBackend, "close", close)
    with engine_cache.bypassed():  # an engine of its own, to be closed for real
        llm = backend.llm(tiny_models["llama"])
    try:
        old = llm.loaded.backend  # type: ignore[union-attr]
        pids = engine_pids(old)
        loop_thread = llm._loop._thread
        llm.switch(str(tiny_models["qwen3"]))  # blue/green (both fit); qwen3's engine is shared
        assert llm.chat("What is EBITDA?", max_tokens=4, temperature=0).model == str(
            tiny_models["qwen3"]
        )
        assert old._closed
        assert closed_in and loop_thread not in closed_in  # never on the serving loop
        assert all(t is not loop_thread for t in closed_in)
        gone = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 30)
        assert not gone[1], "EngineCore processes still alive after close"
    finally:
        llm.close()
