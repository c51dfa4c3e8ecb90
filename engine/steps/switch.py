"""``switch``: the first case whose condition is true wins; else ``default``; else fall through.

Conditions are rendered lazily in order, so a later case may rely on an earlier one being false.
"""

from __future__ import annotations

from typing import Any

from dsl.graph import Node
from engine.context import truthy
from engine.decide import Done, Jump, Outcome


def run(node: Node, rc: Any) -> Outcome:
    for case in node.config["cases"]:
        if truthy(rc.render(case["if"])):
            return Jump(case["goto"])
    default = node.config.get("default")
    if default:
        return Jump(default)
    return Done(None)
