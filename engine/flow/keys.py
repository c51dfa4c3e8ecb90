"""Flow-control keys: rendered once, when an execution starts, and looked up for every message.

The header field ``fc`` holds ``{"": workflow limits, "<step id>": step limits}`` as
:meth:`FlowControl.to_dict` (message limits only: ``rate``/``period``/``parallelism``), with each key
already rendered and prefixed with the store's namespace (two deployments on one QStash account or
Redis never share a key by accident). A message carries its node's entry if the step has one, else
the workflow's: a step's ``flow_control`` replaces the workflow's for the deliveries that run it.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from dsl.flow_control import default_key
from dsl.graph import Graph
from dsl.templates import TemplateError, is_template, render_string
from engine.context import iso
from engine.dispatch.flow_control import FlowControl
from engine.errors import InputInvalid
from engine.model import Message

HEADER_FIELD = "fc"
MAX_KEY_CHARS = 500


def has_message_limits(graph: Graph) -> bool:
    """Whether any message of this graph's executions carries a flow-control key."""
    flows = [graph.flow_control, *(n.flow_control for n in graph.nodes.values())]
    return any(f and (f.get("rate") or f.get("parallelism")) for f in flows)


def uses_flow_control(graph: Graph) -> bool:
    return bool(graph.flow_control) or any(n.flow_control for n in graph.nodes.values())


def start_scope(graph: Graph, execution_id: str, input: Any, now: float) -> dict[str, Any]:
    """What a key may read (dsl/flow_control.py KEY_NAMES): input, the declared vars' initial values,
    the declared env, the execution."""
    return {
        "input": input,
        "vars": {name: decl.get("initial") for name, decl in graph.vars.items()},
        "env": {name: os.environ[name] for name in graph.env if name in os.environ},
        "execution": {"id": execution_id, "workflow": graph.name, "started_at": iso(now)},
    }


def render_key(source: str | None, default: str, scope: Mapping[str, Any], where: str) -> str:
    """A key as text; a template that fails or renders nothing is the caller's mistake (InputInvalid:
    the start is refused, nothing written)."""
    if source is None:
        return default
    if not is_template(source):
        return source
    try:
        value = render_string(source, scope)
    except TemplateError as exc:
        raise InputInvalid([{"path": where, "message": f"flow_control key: {exc}"}]) from None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    if not text.strip() or value is None:
        raise InputInvalid([{"path": where, "message": "flow_control key rendered to nothing"}])
    if len(text) > MAX_KEY_CHARS:
        raise InputInvalid([{"path": where, "message": f"flow_control key longer than {MAX_KEY_CHARS}"}])
    return text


def rendered(graph: Graph, execution_id: str, input: Any, now: float, prefix: str) -> dict[str, Any]:
    """``{"": {...}, step: {...}}``: every message limit of the graph with its key rendered."""
    scope = start_scope(graph, execution_id, input, now)
    out: dict[str, Any] = {}
    places = [("", graph.flow_control), *((sid, n.flow_control) for sid, n in graph.nodes.items())]
    for sid, limits in places:
        if not limits or not (limits.get("rate") or limits.get("parallelism")):
            continue
        where = "/flow_control/key" if not sid else f"/steps/{sid}/flow_control/key"
        key = render_key(limits.get("key"), default_key(graph.name, sid or None), scope, where)
        flow = FlowControl.from_limits(prefix + key, limits)
        if flow is not None:
            out[sid] = flow.to_dict()
    return out


class FlowResolver:
    """``Message -> FlowControl | None`` for a dispatcher (its ``flow`` attribute).

    Costs nothing for executions of graphs without message limits (the graph is cached by hash and
    the execution's hash by the store); otherwise one ``HGET`` per execution per process, cached."""

    def __init__(self, store: Any, max_cached: int = 20_000) -> None:
        self.store = store
        self.max_cached = max_cached
        self._by_execution: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._graphs: dict[str, bool] = {}
        self._lock = threading.Lock()

    def remember(self, execution_id: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._by_execution[execution_id] = record
            self._by_execution.move_to_end(execution_id)
            while len(self._by_execution) > self.max_cached:
                self._by_execution.popitem(last=False)

    def record(self, execution_id: str) -> dict[str, Any]:
        with self._lock:
            found = self._by_execution.get(execution_id)
        if found is not None:
            return found
        graph_hash = self.store.pinned_graph(execution_id)
        if not graph_hash:
            return {}
        limited = self._graphs.get(graph_hash)
        if limited is None:
            limited = self._graphs[graph_hash] = has_message_limits(self.store.get_graph(graph_hash))
        record: dict[str, Any] = {}
        if limited:
            store = self.store  # through the store: counted as a round trip, StoreUnavailable when down
            raw = store._call(store.client.hget, store.header_key(execution_id), HEADER_FIELD)
            if raw:
                record = json.loads(raw)
        self.remember(execution_id, record)
        return record

    def __call__(self, message: Message) -> FlowControl | None:
        record = self.record(message.execution_id)
        if not record:
            return None
        spec = record.get(message.node) or record.get("")
        return FlowControl.from_dict(spec) if spec else None
