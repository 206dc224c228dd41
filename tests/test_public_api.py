"""The public API is `lcfin.__all__`: sorted, complete, nothing else public."""

from __future__ import annotations

import inspect

import lcfin


def test_all_is_sorted_and_exact() -> None:
    assert lcfin.__all__ == sorted(lcfin.__all__)
    public = {
        n for n in dir(lcfin) if not n.startswith("_") and not inspect.ismodule(getattr(lcfin, n))
    }
    assert public == set(lcfin.__all__)


def test_every_name_resolves() -> None:
    for name in lcfin.__all__:
        assert getattr(lcfin, name) is not None


def test_core_names_exported() -> None:
    for name in (
        "FinancialLLM",
        "Settings",
        "load_profile",
        "get_model",
        "plan_memory",
        "LcfinError",
    ):
        assert name in lcfin.__all__
