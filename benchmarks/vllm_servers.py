"""lcfin on vLLM against vLLM's own OpenAI server: the same engine, arguments and load.

Used by `benchmarks/run.py --vllm eager|compiled` (run it with a Python that has vLLM's CPU build
and lcfin: docs/benchmarks.md). Both servers run vLLM's `AsyncLLM` with identical engine
arguments: lcfin's own `engine_args()` for the benchmark profile (a copy of `cpu-vllm` with
`enforce_eager` set by the mode) is turned into upstream's command-line flags, so that nothing
but the serving layer differs. The two are started one after the other (their load times are
measured alone), then the load runs interleave, the order flipping every repeat; the ratios are
medians of the per-repeat ratios. Each run also records CPU time from /proc: of each server's
whole process tree (frontend, EngineCore, workers), and of its frontend process alone, where
the serving layer (lcfin's, or vLLM's own) runs; tokens per CPU-second are the figures that
other load on a shared machine disturbs least.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Engine flags that are plain `store_true` upstream (no `--no-...` form).
STORE_TRUE_ONLY = frozenset({"disable_log_stats"})
#: lcfin's load options that are not engine flags upstream.
NOT_FLAGS = frozenset({"model"})
PROFILE = "bench-vllm"


def bench_catalog(path: Path, mode: str, max_num_seqs: int) -> Path:
    """A user catalog with the benchmark profile: `cpu-vllm`, eager or compiled."""
    from lcfin import load_profile

    base = load_profile("cpu-vllm").model_dump(exclude={"name"}, exclude_none=True)
    base.update(enforce_eager=mode == "eager", max_num_seqs=max_num_seqs)
    base["description"] = f"benchmarks/run.py --vllm {mode}"
    lines = [f"[profiles.{PROFILE}]"]
    for key, value in base.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def engine_kwargs(model_dir: Path, catalog: Path) -> dict[str, Any]:
    """The engine arguments `lcfin serve --profile bench-vllm` gives vLLM for `model_dir`."""
    from lcfin import Settings, get_model, load_profile
    from lcfin.engine.vllm.args import engine_args

    settings = Settings(catalog=catalog)
    spec = get_model(str(model_dir), catalog)
    return engine_args(spec, load_profile(PROFILE, catalog), settings)


def cli_flags(kwargs: dict[str, Any]) -> list[str]:
    """vLLM command-line flags for engine keyword arguments (None: vLLM's default)."""
    flags: list[str] = []
    for key, value in kwargs.items():
        if value is None or key in NOT_FLAGS:
            continue
        name = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if value:
                flags.append(name)
            elif key not in STORE_TRUE_ONLY:
                flags.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, dict):
            flags += [name, json.dumps(value, separators=(",", ":"))]
        else:
            flags += [name, str(value)]
    return flags


def upstream_cmd(kwargs: dict[str, Any], port: int) -> list[str]:
    """vLLM's OpenAI server with these engine arguments (the `vllm` script fails on CPU).

    lcfin passes `disable_log_stats=True` but hands `AsyncLLM` a stat logger of its own, and
    vLLM then keeps its stats on ("enabling logging without default stat loggers"): the
    engine computes them every step. Upstream therefore runs with its stats on too (its
    default), not with `--disable-log-stats`, so that both engines do the same work.
    """
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    cmd += ["--model", str(kwargs["model"]), "--host", "127.0.0.1", "--port", str(port)]
    return cmd + cli_flags({**kwargs, "disable_log_stats": False})


def lcfin_cmd(model_dir: Path, port: int) -> list[str]:
    """`lcfin serve --backend vllm` on the benchmark profile (LCFIN_CATALOG names it)."""
    cmd = [sys.executable, "-m", "lcfin", "serve", "--model", str(model_dir), "--backend", "vllm"]
    return [*cmd, "--profile", PROFILE, "--host", "127.0.0.1", "--port", str(port)]


def server_env(catalog: Path) -> dict[str, str]:
    """One environment for both servers: offline, lcfin's catalog, no KV-space override.

    lcfin keeps its usage ledger on, as shipped (in a file beside the catalog, not the user's).
    vLLM's compile cache is off, so that each server's load time is a cold start's: the second
    server would otherwise load what the first one compiled.
    """
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    env.update(HF_HUB_OFFLINE="1", LCFIN_CATALOG=str(catalog), VLLM_DISABLE_COMPILE_CACHE="1")
    env["LCFIN_USAGE_DB"] = str(catalog.parent / "usage.db")
    return env


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of `pid` alone: the server's frontend, where lcfin runs."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and every live descendant, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent and p not in family]
        family.update(kids)
        frontier += kids
    return sum(times.get(p, 0.0) for p in family)


def start_one(cmd: list[str], health: str, env: dict[str, str], log: Path) -> tuple[Any, float]:
    """Start a server and wait until it is ready: (the process, seconds to ready)."""
    import httpx

    started = time.monotonic()
    out = log.open("w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = started + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[2]} exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return proc, time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{health} not ready after 900 s; see {log}")


def paired(runs: dict[str, list[dict[str, Any]]], a: str, b: str, key: str) -> float | None:
    """Median over repeats of a's `key` over b's in the same repeat."""
    import statistics

    pairs = [
        x[key] / y[key]
        for x, y in zip(runs[a], runs[b], strict=True)
        if x.get(key) is not None and y.get(key)
    ]
    return float(statistics.median(pairs)) if pairs else None
