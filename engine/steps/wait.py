"""``wait``: pause without holding a process.

Durations (``for``, the event's ``timeout``) may be templates, rendered when the wait starts.

* ``for``: a delayed message to this node; ``until``: a not-before message (a time in the past
  continues at once);
* ``event``: claim a pending event (kept 7 days) or register as a waiter. With several names
  (``event: [a, b]``) each name is its own (name, key) slot: the wait claims or registers in every
  slot in order, and whichever slot holds a claim first wins; the others are released (a claim there
  goes back to that slot's pending events, so no event is lost). Every step of that is idempotent
  for the wait's token, so a crash anywhere in it is redone on redelivery. Claims are keyed by the
  wait's token (execution, branch, seq), so a crash between claiming and checkpointing re-reads the
  same claim on redelivery instead of losing the event. With a ``timeout``, a delayed message to this
  node (``#timeout``) finds either a claim (the event won the race) or removes the registration and
  fails the step with ``timeout``.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from dsl.durations import format_ms
from dsl.graph import Node
from dsl.templates import _to_datetime
from engine.decide import Done, Failed, Outcome, Park
from engine.dynamic import duration_ms
from engine.model import StepError


def run(node: Node, rc: Any) -> Outcome:
    config = node.config
    mode = config["mode"]
    bound = node.timeout_ms  # the common `timeout` key bounds the wait itself
    if mode == "for":
        ms = duration_ms(config["ms"], rc.render, "wait.for", node.id) or 0
        if bound is not None and ms > bound:
            return Park({"wait": "for", "expires": True}, delay_ms=bound)
        return Park({"wait": "for"}, delay_ms=ms)
    if mode == "until":
        when = _epoch(rc.render(config["until"]), node.id)
        if isinstance(when, Failed):
            return when
        if when <= rc.now:
            return Done(None)
        if bound is not None and when - rc.now > bound / 1000:
            return Park({"wait": "until", "expires": True}, delay_ms=bound)
        return Park({"wait": "until"}, not_before=when)
    names = event_names(config["event"])
    key = rc.render(config["key"])
    key = key if isinstance(key, str) else rc.dumps(key)
    token = rc.wait_token()
    for i, name in enumerate(names):  # claim, or register as a waiter, in each slot in turn
        event = rc.claim_event(name, key, token)
        if event is not None:
            for other in names[:i] + names[i + 1 :]:  # a redelivery may have registered later ones
                rc.release_event(other, key, token)
            return Done(_output(config["event"], name, event))
    timeout_ms = _smallest(duration_ms(config.get("timeout_ms"), rc.render, "wait.timeout", node.id), bound)
    info: dict[str, Any] = {"wait": "event", "event": " or ".join(names), "key": key, "token": token}
    if len(names) > 1:
        info["events"] = names
    if timeout_ms is not None:
        info["timeout_ms"] = int(timeout_ms)  # as rendered when the wait started (for the message)
    if timeout_ms is None:
        return Park(info, message=False)
    return Park(info, delay_ms=int(timeout_ms), suffix="#timeout")


def resume(node: Node, rc: Any, info: dict[str, Any]) -> Outcome:
    if info.get("wait") != "event":
        if info.get("expires"):
            return Failed(
                StepError(
                    "timeout",
                    f"the wait is longer than its timeout ({format_ms(node.timeout_ms or 0)})",
                    node.id,
                )
            )
        return Done(None)
    names = info.get("events") or [info["event"]]
    claims = []
    for name in names:  # every slot: the event that arrived first wins, another goes back to its slot
        event = rc.check_event(name, info["key"], info["token"])
        if event is not None:
            claims.append((float(event.get("at") or 0), len(claims), name, event))
    if claims:
        _, _, name, event = min(claims)
        for _, _, other, _ in claims:
            if other != name:
                rc.release_event(other, info["key"], info["token"])
        return Done(_output(node.config["event"], name, event))
    compiled = node.config.get("timeout_ms")  # a wait parked before timeouts were recorded
    if not isinstance(compiled, int):
        compiled = None
    timeout = info.get("timeout_ms") or _smallest(compiled, node.timeout_ms)
    within = f" within {format_ms(int(timeout))}" if timeout else ""
    which = " or ".join(repr(n) for n in names)
    return Failed(StepError("timeout", f"no event {which} with key {info['key']!r}{within}", node.id))


def event_names(value: Any) -> list[str]:
    """``event: a`` or ``event: [a, b]``: the names waited for, in order."""
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def _output(spec: Any, name: str, event: dict[str, Any]) -> Any:
    """One name: the event's data (as always). Several: which one came, and its data."""
    if isinstance(spec, list | tuple):
        return {"event": name, "data": event.get("data")}
    return event.get("data")


def _epoch(value: Any, step: str) -> float | Failed:
    try:
        when = value if isinstance(value, _dt.datetime) else _to_datetime(value)
    except (TypeError, ValueError) as exc:
        return Failed(StepError("template", f"wait.until: {exc}", step))
    return when.timestamp()


def _smallest(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None
