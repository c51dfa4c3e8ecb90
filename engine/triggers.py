"""Event triggers: an event (``notify``, ``POST /v1/events/{name}``, an ``emit`` step) starts one
execution of every workflow whose ``triggers`` name it, exactly once per event id.

Exactly once comes from the execution id: it is derived from (workflow, event name, event id), and
``Runtime.start`` is idempotent per id, so a retried notify with the same id — or a redelivered
``emit``, whose event id is its step path — finds the execution it already started instead of
starting a second one.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dsl.graph import thaw
from dsl.templates import TemplateError, is_template, render
from engine.errors import InputInvalid
from engine.state.store import CLIENT_EXECUTION_ID

log = logging.getLogger("hopflow.triggers")

EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+=~/-]{0,199}")  # a client's id for one event
TEMPLATE_SECONDS = 1.0  # a trigger's key and input templates are rendered inside the notify call


@dataclass
class Notified:
    """What one event did: waiting executions resumed, executions started by triggers, and the
    triggers that could not start one (a template error, input the workflow's schema rejects)."""

    id: str
    resumed: int = 0
    started: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)


def execution_id(workflow: str, event: str, event_id: str) -> str:
    """The id of the execution ``event``/``event_id`` starts of ``workflow``: the same every time."""
    digest = hashlib.sha256(f"{event}\0{event_id}".encode()).hexdigest()[:32]
    eid = f"{workflow}@event-{digest}"
    if CLIENT_EXECUTION_ID.fullmatch(eid):
        return eid
    return "event-" + hashlib.sha256(f"{workflow}\0{event}\0{event_id}".encode()).hexdigest()[:40]


def event_scope(event: str, key: str, data: Any, event_id: str) -> dict[str, Any]:
    return {"event": {"name": event, "key": key, "data": data, "id": event_id}}


def matches(trigger: Mapping[str, Any], scope: Mapping[str, Any]) -> bool:
    """No ``key``: every event of that name. A literal: the event's key equals it. A template: it
    renders (with ``event`` in scope) to the event's key or to ``true``."""
    if "key" not in trigger or trigger["key"] is None:
        return True
    want = trigger["key"]
    key = scope["event"]["key"]
    if isinstance(want, str) and is_template(want):
        got = render(want, scope, seconds=TEMPLATE_SECONDS)
        return got is True or (not isinstance(got, bool) and got is not None and str(got) == key)
    return str(want) == key


def trigger_input(trigger: Mapping[str, Any], scope: Mapping[str, Any]) -> Any:
    """The new execution's input: the rendered ``input``, else the event's data."""
    if "input" not in trigger:
        return scope["event"]["data"]
    return render(thaw(trigger["input"]), scope, seconds=TEMPLATE_SECONDS)


def start_triggered(runtime: Any, event: str, key: str, data: Any, event_id: str) -> Notified:
    """Start the executions ``event`` triggers (``runtime``: an :class:`engine.runtime.Runtime`).

    A trigger that cannot start (its template fails, the workflow's input schema rejects the input)
    is reported in ``failed`` and logged; the others still start. Store and dispatcher failures
    propagate: the caller retries with the same event id and nothing starts twice."""
    out = Notified(id=event_id)
    scope = event_scope(event, key, data, event_id)
    for graph, trigger in runtime.catalog.triggered_by(event):
        eid = execution_id(graph.name, event, event_id)
        try:
            if not matches(trigger, scope):
                continue
            value = trigger_input(trigger, scope)
            runtime.start(graph.name, value, eid)
        except (TemplateError, InputInvalid) as exc:
            message = str(exc) if isinstance(exc, TemplateError) else "the input does not match its schema"
            log.warning("event %r did not start workflow %r: %s", event, graph.name, message)
            out.failed.append({"workflow": graph.name, "message": message})
            continue
        if eid not in out.started:
            out.started.append(eid)
    return out
