"""``workflow``: start a child execution and wait for it.

The child's id is derived from the parent's id, branch, step and seq, so a redelivered message
restarts nothing (the start is idempotent per id) while a retry or a loop gets a fresh child. The
child's final checkpoint carries the message that resumes this step. A failed child fails this step
with the child's error name (``catch: [{errors: [NoTable]}]`` works across the boundary); a child that
is parked in ``compensation_failed`` keeps the parent waiting until an operator resumes it.
"""

from __future__ import annotations

from typing import Any

from dsl.graph import Node
from engine.decide import Done, Failed, Outcome, Park
from engine.model import StepError

FAILED = ("failed", "compensated", "cancelled", "dead")


def run(node: Node, rc: Any) -> Outcome:
    child_input = rc.render(node.config.get("input") or {})
    child = rc.start_child(node.config["name"], child_input, node.id)
    return settle(node, rc, child, first=True)


def resume(node: Node, rc: Any, info: dict[str, Any]) -> Outcome:
    outcome = settle(node, rc, info["child"], first=False)
    if isinstance(outcome, Park) and rc.msg.node.endswith("#timeout"):
        rc.rt.cancel(info["child"])  # the step's `timeout` bounds the wait for the child
        return Failed(
            StepError("timeout", f"child execution {info['child']} did not finish in time", node.id)
        )
    return outcome


def settle(node: Node, rc: Any, child: str, *, first: bool) -> Outcome:
    status, output, error = rc.child_state(child)
    if status == "succeeded":
        return Done(output)
    if status in FAILED:
        error = error or {}
        name = error.get("name") or ("cancelled" if status == "cancelled" else "workflow.failed")
        message = error.get("message") or f"child execution {child} ended {status}"
        return Failed(StepError(name, message, node.id))
    if first and node.timeout_ms:
        return Park({"child": child}, delay_ms=node.timeout_ms, suffix="#timeout")
    return Park({"child": child}, message=False)
