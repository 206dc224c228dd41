"""Deployment files: the Dockerfiles' key instructions, their entrypoint run outside a container,
the Space front matter, and `.env.example` against `Settings`.

Docker cannot run on the development machines, so the images are checked by parsing them, by
`deploy/lint.sh` (hadolint, when installed), and by running their entrypoint command with their
environment as a plain subprocess.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from lcfin.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILES = ("Dockerfile", "Dockerfile.cpu")


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}".strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, args = pending.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, f"{path.name}: dangling continuation"
    return instructions


def args_of(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    """Every argument string of one instruction kind, in order."""
    return [args for kw, args in instructions if kw == keyword]


def env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """The image's final ENV values (`ENV A=1 B=2` form)."""
    env: dict[str, str] = {}
    for args in args_of(instructions, "ENV"):
        for name, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', args):
            env[name] = value.strip('"')
    return env


def exec_form(args: str) -> list[str]:
    """An instruction's JSON (exec) form, e.g. ENTRYPOINT ["tini", "--", "lcfin", "serve"]."""
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return [str(v) for v in value]


@pytest.fixture(params=DOCKERFILES)
def dockerfile(request: pytest.FixtureRequest) -> list[tuple[str, str]]:
    """Each Dockerfile, parsed."""
    return parse_dockerfile(DEPLOY / request.param)


# -- (a) the Dockerfiles' key instructions -------------------------------------------------------


def test_runs_as_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    users = args_of(dockerfile, "USER")
    assert users, "no USER instruction: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    # USER comes after every RUN, so nothing installs as that user by accident.
    last_user = max(i for i, (kw, _) in enumerate(dockerfile) if kw == "USER")
    assert all(i < last_user for i, (kw, _) in enumerate(dockerfile) if kw == "RUN")


def test_entrypoint_is_lcfin_serve(dockerfile: list[tuple[str, str]]) -> None:
    (entrypoint,) = args_of(dockerfile, "ENTRYPOINT")
    command = exec_form(entrypoint)
    assert command[-2:] == ["lcfin", "serve"], "flags would override PORT/MODEL_NAME/..."
    assert not args_of(dockerfile, "CMD"), "a CMD would be appended to `lcfin serve`"


