"""Races on fan-outs: a `parallel.wait_for` that asks for more successes than there are branches
(the parallel could never finish early, and would read as a promise it cannot keep)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from dsl.checks import CheckContext, rule
from dsl.diagnostics import Diagnostic


@rule(
    "wait-for-too-many",
    "a parallel's `wait_for` asks for more successful branches than it has (use `all`, or a smaller "
    "number), or contradicts its `first: true`",
)
def check_wait_for(ctx: CheckContext) -> Iterator[Diagnostic]:
    for step in ctx.steps:
        spec = step.body.get("parallel")
        if step.kind != "parallel" or not isinstance(spec, Mapping):
            continue
        branches = spec.get("branches")
        count = len(branches) if isinstance(branches, list) else 0
        wait_for = spec.get("wait_for")
        path = (*step.path, "parallel", "wait_for")
        if isinstance(wait_for, int) and not isinstance(wait_for, bool) and count and wait_for > count:
            yield ctx.diag(
                "wait-for-too-many",
                "error",
                f"`wait_for: {wait_for}` can never be met: parallel {step.id!r} has {count} "
                f"branch{'es' if count != 1 else ''} (use `all`, or at most {count})",
                path,
            )
        elif spec.get("first") is True and wait_for is not None and wait_for not in (1, "any"):
            yield ctx.diag(
                "wait-for-too-many",
                "error",
                f"`first: true` means `wait_for: any`, but parallel {step.id!r} also says "
                f"`wait_for: {wait_for}`: keep one of them",
                path,
            )
