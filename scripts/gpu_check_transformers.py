#!/usr/bin/env python
"""Check lcfin's Transformers backend on a CUDA GPU (the project's lent GPU test machine).

Usage::

    python scripts/prepare_gpu_wheels.py              # here, once: .gpu-wheels/ (git-ignored)
    python3 scripts/gpu_check_transformers.py --wheels .gpu-wheels --json $OUT/tf-check.json
    python scripts/gpu_check_transformers.py --device cpu   # the same checks, small, on a CPU

On the GPU machine there is no network: `--wheels DIR` installs lcfin's dependencies from DIR
(`pip install --no-index --no-deps --target`), then runs again with them and this checkout's
src/ on PYTHONPATH. The models are built here, random weights with a locally trained tokenizer
(no hub). It prints one table and exits 0 when every check passed, 1 on any wrong result.

* bf16 on cuda: the profile's dtype reaches the weights, on the GPU;
* continuous batching: requests of different lengths served together (the batch is seen
  running) give the same greedy tokens as each one alone (float32, so that the comparison is
  exact; bf16 agreement is reported as information);
* streaming (the streamed tokens and text match the plain reply) and abort (breaking out of a
  stream frees its batch slot);
* throughput: lcfin's continuous batching against Transformers' own static batch
  (`model.generate` on one padded batch) on the same GPU, model and prompts (information);
* memory: the planner's Transformers-on-GPU footprint (weights + activations + overhead + the KV
  cache the batch can fill) against `torch.cuda.max_memory_allocated` after filling every row.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpucheck_common import (  # the line above makes scripts/ importable
    INFO,
    SKIP,
    Row,
    build_tiny_model,
    check,
    exit_code,
    render_table,
    say,
    summary,
    write_json,
)

HERE = Path(__file__).resolve().parent
GIB = 2**30
QUESTION = "What does the liquidity coverage ratio require?"
#: The model for throughput and memory: about 0.9B parameters on a GPU (MHA: a large KV cache).
MID_GPU = {"hidden_size": 2048, "intermediate_size": 5504, "num_hidden_layers": 16}
MID_CPU = {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4}
#: Requests, tokens each, and the profile's batch and context, per device.
SIZES = {
    "cuda": {"requests": 32, "tokens": 128, "max_num_seqs": 32, "max_model_len": 512},
    "cpu": {"requests": 8, "tokens": 16, "max_num_seqs": 8, "max_model_len": 128},
}
MEMORY_RANGE = (0.5, 1.1)  # measured / predicted: no underestimate, no gross overestimate
REPEATS = 3  # each throughput figure is the best of three runs (a busy machine only slows one)


def install_and_rerun(wheels: Path, argv: list[str]) -> int:
    """Install `wheels` offline into a target dir, then run this script again with them."""
    target = Path(tempfile.gettempdir()) / "lcfin-gpu-site"
    files = sorted(str(w) for w in wheels.glob("*.whl"))
    if not files:
        say(f"no wheels in {wheels}: run scripts/prepare_gpu_wheels.py first")
        return 2
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    pip += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(target)]
    subprocess.run([*pip, *files], check=True)
    path = [str(target), str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    say(f"installed {len(files)} wheels into {target}")
    return subprocess.run([sys.executable, __file__, *argv], env=env, check=False).returncode


def write_profile(path: Path, device: str, total_gib: float) -> Path:
    """A user catalog with one Transformers profile for this device."""
    size = SIZES[device]
    gpu = device == "cuda"
    path.write_text(
        "[profiles.check-transformers]\n"
        'backend = "transformers"\n'
        f"gpu_count = {1 if gpu else 0}\n"
        f"gpu_total_gib = {total_gib if gpu else 0.0:.2f}\n"
        f"gpu_memory_utilization = {0.9 if gpu else 0.0}\n"
        f'dtype = "{"bfloat16" if gpu else "float32"}"\n'
        f"max_model_len = {size['max_model_len']}\n"
        f"max_num_seqs = {size['max_num_seqs']}\n"
        "enforce_eager = true\n"
        "ram_budget_gib = 16.0\n"
    )
    return path


def messages(i: int) -> list[dict[str, str]]:
    """Chat turns of different lengths (rows of a batch hold different prompt lengths)."""
    words = " ".join(["capital", "liquidity", "leverage"][j % 3] for j in range(i * 3))
    return [{"role": "user", "content": f"{QUESTION} {words} ({i})"}]


class Check:
    """One run: the device, the scratch folder, the models and the rows."""

    def __init__(self, device: str, work: Path) -> None:
        import torch

        self.device, self.work, self.rows = device, work, []  # type: ignore[var-annotated]
        total = torch.cuda.mem_get_info()[1] / GIB if device == "cuda" else 0.0
        self.catalog = write_profile(work / "profiles.toml", device, total)
        self.tiny = str(build_tiny_model(work / "tiny", "llama"))
        mid = MID_GPU if device == "cuda" else MID_CPU
        self.mid = str(build_tiny_model(work / "mid", "llama", seed=1, dims=mid))

    def llm(self, model: str, **overrides: Any) -> Any:
        """A FinancialLLM on `model` with the Transformers backend on this device."""
        from lcfin import FinancialLLM, Settings

        settings = Settings(catalog=self.catalog, device=self.device, hf_home=self.work / "hf")
        return FinancialLLM(
            model, profile="check-transformers", backend="transformers", settings=settings,
            **overrides,
        )  # fmt: skip

    def add(self, *rows: Row) -> None:
        """Record rows as they come (a later crash keeps them)."""
        self.rows.extend(rows)

    # -- the checks ------------------------------------------------------------------------------

    def dtype_rows(self, llm: Any) -> None:
        """The weights' dtype and device, as the profile asks (bf16 on cuda)."""
        backend = llm._manager._current.backend  # the check reads the loaded model itself
        param = next(backend.model.parameters())
        want = "bfloat16 on cuda" if self.device == "cuda" else "float32 on cpu"
        got = f"{str(param.dtype).removeprefix('torch.')} on {param.device.type}"
        self.add(check("load", "dtype and device", got == want, want, got))

    async def batch_rows(self, llm: Any, label: str, exact: bool) -> None:
        """Greedy requests alone, then together: the same text (the batch seen running)."""
        size = SIZES[self.device]
        n, greedy = min(size["requests"], 8), {"temperature": 0.0, "ignore_eos": True}
        greedy["max_tokens"] = size["tokens"]
        alone = [(await llm.achat(messages(i), **greedy)).text for i in range(n)]
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                stats = llm.backend_stats()
                most = max(most, stats.running if stats else 0)
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        together = await asyncio.gather(*(llm.achat(messages(i), **greedy) for i in range(n)))
        watcher.cancel()
        same = sum(a == b.text for a, b in zip(alone, together, strict=True))
        if exact:
            self.add(
                check(
                    "batching", f"batched == alone ({label})", same == n, f"{n}/{n}", f"{same}/{n}"
                )
            )
            self.add(check("batching", "requests ran together", most >= 2, ">= 2 rows", str(most)))
        else:  # bf16: the batch's kernels round differently, and random weights have near-ties
            self.add(
                Row("batching", f"batched == alone ({label})", "information", f"{same}/{n}", INFO)
            )

    async def stream_rows(self, llm: Any) -> None:
        """Streamed tokens and text match the plain reply; an early break frees the slot."""
        from lcfin.engine.types import Delta

        tokens = SIZES[self.device]["tokens"]
        greedy = {"temperature": 0.0, "ignore_eos": True, "max_tokens": tokens}
        plain = await llm.achat(QUESTION, **greedy)
        deltas = [e async for e in llm.astream_events(QUESTION, **greedy) if isinstance(e, Delta)]
        count, text = sum(d.num_tokens for d in deltas), "".join(d.text for d in deltas)
        self.add(check("streaming", "streamed tokens", count == tokens, str(tokens), str(count)))
        self.add(
            check(
                "streaming", "stream = reply (greedy)", text == plain.text, "same", repr(text[:30])
            )
        )
        longest = llm.status().max_model_len - 40  # far more than the break lets through
        stream = llm.astream(QUESTION, temperature=0.0, ignore_eos=True, max_tokens=longest)
        async for _ in stream:
            break
        await stream.aclose()
        deadline = time.monotonic() + 10
        busy = self.busy(llm)
        while busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            busy = self.busy(llm)
        self.add(
            check("streaming", "abort on early break", busy == 0, "0 rows within 10 s", str(busy))
        )

    @staticmethod
    def busy(llm: Any) -> int:
        """Rows running and waiting in the backend's batch."""
        stats = llm.backend_stats()
        return stats.running + stats.waiting if stats else 0

    def static_batch(self) -> float:
        """Tokens/s of Transformers' `generate` on one padded batch (the same prompts)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lcfin.engine.chat import render_chat

        size, dtype = SIZES[self.device], torch.bfloat16 if self.device == "cuda" else torch.float32
        tok = AutoTokenizer.from_pretrained(self.mid, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(self.mid, dtype=dtype).to(self.device).eval()
        ids = [render_chat(tok, messages(i)).token_ids for i in range(size["requests"])]  # type: ignore[arg-type]
        batch = tok.pad({"input_ids": ids}, return_tensors="pt", padding=True).to(self.device)
        kw = {"do_sample": False, "pad_token_id": 0, "max_new_tokens": size["tokens"]}
        kw["min_new_tokens"] = size["tokens"]
        with torch.inference_mode():
            model.generate(**batch, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})
            rates = []
            for _ in range(REPEATS):
                self.sync()
                started = time.perf_counter()
                model.generate(**batch, **kw)
                self.sync()
                rates.append(len(ids) * size["tokens"] / (time.perf_counter() - started))
        del model
        self.free()
        return max(rates)

    async def throughput_and_memory(self) -> None:
        """lcfin's burst against the static batch, then the planner against the peak memory."""
        import torch

        static = self.static_batch()
        base = torch.cuda.memory_allocated() if self.device == "cuda" else 0
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        llm = self.llm(self.mid)
        try:
            self.dtype_rows(llm)
            size = SIZES[self.device]
            greedy = {"temperature": 0.0, "ignore_eos": True, "max_tokens": size["tokens"]}
            await llm.achat(QUESTION, **{**greedy, "max_tokens": 4})  # warm
            rate = max([await self.burst(llm, size["requests"], greedy) for _ in range(REPEATS)])
            ratio = f"{rate:,.0f} tok/s = {rate / static:.2f}x"
            self.add(
                Row(
                    "throughput",
                    "lcfin burst / static batch",
                    f"static {static:,.0f} tok/s",
                    ratio,
                    INFO,
                )
            )
            if self.device == "cuda":
                await self.memory_rows(llm, base)
            else:
                self.add(Row("memory", "planner vs peak", "CUDA only", "-", SKIP))
        finally:
            llm.close()

    @staticmethod
    async def burst(llm: Any, n: int, params: dict[str, Any]) -> float:
        """Tokens/s of `n` concurrent requests."""
        started = time.perf_counter()
        done = await asyncio.gather(*(llm.achat(messages(i), **params) for i in range(n)))
        return sum(c.usage.completion_tokens for c in done) / (time.perf_counter() - started)

    async def memory_rows(self, llm: Any, base: int) -> None:
        """Fill every row to the context, then compare the peak with the planner's footprint."""
        import torch

        from lcfin import load_profile, plan_memory
        from lcfin.engine.registry import spec_from_directory
        from lcfin.engine.switching import footprint_gib

        prof = load_profile("check-transformers", self.catalog)
        plan = plan_memory(spec_from_directory(Path(self.mid)), prof)
        context = llm.status().max_model_len
        fill = {"temperature": 0.0, "ignore_eos": True, "max_tokens": context - 40}
        await asyncio.gather(*(llm.achat(QUESTION, **fill) for _ in range(prof.max_num_seqs)))
        peak = (torch.cuda.max_memory_allocated() - base) / GIB
        predicted = footprint_gib(plan, "transformers")
        ratio = peak / predicted
        low, high = MEMORY_RANGE
        self.add(
            check("memory", "peak / planner's footprint", low <= ratio <= high,
                  f"{low}-{high} of {predicted:.2f} GiB", f"{peak:.2f} GiB = {ratio:.2f}x")
        )  # fmt: skip

    def sync(self) -> None:
        """Wait for the GPU (timings)."""
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def free(self) -> None:
        """Give cached GPU memory back (between parts)."""
        import gc

        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    async def run(self) -> None:
        """Every check, in order; a failing part is recorded and the rest still runs."""
        parts = [("tiny float32", self.tiny_parts), ("mid", self.throughput_and_memory)]
        for name, part in parts:
            say(f"checking: {name}")
            try:
                await part()
            except Exception as exc:
                self.add(
                    check(
                        name,
                        "ran without an error",
                        False,
                        "no error",
                        f"{type(exc).__name__}: {exc}",
                    )
                )
            self.free()

    async def tiny_parts(self) -> None:
        """Batching (float32, exact), streaming and abort on the tiny model; bf16 agreement."""
        llm = self.llm(self.tiny, dtype="float32")
        try:
            await self.batch_rows(llm, "float32", exact=True)
            await self.stream_rows(llm)
        finally:
            llm.close()
        if self.device == "cuda":
            llm = self.llm(self.tiny)
            try:
                await self.batch_rows(llm, "bfloat16", exact=False)
            finally:
                llm.close()


