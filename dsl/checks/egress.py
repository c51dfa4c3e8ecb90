"""``egress.allow`` lists rules an ``http`` step may reach beyond public addresses: each must be an
address, a CIDR network, a host pattern or a category (dsl/egress.py), else it would silently allow
nothing (or, mistyped, something else)."""

from __future__ import annotations

from collections.abc import Iterator

from dsl.checks import CheckContext, rule
from dsl.diagnostics import Diagnostic
from dsl.egress import RuleError, parse_rule


@rule("bad-egress-rule", "an `egress.allow` entry is not an address, network, host pattern or category")
def check_egress(ctx: CheckContext) -> Iterator[Diagnostic]:
    egress = ctx.root.get("egress")
    if not isinstance(egress, dict):
        return
    allow = egress.get("allow")
    if not isinstance(allow, list):
        return
    for i, text in enumerate(allow):
        if not isinstance(text, str):
            continue  # the schema reports it
        try:
            parsed = parse_rule(text)
        except RuleError as exc:
            yield ctx.diag("bad-egress-rule", "error", str(exc), ("egress", "allow", i))
            continue
        if parsed.category == "metadata":
            yield ctx.diag(
                "bad-egress-rule",
                "error",
                "a workflow cannot allow cloud metadata endpoints; only the environment can "
                "(HOPFLOW_EGRESS_ALLOW=metadata)",
                ("egress", "allow", i),
            )
