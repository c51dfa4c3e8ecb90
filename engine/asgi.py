"""The ASGI entry point a platform imports: ``engine.asgi:app`` (Vercel, Lambda adapters, Cloud Run, uvicorn).

Importing this module loads nothing but the standard library and the problem documents: the app
(Starlette and the routes of :mod:`engine.web`) is built on the first ASGI call, the runtime (Redis,
dispatcher) on the first request that needs it, and the workflow catalog (YAML compilation) only
when an execution starts — a webhook call advances pinned graphs from Redis and never compiles YAML.

The HTTP layer itself lives in :mod:`engine.web` (its ``__init__`` says how its modules depend on
each other); the names below are re-exported from there, loaded on first access.
Every error anywhere is a JSON problem document, unknown routes and methods included.
Details: docs/http-api.md.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from engine.web.problems import NON_RETRYABLE_HEADER, Problem

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engine.web.app import create_app as create_app
    from engine.web.core import HopflowApp as HopflowApp
    from engine.web.openapi import openapi_document as openapi_document
    from engine.web.paths import CALLBACK_PATH as CALLBACK_PATH
    from engine.web.paths import FAILED_PATH as FAILED_PATH
    from engine.web.paths import STEP_PATH as STEP_PATH
    from engine.web.wiring import build_runtime as build_runtime
    from engine.web.wiring import http_delivery as http_delivery
    from engine.web.wiring import local_delivery as local_delivery

log = logging.getLogger("hopflow.asgi")

# names re-exported from the modules that define them, imported on first access (cold starts)
_LAZY = {
    "create_app": "engine.web.app",
    "HopflowApp": "engine.web.core",
    "build_runtime": "engine.web.wiring",
    "http_delivery": "engine.web.wiring",
    "local_delivery": "engine.web.wiring",
    "LazyCatalog": "engine.web.wiring",
    "DeliveryFailed": "engine.web.wiring",
    "openapi_document": "engine.web.openapi",
    "STEP_PATH": "engine.web.paths",
    "FAILED_PATH": "engine.web.paths",
    "CALLBACK_PATH": "engine.web.paths",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.asgi' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


class LazyApp:
    """The ASGI entry point (``engine.asgi:app``): configured from the environment on its first call.

    A configuration error answers every request with a 500 problem document (and logs the exact
    problems once) instead of crashing the import, so the platform shows a readable error.
    """

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        with self._lock:
            if self._app is None:
                from engine.config import ConfigError

                try:
                    from engine.web.app import create_app

                    self._app = create_app()
                except ConfigError as exc:
                    log.error("%s", exc)
                    self._app = _misconfigured_app()
            return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        target = self._app if self._app is not None else self._build()
        await target(scope, receive, send)


def _misconfigured_app() -> Any:
    problem = Problem(
        "misconfigured",
        "the server's configuration is invalid; the server log says "
        "why (run `hopflow doctor` with the same environment)",
    )

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await problem.response(scope.get("path"))(scope, receive, send)

    return asgi


app = LazyApp()

__all__ = [
    "CALLBACK_PATH",
    "FAILED_PATH",
    "NON_RETRYABLE_HEADER",
    "STEP_PATH",
    "HopflowApp",
    "LazyApp",
    "app",
    "build_runtime",
    "create_app",
    "http_delivery",
    "local_delivery",
    "openapi_document",
]
