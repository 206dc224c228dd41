"""A real `lcfin serve` with planted secrets: none leaks anywhere, and SIGTERM drains cleanly.

One server runs the whole scenario once (module fixture): every endpoint, with good, bad and
missing keys, a /load-model of a gated repo that cannot download here, path-traversal model
names, then a long stream during which the process gets SIGTERM. The tests then look at what
was collected: response bodies and headers, the process's output, the usage ledger file, the
stream that was in flight, and the exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.backends import BackendUnderTest
from tests.integration.test_usage_restart import SEED_VARS, _free_port, wait_ready

pytestmark = [pytest.mark.any_backend, pytest.mark.integration, pytest.mark.slow]

SECRETS = {
    "HF_TOKEN_LC": "hf_plantedLC_7d1e5a9c3b",
    "HF_TOKEN": "hf_plantedHF_2f8b6d0e4a",
    "LCFIN_API_KEYS": "sk-planted-user-9c4e1b7a",
    "LCFIN_ADMIN_KEY": "sk-planted-admin-5e2a8d3f",
}
USER = {"Authorization": f"Bearer {SECRETS['LCFIN_API_KEYS']}"}
ADMIN = {"Authorization": f"Bearer {SECRETS['LCFIN_ADMIN_KEY']}"}
WRONG = {"Authorization": "Bearer sk-planted-wrong-0a0a0a"}


@dataclass
class Scenario:
    """What the run left behind."""

    responses: list[httpx.Response] = field(default_factory=list)
    output: bytes = b""
    ledger: bytes = b""
    stream: list[str] = field(default_factory=list)
    exit_code: int | None = None
    drain_s: float = 0.0


def _exercise(url: str, model: str, seen: list[httpx.Response]) -> None:
    chat = {"model": model, "messages": [{"role": "user", "content": "Define EBITDA."}]}
    with httpx.Client(base_url=url, timeout=60) as c:
        calls = [
            ("GET", "/health", None, None), ("GET", "/health/ready", None, None),
            ("GET", "/v1/models", USER, None), ("GET", "/v1/models", WRONG, None),
            ("GET", "/v1/models", None, None), ("GET", "/models", USER, None),
            ("POST", "/v1/chat/completions", USER, {**chat, "max_tokens": 4}),
            ("POST", "/v1/chat/completions", USER, {**chat, "max_tokens": 4, "stream": True}),
            ("POST", "/v1/chat/completions", WRONG, chat),
            ("POST", "/v1/chat/completions", USER, {**chat, "max_tokens": 99999}),
            ("POST", "/v1/completions", USER, {"model": model, "prompt": "Q", "max_tokens": 3}),
            ("POST", "/inference", USER, {"prompt": "Define EBITDA.", "max_new_tokens": 3}),
            ("POST", "/load-model?model_name=qwen3-8b", USER, None),
            ("POST", "/load-model?model_name=../../etc", ADMIN, None),
            ("POST", "/load-model?model_name=/etc/passwd", ADMIN, None),
            ("POST", "/load-model?model_name=qwen3-8b", ADMIN, None),  # 8B: does not fit cpu
            ("POST", "/load-model?model_name=fin-pythia-1.4b", ADMIN, None),  # fits; gated, offline
            ("GET", "/metrics", ADMIN, None), ("GET", "/metrics", USER, None),
            ("GET", "/analytics/usage", ADMIN, None), ("GET", "/analytics/costs", ADMIN, None),
            ("GET", "/openapi.json", USER, None), ("GET", "/docs", USER, None),
        ]  # fmt: skip
        for method, path, headers, body in calls:
            seen.append(c.request(method, path, headers=headers, json=body))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the gated load fails in the background
            status = c.get("/loading-status", headers=USER)
            seen.append(status)
            if status.json()["status"] != "loading":
                break
            time.sleep(0.2)
        seen.append(c.get("/health"))


@pytest.fixture(scope="module")
def scenario(
    tiny_models: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    backend: BackendUnderTest,
) -> Scenario:
    tmp = tmp_path_factory.mktemp("hardening")
    port, db, log = _free_port(), tmp / "usage.db", tmp / "serve.log"
    env = {k: v for k, v in os.environ.items() if k not in SEED_VARS and not k.startswith("LCFIN_")}
    env.update(
        SECRETS, HF_HOME=str(tmp / "hf"), HF_HUB_OFFLINE="1", LCFIN_USAGE_DB=str(db),
        LCFIN_USAGE_FLUSH_INTERVAL_S="0.2", LCFIN_LOG_LEVEL="DEBUG", LCFIN_SHUTDOWN_TIMEOUT="30",
        **backend.serve_env(),
    )  # fmt: skip
    if backend.kind == "vllm":  # a RAM budget in which fin-pythia-1.4b (fp32: 5.6 GiB) fits
        env["LCFIN_CATALOG"] = str(backend.catalog_with(tmp, ram_budget_gib=16.0))
    cmd = [sys.executable, "-m", "lcfin", "serve", "--model", str(tiny_models["llama"]),
           *backend.serve_args(), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    url, result = f"http://127.0.0.1:{port}", Scenario()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(proc, url, log)
            model = httpx.get(f"{url}/v1/models", headers=USER).json()["data"][0]["id"]
            _exercise(url, model, result.responses)
            _sigterm_mid_stream(proc, url, model, result)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    result.exit_code = proc.returncode
    result.output = log.read_bytes()
    result.ledger = b"".join(p.read_bytes() for p in tmp.glob("usage.db*"))
    return result


def _sigterm_mid_stream(proc: subprocess.Popen[bytes], url: str, model: str, r: Scenario) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "Define EBITDA."}],
            "max_tokens": 200, "ignore_eos": True, "stream": True}  # fmt: skip
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=USER) as s:
        lines = s.iter_lines()
        r.stream.append(next(lines))
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        r.stream.extend(lines)
    proc.wait(timeout=60)
    r.drain_s = time.monotonic() - started


def test_no_secret_in_any_response(scenario: Scenario) -> None:
    assert len(scenario.responses) > 20
    for response in scenario.responses:
        seen = response.text + str(response.headers)
        for name, secret in SECRETS.items():
            assert secret not in seen, f"{name} in {response.request.url}"


def test_no_secret_in_the_output_or_the_ledger(scenario: Scenario) -> None:
    assert b"GET /health" in scenario.output or b"Serving on" in scenario.output
    assert scenario.ledger, "the ledger was not written"
    for name, secret in SECRETS.items():
        assert secret.encode() not in scenario.output, f"{name} in the server output"
        assert secret.encode() not in scenario.ledger, f"{name} in the usage ledger"


def test_the_endpoints_answered_as_expected(scenario: Scenario) -> None:
    by_path = {}
    for response in scenario.responses:
        key = (response.request.method, response.request.url.raw_path.decode())
        by_path.setdefault(key, []).append(response.status_code)
    assert by_path[("GET", "/v1/models")] == [200, 401, 401]
    assert by_path[("POST", "/v1/chat/completions")] == [200, 200, 401, 400]
    assert by_path[("POST", "/load-model?model_name=qwen3-8b")][0] == 403  # user key
    assert by_path[("POST", "/load-model?model_name=../../etc")] == [404]
    assert by_path[("POST", "/load-model?model_name=/etc/passwd")] == [404]
    assert by_path[("GET", "/metrics")] == [200, 403]
    assert by_path[("POST", "/load-model?model_name=qwen3-8b")][1] == 422  # refused up front
    assert by_path[("POST", "/load-model?model_name=fin-pythia-1.4b")] == [202]  # admin: starts
    loading = [r for r in scenario.responses if r.request.url.path == "/loading-status"]
    assert loading[-1].json()["status"] == "failed"  # gated, offline: the tiny model serves on
    assert loading[-1].json()["model"] == "fin-pythia-1.4b"
    health = scenario.responses[-1].json()  # the failure shows until the next load
    assert (health["status"], health["model_loaded"]) == ("failed", True)
    for response in scenario.responses:
        if response.status_code >= 400:
            assert set(response.json()["error"]) >= {"message", "type", "param", "code"}


def test_sigterm_drains_the_stream_and_exits_0(scenario: Scenario) -> None:
    assert scenario.exit_code == 0, scenario.output[-2000:].decode(errors="replace")
    events = [line for line in scenario.stream if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert '"finish_reason":"length"' in "".join(events)  # all 200 tokens, not an abort
    assert scenario.drain_s < 30
