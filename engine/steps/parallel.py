"""``parallel``: one message per branch in one outbox; the last branch to finish brings the parent
back (the join counter lives in the checkpoint script); the result lists branch outputs in order.

With ``wait_for`` (a race) the script ends the fan-out once that many branches succeeded: it stops
the others like a failed sibling would, but with the marker ``{"won": true}`` instead of an error,
so the join succeeds with ``null`` for every branch that did not succeed."""

from __future__ import annotations

from typing import Any

from dsl.graph import Node
from engine.decide import Done, Failed, FanOut, Outcome
from engine.model import StepError


def run(node: Node, rc: Any) -> Outcome:
    entries = [rc.graph.scopes[scope].entry for scope in node.config["branches"]]
    if not entries:
        return Done([])
    if any(e is None for e in entries):
        raise ValueError(f"parallel {node.id!r} has an empty branch")  # the schema forbids it
    return FanOut(
        "parallel",
        total=len(entries),
        start=len(entries),
        entries=entries,
        wait_for=int(node.config.get("wait_for") or 0),
        timeouts_ms=list(node.config.get("timeouts_ms") or []),
    )


def join(node: Node, rc: Any, results: dict[int, Any], abort: dict | None, total: int) -> Outcome:
    if abort and not abort.get("won"):
        return Failed(
            StepError(abort["name"], abort.get("message") or "", abort.get("step"), abort.get("attempt"))
        )
    return Done([results.get(i) for i in range(total)])
