"""The dashboard's static files at ``/ui/`` (no key needed: they hold nothing about executions).

The page asks for the API key and fetches every datum from the JSON API with it. Only the files
listed in :data:`ASSETS` are served, each by its own route (no path from the URL ever reaches the
file system). Each
answer carries a strict Content-Security-Policy (scripts from this origin only, nothing framed,
no forms posted anywhere), an ETag, and a gzip body when the client takes one (the vendored
Mermaid script is 3.5 MB).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.requests import Request
    from starlette.responses import Response

    from engine.web.core import HopflowApp

ASSETS = {
    "": ("index.html", "text/html; charset=utf-8"),
    "index.html": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
    "mermaid.min.js": ("vendor/mermaid.min.js", "text/javascript; charset=utf-8"),
}
# Mermaid writes style attributes and a <style> element into the SVG it draws: styles must be inline.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class _Asset:
    body: bytes
    gzipped: bytes
    etag: str
    media_type: str


_loaded: dict[str, _Asset] = {}
_lock = threading.Lock()


def _asset(name: str) -> _Asset:
    with _lock:
        found = _loaded.get(name)
        if found is None:
            # imported here: a webhook's cold start builds these routes but never serves a file
            import gzip
            from importlib import resources

            file, media_type = ASSETS[name]
            body = resources.files("engine.web.ui").joinpath("static", *file.split("/")).read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            found = _Asset(body, gzip.compress(body, 6, mtime=0), etag, media_type)
            _loaded[name] = found
        return found


async def index_redirect(hop: HopflowApp, request: Request) -> Response:
    """``/ui`` → ``/ui/`` (relative, so it works below a proxy's path prefix too)."""
    from starlette.responses import Response

    return Response(status_code=307, headers={"Location": "ui/", **HEADERS})


def serving(name: str) -> Callable[[HopflowApp, Request], Awaitable[Response]]:
    """The route handler of ``/ui/<name>`` (one route per file: nothing from the URL is a path)."""

    async def serve(hop: HopflowApp, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import Response

        asset = await run_in_threadpool(_asset, name)
        headers = {**HEADERS, "ETag": asset.etag, "Vary": "Accept-Encoding"}
        if asset.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        body = asset.body
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return Response(status_code=200, headers=headers, media_type=asset.media_type)
        return Response(body, headers=headers, media_type=asset.media_type)

    serve.__name__ = "ui_" + (name or "index").replace(".", "_")
    return serve
