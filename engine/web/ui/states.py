"""Where an execution is on its graph: one state per node, derived from the record and the history.

Pure (no I/O, no Redis): the dashboard's execution view calls it with what ``Runtime.record`` and
``Runtime.history`` returned, and tests call it with hand-written histories. The history says what
each node *did* (ran ok, failed, was retried, parked, skipped, compensated); the record's ``current``
(and ``where``, when the server gives it) says where each live branch *is* now, which wins over the
past for a node some branch is on.

States: ``pending`` (not reached), ``running``, ``waiting`` (an event, a time, a child, an offloaded
call), ``retrying`` (an attempt failed, the next one is scheduled), ``done``, ``failed``, ``skipped``
(its ``if`` was false), ``compensated`` (ran, then was undone) and ``cancelled`` (a stop halted it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsl.durations import format_ms
from dsl.graph import Graph

STATES = (
    "pending",
    "running",
    "waiting",
    "retrying",
    "done",
    "failed",
    "skipped",
    "compensated",
    "cancelled",
)
COMPENSATE_NODE = "$compensate"  # the branch node of an execution that is compensating
TERMINAL = frozenset({"succeeded", "failed", "compensated", "cancelled", "dead"})
WHERE_STATES = {  # the record's where[].state → a node state
    "running": "running",
    "joining": "running",
    "waiting": "waiting",
    "offloaded": "waiting",
    "retrying": "retrying",
}


@dataclass
class _Node:
    """What the history says about one node (its state is decided at the end)."""

    last: str = "pending"  # done | failed | skipped | retrying | waiting | cancelled
    runs: int = 0  # successful runs (foreach items and loops run a node several times)
    skipped: int = 0
    attempt: int = 0  # the highest attempt seen
    duration_ms: int | None = None  # of its last successful run
    error: dict[str, Any] | None = None  # the last failed attempt's error
    wait: dict[str, str] = field(default_factory=dict)  # the last park's details (wait_* fields)
    retry: dict[str, Any] = field(default_factory=dict)  # the last scheduled retry
    pushed: int = 0  # compensations registered (runs of a node that has a compensation)
    compensated: int = 0  # compensations that ran ok
    comp_state: str | None = None  # running | retrying | failed | done
    comp_error: dict[str, Any] | None = None
    order: int = -1  # history index of its last registration (the compensation stack's order)
    pushed_on_failure: bool = False  # its last failed attempt registered its undo (until a retry)


def node_states(graph: Graph, record: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> dict:
    """``{node id: {state, detail, kind, runs, attempt, error, compensation, ...}}`` for every node."""
    seen: dict[str, _Node] = {node_id: _Node() for node_id in graph.nodes}
    for index, entry in enumerate(history):
        _apply(seen, graph, index, entry)

    status = str(record.get("status") or "")
    live = _live_positions(record) if status not in TERMINAL else {}
    if status == "compensating" or status == "compensation_failed":
        gave_up = [e.get("step") for e in history if e.get("event") == "compensation_failed"]
        _mark_compensating(seen, graph, status, gave_up[-1] if gave_up else None)

    out: dict[str, dict[str, Any]] = {}
    for node_id, node in graph.nodes.items():
        info = seen[node_id]
        state, detail = _decide(info, live.get(node_id), status)
        out[node_id] = {
            "state": state,
            "detail": detail,
            "kind": node.kind,
            "runs": info.runs,
            "attempt": info.attempt or None,
            "duration_ms": info.duration_ms,
            "error": info.error if state in ("failed", "retrying") else None,
            "compensation": _compensation(info) if node.compensate is not None else None,
            "branches": sorted(live[node_id]["branches"]) if node_id in live else [],
            "wait": dict(info.wait) if state == "waiting" and info.wait else None,
        }
    return out


# ------------------------------------------------------------------------------------- history


def _apply(seen: dict[str, _Node], graph: Graph, index: int, entry: Mapping[str, Any]) -> None:
    step = entry.get("step")
    if not isinstance(step, str) or step not in seen:
        return
    info = seen[step]
    phase = entry.get("phase")
    event = entry.get("event")
    attempt = _int(entry.get("attempt"))
    if phase == "run":
        info.attempt = max(info.attempt, attempt or 1)
        if entry.get("status") == "ok":
            info.last = "done"
            info.pushed_on_failure = False
            info.runs += 1
            info.duration_ms = _int(entry.get("duration_ms"))
            info.error = None
            info.wait = {}
            info.order = index
            if graph.nodes[step].compensate is not None:
                info.pushed += 1
        else:
            info.last = "failed"
            info.error = _error(entry)
            node = graph.nodes[step]
            if node.compensate_on_failure and node.compensate is not None:
                # registered when it failed for good; a retry event right after says it did not
                info.pushed += 1
                info.order = index
                info.pushed_on_failure = True
    elif phase == "skip":
        info.skipped += 1
        if info.last == "pending":
            info.last = "skipped"
    elif phase == "compensate":
        if entry.get("status") == "ok":
            info.compensated += 1
            info.comp_state = "done"
            info.comp_error = None
        else:
            info.comp_state = "failed"
            info.comp_error = _error(entry)
    elif event == "retry":
        retry = {"attempt": attempt, "delay_ms": _int(entry.get("delay_ms")), "time": entry.get("time")}
        if entry.get("phase") == "compensate-retry":
            info.comp_state = "retrying"
        else:
            info.last = "retrying"
            info.retry = retry
            if info.pushed_on_failure:
                info.pushed -= 1
                info.pushed_on_failure = False
    elif event == "park":
        info.last = "waiting"
        info.wait = {k[5:]: str(v) for k, v in entry.items() if k.startswith("wait_")}
    elif event == "halted":
        if info.last in ("waiting", "retrying", "pending", "done"):
            info.last = "cancelled"
            info.error = {"name": entry.get("error") or "halted", "message": "halted at a stop"}
    elif event == "compensation_failed":
        info.comp_state = "failed"


def _error(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": entry.get("error"),
        "message": entry.get("message") or "",
        "attempt": _int(entry.get("attempt")),
    }


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------- the present


def _live_positions(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Node id → {phase, branches, where} for every branch that is on it now."""
    live: dict[str, dict[str, Any]] = {}
    for cur in record.get("current") or ():
        node = cur.get("node")
        if not isinstance(node, str) or node == COMPENSATE_NODE:
            continue
        slot = live.setdefault(node, {"phases": set(), "branches": set(), "where": []})
        slot["phases"].add(cur.get("phase") or "run")
        slot["branches"].add(cur.get("branch") or "")
    for where in record.get("where") or ():
        node = where.get("node") if isinstance(where, Mapping) else None
        if isinstance(node, str) and node in live:
            live[node]["where"].append(where)
    return live


