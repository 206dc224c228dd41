"""The web console in a real browser (Debian's Chromium via Playwright) on the demo model.

Each test starts a fresh Chromium profile with the network cut off, against a real uvicorn on
127.0.0.1 serving the packaged `demo` model. What the issue asks the console to show:

- the page loads with no request to any other host, and no CSP violation;
- an answer streams in progressively, and Stop aborts it so that the server frees the slot;
- the dashboard counts that request;
- with keys on: the key prompt, the 401 message for a wrong key, then the right key works;
- a failed switch shows its error;
- the keyboard alone sends a message; every control has a label.

Waits are for conditions (DOM states, server gauges), never fixed sleeps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.browser import Tab, chromium_tab, gauge, require_browser, wait_until
from tests.integration.conftest import LiveServer, live_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY, ADMIN_KEY = "sk-lcfin-ui-user-5e0c2a9b", "sk-lcfin-ui-admin-d41f7c03"
WRONG = "sk-lcfin-ui-wrong-000000"
#: Accessible roles of the controls a user operates.
CONTROL_ROLES = {"button", "textbox", "combobox", "checkbox", "slider", "spinbutton", "tab"}


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    """Playwright's driver, once per module (skips with the reason when Chromium is missing)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The demo model, no keys (loopback: admin routes open)."""
    with live_server("demo", tmp_path_factory.mktemp("hf-console")) as server:
        yield server


@pytest.fixture(scope="module")
def demo_keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The demo model behind an API key and an admin key."""
    home = tmp_path_factory.mktemp("hf-console-keyed")
    with live_server("demo", home, api_keys=KEY, admin_key=ADMIN_KEY) as server:
        yield server


@pytest.fixture
def tab(playwright: Any, demo: LiveServer, tmp_path: Path) -> Iterator[Tab]:
    """A fresh Chromium on the demo server, checked for CSP violations and page errors."""
    with chromium_tab(playwright, demo.url, tmp_path / "profile") as opened:
        yield opened
        assert opened.csp_violations() == []
        assert opened.errors == []
        assert opened.foreign_requests() == []


def performance(server: LiveServer, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/analytics/performance?window=1h", headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return dict(r.json())


def ask(tab: Tab, question: str) -> Any:
    """Send a question at temperature 0 (Enter in the message box); the answer's list item."""
    tab.page.focus("#temperature")
    tab.page.keyboard.press("Home")
    tab.page.fill("#message", question)
    tab.page.press("#message", "Enter")
    return tab.page.locator("#messages li.assistant").last


def unnamed_controls(tab: Tab) -> list[str]:
    """Controls in Chromium's accessibility tree that have no accessible name."""
    session = tab.page.context.new_cdp_session(tab.page)
    try:
        nodes = session.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        session.detach()
    controls = [
        n for n in nodes if not n.get("ignored") and n.get("role", {}).get("value") in CONTROL_ROLES
    ]
    assert controls, "the accessibility tree has the page's controls"
    return [
        f"{n['role']['value']} #{n.get('backendDOMNodeId')}"
        for n in controls
        if not str(n.get("name", {}).get("value", "")).strip()
    ]


# -- loading, offline, CSP, labels ----------------------------------------------------------------


def test_page_loads_offline_from_this_server_only(tab: Tab, demo: LiveServer, tmp_path: Path):
    tab.open_console()
    tab.page.wait_for_function("() => document.getElementById('model').value === 'demo'")

    assert tab.page.title() == "lcfin console"
    assert tab.failed == []
    fetched = {r.url.removeprefix(demo.url) for r in tab.requests}
    assert {"/ui/", "/ui/app.js", "/ui/console.css", "/ui/chat.js", "/v1/models"} <= fetched
    page = next(r for r in tab.requests if r.url == f"{demo.url}/ui/")
    assert "script-src 'self'" in page.response().headers["content-security-policy"]
    # What the policy blocks, seen from inside the page: an inline script (Trusted Types and
    # script-src) and a style attribute; styles set through the CSSOM are allowed.
    outcome = tab.page.evaluate(
        """() => {
          const s = document.createElement('script');
          let script;
          try { s.text = 'window.__ran = 1'; document.body.append(s); script = 'appended'; }
          catch (e) { script = e.name; }
          const p = document.createElement('p');
          p.setAttribute('style', 'color: rgb(255, 0, 0)');
          document.body.append(p);
          const attr = getComputedStyle(p).color;
          p.removeAttribute('style');
          p.style.color = 'rgb(0, 128, 0)';
          const cssom = getComputedStyle(p).color;
          p.remove();
          return {script, ran: window.__ran === 1, attr, cssom};
        }"""
    )
    assert outcome["script"] == "TypeError" and not outcome["ran"]
    assert outcome["attr"] != "rgb(255, 0, 0)"  # the style attribute was refused
    assert outcome["cssom"] == "rgb(0, 128, 0)"
    assert any(v.startswith("style-src") for v in tab.csp_violations())
    tab.page.evaluate("() => { window.__cspViolations = []; }")


