"""scripts/gpu_check_transformers.py, run here in its CPU smoke mode (the GPU run needs CUDA).

`--device cpu` runs every check the GPU machine runs (batching, streaming, abort, throughput
against the static batch) on small models; the bf16 and memory rows need CUDA and are skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lcfin import load_profile
from tests.scripts.conftest import SCRIPTS, load_script


def test_the_profile_written_for_each_device_is_valid(tmp_path) -> None:
    script = load_script("gpu_check_transformers")
    gpu = load_profile(
        "check-transformers", script.write_profile(tmp_path / "g.toml", "cuda", 139.8)
    )
    assert (gpu.backend, gpu.dtype, gpu.is_gpu, gpu.gpu_total_gib) == (
        "transformers", "bfloat16", True, 139.8,
    )  # fmt: skip
    cpu = load_profile("check-transformers", script.write_profile(tmp_path / "c.toml", "cpu", 0))
    assert (cpu.dtype, cpu.is_gpu, cpu.max_num_seqs) == ("float32", False, 8)
    lengths = {len(script.messages(i)[0]["content"]) for i in range(8)}
    assert len(lengths) == 8  # the batch holds prompts of different lengths


@pytest.mark.slow
def test_the_cpu_smoke_run_passes(tmp_path) -> None:
    out = tmp_path / "check.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "gpu_check_transformers.py"), "--device", "cpu",
         "--json", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {(r["section"], r["check"]): r["verdict"] for r in json.loads(out.read_text())["rows"]}
    assert rows[("batching", "batched == alone (float32)")] == "PASS"
    assert rows[("streaming", "abort on early break")] == "PASS"
    assert rows[("throughput", "lcfin burst / static batch")] == "INFO"
    assert rows[("memory", "planner vs peak")] == "SKIP"  # CUDA only


def test_without_cuda_it_says_so_and_exits_2() -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the real check would run")
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "gpu_check_transformers.py")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--device cpu" in done.stdout
