"""The web console's routes: static files from the package, public, CSP, and nothing else.

The page itself is tested in a real browser (tests/integration/test_console_browser.py); here
the routes are attacked directly: traversal, unknown names, keys, the setting that turns the
console off, and the files' own content (no inline script or style, no outside URL).
"""

from __future__ import annotations

import fnmatch
import re
import sys
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest

from lcfin import InvalidParameter, Settings
from lcfin.server.console import ASSET_DIR, assets, content_security_policy
from tests.server.support import Serve

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
UI = Path(str(resources.files("lcfin.server").joinpath(ASSET_DIR)))
KEY, ADMIN = "sk-lcfin-console-key-3d1f", "sk-lcfin-console-admin-77aa"
#: What the issue allows the console's files to weigh in total.
MAX_ASSET_BYTES = 300 * 1024


def csp_of(header: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


@pytest.mark.asyncio
async def test_the_page_and_its_files_are_served_with_a_strict_policy(serve: Serve):
    server = await serve(load=False)

    page = await server.client.get("/ui/")

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = csp_of(page.headers["content-security-policy"])
    assert csp["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src", "img-src"):
        assert csp[directive] == "'self'", directive  # no 'unsafe-inline', no other host
    assert csp["frame-ancestors"] == "'none'"
    assert csp["form-action"] == "'none'"
    assert csp["require-trusted-types-for"] == "'script'"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    for name, asset in assets().items():
        r = await server.client.get(f"/ui/{name}")
        assert r.status_code == 200, name
        assert r.content == asset.body
        assert r.headers["content-type"] == asset.media_type
        assert r.headers["content-security-policy"] == page.headers["content-security-policy"]


@pytest.mark.asyncio
async def test_an_unchanged_file_is_304(serve: Serve):
    server = await serve(load=False)
    first = await server.client.get("/ui/app.js")

    again = await server.client.get("/ui/app.js", headers={"If-None-Match": first.headers["etag"]})

    assert again.status_code == 304 and again.content == b""
    other = await server.client.get("/ui/app.js", headers={"If-None-Match": '"stale"'})
    assert other.status_code == 200


@pytest.mark.parametrize("path", ["/", "/ui"])
@pytest.mark.asyncio
async def test_root_and_ui_redirect_to_the_console(serve: Serve, path: str):
    server = await serve(load=False)

    r = await server.client.get(path)

    assert r.status_code == 307
    assert r.headers["location"] == "ui/"  # relative: a proxy's path prefix is kept


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nope.js",
        "/ui/console.py",  # the module beside the files is not one of them
        "/ui/..%2fconsole.py",
        "/ui/%2e%2e%2f%2e%2e%2fconfig.py",
        "/ui/..%5c..%5cconfig.py",
        "/ui/sub/app.js",
        "/ui/index.html%00.js",
        "/ui/APP.JS",
    ],
)
@pytest.mark.asyncio
async def test_only_the_packaged_files_are_served(serve: Serve, path: str):
    server = await serve(load=False)

    r = await server.client.get(path)

    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "not_found"
    assert "import" not in r.text


@pytest.mark.asyncio
async def test_with_keys_the_console_is_public_and_the_api_is_not(serve: Serve):
    server = await serve(load=False, api_keys=KEY, admin_key=ADMIN)

    for name in ["", *assets()]:
        assert (await server.client.get(f"/ui/{name}")).status_code == 200, name
    assert (await server.client.get("/")).status_code == 307
    assert (await server.client.get("/v1/models")).status_code == 401
    assert (await server.client.get("/ui/nope.js")).status_code == 401  # deny by default
    assert (await server.client.post("/ui/", json={})).status_code == 405  # GET only


@pytest.mark.asyncio
async def test_the_console_answers_only_to_accepted_host_names(serve: Serve):
    server = await serve(load=False)

    r = await server.client.get("/ui/", headers={"Host": "attacker.example"})

    assert r.status_code == 403  # DNS rebinding: the page would run as that site's origin


@pytest.mark.asyncio
async def test_lcfin_ui_false_turns_the_console_off(serve: Serve):
    server = await serve(load=False, ui=False)
    keyed = await serve(load=False, ui=False, api_keys=KEY)

    for path in ("/", "/ui", "/ui/", "/ui/app.js"):
        assert (await server.client.get(path)).status_code == 404, path
        assert (await keyed.client.get(path)).status_code == 401, path


@pytest.mark.asyncio
async def test_frame_ancestors_come_from_the_setting(serve: Serve):
    server = await serve(load=False, ui_frame_ancestors="https://huggingface.co, 'self'")

    r = await server.client.get("/ui/")

    csp = csp_of(r.headers["content-security-policy"])
    assert csp["frame-ancestors"] == "https://huggingface.co 'self'"


@pytest.mark.parametrize(
    "value",
    ["*", "https://a.example; script-src *", "javascript:alert(1)", "'unsafe-inline'", "data:"],
)
def test_a_bad_frame_ancestors_value_refuses_to_start(value: str):
    with pytest.raises(InvalidParameter) as info:
        content_security_policy(Settings(_env_file=None, ui_frame_ancestors=value))
    assert info.value.param == "LCFIN_UI_FRAME_ANCESTORS"


# -- the files themselves -----------------------------------------------------------------------


class _Page(HTMLParser):
    """Collects what the page's CSP would have to allow: scripts, styles, handlers, URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.urls: list[str] = []
        self.tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tag = tag
        found = dict(attrs)
        if tag == "style" or "style" in found:
            self.problems.append(f"inline style in <{tag}>")
        if tag == "script" and not found.get("src"):
            self.problems.append("inline <script>")
        self.problems += [f"handler {k} in <{tag}>" for k in found if k.startswith("on")]
        self.urls += [v for k, v in found.items() if k in ("src", "href", "action") and v]

    def handle_data(self, data: str) -> None:
        if self.tag == "script" and data.strip():
            self.problems.append("inline script text")


def test_the_page_has_no_inline_script_style_or_handler():
    page = _Page()
    page.feed((UI / "index.html").read_text())

    assert page.problems == []
    assert page.urls, "the parser saw the page's files"
    assert all(not re.match(r"^(?:[a-z]+:|//)", url) for url in page.urls), page.urls


def test_scripts_use_no_html_sink_eval_or_outside_url():
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function"
        r"|setAttribute\(\s*[\"']style|[\"']style[\"']\s*:|https?://(?!www\.w3\.org/2000/svg\")"
    )
    for path in sorted(UI.glob("*.js")):
        hits = [m.group(0) for m in forbidden.finditer(path.read_text())]
        assert hits == [], f"{path.name}: {hits}"
    assert "http" not in (UI / "console.css").read_text()  # no web font, no remote image


def test_assets_weigh_under_300_kb_and_all_ship_in_the_wheel():
    files = [p for p in UI.iterdir() if p.is_file()]
    total = sum(p.stat().st_size for p in files)

    assert total < MAX_ASSET_BYTES, f"{total} bytes"
    assert {p.name for p in files} == set(assets()), "a file of an unknown type would not serve"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["lcfin"]
    for path in files:
        relative = path.relative_to(ROOT / "src" / "lcfin").as_posix()
        assert any(fnmatch.fnmatch(relative, pat) for pat in patterns), relative
