"""`lcfin serve` refuses what cannot work before it binds or loads: real subprocesses.

Each case must end on its own, quickly, with its exit code (tests/integration starts servers
that do run; the timeout here only stops a server that wrongly went on serving).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.test_usage_restart import SEED_VARS, _free_port

pytestmark = pytest.mark.slow


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SEED_VARS and not k.startswith("LCFIN_")}
    cmd = [sys.executable, "-m", "lcfin", "serve", "--profile", "cpu", "--host", "127.0.0.1"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_an_unknown_model_exits_4_before_binding() -> None:
    port = _free_port()
    out = serve("--model", "nosuch", "--port", str(port))
    assert out.returncode == 4, out.stderr
    assert "error: Unknown model 'nosuch'" in out.stderr
    assert "Serving on" not in out.stderr


def test_a_model_too_big_for_the_profile_exits_3_before_binding() -> None:
    out = serve("--model", "llama3.1-70b", "--port", str(_free_port()))
    assert out.returncode == 3, out.stderr
    assert "llama3.1-70b does not fit profile cpu" in out.stderr


def test_an_unknown_backend_exits_2() -> None:
    out = serve("--model", "demo", "--backend", "bogus", "--port", str(_free_port()))
    assert out.returncode == 2, out.stderr
    assert "Unknown backend 'bogus'" in out.stderr


def test_a_port_in_use_exits_7_before_loading_and_says_what_to_do(busy_port: int) -> None:
    out = serve("--model", "demo", "--port", str(busy_port))
    assert out.returncode == 7, out.stderr
    assert f"error: Cannot listen on 127.0.0.1:{busy_port}: port {busy_port} is already in use" in (
        out.stderr
    )
    assert f"--port {busy_port + 1}" in out.stderr  # the hint
    assert "Serving on" not in out.stderr and "Errno" not in out.stderr  # nothing loaded
