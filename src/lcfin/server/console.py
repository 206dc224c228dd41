"""GET /ui/: the web console (chat playground + operations dashboard), static files only.

The console's HTML, CSS and JS ship inside the package (`lcfin/server/ui/`, package data) and
are served from memory: a request names one file of a fixed table, never a filesystem path.
The page holds no data; it calls the API from the browser with the key the user types, like
any other client, so these routes are public (docs/ui.md) while LCFIN_UI is on.

Every response carries a Content-Security-Policy that allows only this origin and no inline
script or style (`require-trusted-types-for 'script'` also forbids HTML string sinks), plus
nosniff, no-referrer and frame-ancestors from LCFIN_UI_FRAME_ANCESTORS (default: none).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from lcfin.errors import InvalidParameter

if TYPE_CHECKING:
    from lcfin import Settings

__all__ = ["ASSET_DIR", "Asset", "assets", "content_security_policy", "public_paths", "routes"]

#: The console's files, inside the `lcfin.server` package.
ASSET_DIR = "ui"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_SOURCE = re.compile(r"^(?:'self'|https?://(?:\*\.)?[A-Za-z0-9.-]+(?::\d{1,5})?)$")


@dataclass(frozen=True)
class Asset:
    """One console file, held in memory."""

    name: str
    body: bytes
    media_type: str

    @property
    def etag(self) -> str:
        """A strong validator of the body."""
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'


@lru_cache(maxsize=1)
def assets() -> dict[str, Asset]:
    """The console's files by name (read once from the package)."""
    found = {}
    for entry in resources.files("lcfin.server").joinpath(ASSET_DIR).iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _TYPES:
            found[entry.name] = Asset(entry.name, entry.read_bytes(), _TYPES[suffix])
    return found


def public_paths() -> frozenset[str]:
    """The paths the console answers without a key (the pages and files, no data)."""
    return frozenset({"/", "/ui", "/ui/", *(f"/ui/{name}" for name in assets())})


def _frame_ancestors(value: str) -> str:
    sources = value.replace(",", " ").split()
    bad = [s for s in sources if not _SOURCE.match(s)]
    if bad:
        raise InvalidParameter(
            f"LCFIN_UI_FRAME_ANCESTORS: {bad[0]!r} is not an origin",
            param="LCFIN_UI_FRAME_ANCESTORS",
            hint="list origins such as https://huggingface.co, or 'self'; empty: no framing",
        )
    return " ".join(sources) or "'none'"


def content_security_policy(settings: Settings) -> str:
    """The console's CSP (raises InvalidParameter on a bad LCFIN_UI_FRAME_ANCESTORS)."""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            f"frame-ancestors {_frame_ancestors(settings.ui_frame_ancestors)}",
            "require-trusted-types-for 'script'",
            "trusted-types 'none'",
        ]
    )


def _headers(csp: str) -> dict[str, str]:
    return {
        "content-security-policy": csp,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cross-origin-opener-policy": "same-origin",
        "cross-origin-resource-policy": "same-origin",
        "cache-control": "no-cache",
    }


def _serve(request: Request, name: str) -> Response:
    asset = assets().get(name)
    if asset is None:
        raise HTTPException(404, f"The console has no file {name!r}")
    headers = {**_headers(request.app.state.console_csp), "etag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


async def index(request: Request) -> Response:
    """GET /ui/: the console page."""
    return _serve(request, "index.html")


async def asset(request: Request) -> Response:
    """GET /ui/{name}: one of the console's files."""
    return _serve(request, request.path_params["name"])


async def to_console(request: Request) -> Response:
    """GET / and /ui: redirect to /ui/ (relative, so a path prefix behind a proxy is kept)."""
    return RedirectResponse("ui/", status_code=307, headers=_headers("default-src 'none'"))


def routes() -> list[Route]:
    """The console routes (only mounted while LCFIN_UI is on)."""
    return [
        Route("/", to_console, methods=["GET"]),
        Route("/ui", to_console, methods=["GET"]),
        Route("/ui/", index, methods=["GET"]),
        Route("/ui/{name}", asset, methods=["GET"]),
    ]
