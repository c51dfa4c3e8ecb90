"""``emit``: send an event to the executions waiting for (name, key), or keep it for the first wait.

The event's id is the step's path in this execution, so a redelivered or retried `emit` (a crash
after the event was stored and before the checkpoint) is recognised and not sent twice —
and the workflows it triggers are started once (engine.triggers)."""

from __future__ import annotations

from typing import Any

from dsl.graph import Node
from engine.decide import Done, Outcome


def run(node: Node, rc: Any) -> Outcome:
    config = node.config
    key = rc.render(config["key"])
    data = rc.render(config.get("data"))
    event = config["event"]
    done = rc.rt.notify_event(event, key, data, event_id=f"{rc.eid}:{rc.step_path(node.id)}")
    return Done({"event": event, "key": key, "resumed": done.resumed, "started": done.started})
