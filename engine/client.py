"""A small client for hopflow's HTTP API (``hopflow start/status/… --url``, scripts, tests).

Its five operations have the shape of ``engine.commands.operate.Backend`` (``start``, ``record``,
``history``, ``cancel``, ``notify``), so the CLI can talk to a remote server exactly as it talks to
the local store. Every failure raises :class:`ClientError` with one readable line taken from the
server's problem document (``detail``, plus each schema error for a 422); the API key never
appears in an error or a ``repr``.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from engine import lazyimport

if TYPE_CHECKING:  # pragma: no cover - typing only
    import httpx


class ClientError(Exception):
    """An operation failed. ``status`` is the HTTP status (None: no answer); ``problem`` the document.

    ``kind`` says what went wrong: the problem's slug (``unauthorized``, ``invalid-input``,
    ``unknown-execution``…) for an answer with a problem document; ``unreachable`` or ``timeout``
    when the server did not answer; ``usage`` when the client was given an unusable URL or API key
    (nothing was sent); ``""`` otherwise (an answer that is not a problem document).
    ``code`` is the CLI exit code (2: the request itself was wrong — unknown workflow, invalid input
    or id, unusable URL or key; 1: anything else) and ``lines`` the lines to print, like
    ``operate.BackendError``.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        problem: dict[str, Any] | None = None,
        lines: list[str] | None = None,
        *,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.problem = problem or {}
        self.lines = lines or [message]
        slug = str(self.problem.get("type", "")).rsplit("/", 1)[-1]
        self.kind = kind if kind is not None else slug
        self.code = (
            2 if status in (400, 413, 422) or slug == "unknown-workflow" or self.kind == "usage" else 1
        )


