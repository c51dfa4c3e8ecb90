"""The HTTP API: the webhook that advances executions, and the operations on them (Starlette).

``create_app(runtime=None, *, config=None, ...)`` builds the app; the module-level :data:`app` is the
entry point a platform imports (``engine.asgi:app``: Vercel, Lambda adapters, Cloud Run, uvicorn).
Importing this module loads nothing but the standard library and two small hopflow modules: the
app (Starlette) is built on the first ASGI call, the runtime (Redis, dispatcher) on the first
request that needs it, and the workflow catalog (YAML compilation) only when an execution starts —
a webhook call advances pinned graphs from Redis and never compiles YAML.

The webhook, ``POST /v1/step``, reads the raw body (bounded while streaming), verifies the
signature over those exact bytes (QStash JWT or hopflow Ed25519, URL = ``HOPFLOW_PUBLIC_URL`` +
path), parses the :class:`~engine.model.Message` and advances one node in a worker thread. Its
answers tell the dispatcher what to do next:

* 2xx — handled, including duplicates, stale and busy messages (nothing to retry);
* 489 + ``Upstash-NonRetryable-Error: true`` — can never succeed (malformed message, unknown
  execution, graph missing): QStash dead-letters it at once;
* 5xx — a transient fault (Redis unreachable, QStash unreachable): retry later.

Every error anywhere is a JSON problem document (:mod:`engine.problems`), unknown routes and
methods included. Details: docs/http-api.md.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from engine.problems import NON_RETRYABLE_HEADER, Problem, for_status, non_retryable, validation_errors

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from engine.config import Config
    from engine.model import Message
    from engine.runtime import Runtime

log = logging.getLogger("hopflow.asgi")

STEP_PATH = "/v1/step"
FAILED_PATH = "/v1/step/failed"
CALLBACK_PATH = "/v1/step/callback"
BUSY_RETRY_S = 2.0  # a busy delivery is re-published this much later (QStash)
MAX_NAME_CHARS = 200
DEV_WARNING = (
    "HOPFLOW_DEV_INSECURE=1: UNSIGNED WEBHOOK CALLS AND API CALLS WITHOUT A KEY ARE ACCEPTED FROM "
    "LOOPBACK CLIENTS. Never set this on a server anyone else can reach."
)
_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")

RuntimeFactory = Callable[["Config"], "Runtime"]


# ------------------------------------------------------------------------------------ runtime wiring


class LazyCatalog:
    """A :class:`~engine.catalog.Catalog` compiled on first use (cold starts of webhook calls skip it)."""

    def __init__(self, directory: str, *, time_budget_ms: int = 7500) -> None:
        self.directory = directory
        self.time_budget_ms = time_budget_ms
        self._catalog: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        with self._lock:
            if self._catalog is None:
                from engine.catalog import Catalog

                self._catalog = Catalog.from_directory(self.directory, time_budget_ms=self.time_budget_ms)
            return self._catalog

    def get(self, name: str) -> Any:
        return self.load().get(name)

    def names(self) -> list[str]:
        names: list[str] = self.load().names()
        return names

    def __contains__(self, name: object) -> bool:
        return name in self.load()


def build_runtime(config: Config, *, redis: Any = None, catalog: Any = None, eager: bool = False) -> Runtime:
    """A runtime for ``config``: Redis (``REDIS_URL`` or embedded), the dispatcher, actions, catalog.

    The dispatcher is QStash when ``QSTASH_TOKEN`` is set (destination ``$HOPFLOW_PUBLIC_URL/v1/step``,
    failure callback ``/v1/step/failed``), otherwise the local Redis queue; its delivery loop is not
    started here (see :func:`local_delivery` and ``create_app``'s lifespan). ``eager`` compiles the
    catalog now (``hopflow serve`` fails fast on a bad workflow file).
    """
    from engine.actions import REGISTRY, load_modules
    from engine.embedded import redis_client
    from engine.runtime import Runtime
    from engine.store import Store

    load_modules(config.actions)
    client = redis if redis is not None else redis_client(config.redis_url)
    if catalog is None:
        catalog = LazyCatalog(config.workflows_dir, time_budget_ms=round(config.time_budget_s * 1000))
        if eager:
            catalog.load()
    dispatcher: Any
    if config.dispatcher_kind == "qstash":
        from engine.dispatch.qstash import QStashDispatcher

        if not config.public_url or not config.qstash_token:
            raise ValueError("QStash needs HOPFLOW_PUBLIC_URL")
        dispatcher = QStashDispatcher(
            config.qstash_token,
            config.qstash_url,
            config.public_url + STEP_PATH,
            failure_callback_url=config.public_url + FAILED_PATH,
            deadline_s=max(1.0, min(8.0, config.time_budget_s / 2)),
        )
    else:
        from engine.dispatch.local import LocalDispatcher

        dispatcher = LocalDispatcher(client, lease_s=max(60.0, 4 * config.time_budget_s))
    runtime = Runtime(
        Store(client), dispatcher, catalog, actions=REGISTRY, time_budget_s=config.time_budget_s
    )
    if config.dispatcher_kind == "local":
        dispatcher.deliver = local_delivery(runtime, config)
        dispatcher.on_dead = runtime.mark_dead
    return runtime


def local_delivery(runtime: Runtime, config: Config) -> Callable[[Message], None]:
    """How the local dispatcher's loop delivers: in-process, or over HTTP signed with Ed25519.

    In-process (the default) calls ``runtime.advance`` directly. With ``HOPFLOW_SIGNING_KEY`` *and*
    ``HOPFLOW_PUBLIC_URL`` set, each message is POSTed to ``$HOPFLOW_PUBLIC_URL/v1/step`` with a
    ``Hopflow-Signature`` header instead, so a load balancer can spread the work over several workers
    that share the Redis (each worker holds only ``HOPFLOW_VERIFY_KEYS``).
    """
    if config.signing_key and config.public_url:
        return http_delivery(
            config.public_url + STEP_PATH, config.signing_key, timeout_s=config.time_budget_s + 5.0
        )
    from engine.embedded import in_process_delivery

    return in_process_delivery(runtime)


class DeliveryFailed(Exception):
    """An HTTP delivery got a retryable answer (5xx, 401, connection error); the queue retries it."""


def http_delivery(
    url: str, signing_key: str, *, timeout_s: float = 15.0, client: Any = None
) -> Callable[[Message], None]:
    """``deliver`` that POSTs each message to ``url`` signed with Ed25519 (``Hopflow-Signature``)."""
    from engine.dispatch.local import Redeliver
    from engine.signing import sign_ed25519

    state: dict[str, Any] = {"client": client}
    lock = threading.Lock()

    def http() -> Any:
        with lock:
            if state["client"] is None:
                import httpx

                state["client"] = httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False)
            return state["client"]

    def deliver(message: Message) -> None:
        import httpx

        body = message.to_json()
        headers = {
            "Content-Type": "application/json",
            "Hopflow-Signature": sign_ed25519(body, url, signing_key),
        }
        try:
            response = http().post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"cannot reach {url}: {type(exc).__name__}") from None
        if response.status_code == 489:
            log.error("dropping delivery %s: %s", message.dedup_id, _problem_detail(response))
            return
        if not response.is_success:
            raise DeliveryFailed(f"{url} answered {response.status_code}: {_problem_detail(response)}")
        try:
            result = response.json().get("result")
        except (ValueError, AttributeError):
            result = None
        if result == "busy":
            raise Redeliver(0.2)

    return deliver


def _problem_detail(response: Any) -> str:
    try:
        return str(response.json().get("detail"))[:300]
    except (ValueError, AttributeError):
        return response.text[:300]


# ------------------------------------------------------------------------------------------ helpers


def is_loopback_client(request: Request) -> bool:
    """A direct loopback client: no proxy headers (a local reverse proxy would make everyone loopback)."""
    from engine.config import is_loopback_host

    client = request.client
    if client is None or not is_loopback_host(client.host):
        return False
    return not any(h in request.headers for h in _PROXY_HEADERS)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes while it streams in (413), not after."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Problem("bad-request", "Content-Length is not a number")
        if int(declared) > limit:
            raise Problem("payload-too-large", f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem("payload-too-large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise Problem("malformed-json", "the request body is empty; a JSON object is expected")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem("malformed-json", f"the request body is not valid JSON: {exc}") from None


def route_path(request: Request) -> str:
    """The path below the app's root (what ``HOPFLOW_PUBLIC_URL`` is the root of)."""
    path: str = request.scope.get("path", "/")
    root = request.scope.get("root_path", "") or ""
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    from starlette.responses import Response

    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, headers=dict(headers or {}), media_type="application/json")


