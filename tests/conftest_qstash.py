"""Shared helpers for the QStash tests: a real recording HTTP endpoint on 127.0.0.1 and signature checks.

Import explicitly (``from conftest_qstash import ...``); pytest does not load this file by itself.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from qstash import Receiver

from engine.signing import verify_qstash


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # with the query string, as requested
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float  # time.time() when the request arrived


Reply = tuple[int, dict[str, str], bytes]
Responder = Callable[[Recorded], Reply]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up (timeouts)
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class Endpoint:
    """A threaded HTTP server that records every request and answers with ``responder``."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or (lambda _r: (200, {}, b"ok"))
        self.requests: list[Recorded] = []
        self._cond = threading.Condition()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                               body, time.time())
                with endpoint._cond:
                    endpoint.requests.append(rec)
                    endpoint._cond.notify_all()
                status, headers, payload = endpoint.responder(rec)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def on(self, path: str) -> list[Recorded]:
        """Requests whose path (without query) is ``path``."""
        with self._cond:
            return [r for r in self.requests if urlsplit(r.path).path == path]

    def wait_for(self, count: int, path: str | None = None, timeout_s: float = 10.0) -> list[Recorded]:
        """Block until ``count`` requests (to ``path``) arrived; fail loudly otherwise."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                got = [r for r in self.requests if path is None or urlsplit(r.path).path == path]
                if len(got) >= count:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} requests to {path or 'any path'}, got {len(got)}")
                self._cond.wait(remaining)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def endpoint(responder: Responder | None = None) -> Iterator[Endpoint]:
    ep = Endpoint(responder)
    try:
        yield ep
    finally:
        ep.close()


def assert_qstash_signed(ep: Endpoint, current: str, nxt: str) -> int:
    """Every request ``ep`` received carries a QStash signature both verifiers accept for its URL."""
    receiver = Receiver(current, nxt)
    for rec in ep.requests:
        url = ep.url + rec.path
        token = rec.headers["upstash-signature"]
        receiver.verify(signature=token, body=rec.body.decode(), url=url)
        verify_qstash(token, rec.body, url, [current, nxt], tolerance_s=0)
    return len(ep.requests)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
