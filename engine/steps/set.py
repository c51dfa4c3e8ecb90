"""``set``: render each value (all against the same scope, so they do not see each other) into vars."""

from __future__ import annotations

from typing import Any

from dsl.graph import Node
from engine.decide import Done, Outcome


def run(node: Node, rc: Any) -> Outcome:
    values = {name: rc.render(template) for name, template in node.config["vars"].items()}
    return Done(values, vars=values)
