"""The request guard: what every request must satisfy before any route sees it (browsers' attacks).

An ASGI middleware around the whole app (every route, present and future, unknown paths too):

* **Host** — answered only for the host of ``HOPFLOW_PUBLIC_URL``, the names in
  ``HOPFLOW_ALLOWED_HOSTS`` (``api.example.com``, ``*.example.com``; ``*`` turns the check off), and
  loopback names (``localhost``, ``127.0.0.1``, ``[::1]``) when the connection itself arrived on a
  loopback address. Anything else is 421 ``misdirected-request``: a web page whose own name was
  re-pointed at this server (DNS rebinding) sends its own name as Host. ``GET /healthz`` and
  ``GET /metrics`` are exempt (probes and scrapers use the pod's address; the first reveals
  nothing, the second takes a key).
* **Origin** — a request carrying an ``Origin`` that is not this server's own (the Host it was sent
  to, or ``HOPFLOW_PUBLIC_URL``'s origin) is 403 ``cross-origin``, and so is one a browser marks
  ``Sec-Fetch-Site: cross-site``/``same-site``. Requests without them (curl, the SDK, the CLI,
  QStash) pass; the dashboard at ``/ui`` is same-origin.
* **Content-Type** — a request with a body to the operations API (``/v1/…`` except the webhook's
  signed routes) must say ``application/json`` or ``application/<x>+json``, else 415
  ``unsupported-media-type``: browsers send ``text/plain`` and form bodies cross-origin without a
  preflight, JSON only after one. Checked when the route reads the body (after routing and the
  key), so unknown routes stay 404/405; a request with neither a body nor a type passes.

Each refusal is a problem document and happens before anything is written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from engine.web.paths import CALLBACK_PATH, FAILED_PATH, STEP_PATH
from engine.web.problems import Problem

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engine.config import Config

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

WEBHOOK_PATHS = frozenset({STEP_PATH, FAILED_PATH, CALLBACK_PATH})  # signed: their own rules
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# read by machines that address the pod, not the public name (platform probes, Prometheus scrapes);
# /healthz reveals nothing and /metrics takes its key: no Host check for them
PROBE_PATHS = frozenset({"/healthz", "/metrics"})
MAX_ECHO = 100
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "…"


def split_host(value: str) -> tuple[str, int | None] | None:
    """``Host`` → (lower-case name without brackets, port or None); None when malformed."""
    try:
        parts = urlsplit("//" + value.strip())
        port = parts.port
    except ValueError:
        return None
    name = parts.hostname
    if not name or parts.username is not None or parts.path or parts.query:
        return None
    return name.rstrip("."), port


def host_allowed(config: Config, name: str, local: bool) -> bool:
    """Whether this server answers for Host ``name`` (``local``: the connection is on loopback)."""
    from engine.config import is_loopback_host

    if local and is_loopback_host(name):
        return True
    if config.public_url:
        public = urlsplit(config.public_url).hostname
        if public and name == public.lower().rstrip("."):
            return True
    for pattern in config.allowed_hosts:
        if pattern == "*" or pattern.strip("[]") == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
            return True
    return False


def origin_allowed(config: Config, origin: str, host: tuple[str, int | None], scheme: str) -> bool:
    """``Origin`` names this server: the Host it was sent to (same name and port), or the public URL."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return False
    name = parts.hostname.rstrip(".")
    port = port or _DEFAULT_PORTS[parts.scheme]
    if config.public_url:
        public = urlsplit(config.public_url)
        if (
            parts.scheme == public.scheme
            and public.hostname
            and name == public.hostname.lower()
            and port == (public.port or _DEFAULT_PORTS[public.scheme])
        ):
            return True
    host_name, host_port = host
    if name != host_name:
        return False
    if host_port is not None:
        return port == host_port
    # no port in Host: the request's own scheme's default (behind a TLS proxy, the Origin's)
    return port in (_DEFAULT_PORTS.get(scheme, 80), _DEFAULT_PORTS[parts.scheme])


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, sub = media.partition("/")
    return kind == "application" and (sub == "json" or sub.endswith("+json"))


