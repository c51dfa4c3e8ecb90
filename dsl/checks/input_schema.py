"""The ``input`` block is a JSON Schema; templates that read ``input.X`` are checked against it.

Three rules: the schema itself must be valid 2020-12 JSON Schema (``input-schema``); a property a
template reads must be declared (``input-reference``: an error when the schema closes its properties,
a warning otherwise); and an obvious type misuse, such as ``| length`` on an integer, is an error
(``input-type``). The schema is navigated through ``properties``, ``patternProperties``,
``additionalProperties``, local ``$ref`` and ``allOf``/``anyOf``/``oneOf``; anything it cannot follow
is given the benefit of the doubt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from dsl.checks import CheckContext, TemplateSite, rule
from dsl.checks.template_syntax import (
    dashed_hint,
    did_you_mean,
    filter_offset,
    part_offset,
    rendered_sites,
    root_offset,
)
from dsl.diagnostics import Diagnostic
from dsl.source import JsonPath
from dsl.templates import Reference

JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_ONE = (
    "items",
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "contentSchema",
)
_SCHEMA_LISTS = ("prefixItems", "allOf", "anyOf", "oneOf")
KEYWORDS = frozenset(
    {
        *_SCHEMA_MAPS,
        *_SCHEMA_ONE,
        *_SCHEMA_LISTS,
        "$schema",
        "$id",
        "$ref",
        "$anchor",
        "$dynamicRef",
        "$dynamicAnchor",
        "$vocabulary",
        "$comment",
        "type",
        "enum",
        "const",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "maxContains",
        "minContains",
        "maxProperties",
        "minProperties",
        "required",
        "dependentRequired",
        "format",
        "contentEncoding",
        "contentMediaType",
        "title",
        "description",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "examples",
        "dependencies",  # pre-2019 spelling the 2020-12 metaschema still checks
    }
)

# filters whose argument must have one of these JSON types (None: no JSON value ever works)
_ITERABLE = frozenset({"string", "array", "object"})
FILTER_TYPES: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        (
            "length",
            "count",
            "first",
            "last",
            "reverse",
            "join",
            "sort",
            "unique",
            "min",
            "max",
            "map",
            "select",
            "reject",
            "list",
            "batch",
            "slice",
        ),
        _ITERABLE,
    ),
    **dict.fromkeys(("selectattr", "rejectattr", "groupby"), frozenset({"array", "object"})),
    "sum": frozenset({"array"}),
    "dictsort": frozenset({"object"}),
    "items": frozenset({"object"}),
    "datetime": frozenset({"string"}),
    "seconds": frozenset({"string", "number"}),
    "abs": frozenset({"number"}),
    "round": frozenset({"number"}),
    "isoformat": frozenset(),
}
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (),
}
_ARTICLE = {"array": "an array", "integer": "an integer", "object": "an object"}


def _describe(types: frozenset[str]) -> str:
    names = sorted(types - {"integer"} if "number" in types else types)
    words = [_ARTICLE.get(names[0], f"a {names[0]}"), *names[1:]]
    return " or ".join(words)


def _needs(accepted: frozenset[str]) -> str:
    if not accepted:
        return "it expects a datetime, which an input value never is (parse it first: `| datetime`)"
    order = ("string", "number", "array", "object")
    plain = {"string": "a string", "array": "a list", "object": "a mapping", "number": "a number"}
    words = [plain[t] for t in order if t in accepted]
    return "it needs " + (words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1])


# --------------------------------------------------------------------------------- schema navigation


class _Schema:
    """Reads one input schema: local ``$ref``, ``allOf`` conjunctions, ``anyOf``/``oneOf`` alternatives."""

    def __init__(self, root: Any) -> None:
        self.root = root

    def resolve(self, schema: Any, depth: int = 0) -> Any:
        while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str) and depth < 32:
            target = self._pointer(schema["$ref"])
            if target is None:
                return schema
            if len(schema) > 1:  # siblings of $ref apply too (2020-12): keep both
                return {"allOf": [target, {k: v for k, v in schema.items() if k != "$ref"}]}
            schema = target
            depth += 1
        return schema

    def _pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return None
        node = self.root
        for raw in ref[1:].split("/")[1:]:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    def facets(self, schema: Any, depth: int = 0) -> list[Mapping[str, Any]]:
        """The schema and everything it is ``allOf``-combined with (all must hold)."""
        schema = self.resolve(schema)
        if not isinstance(schema, Mapping) or depth > 16:
            return []
        out = [schema]
        members = schema.get("allOf")
        if isinstance(members, list):
            for member in members:
                out.extend(self.facets(member, depth + 1))
        return out

    def alternatives(self, facets: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        out: list[Mapping[str, Any]] = []
        for facet in facets:
            for key in ("anyOf", "oneOf"):
                members = facet.get(key)
                if isinstance(members, list):
                    for member in members:
                        out.extend(self.facets(member))
        return out

    def types(self, schemas: list[Any]) -> frozenset[str] | None:
        """JSON types a value of any of ``schemas`` may have; None when the schemas do not say."""
        union: set[str] = set()
        for schema in schemas:
            facets = self.facets(schema)
            known: set[str] | None = None
            for facet in facets:
                declared = facet.get("type")
                if isinstance(declared, str):
                    declared = [declared]
                if isinstance(declared, list) and not all(t in JSON_TYPES for t in declared):
                    return None  # not a type name (the input-schema rule says so): no judgement
                if isinstance(declared, list) and all(isinstance(t, str) for t in declared):
                    found = set(declared)
                    if "number" in found:
                        found.add("integer")
                    known = found if known is None else known & found
            alts = self.alternatives(facets)
            if known is None and alts:
                alt_types = self.types(list(alts))
                if alt_types is None:
                    return None
                known = set(alt_types)
            if known is None:
                return None
            union |= known
        return frozenset(union)

    def child(self, schemas: list[Any], name: str) -> tuple[str, list[Any]]:
        """("declared", child schemas) | ("closed" | "open" | "unknown", [])."""
        statuses: list[str] = []
        children: list[Any] = []
        for schema in schemas:
            status, found = self._child(schema, name)
            statuses.append(status)
            children.extend(found)
        if "declared" in statuses:
            return "declared", children
        if statuses and all(s == "closed" for s in statuses):
            return "closed", []
        return ("open" if "open" in statuses else "unknown"), []

    def _child(self, schema: Any, name: str) -> tuple[str, list[Any]]:
        facets = self.facets(schema)
        alts = self.alternatives(facets)
        found: list[Any] = []
        for facet in (*facets, *alts):
            props = facet.get("properties")
            if isinstance(props, Mapping) and name in props:
                found.append(props[name])
            patterns = facet.get("patternProperties")
            if isinstance(patterns, Mapping):
                for pattern, sub in patterns.items():
                    if _matches(pattern, name):
                        found.append(sub)
        if found:
            return "declared", found
        if any(
            f.get("additionalProperties") is False or f.get("unevaluatedProperties") is False for f in facets
        ):
            return "closed", []
        extra = [
            f["additionalProperties"] for f in facets if isinstance(f.get("additionalProperties"), Mapping)
        ]
        if extra:
            return "declared", extra
        if any(isinstance(f.get("properties"), Mapping) for f in (*facets, *alts)):
            return "open", []
        return "unknown", []

    def names(self, schemas: list[Any]) -> list[str]:
        out: list[str] = []
        for schema in schemas:
            facets = self.facets(schema)
            for facet in (*facets, *self.alternatives(facets)):
                props = facet.get("properties")
                if isinstance(props, Mapping):
                    out.extend(str(k) for k in props)
        return out


def _matches(pattern: str, name: str) -> bool:
    try:
        return re.search(pattern, name) is not None
    except (re.error, TypeError):
        return False


# ------------------------------------------------------------------------------------- input-schema


@lru_cache(maxsize=1)
def _meta_validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(Draft202012Validator.META_SCHEMA)


def _subschemas(schema: Any, path: JsonPath) -> Iterator[tuple[JsonPath, Mapping[str, Any]]]:
    """Every schema object inside ``schema`` (itself included), with its document path."""
    if not isinstance(schema, Mapping):
        return
    yield path, schema
    for key in _SCHEMA_MAPS:
        members = schema.get(key)
        if isinstance(members, Mapping):
            for name, sub in members.items():
                yield from _subschemas(sub, (*path, key, name))
    for key in _SCHEMA_ONE:
        yield from _subschemas(schema.get(key), (*path, key))
    for key in _SCHEMA_LISTS:
        members = schema.get(key)
        if isinstance(members, list):
            for i, sub in enumerate(members):
                yield from _subschemas(sub, (*path, key, i))


# keywords the reference checks navigate by: a misspelling of one of them makes those checks guess
_NAVIGATION = frozenset(
    {*_SCHEMA_MAPS, *_SCHEMA_ONE, *_SCHEMA_LISTS, "type", "$ref", "required", "enum", "const"}
)


@rule("input-schema", "the `input` block is not a valid JSON Schema (2020-12)")
def check_input_schema(ctx: CheckContext) -> Iterator[Diagnostic]:
    return iter(_schema_problems(ctx))


def _untrustworthy(ctx: CheckContext) -> bool:
    """Whether the input schema is too broken to check references against: invalid, or with a
    misspelt keyword that the checks would need (``prcperties``). Its own errors are then the ones
    to fix, not one per `input.X` that it fails to declare."""
    _schema_problems(ctx)
    if any(len(path) == 1 and (str(path[0]).split() or [""])[-1] in _NAVIGATION for path in ctx.unknown):
        return True  # e.g. `properties:` that lost its indentation and left `input:`
    return bool(ctx.extra.get("input_schema_untrusted"))


def _schema_problems(ctx: CheckContext) -> list[Diagnostic]:
    cached = ctx.extra.get("input_schema_problems")
    if cached is None:
        untrusted = False
        cached = []
        for diagnostic in _find_schema_problems(ctx):
            cached.append(diagnostic)
            if diagnostic.is_error:
                untrusted = True
            else:
                meant = re.search(r"did you mean '([^']+)'", diagnostic.message)
                untrusted = untrusted or bool(meant and meant.group(1) in _NAVIGATION)
        ctx.extra["input_schema_problems"] = cached
        ctx.extra["input_schema_untrusted"] = untrusted
    return cached


def _find_schema_problems(ctx: CheckContext) -> Iterator[Diagnostic]:
    schema = ctx.root.get("input")
    if not isinstance(schema, Mapping):
        return  # absent, or not a mapping: the workflow schema reports the latter
    seen: set[tuple[JsonPath, str]] = set()
    errors = () if _plainly_valid(schema) else _meta_validator().iter_errors(schema)
    for error in errors:
        rel = tuple(error.absolute_path)
        path: JsonPath = ("input", *rel)
        message = _meta_message(rel, error)
        if (path, message) in seen:
            continue
        seen.add((path, message))
        yield ctx.diag("input-schema", "error", message, path)
    for path, sub in _subschemas(schema, ("input",)):
        for key in sub:
            if not isinstance(key, str):
                continue
            if key not in KEYWORDS and not key.startswith(("x-", "$")):
                hint = did_you_mean(key, KEYWORDS)
                if hint:
                    yield ctx.diag(
                        "input-schema",
                        "warning",
                        f"unknown JSON Schema keyword {key!r}{hint}; it is ignored",
                        (*path, key),
                        key=True,
                    )
        ref = sub.get("$ref")
        if isinstance(ref, str):
            problem = _ref_problem(schema, ref)
            if problem:
                yield ctx.diag("input-schema", "error", problem, (*path, "$ref"))
        pattern = sub.get("pattern")
        if isinstance(pattern, str):
            problem = _regex_problem(pattern)
            if problem:
                yield ctx.diag(
                    "input-schema",
                    "error",
                    f"pattern is not a valid regular expression: {problem}",
                    (*path, "pattern"),
                )
        patterns = sub.get("patternProperties")
        if isinstance(patterns, Mapping):
            for pattern in patterns:
                problem = _regex_problem(str(pattern))
                if problem:
                    yield ctx.diag(
                        "input-schema",
                        "error",
                        f"patternProperties key is not a valid regular expression: {problem}",
                        (*path, "patternProperties", pattern),
                        key=True,
                    )


def _ref_problem(root: Any, ref: str) -> str | None:
    """Why a ``$ref`` cannot be followed when the start payload is validated (offline, locally)."""
    if not ref.startswith("#"):
        return (
            f"$ref {ref!r} points outside this file: the start payload is validated offline, so only "
            "local references ('#/$defs/name') can be followed"
        )
    if ref.startswith("#/") and _Schema(root)._pointer(ref) is None:
        defs = root.get("$defs") if isinstance(root, Mapping) else None
        names = [f"#/$defs/{name}" for name in defs] if isinstance(defs, Mapping) else []
        return f"$ref {ref!r} points at nothing in the input schema{did_you_mean(ref, names)}"
    return None


# A conservative fast path for the metaschema check: the keywords below are checked exactly as the
# 2020-12 metaschema would; a schema using anything else (or any doubtful value) goes to jsonschema.
def _is_int(x: Any) -> bool:
    return type(x) is int


def _is_num(x: Any) -> bool:
    return type(x) in (int, float)


def _is_str_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(i, str) for i in x) and len(set(x)) == len(x)


def _non_negative(x: Any) -> bool:
    return _is_int(x) and x >= 0


_PLAIN_VALUES: dict[str, Any] = {
    **dict.fromkeys(
        ("title", "description", "$comment", "pattern", "format", "$schema"),
        lambda x: isinstance(x, str),
    ),
    **dict.fromkeys(("contentEncoding", "contentMediaType"), lambda x: isinstance(x, str)),
    **dict.fromkeys(("default", "const"), lambda x: True),
    "examples": lambda x: isinstance(x, list),
    "enum": lambda x: isinstance(x, list),
    **dict.fromkeys(("uniqueItems", "readOnly", "writeOnly", "deprecated"), lambda x: isinstance(x, bool)),
    **dict.fromkeys(
        (
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "minProperties",
            "maxProperties",
            "minContains",
            "maxContains",
        ),
        _non_negative,
    ),
    **dict.fromkeys(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"), _is_num),
    "multipleOf": lambda x: _is_num(x) and x > 0,
    "required": _is_str_list,
    "dependentRequired": lambda x: isinstance(x, dict) and all(_is_str_list(v) for v in x.values()),
    "type": lambda x: (
        (isinstance(x, str) and x in JSON_TYPES)
        or (_is_str_list(x) and bool(x) and all(t in JSON_TYPES for t in x))
    ),
}


def _plainly_valid(schema: Any, depth: int = 0) -> bool:
    """True only when ``schema`` is certainly valid 2020-12 JSON Schema (False = ask jsonschema)."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict) or depth > 64:
        return False
    for key, value in schema.items():
        if key in _PLAIN_VALUES:
            if not _PLAIN_VALUES[key](value):
                return False
        elif key in _SCHEMA_MAPS:
            if not isinstance(value, dict) or not all(_plainly_valid(v, depth + 1) for v in value.values()):
                return False
        elif key in _SCHEMA_ONE:
            if not _plainly_valid(value, depth + 1):
                return False
        elif key in _SCHEMA_LISTS:
            if (
                not isinstance(value, list)
                or not value
                or not all(_plainly_valid(v, depth + 1) for v in value)
            ):
                return False
        elif key.startswith("$") or key in KEYWORDS:
            return False  # $ref, $dynamicRef, $vocabulary, ...: let jsonschema judge
        # any other key is an annotation the metaschema allows
    return True


