"""The warm tier: sleep-mode decisions (pure), and the switch path over a stand-in vLLM engine.

vLLM's sleep mode needs CUDA, which no test machine has, so the switch-path tests run the real
`ModelManager` and `VLLMBackend` over `SleepyLLM`, a scripted double of `AsyncLLM` (the vLLM/GPU
edge only) that honours `enable_sleep_mode` as vLLM's `ModelConfig` does and logs when engines
start, sleep, wake and stop. The host's RAM (/proc/meminfo) is replaced where a test needs it
low. The real sleep and wake are checked on a GPU by scripts/gpu_check.py.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from lcfin import BackendUnavailable, ModelLoadFailed, Settings, load_profile
from lcfin.engine.manager import ModelManager
from lcfin.engine.registry import get_model
from lcfin.engine.vllm.args import engine_args
from lcfin.engine.warm import (
    HOST_MARGIN_GIB,
    SLEEP_RESIDUAL_GIB,
    HostMemory,
    evictions_to_park,
    host_weights_gib,
    keep_refusal,
    read_host_memory,
    sleep_mode_for,
)
from lcfin.errors import InvalidParameter
from tests.engine.test_switching import wait_for
from tests.engine.test_vllm_backend import FakeAsyncLLM, backend_over, install_fake_vllm

L40S = load_profile("scw-l40s")
PLENTY = HostMemory(available_gib=200.0, total_gib=256.0)

# -- which engines are built with sleep mode -------------------------------------------------------


def test_sleep_mode_is_on_by_default_only_on_cuda_profiles() -> None:
    assert sleep_mode_for("auto", L40S) is True
    assert sleep_mode_for("auto", load_profile("cpu")) is False
    assert sleep_mode_for("off", L40S) is False
    assert sleep_mode_for("on", L40S) is True
    with pytest.raises(InvalidParameter, match="needs a CUDA GPU") as info:
        sleep_mode_for("on", load_profile("cpu"))
    assert info.value.param == "sleep_mode"


def test_engine_args_follow_the_setting() -> None:
    spec = get_model("qwen3-8b")
    assert engine_args(spec, L40S, Settings())["enable_sleep_mode"] is True
    assert "enable_sleep_mode" not in engine_args(spec, L40S, Settings(sleep_mode="off"))
    # an explicit load option wins over the setting, but never on a profile without a GPU
    assert "enable_sleep_mode" not in engine_args(spec, L40S, Settings(), enable_sleep_mode=False)
    with pytest.raises(InvalidParameter):
        engine_args(spec, load_profile("cpu"), Settings(), enable_sleep_mode=True)


def test_sleep_mode_on_with_the_cpu_profile_refuses_to_start(monkeypatch) -> None:
    monkeypatch.setenv("LCFIN_SLEEP_MODE", "on")
    monkeypatch.setenv("DEPLOYMENT_ENV", "cpu")
    with pytest.raises(ValidationError, match="LCFIN_SLEEP_MODE=on needs a CUDA GPU"):
        Settings()
    monkeypatch.setenv("LCFIN_SLEEP_MODE", "sometimes")
    monkeypatch.delenv("DEPLOYMENT_ENV")
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(ValidationError):
        Settings(warm_models=-1)


# -- whether a sleeper may stay ------------------------------------------------------------------


def test_host_memory_is_read_from_meminfo(tmp_path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 25165824 kB\nMemFree: 1 kB\nMemAvailable: 12582912 kB\n")
    assert read_host_memory(meminfo) == HostMemory(available_gib=12.0, total_gib=24.0)
    meminfo.write_text("MemTotal: 25165824 kB\n")  # an old kernel without MemAvailable
    assert read_host_memory(meminfo) is None
    assert read_host_memory(tmp_path / "missing") is None


def test_a_sleeper_needs_its_weights_in_host_ram_with_a_reserve_left() -> None:
    weights = 15.26  # Qwen3 8B in bf16
    assert (
        keep_refusal(weights_gib=weights, host=PLENTY, sleepers=0, next_gib=None, profile=L40S)
        is None
    )
    need = weights + HOST_MARGIN_GIB
    tight = HostMemory(available_gib=need + 2.0, total_gib=64.0)  # 6.4 GiB must stay free
    reason = keep_refusal(weights_gib=weights, host=tight, sleepers=0, next_gib=None, profile=L40S)
    assert reason is not None
    assert reason.startswith("host RAM")


def test_tensor_parallel_weights_all_land_in_this_hosts_ram() -> None:
    assert host_weights_gib(8.0, load_profile("scw-l40s-x4")) == 32.0
    assert host_weights_gib(8.0, load_profile("ray-h100-2x4")) == 32.0  # 4 of the 8 ranks here


def test_sleepers_leave_room_on_the_gpu_for_the_next_engine() -> None:
    budget = L40S.gpu_total_gib * L40S.gpu_memory_utilization  # 37.85 of 44.53 GiB
    room = int((L40S.gpu_total_gib - budget) / SLEEP_RESIDUAL_GIB) - 2
    ok = keep_refusal(weights_gib=1.0, host=PLENTY, sleepers=room, next_gib=None, profile=L40S)
    assert ok is None
    full = keep_refusal(
        weights_gib=1.0, host=PLENTY, sleepers=room + 1, next_gib=None, profile=L40S
    )
    assert full is not None
    assert full.startswith("GPU memory")


def test_the_oldest_sleepers_go_first_when_the_tier_is_full_or_ram_is_short() -> None:
    kw: dict[str, Any] = {"host": PLENTY, "next_gib": None, "profile": L40S}
    assert evictions_to_park(5.0, [], capacity=1, **kw) == (0, None)
    assert evictions_to_park(5.0, [5.0], capacity=1, **kw) == (1, None)
    assert evictions_to_park(5.0, [5.0, 5.0], capacity=2, **kw) == (1, None)
    # RAM for one sleeper only: the old one is closed so that the newest can sleep
    one = HostMemory(available_gib=9.0, total_gib=40.0)  # 6 GiB needed, 4 kept free
    assert evictions_to_park(5.0, [5.0], capacity=3, host=one, next_gib=None, profile=L40S) == (
        1,
        None,
    )
    # even with every sleeper closed it would not fit: nothing is closed, and the reason says why
    count, reason = evictions_to_park(
        50.0, [5.0], capacity=3, host=one, next_gib=None, profile=L40S
    )
    assert count == 0
    assert reason is not None
    assert "host RAM" in reason
    assert evictions_to_park(5.0, [], capacity=0, **kw)[1] is not None


# -- the switch path over the stand-in engine ----------------------------------------------------


class SleepyLLM(FakeAsyncLLM):
    """Stands in for vLLM's `AsyncLLM` with sleep mode: it logs start, sleep, wake and stop.

    Like vLLM's `ModelConfig`, its `model_config.enable_sleep_mode` is the engine argument;
    `fail_wake` makes the next `wake_up` raise (an engine that died while asleep), and
    `fail_start` names models whose engine fails to start.
    """

    events: ClassVar[list[str]] = []
    fail_wake: ClassVar[bool] = False
    fail_start: ClassVar[set[str]] = set()

    @classmethod
    def from_engine_args(cls, engine_args: Any, stat_loggers: Any = None) -> FakeAsyncLLM:
        name = str(engine_args.kwargs["served_model_name"]).rsplit("/", 1)[-1]
        if name in cls.fail_start:
            raise RuntimeError("CUDA out of memory while allocating the KV cache")
        engine = super().from_engine_args(engine_args, stat_loggers)
        engine.model_config.enable_sleep_mode = engine_args.kwargs.get("enable_sleep_mode", False)  # type: ignore[attr-defined]
        cls.events.append(f"start {cls._name(engine)}")
        return engine

    @staticmethod
    def _name(engine: FakeAsyncLLM) -> str:
        return str(engine.args.kwargs["served_model_name"]).rsplit("/", 1)[-1]

    async def sleep(self, level: int = 1) -> None:
        assert self.model_config.enable_sleep_mode, "vLLM refuses to sleep without sleep mode"  # type: ignore[attr-defined]
        self.events.append(f"sleep{level} {self._name(self)}")

    async def wake_up(self, tags: list[str] | None = None) -> None:
        if getattr(self, "errored", False):  # vLLM's client: a dead EngineCore answers nothing
            raise RuntimeError("EngineDeadError: EngineCore encountered an issue")
        if SleepyLLM.fail_wake:
            SleepyLLM.fail_wake = False
            raise RuntimeError("EngineCore died while asleep")
        self.events.append(f"wake {self._name(self)}")

    def shutdown(self, timeout: float | None = None) -> None:
        self.events.append(f"stop {self._name(self)}")


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    install_fake_vllm(monkeypatch)
    sys.modules["vllm.v1.engine.async_llm"].AsyncLLM = SleepyLLM  # type: ignore[attr-defined]
    SleepyLLM.events, SleepyLLM.fail_wake, SleepyLLM.fail_start = [], False, set()
    return SleepyLLM.events


@pytest.fixture
def paths(tiny_models) -> dict[str, str]:
    return {arch: str(tiny_models[arch]) for arch in ("llama", "qwen3", "gpt_neox")}


def vllm_manager(profile: str = "scw-l40s", **settings: Any) -> ModelManager:
    conf = Settings(**settings)
    return ModelManager(conf, load_profile(profile, conf.catalog), "vllm")


@pytest.mark.asyncio
async def test_a_model_switched_away_from_sleeps_and_wakes_instead_of_reloading(events, paths):
    mgr = vllm_manager()  # one L40S at 0.85: every switch drains
    a, b = paths["llama"], paths["qwen3"]
    try:
        await mgr.load(a)
        await mgr.load(b)
        assert events == ["start llama", "sleep1 llama", "start qwen3"]
        st = mgr.status()
        assert (st.model, st.sleeping) == (b, (a,))
        assert st.last_switch is not None
        assert {
            k: st.last_switch[k] for k in ("previous", "strategy", "source", "previous_went")
        } == {
            "previous": a,
            "strategy": "drain_and_swap",
            "source": "loaded",
            "previous_went": "slept",
        }
        await mgr.load(a)
        assert events[3:] == ["sleep1 qwen3", "wake llama"]  # no second "start llama"
        st = mgr.status()
        assert (st.model, st.sleeping, st.last_switch["source"]) == (a, (b,), "woken")  # type: ignore[index]
        async with mgr.lease() as loaded:  # the woken engine serves
            assert loaded.spec.name == a
    finally:
        mgr.close()
    assert sorted(events[-2:]) == ["stop llama", "stop qwen3"]  # the sleeper is closed too


@pytest.mark.asyncio
async def test_the_least_recently_parked_sleeper_makes_room(events, paths):
    mgr = vllm_manager(warm_models=1)
    a, b, c = paths["llama"], paths["qwen3"], paths["gpt_neox"]
    try:
        for path in (a, b, c):
            await mgr.load(path)
        assert events == [
            "start llama", "sleep1 llama", "start qwen3",
            "stop llama", "sleep1 qwen3", "start gpt_neox",
        ]  # fmt: skip
        assert mgr.status().sleeping == (b,)
        await mgr.load(a)  # closed earlier: loaded again
        assert events[-1] == "start llama"
    finally:
        mgr.close()


@pytest.mark.asyncio
async def test_without_host_ram_the_old_model_is_closed(events, paths):
    mgr = vllm_manager()
    mgr._warm.read_host = lambda: HostMemory(available_gib=1.0, total_gib=24.0)
    try:
        await mgr.load(paths["llama"])
        await mgr.load(paths["qwen3"])
        assert events == ["start llama", "stop llama", "start qwen3"]
        st = mgr.status()
        assert (st.sleeping, st.last_switch["previous_went"]) == ((), "closed")  # type: ignore[index]
    finally:
        mgr.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("settings", [{"sleep_mode": "off"}, {"warm_models": 0}])
async def test_the_tier_can_be_turned_off(events, paths, settings):
    mgr = vllm_manager(**settings)
    try:
        await mgr.load(paths["llama"])
        await mgr.load(paths["qwen3"])
        await mgr.load(paths["llama"])
        assert events == [
            "start llama", "stop llama", "start qwen3", "stop qwen3", "start llama",
        ]  # fmt: skip
    finally:
        mgr.close()


@pytest.mark.asyncio
async def test_an_engine_built_without_sleep_mode_refuses_to_sleep(events, paths):
    mgr = vllm_manager(sleep_mode="off")
    try:
        await mgr.load(paths["llama"])
        async with mgr.lease() as loaded:
            assert loaded.backend.can_sleep is False  # type: ignore[attr-defined]
            with pytest.raises(BackendUnavailable, match="built without sleep mode"):
                await loaded.backend.sleep(1)  # type: ignore[attr-defined]
    finally:
        mgr.close()
    assert "sleep1 llama" not in events


@pytest.mark.asyncio
async def test_a_sleeper_that_cannot_wake_is_closed_and_loaded_again(events, paths):
    mgr = vllm_manager()
    a, b = paths["llama"], paths["qwen3"]
    try:
        await mgr.load(a)
        await mgr.load(b)
        SleepyLLM.fail_wake = True
        await mgr.load(a)
        assert events[3:] == ["sleep1 qwen3", "stop llama", "start llama"]
        st = mgr.status()
        assert (st.model, st.state, st.last_switch["source"]) == (a, "ready", "loaded")  # type: ignore[index]
    finally:
        mgr.close()


@pytest.mark.asyncio
async def test_a_failed_switch_wakes_the_previous_model_back(events, paths):
    mgr = vllm_manager()
    a = paths["llama"]
    SleepyLLM.fail_start = {"qwen3"}
    try:
        await mgr.load(a)
        with pytest.raises(ModelLoadFailed, match="out of memory"):
            await mgr.load(paths["qwen3"])
        assert events == ["start llama", "sleep1 llama", "wake llama"]  # restored in seconds
        st = mgr.status()
        assert (st.model, st.state, st.sleeping) == (a, "failed", ())
    finally:
        mgr.close()


@pytest.mark.asyncio
async def test_blue_green_parks_the_old_engine_once_it_is_idle(events, paths):
    mgr = vllm_manager()
    a, b = paths["llama"], paths["qwen3"]
    try:
        await mgr.load(a, gpu_memory_utilization=0.45)
        await mgr.load(b, gpu_memory_utilization=0.45)  # 0.90 <= 0.95: both fit
        assert events == ["start llama", "start qwen3", "sleep1 llama"]
        assert mgr.status().last_switch["strategy"] == "blue_green"  # type: ignore[index]
        await mgr.load(a, gpu_memory_utilization=0.45)
        assert events[3:] == ["wake llama", "sleep1 qwen3"]
        async with mgr.lease():  # busy when the next switch completes: closed after it, not parked
            await mgr.load(b, gpu_memory_utilization=0.45)
            assert mgr.status().last_switch["previous_went"] == "closing"  # type: ignore[index]
        await wait_for(lambda: len(events) > 6)  # the lease closes it in a thread of its own
        assert events[5:] == ["wake qwen3", "stop llama"]
    finally:
        mgr.close()


@pytest.mark.asyncio
async def test_sleeping_shrinks_the_memory_close_waits_for() -> None:
    used = [30 * 2**30]
    engine = SleepyLLM(args=type("Args", (), {"kwargs": {"served_model_name": "m"}})())
    engine.model_config.enable_sleep_mode = True  # type: ignore[attr-defined]
    backend = backend_over(engine, held_bytes=20 * 2**30)
    backend._read_memory = lambda: used[0]

    async def sleep(level: int = 1) -> None:
        used[0] -= 19 * 2**30  # the weights and KV cache leave the GPU

    async def wake_up(tags: list[str] | None = None) -> None:
        used[0] += 19 * 2**30

    engine.sleep, engine.wake_up = sleep, wake_up  # type: ignore[method-assign]
    await backend.sleep(1)
    assert backend._held == 2**30  # what close() still has to see released
    await backend.wake_up()
    assert backend._held == 20 * 2**30


@pytest.mark.asyncio
async def test_a_woken_engine_is_watched_again_and_a_sleepers_death_goes_unreported(events, paths):
    mgr = vllm_manager(on_engine_death="exit")  # reported, not restarted: nothing else moves
    a, b = paths["llama"], paths["qwen3"]
    try:
        await mgr.load(a)
        sleeper = mgr.current
        await mgr.load(b)
        assert sleeper is not None
        sleeper.backend.engine.errored = True  # dies while asleep: not serving, not reported
        await mgr.load(a)  # the wake fails, so a fresh engine loads
        assert events[-2:] == ["stop llama", "start llama"]
        assert mgr.status().engine_deaths == 0
        await mgr.load(b)  # b was parked, and is woken now
        assert mgr.status().last_switch["source"] == "woken"  # type: ignore[index]
        mgr.current.backend.engine.errored = True  # type: ignore[union-attr]
        await wait_for(lambda: mgr.status().engine_deaths == 1)  # the woken one is watched
        assert "died" in (mgr.status().error or "")
    finally:
        mgr.close()
