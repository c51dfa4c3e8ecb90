"""`ignore:` on a step names warning rules it acknowledges; a name that is no rule (a typo) would
silently acknowledge nothing, and an error rule cannot be acknowledged at all."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from dsl.checks import RULES, CheckContext, rule
from dsl.checks.template_syntax import did_you_mean
from dsl.diagnostics import Diagnostic

ERROR_ONLY = frozenset({"schema", "unknown-key", "missing-key", "yaml-syntax"})


@rule("bad-ignore", "`ignore:` names a rule that does not exist, or one whose findings are errors")
def check_ignore(ctx: CheckContext) -> Iterator[Diagnostic]:
    for step in ctx.steps:
        names = step.body.get("ignore") if isinstance(step.body, Mapping) else None
        if not isinstance(names, list):
            continue
        for i, name in enumerate(names):
            if not isinstance(name, str):
                continue
            if name not in RULES:
                yield ctx.diag(
                    "bad-ignore",
                    "error",
                    f"ignore: no rule is named {name!r}{did_you_mean(name, list(RULES))}",
                    (*step.path, "ignore", i),
                )
            elif name in ERROR_ONLY:
                yield ctx.diag(
                    "bad-ignore",
                    "error",
                    f"ignore: {name!r} reports errors, which cannot be ignored (only warnings can)",
                    (*step.path, "ignore", i),
                )