def _mark_compensating(seen: dict[str, _Node], graph: Graph, status: str, gave_up: Any = None) -> None:
    """The compensation on top of the stack: the newest run whose undo has not happened yet. When
    one gave up, the one the history names (a fan-out's partial unwind undoes a loser's step, which
    need not be the newest registered: a winner's stays on the stack)."""
    waiting = [(info.order, node_id) for node_id, info in seen.items() if info.pushed > info.compensated]
    if status == "compensation_failed" and isinstance(gave_up, str) and gave_up in seen:
        waiting = [(0, gave_up)]
    if not waiting:
        return
    _, top = max(waiting)
    info = seen[top]
    if status == "compensation_failed":
        info.comp_state = "failed"
    elif info.comp_state not in ("retrying", "failed"):
        info.comp_state = "running"


def _decide(info: _Node, live: dict[str, Any] | None, status: str) -> tuple[str, str]:
    if live is not None:
        return _live_state(info, live)
    if info.comp_state in ("running", "retrying", "failed"):
        what = {"running": "compensating now", "retrying": "compensation retrying"}.get(info.comp_state)
        if info.comp_state == "failed":
            err = info.comp_error or {}
            what = f"compensation failed: {_error_text(err)}" if err else "compensation failed"
            return "failed", what
        return "running", what or ""
    if info.pushed and info.compensated >= info.pushed:
        times = f" ({info.compensated} times)" if info.pushed > 1 else ""
        if info.last == "failed":
            return "compensated", f"failed ({_error_text(info.error or {})}), then compensated{times}"
        return "compensated", "ran, then compensated" + times
    last = info.last
    if last == "done":
        return "done", _done_text(info)
    if last == "failed":
        return "failed", _error_text(info.error or {})
    if last == "skipped":
        return "skipped", "skipped: its condition was false"
    if last == "cancelled":
        return "cancelled", "stopped here by " + str((info.error or {}).get("name") or "a stop")
    if last in ("waiting", "retrying") and status in TERMINAL:
        # the execution ended while this node was parked (a failed sibling, a stop)
        return "cancelled", "the execution ended while it was " + last
    if last == "waiting":
        return "waiting", _wait_text(info.wait)
    if last == "retrying":
        return "retrying", _retry_text(info)
    return "pending", "not reached"


