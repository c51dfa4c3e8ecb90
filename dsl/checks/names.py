"""Which names a template may read where.

Everywhere: ``input``, ``steps``, ``vars``, ``env``, ``execution`` and the globals ``duration`` and
``range`` (plus the template's own ``{% set %}``/``{% for %}`` names, and ``loop`` inside a for loop).
Only in some places: ``result`` (a step's ``output`` template), ``error`` (the step a ``catch`` jumps
to), the ``foreach`` item name and ``index`` (inside that foreach's body).
A trigger's ``key`` and ``input`` are rendered before any execution exists: they read only ``event``
(and the globals). A ``flow_control`` key is rendered when the execution starts: ``input``, ``vars``,
``env``, ``execution``, never ``steps``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from dsl.checks import CheckContext, StepRef, TemplateSite, rule
from dsl.checks.template_syntax import (
    dashed_hint,
    did_you_mean,
    part_offset,
    rendered_sites,
    root_offset,
)
from dsl.diagnostics import Diagnostic
from dsl.flow_control import KEY_NAMES
from dsl.graph import TOP_SCOPE
from dsl.templates import EXTRA_GLOBALS, Reference

ALWAYS = ("input", "steps", "vars", "env", "execution")
GLOBALS = (*EXTRA_GLOBALS, "range")
ATTRIBUTES = {
    "execution": ("id", "workflow", "started_at"),
    "error": ("name", "message", "step", "attempt"),
    "event": ("name", "key", "data", "id"),
}
TRIGGER_NAMES = ("event",)
FLOW_KEY_NAMES = KEY_NAMES  # a flow_control key: input, vars, env, execution (no steps yet)
_NO_SUCH_FUNCTION = {
    "utcnow": "there is no utcnow(): use now() (the execution's clock) or execution.started_at",
    "today": "there is no today(): use now() (the execution's clock) or execution.started_at",
    "random": "there is no random(): templates must render the same value when a step is retried",
    "lipsum": "lipsum is not available in workflow templates",
    "dict": "dict() is not available: write a mapping literal, {'key': value}",
    "namespace": "namespace() is not available: assign with {% set %} inside one template",
}
_FOR_TAG = re.compile(r"\{%[-+]?\s*for\b")


@dataclass
class _Names:
    """What the document defines, computed once per file and shared by the three rules."""

    catch_targets: dict[str, list[str]]  # target id → ids of the steps whose catch jumps there
    foreach_names: dict[str, list[str]]  # `as` name → foreach step ids that define it
    assigned: dict[str, None]  # var names declared under `vars:` or assigned by any set step (ordered)


def _names(ctx: CheckContext) -> _Names:
    cached = ctx.extra.get("names")
    if isinstance(cached, _Names):
        return cached
    targets: dict[str, list[str]] = {}
    foreach: dict[str, list[str]] = {}
    assigned: dict[str, None] = {}
    declared = ctx.root.get("vars")
    if isinstance(declared, Mapping):  # declared vars hold their initial value from the start
        assigned.update(dict.fromkeys(str(k) for k in declared))
    for step in ctx.steps:
        catch = step.body.get("catch")
        inner = step.body.get(step.kind) if step.kind else None
        if catch is None and isinstance(inner, Mapping):
            catch = inner.get("catch")  # written inside the kind's body: reported there, still meant
        if isinstance(catch, list):
            for entry in catch:
                if isinstance(entry, Mapping) and isinstance(entry.get("goto"), str):
                    targets.setdefault(entry["goto"], []).append(step.id)
        if isinstance(step.body.get("foreach"), Mapping):
            foreach.setdefault(_as_name(step), []).append(step.id)
        if isinstance(step.body.get("set"), Mapping):
            assigned.update(dict.fromkeys(str(k) for k in step.body["set"]))
    found = _Names(targets, foreach, assigned)
    ctx.extra["names"] = found
    return found


def _as_name(step: StepRef) -> str:
    body = step.body.get("foreach")
    name = body.get("as") if isinstance(body, Mapping) else None
    return name if isinstance(name, str) else "item"


def _enclosing_foreach(ctx: CheckContext, step: StepRef | None) -> list[StepRef]:
    """The foreach steps whose body (directly or through nesting) holds ``step``, innermost first.

    Found by document path, not by id, so a duplicate or broken id cannot mislead it."""
    if step is None or step.scope == TOP_SCOPE:
        return []
    by_path = ctx.extra.get("steps_by_path")
    if by_path is None:
        by_path = {s.path: s for s in ctx.steps}
        ctx.extra["steps_by_path"] = by_path
    path = step.path
    out = []
    for k in range(len(path) - 1, 0, -1):
        if path[k : k + 2] == ("foreach", "steps"):
            owner = by_path.get(path[:k])
            if owner is not None and isinstance(owner.body.get("foreach"), Mapping):
                out.append(owner)
    return out


@dataclass(frozen=True)
class _Scope:
    names: frozenset[str]
    in_output: bool
    catch_target: bool
    foreach: tuple[StepRef, ...]


def _in_flow_control_key(site: TemplateSite) -> bool:
    at = len(site.step.path) if site.step is not None else 0
    return site.path[at:] == ("flow_control", "key")


def _scope(ctx: CheckContext, site: TemplateSite) -> _Scope:
    step = site.step
    if _in_flow_control_key(site):  # rendered when the execution starts (dsl/flow_control.py)
        return _Scope(frozenset({*FLOW_KEY_NAMES, *GLOBALS}), False, False, ())
    if step is None and site.path[:1] == ("triggers",):
        loop = {"loop"} if site.parsed is not None and _FOR_TAG.search(site.source) else set()
        return _Scope(frozenset({*TRIGGER_NAMES, *GLOBALS, *loop}), False, False, ())
    names = set(ALWAYS) | set(GLOBALS)
    foreach = tuple(_enclosing_foreach(ctx, step))
    for owner in foreach:
        names.add(_as_name(owner))
        names.add("index")
    in_output = step is not None and site.path[len(step.path) : len(step.path) + 1] == ("output",)
    if in_output:
        names.add("result")
    if step is not None and site.path[len(step.path) : len(step.path) + 2] == ("foreach", "until"):
        names |= {"result", "index", _as_name(step)}  # tested as an item finishes: its output and binding
    in_compensate = step is not None and site.path[len(step.path) : len(step.path) + 1] == ("compensate",)
    rest = site.path[len(step.path) :] if step is not None else ()
    in_raise = len(rest) >= 3 and rest[0] == "catch" and rest[2] == "raise"  # catch[i].raise.message
    catch_target = step is not None and step.id in _names(ctx).catch_targets and not in_compensate
    if catch_target or in_compensate or in_raise:
        names.add("error")  # a compensation reads the failure that started the unwinding
    if site.parsed is not None and _FOR_TAG.search(site.source):
        names.add("loop")
    return _Scope(frozenset(names), in_output, catch_target, foreach)


def _classify(ctx: CheckContext) -> list[tuple[str, TemplateSite, Reference, _Scope]]:
    """Every reference with the rule it breaks ("" when fine), computed once for all three rules."""
    cached = ctx.extra.get("names_refs")
    if isinstance(cached, list):
        return cached
    names = _names(ctx)
    out: list[tuple[str, TemplateSite, Reference, _Scope]] = []
    if not ctx.steps:
        ctx.extra["names_refs"] = out
        return out  # no steps (the schema says so): where a template sits cannot be known
    for site in rendered_sites(ctx):
        if site.parsed is None or not site.parsed.references:
            continue
        scope = _scope(ctx, site)
        for ref in site.parsed.references:
            root = ref.root
            if root in scope.names:
                verdict = ""
                if root == "vars" and ref.parts and ref.parts[0] not in names.assigned:
                    verdict = "undefined-var"
                elif root in ATTRIBUTES and ref.parts and ref.parts[0] not in ATTRIBUTES[root]:
                    verdict = "unknown-name"
            elif root in ("result", "error", "index", "loop") or root in names.foreach_names:
                verdict = "out-of-scope"
            else:
                verdict = "unknown-name"
            if verdict:
                out.append((verdict, site, ref, scope))
    ctx.extra["names_refs"] = out
    return out


@rule(
    "unknown-name",
    "a template reads a name that is never in scope (not input, steps, vars, env, execution, error, "
    "result, a foreach item or index, a template-local name, or a global such as duration/range)",
)
def check_unknown(ctx: CheckContext) -> Iterator[Diagnostic]:
    dashed_seen: set[tuple[object, str]] = set()
    for verdict, site, ref, scope in _classify(ctx):
        if verdict != "unknown-name":
            continue
        if ref.root in scope.names:  # a known object, an attribute it does not have
            attrs = ATTRIBUTES[ref.root]
            yield ctx.diag(
                "unknown-name",
                "error",
                f"{ref.root} has no attribute {ref.parts[0]!r}{did_you_mean(ref.parts[0], attrs)} "
                f"(it has {', '.join(attrs)})",
                site.path,
                offset=part_offset(site.source, ref, 0),
            )
            continue
        visible = sorted(scope.names - set(GLOBALS) - {"loop"})
        hint = did_you_mean(ref.root, scope.names)
        dashed = dashed_hint(site.source, root_offset(site.source, ref))
        if dashed:
            if (site.path, dashed) in dashed_seen:
                continue  # `a.x-request-id`: one error for the key, not one per '-'
            dashed_seen.add((site.path, dashed))
            hint = dashed
        if ref.root in _NO_SUCH_FUNCTION:
            hint = f" ({_NO_SUCH_FUNCTION[ref.root]})"
        if ref.root == "item" and scope.foreach:
            named = _as_name(scope.foreach[0])
            hint = f" (foreach {scope.foreach[0].id!r} names its item {named!r} with `as: {named}`)"
        yield ctx.diag(
            "unknown-name",
            "error",
            f"unknown name {ref.root!r}{hint}: here a template can read {', '.join(visible)}",
            site.path,
            offset=root_offset(site.source, ref),
        )


@rule("undefined-var", "a template reads `vars.X` but no `set` step assigns X")
def check_vars(ctx: CheckContext) -> Iterator[Diagnostic]:
    if any(step.kind is None for step in ctx.steps):
        return  # a step without a (single) kind may be a `set` whose key is misspelt or lost
    assigned = _names(ctx).assigned
    for verdict, site, ref, _ in _classify(ctx):
        if verdict != "undefined-var":
            continue
        name = ref.parts[0]
        yield ctx.diag(
            "undefined-var",
            "error",
            f"vars.{name} is never assigned: no `set` step sets {name}{did_you_mean(name, assigned)}",
            site.path,
            offset=part_offset(site.source, ref, 0),
        )


def _catches_intact(ctx: CheckContext) -> bool:
    """Whether every catch entry jumps to a step that exists with a proper id: only then is it known
    which steps may read `error`."""
    if ctx.broken_ids:
        return False
    for step in ctx.steps:
        catch = step.body.get("catch")
        inner = step.body.get(step.kind) if step.kind else None
        if catch is None and isinstance(inner, Mapping):
            catch = inner.get("catch")
        if catch is None:
            continue
        if not isinstance(catch, list):
            return False
        for entry in catch:
            if isinstance(entry, Mapping) and "raise" in entry and "goto" not in entry:
                continue  # a `raise` entry jumps nowhere
            goto = entry.get("goto") if isinstance(entry, Mapping) else None
            if not isinstance(goto, str) or goto not in ctx.by_id:
                return False
    return True


@rule(
    "out-of-scope",
    "a template reads a name outside the place it exists: a foreach item or `index` outside that "
    "foreach's body, `result` outside a step's `output`, `error` outside the step a `catch` jumps to "
    "and compensations",
)
def check_scope(ctx: CheckContext) -> Iterator[Diagnostic]:
    names = _names(ctx)
    intact: bool | None = None
    for verdict, site, ref, _ in _classify(ctx):
        if verdict != "out-of-scope":
            continue
        root = ref.root
        if root == "error":
            intact = _catches_intact(ctx) if intact is None else intact
            if not intact:
                continue  # a catch whose goto is missing or broken: its target cannot be known
        if root == "result":
            why = "`result` exists only in a step's `output` template (it is that step's raw result)"
        elif root == "error":
            why = "`error` exists only in the step a `catch` jumps to"
            if site.step is not None:
                why += f", and no catch has `goto: {site.step.id}` (compensations read it too)"
        elif root == "loop":
            why = "`loop` exists only inside a `{% for %}` block of the same template"
        elif root == "index":
            why = "`index` exists only inside a foreach body"
        else:
            owners = ", ".join(repr(i) for i in names.foreach_names[root])
            why = f"{root!r} is the item of foreach {owners} and exists only inside its body"
        yield ctx.diag("out-of-scope", "error", why, site.path, offset=root_offset(site.source, ref))
