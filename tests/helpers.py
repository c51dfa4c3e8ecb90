"""Helpers shared by several test modules; import explicitly (``from helpers import ...``)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

# a workflow the HTTP API tests drive: input validation, a template, an event wait, an output
GREET = """
name: greet
input:
  type: object
  required: [name]
  additionalProperties: false
  properties:
    name: {type: string, minLength: 1}
    times: {type: integer, minimum: 1}
steps:
  - id: hello
    set: {greeting: "Hello {{ input.name }}"}
  - id: wait_ok
    wait: {event: greet.ok, key: "{{ input.name }}"}
  - id: done
    succeed:
      output: {greeting: "{{ vars.greeting }}", ok: "{{ steps.wait_ok.output }}"}
"""


@contextlib.contextmanager
def serve_app(make_app: Callable[[str], Any], start_timeout_s: float) -> Iterator[str]:
    """uvicorn in a thread on 127.0.0.1 and a random port; the app is made once its URL is known.

    ``start_timeout_s`` only stops a server that never starts from hanging the suite.
    """
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(make_app(url), log_level="warning", lifespan="on", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
