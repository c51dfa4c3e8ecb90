"""Error names in ``catch`` and ``retry.on`` that nothing can raise: a typo there means the catch never
fires (the execution compensates instead) or the retry never happens, and nothing else would say so.

An error name is raised by hopflow itself (``timeout``, ``http.*``, ``action.*``, …), by a ``fail``
step of this file, or by a child workflow (``workflow`` steps): a child's error reaches its parent
under the child's own name, and the child is another file. So a name that is neither built in nor
raised here is reported only when the file starts no child workflow, or when it is a near miss of a
built-in name (``timout``). A warning: the file runs, the clause just never matches.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any

from dsl.checks import CheckContext, rule
from dsl.diagnostics import Diagnostic
from dsl.schema import BUILTIN_ERRORS
from dsl.source import JsonPath

# the schema's catchable built-ins, plus the names the runtime raises on its own
BUILTIN = (*BUILTIN_ERRORS, "dead", "workflow.unknown")
_PREFIXES = ("http.", "action.", "input.")


def _matchers(ctx: CheckContext) -> Iterator[tuple[JsonPath, str, str]]:
    """(path of the name, the name, where it is) for every error name a catch or retry matches."""

    def retry_on(retry: Any, path: JsonPath) -> Iterator[tuple[JsonPath, str, str]]:
        if isinstance(retry, list):  # several policies
            for r, policy in enumerate(retry):
                yield from retry_on(policy, (*path, r))
            return
        if not isinstance(retry, Mapping):
            return
        for key in ("on", "not_on"):
            if isinstance(retry.get(key), list):
                for i, name in enumerate(retry[key]):
                    if isinstance(name, str):
                        yield (*path, key, i), name, f"retry.{key}"

    defaults = ctx.root.get("defaults")
    if isinstance(defaults, Mapping):
        yield from retry_on(defaults.get("retry"), ("defaults", "retry"))
    for step in ctx.steps:
        yield from retry_on(step.body.get("retry"), (*step.path, "retry"))
        comp = step.body.get("compensate")
        if isinstance(comp, Mapping):
            yield from retry_on(comp.get("retry"), (*step.path, "compensate", "retry"))
        catch = step.body.get("catch")
        if isinstance(catch, list):
            for c, clause in enumerate(catch):
                errors = clause.get("errors") if isinstance(clause, Mapping) else None
                if isinstance(errors, list):
                    for i, name in enumerate(errors):
                        if isinstance(name, str):
                            yield (*step.path, "catch", c, "errors", i), name, "catch"


def _raised(ctx: CheckContext) -> list[str]:
    out = []
    for step in ctx.steps:
        body = step.body.get("fail")
        if step.kind == "fail" and isinstance(body, Mapping) and isinstance(body.get("error"), str):
            out.append(body["error"])
    return out


def _starts_children(ctx: CheckContext) -> bool:
    for step in ctx.steps:
        comp = step.body.get("compensate")
        if step.kind == "workflow" or (isinstance(comp, Mapping) and "workflow" in comp):
            return True
    return False


@rule(
    "unknown-error",
    "a catch or retry.on names an error that nothing raises: not built in, and no fail step of the "
    "file raises it (so the clause never matches; a typo such as 'timout')",
)
def check_error_names(ctx: CheckContext) -> Iterator[Diagnostic]:
    raised = _raised(ctx)
    children = _starts_children(ctx)
    for path, name, where in _matchers(ctx):
        if name in BUILTIN or name in raised or name.startswith(_PREFIXES):
            continue
        near = difflib.get_close_matches(name.lower(), BUILTIN, n=1, cutoff=0.75)
        if near:
            message = (
                f"{name!r} is not an error hopflow raises, and no fail step here raises it, so this "
                f"{where} never matches it; did you mean {near[0]!r}?"
            )
        elif children:
            continue  # a child workflow may raise it
        else:
            close = difflib.get_close_matches(name, raised, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = (
                f"no fail step in this workflow raises {name!r} and it is not a built-in error, so this "
                f"{where} never matches it{hint}"
            )
        yield ctx.diag("unknown-error", "warning", message, path)


def _covers(earlier: str, name: str) -> bool:
    """Whether a catch of ``earlier`` takes every error ``name`` stands for."""
    if earlier in ("any", name) or name.startswith(earlier + "."):
        return True
    if earlier in ("http.4xx", "http.5xx") and name.startswith("http.") and len(name) == 8:
        return name[5] == earlier[5] and name[6:].isdigit()
    return False


@rule(
    "unreachable-catch",
    "a catch entry that can never match, because an earlier entry of the same step already catches "
    "all its errors (for example after 'any')",
)
def check_catch_order(ctx: CheckContext) -> Iterator[Diagnostic]:
    for step in ctx.steps:
        clauses = step.body.get("catch")
        if not isinstance(clauses, list):
            continue
        earlier: list[tuple[int, str]] = []
        for i, clause in enumerate(clauses):
            errors = clause.get("errors") if isinstance(clause, Mapping) else None
            if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors) or not errors:
                continue
            by = [next(((j, e) for j, e in earlier if _covers(e, name)), None) for name in errors]
            if all(b is not None for b in by):
                j, name = by[0]  # type: ignore[misc]
                what = "every error ('any')" if name == "any" else f"{name!r}"
                yield ctx.diag(
                    "unreachable-catch",
                    "warning",
                    f"catch entry {i + 1} of step {step.id!r} never runs: entry {j + 1} before it "
                    f"already catches {what}; put the more specific entry first",
                    (*step.path, "catch", i),
                )
            earlier.extend((i, e) for e in errors)
