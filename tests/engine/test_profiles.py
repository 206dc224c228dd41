"""Hardware profiles: the seed's settings, lookup, auto-detection, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from lcfin import InvalidCatalog, InvalidParameter, list_profiles, load_profile
from lcfin.engine import profiles as profiles_mod
from lcfin.engine.profiles import GpuInfo, profile_for_backend


def test_seed_hf_l40() -> None:
    p = load_profile("hf-l40")
    assert (p.gpu_memory_utilization, p.max_model_len, p.enforce_eager) == (0.75, 2048, True)
    assert (p.disable_custom_all_reduce, p.dtype, p.gpu_memory_gb) == (True, "bfloat16", 48)
    assert p.backend == "vllm"


def test_seed_scw_l40s() -> None:
    p = load_profile("scw-l40s")
    assert (p.gpu_memory_utilization, p.max_model_len, p.enforce_eager) == (0.85, 4096, False)
    assert (p.disable_custom_all_reduce, p.dtype, p.gpu_memory_gb) == (False, "bfloat16", 48)


def test_seed_deployment_env_names() -> None:
    assert load_profile("huggingface").name == "hf-l40"
    assert load_profile("scaleway").name == "scw-l40s"


def test_every_profile_has_cost_and_backend() -> None:
    profiles = list_profiles()
    assert {"hf-l40", "scw-l40s", "cpu"} <= set(profiles)
    assert any(p.tensor_parallel_size > 1 for p in profiles.values())
    for p in profiles.values():
        assert p.hourly_cost_usd > 0
        assert p.backend in {"vllm", "transformers"}
    assert profiles["cpu"].backend == "transformers"


def test_unknown_profile_lists_choices() -> None:
    with pytest.raises(InvalidParameter, match="scw-l40s") as info:
        load_profile("a100-x8")
    assert info.value.param == "profile"


@pytest.mark.parametrize(("cpu_build", "expected"), [(False, "cpu"), (True, "cpu-vllm")])
def test_auto_without_gpu_is_cpu_or_cpu_vllm(monkeypatch, cpu_build, expected) -> None:
    # Which vLLM is installed is an install-time edge: the check is replaced by a fixed answer.

    monkeypatch.setattr(profiles_mod, "detect_gpus", list)
    monkeypatch.setattr(profiles_mod, "vllm_cpu_build", lambda: cpu_build)
    assert load_profile("auto").name == expected


def test_cpu_vllm_profile_has_a_ram_budget_and_no_gpu_fraction() -> None:
    p = load_profile("cpu-vllm")
    assert (p.backend, p.gpu_count, p.is_gpu) == ("vllm", 0, False)
    assert (p.block_size, p.enforce_eager, p.dtype) == (128, True, "float32")
    assert p.ram_budget_gib > 0
    assert (p.alternate, load_profile("cpu").alternate) == ("cpu", "cpu-vllm")


def test_profile_for_backend_takes_the_alternate_made_for_it() -> None:
    cpu, cpu_vllm = load_profile("cpu"), load_profile("cpu-vllm")
    assert profile_for_backend(cpu, "vllm") == cpu_vllm
    assert profile_for_backend(cpu_vllm, "transformers") == cpu
    assert profile_for_backend(cpu, "transformers") == cpu
    l40s = load_profile("scw-l40s")  # no alternate: the Transformers backend runs it as it is
    assert profile_for_backend(l40s, "transformers") == l40s


def test_a_cpu_vllm_profile_needs_a_ram_budget(tmp_path: Path) -> None:
    user = tmp_path / "p.toml"
    user.write_text('[profiles.x]\nbackend = "vllm"\ngpu_count = 0\nram_budget_gib = 0\n')
    with pytest.raises(InvalidCatalog, match="ram_budget_gib"):
        list_profiles(user)


def test_auto_matches_detected_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # Detection is a hardware edge: NVML is replaced by a fixed answer.
    monkeypatch.setattr(profiles_mod, "detect_gpus", lambda: [GpuInfo("NVIDIA L40S", 44.53)])
    assert load_profile("auto").name == "scw-l40s"
    four = [GpuInfo("NVIDIA L40S", 44.53)] * 4
    monkeypatch.setattr(profiles_mod, "detect_gpus", lambda: four)
    assert load_profile("auto").name == "scw-l40s-x4"


def test_detect_gpus_here_finds_none() -> None:
    assert profiles_mod.detect_gpus() == []  # the dev and CI machines have no GPU


def test_bad_profile_file(tmp_path: Path) -> None:
    user = tmp_path / "p.toml"
    user.write_text('[profiles.big]\nbackend = "vllm"\ngpu_count = 2\ntensor_parallel_size = 4\n')
    with pytest.raises(InvalidCatalog, match=r"\[profiles.big\]"):
        list_profiles(user)
    user.write_text('[profiles.x]\nbackend = "vllm"\ngpu_count = 1\ngpu_memory_utilization = 1.5\n')
    with pytest.raises(InvalidCatalog, match="gpu_memory_utilization"):
        list_profiles(user)


def test_user_profile_is_loadable(tmp_path: Path) -> None:
    user = tmp_path / "p.toml"
    user.write_text('[profiles.a100]\nbackend = "vllm"\ngpu_count = 1\ngpu_total_gib = 79.2\n')
    assert load_profile("a100", user).gpu_total_gib == 79.2


def test_docs_profiles_page_covers_every_shipped_profile() -> None:
    from pathlib import Path

    from lcfin import list_profiles

    page = (Path(__file__).resolve().parents[2] / "docs" / "profiles.md").read_text()
    for name, profile in list_profiles().items():
        assert f"| `{name}` | {profile.backend} |" in page, f"{name}: not in the profiles table"
        assert f"| {name} | " in page, f"{name}: not in the every-model table"
