"""`lcfin models`, `profiles`, `plan`, `download` through Typer's CliRunner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lcfin.cli import app
from lcfin.errors import EXIT_DOES_NOT_FIT, EXIT_MODEL_NOT_FOUND, EXIT_UNAUTHORIZED, EXIT_USAGE

runner = CliRunner()


def hub_error(cls: type[Exception], status: int) -> Exception:
    """An exception as huggingface_hub raises it for an HTTP `status` from the hub."""
    import importlib

    from huggingface_hub.errors import HfHubHTTPError

    http = importlib.import_module(HfHubHTTPError.__mro__[1].__module__.split(".")[0])
    request = http.Request("GET", "https://huggingface.co/api/models/x")
    return cls(f"{status} Client Error", response=http.Response(status, request=request))


def test_models_table_labels_demo() -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "qwen3-8b" in result.stdout
    assert "demo (demo)" not in result.stdout  # the alias says it already
    assert "not for real use" in result.stderr


@pytest.mark.parametrize("columns", [80, 140])
def test_models_table_keeps_names_and_repo_ids_whole(columns: int) -> None:
    from lcfin import list_models

    out = lcfin_at(columns, "models")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    cells = [cell.strip() for line in lines for cell in line.split("│")]
    for alias, spec in list_models().items():
        assert alias in cells
        org, name = spec.repo_id.split("/")
        # whole on one line, or broken once after the organisation: never inside a word
        assert spec.repo_id in cells or (f"{org}/" in cells and name in cells), spec.repo_id


def lcfin_at(columns: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "lcfin", *args], capture_output=True, text=True, env=env
    )


def test_profiles_show_a_multi_node_profile_as_nodes_x_gpus() -> None:
    wide = lcfin_at(120, "profiles")
    row = next(line for line in wide.stdout.splitlines() if "ray-h100-2x4" in line)
    assert "2 nodes x 4 GPUs" in row and "4x2" in row  # 2 machines of 4; TP 4 x PP 2
    narrow = lcfin_at(80, "profiles").stdout
    assert max(len(line) for line in narrow.splitlines()) <= 80
    words = narrow.split()
    for whole in ("ray-h100-2x4", "scw-l40s-x4", "transformers", "bf16", "fp32", "32768"):
        assert whole in words  # never cut inside a value


def test_models_json() -> None:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    rows = {row["alias"]: row for row in json.loads(result.stdout)}
    assert rows["demo"]["demo"] is True
    assert rows["demo"]["cached"] is True  # shipped inside the package
    assert rows["qwen3-8b"]["cached"] is False  # HF_HOME is an empty tmp dir
    assert rows["qwen3-8b"]["fits"]["scw-l40s"] is True
    assert rows["llama3.1-70b"]["fits"]["hf-l40"] is False
    assert rows["llama3.1-70b"]["fits"]["scw-l40s-x4"] is True


def test_profiles_table_and_json() -> None:
    table = runner.invoke(app, ["profiles"])
    assert table.exit_code == 0
    assert "hf-l40" in table.stdout
    data = {p["name"]: p for p in json.loads(runner.invoke(app, ["profiles", "--json"]).stdout)}
    assert data["hf-l40"]["gpu_memory_utilization"] == 0.75
    assert data["scw-l40s"]["max_model_len"] == 4096


def test_plan_fits_exit_0() -> None:
    result = runner.invoke(app, ["plan", "qwen3-8b", "--profile", "scw-l40s"])
    assert result.exit_code == 0, result.output
    assert "37.36x" in result.stdout
    assert "fits" in result.stdout


def test_plan_does_not_fit_exit_3() -> None:
    result = runner.invoke(app, ["plan", "llama3.1-70b", "--profile", "hf-l40"])
    assert result.exit_code == EXIT_DOES_NOT_FIT
    assert "does not fit" in result.stdout
    assert "scw-l40s-x4" in result.stdout or "h100-x2" in result.stdout


def test_plan_json_and_max_model_len() -> None:
    result = runner.invoke(
        app, ["plan", "qwen3-8b", "--profile", "scw-l40s", "--max-model-len", "2048", "--json"]
    )
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["max_model_len"] == 2048
    assert data["max_concurrency"] == pytest.approx(2 * 37.36, rel=0.01)


def test_plan_unknown_model_is_one_red_line() -> None:
    result = runner.invoke(app, ["plan", "qwen3-9b"])
    assert result.exit_code == EXIT_MODEL_NOT_FOUND
    assert "error: Unknown model 'qwen3-9b'" in result.stderr
    assert "did you mean qwen3-8b" in result.stderr
    assert "Traceback" not in result.output


def test_plan_unknown_profile_is_usage_error() -> None:
    result = runner.invoke(app, ["plan", "qwen3-8b", "--profile", "tpu-v5"])
    assert result.exit_code == EXIT_USAGE
    assert "Unknown profile 'tpu-v5'" in result.stderr


def test_plan_bad_flag_value() -> None:
    result = runner.invoke(app, ["plan", "qwen3-8b", "--max-model-len", "zero"])
    assert result.exit_code == 2
    assert "max-model-len" in result.output


def test_download_bundled_demo_needs_nothing() -> None:
    result = runner.invoke(app, ["download", "demo"])
    assert result.exit_code == 0
    assert "nothing to download" in result.stderr


def test_download_offline_uncached_gated_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    # The hub is unreachable here, so a LinguaCustodia model cannot be fetched: the error must
    # say what to do, and a missing HF_TOKEN_LC must be named (the repo may need it).
    monkeypatch.setenv("LCFIN_OFFLINE", "1")
    result = runner.invoke(app, ["download", "qwen3-8b"])
    assert result.exit_code != 0
    assert "offline" in result.stderr
    assert "Traceback" not in result.output


def test_download_without_the_hub_says_why_and_names_the_token() -> None:
    # HF_HUB_OFFLINE=1 (the test environment), LCFIN_OFFLINE unset, no HF_TOKEN_LC.
    result = runner.invoke(app, ["download", "qwen3-8b"])
    assert result.exit_code == 6
    assert "offline mode is on (HF_HUB_OFFLINE)" in result.stderr
    assert "unset HF_HUB_OFFLINE, then run `lcfin download qwen3-8b`" in result.stderr
    assert "set HF_TOKEN_LC to a token with access" in result.stderr
    assert "LCFIN_OFFLINE" not in result.stderr  # it was not set


def test_download_without_a_network_does_not_blame_offline_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The hub edge: what huggingface_hub raises when the network is down (no real network).
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args: object, **kwargs: object) -> str:
        raise LocalEntryNotFoundError("Cannot reach the hub (connection error)")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_TOKEN_LC", "hf_test_token_value")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    result = runner.invoke(app, ["download", "qwen3-8b"])
    assert result.exit_code == 6
    assert "the hub cannot be reached" in result.stderr
    assert "check the network" in result.stderr
    assert "OFFLINE" not in result.stderr and "to a token with access" not in result.stderr
    assert "hf_test_token_value" not in result.output


def test_download_unauthorized_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # The hub edge: huggingface_hub raises what the real hub answers for a private repo
    # requested without a token (RepositoryNotFoundError); no network is used.
    from huggingface_hub.errors import RepositoryNotFoundError

    def refuse(*args: object, **kwargs: object) -> str:
        raise hub_error(RepositoryNotFoundError, 401)

    monkeypatch.setattr("huggingface_hub.snapshot_download", refuse)
    result = runner.invoke(app, ["download", "qwen3-8b"])
    assert result.exit_code == EXIT_UNAUTHORIZED
    assert "HF_TOKEN_LC is not set" in result.stderr


def test_download_gated_with_token_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import GatedRepoError

    def gated(*args: object, **kwargs: object) -> str:
        raise hub_error(GatedRepoError, 403)

    monkeypatch.setenv("HF_TOKEN", "hf_plantedSECRET123")
    monkeypatch.setattr("huggingface_hub.snapshot_download", gated)
    result = runner.invoke(app, ["download", "meta-llama/Llama-3.1-8B"])
    assert result.exit_code == EXIT_UNAUTHORIZED
    assert "HF_TOKEN" in result.stderr
    assert "hf_plantedSECRET123" not in result.output


def test_download_local_dir_is_already_there(llama_dir: Path) -> None:
    result = runner.invoke(app, ["download", str(llama_dir)])
    assert result.exit_code == 0
    assert "already on disk" in result.stderr
