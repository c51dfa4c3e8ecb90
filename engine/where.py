"""Where an execution is, in words: one entry per active branch (the record's ``where``).

Built from what the store already holds — each branch's node, phase, attempt and park info, the
parked set, the real-time ``due`` the interpreter stamps on a branch whose own delayed message is
pending, the compensation stack — plus the graph (node kinds) and the history (the error of the
attempt that is being retried). Times are real time (ISO 8601 UTC), whatever clock ran the execution.
The shape is fixed by the operations contract (docs/operations.md, "Reading an execution's status").
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from dsl.durations import format_ms

COMPENSATE = "$compensate"


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _loads(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _float(raw: Any) -> float | None:
    try:
        return float(raw) if raw not in (None, "") else None
    except (TypeError, ValueError):
        return None


def branches(
    *,
    graph: Any,
    status: str | None,
    branches: dict[str, dict[str, str]],
    parked: dict[str, str],
    history: list[dict[str, Any]],
    compensation_top: str | None,
    child_status: Any = None,
) -> list[dict[str, Any]]:
    """The ``where`` list. ``child_status(id)`` → a child execution's status (or None)."""
    out: list[dict[str, Any]] = []
    for path in sorted(branches):
        fields = branches[path]
        node_id = fields.get("node")
        phase = fields.get("phase") or "run"
        if not node_id or phase == "done":
            continue
        out.append(
            _one(
                graph,
                status,
                path,
                node_id,
                phase,
                fields,
                path in parked,
                history,
                compensation_top,
                child_status,
            )
        )
    return out


def _one(
    graph: Any,
    status: str | None,
    path: str,
    node_id: str,
    phase: str,
    fields: dict[str, str],
    is_parked: bool,
    history: list[dict[str, Any]],
    compensation_top: str | None,
    child_status: Any,
) -> dict[str, Any]:
    node = graph.nodes.get(node_id) if graph is not None else None
    kind = node.kind if node is not None else ("compensate" if node_id == COMPENSATE else "unknown")
    attempt = int(fields.get("attempt") or 1)
    due = _float(fields.get("due")) if is_parked or phase == "park" else None
    entry: dict[str, Any] = {
        "branch": path,
        "node": node_id,
        "kind": kind,
        "state": "running",
        "waiting_for": None,
        "until": None,
        "attempt": attempt,
        "next_attempt_at": None,
        "call": None,
        "child": None,
        "text": "",
    }
    where = f" (branch {path})" if path else ""
    label = f"step {node_id!r} ({kind}){where}"

    if phase == "compensate" or node_id == COMPENSATE:
        due = _float(fields.get("due"))  # every checkpoint of this branch stamps or clears it
        top = _loads(compensation_top) or {}
        step = top.get("step")
        comp = graph.nodes[step].compensate if graph is not None and step in graph.nodes else None
        entry.update(kind="compensate", state="compensating")
        if status == "compensation_failed":
            entry["state"] = "compensation_failed"
            entry["text"] = (
                f"compensation of step {step!r} gave up after {attempt} attempt(s): "
                "`hopflow resume` retries it"
                if step
                else "a compensation gave up: `hopflow resume` retries it"
            )
            return entry
        if not step:
            entry["text"] = "compensations done: finishing"
            return entry
        what = f"undoing step {step!r}" + (f" ({comp.kind})" if comp is not None else "")
        if due is not None:
            entry.update(state="retrying", next_attempt_at=iso(due))
            error = _last_error(history, step, "compensate")
            entry["text"] = f"compensating: {what}; attempt {attempt} at {iso(due)}" + (
                f" after {error}" if error else ""
            )
        else:
            entry["text"] = f"compensating: {what}, attempt {attempt}"
        return entry

    if phase == "undo":
        return _undoing(entry, status, fields, history, label)

    if phase == "join":
        total = int(fields.get("total") or 0)
        fin = int(fields.get("fin") or 0)
        entry["state"] = "joining"
        entry["text"] = f"{label}: {fin} of {total} branch(es) finished, waiting for the rest"
        timeout = _float(fields.get("due"))  # the fan-out's own timeout message, if it has one
        if timeout is not None:
            entry["until"] = iso(timeout)
            entry["text"] += f" until {iso(timeout)} (then it times out)"
        return entry

    if phase == "park":
        info = _loads(fields.get("park")) or {}
        wait = info.get("wait")
        until = iso(due)
        entry["until"] = until
        if wait == "event":
            entry["state"] = "waiting"
            entry["waiting_for"] = {"event": info.get("event"), "key": info.get("key")}
            text = f"{label}: waiting for event {info.get('event')!r} with key {info.get('key')!r}"
            entry["text"] = text + (f" until {until} (then it times out)" if until else " (no timeout)")
        elif wait in ("for", "until"):
            entry["state"] = "waiting"
            entry["text"] = f"{label}: waiting until {until}" if until else f"{label}: waiting"
            if info.get("expires"):
                entry["text"] += " (its timeout ends the wait first: it then fails)"
        elif wait == "offload":
            entry["state"] = "offloaded"
            entry["call"] = {
                "request": info.get("call"),
                "id": info.get("id"),
                "since": iso(_float(info.get("at"))),
            }
            text = f"{label}: its call {info.get('call')} is with the dispatcher, waiting for the answer"
            entry["text"] = text + (f" until {until}" if until else "")
        elif info.get("child"):
            child = info["child"]
            shown = child_status(child) if child_status is not None else None
            entry["state"] = "waiting"
            entry["child"] = {"execution_id": child, "status": shown}
            text = f"{label}: waiting for child execution {child}" + (f" ({shown})" if shown else "")
            entry["text"] = text + (f" until {until}" if until else "")
        else:
            entry["state"] = "waiting"
            entry["text"] = f"{label}: parked"
        return entry

    if due is not None:  # phase run with a delayed message of its own: a retry backoff
        error = _last_error(history, node_id, "run")
        entry.update(state="retrying", next_attempt_at=iso(due))
        entry["text"] = f"{label}: attempt {attempt - 1} failed" + (f" ({error})" if error else "")
        entry["text"] += f"; attempt {attempt} at {iso(due)}"
        return entry
    timeout = f", timeout {format_ms(node.timeout_ms)}" if node is not None and node.timeout_ms else ""
    again = f", attempt {attempt}" if attempt > 1 else ""
    entry["text"] = f"{label}: running or queued to run{again}{timeout}"
    return entry


