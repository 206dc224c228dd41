"""An engine that dies under a loaded model: failed at once, hooks, restart with backoff or none.

Here over the stand-in vLLM engine of test_vllm_backend.py (its `errored` flag is what vLLM's
client sets when the EngineCore process dies); the real thing, a `kill -9` of the EngineCore
process under load, is tests/integration/test_engine_death.py on vLLM's CPU build.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import lcfin.engine.recovery as recovery_mod
from lcfin import Settings, load_profile
from lcfin.engine.manager import ModelManager
from lcfin.errors import BackendUnavailable, ModelLoading
from tests.engine.test_switching import wait_for

pytestmark = pytest.mark.asyncio


@pytest.fixture
def restart_gate(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Restarts start after 0.05 s and then wait for this gate (a slow load, S17)."""
    gate = threading.Event()
    real = recovery_mod.load_backend

    def gated(*args: Any, **kwargs: Any) -> Any:
        assert gate.wait(30), "the test never opened the restart gate"
        return real(*args, **kwargs)

    monkeypatch.setattr(recovery_mod, "RESTART_BACKOFF_S", 0.05)
    monkeypatch.setattr(recovery_mod, "load_backend", gated)
    yield gate
    gate.set()


def manager(**settings: Any) -> ModelManager:
    s = Settings(**settings)
    return ModelManager(s, load_profile("scw-l40s", s.catalog), "vllm")


async def test_death_fails_at_once_then_the_model_restarts(fake_vllm, tiny_models, restart_gate):
    mgr = manager()
    reasons: list[str] = []
    mgr.recovery.hooks.append(reasons.append)
    llama = str(tiny_models["llama"])
    try:
        await mgr.load(llama)
        dead = mgr.current
        assert dead is not None
        dead.backend.engine.errored = True  # what vLLM's client sets when EngineCore dies
        await wait_for(lambda: mgr.status().engine_deaths == 1)
        st = mgr.status()
        assert st.model is None
        assert st.state in ("failed", "loading")  # loading: the restart has begun
        assert "died" in (st.error or "")
        assert reasons and "died" in reasons[0]
        with pytest.raises(BackendUnavailable) as info:  # ModelLoading is one too: 503 both
            async with mgr.lease():
                pass
        assert info.value.http_status == 503
        await wait_for(lambda: fake_vllm.count(f"stop {llama}") == 1)  # the dead one released
        restart_gate.set()
        await wait_for(lambda: mgr.status().state == "ready")
        st = mgr.status()
        assert (st.model, st.error, st.engine_deaths) == (llama, None, 1)
        assert fake_vllm == [f"start {llama}", f"stop {llama}", f"start {llama}"]
        async with mgr.lease() as loaded:
            assert loaded is not dead
    finally:
        mgr.close()


async def test_exit_policy_reports_and_does_not_restart(fake_vllm, tiny_models, restart_gate):
    mgr = manager(on_engine_death="exit")
    reasons: list[str] = []
    mgr.recovery.hooks.append(reasons.append)
    llama = str(tiny_models["llama"])
    try:
        await mgr.load(llama)
        mgr.current.backend.engine.errored = True  # type: ignore[union-attr]
        await wait_for(lambda: bool(reasons))
        await wait_for(lambda: fake_vllm[-1] == f"stop {llama}")
        restart_gate.set()
        st = mgr.status()
        assert (st.state, st.model, st.engine_deaths) == ("failed", None, 1)
        assert "restarting" not in (st.error or "")
        assert fake_vllm.count(f"start {llama}") == 1
    finally:
        mgr.close()


async def test_a_switch_during_the_backoff_supersedes_the_restart(
    fake_vllm, tiny_models, monkeypatch
):
    monkeypatch.setattr(recovery_mod, "RESTART_BACKOFF_S", 0.5)
    mgr = manager()
    llama, qwen = str(tiny_models["llama"]), str(tiny_models["qwen3"])
    try:
        await mgr.load(llama)
        mgr.current.backend.engine.errored = True  # type: ignore[union-attr]
        await wait_for(lambda: mgr.status().engine_deaths == 1)
        await mgr.load(qwen)  # the operator loads another model meanwhile
        assert mgr.recovery.pending is None
        with pytest.raises(AssertionError):  # the restart of llama never comes
            await wait_for(lambda: fake_vllm.count(f"start {llama}") == 2, timeout=1.5)
        assert (mgr.status().state, mgr.status().model) == ("ready", qwen)
    finally:
        mgr.close()


async def test_loading_while_the_restart_runs_is_model_loading(
    fake_vllm, tiny_models, restart_gate
):
    mgr = manager()
    llama = str(tiny_models["llama"])
    try:
        await mgr.load(llama)
        mgr.current.backend.engine.errored = True  # type: ignore[union-attr]
        await wait_for(lambda: mgr.status().state == "loading")  # the restart, at the gate
        with pytest.raises(ModelLoading):
            await mgr.load(llama, max_model_len=64)
    finally:
        restart_gate.set()
        mgr.close()