class HopflowClient:
    """``HopflowClient(url, api_key)``; ``url`` is the server's base URL (``HOPFLOW_URL``)."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = url or os.environ.get("HOPFLOW_URL")
        if not url or not _is_http_url(url):
            # the value is not echoed: a key pasted into the wrong option must not be printed
            raise ClientError(
                "the server URL must be an absolute http(s) URL such as http://127.0.0.1:8000 "
                "(--url or HOPFLOW_URL)",
                kind="usage",
            )
        self.url = url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get("HOPFLOW_API_KEY")
        key = (key or "").strip() or None  # a trailing newline from a key file is not part of it
        if key is not None and not _HEADER_SAFE.fullmatch(key):
            raise ClientError(
                "the API key contains characters an HTTP header cannot carry "
                "(check HOPFLOW_API_KEY / --api-key)",
                kind="usage",
            )
        self._api_key = key
        self.timeout_s = timeout_s
        self._transport = transport
        self._client: httpx.Client | None = None

    def __repr__(self) -> str:
        return f"HopflowClient(url={self.shown_url!r})"

    @property
    def shown_url(self) -> str:
        """The URL as errors show it: without user info, query or fragment."""
        return _shown(self.url)

    # ------------------------------------------------------------------------------- operations

    def start(self, workflow: str, input: Any = None, execution_id: str | None = None) -> str:
        body: dict[str, Any] = {"workflow": workflow, "input": {} if input is None else input}
        if execution_id is not None:
            body["id"] = execution_id
        return str(self._request("POST", "/v1/executions", body)["execution_id"])

    def status(self, execution_id: str) -> dict[str, Any]:
        """The execution's record (status, current nodes, output or error, trace, timestamps)."""
        return dict(self._request("GET", f"/v1/executions/{_segment(execution_id)}"))

    record = status

    def history(self, execution_id: str) -> list[dict[str, Any]]:
        return list(self._request("GET", f"/v1/executions/{_segment(execution_id)}/history")["events"])

    def cancel(self, execution_id: str, *, compensate: bool = True) -> dict[str, Any]:
        path = f"/v1/executions/{_segment(execution_id)}/cancel"
        return dict(self._request("POST", path, None if compensate else {"compensate": False}))

    def notify(self, event: str, key: Any, data: Any = None) -> int:
        """How many waiting executions resumed (0: the event is kept 7 days for the first wait)."""
        return int(self.notify_event(event, key, data)["resumed"])

    def notify_event(
        self, event: str, key: Any, data: Any = None, event_id: str | None = None
    ) -> dict[str, Any]:
        """The whole answer: ``{event, key, id, resumed, kept, started: [execution ids], failed?}``."""
        body: dict[str, Any] = {"key": key, "data": data}
        if event_id is not None:
            body["id"] = event_id
        return dict(self._request("POST", f"/v1/events/{_segment(event)}", body))

    def list_executions(self, params: dict[str, list[str]]) -> dict[str, Any]:
        """One page of ``GET /v1/executions`` (``params``: query name → values)."""
        from urllib.parse import urlencode

        query = urlencode([(k, v) for k, values in params.items() for v in values])
        return dict(self._request("GET", "/v1/executions" + (f"?{query}" if query else "")))

    def counts(self) -> dict[str, Any]:
        return dict(self._request("GET", "/v1/counts"))

    def health(self) -> dict[str, Any]:
        return dict(self._request("GET", "/healthz", auth=False))

    # ------------------------------------------------------------------------------------- HTTP

    def _http(self) -> httpx.Client:
        if self._client is None:
            httpx = lazyimport.httpx()

            self._client = httpx.Client(
                timeout=self.timeout_s, transport=self._transport, follow_redirects=False
            )
        return self._client

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        httpx = lazyimport.httpx()

        headers = {"Accept": "application/json"}
        if auth and self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            response = self._http().request(method, self.url + path, json=body, headers=headers)
        except httpx.TimeoutException:
            raise ClientError(
                f"{self.shown_url} did not answer within {self.timeout_s:g} s", kind="timeout"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ClientError(
                f"cannot reach {self.shown_url} ({self._redact(_reason(exc))})", kind="unreachable"
            ) from None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise ClientError(
                    f"{method} {path}: the server answered {response.status_code} without JSON",
                    response.status_code,
                ) from None
        error = _error(method, path, response, sent_key=bool(auth and self._api_key))
        error.message = self._redact(error.message)
        error.lines = [self._redact(line) for line in error.lines]
        error.args = (error.message,)
        raise error

    def _redact(self, text: str) -> str:
        """Belt and braces: the key is never sent back by hopflow, but nothing echoes it either."""
        key = self._api_key
        return text.replace(key, "***") if key and len(key) >= 4 else text

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> HopflowClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what a bearer token may hold


def _segment(value: str) -> str:
    return quote(str(value), safe="")


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _shown(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _reason(exc: Exception) -> str:
    """``[Errno 111] Connection refused`` → ``connection refused``; the exception's name otherwise."""
    lines = str(exc).strip().splitlines()
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", lines[0]).strip() if lines else ""
    if not text:
        return type(exc).__name__
    text = text[0].lower() + text[1:]
    return text if len(text) <= 160 else text[:159] + "…"


def _error(method: str, path: str, response: httpx.Response, *, sent_key: bool = True) -> ClientError:
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict) or "detail" not in problem:
        text = (
            response.text.strip().splitlines()[0][:200] if response.text.strip() else response.reason_phrase
        )
        return ClientError(f"{method} {path}: HTTP {response.status_code}: {text}", response.status_code)
    detail = str(problem.get("detail"))
    lines = [detail]
    for error in problem.get("errors") or []:
        if isinstance(error, dict):
            lines.append(f"  {error.get('path') or '/'}: {error.get('message')}")
    if response.status_code == 401:
        lines[0] = (
            "the API key was refused (HOPFLOW_API_KEY / --api-key)"
            if sent_key
            else "the server needs an API key (HOPFLOW_API_KEY / --api-key)"
        )
    return ClientError(lines[0], response.status_code, problem, lines)
