"""Preflight: everything a workflow needs from this process, checked before anything starts.

``run``, ``start --wait``, ``resume``-like commands and ``serve`` call :func:`problems` after loading
the workflows and the ``--actions`` modules and before their first side effect (starting the
embedded Redis, writing an execution, listening). It lists *every* missing piece at once — an
environment variable a workflow declares under ``env:`` that is not set, an ``action`` (step or
compensation) that neither a loaded module registers nor ``module.attribute`` imports — so a user
fixes them in one go instead of discovering them one failed step at a time, hours into a run.
An action name written as a template (``action: "pay.{{ input.provider }}"``) is known only when the
step runs, so it is skipped here (a rendered name that resolves to nothing fails that step with
``action.NotFound``).

Which workflows: for ``run``/``start`` the one started plus every workflow it can call (transitively,
through ``workflow`` steps and compensations); for ``serve`` all it serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from dsl.graph import Graph, compensations


def reachable(catalog: Any, roots: Iterable[str]) -> list[Graph]:
    """``roots`` and every workflow they call, in discovery order (unknown names are skipped: the
    catalog reports those itself when a step calls them)."""
    seen: dict[str, Graph] = {}
    todo = list(roots)
    while todo:
        name = todo.pop(0)
        if name in seen or name not in catalog:
            continue
        graph = catalog.get(name)
        seen[name] = graph
        for _step, kind, config in _calls(graph):
            if kind == "workflow" and isinstance(config.get("name"), str):
                todo.append(config["name"])
    return list(seen.values())


def _calls(graph: Graph) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(step id, kind, config) of every node and compensation."""
    for node in graph.nodes.values():
        yield node.id, node.kind, node.config or {}
        for body in compensations(node):
            yield f"{node.id} (compensation)", body.kind, body.config or {}


def problems(graphs: Iterable[Graph], registry: Any, environ: Mapping[str, str]) -> list[str]:
    """One line per missing environment variable or unresolvable action (deduplicated)."""
    from engine.actions import ActionLoadError, ActionNotFound

    lines: list[str] = []
    missing_env: dict[str, list[str]] = {}
    actions: dict[str, list[str]] = {}
    for graph in graphs:
        for name in graph.env:
            if name not in environ:
                missing_env.setdefault(name, []).append(graph.name)
        for step, kind, config in _calls(graph):
            name = config.get("name")
            if kind == "action" and isinstance(name, str) and "{" not in name:
                actions.setdefault(name, []).append(f"{graph.name}/{step}")
    for name, users in missing_env.items():
        lines.append(f"environment variable {name} is not set (declared under env: by {', '.join(users)})")
    for name, users in actions.items():
        try:
            registry.resolve(name)
        except (ActionNotFound, ActionLoadError) as exc:  # their messages name the action
            lines.append(f"{', '.join(users)}: {_first(exc)}")
    return lines


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
