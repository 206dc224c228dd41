"""Backend selection: only auto, vllm and transformers are accepted, in the CLI's words too."""

from __future__ import annotations

import pytest

from lcfin import BackendUnavailable, FinancialLLM, InvalidParameter, Settings, load_profile
from lcfin.engine import profiles as profiles_mod
from lcfin.engine.backend import select_backend
from lcfin.engine.profiles import GpuInfo


def test_an_unknown_backend_is_an_invalid_parameter() -> None:
    with pytest.raises(InvalidParameter, match="Unknown backend 'bogus'") as info:
        select_backend("bogus", load_profile("cpu"), Settings())
    assert info.value.param == "backend" and info.value.exit_code == 2
    assert "auto, vllm, transformers" in str(info.value)
    with pytest.raises(InvalidParameter):
        FinancialLLM("demo", profile="cpu", backend="bogus", load=False)


def test_the_vllm_hints_name_the_cli_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profiles_mod, "vllm_available", lambda: True)
    monkeypatch.setattr(profiles_mod, "detect_gpus", list)
    with pytest.raises(BackendUnavailable) as info:
        select_backend("vllm", load_profile("scw-l40s"), Settings())
    assert "--backend transformers" in (info.value.hint or "")
    monkeypatch.setattr(profiles_mod, "vllm_available", lambda: False)
    monkeypatch.setattr(profiles_mod, "detect_gpus", lambda: [GpuInfo("NVIDIA L40S", 44.53)])
    with pytest.raises(BackendUnavailable) as info:
        select_backend("vllm", load_profile("scw-l40s"), Settings())
    assert "--backend transformers" in (info.value.hint or "")
