"""Reading an optional input property without a default or a guard.

A property the input schema declares but does not list in ``required`` may be missing from the start
payload, and reading a missing name fails the step at run time (templates are strict). So
``{{ input.note }}`` warns when ``note`` is optional, unless the template (or the step's ``if``)
guards it: ``input.note | default('')``, ``input.note is defined`` (``{% if input.note is defined %}``,
``input.note if input.note is defined else …``), ``'note' in input``. A bare truth test
(``{% if input.note %}``) is no guard: it reads the missing name too, and fails the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from dsl.checks import CheckContext, TemplateSite, rule
from dsl.checks.input_schema import _Schema, _untrustworthy
from dsl.checks.template_syntax import part_offset, rendered_sites
from dsl.diagnostics import Diagnostic
from dsl.templates import Reference

_DEFAULT_FILTERS = frozenset({"default", "d"})


def _optional_part(nav: _Schema, ref: Reference) -> int | None:
    """The index of the first part of ``ref`` that the schema declares but does not require (None
    when every part is required, or the schema does not say: ``anyOf``, undeclared, not an object)."""
    current: Any = nav.root
    for i, part in enumerate(ref.parts):
        facets = nav.facets(current)
        if not facets or nav.alternatives(facets):
            return None  # alternatives: which properties exist depends on the branch taken
        declared = [
            f["properties"][part]
            for f in facets
            if isinstance(f.get("properties"), Mapping) and part in f["properties"]
        ]
        if not declared:
            return None  # undeclared: the input-reference rule's business
        required = any(isinstance(f.get("required"), list) and part in f["required"] for f in facets)
        if not required:
            return i
        current = declared[0]
    return None


def _guarded(source: str, dotted: str, name: str) -> bool:
    """Whether ``source`` tests ``dotted`` (``input.a.b``) before using it."""
    path = re.escape(dotted).replace(r"\.", r"\s*\.\s*")
    if re.search(rf"(?<![\w.]){path}\s*is\s+(not\s+)?(defined|undefined)\b", source):
        return True
    parent = re.escape(dotted.rsplit(".", 1)[0]).replace(r"\.", r"\s*\.\s*")
    if re.search(rf"['\"]{re.escape(name)}['\"]\s+(not\s+)?in\s+{parent}(?![\w.])", source):
        return True
    return bool(re.search(rf"(?<![\w.]){path}\s*\|\s*(default|d)\s*\(", source))


def _check(ctx: CheckContext, nav: _Schema, site: TemplateSite) -> Iterator[Diagnostic]:
    if site.parsed is None:
        return
    condition = site.step.body.get("if") if site.step is not None else None
    step_guard = condition if isinstance(condition, str) else ""
    seen: set[str] = set()  # one warning per property and template
    for ref in site.parsed.references:
        if ref.root != "input" or not ref.parts:
            continue
        index = _optional_part(nav, ref)
        if index is None:
            continue
        dotted = ".".join(("input", *ref.parts[: index + 1]))
        name = ref.parts[index]
        if dotted in seen:
            continue
        seen.add(dotted)
        if index == len(ref.parts) - 1 and ref.filters and ref.filters[0] in _DEFAULT_FILTERS:
            continue
        if _guarded(site.source, dotted, name) or _guarded(step_guard, dotted, name):
            continue
        truth = re.search(rf"\bif\s+(not\s+)?{re.escape(dotted)}(?![\w.])", site.source)
        why = " (`if " + dotted + "` reads it too: templates are strict)" if truth else ""
        yield ctx.diag(
            "optional-input",
            "warning",
            f"{dotted} is optional (not in the input schema's `required`), so this template fails when "
            f"a start payload leaves it out{why}: add `| default(…)`, test `{dotted} is defined` "
            "first, or list it under `required`",
            site.path,
            offset=part_offset(site.source, ref, index),
        )


@rule(
    "optional-input",
    "a template reads an input property the schema does not require, without `| default(…)` or a guard",
)
def optional_input(ctx: CheckContext) -> Iterator[Diagnostic]:
    schema = ctx.root.get("input")
    if not isinstance(schema, Mapping) or _untrustworthy(ctx):
        return
    nav = _Schema(schema)
    for site in rendered_sites(ctx):
        yield from _check(ctx, nav, site)
