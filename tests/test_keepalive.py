"""engine.dispatch.keepalive: the publish transport keeps connections, survives a server closing an
idle one, times out, and the dispatcher falls back to httpx when a proxy applies (real sockets)."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from engine.dispatch import DispatchError, keepalive
from engine.dispatch.qstash import QStashDispatcher, _proxied
from engine.model import Message, Outgoing

TOKEN = "test-token-keepalive"


class Http11:
    """An HTTP/1.1 server on loopback that answers every request 200 on the same connection and
    counts connections; ``close_after`` answers that many requests on a connection, then closes it
    without saying so (as a server dropping an idle keep-alive connection does)."""

    def __init__(self, close_after: int | None = None, silent: bool = False) -> None:
        self.connections = 0
        self.targets: list[str] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                outer.connections += 1
                served = 0
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    outer.targets.append(line.split(b" ")[1].decode())
                    length = 0
                    while (header := self.rfile.readline()) not in (b"\r\n", b""):
                        name, _, value = header.decode().partition(":")
                        if name.lower() == "content-length":
                            length = int(value)
                    self.rfile.read(length)
                    if silent:
                        threading.Event().wait(2)
                        return
                    body = json.dumps({"messageId": f"m{len(outer.targets)}"}).encode()
                    self.wfile.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    self.wfile.flush()
                    served += 1
                    if close_after is not None and served >= close_after:
                        return

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def http11(**kwargs: object) -> Iterator[Http11]:
    server = Http11(**kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.close()


def message(i: int) -> Outgoing:
    return Outgoing(Message(f"exec-{i}", "step", 1))


def test_publishes_reuse_one_connection() -> None:
    with http11() as server:
        d = QStashDispatcher(TOKEN, server.url, "https://w.example/v1/step")
        for i in range(5):
            d.publish([message(i)])
        d.close()
    assert server.connections == 1
    assert server.targets == ["/v2/publish/https://w.example/v1/step"] * 5


def test_a_connection_the_server_closed_is_replaced_at_once() -> None:
    with http11(close_after=1) as server:
        d = QStashDispatcher(TOKEN, server.url, "https://w.example/v1/step", max_attempts=1)
        for i in range(3):  # max_attempts=1: only the transport's own retry can save these
            d.publish([message(i)])
        d.close()
    assert server.connections == 3 and len(server.targets) == 3


def test_no_answer_within_the_timeout_is_a_dispatch_error() -> None:
    with http11(silent=True) as server:
        d = QStashDispatcher(TOKEN, server.url, "https://w.example/v1/step", max_attempts=1, timeout_s=0.2)
        with pytest.raises(DispatchError, match="did not answer in time"):
            d.publish([message(1)])
        d.close()


def test_a_refused_connection_names_the_url_and_never_the_token() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    pool = keepalive.Pool(f"http://127.0.0.1:{port}", 1.0)
    with pytest.raises(keepalive.TransportError):
        pool.post("/v2/publish/x", b"{}", {"Authorization": f"Bearer {TOKEN}"})


def test_request_targets_are_percent_encoded_and_keep_the_base_path() -> None:
    with http11() as server:
        pool = keepalive.Pool(server.url + "/qstash/", 2.0)
        answer = pool.post("/v2/publish/https://api.example/a b/é?x=1", b"{}", {})
        pool.close()
    assert answer.is_success and answer.json() == {"messageId": "m1"}
    assert server.targets == ["/qstash/v2/publish/https://api.example/a%20b/%C3%A9?x=1"]


def test_a_proxy_variable_switches_the_dispatcher_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    assert not _proxied("https://qstash.upstash.io")
    d = QStashDispatcher(TOKEN, "https://qstash.upstash.io", "https://w.example/v1/step")
    assert isinstance(d._http(), keepalive.Pool)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert _proxied("https://qstash.upstash.io")
    assert not _proxied("http://127.0.0.1:8080")  # another scheme's proxy is not set
    proxied = QStashDispatcher(TOKEN, "https://qstash.upstash.io", "https://w.example/v1/step")
    assert not isinstance(proxied._http(), keepalive.Pool)  # httpx, which goes through the proxy
    proxied.close()
    monkeypatch.setenv("NO_PROXY", "qstash.upstash.io")
    assert not _proxied("https://qstash.upstash.io")
