"""Steps that can never run, and loops that can never end (both warnings: the file still runs)."""

from __future__ import annotations

from collections.abc import Iterator

from dsl.checks import CheckContext, rule
from dsl.checks.targets import describe_scope, jumps
from dsl.diagnostics import Diagnostic
from dsl.flow import flow_of


@rule("unreachable-step", "no path from the start of its list reaches this step")
def unreachable_step(ctx: CheckContext) -> Iterator[Diagnostic]:
    flow = flow_of(ctx)
    if flow is None:
        return
    broken = _scopes_with_bad_jumps(ctx)
    for sid in flow.unreachable():
        step = ctx.by_id.get(sid)
        if step is None or step.scope in broken or ctx.flow_uncertain(step.scope):
            continue
        where = describe_scope(ctx, step.scope)
        yield ctx.diag(
            "unreachable-step",
            "warning",
            f"step {sid!r} can never run: no path from the start of {where} reaches it "
            f"(nothing jumps to it, and the step before it never continues to it)",
            (*step.path, "id"),
        )


def _scopes_with_bad_jumps(ctx: CheckContext) -> set[str]:
    """Lists with a jump to a step that does not exist (or is in another list): what is reachable
    there depends on where the author meant to jump, so unreachable-step would only add noise to the
    unknown-target error."""
    out: set[str] = set()
    for step in ctx.steps:
        for _, target, _ in jumps(step):
            other = ctx.by_id.get(target)  # a template or a typo: both make the list's flow unknown
            if other is None or other.scope != step.scope:
                out.add(step.scope)
    return out


@rule(
    "endless-loop",
    "a loop with no way out: no path from it reaches the end of its list, succeed, fail or a catch",
)
def endless_loop(ctx: CheckContext) -> Iterator[Diagnostic]:
    flow = flow_of(ctx)
    if flow is None:
        return
    for loop in flow.endless_loops():
        step = ctx.by_id.get(loop[0])
        if step is None or ctx.flow_uncertain(step.scope):
            continue
        if len(loop) == 1:
            what = f"step {loop[0]!r} jumps to itself"
        else:
            what = "steps " + ", ".join(repr(s) for s in loop[:-1]) + f" and {loop[-1]!r} form a loop"
        yield ctx.diag(
            "endless-loop",
            "warning",
            f"{what} with no way out: no path leaves it for the end of "
            f"{describe_scope(ctx, step.scope)}, a succeed or fail step, or a step outside the loop",
            (*step.path, "id"),
        )


LOOP_ERRORS = frozenset({"timeout", "any"})


@rule(
    "endless-catch-loop",
    "a catch on `timeout` (or `any`) jumps back into a loop that nothing else leaves, so a step that "
    "keeps timing out repeats for ever",
)
def endless_catch_loop(ctx: CheckContext) -> Iterator[Diagnostic]:
    flow = flow_of(ctx)
    if flow is None:
        return
    for sid, index, loop in flow.catch_loops(LOOP_ERRORS):
        step = ctx.by_id.get(sid)
        if step is None or ctx.flow_uncertain(step.scope):
            continue
        clause = flow.graph.nodes[sid].catch[index]
        caught = "timeout" if "timeout" in clause.errors else "any"
        if len(loop) == 1:
            what = f"step {sid!r} jumps back to itself"
        else:
            what = f"the loop {' → '.join(repr(s) for s in loop)} comes back to {sid!r}"
        yield ctx.diag(
            "endless-catch-loop",
            "warning",
            f"when {sid!r} fails with {caught!r}, its catch goes to {clause.goto!r} and {what} with no "
            f"condition to stop: if it keeps failing, it repeats for ever; count the attempts in a "
            f"`set` step and leave with a `switch`, or use `retry` with max_attempts",
            (*step.path, "catch", index, "goto"),
        )
