"""The OpenAPI description of the dashboard's routes, merged into ``GET /openapi.json``.

Kept next to the routes it describes; :mod:`engine.web.openapi` adds these paths and schemas to the
document (``tests/test_asgi.py`` checks that every route is described and the document validates).
"""

from __future__ import annotations

from typing import Any

from engine.web.ui.assets import ASSETS
from engine.web.ui.states import STATES


def paths(problem: Any, eid_param: dict[str, Any], api_errors: dict[str, Any]) -> dict[str, Any]:
    """``problem(description)`` builds a problem response; the rest are openapi.py's shared parts."""

    def ok(ref: str, description: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
        }

    read = [{"apiKey": []}]
    return {
        "/v1/workflows": {
            "get": {
                "operationId": "listWorkflows",
                "summary": "Every workflow with its graph hash and validation state (scope read)",
                "security": read,
                "responses": {"200": ok("Workflows", "The catalogue"), **api_errors},
            }
        },
        "/v1/workflows/{name}": {
            "get": {
                "operationId": "getWorkflow",
                "summary": "One workflow: its Mermaid picture and nodes (scope read)",
                "security": read,
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": ok("Workflow", "The workflow"),
                    "404": problem("Unknown workflow"),
                    **api_errors,
                },
            }
        },
        "/v1/executions/{execution_id}/view": {
            "get": {
                "operationId": "viewExecution",
                "summary": "The execution on its graph: node states, timeline, compensations (scope read)",
                "security": read,
                "parameters": [eid_param],
                "responses": {
                    "200": ok("ExecutionView", "What the dashboard draws"),
                    "404": problem("Unknown execution"),
                    **api_errors,
                },
            }
        },
        "/v1/whoami": {
            "get": {
                "operationId": "whoami",
                "summary": "The scopes of the caller's key",
                "security": read,
                "responses": {"200": ok("WhoAmI", "The key's scopes"), **api_errors},
            }
        },
        "/ui": {
            "get": {
                "operationId": "dashboardRedirect",
                "summary": "Redirects to /ui/ (the dashboard)",
                "security": [],
                "responses": {"307": {"description": "Location: ui/"}},
            }
        },
        **{
            f"/ui/{name}": {
                "get": {
                    "operationId": "dashboard_" + (name or "index").replace(".", "_"),
                    "summary": "A dashboard file (no execution data: the page asks for a key)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The file",
                            "content": {media: {"schema": {"type": "string"}}},
                        },
                        "304": {"description": "Not modified (ETag)"},
                    },
                }
            }
            for name, (_, media) in ASSETS.items()
        },
    }


def schemas() -> dict[str, Any]:
    diagnostic = {
        "type": "object",
        "required": ["severity", "rule", "message", "line", "column"],
        "properties": {
            "severity": {"enum": ["error", "warning"]},
            "rule": {"type": "string"},
            "message": {"type": "string"},
            "line": {"type": "integer"},
            "column": {"type": "integer"},
        },
    }
    summary = {
        "type": "object",
        "required": ["name", "graph", "steps", "valid", "diagnostics"],
        "properties": {
            "name": {"type": "string"},
            "graph": {"type": ["string", "null"]},
            "steps": {"type": ["integer", "null"]},
            "description": {"type": ["string", "null"]},
            "valid": {"type": "boolean"},
            "diagnostics": {"type": "array", "items": diagnostic},
            "file": {"type": ["string", "null"], "description": "relative to the workflows folder"},
        },
    }
    return {
        "WorkflowSummary": summary,
        "Workflows": {
            "type": "object",
            "required": ["workflows"],
            "properties": {
                "workflows": {"type": "array", "items": {"$ref": "#/components/schemas/WorkflowSummary"}}
            },
        },
        "Workflow": {
            "allOf": [
                {"$ref": "#/components/schemas/WorkflowSummary"},
                {
                    "type": "object",
                    "required": ["mermaid", "nodes"],
                    "properties": {
                        "mermaid": {"type": ["string", "null"]},
                        "example_input": {"description": "NAME.input.json next to the file, if any"},
                        "nodes": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "kind", "line"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "kind": {"type": "string"},
                                    "line": {"type": ["integer", "null"]},
                                    "drawn": {"type": "string"},
                                    "undo": {"type": ["string", "null"]},
                                },
                            },
                        },
                    },
                },
            ]
        },
        "ExecutionView": {
            "type": "object",
            "required": ["execution_id", "status", "mermaid", "nodes", "timeline"],
            "properties": {
                "execution_id": {"type": "string"},
                "workflow": {"type": "string"},
                "graph": {"type": "string"},
                "status": {"type": "string"},
                "mermaid": {"type": "string"},
                "nodes": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["state", "detail"],
                        "properties": {"state": {"enum": list(STATES)}, "detail": {"type": "string"}},
                    },
                },
                "steps": {"type": "object"},
                "compensations": {"type": "array", "items": {"type": "object"}},
                "timeline": {
                    "type": "object",
                    "required": ["total", "shown", "entries"],
                    "properties": {
                        "total": {"type": "integer"},
                        "shown": {"type": "integer"},
                        "entries": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "error": {"type": ["object", "null"]},
                "input": {},
                "output": {},
            },
        },
        "WhoAmI": {
            "type": "object",
            "required": ["scopes"],
            "properties": {"scopes": {"type": "array", "items": {"enum": ["read", "operate"]}}},
        },
    }
