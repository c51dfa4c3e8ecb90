"""``set``: render each value (all against the same scope, so they do not see each other) into vars.

A value for a declared reduced var is a contribution; its type is checked here, so a wrong one
fails the step (catchable ``template``) before anything is written."""

from __future__ import annotations

from typing import Any

from dsl.graph import Node
from engine.decide import Done, Outcome
from engine.state import reducers


def run(node: Node, rc: Any) -> Outcome:
    values = {name: rc.render(template) for name, template in node.config["vars"].items()}
    reduced = {}
    for name, value in values.items():
        op = rc.graph.reducer(name)
        if op != "replace":
            reduced[name] = reducers.encode(name, op, value)  # once: the checkpoint takes this
    return Done(values, vars=values, reduced=reduced or None)
