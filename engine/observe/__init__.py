"""Observers: what the runtime tells metrics and logs about its work, behind one small interface.

The interpreter, the runtime and the HTTP layer call :class:`Observers` at a few points (a node was
advanced, a delivery was handled, an execution finished, messages were published). With no observer
registered each call site costs one truth test of an empty tuple: nothing is built, nothing imported.
Metrics (:mod:`engine.observe.metrics`, prometheus-client, imported only when enabled) and the per-node
log line (:mod:`engine.observe.logs`) are observers, and so are traces (:mod:`engine.observe.traces`,
OpenTelemetry, imported only when enabled). An observer may leave out methods it has no use for.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("hopflow.observe")


@dataclass(frozen=True)
class NodeEvent:
    """One node advanced and checkpointed."""

    execution_id: str
    workflow: str
    step: str
    kind: str  # the step kind (action, http, wait, …); a compensation: the compensation's kind
    phase: str  # run | compensate | skip | join | park | halt
    outcome: str  # ok | error | retry | waiting | skipped | fanout | joined | halted | …
    attempt: int
    ms: float
    round_trips: int  # Redis calls this node made (begin, reads, checkpoint, publish clean-up)
    branch: str = ""
    trace_id: str = ""  # the execution's trace id (engine.observe.traceids), also without OpenTelemetry
    seq: int = -1  # the branch's checkpoint seq the node ran at (its span id derives from it)
    ended_at: float = 0.0  # unix seconds when the node's checkpoint was written
    undoes: str = ""  # a compensation: the span id of the step run it undoes ("" when unknown)
    attributes: Mapping[str, Any] = field(default_factory=dict)  # kind-specific (http: method, url, status)


@dataclass(frozen=True)
class ExecutionEvent:
    """An execution reached a final status (or parked as compensation_failed)."""

    execution_id: str
    workflow: str
    status: str
    created_at: float  # unix seconds (real time) when it was started; 0 when unknown
    ended_at: float
    parent: Mapping[str, Any] | None = None  # a child workflow's parent: {eid, branch, node, seq}


class Observer(Protocol):
    def node(self, event: NodeEvent) -> None: ...
    def delivery(self, result: str) -> None: ...
    def finished(self, workflow: str, status: str) -> None: ...
    def published(self, dispatcher: str, count: int, ok: bool) -> None: ...
    def ended(self, event: ExecutionEvent) -> None: ...  # optional


class Observers:
    """The observers of one runtime; an empty one is falsy, so call sites skip building events."""

    def __init__(self) -> None:
        self.items: tuple[Observer, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, observer: Observer) -> None:
        if observer not in self.items:
            self.items = (*self.items, observer)

    def _each(self, name: str, *args: object) -> None:
        for observer in self.items:
            method = getattr(observer, name, None)
            if method is None:  # an observer implements what it needs
                continue
            try:
                method(*args)
            except Exception:  # an observer never breaks the work it watches
                log.exception("observer %s failed in %s", type(observer).__name__, name)

    def node(self, event: NodeEvent) -> None:
        self._each("node", event)

    def delivery(self, result: str) -> None:
        self._each("delivery", result)

    def finished(self, workflow: str, status: str) -> None:
        self._each("finished", workflow, status)

    def published(self, dispatcher: str, count: int, ok: bool) -> None:
        self._each("published", dispatcher, count, ok)

    def ended(self, event: ExecutionEvent) -> None:
        self._each("ended", event)


def node_outcome(history: list[list[str]], default_step: str) -> tuple[str, str, str]:
    """(step, phase, outcome) of a node from the history lines its checkpoint wrote."""
    step, phase, outcome = default_step, "", ""
    events: set[str] = set()
    for flat in history:
        entry = dict(zip(flat[::2], flat[1::2], strict=False))
        if "phase" in entry and "event" not in entry:
            step = entry.get("step") or step
            phase = entry["phase"]
            outcome = "skipped" if phase == "skip" else entry.get("status") or "ok"
        elif "event" in entry:
            events.add(entry["event"])
            if entry.get("step") and not phase:
                step = entry["step"]
    for event, name in (
        ("retry", "retry"),
        ("park", "waiting"),
        ("compensation_failed", "compensation_failed"),
        ("halted", "halted"),
    ):
        if event in events:
            outcome = name
            break
    return step, phase or "run", outcome or "ok"
