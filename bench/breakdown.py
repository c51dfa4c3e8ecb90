"""Where a webhook call's time goes: exclusive time per category inside the hopflow server (bench only).

``bench/results.py`` runs the hopflow server as ``python bench/breakdown.py PORT``: this module
installs itself, then uvicorn imports ``engine.asgi:app``. It wraps a handful of functions with
timers and serves the running totals as JSON on a second loopback port (``BENCH_BREAKDOWN_PORT``),
so the bench can take the difference around the runs it cares about. Categories (exclusive: a
category's time excludes the time of any category running inside it, so the categories of one call
add up to its total; each is kept twice: wall time, and CPU time of the thread that ran it):

* ``framework`` — the ASGI call of ``POST /v1/step`` minus everything below: uvicorn → Starlette
  → the request guard → the route function's own code;
* ``body`` — reading the request body (``HopflowApp.body``);
* ``jwt`` — verifying the ``Upstash-Signature`` (``engine.signing.verify_qstash`` and the verifier);
* ``json`` — every ``json.loads``/``json.dumps`` (the body, payloads stored in Redis, the answer);
* ``thread hop`` — ``HopflowApp.call``: handing the runtime call to the thread pool and back;
* ``interpreter`` — ``Runtime.advance``'s own Python (rendering, decisions, building scripts' args);
* ``redis`` — redis-py commands, scripts and pipelines, round trip included;
* ``publish`` — the QStash publish (``QStashDispatcher._request``: httpx, the HTTP round trip).

Only calls to ``/v1/step`` are counted (``calls``); everything else the server does (the API the
bench uses to start executions) runs outside a counted call and is ignored. The context of each
call travels into the thread pool with the request (``contextvars``, as anyio copies it), so time
spent in a worker thread is attributed to the call that asked for it.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CATEGORIES = ("framework", "body", "jwt", "json", "thread hop", "interpreter", "redis", "publish")

_lock = threading.Lock()
_totals: dict[str, float] = dict.fromkeys(CATEGORIES, 0.0)  # exclusive wall seconds
_cpu: dict[str, float] = dict.fromkeys(CATEGORIES, 0.0)  # exclusive CPU seconds of the calling thread
_counts = {"calls": 0, "redis_calls": 0, "publishes": 0, "json_calls": 0}


class _Frame:
    __slots__ = ("category", "child", "child_cpu", "cpu", "start", "thread")

    def __init__(self, category: str) -> None:
        self.category, self.child, self.start = category, 0.0, time.perf_counter()
        self.thread, self.child_cpu, self.cpu = threading.get_ident(), 0.0, time.thread_time()

    def close(self, parent: _Frame | None) -> None:
        """Add this frame's exclusive wall and CPU time to its category, its total to its parent's
        children (CPU only when the parent runs on the same thread: thread_time is per thread)."""
        elapsed = time.perf_counter() - self.start
        cpu = time.thread_time() - self.cpu
        if parent is not None:
            parent.child += elapsed
            if parent.thread == self.thread:
                parent.child_cpu += cpu
        with _lock:
            _totals[self.category] += elapsed - self.child
            _cpu[self.category] += cpu - self.child_cpu


_stack: contextvars.ContextVar[tuple[_Frame, ...]] = contextvars.ContextVar("bench_breakdown", default=())


def _enter(category: str) -> tuple[_Frame, contextvars.Token[tuple[_Frame, ...]]] | None:
    stack = _stack.get()
    if not stack:  # not inside a counted webhook call
        return None
    frame = _Frame(category)
    return frame, _stack.set((*stack, frame))


def _leave(entered: tuple[_Frame, contextvars.Token[tuple[_Frame, ...]]] | None) -> None:
    if entered is None:
        return
    frame, token = entered
    _stack.reset(token)
    parent = _stack.get()
    frame.close(parent[-1] if parent else None)


def _timed(category: str, counter: str | None, fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            entered = _enter(category)
            try:
                return await fn(*args, **kwargs)
            finally:
                _leave(entered)

        return awrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        entered = _enter(category)
        if entered is not None and counter is not None:
            with _lock:
                _counts[counter] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _leave(entered)

    return wrapper


def _patch(owner: Any, name: str, category: str, counter: str | None = None) -> None:
    setattr(owner, name, _timed(category, counter, getattr(owner, name)))


def _root(app: Any, path: str) -> Any:
    """The ASGI app, with each call to ``path`` counted as a root frame (``framework``)."""

    async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("path") != path:
            await app(scope, receive, send)
            return
        frame = _Frame("framework")
        token = _stack.set((frame,))
        try:
            await app(scope, receive, send)
        finally:
            _stack.reset(token)
            frame.close(None)
            with _lock:
                _counts["calls"] += 1

    return counted


def snapshot() -> dict[str, Any]:
    with _lock:
        return {
            "totals_s": dict(_totals),
            "cpu_s": dict(_cpu),
            "process_cpu_s": time.process_time(),
            **_counts,
        }


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(snapshot()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def install(port: int) -> None:
    """Wrap the timed functions and serve :func:`snapshot` on ``127.0.0.1:port``."""
    import redis
    import redis.client

    import engine.asgi
    import engine.signing
    import engine.web.auth
    from engine.dispatch.qstash import QStashDispatcher
    from engine.runtime import Runtime
    from engine.web.core import HopflowApp
    from engine.web.paths import STEP_PATH

    _patch(json, "loads", "json", "json_calls")
    _patch(json, "dumps", "json", "json_calls")
    _patch(redis.Redis, "execute_command", "redis", "redis_calls")
    _patch(redis.client.Pipeline, "execute", "redis", "redis_calls")
    _patch(QStashDispatcher, "_request", "publish", "publishes")
    _patch(Runtime, "advance", "interpreter")
    _patch(HopflowApp, "call", "thread hop")
    _patch(HopflowApp, "body", "body")
    _patch(engine.signing, "verify_qstash", "jwt")
    if hasattr(engine.web.auth, "verify_qstash"):  # imported by name there
        _patch(engine.web.auth, "verify_qstash", "jwt")
    verifier = getattr(engine.web.auth, "DeliveryVerifier", None)
    if verifier is not None and hasattr(verifier, "verify"):
        _patch(verifier, "verify", "jwt")
    engine.asgi.app = _root(engine.asgi.app, STEP_PATH)
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="bench-breakdown").start()


if __name__ == "__main__":  # pragma: no cover - run as the server: python bench/breakdown.py APP PORT
    import sys

    import uvicorn

    # run as a script, this folder is sys.path[0], and bench/engine.py would shadow the engine package
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(here))
    install(int(os.environ["BENCH_BREAKDOWN_PORT"]))
    uvicorn.run(
        "engine.asgi:app",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
    )
