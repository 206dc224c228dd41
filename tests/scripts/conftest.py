"""The GPU check scripts, imported from their paths (scripts/ is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module (each script puts scripts/ on sys.path for its helpers)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def common() -> ModuleType:
    """scripts/gpucheck_common.py."""
    load_script("gpu_check")  # puts scripts/ on sys.path
    return load_script("gpucheck_common")


@pytest.fixture(scope="session")
def gpu_check() -> ModuleType:
    """scripts/gpu_check.py."""
    return load_script("gpu_check")


@pytest.fixture(scope="session")
def kv() -> ModuleType:
    """scripts/gpucheck_kv.py."""
    load_script("gpu_check")  # puts scripts/ on sys.path
    return load_script("gpucheck_kv")
