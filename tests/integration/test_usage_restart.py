"""A real `lcfin serve`, killed with SIGKILL mid-load and restarted on the same usage ledger.

Records committed before the kill must all be there after the restart, none twice, and the
analytics must go on counting. The ledger flushes every 0.2 s here; requests finished more than
a second before the kill are therefore committed, whatever was in flight is allowed to be lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.backends import BackendUnderTest

pytestmark = [pytest.mark.any_backend, pytest.mark.integration, pytest.mark.slow]

SEED_VARS = ("HF_TOKEN_LC", "HF_TOKEN", "MODEL_NAME", "DEPLOYMENT_ENV", "USE_VLLM", "HF_HOME")


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Poll an `lcfin serve` subprocess's /health/ready until 200 (180 s at most: a vLLM
    engine starts three processes on two busy cores)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"lcfin serve exited:\n{log.read_text()}"
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"lcfin serve not ready after 180 s:\n{log.read_text()}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`lcfin serve` in a subprocess, on a tiny model, writing its ledger to `db`."""

    def __init__(
        self, model: Path, db: Path, home: Path, log: Path, backend: BackendUnderTest
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            k: v for k, v in os.environ.items() if k not in SEED_VARS and not k.startswith("LCFIN_")
        }
        env.update(
            HF_HOME=str(home), HF_HUB_OFFLINE="1", LCFIN_USAGE_DB=str(db),
            LCFIN_USAGE_FLUSH_INTERVAL_S="0.2", LCFIN_LOG_LEVEL="WARNING",
            **backend.serve_env(),
        )  # fmt: skip
        cmd = [sys.executable, "-m", "lcfin", "serve", "--model", str(model),
               *backend.serve_args(), "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        self.log = log.open("ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_ready(self.proc, self.url, log)

    def chat(self, max_tokens: int, timeout: float = 60) -> str:
        body = {"model": "served", "messages": [{"role": "user", "content": "Define EBITDA."}],
                "max_tokens": max_tokens, "ignore_eos": True}  # fmt: skip
        models = httpx.get(f"{self.url}/v1/models", timeout=10).json()["data"]
        body["model"] = models[0]["id"]
        r = httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=timeout)
        r.raise_for_status()
        return str(r.json()["id"])

    def wait_running(self) -> None:
        """Return once the engine has a request in its running batch."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = httpx.get(f"{self.url}/metrics", timeout=10).text
            running = [
                ln for ln in text.splitlines() if ln.startswith("lcfin:num_requests_running")
            ]
            if running and float(running[0].rsplit(" ", 1)[1]) > 0:
                return
            time.sleep(0.01)
        pytest.fail("no request started running")

    def stop(self, sig: int) -> None:
        children = _children(self.proc.pid)
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
        self.log.close()
        if sig == signal.SIGKILL:  # vLLM's EngineCore and worker outlive a SIGKILLed parent
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    """The pids of `pid`'s descendants (vLLM's engine processes), where psutil is installed."""
    try:
        import psutil  # comes with vLLM; the Transformers backend starts no processes
    except ImportError:
        return []
    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


def _rows(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute("SELECT id, request_id FROM requests"))
    finally:
        conn.close()


@pytest.fixture
def start(
    tiny_models: dict[str, Path], tmp_path: Path, backend: BackendUnderTest
) -> Iterator[object]:
    started: list[Server] = []

    def make() -> Server:
        server = Server(
            tiny_models["llama"], tmp_path / "usage.db", tmp_path / "hf", tmp_path / "log", backend
        )
        started.append(server)
        return server

    yield make
    for server in started:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL)


def test_sigkill_mid_load_then_restart_keeps_every_committed_record(start, tmp_path: Path):
    db = tmp_path / "usage.db"
    first = start()
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda _: first.chat(max_tokens=4), range(8)))
    time.sleep(1.0)  # > the 0.2 s flush interval: these are committed

    lost = 0
    with ThreadPoolExecutor(6) as pool:  # a load in flight when the process is killed
        pending = [pool.submit(first.chat, 200, 30) for _ in range(6)]
        first.wait_running()
        first.stop(signal.SIGKILL)
        for future in pending:
            try:
                done.append(future.result())  # finished before the kill: fine either way
            except httpx.TransportError:  # the connection died with the server
                lost += 1
    assert lost, "the kill was meant to interrupt requests in flight"

    rows = _rows(db)
    ids = {request_id for _, request_id in rows}
    assert set(done[:8]) <= ids, "records committed before the kill are missing"
    assert len(rows) == len({i for i, _ in rows}) == len(ids), "a record was written twice"
    assert len(rows) <= 8 + 6

    second = start()  # same ledger: migrations find it current, analytics go on
    more = [second.chat(max_tokens=3) for _ in range(3)]
    usage = httpx.get(f"{second.url}/analytics/usage?window=1h", timeout=30).json()
    costs = httpx.get(f"{second.url}/analytics/costs?window=1h", timeout=30).json()
    second.stop(signal.SIGTERM)

    assert usage["totals"]["requests"] == len(rows) + 3
    assert costs["uptime_s"] > 0 and costs["hardware_cost_usd"] > 0
    after = _rows(db)
    assert {r for _, r in after} == ids | set(more)
    assert len(after) == len({i for i, _ in after})
    conn = sqlite3.connect(db)
    sessions = conn.execute("SELECT COUNT(DISTINCT session_id) FROM uptime").fetchone()[0]
    conn.close()
    assert sessions == 2
