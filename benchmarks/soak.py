"""Soak test: a real `lcfin serve` under mixed, misbehaving load for a bounded time.

    python benchmarks/soak.py                   # 5 minutes on a tiny random Llama
    python benchmarks/soak.py --duration 120    # 2 minutes (the run in docs/reliability.md)

Clients on loopback, drawn at random: streaming, non-streaming, disconnecting mid-stream,
oversized bodies (413), unauthorized (401) and bad input (400). At the end the server gets
SIGTERM and the script checks:

- every response was well-formed (a JSON body or an SSE stream ending in [DONE]; errors in the
  OpenAI envelope), and nothing got a 5xx;
- the usage ledger holds every completed request exactly once (rows lost = 0, duplicated = 0);
- resident memory (RSS) after warm-up stayed flat within 10%; the thread count did not grow;
- the server exited 0.

It prints a Markdown summary table and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent
KEY = "sk-soak-user-6b1f"
KINDS = {  # kind -> weight
    "stream": 30,
    "non-stream": 30,
    "disconnect": 15,
    "oversized": 8,
    "unauthorized": 9,
    "bad-input": 8,
}
MAX_BODY = 65_536


@dataclass
class Tally:
    """Outcomes, latencies and ids of completed generations."""

    outcomes: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    completed_ids: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)

    def add(self, kind: str, outcome: str, latency: float) -> None:
        self.outcomes[(kind, outcome)].append(latency)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_status(pid: int) -> tuple[int, int]:
    """(RSS in KiB, threads) of `pid`, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["Threads"])


def _envelope_ok(body: object) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error)


async def _stream(client: httpx.AsyncClient, body: dict[str, object], tally: Tally, *,
                  disconnect: bool) -> str:  # fmt: skip
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return str(r.status_code) if _envelope_ok(r.json()) else "malformed"
        events, rid = 0, None
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                if rid is not None:
                    tally.completed_ids.append(rid)
                return "ok"
            chunk = json.loads(data)
            if "error" in chunk:
                return "error-event" if _envelope_ok(chunk) else "malformed"
            rid, events = chunk["id"], events + 1
            if disconnect and events >= 3:
                return "disconnected"
        return "malformed"  # the stream ended without [DONE]


async def _one(client: httpx.AsyncClient, model: str, kind: str, tally: Tally) -> None:
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": "Explain the liquidity coverage ratio."}],
        "max_tokens": random.randint(8, 96),
        "temperature": 0.8,
    }
    started = time.monotonic()
    if kind in ("stream", "disconnect"):
        outcome = await _stream(
            client, {**body, "stream": True}, tally, disconnect=kind != "stream"
        )
    else:
        headers = None
        if kind == "oversized":
            body["messages"] = [{"role": "user", "content": "x" * (MAX_BODY + 1)}]
        elif kind == "unauthorized":
            headers = {"Authorization": "Bearer sk-soak-wrong"}
        elif kind == "bad-input":
            body["messages"] = [{"role": "user", "content": "nul\x00byte"}]
        r = await client.post("/v1/chat/completions", json=body, headers=headers)
        payload = r.json()
        if r.status_code == 200 and isinstance(payload.get("choices"), list):
            outcome = "ok"
            tally.completed_ids.append(payload["id"])
        else:
            outcome = str(r.status_code) if _envelope_ok(payload) else "malformed"
    if outcome == "malformed" or outcome.startswith("5"):
        tally.malformed.append(f"{kind}: {outcome}")
    tally.add(kind, outcome, time.monotonic() - started)


