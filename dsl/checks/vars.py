"""Declared vars and shared writes: a reducer's initial value must suit it, and steps that may run at
the same time (parallel branches, foreach items) must not `set` one plain var — each overwrites
what the others wrote, and contributions are lost. A reducer (`vars: {x: {reduce: …}}`) fixes that."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dsl.checks import CheckContext, StepRef, rule
from dsl.diagnostics import Diagnostic

SUGGEST = {"list": "append", "number": "sum", "mapping": "merge"}
WANTS = {
    "append": ("list", list),
    "extend": ("list", list),
    "sum": ("number", (int, float)),
    "min": ("number or null", (int, float, type(None))),
    "max": ("number or null", (int, float, type(None))),
    "merge": ("mapping", Mapping),
}


def _declared(ctx: CheckContext) -> dict[str, str]:
    """Declared var name → reducer (replace when not given or malformed)."""
    raw = ctx.root.get("vars")
    if not isinstance(raw, Mapping):
        return {}
    out = {}
    for name, decl in raw.items():
        reduce = decl.get("reduce", "replace") if isinstance(decl, Mapping) else "replace"
        out[str(name)] = reduce if isinstance(reduce, str) else "replace"
    return out


@rule("var-initial", "a declared var's `initial` value does not suit its reducer (e.g. `sum` from a list)")
def check_initial(ctx: CheckContext) -> Iterator[Diagnostic]:
    raw = ctx.root.get("vars")
    if not isinstance(raw, Mapping):
        return
    for name, decl in raw.items():
        if not isinstance(decl, Mapping) or "initial" not in decl:
            continue
        reduce = decl.get("reduce", "replace")
        want = WANTS.get(reduce) if isinstance(reduce, str) else None
        if want is None:
            continue
        label, types = want
        value = decl["initial"]
        if isinstance(value, types) and not isinstance(value, bool):
            continue
        yield ctx.diag(
            "var-initial",
            "error",
            f"vars.{name} uses `reduce: {reduce}`, which starts from a {label}, not {_kind(value)}",
            ("vars", name, "initial"),
        )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return "a number"
    return "a string"


def _concurrency(step: StepRef) -> Any:
    body = step.body.get("foreach")
    return body.get("concurrency", 10) if isinstance(body, Mapping) else None


def _owners(ctx: CheckContext) -> dict[str, tuple[StepRef, int | None]]:
    """Scope id → (the parallel/foreach step that owns it, the branch index for a parallel)."""
    owners: dict[str, tuple[StepRef, int | None]] = {}
    for step in ctx.steps:
        if step.kind == "foreach":
            owners[step.id] = (step, None)
        elif step.kind == "parallel":
            body = step.body.get("parallel")
            branches = body.get("branches") if isinstance(body, Mapping) else body
            for b in range(len(branches) if isinstance(branches, list) else 0):
                owners[f"{step.id}/{b}"] = (step, b)
    return owners


@rule(
    "vars-race",
    "steps that can run at the same time (parallel branches, foreach items) `set` one var that has no "
    "reducer: each overwrites what the others wrote",
)
def check_race(ctx: CheckContext) -> Iterator[Diagnostic]:
    declared = _declared(ctx)
    owners = _owners(ctx)
    writers: dict[str, list[tuple[StepRef, dict[str, int]]]] = {}  # var → (set step, {parallel: branch})
    for step in ctx.steps:
        values = step.body.get("set") if step.kind == "set" else None
        if not isinstance(values, Mapping):
            continue
        branches: dict[str, int] = {}
        racing_foreach: StepRef | None = None
        scope, seen = step.scope, set()
        while scope in owners and scope not in seen:
            seen.add(scope)
            owner, index = owners[scope]
            if index is None:
                if racing_foreach is None and _concurrency(owner) != 1:
                    racing_foreach = owner
            else:
                branches[owner.id] = index
            scope = owner.scope
        for name in values:
            name = str(name)
            if declared.get(name, "replace") != "replace":
                continue
            if racing_foreach is not None:
                yield ctx.diag(
                    "vars-race",
                    "warning",
                    f"vars.{name} is set by every item of foreach {racing_foreach.id!r}, and items run "
                    f"at the same time (concurrency {_concurrency(racing_foreach)}): updates are lost; "
                    f"declare it with a reducer (`vars: {{{name}: {{reduce: append}}}}`, or sum, merge, …) "
                    f"or use `concurrency: 1`",
                    (*step.path, "set", name),
                    key=True,
                )
                continue
            for other, other_branches in writers.get(name, []):
                common = [p for p in branches if p in other_branches and branches[p] != other_branches[p]]
                if common:
                    yield ctx.diag(
                        "vars-race",
                        "warning",
                        f"vars.{name} is also set by step {other.id!r}, in another branch of parallel "
                        f"{common[0]!r} that runs at the same time: one write overwrites the other; "
                        f"declare it with a reducer (`vars: {{{name}: {{reduce: …}}}}`) "
                        "or set it after the join",
                        (*step.path, "set", name),
                        key=True,
                    )
                    break
            writers.setdefault(name, []).append((step, branches))
