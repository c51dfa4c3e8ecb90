"""Jumps (`next`, switch `goto`/`default`, catch `goto`) must name a step of their own list.

Read from the document, not the graph, so they are reported even when the schema check failed.
A jump may not leave or enter a parallel branch or a foreach body: a branch ends by reaching its
end (or `succeed`), and a body runs once per item, so a jump across that boundary has no meaning.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping

from dsl.checks import CheckContext, StepRef, rule
from dsl.diagnostics import Diagnostic
from dsl.graph import TOP_SCOPE
from dsl.source import JsonPath
from dsl.templates import is_template


def jumps(step: StepRef) -> Iterator[tuple[str, str, JsonPath]]:
    """(label, target, path of the target value) for every jump a step makes."""
    body = step.body
    if isinstance(body.get("next"), str):
        yield "next", body["next"], (*step.path, "next")
    cases = body.get("switch")
    if isinstance(cases, list):
        for i, case in enumerate(cases):
            if isinstance(case, Mapping):
                for key in ("goto", "default"):
                    if isinstance(case.get(key), str):
                        yield key, case[key], (*step.path, "switch", i, key)
    clauses = body.get("catch")
    if isinstance(clauses, list):
        for i, clause in enumerate(clauses):
            if isinstance(clause, Mapping) and isinstance(clause.get("goto"), str):
                yield "catch goto", clause["goto"], (*step.path, "catch", i, "goto")


def describe_scope(ctx: CheckContext, scope: str) -> str:
    if scope == TOP_SCOPE:
        return "the top-level steps"
    if "/" in scope:
        owner, branch = scope.rsplit("/", 1)
        return f"branch {branch} of parallel {owner!r}"
    return f"the body of foreach {scope!r}"


def suggest(word: str, same_scope: list[str], everywhere: list[str]) -> str:
    for pool in (same_scope, everywhere):
        match = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
        if match:
            return f" (did you mean {match[0]!r}?)"
    return ""


@rule("unknown-target", "a `next`, `goto`, `default` or catch `goto` names a step id that does not exist")
def unknown_target(ctx: CheckContext) -> Iterator[Diagnostic]:
    ids = [sid for sid, step in ctx.by_id.items() if not step.broken]
    by_scope: dict[str, list[str]] = {}
    for sid, step in ctx.by_id.items():
        if not step.broken:
            by_scope.setdefault(step.scope, []).append(sid)
    if not ctx.steps:
        return  # no steps at all (the schema says so): every target would be unknown
    for step in ctx.steps:
        for label, target, path in jumps(step):
            if is_template(target) or (target not in ctx.by_id and ctx.maybe_broken(target)):
                continue  # a template (the schema says so), or meant for a step whose id is broken
            if target not in ctx.by_id:
                hint = suggest(target, by_scope.get(step.scope, []), ids)
                yield ctx.diag("unknown-target", "error", f"{label} {target!r} is not a step id{hint}", path)


@rule(
    "cross-scope-target",
    "a jump leaves or enters a parallel branch or foreach body (jumps stay inside their own list)",
)
def cross_scope_target(ctx: CheckContext) -> Iterator[Diagnostic]:
    for step in ctx.steps:
        for label, target, path in jumps(step):
            other = ctx.by_id.get(target)
            if other is None or other.scope == step.scope:
                continue
            yield ctx.diag(
                "cross-scope-target",
                "error",
                f"{label} {target!r} jumps from {describe_scope(ctx, step.scope)} into "
                f"{describe_scope(ctx, other.scope)}; a jump must stay inside its own list",
                path,
            )
