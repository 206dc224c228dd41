"""`write_usage_plot`: a PNG from time buckets, and a clear error without matplotlib."""

from __future__ import annotations

import builtins
import math
from pathlib import Path
from typing import Any

import pytest

from lcfin.errors import LcfinError
from lcfin.telemetry.plot import draw_usage, write_usage_plot

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


def test_minutes_without_traffic_are_drawn_as_such() -> None:
    pytest.importorskip("matplotlib")
    busy = [bucket(600, 2), bucket(600 + 5 * 60, 3)]  # two busy minutes, four idle between

    fig = draw_usage(busy, title="t", bucket_s=60)

    top, bottom = fig.axes[0], fig.axes[1]
    requests = [bar.get_height() for bar in top.patches]
    assert requests == [2, 0, 0, 0, 0, 3]  # zeros, not a line across the gap
    tokens = fig.axes[2].lines[0].get_ydata()  # completion tokens (the twin axis)
    assert list(tokens) == [60, 0, 0, 0, 0, 90]
    latency = [float(v) for v in bottom.lines[0].get_ydata()]  # p50: broken over the gap
    assert latency[0] == latency[-1] == 0.5
    assert all(math.isnan(v) for v in latency[1:-1])


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
