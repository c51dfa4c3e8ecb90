"""``foreach``: items are rendered once and stored; at most ``concurrency`` items run at a time
(the checkpoint script starts the next item when one finishes); the result is in item order.
With ``until``, the item that makes it hold stops the scheduling (engine/interpreter.py ``end_scope``);
items never started are ``null`` in the result."""

from __future__ import annotations

import json
from typing import Any

from dsl.graph import Node
from engine.decide import Done, Failed, FanOut, Outcome
from engine.dynamic import whole
from engine.model import StepError


def run(node: Node, rc: Any) -> Outcome:
    items = rc.render(node.config["items"])
    if not isinstance(items, list):
        return Failed(
            StepError("template", f"foreach.items must be a list, got {type(items).__name__}", node.id)
        )
    if not items:
        return Done([])
    entry = rc.graph.scopes[node.config["body"]].entry
    concurrency = whole(node.config.get("concurrency") or 10, rc.render, "foreach.concurrency", node.id)
    return FanOut(
        "foreach",
        total=len(items),
        start=min(concurrency, len(items)),
        entry=entry,
        as_name=node.config.get("as") or "item",
        items=[json.dumps(i, ensure_ascii=False, separators=(",", ":")) for i in items],
        item_timeout_ms=int(node.config.get("item_timeout_ms") or 0),
    )


def join(node: Node, rc: Any, results: dict[int, Any], abort: dict | None, total: int) -> Outcome:
    if abort:
        return Failed(
            StepError(abort["name"], abort.get("message") or "", abort.get("step"), abort.get("attempt"))
        )
    return Done([results.get(i) for i in range(total)])