def _live_state(info: _Node, live: dict[str, Any]) -> tuple[str, str]:
    """A node some branch is on. The record's ``where`` (when the server gives it) knows the real
    times (until when a wait lasts, when the next attempt runs) and offloaded calls; the words stay
    ours, since the page already names the node."""
    phases = live["phases"]
    many = len(live["branches"]) > 1
    prefix = f"{len(live['branches'])} branches: " if many else ""
    where: Mapping[str, Any] = live["where"][0] if live["where"] else {}
    state = WHERE_STATES.get(str(where.get("state") or ""))
    until = where.get("until") if isinstance(where.get("until"), str) else None
    if where.get("state") == "offloaded":
        return "waiting", prefix + "waiting for the answer of its offloaded call" + _by(until)
    child = where.get("child")
    if isinstance(child, Mapping) and child.get("execution_id"):
        shown = f" ({child['status']})" if child.get("status") else ""
        return "waiting", prefix + f"waiting for child execution {child['execution_id']}{shown}" + _by(until)
    if "park" in phases or state == "waiting":
        return "waiting", prefix + _wait_text(info.wait, until)
    if "undo" in phases and where.get("state") == "compensation_failed":
        return "failed", prefix + "undoing its losers: a compensation gave up (`hopflow resume` retries it)"
    if "undo" in phases:  # a fan-out that ended early, undoing its losers (engine/sagas.py)
        return "running", prefix + "undoing what its losing branches registered"
    if "join" in phases:
        return "running", prefix + "waiting for its branches to finish"
    if info.last == "retrying" or state == "retrying":
        at = where.get("next_attempt_at") if isinstance(where.get("next_attempt_at"), str) else None
        return "retrying", prefix + _retry_text(info, at)
    return "running", prefix + "running" + (f" (attempt {info.attempt + 1})" if info.last == "failed" else "")


def _by(until: str | None) -> str:
    return f" (times out at {until})" if until else ""


def _compensation(info: _Node) -> str | None:
    if info.comp_state is not None:
        return info.comp_state
    return "registered" if info.pushed > info.compensated else None


# ------------------------------------------------------------------------------------------ words


def _done_text(info: _Node) -> str:
    text = "done"
    if info.runs > 1:
        text += f" ({info.runs} runs)"
    if info.attempt > 1:
        text += f" after {info.attempt} attempts"
    if info.duration_ms is not None:
        text += f" in {format_ms(info.duration_ms) if info.duration_ms >= 1000 else f'{info.duration_ms} ms'}"
    return text


def _error_text(error: Mapping[str, Any]) -> str:
    name = error.get("name") or "error"
    message = error.get("message") or ""
    return f"{name}: {message}" if message else str(name)


def _wait_text(wait: Mapping[str, str], until: str | None = None) -> str:
    kind = wait.get("wait")
    if kind == "event":
        return f"waiting for event {wait.get('event', '?')} (key {wait.get('key', '?')})" + _by(until)
    if kind in ("until", "for"):
        return (
            f"waiting until {until}"
            if until
            else ("waiting (a delay)" if kind == "for" else "waiting until a set time")
        )
    if "child" in wait:
        return "waiting for child execution " + wait["child"] + _by(until)
    if "call" in wait or kind == "offload":
        return "waiting for the answer of its offloaded call" + _by(until)
    return "waiting" + (f" until {until}" if until else "")


def _retry_text(info: _Node, at: str | None = None) -> str:
    err = info.error or {}
    attempt = info.retry.get("attempt")
    delay = info.retry.get("delay_ms")
    when = f" at {at}" if at else f" in {format_ms(delay) if delay and delay >= 1000 else f'{delay or 0} ms'}"
    after = f" after {_error_text(err)}" if err else ""
    return f"retrying: attempt {attempt or '?'}{when}{after}"