def check(config: Config, scope: Scope) -> Problem | None:
    """The first rule ``scope`` breaks, as a problem; None when it may go on."""
    from engine.config import is_loopback_host

    method = scope.get("method", "GET")
    path: str = scope.get("path", "/")
    root = (scope.get("root_path", "") or "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :] or "/"
    headers: dict[str, list[str]] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        headers.setdefault(raw_name.decode("latin-1").lower(), []).append(raw_value.decode("latin-1"))

    hosts = headers.get("host", [])
    if len(hosts) > 1:
        return Problem("bad-request", "more than one Host header")
    host = split_host(hosts[0]) if hosts else None
    probe = path in PROBE_PATHS and method in ("GET", "HEAD")
    if not probe:
        if host is None:
            return Problem("bad-request", "the Host header is missing or malformed")
        server = scope.get("server")
        local = bool(server) and is_loopback_host(str(server[0]))
        if not host_allowed(config, host[0], local):
            return Problem(
                "misdirected-request",
                f"this server does not answer for host {_clip(host[0])!r} (it answers for "
                "HOPFLOW_PUBLIC_URL's host, HOPFLOW_ALLOWED_HOSTS, and loopback names on a loopback "
                "connection)",
            )

    origins = headers.get("origin", [])
    if origins and not (
        host is not None
        and len(origins) == 1
        and origin_allowed(config, origins[0], host, str(scope.get("scheme", "http")))
    ):
        return Problem(
            "cross-origin",
            f"requests from another origin ({_clip(origins[0])!r}) are refused: "
            "call the API from a server, the CLI or the dashboard",
        )
    fetch_site = (headers.get("sec-fetch-site") or [""])[0].strip().lower()
    if fetch_site in ("cross-site", "same-site"):
        return Problem("cross-origin", f"the browser marked this request {fetch_site}: refused")

    return None


def takes_json(scope: Scope) -> bool:
    """A request whose body, if any, must be JSON: a body method on the operations API."""
    path: str = scope.get("path", "/")
    root = (scope.get("root_path", "") or "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :] or "/"
    return scope.get("method") in BODY_METHODS and path.startswith("/v1/") and path not in WEBHOOK_PATHS


def content_problem(scope: Scope, first_chunk: bytes) -> Problem | None:
    """415 unless the body is JSON by its Content-Type (or there is no body and no type)."""
    types = [v.decode("latin-1") for k, v in scope.get("headers") or () if k.lower() == b"content-type"]
    if types:
        if len(types) == 1 and is_json(types[0]):
            return None
        return Problem(
            "unsupported-media-type",
            f"the body must be JSON (Content-Type: application/json), not {_clip(types[0])!r}",
            headers={"Accept-Post": "application/json"},
        )
    if first_chunk:
        return Problem(
            "unsupported-media-type",
            "a request body needs Content-Type: application/json",
            headers={"Accept-Post": "application/json"},
        )
    return None


class RequestGuard:
    """The ASGI middleware applying :func:`check` to every HTTP request of the app."""

    def __init__(self, app: ASGIApp, config: Config) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            problem = check(self.config, scope)
            if problem is not None:
                path = str(scope.get("path", "/"))
                response = problem.response(path if len(path) <= 200 else path[:200] + "…")
                await response(scope, receive, send)
                return
            if takes_json(scope):
                receive = _json_body(scope, receive)
        await self.app(scope, receive, send)


def _json_body(scope: Scope, receive: Any) -> Any:
    """``receive`` that checks the Content-Type when the route first reads the body: routing (404,
    405) and authentication come first, and a bodiless request without a type passes."""
    checked = False

    async def checked_receive() -> Any:
        nonlocal checked
        message = await receive()
        if not checked and message.get("type") == "http.request":
            checked = True
            problem = content_problem(scope, message.get("body", b"") or b"")
            if problem is not None:
                raise problem
        return message

    return checked_receive