def test_every_control_has_a_label(tab: Tab):
    tab.open_console()
    assert unnamed_controls(tab) == []
    tab.page.click("#tab-dashboard")
    tab.page.wait_for_selector("#tiles dd")
    assert unnamed_controls(tab) == []
    tab.page.click("#keys-open")
    tab.page.wait_for_selector("#key-dialog[open]")
    assert unnamed_controls(tab) == []


def test_the_keyboard_alone_sends_a_message(tab: Tab, tmp_path: Path):
    tab.open_console()
    tab.page.wait_for_function("() => document.getElementById('model').value === 'demo'")
    for _ in range(40):  # Tab through the page from the top until the message box has focus
        focused = tab.page.evaluate("() => document.activeElement.id")
        if focused == "temperature":
            tab.page.keyboard.press("Home")  # temperature 0: the demo's glossary answer
        if focused == "message":
            break
        tab.page.keyboard.press("Tab")
    assert tab.page.evaluate("() => document.activeElement.id") == "message"
    assert tab.page.input_value("#temperature") == "0"

    tab.page.keyboard.type("What is CET1?")
    tab.page.keyboard.press("Enter")

    answer = tab.page.locator("#messages li.assistant").last
    tab.page.wait_for_selector("#messages li.assistant[data-state=done] .meta")
    assert "CET1" in answer.locator(".content").inner_text()
    meta = answer.locator(".meta").inner_text()
    assert "prompt +" in meta and "completion tokens" in meta
    assert "TTFT" in meta and "cost $" in meta
    tab.page.locator("#message").blur()
    tab.shot("ui-chat.png", tmp_path)


def test_memory_panel_shows_the_engines_numbers_where_present_and_dashes_where_not(
    tab: Tab, demo: LiveServer
):
    tab.open_console()
    models = httpx.get(f"{demo.url}/models", timeout=30).json()
    health = httpx.get(f"{demo.url}/health", timeout=30).json()
    # vLLM's report as the vLLM branch puts it in /models (`kv_cache`, engine.loaded.KvCapacity)
    kv_cache = {
        "max_model_len": 4096, "engine_tokens": 153_024, "engine_max_concurrency": 37.36,
        "planned_tokens": 152_000, "planned_max_concurrency": 37.1, "num_blocks": 9564,
        "block_size": 16,
    }  # fmt: skip
    rows = tab.page.evaluate(
        """async ([health, models, vllm]) => {
          const { memoryRows } = await import('./dashboard.js');
          return [memoryRows(health, models), memoryRows(health, {...models, kv_cache: vllm}),
                  memoryRows(health, null)];
        }""",
        [health, models, kv_cache],
    )
    here, vllm, nothing = ({label: (p, e) for label, p, e in table} for table in rows)

    plan = models["plan"]
    assert here["KV cache tokens"] == (f"{plan['kv_cache_tokens']:,}", "—")
    assert here["Max concurrency"] == (f"{plan['max_concurrency']:,.2f}", "—")
    assert here["Max model length"] == (str(plan["max_model_len"]), "—")
    assert vllm["KV cache tokens"] == ("152,000", "153,024")
    assert vllm["Max concurrency"] == ("37.10", "37.36")
    assert vllm["Max model length"] == ("4,096", "4,096")
    assert set(nothing.values()) == {("—", "—")}
    tab.page.click("#tab-dashboard")
    first = tab.page.locator("#memory tbody tr").first
    first.wait_for()
    assert first.inner_text().split("\t") == ["KV cache tokens", *here["KV cache tokens"]]


# -- streaming, Stop, the dashboard -------------------------------------------------------------