def test_healthcheck_probes_ready(dockerfile: list[tuple[str, str]]) -> None:
    (check,) = args_of(dockerfile, "HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    assert "--start-period=" in options
    probe = exec_form(command)
    assert probe[-1] == "/health/ready"
    copied = [a.split() for a in args_of(dockerfile, "COPY")]
    assert ["deploy/healthcheck.py", probe[-2]] in copied


def test_environment_and_storage(dockerfile: list[tuple[str, str]]) -> None:
    env = env_of(dockerfile)
    assert env["HF_HOME"] == "/data/.huggingface"
    assert env["PORT"] == "7860"
    assert {"DEPLOYMENT_ENV", "MODEL_NAME"} <= set(env)
    assert args_of(dockerfile, "VOLUME") == ['["/data"]']
    assert args_of(dockerfile, "EXPOSE") == ["7860"]
    # Every ENV name is one lcfin (or Python/pip) reads: no typo can slip in silently.
    known = {n for names in _field_env_names().values() for n in names}
    assert set(env) - known <= {"PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "HOME", "PATH"} | {
        "PIP_DISABLE_PIP_VERSION_CHECK",
        "DEBIAN_FRONTEND",
    }


def test_gpu_image_installs_vllm_on_cuda() -> None:
    instructions = parse_dockerfile(DEPLOY / "Dockerfile")
    assert args_of(instructions, "FROM")[0].startswith("nvidia/cuda:${CUDA_VERSION}-runtime-")
    assert "PYTHON_VERSION=3.11" in args_of(instructions, "ARG")
    assert "LCFIN_EXTRAS=vllm" in args_of(instructions, "ARG")
    assert any('pip install ".[${LCFIN_EXTRAS}]"' in r for r in args_of(instructions, "RUN"))


def test_cpu_image_uses_cpu_torch_and_the_demo_model() -> None:
    instructions = parse_dockerfile(DEPLOY / "Dockerfile.cpu")
    assert args_of(instructions, "FROM") == ["python:3.11-slim"]
    runs = args_of(instructions, "RUN")
    torch_at = next(i for i, r in enumerate(runs) if "download.pytorch.org/whl/cpu" in r)
    lcfin_at = next(i for i, r in enumerate(runs) if "pip install ." in r)
    assert torch_at < lcfin_at, "CPU torch must come first, or pip pulls the CUDA build"
    env = env_of(instructions)
    assert env["MODEL_NAME"] == "demo"
    assert env["DEPLOYMENT_ENV"] == "cpu"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_build_context_has_what_the_image_copies(name: str) -> None:
    ignore = (DEPLOY / f"{name}.dockerignore").read_text().splitlines()
    for args in args_of(parse_dockerfile(DEPLOY / name), "COPY"):
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert any(line.strip("!/") == source.rstrip("/") for line in ignore), source


def test_lint_script_passes() -> None:
    """hadolint when installed (`nox -s docs` installs it); otherwise a clear skip message."""
    result = subprocess.run(
        ["bash", str(DEPLOY / "lint.sh")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if shutil.which("hadolint") is None:
        assert "hadolint not found, skipping" in result.stdout
    else:
        assert "are clean" in result.stdout


# -- (b) the entrypoint, run outside a container ---------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _entrypoint_command(name: str) -> list[str]:
    """The image's ENTRYPOINT without tini, with `lcfin` resolved in this environment."""
    (entrypoint,) = args_of(parse_dockerfile(DEPLOY / name), "ENTRYPOINT")
    command = exec_form(entrypoint)
    command = command[command.index("lcfin") :]
    lcfin = Path(sys.executable).with_name("lcfin")
    assert lcfin.exists(), f"console script missing: {lcfin}"
    return [str(lcfin), *command[1:]]


def _healthcheck(port: int) -> int:
    env = {**os.environ, "PORT": str(port)}
    probe = [sys.executable, str(DEPLOY / "healthcheck.py"), "/health/ready"]
    return subprocess.run(probe, env=env, capture_output=True, timeout=30).returncode


@pytest.mark.integration
def test_entrypoint_serves_and_stops_on_sigterm(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    port = free_port()
    model = str(tiny_models["llama"])
    env = {
        **os.environ,
        **env_of(parse_dockerfile(DEPLOY / "Dockerfile.cpu")),
        "PORT": str(port),
        "MODEL_NAME": model,
        "DEPLOYMENT_ENV": "cpu",
        "HF_HOME": str(tmp_path / "hf-home"),  # the image's /data is not writable here
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": "",
    }
    env.pop("HOME", None)  # the image's /home/lcfin does not exist here
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            _entrypoint_command("Dockerfile.cpu"),
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        health = wait_ready(proc, port, log)
        assert health["status"] == "healthy"
        assert health["current_model"] == model
        assert health["profile"] == "cpu"
        assert health["backend"] == "transformers"
        assert _healthcheck(port) == 0
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert _healthcheck(port) == 1, "nothing listens any more"
    text = log.read_text()
    # The image binds 0.0.0.0 (the test connects through 127.0.0.1) and opts in, loudly.
    assert f"Serving on http://0.0.0.0:{port}/v1 (profile cpu" in text
    assert "WARNING" in text and "NO API KEY" in text
    assert "Finished server process" in text, "SIGTERM must shut down gracefully"
    assert code == 0, text  # a drained SIGTERM is a clean stop


def test_gpu_image_refuses_to_start_without_keys(tmp_path: Path) -> None:
    """The GPU image binds 0.0.0.0 and does not opt in: no LCFIN_API_KEYS, no server (#16)."""
    env = {
        **os.environ,
        **env_of(parse_dockerfile(DEPLOY / "Dockerfile")),
        "PORT": str(free_port()),
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": "",
    }
    env.pop("HOME", None)
    for name in [n for n in env if n.startswith("LCFIN_") and n != "LCFIN_HOST"]:
        del env[name]
    result = subprocess.run(
        _entrypoint_command("Dockerfile"), env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "LCFIN_API_KEYS" in result.stderr
    assert "--allow-unauthenticated" in result.stderr


def test_images_set_keys_from_secrets_or_opt_in_plainly() -> None:
    gpu = env_of(parse_dockerfile(DEPLOY / "Dockerfile"))
    cpu = env_of(parse_dockerfile(DEPLOY / "Dockerfile.cpu"))
    assert "LCFIN_API_KEYS" not in gpu and "LCFIN_ALLOW_UNAUTHENTICATED" not in gpu
    assert cpu["LCFIN_ALLOW_UNAUTHENTICATED"] == "true"
    assert "OPTS IN" in (DEPLOY / "Dockerfile.cpu").read_text()
    for guide in ("huggingface-space/GUIDE.md", "scaleway.md", "koyeb.md"):
        text = (DEPLOY / guide).read_text()
        assert "LCFIN_API_KEYS" in text and "secret" in text.lower(), guide
        assert "refuses to start" in text, f"{guide} must say what happens without keys"


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> dict[str, object]:
    """Poll /health/ready until 200 (120 s at most); then return /health."""
    deadline = time.monotonic() + 120
    saw_loading = False
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"lcfin serve exited early:\n{log.read_text()}"
            try:
                ready = client.get("/health/ready")
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if ready.status_code == 200:
                body: dict[str, object] = client.get("/health").json()
                return body
            assert ready.status_code == 503
            assert ready.headers["retry-after"]
            saw_loading = True
            time.sleep(0.2)
    pytest.fail(f"not ready after 120 s (saw loading: {saw_loading}):\n{log.read_text()}")


# -- the Hugging Face Space ------------------------------------------------------------------------


def test_space_front_matter() -> None:
    text = (DEPLOY / "huggingface-space" / "README.md").read_text()
    match = re.match(r"^---\n(.*?)\n---\n", text, flags=re.S)
    assert match, "the Space README must start with YAML front matter"
    meta = yaml.safe_load(match.group(1))
    assert meta["sdk"] == "docker"
    assert meta["app_port"] == 7860
    assert meta["pinned"] is False
    assert {"title", "emoji", "colorFrom", "colorTo", "suggested_hardware"} <= set(meta)
    assert meta["suggested_hardware"].startswith("l40s")


# -- .env.example --------------------------------------------------------------------------------


def _field_env_names() -> dict[str, list[str]]:
    """Each Settings field's environment names (seed names and LCFIN_ ones)."""
    names: dict[str, list[str]] = {}
    for field, info in Settings.model_fields.items():
        choices = getattr(info.validation_alias, "choices", None)
        if choices:
            names[field] = [c for c in choices if isinstance(c, str) and c.isupper()]
        else:
            names[field] = [f"LCFIN_{field.upper()}"]
    return names


def _example_lines() -> dict[str, str]:
    """NAME -> value for every `NAME=value` or `# NAME=value` line of .env.example."""
    found = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_env_example_lists_every_setting() -> None:
    listed = _example_lines()
    missing = [names[-1] for names in _field_env_names().values() if not set(names) & set(listed)]
    assert not missing, f"add to .env.example (with a comment): {missing}"
    known = {n for names in _field_env_names().values() for n in names}
    assert set(listed) <= known, f"not a setting: {sorted(set(listed) - known)}"


def test_env_example_values_are_valid(tmp_path: Path) -> None:
    """Uncommenting every line gives a .env that Settings accepts."""
    dotenv = tmp_path / "uncommented.env"
    dotenv.write_text("".join(f"{k}={v}\n" for k, v in _example_lines().items()))
    settings = Settings(_env_file=dotenv)
    assert settings.deployment_env == "auto"
    assert settings.hf_token_lc is None
    assert settings.port == 8000


def test_env_example_has_a_comment_per_setting() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^(?:# )?[A-Z][A-Z0-9_]*=", line):
            assert lines[i - 1].startswith("# ") and "=" not in lines[i - 1].split()[1], line
