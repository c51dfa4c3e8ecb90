"""The OpenAPI 3.1 description of every route, served at ``GET /openapi.json``.

Written by hand next to docs/http-api.md rather than generated: it states the problem documents,
the 489 of the webhook and the signature schemes, which no generator infers from the handlers.
``tests/test_asgi.py`` checks that every route is described and that the document validates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.triggers import EVENT_ID
from engine.web.api import EVENT_NAME, MAX_EVENT_KEY_CHARS
from engine.web.bodies import json_response
from engine.web.paths import CALLBACK_PATH, FAILED_PATH, STEP_PATH
from engine.web.problems import NON_RETRYABLE_HEADER
from engine.web.ui import spec as ui_spec
from engine.web.webhook import BRANCH, MAX_SEQ

ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:@+=~-]{0,199}$"  # engine.state.store.EXECUTION_ID
CLIENT_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,199}$"  # engine.state.store.CLIENT_EXECUTION_ID

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.requests import Request
    from starlette.responses import Response

    from engine.web.core import HopflowApp


async def serve(hop: HopflowApp, request: Request) -> Response:
    """``GET /openapi.json`` (no auth)."""
    return json_response(openapi_document(hop.config.public_url))


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


def _list_parameters() -> list[dict[str, Any]]:
    def query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "description": description,
            "schema": schema or {"type": "string"},
        }

    when = "ISO 8601 (UTC when no zone) or epoch seconds"
    return [
        {
            **query("status", "Repeatable, or a comma list"),
            "schema": {"type": "array", "items": {"type": "string"}},
            "style": "form",
            "explode": True,
        },
        query("workflow", "Workflow name"),
        query("graph", "Graph hash"),
        query("parent", "The parent execution's id: its child executions"),
        query("started_after", f"Started at or after ({when})"),
        query("started_before", f"Started before ({when})"),
        query("updated_after", f"Updated at or after ({when})"),
        query("updated_before", f"Updated before ({when})"),
        query("cursor", "next_cursor of the previous page"),
        query("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
    ]


def openapi_document(server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every route (served at ``GET /openapi.json``)."""
    common = {
        "413": _problem_ref("The body is larger than the bound (default 1 MiB)"),
        "500": _problem_ref("Unexpected error or server misconfiguration"),
        "503": _problem_ref("Redis or the dispatcher is unreachable: retry later"),
    }
    api_errors = {
        "401": _problem_ref("Missing or invalid API key"),
        "403": _problem_ref("The key lacks the route's scope, or the request came from another origin"),
        "415": _problem_ref("A body that is not application/json (or application/…+json)"),
        "421": _problem_ref("A Host this server does not answer for"),
        **common,
    }
    timeout = {"408": _problem_ref("The body did not arrive within the time bound (30 s)")}
    webhook_errors = {
        "400": _problem_ref("Malformed Content-Length, or a body that does not match it"),
        **timeout,
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
        "schema": {"type": "string", "pattern": ID_PATTERN},
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
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Message"},
                                        {"$ref": "#/components/schemas/ScheduleFire"},
                                    ]
                                }
                            }
                        },
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
                        "400": _problem_ref(
                            "Malformed JSON, or a body that does not match its Content-Length"
                        ),
                        **timeout,
                        "404": _problem_ref("Unknown workflow"),
                        "422": _problem_ref("Invalid request or input: `errors` lists the schema errors"),
                        **api_errors,
                    },
                },
                "get": {
                    "operationId": "listExecutions",
                    "summary": "Executions newest first (start time, then id), filtered, one page",
                    "security": [{"apiKey": []}],
                    "parameters": _list_parameters(),
                    "responses": {
                        "200": _json_body("ExecutionPage", "One page; next_cursor null on the last"),
                        "400": _problem_ref("A bad filter, cursor or limit (1-200)"),
                        **api_errors,
                    },
                },
            },
            "/v1/counts": {
                "get": {
                    "operationId": "countExecutions",
                    "summary": "Executions per status, and per workflow and status",
                    "security": [{"apiKey": []}],
                    "responses": {"200": _json_body("Counts", "The counts"), **api_errors},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (text format); the API key or HOPFLOW_METRICS_KEY",
                    "security": [{"apiKey": []}],
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
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
                        "400": _problem_ref(
                            "Malformed JSON, or a body that does not match its Content-Length"
                        ),
                        **timeout,
                        "404": _problem_ref("Unknown execution"),
                        "409": _problem_ref("The execution is not running (already over, or compensating)"),
                        "422": _problem_ref("Invalid body"),
                        **api_errors,
                    },
                }
            },
            "/v1/executions/{execution_id}/resume": {
                "post": {
                    "operationId": "resumeExecution",
                    "summary": "Retry the compensation that gave up (compensation_failed → compensating)",
                    "security": [{"apiKey": []}],
                    "parameters": [eid_param],
                    "responses": {
                        "202": _json_body("Resumed", "Compensating again"),
                        "404": _problem_ref("Unknown execution"),
                        "409": _problem_ref("The execution is not compensation_failed"),
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
                            "schema": {"type": "string", "pattern": "^" + EVENT_NAME.pattern + "$"},
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
                        "400": _problem_ref(
                            "Malformed JSON, or a body that does not match its Content-Length"
                        ),
                        **timeout,
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
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "HOPFLOW_API_KEY (scope operate) or a key of HOPFLOW_API_KEYS "
                    "(read:KEY,operate:KEY); GET routes need read, the others operate",
                },
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
                        "execution_id": {"type": "string", "pattern": ID_PATTERN},
                        "node": {"type": "string", "minLength": 1, "maxLength": 200},
                        "seq": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
                        "branch": {
                            "type": "string",
                            "maxLength": 1000,
                            "pattern": "^(" + BRANCH.pattern + ")?$",
                        },
                    },
                },
                "ScheduleFire": {
                    "type": "object",
                    "description": "A QStash schedule's fire (docs/schedules.md): starts the execution "
                    "for the schedule's most recent fire time",
                    "required": ["schedule"],
                    "additionalProperties": False,
                    "properties": {
                        "schedule": {
                            "type": "object",
                            "required": ["namespace", "workflow", "index"],
                            "properties": {
                                "namespace": {"type": "string"},
                                "workflow": {"type": "string"},
                                "index": {"type": "integer", "minimum": 0},
                            },
                        }
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
                            "enum": [
                                "advanced",
                                "stale",
                                "busy",
                                "finished",
                                "deferred",
                                "dead",
                                "ignored",
                                "started",
                                "skipped",
                            ]
                        },
                        "execution_id": {"type": "string"},
                        "status": {"type": "string"},
                        "reason": {"type": "string"},
                        "fire_time": {"type": "string", "description": "a schedule fire's time (UTC)"},
                    },
                },
                "StartRequest": {
                    "type": "object",
                    "required": ["workflow"],
                    "additionalProperties": False,
                    "properties": {
                        "workflow": {"type": "string"},
                        "input": {"description": "checked against the workflow's input schema"},
                        "id": {
                            "type": "string",
                            "pattern": CLIENT_ID_PATTERN,
                            "description": "makes start idempotent ('~' is reserved for child executions)",
                        },
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
                                "queued",
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
                        "where": {"type": "array", "items": {"$ref": "#/components/schemas/Where"}},
                    },
                },
                "Where": {
                    "type": "object",
                    "description": "Where one active branch is, and what it waits for (real time, UTC)",
                    "required": ["branch", "node", "kind", "state", "text"],
                    "properties": {
                        "branch": {"type": "string"},
                        "node": {"type": "string"},
                        "kind": {"type": "string"},
                        "state": {
                            "enum": [
                                "running",
                                "waiting",
                                "retrying",
                                "offloaded",
                                "joining",
                                "compensating",
                                "compensation_failed",
                            ]
                        },
                        "waiting_for": {
                            "type": ["object", "null"],
                            "properties": {"event": {"type": "string"}, "key": {"type": "string"}},
                        },
                        "until": {"type": ["string", "null"]},
                        "attempt": {"type": ["integer", "null"]},
                        "next_attempt_at": {"type": ["string", "null"]},
                        "call": {"type": ["object", "null"]},
                        "child": {"type": ["object", "null"]},
                        "text": {"type": "string"},
                    },
                },
                "Summary": {
                    "type": "object",
                    "required": [
                        "execution_id",
                        "workflow",
                        "graph",
                        "status",
                        "started_at",
                        "updated_at",
                        "parent",
                    ],
                    "properties": {
                        "execution_id": {"type": "string"},
                        "workflow": {"type": "string"},
                        "graph": {"type": "string"},
                        "status": {"type": "string"},
                        "started_at": {"type": "string"},
                        "updated_at": {"type": ["string", "null"]},
                        "parent": {"type": ["string", "null"]},
                    },
                },
                "ExecutionPage": {
                    "type": "object",
                    "required": ["executions", "next_cursor"],
                    "properties": {
                        "executions": {"type": "array", "items": {"$ref": "#/components/schemas/Summary"}},
                        "next_cursor": {"type": ["string", "null"]},
                    },
                },
                "Counts": {
                    "type": "object",
                    "required": ["status", "workflow"],
                    "properties": {
                        "status": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "workflow": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "additionalProperties": {"type": "integer"},
                            },
                        },
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
                    "properties": {
                        "key": {"type": ["string", "integer"], "maxLength": MAX_EVENT_KEY_CHARS},
                        "data": {},
                        "id": {
                            "type": "string",
                            "pattern": "^" + EVENT_ID.pattern + "$",
                            "description": "The event's id: the same id again resumes and starts nothing new",
                        },
                    },
                },
                "EventResult": {
                    "type": "object",
                    "required": ["event", "key", "resumed"],
                    "properties": {
                        "event": {"type": "string"},
                        "key": {"type": ["string", "integer"]},
                        "id": {"type": "string"},
                        "resumed": {"type": "integer"},
                        "kept": {"type": "boolean"},
                        "started": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "Executions started by workflows whose `triggers` name the event",
                        },
                        "failed": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"workflow": {"type": "string"}, "message": {"type": "string"}},
                            },
                        },
                    },
                },
                "Resumed": {
                    "type": "object",
                    "required": ["execution_id", "status"],
                    "properties": {"execution_id": {"type": "string"}, "status": {"type": "string"}},
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "checks"],
                    "properties": {"status": {"const": "ok"}, "checks": {"type": "object"}},
                },
            },
        },
    }
    doc["paths"].update(ui_spec.paths(_problem_ref, eid_param, api_errors))
    doc["components"]["schemas"].update(ui_spec.schemas())
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
