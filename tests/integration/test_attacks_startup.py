"""Issue #16, start-up: a real `lcfin serve` never ends up open to the network by accident.

Each test runs `lcfin serve` as a subprocess on a tiny model. A server that must not start is
checked for its exit code, its message, and that nothing listens on its port; one that starts is
checked through 127.0.0.1 only, with /proc/net/tcp saying which address it really listens on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_usage_restart import SEED_VARS, _free_port, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "sk-lcfin-startup-key-3f9a17c2"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SEED_VARS and not k.startswith("LCFIN_")}
    env.update({"HF_HOME": str(tmp / "hf"), "HF_HUB_OFFLINE": "1", "LCFIN_USAGE_DB": "off"})
    env.update(extra)
    return env


def _cmd(model: Path, port: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", "lcfin", "serve", "--model", str(model), "--profile", "cpu",
            "--port", str(port), *flags]  # fmt: skip


def _listening(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp writes them) that listen on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as fh:
            for line in list(fh)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


def _nothing_listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:  # a loaded machine: do not leave it running
                proc.kill()
                proc.wait(timeout=60)


def _start(
    procs: list[subprocess.Popen[bytes]], cmd: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    procs.append(proc)
    return proc


# -- "every route is open to the network by default" -------------------------------------------


def test_open_bind_without_keys_refuses_to_start(tiny_models, tmp_path: Path):
    port = _free_port()

    result = subprocess.run(
        _cmd(tiny_models["llama"], port, "--host", "0.0.0.0"), env=_env(tmp_path),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 2, result.stdout + result.stderr
    assert "--allow-unauthenticated" in result.stderr
    assert "LCFIN_API_KEYS" in result.stderr
    assert _nothing_listens(port)


def test_default_serve_listens_on_loopback_and_logs_that_address(
    tiny_models, tmp_path: Path, started
):
    port, log = _free_port(), tmp_path / "serve.log"
    proc = _start(started, _cmd(tiny_models["llama"], port), _env(tmp_path), log)

    wait_ready(proc, f"http://127.0.0.1:{port}", log)

    assert _listening(port) == {"0100007F"}, "127.0.0.1 only"
    assert f"Serving on http://127.0.0.1:{port}/v1" in log.read_text()
    assert "NO API KEY" not in log.read_text()  # loopback needs no opt-in and no warning


def test_opt_in_bind_warns_and_keeps_admin_routes_closed(tiny_models, tmp_path: Path, started):
    port, log = _free_port(), tmp_path / "serve.log"
    flags = ("--host", "0.0.0.0", "--allow-unauthenticated")
    proc = _start(started, _cmd(tiny_models["llama"], port, *flags), _env(tmp_path), log)
    url = f"http://127.0.0.1:{port}"  # the rules depend on the bind, not the client address
    wait_ready(proc, url, log)

    with httpx.Client(base_url=url, timeout=30) as client:
        load = client.post("/load-model", params={"model_name": "llama3.1-70b"})
        metrics, usage = client.get("/metrics"), client.get("/analytics/usage")
        foreign = client.get("/v1/models", headers={"Host": "evil.example"})
        status = client.get("/loading-status").json()

    assert _listening(port) & {"00000000", "00000000000000000000000000000000"}
    text = log.read_text()
    assert f"Serving on http://0.0.0.0:{port}/v1" in text
    assert "WARNING" in text and "NO API KEY" in text and "--allow-unauthenticated" in text
    for response in (load, metrics, usage):
        assert response.status_code == 403, response.text
        assert "LCFIN_ADMIN_KEY" in response.json()["error"]["message"]
    assert status["status"] != "loading", "no download may have started"
    assert foreign.status_code == 403  # without keys, the Host allow-list applies


# -- "a key misconfiguration silently switches auth off or on the wrong key" ------------------


@pytest.mark.parametrize("kind", ["missing", "empty", "comments-only", "unreadable"])
def test_a_bad_key_file_refuses_to_start(tiny_models, tmp_path: Path, kind: str):
    key_file = tmp_path / "secrets" / "lcfin_keys"
    key_file.parent.mkdir()
    if kind == "empty":
        key_file.write_text("")
    elif kind == "comments-only":
        key_file.write_text("# keys go here\n\n   \n")
    elif kind == "unreadable":
        key_file.mkdir()  # a directory: unreadable as a file, even for root
    port = _free_port()

    result = subprocess.run(
        _cmd(tiny_models["llama"], port), env=_env(tmp_path, LCFIN_API_KEYS=str(key_file)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 2, result.stdout + result.stderr
    assert "LCFIN_API_KEYS" in result.stderr
    assert _nothing_listens(port)


def test_a_key_file_is_read_and_a_short_key_is_warned_about(tiny_models, tmp_path: Path, started):
    key_file = tmp_path / "lcfin_keys"
    key_file.write_text(f"# production\n{KEY}\nshort-key-1\n")
    port, log = _free_port(), tmp_path / "serve.log"
    env = _env(tmp_path, LCFIN_API_KEYS=str(key_file))
    proc = _start(started, _cmd(tiny_models["llama"], port), env, log)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, log)

    def models(token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{url}/v1/models", headers=headers, timeout=30).status_code

    assert (models(None), models(str(key_file)), models(KEY), models("short-key-1")) == (
        401, 401, 200, 200,
    )  # fmt: skip
    text = log.read_text()
    assert "shorter than 16 characters" in text
    assert KEY not in text and "short-key-1" not in text


# -- "database URL masking hides user:pw@ but not ?password=" ---------------------------------


def test_database_passwords_never_reach_the_output(tiny_models, tmp_path: Path):
    closed = _free_port()  # nothing listens there: the ledger cannot connect
    url = (
        f"postgresql://lcfin:planted-userinfo@127.0.0.1:{closed}/usage"
        "?sslmode=disable&password=planted-query&connect_timeout=2"
    )
    port = _free_port()

    result = subprocess.run(
        _cmd(tiny_models["llama"], port), env=_env(tmp_path, LCFIN_USAGE_DB=url),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"127.0.0.1:{closed}" in output, "the error must name the database"
    assert "planted" not in output
    assert "password=***" in output
