"""The operations API: start, inspect, cancel and signal executions; and the health check.

Every route but ``/healthz`` takes the bearer API key (:func:`engine.auth.authorize`). The request's
own shape is checked before the runtime is called, and the runtime validates the rest (the input
schema, the id) before it writes: a refused request changes nothing in Redis.

Contract: docs/http-api.md ("Operations API", "GET /healthz").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.auth import authorize
from engine.bodies import json_response, parse_json, read_body
from engine.problems import Problem, validation_errors

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.requests import Request
    from starlette.responses import Response

    from engine.asgi import HopflowApp

log = logging.getLogger("hopflow.asgi")

MAX_NAME_CHARS = 200


async def start(hop: HopflowApp, request: Request) -> Response:
    """``POST /v1/executions`` ``{workflow, input, id?}`` → 202 ``{execution_id, status_url}``."""
    from engine.catalog import CatalogError
    from engine.errors import InputInvalid, InvalidExecutionId, UnknownWorkflow

    authorize(hop.config, request)
    data = parse_json(await read_body(request, hop.config.max_body_bytes))
    workflow, input_, execution_id = start_request(data)
    runtime = await hop.runtime_async()
    try:
        eid = await hop.call(runtime.start, workflow, input_, execution_id=execution_id)
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
    return json_response({"execution_id": eid, "status_url": location}, 202, {"Location": location})


def _execution_id(request: Request) -> str:
    eid: str = request.path_params["execution_id"]
    if not eid or len(eid) > MAX_NAME_CHARS:
        raise Problem("unknown-execution", f"unknown execution {eid[:MAX_NAME_CHARS]!r}")
    return eid


async def _record_call(hop: HopflowApp, fn: Callable[..., Any], eid: str, *args: Any, **kwargs: Any) -> Any:
    from engine.errors import InvalidExecutionId, UnknownExecution

    try:
        return await hop.call(fn, eid, *args, **kwargs)
    except (UnknownExecution, InvalidExecutionId):
        raise Problem("unknown-execution", f"unknown execution {eid!r}") from None


async def status(hop: HopflowApp, request: Request) -> Response:
    """``GET /v1/executions/{id}``: the record."""
    authorize(hop.config, request)
    eid = _execution_id(request)
    runtime = await hop.runtime_async()
    return json_response(await _record_call(hop, runtime.record, eid))


async def history(hop: HopflowApp, request: Request) -> Response:
    """``GET /v1/executions/{id}/history``: every history entry, oldest first."""
    authorize(hop.config, request)
    eid = _execution_id(request)
    runtime = await hop.runtime_async()
    events = await _record_call(hop, runtime.history, eid)
    return json_response({"execution_id": eid, "events": events})


async def cancel(hop: HopflowApp, request: Request) -> Response:
    """``POST /v1/executions/{id}/cancel`` ``{compensate?}``: stop at the next node boundary."""
    authorize(hop.config, request)
    eid = _execution_id(request)
    body = await read_body(request, hop.config.max_body_bytes)
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
    if before.get("status") != "running":
        raise Problem(
            "conflict",
            f"execution {eid!r} is {before.get('status')}: only a running execution can be cancelled",
        )
    await _record_call(hop, runtime.cancel, eid, compensate=compensate)
    record = await _record_call(hop, runtime.record, eid)
    return json_response({"execution_id": eid, "status": record.get("status"), "compensate": compensate}, 202)


async def event(hop: HopflowApp, request: Request) -> Response:
    """``POST /v1/events/{name}`` ``{key, data}``: resume the waiting executions, or keep the event."""
    authorize(hop.config, request)
    name: str = request.path_params["name"]
    if not name or len(name) > MAX_NAME_CHARS:
        raise Problem(
            "invalid-request",
            f"an event name must be 1-{MAX_NAME_CHARS} characters",
            errors=[{"path": "", "message": "invalid event name"}],
        )
    data = parse_json(await read_body(request, hop.config.max_body_bytes))
    key, payload = event_request(data)
    runtime = await hop.runtime_async()
    resumed = await hop.call(runtime.notify, name, key, payload)
    return json_response({"event": name, "key": key, "resumed": resumed, "kept": resumed == 0}, 202)


async def healthz(hop: HopflowApp, request: Request) -> Response:
    """``GET /healthz`` (no auth): Redis answers ``PING`` and the dispatcher is configured."""
    from starlette.concurrency import run_in_threadpool

    checks: dict[str, str] = {"dispatcher": hop.config.dispatcher_kind}
    try:
        runtime = await hop.runtime_async()
    except Problem:
        checks["redis"] = "unknown"
        checks["runtime"] = "not started"
        raise Problem("unavailable", "the runtime could not be started", extra={"checks": checks}) from None
    try:
        await run_in_threadpool(_ping, runtime)
        checks["redis"] = "ok"
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
    if eid is not None and (not isinstance(eid, str) or not eid):
        errors.append({"path": "/id", "message": "must be a non-empty string"})
    if errors:
        raise Problem("invalid-request", errors[0]["path"] + ": " + errors[0]["message"], errors=errors)
    return workflow, data.get("input", {}), eid


def event_request(data: Any) -> tuple[Any, Any]:
    """``{key, data}`` → its parts; anything else is a 422 listing every mistake."""
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
