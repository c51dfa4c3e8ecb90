"""A small HTTP/1.1 client for one origin with kept-alive connections (the QStash publish path).

Every node a webhook call advances ends with one POST to QStash, on the critical path of the next
node. Through httpx that POST cost ~300 µs of client CPU on loopback against ~55 µs with the
standard library's ``http.client`` on a reused connection (bench/README.md, "2026-12-02"), and
importing httpx is tens of milliseconds of a cold start. The publisher needs little: POST bytes
with headers to one origin, read the status, headers and body, keep the connection for the next
call. That is all this module does; :mod:`engine.dispatch.qstash` falls back to httpx when a proxy
is configured (httpx honours ``HTTPS_PROXY`` and friends) or when a caller hands it a client.

Connections are pooled (one per concurrent caller, a few kept idle) and guarded by a lock, so the
webhook's worker threads can publish at once. A kept-alive connection the server has closed
meanwhile fails on its next use; that one request is repeated at once on a new connection (every
request this module carries is idempotent: QStash deduplicates publishes by their id). HTTPS uses
one TLS context per process, built on first use: the system's trust store plus certifi's bundle when
installed (what httpx trusts).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

_ssl_lock = threading.Lock()
_ssl_context: Any = None
# what a request target may carry unencoded: RFC 3986's reserved characters and "%" (already encoded)
_SAFE = "!#$%&'()*+,/:;=?@[]~"


class TransportError(Exception):
    """The request got no answer: the connection failed, was reset, or the answer was malformed."""


class Timeout(TransportError):
    """Connecting or waiting for the answer took longer than the timeout."""


class Response:
    """What the caller reads of an answer (the few attributes of ``httpx.Response`` it used)."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = dict(headers)
        self.content = content

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


def tls_context() -> Any:
    """One client TLS context per process (building one costs ~20 ms of CPU: never per request)."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            import ssl

            context = ssl.create_default_context()
            try:
                import certifi

                context.load_verify_locations(certifi.where())
            except (ImportError, OSError):  # the system's trust store alone
                pass
            _ssl_context = context
        return _ssl_context


class Pool:
    """Kept-alive connections to the origin of ``base_url``; :meth:`post` is thread-safe."""

    def __init__(self, base_url: str, timeout_s: float, *, max_idle: int = 8) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body`` to ``path`` (below the base URL's path); Timeout/TransportError when no answer."""
        target = quote(self.prefix + path, safe=_SAFE)
        conn, reused = self._take()
        try:
            return self._exchange(conn, target, body, headers)
        except _Stale:
            if not reused:
                raise TransportError("the connection was closed before the answer") from None
            # the server closed this idle connection meanwhile: once more on a new connection
            return self._exchange(self._connect(), target, body, headers)

    def _exchange(
        self, conn: http.client.HTTPConnection, target: str, body: bytes, headers: Mapping[str, str]
    ) -> Response:
        try:
            if conn.sock is None:
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.request("POST", target, body=body, headers=dict(headers))
            answer = conn.getresponse()
            content = answer.read()
        except TimeoutError:
            conn.close()
            raise Timeout("no answer within the timeout") from None
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            conn.close()
            raise _Stale from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransportError(type(exc).__name__) from None
        response = Response(answer.status, dict(answer.getheaders()), content)
        if answer.will_close:
            conn.close()
        else:
            self._give(conn)
        return response

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _connect(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout_s, context=tls_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Stale(Exception):
    """A kept-alive connection turned out closed by the server (reset, or closed before answering)."""
