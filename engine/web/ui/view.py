"""``GET /v1/executions/{id}/view`` (scope ``read``): what the dashboard draws for one execution.

The graph the execution runs (its pinned hash, not the catalog's current version) as Mermaid, the
state of every node (:mod:`engine.web.ui.states`), the history as a timeline
(:mod:`engine.web.ui.timeline`), the compensations in the order they ran, and per step what it was
given (its configuration as written, templates unrendered) and what it returned (the stored output,
clipped). One request per refresh: the page polls it while it is open.

``GET /v1/whoami`` (scope ``read``) says which scopes the caller's key has, so the page can hide
the buttons a read-only key may not use.

Contract: docs/http-api.md ("Execution view").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.redact import REDACTED
from engine.web.auth import authorize
from engine.web.bodies import json_response
from engine.web.problems import Problem

if TYPE_CHECKING:  # pragma: no cover - typing only
    from starlette.requests import Request
    from starlette.responses import Response

    from dsl.graph import Graph
    from engine.runtime import Runtime
    from engine.web.core import HopflowApp

TIMELINE_LIMIT = 500  # newest history entries in the timeline (the history route has them all)
MAX_VALUE_CHARS = 4000  # of one output or input shown
MAX_OUTPUTS = 200  # stored outputs listed (a foreach over thousands of items stores thousands)


async def view(hop: HopflowApp, request: Request) -> Response:
    from engine.errors import GraphMissing, InvalidExecutionId, UnknownExecution

    authorize(hop.config, request, scope="read")
    eid: str = request.path_params["execution_id"]
    runtime = await hop.runtime_async()
    try:
        doc = await hop.call(execution_view, runtime, eid)
    except (UnknownExecution, InvalidExecutionId):
        shown = eid if len(eid) <= 100 else eid[:100] + "…"
        raise Problem("unknown-execution", f"unknown execution {shown!r}") from None
    except GraphMissing:
        raise Problem("misconfigured", f"the graph of execution {eid!r} is missing from Redis") from None
    return json_response(doc)


async def whoami(hop: HopflowApp, request: Request) -> Response:
    """``{"scopes": ["read", "operate"?]}`` for the caller's key."""
    authorize(hop.config, request, scope="read")
    scopes = ["read"]
    try:
        authorize(hop.config, request, scope="operate")
        scopes.append("operate")
    except Problem as exc:
        if exc.status != 403:
            raise
    return json_response({"scopes": scopes})


def execution_view(runtime: Runtime, eid: str) -> dict[str, Any]:
    """The view document (blocking: Redis reads)."""
    from dsl.render import drawn_id, to_mermaid
    from engine.state.store import check_execution_id
    from engine.web.ui.states import node_states
    from engine.web.ui.timeline import compensations, timeline

    check_execution_id(eid)
    record = runtime.record(eid)
    history = runtime.history(eid)
    graph = runtime.store.get_graph(str(record.get("graph")))
    states = node_states(graph, record, history)
    for node_id, state in states.items():
        node = graph.nodes[node_id]
        state["drawn"] = drawn_id(node_id)
        state["undo"] = drawn_id(node_id, "undo") if node.compensate is not None else None
        state["join"] = drawn_id(node_id, "join") if node.kind in ("parallel", "foreach") else None
    header = runtime.store.header(eid)
    shown = runtime.redactor(eid, header).value  # secrets (engine/redact.py): no view shows them
    return {
        "execution_id": eid,
        "workflow": record.get("workflow"),
        "graph": record.get("graph"),
        "status": record.get("status"),
        "created_at": record.get("created_at"),
        "updated_at": record.get("updated_at"),
        "error": record.get("error"),
        "output": _clip(record.get("output")),
        "input": _clip(shown(_loads(header.get("input")))),
        "parent": _loads(header.get("parent")),
        "current": record.get("current") or [],
        "mermaid": to_mermaid(graph),
        "nodes": states,
        "steps": _steps(graph, runtime.store.all_outputs(eid), shown),
        "compensations": compensations(history),
        "timeline": timeline(history, TIMELINE_LIMIT),
    }


def _steps(graph: Graph, outputs: dict[str, Any], shown: Callable[[Any], Any]) -> dict[str, Any]:
    """Per step: its configuration as written (templates unrendered), the rendered input it ran with
    (recorded for steps with a compensation) and its stored outputs; a secret step's values are
    never shown, any other's with the secret values redacted."""
    from dsl.graph import thaw
    from engine.context import input_field

    suffix = input_field("")  # "<output field><suffix>" holds the step's rendered input
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for field in sorted(outputs)[:MAX_OUTPUTS]:
        kind = "inputs" if field.endswith(suffix) else "outputs"
        item, _, step = (field[: -len(suffix)] if kind == "inputs" else field).rpartition("/")
        node = graph.nodes.get(step)
        value = REDACTED if node is not None and node.secret else _clip(shown(outputs[field]))
        found.setdefault(step, {"inputs": [], "outputs": []})[kind].append({"item": item, "value": value})
    steps = {}
    for node_id, node in graph.nodes.items():
        stored = found.get(node_id, {"inputs": [], "outputs": []})
        steps[node_id] = {"kind": node.kind, "config": _clip(thaw(node.config)), **stored}
    return steps


def _loads(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _clip(value: Any) -> Any:
    """``value``, or ``{"truncated": true, "preview": "…"}`` when its JSON is longer than the limit."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= MAX_VALUE_CHARS:
        return value
    return {"truncated": True, "chars": len(text), "preview": text[:MAX_VALUE_CHARS] + "…"}
