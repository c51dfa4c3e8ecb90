"""Durations the schema's pattern lets through but that mean nothing (``1m1h``, ``1s1s``), and
durations of zero where zero can never work (a timeout of 0 fails every attempt)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from dsl.checks import CheckContext, rule
from dsl.diagnostics import Diagnostic
from dsl.durations import PATTERN, DurationError, parse_ms
from dsl.source import JsonPath

_SHAPE = re.compile(PATTERN)


def _retry_sites(retry: Any, path: JsonPath) -> Iterator[tuple[JsonPath, Any, str]]:
    if isinstance(retry, Mapping):
        for key in ("interval", "max_interval"):
            if key in retry:
                yield (*path, key), retry[key], f"retry.{key}"


def duration_sites(ctx: CheckContext) -> Iterator[tuple[JsonPath, Any, str]]:
    """Every value the language reads as a duration: (document path, value, what it is)."""
    root = ctx.root
    if "timeout" in root:
        yield ("timeout",), root["timeout"], "execution timeout"
    defaults = root.get("defaults")
    if isinstance(defaults, Mapping):
        if "timeout" in defaults:
            yield ("defaults", "timeout"), defaults["timeout"], "timeout"
        yield from _retry_sites(defaults.get("retry"), ("defaults", "retry"))
    for step in ctx.steps:
        body = step.body
        if "timeout" in body:
            yield (*step.path, "timeout"), body["timeout"], "timeout"
        yield from _retry_sites(body.get("retry"), (*step.path, "retry"))
        wait = body.get("wait")
        if step.kind == "wait" and isinstance(wait, Mapping):
            if "for" in wait:
                yield (*step.path, "wait", "for"), wait["for"], "wait.for"
            if "timeout" in wait:
                yield (*step.path, "wait", "timeout"), wait["timeout"], "timeout"
        inner = body.get(step.kind) if step.kind in ("parallel", "foreach") else None
        if step.kind == "foreach" and isinstance(inner, Mapping) and "item_timeout" in inner:
            yield (*step.path, "foreach", "item_timeout"), inner["item_timeout"], "timeout"
        if step.kind == "parallel" and isinstance(inner, Mapping) and isinstance(inner.get("branches"), list):
            for b, branch in enumerate(inner["branches"]):
                if isinstance(branch, Mapping) and "timeout" in branch:
                    yield (*step.path, "parallel", "branches", b, "timeout"), branch["timeout"], "timeout"
        comp = body.get("compensate")
        if isinstance(comp, Mapping):
            if "timeout" in comp:
                yield (*step.path, "compensate", "timeout"), comp["timeout"], "timeout"
            yield from _retry_sites(comp.get("retry"), (*step.path, "compensate", "retry"))


@rule(
    "bad-duration",
    "a duration that cannot be read (units out of order or repeated, e.g. `1m1h`) or that is zero "
    "where zero never works (a timeout of 0; a wait of 0 is a warning)",
)
def check_durations(ctx: CheckContext) -> Iterator[Diagnostic]:
    for path, value, what in duration_sites(ctx):
        if not isinstance(value, str) or not _SHAPE.match(value.strip()):
            continue  # not shaped like a duration at all: the schema reports it
        try:
            ms = parse_ms(value)
        except DurationError as exc:
            yield ctx.diag("bad-duration", "error", str(exc), path)
            continue
        if ms > 0:
            continue
        if what in ("timeout", "execution timeout"):
            yield ctx.diag(
                "bad-duration",
                "error",
                f"a {what} of {value!r} can never be met: every attempt would time out at once "
                "(remove it to use the default, or give a positive duration)",
                path,
            )
        elif what == "wait.for":
            yield ctx.diag(
                "bad-duration",
                "warning",
                f"waiting for {value!r} does nothing: remove the step or give a positive duration",
                path,
            )