async def _client_loop(url: str, model: str, deadline: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        while time.monotonic() < deadline:
            kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
            try:
                await _one(client, model, kind, tally)
            except (httpx.HTTPError, ValueError) as exc:
                tally.malformed.append(f"{kind}: {type(exc).__name__}: {exc}")
                tally.add(kind, "transport-error", 0.0)


async def _sample(pid: int, deadline: float, samples: list[tuple[float, int, int]]) -> None:
    while time.monotonic() < deadline:
        rss, threads = _proc_status(pid)
        samples.append((time.monotonic(), rss, threads))
        await asyncio.sleep(1.0)


def _start(model_dir: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LCFIN_")}
    env.update(
        HF_HOME=str(work / "hf"), HF_HUB_OFFLINE="1", LCFIN_API_KEYS=KEY,
        LCFIN_USAGE_DB=str(work / "usage.db"), LCFIN_USAGE_FLUSH_INTERVAL_S="0.5",
        LCFIN_LOG_LEVEL="WARNING", LCFIN_MAX_BODY_BYTES=str(MAX_BODY),
    )  # fmt: skip
    cmd = [sys.executable, "-m", "lcfin", "serve", "--model", str(model_dir), "--profile", "cpu",
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"lcfin serve exited:\n{(work / 'serve.log').read_text()}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("lcfin serve was not ready after 120 s")


def _ledger_ids(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT request_id FROM requests")]
    finally:
        conn.close()


def _p(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _report(tally: Tally, facts: dict[str, object]) -> str:
    lines = ["| kind | outcome | requests | p50 s | p99 s |", "| --- | --- | ---: | ---: | ---: |"]
    for (kind, outcome), lat in sorted(tally.outcomes.items()):
        lines.append(f"| {kind} | {outcome} | {len(lat)} | {_p(lat, 50):.3f} | {_p(lat, 99):.3f} |")
    every = [x for lat in tally.outcomes.values() for x in lat]
    lines.append(f"| **all** | | **{len(every)}** | {_p(every, 50):.3f} | {_p(every, 99):.3f} |")
    lines += ["", "| check | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in facts.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=300, help="seconds of load (default 300)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds (default 20%% of load)")
    ap.add_argument("--model", type=Path, default=None, help="model dir (default: tiny llama)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lcfin-soak-"))
    model_dir = args.model
    if model_dir is None:
        sys.path.insert(0, str(ROOT.parent))
        from tests.tiny_models import build_model

        model_dir = build_model(work / "tiny-llama", "llama")
    proc, url = _start(model_dir, work)
    headers = {"Authorization": f"Bearer {KEY}"}
    model = httpx.get(f"{url}/v1/models", headers=headers).json()["data"][0]["id"]
    tally, samples = Tally(), []
    started = time.monotonic()
    deadline = started + args.duration

    async def run() -> None:
        clients = [
            _client_loop(url, model, deadline, tally, args.seed + i) for i in range(args.clients)
        ]
        await asyncio.gather(_sample(proc.pid, deadline, samples), *clients)

    asyncio.run(run())
    time.sleep(2.0)  # idle: in-flight aborts settle
    idle_rss, idle_threads = _proc_status(proc.pid)
    proc.send_signal(signal.SIGTERM)
    exit_code = proc.wait(timeout=60)
    warm = started + (args.warmup if args.warmup is not None else 0.2 * args.duration)
    after = [s for s in samples if s[0] >= warm] or samples
    rss0, rss1 = after[0][1], idle_rss
    threads0 = after[0][2]
    ids = _ledger_ids(work / "usage.db")
    lost = len(set(tally.completed_ids) - set(ids))
    duplicated = len(ids) - len(set(ids))
    checks = {
        "no 5xx or malformed responses": not tally.malformed,
        "RSS flat within 10% after warm-up": rss1 <= rss0 * 1.10,
        "no leaked threads": idle_threads <= threads0,
        "ledger rows lost = 0, duplicated = 0": lost == 0 and duplicated == 0,
        "SIGTERM exit code 0": exit_code == 0,
    }
    facts: dict[str, object] = {
        "duration s / clients": f"{args.duration:g} / {args.clients}",
        "RSS after warm-up -> end (MiB)": f"{rss0 / 1024:.1f} -> {rss1 / 1024:.1f}",
        "threads after warm-up -> end": f"{threads0} -> {idle_threads}",
        "completed requests / ledger rows": f"{len(tally.completed_ids)} / {len(ids)}",
        "ledger rows lost / duplicated": f"{lost} / {duplicated}",
        "malformed or 5xx": len(tally.malformed),
        "server exit code": exit_code,
        **{f"check: {name}": "pass" if ok else "FAIL" for name, ok in checks.items()},
    }
    shutil.rmtree(work, ignore_errors=True)
    sys.stdout.write(_report(tally, facts) + "\n")
    for problem in tally.malformed[:10]:
        sys.stderr.write(f"malformed: {problem}\n")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
