"""The composition root: the route table and the Starlette app around a :class:`HopflowApp`.

The only module of the HTTP layer that knows every route; nothing imports it but the entry point
(:mod:`engine.asgi`), ``hopflow serve`` and tests. Starlette loads when an app is built, not at import.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from engine.web import webhook
from engine.web.auth import route_path
from engine.web.core import HopflowApp, RuntimeFactory
from engine.web.guard import RequestGuard
from engine.web.paths import CALLBACK_PATH, FAILED_PATH, STEP_PATH
from engine.web.problems import Problem, for_status
from engine.web.ui import assets

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from engine.config import Config
    from engine.runtime import Runtime

log = logging.getLogger("hopflow.asgi")

MAX_ECHO_CHARS = 200  # of a request path echoed in a problem document


def later(module: str, name: str) -> Callable[[HopflowApp, Request], Awaitable[Response]]:
    """A handler whose module is imported on its first request: the operations API, the OpenAPI
    document and the UI's views are never needed by a webhook call, and a cold start should not pay
    for them (only the webhook routes are imported with the app)."""
    loaded: list[Any] = []

    async def handler(hop: HopflowApp, request: Request) -> Response:
        if not loaded:
            loaded.append(getattr(importlib.import_module(module), name))
        response: Response = await loaded[0](hop, request)
        return response

    handler.__name__ = name
    return handler


def routes(hop: HopflowApp) -> list[Any]:
    """Every route of the app, each bound to ``hop`` by :meth:`HopflowApp.guard`."""
    from starlette.routing import Route

    guard = hop.guard
    view, catalogue = "engine.web.ui.view", "engine.web.ui.catalogue"
    api, metrics, resume = "engine.web.api", "engine.web.metrics", "engine.web.resume"
    return [
        Route(STEP_PATH, guard(webhook.step), methods=["POST"]),
        Route(FAILED_PATH, guard(webhook.step_failed), methods=["POST"]),
        Route(CALLBACK_PATH, guard(webhook.step_callback), methods=["POST"]),
        Route("/v1/executions", guard(later(api, "executions")), methods=["GET", "POST"]),
        Route("/v1/counts", guard(later(api, "counts")), methods=["GET"]),
        Route("/metrics", guard(later(metrics, "serve")), methods=["GET"]),
        Route("/v1/executions/{execution_id}", guard(later(api, "status")), methods=["GET"]),
        Route("/v1/executions/{execution_id}/history", guard(later(api, "history")), methods=["GET"]),
        Route("/v1/executions/{execution_id}/cancel", guard(later(api, "cancel")), methods=["POST"]),
        Route("/v1/events/{name}", guard(later(api, "event")), methods=["POST"]),
        Route("/healthz", guard(later(api, "healthz")), methods=["GET"]),
        Route("/openapi.json", guard(later("engine.web.openapi", "serve")), methods=["GET"]),
        Route("/v1/executions/{execution_id}/resume", guard(later(resume, "resume")), methods=["POST"]),
        Route("/v1/executions/{execution_id}/view", guard(later(view, "view")), methods=["GET"]),
        Route("/v1/whoami", guard(later(view, "whoami")), methods=["GET"]),
        Route("/v1/workflows", guard(later(catalogue, "list_workflows")), methods=["GET"]),
        Route("/v1/workflows/{name}", guard(later(catalogue, "get_workflow")), methods=["GET"]),
        Route("/ui", guard(assets.index_redirect), methods=["GET", "HEAD"]),
        *(
            Route(f"/ui/{name}", guard(assets.serving(name)), methods=["GET", "HEAD"])
            for name in assets.ASSETS
        ),
    ]


def instance(request: Request) -> str:
    """The request's path for a problem's ``instance``: the caller's own text, kept short."""
    path = route_path(request)
    return path if len(path) <= MAX_ECHO_CHARS else path[:MAX_ECHO_CHARS] + "…"


async def _http_error(request: Request, exc: Exception) -> Response:
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404:
        detail = f"no route {request.method} {instance(request)}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} is not allowed on {instance(request)} (allowed: {allowed})"
    return for_status(exc.status_code, detail, exc.headers).response(instance(request))


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response(instance(request))


async def _crash(request: Request, exc: Exception) -> Response:
    # outside any route (routing, middleware): Starlette logs it; the caller gets a problem
    return Problem("internal", "an unexpected error occurred; the server log has details").response()


def build(hop: HopflowApp) -> Starlette:
    """The Starlette app serving ``hop``'s routes; every error is a problem document."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware

    app = Starlette(
        routes=routes(hop),
        # Host, Origin and Content-Type rules for every request, before any route (guard.py)
        middleware=[Middleware(RequestGuard, config=hop.config)],
        exception_handlers={HTTPException: _http_error, Problem: _problem, Exception: _crash},
        lifespan=hop.lifespan,
    )
    # "/v1/step/" is not "/v1/step": a 404 problem, not a redirect (built from the Host header)
    app.router.redirect_slashes = False
    app.state.hopflow = hop
    hop.app = app
    return app


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
    hop = HopflowApp(
        runtime, cfg, runtime_factory=runtime_factory, run_local_dispatcher=run_local_dispatcher, now=now
    )
    return build(hop)
