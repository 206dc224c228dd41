"""Fill a real usage ledger through `lcfin serve` and draw docs/usage-example.png from it.

    python scripts/usage_example.py [--minutes 10] [--out docs/usage-example.png]

Starts `lcfin serve` on the bundled demo model (CPU) with two API keys and a fresh SQLite
ledger, sends a varying load (chat, text completions and streams; 1 to 6 clients, a quiet
spell) for the given minutes, stops the server with SIGTERM (which writes the last records),
then runs `lcfin usage --window 1h --plot OUT` on the ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KEYS = ("sk-example-team-a", "sk-example-team-b")
#: Clients per minute: a morning ramp, a peak, a quiet spell, a second wave.
PATTERN = (1, 2, 4, 6, 3, 0, 2, 5, 6, 2)
QUESTIONS = (
    "What is the liquidity coverage ratio?",
    "Define EBITDA.",
    "What does a bond's duration measure?",
    "Explain Basel III capital buffers.",
    "What is a credit default swap?",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(db: Path, port: int, home: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LCFIN_USAGE_DB": str(db),
        "LCFIN_API_KEYS": ",".join(KEYS),
        "LCFIN_ADMIN_KEY": "sk-example-admin",
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
    }
    cmd = ["lcfin", "serve", "--model", "demo", "--profile", "cpu", "--port", str(port)]
    return subprocess.Popen(cmd, env=env)


def _wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not become ready")


async def _client(http: httpx.AsyncClient, until: float, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    while time.monotonic() < until:
        question = random.choice(QUESTIONS)
        kind = random.random()
        if kind < 0.6:
            body = {"model": "demo", "messages": [{"role": "user", "content": question}],
                    "max_tokens": random.choice((24, 48, 64)), "stream": kind < 0.3}  # fmt: skip
            await http.post("/v1/chat/completions", json=body, headers=headers)
        else:
            body = {"model": "demo", "prompt": question, "max_tokens": 32}
            await http.post("/v1/completions", json=body, headers=headers)
        await asyncio.sleep(random.uniform(0.05, 0.5))


async def _load(url: str, minutes: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for minute in range(minutes):
            clients = PATTERN[minute % len(PATTERN)]
            until = time.monotonic() + 50
            print(f"minute {minute + 1}/{minutes}: {clients} clients", flush=True)
            tasks = [_client(http, until, KEYS[i % 2]) for i in range(clients)]
            await asyncio.gather(*tasks)
            await asyncio.sleep(max(0.0, until + 10 - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("docs/usage-example.png"))
    parser.add_argument("--db", type=Path, default=None, help="keep the ledger here")
    args = parser.parse_args()
    random.seed(7)
    tmp = Path(tempfile.mkdtemp(prefix="lcfin-usage-"))
    db = args.db or tmp / "usage.db"
    port = _free_port()
    server = _serve(db, port, tmp / "hf-home")
    try:
        _wait_ready(f"http://127.0.0.1:{port}")
        asyncio.run(_load(f"http://127.0.0.1:{port}", args.minutes))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    cmd = ["lcfin", "usage", "--db", str(db), "--window", "1h", "--plot", str(args.out)]
    sys.exit(subprocess.run(cmd, check=False).returncode)


if __name__ == "__main__":
    main()
