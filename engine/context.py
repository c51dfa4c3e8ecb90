"""What a node sees: branch paths, where step outputs live, and the template scope.

Branch paths name where a node runs: ``""`` is the top level; a parallel branch or a foreach item
adds ``<owner step id>/<index>`` (``"order/0/items/3"``). Steps inside a foreach body get one output
per item, so their output field is prefixed with the item's path (``"order/0/items/3/charge"``);
steps in parallel branches are not prefixed (they are addressable after the join).
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
from collections.abc import Mapping
from typing import Any

from dsl.graph import TOP_SCOPE, Graph, Node, thaw
from dsl.templates import TemplateError, TemplateLimit, is_template, parse, render, templates_in, to_json
from engine.model import StepError, StepFailure

MISSING: Any = object()


# ------------------------------------------------------------------------------------------ branches


def pairs(branch: str) -> list[tuple[str, int]]:
    """``"a/0/fe/3"`` → ``[("a", 0), ("fe", 3)]``."""
    if not branch:
        return []
    parts = branch.split("/")
    return [(parts[i], int(parts[i + 1])) for i in range(0, len(parts) - 1, 2)]


def join(items: list[tuple[str, int]]) -> str:
    return "/".join(f"{owner}/{index}" for owner, index in items)


def child(branch: str, owner: str, index: int) -> str:
    return f"{branch}/{owner}/{index}" if branch else f"{owner}/{index}"


def ancestors(branch: str) -> list[str]:
    """Branches whose fan-outs enclose ``branch`` (where their abort flags live), outermost first."""
    ps = pairs(branch)
    return [join(ps[:k]) for k in range(len(ps))]


def parent(branch: str) -> str:
    return join(pairs(branch)[:-1])


def parent_node(branch: str) -> str | None:
    """The parallel/foreach step whose branch or item ``branch`` is (``"a/0/fe/3"`` → ``"fe"``)."""
    ps = pairs(branch)
    return ps[-1][0] if ps else None


def until_of(graph: Graph, node: Node) -> Any:
    """The `until` of the foreach whose item ``node`` may finish (tested when the item succeeds)."""
    if node.scope == TOP_SCOPE or not (node.next is None or node.kind in ("succeed", "switch")):
        return None
    owner = graph.scopes[node.scope].owner
    if owner is None or graph.nodes[owner].kind != "foreach":
        return None
    return graph.nodes[owner].config.get("until")


def until_reads(graph: Graph, node: Node | None) -> list[str]:
    """Step ids the `until` this node may test reads (loaded with the node's own reads)."""
    until = until_of(graph, node) if node is not None else None
    if not isinstance(until, str):
        return []
    out: list[str] = []
    for _, source in templates_in(until):
        for dotted in parse(source).names:
            parts = dotted.split(".")
            if parts[0] == "steps" and len(parts) > 1 and parts[1] not in out:
                out.append(parts[1])
    return out


_OWNERS: dict[tuple[str, str], frozenset[str]] = {}
_VARS: dict[tuple[str, str], tuple[str, ...] | None] = {}


def _foreach_owners(graph: Graph, step_id: str) -> frozenset[str]:
    key = (graph.hash, step_id)
    found = _OWNERS.get(key)
    if found is None:
        found = _OWNERS[key] = _compute_owners(graph, step_id)
    return found


def _compute_owners(graph: Graph, step_id: str) -> frozenset[str]:
    owners = set()
    scope = graph.nodes[step_id].scope
    while scope:
        owner = graph.scopes[scope].owner
        if owner is None:
            break
        if graph.nodes[owner].kind == "foreach":
            owners.add(owner)
        scope = graph.nodes[owner].scope
    return frozenset(owners)


def input_field(field: str) -> str:
    """The field of ``hf:{E}:o`` holding the rendered input of the step whose output is ``field``
    (recorded only for steps with a compensation, which reads it as ``steps.ID.input``)."""
    return field + "|in"


def output_field(graph: Graph, step_id: str, branch: str) -> str:
    """The field of ``hf:{E}:o`` holding ``step_id``'s output as seen from ``branch``."""
    if step_id not in graph.nodes:
        return step_id
    owners = _foreach_owners(graph, step_id)
    if not owners or not branch:
        return step_id
    ps = pairs(branch)
    cut = 0
    for k, (owner, _) in enumerate(ps):
        if owner in owners:
            cut = k + 1
    return f"{join(ps[:cut])}/{step_id}" if cut else step_id


# ------------------------------------------------------------------------------------------ scope


def var_names(graph: Graph, node_id: str) -> tuple[str, ...] | None:
    """Vars a node's own templates read; None = all of them (a template uses ``vars`` as a whole)."""
    key = (graph.hash, node_id)
    if key not in _VARS:
        _VARS[key] = _var_names(graph, node_id)
    return _VARS[key]


def may_end(node: Node) -> bool:
    """Whether finishing this node may finish the execution (so the workflow's `output` is rendered
    with what this node loaded)."""
    return node.scope == TOP_SCOPE and (node.next is None or node.kind in ("succeed", "switch"))


def _var_names(graph: Graph, node_id: str) -> tuple[str, ...] | None:
    node = graph.nodes[node_id]
    read = [ref.names for ref in node.templates if ref.path[:1] != ("compensate",)]
    if graph.has_output and may_end(node):
        read += [parse(source).names for _, source in templates_in(graph.output)]
    until = until_of(graph, node)
    if isinstance(until, str):
        read += [parse(source).names for _, source in templates_in(until)]
    names: set[str] = set()
    for dotted in (name for group in read for name in group):
        parts = dotted.split(".")
        if parts[0] != "vars":
            continue
        if len(parts) == 1:
            return None
        names.add(parts[1])
    return tuple(sorted(names))


def iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat().replace("+00:00", "Z")


def build_scope(
    graph: Graph,
    *,
    execution_id: str,
    started_at: float,
    input: Any,
    steps: Mapping[str, Any],
    vars: Mapping[str, Any],
    loc: Mapping[str, Any] | None = None,
    error: Mapping[str, Any] | None = None,
    now: float | None = None,
    uuid_seed: str | None = None,
) -> dict[str, Any]:
    """The names a template may use (docs/language.md, "Template scopes"). ``env`` holds only
    declared names, read from the process environment now (never stored, never logged). ``now()`` is
    the execution's clock (virtual under fast-forward); ``uuid()`` derives from ``uuid_seed`` (the
    step's path), so a redelivery or a retry of the step renders the same ids."""
    scope: dict[str, Any] = {}
    if loc:
        scope.update(loc)
    scope.update(
        input=input,
        steps={sid: {"output": value} for sid, value in steps.items()},
        vars=dict(vars),
        env=_Env({name: os.environ[name] for name in graph.env if name in os.environ}),
        execution={"id": execution_id, "workflow": graph.name, "started_at": iso(started_at)},
    )
    if error is not None:
        scope["error"] = dict(error)
    if now is not None:
        scope["now"] = lambda: iso(now)
    scope["uuid"] = _Uuids(f"{execution_id}:{uuid_seed or ''}")
    return scope


class _Uuids:
    """``uuid()`` in a template: the n-th call of a step's render gives the same id every time the
    step runs (UUID 5 of the execution, the step path and n), never a fresh random one."""

    def __init__(self, seed: str) -> None:
        self.seed = seed
        self.n = 0

    def __call__(self) -> str:
        import uuid

        self.n += 1
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"hopflow:{self.seed}:{self.n}"))


