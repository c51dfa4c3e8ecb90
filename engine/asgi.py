"""The HTTP API as an ASGI app: the entry point a platform imports, and the routes' shared state.

``create_app(runtime=None, *, config=None, ...)`` builds the Starlette app; the module-level
:data:`app` is the entry point a platform imports (``engine.asgi:app``: Vercel, Lambda adapters,
Cloud Run, uvicorn). Importing this module loads nothing but the standard library and
:mod:`engine.problems`: the app (Starlette and the route modules) is built on the first ASGI call,
the runtime (Redis, dispatcher) on the first request that needs it, and the workflow catalog (YAML
compilation) only when an execution starts — a webhook call advances pinned graphs from Redis and
never compiles YAML.

Where things are:

* :mod:`engine.webhook` — ``POST /v1/step``, ``/v1/step/failed``, ``/v1/step/callback``;
* :mod:`engine.api` — ``/v1/executions…``, ``/v1/events/{name}``, ``/healthz``;
* :mod:`engine.auth` — the API key, delivery signatures, the dev bypass;
* :mod:`engine.bodies` — bounded body reading and JSON parsing;
* :mod:`engine.openapi` — ``GET /openapi.json``;
* :mod:`engine.wiring` — :func:`build_runtime` and the local dispatcher's deliveries;
* :mod:`engine.problems` — the problem documents every error is rendered as.

Every error anywhere is a JSON problem document, unknown routes and methods included.
Details: docs/http-api.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from engine.problems import NON_RETRYABLE_HEADER, Problem, for_status

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from engine.auth import DeliveryVerifier
    from engine.config import Config
    from engine.openapi import openapi_document as openapi_document
    from engine.runtime import Runtime
    from engine.webhook import CALLBACK_PATH as CALLBACK_PATH
    from engine.webhook import FAILED_PATH as FAILED_PATH
    from engine.webhook import STEP_PATH as STEP_PATH
    from engine.wiring import build_runtime as build_runtime
    from engine.wiring import http_delivery as http_delivery
    from engine.wiring import local_delivery as local_delivery

log = logging.getLogger("hopflow.asgi")

MAX_ECHO_CHARS = 200  # of a request path echoed in a problem document
RuntimeFactory = Callable[["Config"], "Runtime"]
Handler = Callable[["HopflowApp", "Request"], Awaitable["Response"]]

# names re-exported from the modules that define them, imported on first access (cold starts)
_LAZY = {
    "build_runtime": "engine.wiring",
    "http_delivery": "engine.wiring",
    "local_delivery": "engine.wiring",
    "LazyCatalog": "engine.wiring",
    "DeliveryFailed": "engine.wiring",
    "openapi_document": "engine.openapi",
    "STEP_PATH": "engine.webhook",
    "FAILED_PATH": "engine.webhook",
    "CALLBACK_PATH": "engine.webhook",
    "DEV_WARNING": "engine.auth",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.asgi' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


class HopflowApp:
    """The routes and what they share (config, the lazily built runtime, the verifier, the clock).

    :attr:`app` is the Starlette application; each route is a function ``(hop, request)`` of
    :mod:`engine.webhook`, :mod:`engine.api` or :mod:`engine.openapi`.
    """

    def __init__(
        self,
        runtime: Runtime | None,
        config: Config,
        *,
        runtime_factory: RuntimeFactory | None = None,
        run_local_dispatcher: bool | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.routing import Route

        from engine import api, openapi, webhook
        from engine.auth import DEV_WARNING, DeliveryVerifier, route_path

        self.config = config
        self.now = now
        self.verifier: DeliveryVerifier = DeliveryVerifier(config, now)
        self.local_dispatcher_started = False
        self._runtime = runtime
        self._factory = runtime_factory or _default_factory
        self._built_here = runtime is None
        self._run_local = run_local_dispatcher
        self._lock = threading.Lock()

        routes = [
            Route(webhook.STEP_PATH, self._guard(webhook.step), methods=["POST"]),
            Route(webhook.FAILED_PATH, self._guard(webhook.step_failed), methods=["POST"]),
            Route(webhook.CALLBACK_PATH, self._guard(webhook.step_callback), methods=["POST"]),
            Route("/v1/executions", self._guard(api.start), methods=["POST"]),
            Route("/v1/executions/{execution_id}", self._guard(api.status), methods=["GET"]),
            Route("/v1/executions/{execution_id}/history", self._guard(api.history), methods=["GET"]),
            Route("/v1/executions/{execution_id}/cancel", self._guard(api.cancel), methods=["POST"]),
            Route("/v1/events/{name}", self._guard(api.event), methods=["POST"]),
            Route("/healthz", self._guard(api.healthz), methods=["GET"]),
            Route("/openapi.json", self._guard(openapi.serve), methods=["GET"]),
        ]

        def instance(request: Request) -> str:
            path = route_path(request)  # the caller's own text, echoed back: keep it short
            return path if len(path) <= MAX_ECHO_CHARS else path[:MAX_ECHO_CHARS] + "…"

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            detail = exc.detail if isinstance(exc.detail, str) else None
            if exc.status_code == 404:
                detail = f"no route {request.method} {instance(request)}"
            elif exc.status_code == 405:
                allowed = (exc.headers or {}).get("Allow", "")
                detail = f"{request.method} is not allowed on {instance(request)} (allowed: {allowed})"
            return for_status(exc.status_code, detail, exc.headers).response(instance(request))

        async def problem(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, Problem)
            return exc.response(instance(request))

        async def crash(request: Request, exc: Exception) -> Response:
            # outside any route (routing, middleware): Starlette logs it; the caller gets a problem
            return Problem("internal", "an unexpected error occurred; the server log has details").response()

        self.app: Starlette = Starlette(
            routes=routes,
            exception_handlers={HTTPException: http_error, Problem: problem, Exception: crash},
            lifespan=self._lifespan,
        )
        # "/v1/step/" is not "/v1/step": a 404 problem, not a redirect (built from the Host header)
        self.app.router.redirect_slashes = False
        self.app.state.hopflow = self
        if config.dev_insecure:
            log.warning(DEV_WARNING)

    # -------------------------------------------------------------------------------- lifecycle

    def _lifespan(self, _app: Any) -> Any:
        import contextlib

        @contextlib.asynccontextmanager
        async def lifespan(_a: Any) -> Any:
            from starlette.concurrency import run_in_threadpool

            from engine.auth import DEV_WARNING

            if self.config.dev_insecure:
                log.warning(DEV_WARNING)
            if self.should_run_local():
                runtime = await run_in_threadpool(self.runtime)
                runtime.dispatcher.start()
                self.local_dispatcher_started = True
                log.info("local dispatcher: delivery loop started")
            try:
                yield
            finally:
                if self.local_dispatcher_started and self._runtime is not None:
                    await run_in_threadpool(self._runtime.dispatcher.stop)
                    self.local_dispatcher_started = False

        return lifespan(_app)

    def should_run_local(self) -> bool:
        """Whether this app runs the local dispatcher's delivery loop in its lifespan."""
        if self._run_local is not None:
            return self._run_local
        return self._built_here and self.config.dispatcher_kind == "local"

    def runtime(self) -> Runtime:
        """The runtime, built on first use (thread-safe; a failed build is retried next time)."""
        if self._runtime is not None:
            return self._runtime
        with self._lock:
            if self._runtime is None:
                self._runtime = self._factory(self.config)
            return self._runtime

    async def runtime_async(self) -> Runtime:
        """:meth:`runtime` from a handler: built in a worker thread; a failure is a 500 problem."""
        if self._runtime is not None:
            return self._runtime
        from starlette.concurrency import run_in_threadpool

        try:
            return await run_in_threadpool(self.runtime)
        except Problem:
            raise
        except Exception as exc:
            log.error("cannot build the runtime: %s: %s", type(exc).__name__, self.config.redact(str(exc)))
            raise Problem(
                "misconfigured",
                "the runtime could not be started; the server log says why "
                "(run `hopflow doctor` where the server runs)",
            ) from None

    async def body(self, request: Request) -> bytes:
        """The raw request body within the configured size and time bounds (413, 408, 400)."""
        from engine.bodies import read_body

        return await read_body(request, self.config.max_body_bytes, timeout_s=self.config.body_timeout_s)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking runtime call in the threadpool, mapping transient faults to 503."""
        from starlette.concurrency import run_in_threadpool

        from engine.dispatch import DispatchError
        from engine.errors import StoreUnavailable

        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        except StoreUnavailable as exc:
            log.warning("store unavailable: %s", self.config.redact(exc.message))
            raise Problem("unavailable", "Redis is unreachable; try again later") from None
        except DispatchError as exc:
            log.warning("dispatch failed: %s", self.config.redact(str(exc)))
            raise Problem(
                "unavailable",
                "the dispatcher could not publish; the outbox is kept and "
                "re-published by the next delivery or `hopflow recover`",
            ) from None

    def _guard(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Bind a route to this app; unexpected exceptions become a logged 500 (no traceback or secret)."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(self, request)
            except Problem:
                raise
            except Exception:
                import traceback

                from engine.auth import route_path

                log.error(
                    "unhandled error in %s %s\n%s",
                    request.method,
                    route_path(request),
                    self.config.redact(traceback.format_exc()),
                )
                raise Problem(
                    "internal", "an unexpected error occurred; the server log has details"
                ) from None

        guarded.__name__ = getattr(handler, "__name__", "handler")
        return guarded


def _default_factory(config: Config) -> Runtime:
    from engine.wiring import build_runtime

    return build_runtime(config)


def create_app(
    runtime: Runtime | None = None,
    *,
    config: Config | None = None,
    runtime_factory: RuntimeFactory | None = None,
    run_local_dispatcher: bool | None = None,
    now: Callable[[], float] = time.time,
) -> Starlette:
    """The Starlette app. Without ``runtime``, one is built from ``config`` on first use.

    ``config`` defaults to :meth:`Config.from_env` (ConfigError lists every problem).
    ``run_local_dispatcher`` (default: when the app builds its own runtime and QStash is not
    configured) starts the local dispatcher's delivery loop in the app's lifespan. ``now`` is the
    clock for signature checks (tests).
    """
    from engine.config import Config

    cfg = config if config is not None else Config.from_env()
    return HopflowApp(
        runtime, cfg, runtime_factory=runtime_factory, run_local_dispatcher=run_local_dispatcher, now=now
    ).app


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
