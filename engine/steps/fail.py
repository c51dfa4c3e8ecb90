"""``fail``: raise a named error (catchable like any other)."""

from __future__ import annotations

from typing import Any

from dsl.graph import Node
from engine.decide import Failed, Outcome
from engine.model import StepError


def run(node: Node, rc: Any) -> Outcome:
    name = str(node.config.get("error") or "fail")
    template = node.config.get("message")
    message = f"step {node.id!r} failed with {name}" if template is None else rc.render(template)
    if not isinstance(message, str):
        import json

        message = json.dumps(message, ensure_ascii=False)
    return Failed(StepError(name, message, node.id))
