"""Progress of a model load: which model, at which stage, on a terminal or in a log.

The engine logs each stage of a load (`lcfin.engine`, INFO: backend chosen, downloading,
reading the weights, warming up, now serving). While a command waits for a load, these records
become the text of a spinner on a terminal, or one line each on stderr when stderr is not a
terminal (a CI log, a pipe), so a long first load is never silent (see #17).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from lcfin.cli.options import err

if TYPE_CHECKING:
    from lcfin import FinancialLLM, Settings

__all__ = ["loading", "open_llm"]

ENGINE = "lcfin.engine"


class _Stages(logging.Handler):
    """Shows each engine INFO record as the current stage; passes on what would show anyway."""

    def __init__(self, show: Any, threshold: int) -> None:
        super().__init__(logging.INFO)
        self.show, self.threshold = show, threshold

    def emit(self, record: logging.LogRecord) -> None:
        self.show(record.getMessage())
        if record.levelno >= self.threshold:  # a warning: still logged as usual
            logging.getLogger("lcfin").handle(record)


@contextmanager
def loading(console: Console, name: str) -> Iterator[None]:
    """Report the stages of loading `name` on `console` (stderr) while the block runs."""
    title = f"Loading {name}"
    engine = logging.getLogger(ENGINE)
    threshold = engine.getEffectiveLevel()
    if console.is_terminal:
        with console.status(f"{escape(title)} ...") as status:
            handler = _Stages(lambda stage: status.update(escape(f"{title}: {stage}")), threshold)
            with _capturing(engine, handler):
                yield
        return
    console.print(f"{escape(title)} ...")
    with _capturing(engine, _Stages(lambda stage: console.print(f"  {escape(stage)}"), threshold)):
        yield


@contextmanager
def _capturing(engine: logging.Logger, handler: logging.Handler) -> Iterator[None]:
    level, propagate = engine.level, engine.propagate
    engine.addHandler(handler)
    engine.setLevel(logging.INFO if engine.getEffectiveLevel() > logging.INFO else level)
    engine.propagate = False  # the handler passes on what the user asked to see
    try:
        yield
    finally:
        engine.removeHandler(handler)
        engine.setLevel(level)
        engine.propagate = propagate


def _quiet_local_load(model: str | None, settings: Settings) -> None:
    """Hide the weight-loading bars for models already on disk; keep them for downloads."""
    from lcfin import get_model, is_cached

    name = model or settings.default_model or "demo"
    try:
        if is_cached(get_model(name, settings.catalog), settings):
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    except Exception:  # the real load reports naming problems properly
        return


def open_llm(model: str | None, profile: str) -> FinancialLLM:
    """Load the model a command asked for (the default model when None)."""
    from lcfin import FinancialLLM, Settings

    settings = Settings()
    _quiet_local_load(model, settings)
    with loading(err, model or settings.default_model or "the default model"):
        return FinancialLLM(model, profile=profile, settings=settings)
