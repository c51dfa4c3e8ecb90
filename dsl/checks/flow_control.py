"""``flow_control``: limits that cannot mean what they say, and keys that read what is not known yet.

A key is rendered once, when the execution starts (docs/language.md#flow-control): it can read
``input``, ``env``, ``execution`` and the *declared* vars' initial values — never a step's output,
nor a var only a ``set`` step assigns (unknown names are the ``unknown-name`` rule's; see names.py).
QStash counts a rate's period in whole seconds, so the local dispatcher and qstash-dev do too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dsl.checks import CheckContext, rule
from dsl.diagnostics import Diagnostic
from dsl.durations import DurationError, parse_ms
from dsl.source import JsonPath
from dsl.templates import TemplateError, is_template, parse


def _places(ctx: CheckContext) -> Iterator[tuple[Mapping[str, Any], JsonPath, str, bool]]:
    """Every `flow_control` mapping: (value, path, who, on the workflow)."""
    top = ctx.root.get("flow_control")
    if isinstance(top, Mapping):
        yield top, ("flow_control",), "the workflow's flow_control", True
    for step in ctx.steps:
        value = step.body.get("flow_control")
        if isinstance(value, Mapping):
            yield value, (*step.path, "flow_control"), f"the flow_control of step {step.id!r}", False


@rule(
    "flow-control",
    "a `flow_control` sets no limit, has a `period` without a `rate`, or a period that is not whole "
    "seconds (at least 1s)",
)
def check_limits(ctx: CheckContext) -> Iterator[Diagnostic]:
    for value, path, who, workflow in _places(ctx):
        limits = ("rate", "parallelism", "max_running") if workflow else ("rate", "parallelism")
        if not any(name in value for name in limits):
            yield ctx.diag(
                "flow-control",
                "error",
                f"{who} sets no limit: give it {', '.join(f'`{n}`' for n in limits)} (or remove it)",
                path,
            )
        period = value.get("period")
        if period is None:
            continue
        if "rate" not in value:
            yield ctx.diag(
                "flow-control",
                "error",
                f"{who} has a `period` but no `rate`: the period is the window a rate counts in "
                "(add `rate: N`, or remove `period`)",
                (*path, "period"),
            )
            continue
        if not isinstance(period, str):
            continue  # the schema reports it
        try:
            ms = parse_ms(period)
        except DurationError:
            continue  # the schema reports it
        if ms < 1000 or ms % 1000:
            yield ctx.diag(
                "flow-control",
                "error",
                f"{who} has period {period!r}: QStash counts a rate's period in whole seconds, "
                "at least 1s (e.g. `1s`, `30s`, `1m`)",
                (*path, "period"),
            )


@rule(
    "flow-control-key",
    "a `flow_control` key reads a var that only a `set` step assigns (keys are rendered when the "
    "execution starts, with the declared vars' initial values)",
)
def check_key(ctx: CheckContext) -> Iterator[Diagnostic]:
    declared = ctx.root.get("vars")
    known = {str(k) for k in declared} if isinstance(declared, Mapping) else set()
    for value, path, who, _ in _places(ctx):
        key = value.get("key")
        if not isinstance(key, str) or not is_template(key):
            continue
        try:
            parsed = parse(key)
        except TemplateError:
            continue  # template-syntax reports it
        for ref in parsed.references:
            if ref.root == "vars" and ref.parts and ref.parts[0] not in known:
                yield ctx.diag(
                    "flow-control-key",
                    "error",
                    f"{who}'s key reads vars.{ref.parts[0]}, which no `vars:` entry declares: the key "
                    "is rendered when the execution starts, before any `set` step ran (declare it "
                    "under `vars:` with an initial value, or key on `input`)",
                    (*path, "key"),
                    offset=ref.offset,
                )