@pytest.fixture
def fresh(playwright: Any, tmp_path: Path) -> Iterator[tuple[LiveServer, Tab]]:
    """A demo server of the test's own (its ledger starts empty) and a Chromium on it."""
    with (
        live_server("demo", tmp_path / "hf-fresh") as server,
        chromium_tab(playwright, server.url, tmp_path / "profile") as tab,
    ):
        yield server, tab
        assert tab.csp_violations() == [] and tab.errors == [] and tab.foreign_requests() == []


def test_an_answer_streams_stop_frees_the_slot_and_the_dashboard_counts_it(
    fresh: tuple[LiveServer, Tab], tmp_path: Path
):
    server, tab = fresh

    # The demo model answers a glossary question in about 60 tokens; ignoring the end of text
    # makes the answer long enough (400 tokens) to stop half-way on any machine.
    def long_answer(route: Any) -> None:
        body = json.loads(route.request.post_data)
        route.continue_(post_data=json.dumps({**body, "ignore_eos": True}))

    tab.page.route("**/v1/chat/completions", long_answer)
    tab.open_console()
    tab.page.click("#tab-dashboard")
    tab.page.wait_for_selector("[data-tile=requests]")
    assert tab.page.inner_text("[data-tile=requests]") == "0"
    tab.page.click("#tab-chat")
    tab.page.fill("#max-tokens", "400")
    tab.page.evaluate(
        """() => {
          window.__lengths = [];
          const list = document.getElementById('messages');
          new MutationObserver(() => {
            const item = list.lastElementChild;
            if (item && item.dataset.state === 'streaming') {
              window.__lengths.push(item.querySelector('.content').textContent.length);
            }
          }).observe(list, {subtree: true, childList: true, characterData: true});
        }"""
    )

    answer = ask(tab, "What is Basel III?")
    tab.page.wait_for_function("() => new Set(window.__lengths.filter(n => n > 0)).size >= 3")
    wait_until(lambda: gauge(server.url, "num_requests_running") == 1, "the request to run")
    tab.page.click("#stop")

    tab.page.wait_for_selector("#messages li.assistant[data-state=stopped]")
    assert tab.page.is_disabled("#stop") and tab.page.is_enabled("#send")
    lengths = tab.page.evaluate("() => window.__lengths")
    assert lengths == sorted(lengths), "the text only grows while it streams"
    assert "stopped" in answer.locator(".meta").inner_text()
    wait_until(lambda: gauge(server.url, "num_requests_running") == 0, "the slot to be freed")
    after = wait_until(
        lambda: (p := performance(server))["aborted"] == 1 and p,
        "the aborted request in the ledger",
    )
    assert after["requests"] == 1

    tab.page.click("#tab-dashboard")
    tab.page.wait_for_function(
        "() => document.querySelector('[data-tile=requests]')?.textContent === '1'"
    )
    assert tab.page.inner_text("[data-tile=aborted]") == "1"
    tab.page.wait_for_selector("#chart-rps svg path.line")
    tab.shot("ui-dashboard.png", tmp_path, full_page=True)


# -- switching ------------------------------------------------------------------------------------


def test_a_failed_switch_shows_its_error(playwright: Any, tmp_path: Path):
    with (
        live_server("demo", tmp_path / "hf-switch") as server,
        chromium_tab(playwright, server.url, tmp_path / "profile") as tab,
    ):
        tab.open_console()
        tab.page.click("#tab-dashboard")
        tab.page.wait_for_selector("#switch-model option[value='llama3.1-8b']", state="attached")
        tab.page.select_option("#switch-model", "llama3.1-8b")  # too big for cpu: refused (#17)
        tab.page.click("#switch")

        status = tab.page.locator("#switch-status.error")
        status.wait_for()
        served = httpx.get(f"{server.url}/loading-status", timeout=30).json()
        assert served["status"] == "failed" and served["current_model"] == "demo"
        text = status.inner_text()
        assert text.startswith("Switch to llama3.1-8b failed: ")
        assert served["error"] in text and "demo still serves" in text
        assert tab.csp_violations() == [] and tab.foreign_requests() == []
        tab.shot("ui-switch-failed.png", tmp_path)


