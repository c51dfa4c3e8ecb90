"""The operations API: start, inspect, cancel and signal executions; and the health check.

Every route but ``/healthz`` takes a bearer API key (:func:`engine.web.auth.authorize`): scope
``read`` to look, ``operate`` to change anything. The request's
own shape is checked before the runtime is called, and the runtime validates the rest (the input
schema, the id) before it writes: a refused request changes nothing in Redis.

Contract: docs/http-api.md ("Operations API", "GET /healthz").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.triggers import EVENT_ID
from engine.web.auth import authorize
from engine.web.bodies import json_response, parse_json
from engine.web.problems import Problem, validation_errors

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.requests import Request
    from starlette.responses import Response

    from engine.web.core import HopflowApp

log = logging.getLogger("hopflow.asgi")

MAX_NAME_CHARS = 200
MAX_EVENT_KEY_CHARS = 1024
MAX_ERRORS = 50  # schema errors listed in a 422 (a huge invalid input could have thousands)
MAX_ERROR_CHARS = 300  # jsonschema quotes the offending value, which may be the whole input
HEALTH_TIMEOUT_S = 2.0  # /healthz answers within about this, even when Redis does not
EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}")  # the DSL's event_name: what a wait can name


async def start(hop: HopflowApp, request: Request) -> Response:
    """``POST /v1/executions`` ``{workflow, input, id?}`` → 202 ``{execution_id, status_url}``."""
    from engine.catalog import CatalogError
    from engine.errors import InputInvalid, InvalidExecutionId, UnknownWorkflow

    authorize(hop.config, request, scope="operate")
    data = parse_json(await hop.body(request))
    workflow, input_, execution_id = start_request(data)
    runtime = await hop.runtime_async()
    try:
        eid = await hop.call(runtime.start, workflow, input_, execution_id=execution_id)
    except UnknownWorkflow as exc:
        raise Problem("unknown-workflow", exc.message) from None
    except InputInvalid as exc:
        errors = validation_errors(exc.errors[:MAX_ERRORS])
        for error in errors:
            error["message"] = _clip(error["message"], MAX_ERROR_CHARS)
        more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
        detail = f"input is invalid: {errors[0]['message'] if errors else 'invalid input'}{more}"
        raise Problem("invalid-input", detail, errors=errors) from None
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
    return json_response({"execution_id": eid, "status_url": location}, 202, {"Location": location})


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _execution_id(request: Request) -> str:
    """The id in the URL; one that no execution can have is unknown without asking Redis."""
    from engine.errors import InvalidExecutionId
    from engine.state.store import check_execution_id

    eid: str = request.path_params["execution_id"]
    try:
        return check_execution_id(eid)
    except InvalidExecutionId:
        raise Problem("unknown-execution", f"unknown execution {_clip(eid, 100)!r}") from None


async def _record_call(hop: HopflowApp, fn: Callable[..., Any], eid: str, *args: Any, **kwargs: Any) -> Any:
    from engine.errors import InvalidExecutionId, UnknownExecution

    try:
        return await hop.call(fn, eid, *args, **kwargs)
    except (UnknownExecution, InvalidExecutionId):
        raise Problem("unknown-execution", f"unknown execution {eid!r}") from None


async def status(hop: HopflowApp, request: Request) -> Response:
    """``GET /v1/executions/{id}``: the record."""
    authorize(hop.config, request, scope="read")
    eid = _execution_id(request)
    runtime = await hop.runtime_async()
    return json_response(await _record_call(hop, runtime.record, eid))


async def executions(hop: HopflowApp, request: Request) -> Response:
    """``/v1/executions``: ``POST`` starts one, ``GET`` lists them (one route, so a 405 names both)."""
    if request.method == "POST":
        return await start(hop, request)
    return await list_executions(hop, request)


async def list_executions(hop: HopflowApp, request: Request) -> Response:
    """``GET /v1/executions``: newest first, filtered, one page (docs/operations.md)."""
    from engine.state import index

    authorize(hop.config, request, scope="read")
    params: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        params.setdefault(name, []).append(value)
    try:
        filters, cursor, limit = index.parse_filters(params)
        if cursor:
            index.decode_cursor(cursor)
    except index.FilterError as exc:
        raise Problem(
            "bad-request", exc.message, errors=[{"path": exc.param, "message": exc.message}]
        ) from None
    runtime = await hop.runtime_async()
    page = await hop.call(index.list_executions, runtime.store, filters, cursor, limit)
    return json_response({"executions": page.executions, "next_cursor": page.next_cursor})


async def counts(hop: HopflowApp, request: Request) -> Response:
    """``GET /v1/counts``: executions per status, and per workflow and status."""
    from engine.state import index

    authorize(hop.config, request, scope="read")
    runtime = await hop.runtime_async()
    return json_response(await hop.call(index.counts, runtime.store))


async def history(hop: HopflowApp, request: Request) -> Response:
    """``GET /v1/executions/{id}/history``: every history entry, oldest first."""
    authorize(hop.config, request, scope="read")
    eid = _execution_id(request)
    runtime = await hop.runtime_async()
    events = await _record_call(hop, runtime.history, eid)
    return json_response({"execution_id": eid, "events": events})


async def cancel(hop: HopflowApp, request: Request) -> Response:
    """``POST /v1/executions/{id}/cancel`` ``{compensate?}``: stop at the next node boundary."""
    authorize(hop.config, request, scope="operate")
    eid = _execution_id(request)
    body = await hop.body(request)
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
    runtime = await hop.runtime_async()
    before = await _record_call(hop, runtime.record, eid)
    if before.get("status") not in ("running", "queued"):  # queued: waiting for a max_running slot
        raise Problem(
            "conflict",
            f"execution {eid!r} is {before.get('status')}: "
            "only a running or queued execution can be cancelled",
        )
    await _record_call(hop, runtime.cancel, eid, compensate=compensate)
    record = await _record_call(hop, runtime.record, eid)
    return json_response({"execution_id": eid, "status": record.get("status"), "compensate": compensate}, 202)


async def event(hop: HopflowApp, request: Request) -> Response:
    """``POST /v1/events/{name}`` ``{key, data, id?}``: resume the waiting executions (or keep the
    event), and start the workflows it triggers — once per event id, whatever the retries."""
    authorize(hop.config, request, scope="operate")
    name: str = request.path_params["name"]
    if not EVENT_NAME.fullmatch(name):
        raise Problem(
            "invalid-request",
            f"{_clip(name, 100)!r} is not an event name (a letter, then up to 127 letters, digits, _ . -)",
            errors=[{"path": "", "message": "invalid event name"}],
        )
    data = parse_json(await hop.body(request))
    key, payload = event_request(data)
    event_id = data.get("id")
    runtime = await hop.runtime_async()
    done = await hop.call(runtime.notify_event, name, key, payload, event_id=event_id)
    answer = {
        "event": name,
        "key": key,
        "id": done.id,
        "resumed": done.resumed,
        "kept": done.resumed == 0,
        "started": done.started,
    }
    if done.failed:
        answer["failed"] = done.failed
    return json_response(answer, 202)


async def healthz(hop: HopflowApp, request: Request) -> Response:
    """``GET /healthz`` (no auth): Redis answers ``PING`` and the dispatcher is configured."""
    import anyio
    import anyio.to_thread

    checks: dict[str, str] = {"dispatcher": hop.config.dispatcher_kind}
    try:
        runtime = await hop.runtime_async()
    except Problem:
        checks["redis"] = "unknown"
        checks["runtime"] = "not started"
        raise Problem("unavailable", "the runtime could not be started", extra={"checks": checks}) from None
    try:
        # bounded: redis-py's own timeouts and retries add up to tens of seconds on a silent host.
        # An abandoned ping finishes in its thread, outside the threadpool's limiter.
        with anyio.fail_after(HEALTH_TIMEOUT_S):
            await anyio.to_thread.run_sync(_ping, runtime, abandon_on_cancel=True)
        checks["redis"] = "ok"
    except TimeoutError:
        log.warning("healthz: Redis did not answer PING within %g s", HEALTH_TIMEOUT_S)
        checks["redis"] = "unreachable"
    except Exception as exc:
        log.warning("healthz: Redis ping failed: %s", type(exc).__name__)
        checks["redis"] = "unreachable"
    checks["dispatcher"] = _dispatcher_kind(getattr(runtime, "dispatcher", None))
    if checks["dispatcher"] == "local" and hop.should_run_local():
        checks["dispatcher"] = "local (running)" if hop.local_dispatcher_started else "local (stopped)"
    ok = checks["redis"] == "ok" and checks["dispatcher"] not in ("missing", "local (stopped)")
    if not ok:
        raise Problem(
            "unavailable",
            "not ready: " + ", ".join(f"{k} {v}" for k, v in checks.items()),
            extra={"checks": checks},
        )
    return json_response({"status": "ok", "checks": checks})


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


def start_request(data: Any) -> tuple[str, Any, str | None]:
    """``{workflow, input, id?}`` → its parts; anything else is a 422 listing every mistake."""
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
    if eid is not None and not _valid_id(eid):
        errors.append(
            {
                "path": "/id",
                "message": "must be 1-200 characters: letters, digits and _.:@+=- "
                "(starting with a letter or digit; '~' is reserved for child executions)",
            }
        )
    if errors:
        raise Problem("invalid-request", errors[0]["path"] + ": " + errors[0]["message"], errors=errors)
    return workflow, data.get("input", {}), eid


def _valid_id(value: Any) -> bool:
    """An id a client may give a new execution (``check_client_execution_id``)."""
    from engine.errors import InvalidExecutionId
    from engine.state.store import check_client_execution_id

    try:
        check_client_execution_id(value)
    except InvalidExecutionId:
        return False
    return True


def event_request(data: Any) -> tuple[Any, Any]:
    """``{key, data, id?}`` → key and data (``id`` is checked here); anything else is a 422 listing
    every mistake."""
    if not isinstance(data, dict):
        raise Problem(
            "invalid-request",
            'the body must be a JSON object {"key", "data"}',
            errors=[{"path": "", "message": "must be an object"}],
        )
    errors = [
        {"path": f"/{k}", "message": "unknown field"} for k in sorted(set(data) - {"key", "data", "id"})
    ]
    if "id" in data and not (isinstance(data["id"], str) and EVENT_ID.fullmatch(data["id"])):
        errors.append({"path": "/id", "message": "the event id must be 1-200 letters, digits or _.:@+=~/-"})
    key = data.get("key")
    if isinstance(key, bool) or not isinstance(key, str | int) or key == "":
        errors.append({"path": "/key", "message": "required: the event key (a string or an integer)"})
    elif len(str(key)) > MAX_EVENT_KEY_CHARS:
        errors.append({"path": "/key", "message": f"longer than {MAX_EVENT_KEY_CHARS} characters"})
    if errors:
        raise Problem("invalid-request", errors[0]["path"] + ": " + errors[0]["message"], errors=errors)
    return key, data.get("data")
