"""`import lcfin` (and the CLI's help) must not import torch, transformers or vllm."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = (
    "import sys; {stmt}; "
    "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))"
)


@pytest.mark.parametrize("stmt", ["import lcfin", "from lcfin import FinancialLLM, plan_memory"])
def test_import_is_light(stmt: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(stmt=stmt)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
