"""``wait``: pause without holding a process.

Durations (``for``, the event's ``timeout``) may be templates, rendered when the wait starts.

* ``for``: a delayed message to this node; ``until``: a not-before message (a time in the past
  continues at once);
* ``event``: claim a pending event (kept 7 days) or register as a waiter. Claims are keyed by the
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
    name = config["event"]
    key = rc.render(config["key"])
    key = key if isinstance(key, str) else rc.dumps(key)
    token = rc.wait_token()
    event = rc.claim_event(name, key, token)
    if event is not None:
        return Done(event.get("data"))
    timeout_ms = _smallest(duration_ms(config.get("timeout_ms"), rc.render, "wait.timeout", node.id), bound)
    info = {"wait": "event", "event": name, "key": key, "token": token}
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
    event = rc.check_event(info["event"], info["key"], info["token"])
    if event is not None:
        return Done(event.get("data"))
    compiled = node.config.get("timeout_ms")  # a wait parked before timeouts were recorded
    if not isinstance(compiled, int):
        compiled = None
    timeout = info.get("timeout_ms") or _smallest(compiled, node.timeout_ms)
    within = f" within {format_ms(int(timeout))}" if timeout else ""
    return Failed(
        StepError("timeout", f"no event {info['event']!r} with key {info['key']!r}{within}", node.id)
    )


def _epoch(value: Any, step: str) -> float | Failed:
    try:
        when = value if isinstance(value, _dt.datetime) else _to_datetime(value)
    except (TypeError, ValueError) as exc:
        return Failed(StepError("template", f"wait.until: {exc}", step))
    return when.timestamp()


def _smallest(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None
