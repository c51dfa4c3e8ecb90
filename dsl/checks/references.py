"""``steps.X`` references: X must exist, be read as ``steps.X.output``, and have completed on every path.

All six rules share one pass over the template references (cached in ``ctx.extra``); the flow-based
ones need the compiled graph and stay silent without it. Where each template is evaluated:

* a step's ``if`` and configuration: before the step runs;
* its ``output``: after it ran (a parallel has joined), but ``steps.<itself>`` is not set yet — use
  ``result``;
* its ``compensate``: when the compensation runs, so the step itself has completed;
* the workflow's top-level ``output``: when the top-level list ends (or a top-level ``succeed``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass

from dsl.checks import CheckContext, TemplateSite, rule
from dsl.diagnostics import Diagnostic
from dsl.flow import Flow, Phase, Verdict, flow_of
from dsl.source import JsonPath
from dsl.templates import Reference


@dataclass(frozen=True)
class _Ref:
    site: TemplateSite
    ref: Reference
    offset: int  # where ``steps`` starts in the template source


def _steps_refs(ctx: CheckContext) -> list[_Ref]:
    cached = ctx.extra.get("steps-refs")
    if cached is None:
        cached = []
        for site in ctx.templates:
            if site.parsed is None or (site.step is None and site.path[:1] != ("output",)):
                continue  # unparsable (own rule), or text that is never rendered (e.g. description)
            for ref in site.parsed.references:
                if ref.root != "steps":
                    continue
                offset = ref.offset
                if not site.source.startswith("steps", offset):  # e.g. steps["x"]: best effort
                    found = site.source.find("steps")
                    offset = found if found >= 0 else offset
                cached.append(_Ref(site, ref, offset))
        ctx.extra["steps-refs"] = cached
    return cached


def _target(r: _Ref) -> str | None:
    return r.ref.parts[0] if r.ref.parts else None


def _site(ctx: CheckContext, site: TemplateSite) -> tuple[str | None, Phase] | None:
    """(graph node, phase) a template is evaluated at; None when the graph does not model it."""
    if site.step is None:
        return (None, "before") if site.path[:1] == ("output",) else None
    step = site.step
    graph = ctx.graph
    if graph is None or step.id not in graph.nodes or ctx.by_id.get(step.id) is not step:
        return None  # part of a duplicate definition the compiler left out
    rel = site.path[len(step.path) :]
    if rel[:1] == ("compensate",):
        return step.id, "compensate"
    if rel[:1] == ("output",):
        return step.id, "output"
    return step.id, "before"


@rule("reference-unknown-step", "a template reads `steps.X` but no step has the id X")
def unknown_step(ctx: CheckContext) -> Iterator[Diagnostic]:
    ids = [sid for sid, step in ctx.by_id.items() if not step.broken]
    if not ctx.steps:
        return  # no steps at all (the schema says so): every reference would be unknown
    for r in _steps_refs(ctx):
        target = _target(r)
        if target is None or target in ctx.by_id or ctx.maybe_broken(target):
            continue
        match = difflib.get_close_matches(target, ids, n=1, cutoff=0.6)
        hint = f" (did you mean steps.{match[0]}?)" if match else ""
        yield ctx.diag(
            "reference-unknown-step",
            "error",
            f"steps.{target}: there is no step {target!r}{hint}",
            r.site.path,
            offset=r.offset,
        )


def _own_compensation(r: _Ref, target: str) -> bool:
    """Whether the reference sits in the compensation of step ``target`` itself."""
    step = r.site.step
    if step is None or step.id != target:
        return False
    return r.site.path[len(step.path) : len(step.path) + 1] == ("compensate",)


@rule(
    "reference-attribute",
    "a template reads `steps.X.<name>` other than `steps.X.output` (and `steps.X.input` in X's own "
    "compensation)",
)
def attribute(ctx: CheckContext) -> Iterator[Diagnostic]:
    for r in _steps_refs(ctx):
        parts = r.ref.parts
        if len(parts) < 2 or parts[1] == "output" or parts[0] not in ctx.by_id:
            continue
        target, name = parts[0], parts[1]
        if name == "input" and _own_compensation(r, target):
            continue  # the rendered input the step ran with, recorded for its compensation
        if name == "input":
            yield ctx.diag(
                "reference-attribute",
                "error",
                f"steps.{target}.input (what {target!r} ran with) is readable only in the compensation "
                f"of {target!r} itself",
                r.site.path,
                offset=r.offset,
            )
            continue
        prefix = f"steps.{target}."
        offset = r.offset + len(prefix) if r.site.source.startswith(prefix, r.offset) else r.offset
        if difflib.get_close_matches(name, ["output"], n=1, cutoff=0.6):
            hint = f"did you mean steps.{target}.output?"
        else:
            hint = f"did you mean steps.{target}.output.{name}?"
        yield ctx.diag(
            "reference-attribute",
            "error",
            f"steps.{target} has only .output, not .{name} ({hint})",
            r.site.path,
            offset=offset,
        )


@rule(
    "reference-dynamic",
    "`steps` is used without a literal step id (the runtime loads only outputs a step names statically)",
)
def dynamic(ctx: CheckContext) -> Iterator[Diagnostic]:
    for r in _steps_refs(ctx):
        if r.ref.parts:
            continue
        yield ctx.diag(
            "reference-dynamic",
            "error",
            "`steps` must be followed by a literal step id, as in steps.ID.output "
            "(a node loads only the step outputs its templates name)",
            r.site.path,
            offset=r.offset,
        )


def _verdicts(ctx: CheckContext, flow: Flow) -> list[tuple[_Ref, str | None, Phase, str, Verdict]]:
    """(reference, site node, phase, target, verdict) for every reference to an existing step."""
    cached = ctx.extra.get("steps-verdicts")
    if cached is not None:
        return cached
    cached = []
    graph = flow.graph
    for r in _steps_refs(ctx):
        target = _target(r)
        if target is None or target not in graph.nodes:
            continue  # unknown (own rule) or inside a duplicate definition left out of the graph
        where = _site(ctx, r.site)
        if where is None:
            continue
        site, phase = where
        if site is not None and site not in flow.reachable:
            continue  # unreachable code: reported once, as unreachable-step
        cached.append((r, site, phase, target, flow.verdict(site, phase, target)))
    ctx.extra["steps-verdicts"] = cached
    return cached


def _uncertain(ctx: CheckContext, flow: Flow, site: str | None, target: str) -> bool:
    nodes = flow.graph.nodes
    site_scope = nodes[site].scope if site is not None and site in nodes else ""
    return ctx.flow_uncertain(site_scope) or ctx.flow_uncertain(nodes[target].scope)


def _where(site: str | None) -> str:
    return "the workflow output" if site is None else repr(site)


@rule(
    "reference-out-of-scope",
    "`steps.X` reads a step inside a foreach body from outside it, or a step of a sibling parallel branch",
)
def out_of_scope(ctx: CheckContext) -> Iterator[Diagnostic]:
    flow = flow_of(ctx)
    if flow is None:
        return
    for r, site, phase, target, v in _verdicts(ctx, flow):
        if v.kind == "foreach-body":
            use = "result" if site == v.owner and phase == "output" else f"steps.{v.owner}.output"
            message = (
                f"steps.{target} is inside the body of foreach {v.owner!r}, where it means the current "
                f"item's run; outside the body, use {use} (the list of per-item outputs)"
            )
        elif v.kind == "sibling-branch":
            message = (
                f"steps.{target} runs in another branch of parallel {v.owner!r}, at the same time as "
                f"this one, so it is not guaranteed to have completed; read it after the join"
            )
        else:
            continue
        yield ctx.diag("reference-out-of-scope", "error", message, r.site.path, offset=r.offset)


def _completion(ctx: CheckContext, kind: str) -> Iterator[Diagnostic]:
    flow = flow_of(ctx)
    if flow is None:
        return
    rule_name = f"reference-{kind}"
    proven = _proven_by_if(ctx) if kind == "not-completed" else {}
    for r, site, phase, target, v in _verdicts(ctx, flow):
        if v.kind != kind:
            continue
        if kind == "not-completed" and not v.own and _escaped(r, target, proven):
            continue  # `| default(...)`, `is defined`, or under `steps.X is defined`: it may be missing
        if ctx.uncertain and _uncertain(ctx, flow, site, target):
            continue  # the list's flow is only approximated (a malformed step): no guess
        if v.own and phase == "output":
            message = (
                f"steps.{target} is what this `output` template defines, so it is not set yet; "
                f"use `result` (the step's raw result)"
            )
        elif v.own:
            message = f"step {target!r} cannot read its own output before it has run"
        elif kind == "never-before":
            message = f"steps.{target} can never have completed before {_where(site)}: no path runs it first"
            if site is not None and any(c.goto == site for c in flow.graph.nodes[target].catch):
                message += f" (it is reached when {target!r} fails; read the failure as `error`)"
        else:
            path = flow.witness(site, target)
            via = f" (e.g. {' → '.join(path)} does not complete it)" if path else ""
            message = (
                f"steps.{target} is not guaranteed to have completed at {_where(site)}: "
                f"some path reaches it without completing {target!r}{via}"
            )
        yield ctx.diag(rule_name, "error", message, r.site.path, offset=r.offset)


def _proven_by_if(ctx: CheckContext) -> dict[JsonPath, frozenset[str]]:
    """Step path → the step ids its `if: "{{ steps.X is defined }}"` proves ran (then its other
    templates may read them)."""
    out: dict[JsonPath, frozenset[str]] = {}
    for site in ctx.templates:
        step = site.step
        if step is not None and site.parsed is not None and tuple(site.path) == (*step.path, "if"):
            out[tuple(step.path)] = site.parsed.requires
    return out


def _escaped(r: _Ref, target: str, proven: dict[JsonPath, frozenset[str]]) -> bool:
    if r.ref.guarded:
        return True
    step = r.site.step
    return step is not None and target in proven.get(tuple(step.path), frozenset())


@rule(
    "reference-not-completed",
    "`steps.X` is read where X has run on some paths but is not guaranteed to have completed on all",
)
def not_completed(ctx: CheckContext) -> Iterator[Diagnostic]:
    yield from _completion(ctx, "not-completed")


@rule("reference-never-before", "`steps.X` is read where X can never have run before")
def never_before(ctx: CheckContext) -> Iterator[Diagnostic]:
    yield from _completion(ctx, "never-before")
