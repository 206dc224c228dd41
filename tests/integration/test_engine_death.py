"""`kill -9` of vLLM's EngineCore under load: reported at once, restarted, nothing lost or doubled.

Runs in `nox -s vllm` only (marker `vllm`), on vLLM's CPU build: a real uvicorn server over a
FinancialLLM with its own engine (`fresh_engines`) and a SQLite usage ledger; streams run when
the EngineCore process is killed. Then `lcfin serve` with LCFIN_ON_ENGINE_DEATH=exit, in a
subprocess: the same kill makes it exit with code 6 for its supervisor.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends import BackendUnderTest
from tests.engine.test_vllm_cpu import engine_pids
from tests.integration.conftest import LiveServer, live_server
from tests.integration.test_usage_restart import SEED_VARS, _free_port, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.asyncio]

MESSAGES = [{"role": "user", "content": "Define the liquidity coverage ratio."}]
LONG = {"max_tokens": 200, "temperature": 1.0, "seed": 3, "ignore_eos": True}


async def _stream(http: httpx.AsyncClient, model: str, rid: str, started: asyncio.Event) -> list:
    body = {"model": model, "messages": MESSAGES, "stream": True, **LONG}
    headers = {"X-Request-ID": rid}
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        events = []
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                started.set()
        return events


async def _until(http: httpx.AsyncClient, path: str, predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        r = await http.get(path)
        if predicate(r):
            return r
        assert time.monotonic() < deadline, f"{path}: {r.status_code} {r.text[:300]}"
        await asyncio.sleep(0.05)


def _metric(text: str, name: str) -> float:
    line = next(ln for ln in text.splitlines() if ln.startswith(name + " "))
    return float(line.rsplit(" ", 1)[1])


def _ledger(db: Path, *, refused: bool = False) -> list[str]:
    """The request ids of the ledger's records: of those that ran, or of those refused."""
    conn = sqlite3.connect(db)
    op = "=" if refused else "!="
    try:
        query = f"SELECT request_id FROM requests WHERE finish_reason {op} 'rejected'"
        return [rid for (rid,) in conn.execute(query)]
    finally:
        conn.close()


async def test_killing_the_engine_under_load(
    tiny_models: dict[str, Path],
    tmp_path: Path,
    backend: BackendUnderTest,
    fresh_engines: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lcfin.engine.recovery as recovery

    # 10 s before the restart (1 s by default): the test sees `failed` however busy the machine
    monkeypatch.setattr(recovery, "RESTART_BACKOFF_S", 10.0)
    db = tmp_path / "usage.db"
    with live_server(
        tiny_models["llama"], tmp_path / "hf", backend, usage_db=str(db),
        usage_flush_interval_s=0.2,
    ) as live:  # fmt: skip
        await _kill_and_recover(live, db)


async def _kill_and_recover(live: LiveServer, db: Path) -> None:
    model = live.model
    pids = engine_pids(live.llm.loaded.backend)  # type: ignore[union-attr]
    async with httpx.AsyncClient(base_url=live.url, timeout=120) as http:
        started = [asyncio.Event() for _ in range(4)]
        streams = [
            asyncio.create_task(_stream(http, model, f"doomed-{i}", e))
            for i, e in enumerate(started)
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 60)
        os.kill(pids[0], signal.SIGKILL)  # the EngineCore process, mid-generation

        ran = set()  # the completion ids: the ledger's request ids
        for events in await asyncio.gather(*streams):  # each stream ends with an error event
            assert events[-1] == "[DONE]"
            error = json.loads(events[-2])["error"]
            assert error["code"] == "backend_unavailable", error
            ran.add(json.loads(events[0])["id"])
        health = await _until(http, "/health", lambda r: r.json()["status"] == "failed", 10)
        assert "died" in health.json()["error"]
        assert "signal 9" in health.json()["error"]
        ready = await http.get("/health/ready")
        refused = await http.post(
            "/v1/chat/completions", json={"model": model, "messages": MESSAGES, "max_tokens": 2}
        )
        metrics = (await http.get("/metrics")).text
        assert (ready.status_code, refused.status_code) == (503, 503)
        assert "died" in refused.json()["error"]["message"]
        assert _metric(metrics, "lcfin:engine_deaths_total") == 1.0

        # The manager restarts the engine (after the backoff): healthy, and serving again.
        await _until(http, "/health/ready", lambda r: r.status_code == 200, 240)
        after = await http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": MESSAGES, "max_tokens": 4},
            headers={"X-Request-ID": "after-restart"},
        )
        assert after.status_code == 200, after.text
        ran.add(after.json()["id"])
        status = live.llm.status()
        assert (status.state, status.engine_deaths, status.error) == ("ready", 1, None)
        metrics = (await http.get("/metrics")).text
        assert _metric(metrics, "lcfin:engine_up") == 1.0
    deadline = time.monotonic() + 10
    # the ledger writes every 0.2 s (polled: it is another thread's SQLite file)
    while not ran <= set(_ledger(db)) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    rows = _ledger(db)
    assert len(ran) == 5
    assert sorted(rows) == sorted(ran)  # every request that ran: once, none lost
    assert len(_ledger(db, refused=True)) == 1  # the 503 while the engine was down (see #17)


def test_with_on_engine_death_exit_the_server_exits_6(
    tiny_models: dict[str, Path], tmp_path: Path, backend: BackendUnderTest
) -> None:
    import psutil

    port, log = _free_port(), tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k not in SEED_VARS and not k.startswith("LCFIN_")}
    env.update(
        HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", LCFIN_USAGE_DB="off",
        LCFIN_ON_ENGINE_DEATH="exit", **backend.serve_env(),
    )  # fmt: skip
    cmd = [sys.executable, "-m", "lcfin", "serve", "--model", str(tiny_models["llama"]),
           *backend.serve_args(), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(proc, f"http://127.0.0.1:{port}", log)
            cores = [
                p for p in psutil.Process(proc.pid).children(recursive=True)
                if "EngineCore" in " ".join([p.name(), *p.cmdline()])
            ]  # fmt: skip
            assert len(cores) == 1, [p.name() for p in cores]
            cores[0].send_signal(signal.SIGKILL)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log.read_text(errors="replace")
    assert code == 6, output[-3000:]
    assert "supervisor" in output