class _Env(dict[str, str]):
    """Declared variables; reading one that is unset says so, instead of Jinja's "no attribute"."""

    def __missing__(self, name: str) -> Any:
        from jinja2 import StrictUndefined  # `is defined` stays false; any other use fails with the hint

        return StrictUndefined(
            hint=f"environment variable {name} is declared under `env:` but not set where this worker runs"
        )


def _static(value: Any) -> bool:
    """Whether a compiled (frozen, hashable) value holds no template at all: rendering it is then a
    copy. Cached per value, so a node's literal config is scanned once, not on every run of it."""
    if isinstance(value, str):
        return not is_template(value)
    try:
        return _static_frozen(value)
    except TypeError:  # not a compiled value (unhashable): render it
        return False


@functools.lru_cache(maxsize=4096)
def _static_frozen(value: Any) -> bool:
    return not templates_in(value)


def render_value(
    value: Any, scope: Mapping[str, Any], *, step: str | None = None, seconds: float | None = None
) -> Any:
    """Render a (frozen) template value to plain JSON data; a failure is the catchable ``template``,
    a size, operation or time bound (``seconds`` of wall time) the catchable ``template.limit``."""
    try:
        if _static(value):  # the render plan: nothing to render (decided once per compiled value)
            return to_json(thaw(value))
        return to_json(render(thaw(value), scope, seconds=seconds))
    except TemplateLimit as exc:
        raise StepFailure(StepError("template.limit", exc.message, step)) from None
    except TemplateError as exc:
        raise StepFailure(StepError("template", exc.message, step)) from None
    except TypeError as exc:  # to_json: a template produced something that is not JSON
        raise StepFailure(StepError("template", str(exc), step)) from None


def truthy(value: Any) -> bool:
    """`if` conditions: native values by Python truth; text by what it says ("false", "0", "" …)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "null", "off")
    return bool(value)
