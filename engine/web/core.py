"""The app core: what every route shares, and nothing about which routes exist.

Routes depend on this module (for typing only); it never imports a route. Starlette, Redis and the
runtime load on first use, so importing it is cheap (serverless cold starts).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from engine.web.auth import DeliveryVerifier, route_path
from engine.web.problems import Problem

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from engine.config import Config
    from engine.runtime import Runtime
    from engine.schedules import Scheduler

log = logging.getLogger("hopflow.asgi")

RuntimeFactory = Callable[["Config"], "Runtime"]
Handler = Callable[["HopflowApp", "Request"], Awaitable["Response"]]


class HopflowApp:
    """What the routes share: config, the lazily built runtime, the verifier, the clock.

    Each route is a function ``(hop, request)`` of :mod:`engine.web.webhook`, :mod:`engine.web.api`
    or :mod:`engine.web.openapi`; :meth:`guard` binds one to this object. :attr:`app` is the
    Starlette application :func:`engine.web.app.create_app` built around it.
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
        self.config = config
        self.now = now
        self.verifier: DeliveryVerifier = DeliveryVerifier(config, now)
        self.local_dispatcher_started = False
        self._runtime = runtime
        if runtime is not None:
            self._observe(runtime)
        self._factory = runtime_factory or _default_factory
        self._built_here = runtime is None
        self._run_local = run_local_dispatcher
        self._lock = threading.Lock()
        self.app: Starlette | None = None  # set by engine.web.app.create_app
        self.scheduler: Scheduler | None = None  # fires `schedules` alongside the local dispatcher
        self.schedules_sync: threading.Thread | None = None  # HOPFLOW_SCHEDULES_SYNC=1 with QStash

    # -------------------------------------------------------------------------------- lifecycle

    def lifespan(self, _app: Any) -> Any:
        import contextlib

        @contextlib.asynccontextmanager
        async def lifespan(_a: Any) -> Any:
            from starlette.concurrency import run_in_threadpool

            if self.should_run_local():
                runtime = await run_in_threadpool(self.runtime)
                runtime.dispatcher.start()
                self.local_dispatcher_started = True
                log.info("local dispatcher: delivery loop started")
                from engine.schedules import Scheduler  # lazily: a webhook-only cold start skips it

                self.scheduler = Scheduler(runtime)  # the workflows' `schedules` fire here too
                self.scheduler.start()
            elif self.config.schedules_sync and self.config.dispatcher_kind == "qstash":
                self.schedules_sync = threading.Thread(
                    target=self._sync_schedules, name="hopflow-schedules-sync", daemon=True
                )
                self.schedules_sync.start()  # in the background: startup never waits on QStash
            try:
                yield
            finally:
                if self.scheduler is not None:
                    await run_in_threadpool(self.scheduler.stop)
                    self.scheduler = None
                if self.local_dispatcher_started and self._runtime is not None:
                    await run_in_threadpool(self._runtime.dispatcher.stop)
                    self.local_dispatcher_started = False

        return lifespan(_app)

    def _sync_schedules(self) -> None:
        """HOPFLOW_SCHEDULES_SYNC=1: make QStash hold exactly the declared schedules (docs/schedules.md)."""
        from engine.schedule_sync import sync_from_config

        try:
            changes = sync_from_config(self.config, self.runtime().catalog)
        except Exception as exc:  # the server still serves; the log says why, `schedules sync` retries
            problem = self.config.redact(f"{type(exc).__name__}: {exc}")
            log.error("schedules sync at startup failed: %s", problem)
            return
        done = [c.describe() for c in changes if c.action != "unchanged"]
        log.info("schedules sync at startup: %d change(s)%s", len(done), "".join(f"\n  {d}" for d in done))

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
                runtime = self._factory(self.config)
                self._observe(runtime)
                self._runtime = runtime
            return self._runtime

    def _observe(self, runtime: Runtime) -> None:
        """Metrics from the start when configured (``HOPFLOW_METRICS=1``; otherwise the first
        ``/metrics`` scrape switches them on, so an app nobody scrapes never imports them)."""
        if self.config.metrics and hasattr(runtime, "observers"):
            from engine.observe.metrics import enable

            enable(runtime)
        if self.config.traces and hasattr(runtime, "observers"):
            from engine.observe.traces import enable as enable_traces

            enable_traces(runtime)

    async def runtime_async(self) -> Runtime:
        """:meth:`runtime` from a handler: built in a worker thread; a failure is a 500 problem."""
        if self._runtime is not None:
            return self._runtime
        from starlette.concurrency import run_in_threadpool

        from engine.embedded import RedisUnreachable

        try:
            return await run_in_threadpool(self.runtime)
        except Problem:
            raise
        except RedisUnreachable as exc:  # transient: 503, and the next request builds again
            log.warning("cannot build the runtime: %s", self.config.redact(str(exc)))
            raise Problem("unavailable", "Redis is unreachable; try again later") from None
        except Exception as exc:
            log.error("cannot build the runtime: %s: %s", type(exc).__name__, self.config.redact(str(exc)))
            raise Problem(
                "misconfigured",
                "the runtime could not be started; the server log says why "
                "(run `hopflow doctor` where the server runs)",
            ) from None

    async def body(self, request: Request, limit: int | None = None) -> bytes:
        """The raw request body within the configured size (or ``limit``) and time bounds (413, 408,
        400)."""
        from engine.web.bodies import read_body

        bound = self.config.max_body_bytes if limit is None else limit
        return await read_body(request, bound, timeout_s=self.config.body_timeout_s)

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

    def guard(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Bind a route to this app; unexpected exceptions become a logged 500 (no traceback or secret)."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(self, request)
            except Problem:
                raise
            except Exception:
                import traceback

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
    from engine.web.wiring import build_runtime

    return build_runtime(config)