def versions() -> dict[str, str]:
    """Python, torch (with CUDA), transformers and the GPU."""
    import platform

    import torch
    import transformers

    found = {"python": platform.python_version(), "torch": torch.__version__}
    found["cuda"] = str(torch.version.cuda)
    found["transformers"] = transformers.__version__
    if torch.cuda.is_available():
        found["gpu"] = torch.cuda.get_device_name(0)
    return found


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, install carried wheels if asked, run the checks."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Exit status: 0 all passed, 1 a wrong result, 2 no CUDA GPU or no wheels.",
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--wheels", type=Path, help="install these wheels offline first")
    parser.add_argument("--json", type=Path, help="also write the table to this JSON file")
    args = parser.parse_args(argv)
    if args.wheels is not None:
        rest = ["--device", args.device, *(["--json", str(args.json)] if args.json else [])]
        return install_and_rerun(args.wheels, rest)
    import torch

    facts = versions()
    say(" ".join(f"{k} {v}" for k, v in facts.items()))
    if args.device == "cuda" and not torch.cuda.is_available():
        say("no CUDA GPU: use --device cpu for the same checks on the CPU")
        return 2
    if args.device == "cpu":
        # libgomp keeps an OpenMP pool per thread that ran torch (lcfin's model thread, this
        # one), and idle pools slow the others (docs/benchmarks.md): one thread keeps it fair.
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="lcfin-tf-check-") as tmp:
        run = Check(args.device, Path(tmp))
        asyncio.run(run.run())
    print(render_table(run.rows))
    say(summary(run.rows))
    if args.json:
        write_json(run.rows, args.json, versions=facts, device=args.device)
    return exit_code(run.rows)


if __name__ == "__main__":
    threading.current_thread().name = "gpu-check"
    sys.exit(main())