Handler = Callable[["Request"], Awaitable["Response"]]


# --------------------------------------------------------------------------------------------- the app


class HopflowApp:
    """The routes and their shared state; :attr:`app` is the Starlette application."""

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

        self.config = config
        self._runtime = runtime
        self._factory = runtime_factory or (lambda cfg: build_runtime(cfg))
        self._built_here = runtime is None
        self._run_local = run_local_dispatcher
        self._lock = threading.Lock()
        self._now = now
        self._verify_keys: Mapping[str, bytes] | None = None
        self.local_dispatcher_started = False

        routes = [
            Route(STEP_PATH, self._guard(self.step), methods=["POST"]),
            Route(FAILED_PATH, self._guard(self.step_failed), methods=["POST"]),
            Route(CALLBACK_PATH, self._guard(self.step_callback), methods=["POST"]),
            Route("/v1/executions", self._guard(self.start), methods=["POST"]),
            Route("/v1/executions/{execution_id}", self._guard(self.status), methods=["GET"]),
            Route("/v1/executions/{execution_id}/history", self._guard(self.history), methods=["GET"]),
            Route("/v1/executions/{execution_id}/cancel", self._guard(self.cancel), methods=["POST"]),
            Route("/v1/events/{name}", self._guard(self.event), methods=["POST"]),
            Route("/healthz", self._guard(self.healthz), methods=["GET"]),
            Route("/openapi.json", self._guard(self.openapi), methods=["GET"]),
        ]

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            detail = exc.detail if isinstance(exc.detail, str) else None
            if exc.status_code == 404:
                detail = f"no route {request.method} {route_path(request)}"
            elif exc.status_code == 405:
                allowed = (exc.headers or {}).get("Allow", "")
                detail = f"{request.method} is not allowed on {route_path(request)} (allowed: {allowed})"
            return for_status(exc.status_code, detail, exc.headers).response(route_path(request))

        async def problem(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, Problem)
            return exc.response(route_path(request))

        self.app: Starlette = Starlette(
            routes=routes,
            exception_handlers={HTTPException: http_error, Problem: problem},
            lifespan=self._lifespan,
        )
        self.app.state.hopflow = self
        if config.dev_insecure:
            log.warning(DEV_WARNING)

    # -------------------------------------------------------------------------------- lifecycle

    def _lifespan(self, _app: Any) -> Any:
        import contextlib

        @contextlib.asynccontextmanager
        async def lifespan(_a: Any) -> Any:
            from starlette.concurrency import run_in_threadpool

            if self.config.dev_insecure:
                log.warning(DEV_WARNING)
            if self._should_run_local():
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

    def _should_run_local(self) -> bool:
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

    async def _runtime_async(self) -> Runtime:
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

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
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

    def _guard(self, handler: Handler) -> Handler:
        """Unexpected exceptions become a logged 500 problem (no traceback or secret to the caller)."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
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

    # ------------------------------------------------------------------------------------ auth

    def dev_bypass(self, request: Request) -> bool:
        return self.config.dev_insecure and is_loopback_client(request)

    def authorize(self, request: Request) -> None:
        """``Authorization: Bearer $HOPFLOW_API_KEY`` (constant-time), or the dev bypass."""
        if self.dev_bypass(request):
            return
        challenge = {"WWW-Authenticate": 'Bearer realm="hopflow"'}
        key = self.config.api_key
        if not key:
            raise Problem(
                "api-disabled", "this server has no HOPFLOW_API_KEY configured, so the API is disabled"
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(
                "unauthorized",
                "missing bearer token (Authorization: Bearer <HOPFLOW_API_KEY>)",
                headers=challenge,
            )
        if not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise Problem("unauthorized", "invalid API key", headers=challenge)

    def _ed25519_keys(self) -> Mapping[str, bytes]:
        if self._verify_keys is None:
            from engine.signing import parse_verify_keys

            self._verify_keys = parse_verify_keys(list(self.config.verify_keys))
        return self._verify_keys

    def verify(self, request: Request, body: bytes) -> str:
        """Check the delivery signature over the raw body; the scheme (``qstash``/``ed25519``/``dev``)."""
        from engine.signing import SignatureError, public_url, verify_delivery

        if self.dev_bypass(request):
            return "dev"
        if not self.config.public_url:
            log.error("cannot verify deliveries: HOPFLOW_PUBLIC_URL is not set")
            raise Problem(
                "misconfigured", "deliveries cannot be verified: the server's public URL is not configured"
            )
        url = public_url(self.config.public_url, route_path(request), request.url.query)
        try:
            verified = verify_delivery(
                request.headers,
                body,
                url,
                qstash_keys=self.config.qstash_keys,
                ed25519_keys=self._ed25519_keys(),
                now=self._now(),
            )
        except SignatureError as exc:
            raise Problem(
                "invalid-signature", exc.reason, headers={"WWW-Authenticate": 'Signature realm="hopflow"'}
            ) from None
        return verified.scheme

    # ------------------------------------------------------------------------------- the webhook

    async def step(self, request: Request) -> Response:
        if request.query_params.get("hopflow") == "failure":
            return await self.step_failed(request)  # QStashDispatcher.from_env's default callback URL
        from engine.model import Message, MessageError

        body = await read_body(request, self.config.max_body_bytes)
        scheme = self.verify(request, body)
        try:
            message = Message.from_json(body)
        except MessageError as exc:
            raise non_retryable(f"not a hopflow message: {exc}", kind="non-retryable") from None
        runtime = await self._runtime_async()
        dispatcher = runtime.dispatcher
        if scheme != "ed25519" and hasattr(dispatcher, "defer_if_early"):
            deferred = await self._call(dispatcher.defer_if_early, message, dict(request.headers))
            if deferred:
                return _json({"result": "deferred", "execution_id": message.execution_id}, 202)
        result = await self._advance(runtime, message)
        kind = getattr(result, "kind", str(result))
        if kind == "busy" and scheme != "ed25519" and hasattr(dispatcher, "defer_if_early"):
            # another worker holds this branch. Acknowledging alone could lose the message if that
            # worker died holding the lock (QStash's retry of its delivery may be this very request),
            # and a 5xx would spend QStash retries: re-publish a copy for a little later instead.
            from engine.dispatch.qstash import NOT_BEFORE_HEADER

            target = self._now() + BUSY_RETRY_S
            await self._call(
                dispatcher.defer_if_early,
                message,
                {NOT_BEFORE_HEADER: str(math.ceil(target))},
                now=self._now(),
            )
        payload: dict[str, Any] = {"result": kind, "execution_id": message.execution_id}
        status = getattr(result, "status", None)
        if status:
            payload["status"] = status
        return _json(payload, 200)

    async def _advance(self, runtime: Runtime, message: Message) -> Any:
        from engine.errors import GraphMissing, InvalidExecutionId, UnknownExecution

        try:
            return await self._call(runtime.advance, message)
        except UnknownExecution as exc:
            raise non_retryable(exc.message, kind="unknown-execution", title="Unknown execution") from None
        except GraphMissing as exc:
            raise non_retryable(exc.message, title="Graph missing") from None
        except InvalidExecutionId as exc:
            raise non_retryable(exc.message) from None

    async def step_failed(self, request: Request) -> Response:
        """QStash's failure callback: a message it gave up on → the execution becomes ``dead``."""
        from engine.dispatch.qstash import parse_callback
        from engine.errors import UnknownExecution
        from engine.model import MessageError

        body = await read_body(request, self.config.max_body_bytes)
        self.verify(request, body)
        try:
            callback = parse_callback(body)
            message = callback.source_message()
        except MessageError as exc:
            raise non_retryable(f"not a failure callback of a hopflow message: {exc}") from None
        reason = _dead_reason(callback)
        runtime = await self._runtime_async()
        try:
            await self._call(runtime.mark_dead, message, reason)
        except UnknownExecution as exc:
            # e.g. the 489 we gave a message for an unknown execution: nothing to mark, acknowledge
            return _json({"result": "ignored", "execution_id": message.execution_id, "detail": exc.message})
        log.error("execution %s is dead: %s", message.execution_id, reason)
        return _json({"result": "dead", "execution_id": message.execution_id, "reason": reason})

    async def step_callback(self, request: Request) -> Response:
        """The response of an offloaded http call (QStash ``Upstash-Callback``): completes the step.

        The callback URL's query names the node: ``execution_id``, ``node``, ``seq``, ``branch``
        (optional) and ``failure=1`` for the failure callback. It is covered by the signature (the
        JWT's ``sub``), so it can be trusted; see docs/http-api.md for the whole contract.
        """
        from engine.dispatch.qstash import parse_callback
        from engine.model import Message, MessageError

        body = await read_body(request, self.config.max_body_bytes)
        self.verify(request, body)
        params = dict(parse_qsl(request.url.query, keep_blank_values=True))
        seq = params.get("seq", "")
        try:
            message = Message.from_dict(
                {
                    "execution_id": params.get("execution_id"),
                    "node": params.get("node"),
                    "seq": int(seq) if seq.isdigit() else None,
                    "branch": params.get("branch", ""),
                }
            )
            callback = parse_callback(body)
        except MessageError as exc:
            raise non_retryable(f"not an offloaded-call callback: {exc}") from None
        runtime = await self._runtime_async()
        complete = getattr(runtime, "complete_offloaded", None)
        if complete is None:
            raise Problem(
                "not-implemented",
                "this runtime cannot complete offloaded calls yet (Runtime.complete_offloaded is missing)",
            )
        from engine.errors import GraphMissing, UnknownExecution

        try:
            result = await self._call(complete, message, callback, failure=params.get("failure") == "1")
        except (UnknownExecution, GraphMissing) as exc:
            raise non_retryable(exc.message) from None
        kind = getattr(result, "kind", str(result))
        if kind == "busy":
            # the branch is locked by another delivery; QStash makes callbacks, so only it can repeat one
            raise Problem(
                "unavailable", "the step is busy; deliver the callback again", headers={"Retry-After": "1"}
            )
        return _json({"result": kind, "execution_id": message.execution_id})

    # ------------------------------------------------------------------------------------ the API

    async def start(self, request: Request) -> Response:
        from engine.catalog import CatalogError
        from engine.errors import InputInvalid, InvalidExecutionId, UnknownWorkflow

        self.authorize(request)
        data = parse_json(await read_body(request, self.config.max_body_bytes))
        workflow, input_, execution_id = _start_request(data)
        runtime = await self._runtime_async()
        try:
            eid = await self._call(runtime.start, workflow, input_, execution_id=execution_id)
        except UnknownWorkflow as exc:
            raise Problem("unknown-workflow", exc.message) from None
        except InputInvalid as exc:
            raise Problem("invalid-input", exc.message, errors=validation_errors(exc.errors)) from None
        except InvalidExecutionId as exc:
            raise Problem(
                "invalid-request", exc.message, errors=[{"path": "/id", "message": exc.message}]
            ) from None
        except CatalogError as exc:
            log.error("the workflow catalog is invalid: %s", exc.message)
            raise Problem(
                "misconfigured",
                "the server's workflow files are invalid; the server log says "
                "why (run `hopflow validate` on them)",
            ) from None
        location = f"/v1/executions/{eid}"
        return _json({"execution_id": eid, "status_url": location}, 202, {"Location": location})

    def _execution_id(self, request: Request) -> str:
        eid: str = request.path_params["execution_id"]
        if not eid or len(eid) > MAX_NAME_CHARS:
            raise Problem("unknown-execution", f"unknown execution {eid[:MAX_NAME_CHARS]!r}")
        return eid

    async def _record_call(self, fn: Callable[..., Any], eid: str, *args: Any, **kwargs: Any) -> Any:
        from engine.errors import InvalidExecutionId, UnknownExecution

        try:
            return await self._call(fn, eid, *args, **kwargs)
        except (UnknownExecution, InvalidExecutionId):
            raise Problem("unknown-execution", f"unknown execution {eid!r}") from None

    async def status(self, request: Request) -> Response:
        self.authorize(request)
        eid = self._execution_id(request)
        runtime = await self._runtime_async()
        return _json(await self._record_call(runtime.record, eid))

    async def history(self, request: Request) -> Response:
        self.authorize(request)
        eid = self._execution_id(request)
        runtime = await self._runtime_async()
        events = await self._record_call(runtime.history, eid)
        return _json({"execution_id": eid, "events": events})

    async def cancel(self, request: Request) -> Response:
        self.authorize(request)
        eid = self._execution_id(request)
        body = await read_body(request, self.config.max_body_bytes)
        compensate = True
        if body.strip():
            data = parse_json(body)
            if not isinstance(data, dict) or set(data) - {"compensate"}:
                raise Problem(
                    "invalid-request",
                    'the body must be {"compensate": true|false} or empty',
                    errors=[{"path": "", "message": "only the field 'compensate' is allowed"}],
                )
            if "compensate" in data:
                if not isinstance(data["compensate"], bool):
                    raise Problem(
                        "invalid-request",
                        "compensate must be true or false",
                        errors=[{"path": "/compensate", "message": "must be a boolean"}],
                    )
                compensate = data["compensate"]
        runtime = await self._runtime_async()
        before = await self._record_call(runtime.record, eid)
        if before.get("status") != "running":
            raise Problem(
                "conflict",
                f"execution {eid!r} is {before.get('status')}: only a running execution can be cancelled",
            )
        await self._record_call(runtime.cancel, eid, compensate=compensate)
        record = await self._record_call(runtime.record, eid)
        return _json({"execution_id": eid, "status": record.get("status"), "compensate": compensate}, 202)

    async def event(self, request: Request) -> Response:
        self.authorize(request)
        name: str = request.path_params["name"]
        if not name or len(name) > MAX_NAME_CHARS:
            raise Problem(
                "invalid-request",
                f"an event name must be 1-{MAX_NAME_CHARS} characters",
                errors=[{"path": "", "message": "invalid event name"}],
            )
        data = parse_json(await read_body(request, self.config.max_body_bytes))
        key, payload = _event_request(data)
        runtime = await self._runtime_async()
        resumed = await self._call(runtime.notify, name, key, payload)
        return _json({"event": name, "key": key, "resumed": resumed, "kept": resumed == 0}, 202)

    async def healthz(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        checks: dict[str, str] = {"dispatcher": self.config.dispatcher_kind}
        try:
            runtime = await self._runtime_async()
        except Problem:
            checks["redis"] = "unknown"
            checks["runtime"] = "not started"
            raise Problem(
                "unavailable", "the runtime could not be started", extra={"checks": checks}
            ) from None
        try:
            await run_in_threadpool(_ping, runtime)
            checks["redis"] = "ok"
        except Exception as exc:
            log.warning("healthz: Redis ping failed: %s", type(exc).__name__)
            checks["redis"] = "unreachable"
        checks["dispatcher"] = _dispatcher_kind(getattr(runtime, "dispatcher", None))
        if checks["dispatcher"] == "local" and self._should_run_local():
            checks["dispatcher"] = "local (running)" if self.local_dispatcher_started else "local (stopped)"
        ok = checks["redis"] == "ok" and checks["dispatcher"] not in ("missing", "local (stopped)")
        if not ok:
            raise Problem(
                "unavailable",
                "not ready: " + ", ".join(f"{k} {v}" for k, v in checks.items()),
                extra={"checks": checks},
            )
        return _json({"status": "ok", "checks": checks})

    async def openapi(self, request: Request) -> Response:
        return _json(openapi_document(self.config.public_url))


def _dispatcher_kind(dispatcher: Any) -> str:
    if dispatcher is None:
        return "missing"
    name = type(dispatcher).__name__
    return {"QStashDispatcher": "qstash", "LocalDispatcher": "local"}.get(name, name)


def _ping(runtime: Any) -> None:
    client = getattr(getattr(runtime, "store", None), "client", None)
    if client is None:
        raise RuntimeError("the runtime has no Redis client")
    client.ping()


def _dead_reason(callback: Any) -> str:
    if callback.status:
        last = f"last response HTTP {callback.status}"
    else:
        last = "no response at all (connection failures or timeouts)"
    attempts = callback.retried + 1 if callback.retried else callback.max_retries + 1
    reason = f"QStash gave up delivering the message after {attempts} attempt(s); {last}"
    if callback.dlq_id:
        reason += f"; DLQ id {callback.dlq_id}"
    return reason


def _start_request(data: Any) -> tuple[str, Any, str | None]:
    errors: list[dict[str, str]] = []
    if not isinstance(data, dict):
        raise Problem(
            "invalid-request",
            'the body must be a JSON object {"workflow", "input", "id"?}',
            errors=[{"path": "", "message": "must be an object"}],
        )
    for extra in sorted(set(data) - {"workflow", "input", "id"}):
        errors.append({"path": f"/{extra}", "message": "unknown field"})
    workflow = data.get("workflow")
    if not isinstance(workflow, str) or not workflow or len(workflow) > MAX_NAME_CHARS:
        errors.append({"path": "/workflow", "message": "required: the workflow's name (a string)"})
    eid = data.get("id")
    if eid is not None and (not isinstance(eid, str) or not eid):
        errors.append({"path": "/id", "message": "must be a non-empty string"})
    if errors:
        raise Problem("invalid-request", errors[0]["path"] + ": " + errors[0]["message"], errors=errors)
    return workflow, data.get("input", {}), eid


def _event_request(data: Any) -> tuple[Any, Any]:
    if not isinstance(data, dict):
        raise Problem(
            "invalid-request",
            'the body must be a JSON object {"key", "data"}',
            errors=[{"path": "", "message": "must be an object"}],
        )
    errors = [{"path": f"/{k}", "message": "unknown field"} for k in sorted(set(data) - {"key", "data"})]
    key = data.get("key")
    if isinstance(key, bool) or not isinstance(key, str | int) or key == "":
        errors.append({"path": "/key", "message": "required: the event key (a string or an integer)"})
    if errors:
        raise Problem("invalid-request", errors[0]["path"] + ": " + errors[0]["message"], errors=errors)
    return key, data.get("data")


# ------------------------------------------------------------------------------------ OpenAPI


def _problem_ref(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _json_body(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def openapi_document(server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every route (served at ``GET /openapi.json``)."""
    common = {
        "413": _problem_ref("The body is larger than the bound (default 1 MiB)"),
        "500": _problem_ref("Unexpected error or server misconfiguration"),
        "503": _problem_ref("Redis or the dispatcher is unreachable: retry later"),
    }
    api_errors = {"401": _problem_ref("Missing or invalid API key"), **common}
    webhook_errors = {
        "400": _problem_ref("Malformed Content-Length"),
        "401": _problem_ref("Missing, forged, stale or misdirected signature; nothing changed"),
        "489": {
            **_problem_ref(
                "The message can never succeed (malformed, unknown execution, graph "
                "missing); QStash dead-letters it without retrying"
            ),
            "headers": {NON_RETRYABLE_HEADER: {"schema": {"type": "string", "const": "true"}}},
        },
        **common,
    }
    eid_param = {
        "name": "execution_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "maxLength": MAX_NAME_CHARS},
    }
    signed = [{"qstash": []}, {"ed25519": []}]
    step_result = _json_body("StepResult", "Handled: advanced, stale, busy, finished or deferred")
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "hopflow",
            "version": "1",
            "description": "Webhook and operations API of the hopflow runtime (docs/http-api.md).",
        },
        "paths": {
            STEP_PATH: {
                "post": {
                    "operationId": "advanceStep",
                    "summary": "The webhook: advance one node of an execution",
                    "security": signed,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}},
                    },
                    "responses": {
                        "200": step_result,
                        "202": _json_body("StepResult", "A chained delay not yet due: re-published"),
                        **webhook_errors,
                    },
                }
            },
            FAILED_PATH: {
                "post": {
                    "operationId": "stepFailed",
                    "summary": "QStash failure callback: the execution becomes dead",
                    "security": signed,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/QStashCallback"}}
                        },
                    },
                    "responses": {
                        "200": _json_body("StepResult", "Marked dead, or ignored (unknown execution)"),
                        **webhook_errors,
                    },
                }
            },
            CALLBACK_PATH: {
                "post": {
                    "operationId": "offloadedCallback",
                    "summary": "QStash callback with the response of an offloaded http step",
                    "security": signed,
                    "parameters": [
                        {
                            "name": "execution_id",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {"name": "node", "in": "query", "required": True, "schema": {"type": "string"}},
                        {
                            "name": "seq",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        {"name": "branch", "in": "query", "required": False, "schema": {"type": "string"}},
                        {"name": "failure", "in": "query", "required": False, "schema": {"enum": ["1"]}},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/QStashCallback"}}
                        },
                    },
                    "responses": {
                        "200": step_result,
                        "501": _problem_ref("This runtime cannot complete offloaded calls yet"),
                        **webhook_errors,
                    },
                }
            },
            "/v1/executions": {
                "post": {
                    "operationId": "startExecution",
                    "summary": "Validate the input, create, dispatch the first node",
                    "security": [{"apiKey": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/StartRequest"}}
                        },
                    },
                    "responses": {
                        "202": {
                            **_json_body("Started", "Started (or already existing, for a repeated id)"),
                            "headers": {"Location": {"schema": {"type": "string"}}},
                        },
                        "400": _problem_ref("Malformed JSON"),
                        "404": _problem_ref("Unknown workflow"),
                        "422": _problem_ref("Invalid request or input: `errors` lists the schema errors"),
                        **api_errors,
                    },
                }
            },
            "/v1/executions/{execution_id}": {
                "get": {
                    "operationId": "getExecution",
                    "summary": "Status, current nodes, output or error, timestamps",
                    "security": [{"apiKey": []}],
                    "parameters": [eid_param],
                    "responses": {
                        "200": _json_body("Record", "The execution's record"),
                        "404": _problem_ref("Unknown execution"),
                        **api_errors,
                    },
                }
            },
            "/v1/executions/{execution_id}/history": {
                "get": {
                    "operationId": "getHistory",
                    "summary": "The event history, oldest first",
                    "security": [{"apiKey": []}],
                    "parameters": [eid_param],
                    "responses": {
                        "200": _json_body("History", "The history"),
                        "404": _problem_ref("Unknown execution"),
                        **api_errors,
                    },
                }
            },
            "/v1/executions/{execution_id}/cancel": {
                "post": {
                    "operationId": "cancelExecution",
                    "summary": "Cancel; compensates unless told not to",
                    "security": [{"apiKey": []}],
                    "parameters": [eid_param],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/CancelRequest"}}
                        },
                    },
                    "responses": {
                        "202": _json_body("Cancelled", "Cancellation requested"),
                        "400": _problem_ref("Malformed JSON"),
                        "404": _problem_ref("Unknown execution"),
                        "409": _problem_ref("The execution is not running (already over, or compensating)"),
                        "422": _problem_ref("Invalid body"),
                        **api_errors,
                    },
                }
            },
            "/v1/events/{name}": {
                "post": {
                    "operationId": "sendEvent",
                    "summary": "Resume executions waiting for this event and key "
                    "(kept 7 days when none waits)",
                    "security": [{"apiKey": []}],
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "maxLength": MAX_NAME_CHARS},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/EventRequest"}}
                        },
                    },
                    "responses": {
                        "202": _json_body("EventResult", "Delivered or kept"),
                        "400": _problem_ref("Malformed JSON"),
                        "422": _problem_ref("Invalid body"),
                        **api_errors,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Redis reachable, dispatcher configured",
                    "security": [],
                    "responses": {
                        "200": _json_body("Health", "Ready"),
                        "503": _problem_ref("Not ready (`checks` says what)"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1 document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "HOPFLOW_API_KEY"},
                "qstash": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Upstash-Signature",
                    "description": "QStash JWT (HS256) over the raw body and HOPFLOW_PUBLIC_URL + path",
                },
                "ed25519": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Hopflow-Signature",
                    "description": "t=<unix>,kid=<key id>,sig=<base64url Ed25519 signature>",
                },
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string", "format": "uri"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "instance": {"type": "string"},
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["path", "message"],
                                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                            },
                        },
                    },
                },
                "Message": {
                    "type": "object",
                    "required": ["execution_id", "node", "seq"],
                    "properties": {
                        "execution_id": {"type": "string", "minLength": 1, "maxLength": 200},
                        "node": {"type": "string", "minLength": 1, "maxLength": 200},
                        "seq": {"type": "integer", "minimum": 0},
                        "branch": {"type": "string"},
                    },
                },
                "QStashCallback": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {"type": "integer"},
                        "body": {"type": "string", "contentEncoding": "base64"},
                        "sourceBody": {"type": "string", "contentEncoding": "base64"},
                        "retried": {"type": "integer"},
                        "maxRetries": {"type": "integer"},
                        "dlqId": {"type": "string"},
                    },
                },
                "StepResult": {
                    "type": "object",
                    "required": ["result"],
                    "properties": {
                        "result": {
                            "enum": ["advanced", "stale", "busy", "finished", "deferred", "dead", "ignored"]
                        },
                        "execution_id": {"type": "string"},
                        "status": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
                "StartRequest": {
                    "type": "object",
                    "required": ["workflow"],
                    "additionalProperties": False,
                    "properties": {
                        "workflow": {"type": "string"},
                        "input": {"description": "checked against the workflow's input schema"},
                        "id": {"type": "string", "description": "makes start idempotent"},
                    },
                },
                "Started": {
                    "type": "object",
                    "required": ["execution_id"],
                    "properties": {"execution_id": {"type": "string"}, "status_url": {"type": "string"}},
                },
                "Record": {
                    "type": "object",
                    "required": ["execution_id", "workflow", "status"],
                    "properties": {
                        "execution_id": {"type": "string"},
                        "workflow": {"type": "string"},
                        "graph": {"type": "string"},
                        "status": {
                            "enum": [
                                "running",
                                "compensating",
                                "succeeded",
                                "failed",
                                "compensated",
                                "compensation_failed",
                                "cancelled",
                                "dead",
                            ]
                        },
                        "output": {},
                        "error": {"type": ["object", "null"]},
                        "trace": {"type": "array", "items": {"type": "object"}},
                        "current": {"type": "array", "items": {"type": "object"}},
                        "created_at": {"type": ["string", "null"]},
                        "updated_at": {"type": ["string", "null"]},
                    },
                },
                "History": {
                    "type": "object",
                    "required": ["execution_id", "events"],
                    "properties": {
                        "execution_id": {"type": "string"},
                        "events": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "CancelRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"compensate": {"type": "boolean", "default": True}},
                },
                "Cancelled": {
                    "type": "object",
                    "required": ["execution_id"],
                    "properties": {
                        "execution_id": {"type": "string"},
                        "status": {"type": "string"},
                        "compensate": {"type": "boolean"},
                    },
                },
                "EventRequest": {
                    "type": "object",
                    "required": ["key"],
                    "additionalProperties": False,
                    "properties": {"key": {"type": ["string", "integer"]}, "data": {}},
                },
                "EventResult": {
                    "type": "object",
                    "required": ["event", "key", "resumed"],
                    "properties": {
                        "event": {"type": "string"},
                        "key": {"type": ["string", "integer"]},
                        "resumed": {"type": "integer"},
                        "kept": {"type": "boolean"},
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "checks"],
                    "properties": {"status": {"const": "ok"}, "checks": {"type": "object"}},
                },
            },
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


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
]
