"""scripts/gpu_check.py without a GPU: its verdicts, --help and --dry-run, and the exit status.

The GPU part runs on an operator's CUDA machine (docs/deployment.md); the planner-against-vLLM
part is tested in test_gpucheck_kv.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from lcfin.engine.profiles import detect_gpus, vllm_available
from tests.scripts.conftest import SCRIPTS


def test_memory_rows_allow_allocator_slack(gpu_check) -> None:
    assert gpu_check.memory_row("s", "after", 12.3, 12.0).verdict == "PASS"
    assert gpu_check.memory_row("s", "after", 24.1, 12.0).verdict == "FAIL"  # the old one stayed


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "gpu_check.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_help_and_dry_run_need_neither_a_gpu_nor_vllm() -> None:
    helped = run_script("--help")
    assert helped.returncode == 0
    assert "--dry-run" in helped.stdout
    dry = run_script("--dry-run", "--gpu-total-gib", "139.8")
    assert dry.returncode == 0, dry.stderr
    lines = [line for line in dry.stdout.splitlines() if line.startswith("planner")]
    assert len(lines) == 6  # 3 models x 2 budgets
    assert any("qwen3-8b @ scw-l40s" in line and "37.36x" in line for line in lines)


@pytest.mark.skipif(
    bool(detect_gpus()) and vllm_available(), reason="this machine can run the real check"
)
def test_without_a_gpu_it_says_so_and_exits_6() -> None:
    done = run_script("--skip-kv")
    assert done.returncode == 6
    assert "needs a CUDA GPU" in done.stdout
