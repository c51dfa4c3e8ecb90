"""Step ids name steps across the whole file (nested steps included), so each may be used once."""

from __future__ import annotations

from collections.abc import Iterator

from dsl.checks import CheckContext, StepRef, rule
from dsl.diagnostics import Diagnostic


@rule("duplicate-id", "a step id is used more than once in the file (ids are unique, nested steps included)")
def duplicate_id(ctx: CheckContext) -> Iterator[Diagnostic]:
    first: dict[str, StepRef] = {}
    for step in ctx.steps:
        if step.broken:
            continue  # the schema reports the id itself
        seen = first.setdefault(step.id, step)
        if seen is step:
            continue
        where = ctx.doc.at((*seen.path, "id"))
        yield ctx.diag(
            "duplicate-id",
            "error",
            f"duplicate step id {step.id!r}: already used by the step at line {where.line}",
            (*step.path, "id"),
        )