def _regex_problem(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


def _meta_message(rel: JsonPath, error: Any) -> str:
    value = error.instance
    if rel and rel[-1] == "type" and error.validator == "anyOf":
        bad = [t for t in (value if isinstance(value, list) else [value]) if t not in JSON_TYPES]
        if bad:
            word = bad[0]
            hint = did_you_mean(str(word), JSON_TYPES)
            return f"{word!r} is not a JSON Schema type (one of: {', '.join(JSON_TYPES)}){hint}"
        return f"type must be a type name or a list of distinct type names, not {value!r}"
    where = "/".join(str(p) for p in rel)
    message = f"invalid JSON Schema{' at ' + where if where else ''}: {error.message}"
    key = rel[-1] if rel else None
    if error.validator == "type" and error.validator_value == "array" and isinstance(value, str | int):
        message += f"; write {key}: [{value}]" if isinstance(key, str) else ""
    elif key == "properties" and error.validator == "type" and isinstance(value, list):
        message += "; properties maps each name to its schema: properties: {name: {type: string}}"
    return message


# --------------------------------------------------------------------- input-reference / input-type


def _direct_filter(source: str, ref: Reference) -> str | None:
    """The filter applied to exactly the value ``ref`` names, if any (``input.x | length``).

    Not when the reference was cut short at a dynamic or numeric subscript (``input.x[0] | length``
    applies the filter to an element).
    """
    if not ref.filters:
        return None
    if ref.parts:
        at = part_offset(source, ref, len(ref.parts) - 1) + len(ref.parts[-1])
    else:
        at = root_offset(source, ref) + len(ref.root)
    if source[at : at + 1] in ("'", '"'):
        at += 1
        while at < len(source) and source[at] in " \t":
            at += 1
        if source[at : at + 1] != "]":
            return None
        at += 1
    rest = source[at:].lstrip()
    return ref.filters[-1] if rest.startswith("|") else None


def _has_attribute(types: frozenset[str], name: str) -> bool:
    if name.startswith("_"):
        return False
    return any(hasattr(py, name) for t in types for py in _PY_TYPES.get(t, ()))


def _check_ref(ctx: CheckContext, nav: _Schema, site: TemplateSite, ref: Reference) -> Iterator[Diagnostic]:
    current: list[Any] = [nav.root]
    for i, part in enumerate(ref.parts):
        dotted = ".".join(("input", *ref.parts[:i]))
        types = nav.types(current)
        if types is not None and "object" not in types:
            if not _has_attribute(types, part):
                yield ctx.diag(
                    "input-type",
                    "error",
                    f"{dotted} is {_describe(types)} (input schema), so it has no attribute {part!r}",
                    site.path,
                    offset=part_offset(site.source, ref, i),
                )
            return
        status, children = nav.child(current, part)
        if status == "declared":
            current = children
            continue
        if status == "unknown" or _has_attribute(frozenset({"object"}), part):
            return  # nothing to check against, or a mapping method such as `input.x.items()`
        hint = dashed_hint(site.source, part_offset(site.source, ref, i)) or did_you_mean(
            part, nav.names(current)
        )
        where = "the input schema" if i == 0 else f"{dotted} in the input schema"
        if status == "closed":
            yield ctx.diag(
                "input-reference",
                "error",
                f"input.{'.'.join(ref.parts[: i + 1])} is not declared: {where} allows no other "
                f"properties (additionalProperties: false){hint}",
                site.path,
                offset=part_offset(site.source, ref, i),
            )
        else:
            yield ctx.diag(
                "input-reference",
                "warning",
                f"input.{'.'.join(ref.parts[: i + 1])} is not declared in {where}{hint}; declare it "
                "under `properties` so the start payload is checked",
                site.path,
                offset=part_offset(site.source, ref, i),
            )
        return
    name = _direct_filter(site.source, ref)
    if name is None or name not in FILTER_TYPES:
        return
    types = nav.types(current)
    if types is None:
        return
    accepted = FILTER_TYPES[name]
    if "number" in accepted:
        accepted = accepted | {"integer"}
    if types & accepted:
        return
    yield ctx.diag(
        "input-type",
        "error",
        f"{ref.dotted} is {_describe(types)} (input schema), so `| {name}` fails at run time: "
        f"{_needs(accepted)}",
        site.path,
        offset=filter_offset(site, name, root_offset(site.source, ref)),
    )


_BARE_INPUT = re.compile(r"^\{\{\s*input(\.[A-Za-z_]\w*)*\s*\}\}\n?$")


def _check_items(ctx: CheckContext, nav: _Schema, site: TemplateSite) -> Iterator[Diagnostic]:
    """``foreach: {items: "{{ input.x }}"}`` needs x to be a list."""
    step = site.step
    if step is None or step.kind != "foreach" or site.path != (*step.path, "foreach", "items"):
        return
    if site.parsed is None or len(site.parsed.references) != 1 or not _BARE_INPUT.match(site.source):
        return
    ref = site.parsed.references[0]
    current: list[Any] = [nav.root]
    for part in ref.parts:
        status, current = nav.child(current, part)
        if status != "declared":
            return
    types = nav.types(current)
    if types is None or "array" in types:
        return
    yield ctx.diag(
        "input-type",
        "error",
        f"foreach items must be a list, but {ref.dotted} is {_describe(types)} (input schema)",
        site.path,
        offset=root_offset(site.source, ref),
    )


def _input_checks(ctx: CheckContext) -> list[Diagnostic]:
    cached = ctx.extra.get("input_schema")
    if cached is not None:
        return cached
    out: list[Diagnostic] = []
    schema = ctx.root.get("input")
    if isinstance(schema, Mapping) and not _untrustworthy(ctx):
        nav = _Schema(schema)
        for site in rendered_sites(ctx):
            if site.parsed is None:
                continue
            for ref in site.parsed.references:
                if ref.root == "input":
                    out.extend(_check_ref(ctx, nav, site, ref))
            out.extend(_check_items(ctx, nav, site))
    ctx.extra["input_schema"] = out
    return out


@rule(
    "input-reference",
    "a template reads `input.X` but the input schema does not declare X (an error when the schema "
    "closes its properties, a warning otherwise)",
)
def check_input_reference(ctx: CheckContext) -> Iterator[Diagnostic]:
    return iter([d for d in _input_checks(ctx) if d.rule == "input-reference"])


@rule(
    "input-type",
    "a template uses an `input` value against its declared type (`| length` on an integer, an "
    "attribute of a string, `| datetime` on a number)",
)
def check_input_type(ctx: CheckContext) -> Iterator[Diagnostic]:
    return iter([d for d in _input_checks(ctx) if d.rule == "input-type"])
