"""scripts/prepare_gpu_wheels.py: which of lcfin's dependencies travel to the GPU machine.

The download itself needs the network (the developers run it by hand); these tests pin the
selection: lcfin's runtime requirements for CPython 3.12 on Linux, minus what the machine has.
"""

from __future__ import annotations

import importlib.metadata
import zipfile

import pytest

from tests.scripts.conftest import load_script


@pytest.fixture(scope="module")
def wheels():
    return load_script("prepare_gpu_wheels")


def test_torch_transformers_and_their_dependencies_stay_behind(wheels) -> None:
    carried = {wheels.canonical(r.split("<")[0].split(">")[0].split("=")[0].split("!")[0])
               for r in wheels.to_carry(importlib.metadata.requires("lcfin") or [])}  # fmt: skip
    for present in ("torch", "transformers", "huggingface-hub", "safetensors", "numpy", "typer"):
        assert present not in carried
    assert {"pydantic", "pydantic-settings", "starlette", "uvicorn"} <= carried
    assert not any(name in {"pytest", "ruff", "vllm", "mkdocs"} for name in carried)  # extras


def test_markers_are_evaluated_for_the_machine(wheels) -> None:
    kept = wheels.runtime_requirements(
        [
            "tomli>=2.0; python_version < '3.11'",
            "uvloop>=0.19; sys_platform != 'win32'",
            "pywin32; sys_platform == 'win32'",
            "pytest; extra == 'dev'",
            "pydantic>=2",
        ]
    )
    assert kept == ["uvloop>=0.19; sys_platform != 'win32'", "pydantic>=2"]
    assert wheels.canonical("Pydantic_Settings") == "pydantic-settings"


def test_a_wheels_requirements_are_read_from_its_metadata(wheels, tmp_path) -> None:
    wheel = tmp_path / "demo_pkg-1.0-py3-none-any.whl"
    metadata = (
        "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n"
        "Requires-Dist: pydantic-core==2.50.5\nRequires-Dist: torch>=2; extra == 'gpu'\n\n"
        "Requires-Dist: in the description, not a header\n"
    )
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo_pkg-1.0.dist-info/METADATA", metadata)
    assert wheels.wheel_requires(wheel) == ["pydantic-core==2.50.5", "torch>=2; extra == 'gpu'"]
    assert wheels.wheel_name(wheel) == "demo-pkg"
    assert wheels.to_carry(wheels.wheel_requires(wheel)) == ["pydantic-core==2.50.5"]


def test_the_tracked_tree_leaves_room_for_the_wheels(wheels) -> None:
    tree = wheels.tracked_bytes()
    assert 0 < tree < wheels.CAP_BYTES / 2