def test_an_admin_switches_from_the_chat_and_the_settings_reach_the_request(
    playwright: Any, tmp_path: Path
):
    from importlib import resources

    demo_dir = Path(str(resources.files("lcfin.catalog").joinpath("demo")))
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        f'[models.demo-copy]\nrepo_id = "lcfin/demo-copy"\nlocal_path = "{demo_dir}"\n'
        'dtype = "float32"\n'
    )
    with (
        live_server("demo", tmp_path / "hf-copy", catalog=str(catalog)) as server,
        chromium_tab(playwright, server.url, tmp_path / "profile") as tab,
    ):
        sent: list[dict[str, Any]] = []
        tab.page.on(
            "request",
            lambda r: r.url.endswith("/v1/chat/completions") and sent.append(r.post_data_json),
        )
        tab.open_console()
        # An admin (loopback, no keys) sees the catalog in the chat's model picker.
        option = "#model optgroup option[value='demo-copy']"
        tab.page.wait_for_selector(option, state="attached")
        tab.page.select_option("#model", "demo-copy")
        tab.page.click("#model-switch")
        note = tab.page.locator("#model-note")
        note.filter(has_text="demo-copy serves now").wait_for()
        tab.page.wait_for_function("() => document.getElementById('model').value === 'demo-copy'")
        assert tab.page.is_hidden("#model-switch")
        assert httpx.get(f"{server.url}/health", timeout=30).json()["current_model"] == "demo-copy"

        tab.page.fill("#system", "Answer in JSON.")
        tab.page.check("#json-mode")
        tab.page.fill("#max-tokens", "8")
        ask(tab, "What is CET1?")
        tab.page.wait_for_selector("#messages li.assistant[data-state=done] .meta")

        assert sent[-1] == {
            "model": "demo-copy",
            "messages": [
                {"role": "system", "content": "Answer in JSON."},
                {"role": "user", "content": "What is CET1?"},
            ],
            "temperature": 0,
            "max_tokens": 8,
            "stream": True,
            "stream_options": {"include_usage": True},
            "response_format": {"type": "json_object"},
        }
        assert tab.csp_violations() == [] and tab.foreign_requests() == []


# -- keys -----------------------------------------------------------------------------------------


def test_keys_prompt_401_then_the_right_key_works_and_stays_out_of_urls_and_logs(
    playwright: Any, demo_keyed: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    with chromium_tab(playwright, demo_keyed.url, tmp_path / "profile") as tab:
        tab.open_console()
        dialog = tab.page.locator("#key-dialog[open]")
        dialog.wait_for()
        assert "Missing API key" in tab.page.locator("#key-reason").inner_text()
        assert tab.page.inner_text("#server-state") == "healthy"  # /health without a key: status

        tab.page.fill("#api-key", WRONG)
        tab.page.press("#api-key", "Enter")
        tab.page.wait_for_function(
            "() => document.getElementById('key-reason').textContent === 'Invalid API key'"
        )
        assert dialog.is_visible()
        tab.shot("ui-keys.png", tmp_path)

        tab.page.fill("#api-key", KEY)
        tab.page.click("#key-save")
        dialog.wait_for(state="detached")
        answer = ask(tab, "What is IFRS 9?")
        tab.page.wait_for_selector("#messages li.assistant[data-state=done] .meta")
        assert "IFRS 9" in answer.locator(".content").inner_text()
        tab.page.click("#tab-dashboard")
        note = tab.page.locator("#analytics-note")
        note.filter(has_text="need the admin key").wait_for()

        assert tab.page.locator("#model option").count() == 1  # not an admin: no catalog

        tab.page.click("#keys-open")
        tab.page.fill("#admin-key", ADMIN_KEY)
        tab.page.click("#key-save")
        tab.page.wait_for_selector("[data-tile=requests]")
        tab.page.wait_for_selector("#model optgroup option[value='llama3.1-8b']", state="attached")

        storage = tab.page.evaluate(
            "() => [sessionStorage.getItem('lcfin.apiKey'), localStorage.length, document.cookie]"
        )
        assert storage == [KEY, 0, ""]
        sent = {r.headers.get("authorization") for r in tab.requests}
        assert {f"Bearer {KEY}", f"Bearer {ADMIN_KEY}"} <= sent
        for secret in (KEY, ADMIN_KEY, WRONG):
            assert not [r.url for r in tab.requests if secret in r.url]
            assert secret not in caplog.text
        assert tab.csp_violations() == [] and tab.foreign_requests() == []
