"""`write_usage_plot`: a PNG from time buckets, and a clear error without matplotlib."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from lcfin.errors import LcfinError
from lcfin.telemetry.plot import write_usage_plot

PNG = b"\x89PNG\r\n\x1a\n"


def bucket(start: float, requests: int) -> dict[str, Any]:
    return {
        "start": start, "requests": requests, "prompt_tokens": 10 * requests,
        "completion_tokens": 30 * requests, "latency_p50_s": 0.5, "latency_p95_s": 0.9,
        "ttft_p50_s": 0.05, "ttft_p95_s": None,
    }  # fmt: skip


@pytest.mark.parametrize("buckets", [[bucket(3600 * i, i + 1) for i in range(5)], []])
def test_writes_a_png(tmp_path: Path, buckets: list[dict[str, Any]]) -> None:
    path = write_usage_plot(buckets, tmp_path / "out" / "u.png", title="t", bucket_s=3600)
    assert path.read_bytes().startswith(PNG)


def test_missing_matplotlib_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(LcfinError) as info:
        write_usage_plot([], tmp_path / "u.png", title="t", bucket_s=60)
    assert "lcfin[plot]" in (info.value.hint or "")