def _undoing(
    entry: dict[str, Any],
    status: str | None,
    fields: dict[str, str],
    history: list[dict[str, Any]],
    label: str,
) -> dict[str, Any]:
    """A fan-out that ended early undoing what its losers registered (engine/sagas.py ``undo``)."""
    top = _loads(fields.get("utop")) or {}
    step, branch = top.get("step"), top.get("branch")
    left = int(fields.get("uleft") or 0)
    attempt = int(entry["attempt"])
    what = f"step {step!r} (branch {branch})" if step else "a step"
    head = f"{label}: undoing what its losers registered ({left} left)"
    entry["kind"] = "compensate"
    if status == "compensation_failed" and fields.get("ufail"):
        entry["state"] = "compensation_failed"
        entry["attempt"] = int(fields["ufail"])
        entry["text"] = (
            f"{head}: the compensation of {what} gave up after {fields['ufail']} attempt(s): "
            "`hopflow resume` retries it"
        )
        return entry
    due = _float(fields.get("due"))
    if due is not None:
        error = _last_error(history, step or "", "compensate")
        entry.update(state="retrying", next_attempt_at=iso(due))
        entry["text"] = f"{head}: compensating {what}; attempt {attempt} at {iso(due)}" + (
            f" after {error}" if error else ""
        )
        return entry
    entry["state"] = "compensating"
    entry["text"] = f"{head}: compensating {what}, attempt {attempt}" if step else f"{head}: finishing"
    return entry


def _last_error(history: list[dict[str, Any]], step: str, phase: str) -> str | None:
    for h in reversed(history):
        if h.get("step") == step and h.get("phase") == phase and h.get("status") == "error":
            name, message = h.get("error"), h.get("message")
            if name and message:
                return f"{name}: {message}"
            return name or message
    return None
