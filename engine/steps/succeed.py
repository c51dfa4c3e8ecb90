"""``succeed``: end the execution (at the top level) or the branch/item (nested) successfully."""

from __future__ import annotations

from typing import Any

from dsl.graph import Node
from engine.decide import Ended, Outcome


def run(node: Node, rc: Any) -> Outcome:
    if node.config.get("has_output"):
        return Ended(rc.render(node.config.get("output")), has_output=True)
    return Ended()
