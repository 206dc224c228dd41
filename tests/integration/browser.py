"""Driving Debian's Chromium with Playwright (never `playwright install`) for the console tests.

The browser starts with a fresh profile per test, with the network cut off (every host name but
127.0.0.1 fails to resolve), and every request the page makes is recorded, so a test can assert
that nothing left this machine. CSP violations are recorded by an init script.

Screenshots for docs/ui.md go to docs/img/ when LCFIN_UI_SCREENSHOTS=1 (`nox -s screenshots`),
else to the test's tmp_path, so that an ordinary run leaves the committed images alone.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LCFIN_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: Read once at import: the autouse clean_environ fixture clears LCFIN_* before each test.
REQUIRE_BROWSER = os.environ.get("LCFIN_TEST_REQUIRE_BROWSER") == "1"
SCREENSHOTS = os.environ.get("LCFIN_UI_SCREENSHOTS") == "1"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # The network cut off: no name resolves except the test server's address.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
#: Waits are for conditions; this only bounds a wait on a loaded 2-core machine.
WAIT_MS = 180_000
VIEWPORT = {"width": 1280, "height": 860}

_CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs the playwright package (pip install -e '.[dev]')"
    if not Path(CHROMIUM).is_file():
        return f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def require_browser() -> None:
    """Skip with the reason when Chromium or Playwright is missing; fail instead in CI."""
    reason = browser_missing()
    if reason is None:
        return
    if REQUIRE_BROWSER:
        pytest.fail(f"LCFIN_TEST_REQUIRE_BROWSER=1 but the browser tests cannot run: {reason}")
    pytest.skip(reason)


@dataclass
class Tab:
    """One page of a fresh Chromium profile, with the requests it made."""

    page: Any
    origin: str
    requests: list[Any] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open_console(self) -> None:
        """Load /ui/ and wait until it has talked to the server."""
        self.page.goto(f"{self.origin}/ui/")
        self.page.wait_for_function(
            "() => document.getElementById('server-state').dataset.status !== undefined"
        )

    def csp_violations(self) -> list[str]:
        return list(self.page.evaluate("() => window.__cspViolations"))

    def foreign_requests(self) -> list[str]:
        host = urlsplit(self.origin).netloc
        return [r.url for r in self.requests if urlsplit(r.url).netloc != host]

    def shot(self, name: str, tmp_path: Path, *, full_page: bool = False) -> Path:
        """A screenshot into docs/img/ (LCFIN_UI_SCREENSHOTS=1) or tmp_path."""
        folder = ROOT / "docs" / "img" if SCREENSHOTS else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        self.page.screenshot(path=str(path), full_page=full_page, animations="disabled")
        return path


@contextmanager
def chromium_tab(playwright: Any, origin: str, profile: Path) -> Iterator[Tab]:
    """A fresh Chromium (new user-data-dir) with one page on `origin`."""
    context = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        args=ARGS,
        headless=True,
        viewport=VIEWPORT,
        locale="en-US",
        timezone_id="UTC",
        color_scheme="light",
        service_workers="block",
    )
    try:
        context.set_default_timeout(WAIT_MS)
        context.add_init_script(_CSP_RECORDER)
        page = context.pages[0] if context.pages else context.new_page()
        tab = Tab(page, origin)
        page.on("request", lambda r: tab.requests.append(r))
        page.on("requestfailed", lambda r: tab.failed.append(f"{r.url} {r.failure}"))
        page.on("pageerror", lambda e: tab.errors.append(str(e)))
        yield tab
    finally:
        context.close()


def gauge(url: str, name: str, headers: dict[str, str] | None = None) -> float:
    """The sum of one lcfin: gauge in GET /metrics (e.g. num_requests_running)."""
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((f"lcfin:{name}{{", f"lcfin:{name} "))
    ]
    return sum(values)


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_MS / 1000) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
