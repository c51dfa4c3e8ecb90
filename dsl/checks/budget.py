"""A step that runs inside the webhook call must finish within the runtime's time budget.

Only ``http`` (not offloaded) and ``action`` steps and compensations do their work inside the call;
a wait, an offloaded request, a child workflow or a parallel/foreach fan-out holds no process while it
is pending, so its ``timeout`` may be as long as the author likes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dsl.checks import CheckContext, rule
from dsl.diagnostics import Diagnostic
from dsl.durations import DurationError, parse_ms
from dsl.source import JsonPath


def seconds(ms: int) -> str:
    return f"{ms / 1000:g}s"


def _in_call(kind: str | None, body: Mapping[str, Any]) -> bool:
    """Whether a step (or compensation) body of this kind does its work inside the webhook call."""
    if kind == "action":
        return True
    if kind == "http":
        http = body.get("http")
        return not (isinstance(http, Mapping) and http.get("offload") is True)
    return False


def _comp_kind(comp: Mapping[str, Any]) -> str | None:
    kinds = [k for k in ("http", "action", "workflow") if k in comp]
    return kinds[0] if len(kinds) == 1 else None


def _ms(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_ms(value)
    except DurationError:
        return None  # reported by bad-duration or the schema


def _advice(kind: str | None) -> str:
    if kind == "http":
        return "set `offload: true` so QStash makes the call, or raise --time-budget / HOPFLOW_TIME_BUDGET"
    return "shorten it, or raise --time-budget / HOPFLOW_TIME_BUDGET if your platform allows longer calls"


@rule(
    "timeout-budget",
    "an http (not offloaded) or action step's `timeout` (or the default that applies to it) is longer "
    "than the time budget of one webhook call",
)
def check_budget(ctx: CheckContext) -> Iterator[Diagnostic]:
    budget = ctx.time_budget_ms
    defaults = ctx.root.get("defaults")
    default_path: JsonPath = ("defaults", "timeout")
    default_ms = _ms(defaults.get("timeout")) if isinstance(defaults, Mapping) else None
    inheritors: list[str] = []

    for step in ctx.steps:
        bodies: list[tuple[str | None, Mapping[str, Any], JsonPath, str]] = [
            (step.kind, step.body, step.path, f"step {step.id!r}")
        ]
        comp = step.body.get("compensate")
        if isinstance(comp, Mapping):
            bodies.append(
                (_comp_kind(comp), comp, (*step.path, "compensate"), f"compensation of {step.id!r}")
            )
        for kind, body, path, label in bodies:
            if not _in_call(kind, body):
                continue
            if "timeout" in body:
                ms = _ms(body["timeout"])
                if ms is not None and ms > budget:
                    yield ctx.diag(
                        "timeout-budget",
                        "error",
                        f"timeout {body['timeout']} of {label} ({kind}) is longer than the time budget "
                        f"of one webhook call ({seconds(budget)}): {_advice(kind)}",
                        (*path, "timeout"),
                    )
            elif default_ms is not None and default_ms > budget:
                inheritors.append(f"{label} ({kind})")

    if inheritors:
        shown = ", ".join(inheritors[:3]) + (
            f" and {len(inheritors) - 3} more" if len(inheritors) > 3 else ""
        )
        kinds = "http" if all(i.endswith("(http)") for i in inheritors) else "action"
        yield ctx.diag(
            "timeout-budget",
            "error",
            f"defaults.timeout {defaults['timeout']} is longer than the time budget of one webhook call "
            f"({seconds(budget)}) and applies to {shown}: {_advice(kinds)}",
            default_path,
        )
