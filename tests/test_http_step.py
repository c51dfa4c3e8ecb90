"""The http executor against a real server on 127.0.0.1 (real sockets, no mocks)."""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from engine.egress import EgressPolicy
from engine.model import StepContext, StepFailure
from engine.steps import http

SEEN: list[dict[str, Any]] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        SEEN.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        path = self.path.split("?", 1)[0]
        if path == "/json":
            self._reply(200, b'{"tables": [{"id": "t1"}]}', {"Content-Type": "application/json"})
        elif path == "/text":
            self._reply(200, b"hello", {"Content-Type": "text/plain"})
        elif path == "/echo":
            out = json.dumps(
                {"path": self.path, "body": body.decode(), "ctype": self.headers.get("Content-Type")}
            ).encode()
            self._reply(200, out, {"Content-Type": "application/json"})
        elif path.startswith("/status/"):
            self._reply(
                int(path.rsplit("/", 1)[1]), b'{"error": "nope"}', {"Content-Type": "application/json"}
            )
        elif path == "/retry-seconds":
            self._reply(429, b"slow down", {"Retry-After": "7"})
        elif path == "/retry-date":
            when = email.utils.formatdate(time.time() + 120, usegmt=True)
            self._reply(503, b"", {"Retry-After": when})
        elif path == "/retry-garbage":
            self._reply(503, b"", {"Retry-After": "soon-ish"})
        elif path == "/retry-on-500":
            self._reply(500, b"", {"Retry-After": "7"})
        elif path == "/redirect":
            self._reply(302, b"", {"Location": "/json"})
        elif path == "/slow":
            time.sleep(1.0)
            self._reply(200, b"late")
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
        elif path == "/huge":
            self._reply(200, b"x" * (http.MAX_BODY_BYTES + 1))
        elif path == "/huge-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"y" * 65536
            try:
                for _ in range(http.MAX_BODY_BYTES // len(chunk) + 2):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
        elif path == "/secret-echo":
            self._reply(401, b"denied", {"Content-Type": "text/plain"})
        else:
            self._reply(404, b"not here")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client hanging up on /huge is the point of those tests


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    http.close_client()


def ctx() -> StepContext:
    return StepContext("exec-1", "call", 1, "exec-1:call", time.time() + 30)


# the server is on 127.0.0.1: these tests allow loopback (tests/test_egress.py tests the refusals)
LOOPBACK = EgressPolicy(allow_loopback=True)


def run(config: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    return http.execute(config, ctx(), timeout_s=timeout_s, egress=LOOPBACK)


def fail(config: dict[str, Any], timeout_s: float = 5.0) -> Any:
    with pytest.raises(StepFailure) as info:
        run(config, timeout_s)
    return info.value.error


def test_json_response_is_parsed(server: str) -> None:
    out = run({"method": "GET", "url": f"{server}/json"})
    assert out["status"] == 200
    assert out["json"] == {"tables": [{"id": "t1"}]}
    assert out["headers"]["content-type"] == "application/json"
    assert json.loads(out["text"]) == out["json"]


def test_text_response_has_no_json(server: str) -> None:
    out = run({"method": "GET", "url": f"{server}/text"})
    assert out == {"status": 200, "headers": out["headers"], "json": None, "text": "hello"}


def test_idempotency_key_query_and_json_body(server: str) -> None:
    SEEN.clear()
    out = run(
        {
            "method": "POST",
            "url": f"{server}/echo",
            "query": {"a": 1, "b": [True, "x"], "skip": None},
            "json": {"party": 4, "at": "2030-01-01T19:00:00+00:00"},
            "headers": {"X-Count": 3},
        }
    )
    assert out["json"]["path"] == "/echo?a=1&b=true&b=x"
    assert json.loads(out["json"]["body"]) == {"party": 4, "at": "2030-01-01T19:00:00+00:00"}
    assert out["json"]["ctype"] == "application/json"
    sent = SEEN[-1]["headers"]
    assert sent["Idempotency-Key"] == "exec-1:call"
    assert sent["X-Count"] == "3"
    assert sent["User-Agent"].startswith("hopflow/")


def test_explicit_idempotency_key_wins(server: str) -> None:
    SEEN.clear()
    run({"method": "POST", "url": f"{server}/echo", "headers": {"idempotency-key": "mine"}, "body": "raw"})
    headers = {k.lower(): v for k, v in SEEN[-1]["headers"].items()}
    assert headers["idempotency-key"] == "mine"
    assert SEEN[-1]["body"] == b"raw"


def test_non_2xx_fails_with_exact_status_name(server: str) -> None:
    err = fail({"method": "GET", "url": f"{server}/status/404"})
    assert err.name == "http.404"
    assert "GET" in err.message and "/status/404" in err.message and "nope" in err.message
    assert err.retry_after_ms is None
    assert fail({"method": "DELETE", "url": f"{server}/status/502"}).name == "http.502"


def test_expect_decides_success(server: str) -> None:
    out = run({"method": "GET", "url": f"{server}/status/404", "expect": [200, 404]})
    assert out["status"] == 404 and out["json"] == {"error": "nope"}
    assert fail({"method": "GET", "url": f"{server}/status/201", "expect": [200]}).name == "http.201"


def test_redirects_followed_unless_expected(server: str) -> None:
    assert run({"method": "GET", "url": f"{server}/redirect"})["json"] == {"tables": [{"id": "t1"}]}
    out = run({"method": "GET", "url": f"{server}/redirect", "expect": [302]})
    assert out["status"] == 302 and out["headers"]["location"] == "/json"


def test_retry_after_seconds(server: str) -> None:
    err = fail({"method": "GET", "url": f"{server}/retry-seconds"})
    assert err.name == "http.429"
    assert err.retry_after_ms == 7000


def test_retry_after_http_date(server: str) -> None:
    err = fail({"method": "GET", "url": f"{server}/retry-date"})
    assert err.name == "http.503"
    assert 100_000 <= err.retry_after_ms <= 121_000


def test_retry_after_garbage_and_other_statuses_are_ignored(server: str) -> None:
    assert fail({"method": "GET", "url": f"{server}/retry-garbage"}).retry_after_ms is None
    assert fail({"method": "GET", "url": f"{server}/retry-on-500"}).retry_after_ms is None


def test_parse_retry_after_unit() -> None:
    now = 1_700_000_000.0
    assert http.parse_retry_after("0") == 0
    assert http.parse_retry_after(" 3 ") == 3000
    assert http.parse_retry_after("-5") == 0
    assert http.parse_retry_after(email.utils.formatdate(now + 10, usegmt=True), now=now) == 10_000
    assert http.parse_retry_after(email.utils.formatdate(now - 10, usegmt=True), now=now) == 0
    assert http.parse_retry_after("nan") is None
    assert http.parse_retry_after("") is None
    assert http.parse_retry_after(None) is None


def test_connection_refused_is_http_connect() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    err = fail({"method": "GET", "url": f"http://user:hunter2@127.0.0.1:{port}/x?token=s3cret"})
    assert err.name == "http.connect"
    assert "hunter2" not in err.message and "s3cret" not in err.message
    assert f"127.0.0.1:{port}/x" in err.message


def test_timeout_waiting_for_response(server: str) -> None:
    err = fail({"method": "GET", "url": f"{server}/slow"}, timeout_s=0.2)
    assert err.name == "timeout"


def test_timeout_bounds_a_dripping_body(server: str) -> None:
    # each byte arrives well within the read timeout, but the whole body cannot make the deadline
    err = fail({"method": "GET", "url": f"{server}/drip"}, timeout_s=0.5)
    assert err.name == "timeout"


def test_body_size_cap_by_content_length(server: str) -> None:
    err = fail({"method": "GET", "url": f"{server}/huge"})
    assert err.name == "http.too_large"


def test_body_size_cap_when_streamed(server: str) -> None:
    err = fail({"method": "GET", "url": f"{server}/huge-chunked"})
    assert err.name == "http.too_large"


def test_secrets_do_not_leak_into_errors(server: str) -> None:
    err = fail(
        {
            "method": "GET",
            "url": f"{server}/secret-echo?api_key=topsecret",
            "headers": {"Authorization": "Bearer topsecret-token"},
        }
    )
    assert err.name == "http.401"
    assert "topsecret" not in err.message


def test_malformed_requests_are_not_retryable_errors(server: str) -> None:
    assert fail({"method": "GET", "url": "ftp://127.0.0.1/x"}).name == "http.request"
    assert fail({"method": "GET", "url": ""}).name == "http.request"
    assert fail({"method": "BREW", "url": f"{server}/json"}).name == "http.request"
    assert fail({"method": "GET", "url": f"{server}/json", "headers": "nope"}).name == "http.request"


def test_head_and_empty_bodies(server: str) -> None:
    out = run({"method": "HEAD", "url": f"{server}/json"})
    assert out["status"] == 200 and out["text"] == "" and out["json"] is None


def test_client_is_reused() -> None:
    assert http.client() is http.client()


def test_importing_the_module_does_not_import_httpx() -> None:
    import subprocess
    import sys

    code = "import sys, engine.steps.http; print('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
