"""The examples run: the notebook on the demo model (nbclient), and the client scripts against a
real `lcfin serve` subprocess on a tiny model.

The notebook and the LangChain example need the `docs` extra (`nox -s docs` installs it and runs
this file); without it they are skipped with that reason.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lcfin
from lcfin.config import Settings
from tests.test_deploy import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DEMO = Path(lcfin.__file__).parent / "catalog" / "demo"
SEED_VARS = ("HF_TOKEN_LC", "HF_TOKEN", "MODEL_NAME", "DEPLOYMENT_ENV", "USE_VLLM", "HF_HOME")

DOCS_EXTRA = "needs the docs extra (pip install -e '.[docs]'; `nox -s docs` runs it)"


def _missing(*modules: str) -> bool:
    return any(importlib.util.find_spec(m) is None for m in modules)


def _clean_env(hf_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SEED_VARS and not k.startswith("LCFIN_")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    return env


# -- the notebook --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(_missing("nbclient", "nbformat", "ipykernel"), reason=DOCS_EXTRA)
@pytest.mark.skipif(
    not (DEMO / "config.json").exists(), reason="the demo model (src/lcfin/catalog/demo) is absent"
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jupyter_client / zmq internals
def test_notebook_executes(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), (
        "commit the notebook without outputs"
    )
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any failure

    def text(index: int) -> str:
        outputs = notebook.cells[index].outputs
        return "".join(
            o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs
        )

    code = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    assert "state='ready'" in text(code[0]) and "model='demo'" in text(code[0])
    assert text(code[1]).strip(), "ask() answered nothing"
    assert text(code[2]).strip(), "stream() yielded nothing"
    assert "Usage(" in text(code[3])
    assert "'requests': 3" in text(code[4])
    assert text(code[5]).startswith("True 37.36x")
    assert "False llama3.1-70b needs" in text(code[5])


# -- the client scripts against `lcfin serve` ------------------------------------------------------


@pytest.fixture(scope="module")
def served(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`lcfin serve` on the tiny Llama in a subprocess; yields its OpenAI base URL."""
    home = tmp_path_factory.mktemp("examples-serve")
    port = free_port()
    log = home / "serve.log"
    lcfin_bin = Path(sys.executable).with_name("lcfin")
    command = [str(lcfin_bin), "serve", "--model", str(tiny_models["llama"])]
    command += ["--profile", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as sink:
        proc = subprocess.Popen(
            command, env=_clean_env(home / "hf"), cwd=home, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        wait_ready(proc, port, log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _run_example(name: str, url: str, model: str, tmp_path: Path) -> str:
    env = {**_clean_env(tmp_path / "hf"), "LCFIN_URL": url, "LCFIN_MODEL": model}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.integration
def test_openai_client_example(served: str, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    model = str(tiny_models["llama"])
    out = _run_example("openai_client.py", served, model, tmp_path)
    assert f"using: {model}" in out
    assert "finish_reason:" in out and "CompletionUsage(" in out
    assert "stream usage: CompletionUsage(" in out
    assert "completion:" in out
    assert "error: 400" in out and "'param': 'temperature'" in out


@pytest.mark.integration
@pytest.mark.skipif(_missing("langchain_openai"), reason=DOCS_EXTRA)
def test_langchain_example(served: str, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    out = _run_example("langchain_client.py", served, str(tiny_models["llama"]), tmp_path)
    assert "invoke:" in out and "'input_tokens':" in out
    assert "stream:" in out and "chain:" in out


# -- the commands and messages quoted in the docs --------------------------------------------------

DOCS = ROOT / "docs"


def _fenced_bash(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_quickstart_repeats_the_readme_commands() -> None:
    readme = _fenced_bash((ROOT / "README.md").read_text())[:2]
    quickstart = _fenced_bash((DOCS / "quickstart.md").read_text())[:2]
    assert len(readme) == 2
    assert quickstart == readme, "docs/quickstart.md must show the README's two commands verbatim"


def test_troubleshooting_plan_output_is_current() -> None:
    from typer.testing import CliRunner

    from lcfin.cli import app

    result = CliRunner().invoke(app, ["plan", "llama3.1-70b", "--profile", "hf-l40"])
    assert result.exit_code == 3
    page = (DOCS / "troubleshooting.md").read_text()
    for line in result.output.splitlines():
        assert line.strip() in page, f"docs/troubleshooting.md is stale: {line!r}"


def test_troubleshooting_does_not_fit_message_is_current() -> None:
    from lcfin import plan_memory
    from lcfin.engine.planner import does_not_fit

    error = does_not_fit(plan_memory("llama3.1-70b", "hf-l40"))
    page = (DOCS / "troubleshooting.md").read_text()
    assert f"\nerror: {error.message}\nhint: {error.hint}\n" in page  # as the CLI prints it
    assert error.exit_code == 3 and error.http_status == 422


def test_troubleshooting_unreachable_hub_message_is_current(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    from lcfin.engine.hub import _hub_error
    from lcfin.engine.registry import get_model

    monkeypatch.delenv("HF_HUB_OFFLINE")  # the network is down; offline mode is not on
    settings = Settings(_env_file=None, hf_home="/root/.cache/huggingface")
    error = _hub_error(LocalEntryNotFoundError("x"), get_model("qwen3-8b"), settings)
    page = (DOCS / "troubleshooting.md").read_text()
    assert f"\nerror: {error.message}\nhint: {error.hint}\n" in page
    assert error.exit_code == 6


def _hub_response(status: int) -> Any:
    """A hub HTTP response: huggingface_hub's errors read only its status, headers and request."""
    import httpx

    request = httpx.Request("GET", "https://huggingface.co/api/models/x")
    return httpx.Response(status, request=request)


def test_troubleshooting_hub_messages_are_current() -> None:
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    from lcfin.engine.hub import _hub_error
    from lcfin.engine.registry import get_model

    spec = get_model("qwen3-8b")
    no_token = Settings(_env_file=None)
    token = Settings(_env_file=None, hf_token_lc="hf_example")
    cases = [
        (RepositoryNotFoundError("x", response=_hub_response(401)), no_token),
        (GatedRepoError("x", response=_hub_response(403)), token),
        (HfHubHTTPError("x", response=_hub_response(401)), token),
    ]
    page = (DOCS / "troubleshooting.md").read_text()
    for exc, settings in cases:
        error = _hub_error(exc, spec, settings)
        assert f"`{error.message}`<br>hint: `{error.hint}`" in page
        assert error.exit_code == 5


def test_troubleshooting_backend_messages_are_current(monkeypatch: pytest.MonkeyPatch) -> None:
    import lcfin.engine.backend as backend
    import lcfin.engine.profiles as profiles
    from lcfin import BackendUnavailable, load_profile

    page = (DOCS / "troubleshooting.md").read_text()
    cpu = load_profile("cpu")
    monkeypatch.setattr(profiles, "detect_gpus", list)
    monkeypatch.setattr(profiles, "vllm_cpu_build", lambda: False)  # the CUDA wheel, or none
    for has_vllm in (False, True):
        monkeypatch.setattr(profiles, "vllm_available", lambda v=has_vllm: v)
        with pytest.raises(BackendUnavailable) as caught:
            backend.select_backend("vllm", cpu, Settings(_env_file=None))
        assert f"error: {caught.value.message}\nhint: {caught.value.hint}\n" in page
