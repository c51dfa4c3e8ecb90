"""An execution's history as a timeline people read: one line per entry, in words, oldest first.

Pure, like :mod:`engine.web.ui.states`. The raw entries stay available from
``GET /v1/executions/{id}/history``; this is what the dashboard shows next to the graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dsl.durations import format_ms

MAX_TEXT = 300


def timeline(history: Sequence[Mapping[str, Any]], limit: int = 500) -> dict[str, Any]:
    """``{"total", "shown", "entries": [{time, kind, step, branch, status, text}]}`` (the last ``limit``)."""
    entries = [_entry(e) for e in history[-limit:]] if limit > 0 else []
    return {"total": len(history), "shown": len(entries), "entries": entries}


def compensations(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every compensation that ran (or failed), in the order it ran: newest registered first."""
    out = []
    for e in history:
        if e.get("phase") == "compensate":
            out.append(
                {
                    "step": e.get("step"),
                    "branch": e.get("branch"),
                    "status": e.get("status"),
                    "attempt": _int(e.get("attempt")),
                    "time": e.get("time"),
                    "error": e.get("error"),
                    "message": _clip(str(e.get("message") or "")),
                }
            )
    return out


def _entry(e: Mapping[str, Any]) -> dict[str, Any]:
    step = e.get("step")
    event = e.get("event")
    phase = e.get("phase")
    status = e.get("status")
    kind = str(phase or event or "entry")
    if phase == "run":
        took = _took(e.get("duration_ms"))
        if status == "ok":
            text = f"{step} done{took}"
        else:
            text = f"{step} failed (attempt {e.get('attempt', 1)}): {_err(e)}"
    elif phase == "skip":
        text = f"{step} skipped (its condition was false)"
    elif phase == "compensate":
        text = f"{step} compensated" if status == "ok" else f"{step} compensation failed: {_err(e)}"
        if e.get("branch"):
            text += f" (branch {e.get('branch')})"
    elif event == "started":
        text = f"started ({e.get('workflow')})"
    elif event == "retry":
        what = "compensation of " + str(step) if phase == "compensate-retry" else str(step)
        text = f"{what}: attempt {e.get('attempt')} scheduled in {_ms(e.get('delay_ms'))}"
    elif event == "park":
        text = f"{step} waiting" + _wait(e)
    elif event == "compensating":
        text = f"compensating after {e.get('error')}"
    elif event == "undoing":
        count, losers = e.get("count"), e.get("message")
        text = f"{step} ended early: undoing {count} compensation(s) of its losers ({losers})"
    elif event == "undone":
        text = f"{step}: its losers are undone"
    elif event == "compensation_failed":
        text = f"compensation of {step} failed ({e.get('error')}); `hopflow resume` continues it"
    elif event == "finished":
        text = f"finished: {e.get('status')}" + (f" ({e.get('error')})" if e.get("error") else "")
    elif event == "halted":
        text = f"{step} halted" + (f" ({e.get('error')})" if e.get("error") else "")
    elif event == "resumed":
        text = "resumed by an operator"
    elif event == "dead":
        text = f"dead: delivery of {step} given up ({e.get('message')})"
    elif event:
        message = e.get("message")
        text = str(event) + (f": {message}" if message else "")
    else:
        text = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("id", "time"))
    return {
        "time": e.get("time"),
        "kind": kind,
        "step": step,
        "branch": e.get("branch") or "",
        "status": status or (e.get("status") if event == "finished" else None),
        "text": _clip(text),
    }


def _wait(e: Mapping[str, Any]) -> str:
    kind = e.get("wait_wait")
    if kind == "event":
        return f" for event {e.get('wait_event')} (key {e.get('wait_key')})"
    if kind == "until":
        return f" until {e['wait_until']}" if e.get("wait_until") else " until a set time"
    if kind == "for":
        return " (a delay)"
    if e.get("wait_child"):
        return f" for child execution {e.get('wait_child')}"
    return ""


def _err(e: Mapping[str, Any]) -> str:
    name = e.get("error") or "error"
    message = e.get("message")
    return f"{name}: {message}" if message else str(name)


def _took(value: Any) -> str:
    ms = _int(value)
    return "" if ms is None else f" in {_ms(ms)}"


def _ms(value: Any) -> str:
    ms = _int(value) or 0
    return format_ms(ms) if ms >= 1000 else f"{ms} ms"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
