"""ModelThread, and the backend doing all its torch work (load, warm-up, decoding) on it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from lcfin.engine.transformers.modelthread import ModelThread


def test_call_runs_jobs_in_order_on_one_thread_and_returns_results() -> None:
    worker = ModelThread(name="test-model")
    try:
        idents = [worker.call(threading.get_ident) for _ in range(3)]
        assert len(set(idents)) == 1
        assert idents[0] != threading.get_ident()
        assert worker.call(lambda: 6 * 7) == 42
    finally:
        worker.stop()


def test_call_raises_the_jobs_exception_and_the_thread_goes_on() -> None:
    worker = ModelThread()
    try:
        with pytest.raises(ValueError, match="bad weights"):
            worker.call(lambda: (_ for _ in ()).throw(ValueError("bad weights")))
        assert worker.call(lambda: "still alive") == "still alive"
    finally:
        worker.stop()


def test_stop_ends_the_thread_after_queued_jobs() -> None:
    worker = ModelThread(name="test-stop")
    ran: list[int] = []
    worker.submit(lambda: ran.append(1))
    worker.stop()
    assert ran == [1]
    assert not any(t.name == "test-stop" for t in threading.enumerate())


def test_load_warm_up_and_decoding_share_one_thread(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """libgomp keeps one OpenMP pool per thread that runs torch; one thread keeps one pool."""
    import transformers

    from lcfin import FinancialLLM, Settings

    seen: dict[str, set[int]] = {"load": set(), "forward": set()}
    load = transformers.AutoModelForCausalLM.from_pretrained

    def spy_load(*args: object, **kwargs: object) -> torch.nn.Module:  # spy: calls the real one
        seen["load"].add(threading.get_ident())
        model = load(*args, **kwargs)
        model.register_forward_pre_hook(lambda *_: seen["forward"].add(threading.get_ident()))
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy_load)
    llm = FinancialLLM(str(tiny_models["llama"]), profile="cpu", settings=Settings())
    try:
        llm.complete("Basel III", max_tokens=4, temperature=0.0)
    finally:
        llm.close()
    assert len(seen["load"]) == 1
    assert seen["forward"] == seen["load"]  # warm-up and decoding ran where the model loaded
    assert threading.get_ident() not in seen["load"]
