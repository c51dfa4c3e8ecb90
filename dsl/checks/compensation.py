"""``compensate`` on a step that has nothing to undo, or whose compensation can never run."""

from __future__ import annotations

from collections.abc import Iterator

from dsl.checks import CheckContext, rule
from dsl.diagnostics import Diagnostic

_WHY = {
    "set": "a set step only assigns vars, which a failed execution discards anyway",
    "switch": "a switch only chooses where to go next",
    "wait": "a wait only lets time pass",
    "succeed": "the execution ends successfully at this step, so nothing ever unwinds it",
    "fail": "a fail step never succeeds, so its compensation is never registered",
}


@rule(
    "useless-compensate",
    "`compensate` on a step kind that has nothing to undo (set, switch, wait) or whose compensation can "
    "never run (succeed, fail)",
)
def check_compensate(ctx: CheckContext) -> Iterator[Diagnostic]:
    for step in ctx.steps:
        if "compensate" not in step.body or step.kind not in _WHY:
            continue
        yield ctx.diag(
            "useless-compensate",
            "warning",
            f"`compensate` on a {step.kind} step never does anything: {_WHY[step.kind]}; remove it",
            (*step.path, "compensate"),
            key=True,
        )
