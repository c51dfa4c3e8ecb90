"""Schema validation of a workflow document → positioned diagnostics a workflow author can act on.

``schemas/workflow.schema.json`` is the single source of truth. Two things make this module more than
``iter_errors``:

* **Speed.** Most files are valid, and jsonschema's generic machinery (an error object for every
  failed ``oneOf`` branch) costs milliseconds per file. The schema is therefore also compiled into
  plain Python predicates (:func:`_compile`); only a document they reject is handed to jsonschema,
  whose errors are then explained. The predicates are *conservative*: whenever they are unsure they
  answer "invalid", which only costs the slow path, never a missed error.
* **Messages.** Each jsonschema error is mapped to the key or value it is about and rephrased
  ("unknown key 'methd' in the http request of step 'find'; did you mean 'method'?"); errors that
  are consequences of another one at the same spot are dropped.

Rules produced: ``schema`` (wrong type or shape), ``unknown-key``, ``missing-key``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from dsl import hints
from dsl.diagnostics import Diagnostic, Position, sort
from dsl.durations import DurationError, parse_ms
from dsl.graph import KINDS

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

    from dsl.source import Document, JsonPath

RULES = {
    "schema": "a value has the wrong type or shape for its place in the workflow",
    "unknown-key": "a key the language does not know at that place (with a did-you-mean suggestion)",
    "missing-key": "a required key is missing (e.g. a step's id or kind)",
}


# ------------------------------------------------------------------------------------------ loading


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The workflow schema, read once from the ``schemas`` package (so it works from the wheel)."""
    from schemas import WORKFLOW_SCHEMA

    with open(WORKFLOW_SCHEMA, encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


@lru_cache(maxsize=1)
def validator() -> Any:
    """One compiled Draft 2020-12 validator (no format checking: formats are annotations here)."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema())


@lru_cache(maxsize=1)
def _partial_validators() -> tuple[Any, Any]:
    """Validators for the file without its steps' contents, and for one step (to localise errors)."""
    from jsonschema import Draft202012Validator

    schema = load_schema()
    defs = schema["$defs"]
    shallow = {k: v for k, v in defs["steps"].items() if k != "items"}
    top = {**schema, "properties": {**schema["properties"], "steps": shallow}}
    step = {"$defs": defs, "$ref": "#/$defs/step"}
    return Draft202012Validator(top), Draft202012Validator(step)


@lru_cache(maxsize=1)
def fast_check() -> Callable[[Any], bool] | None:
    """The schema as Python predicates; None if it uses a keyword :func:`_compile` does not know."""
    compiled = _fast()
    return compiled.check if compiled is not None else None


@lru_cache(maxsize=1)
def _fast() -> _Compiled | None:
    try:
        return _compile(load_schema())
    except _Unsupported:
        return None


@dataclass(frozen=True)
class Report:
    """What the schema found: the diagnostics, plus what the static checks need to stay quiet about
    (values under keys the language does not know; a file that is not a workflow at all)."""

    diagnostics: list[Diagnostic]
    unknown: frozenset[JsonPath] = frozenset()  # paths of keys reported as unknown
    foreign: bool = False  # not a hopflow workflow: the checks have nothing to say about it
    # misspelt keys with a confident suggestion: (mapping path, key as written, key meant)
    renames: tuple[tuple[JsonPath, str, str], ...] = ()


def validate_document(doc: Document) -> list[Diagnostic]:
    """Every schema problem in ``doc``, one diagnostic per distinct problem, sorted by position."""
    return analyse(doc).diagnostics


def analyse(doc: Document) -> Report:
    """:func:`validate_document`, with what the other checks need to know about the problems."""
    value = doc.value
    compiled = _fast()
    if compiled is not None and compiled.check(value):
        found: list[_Found] = []
    else:
        foreign = _foreign(doc)
        if foreign is not None:
            return Report([foreign.diagnostic()], foreign=True)
        explainer = _Explainer(doc)
        for error in _schema_errors(value, compiled):
            explainer.explain(error)
        found = explainer.result()
    found.extend(_switch_default_last(doc))
    found.extend(_not_json(doc, {f.path for f in found}))
    unknown = frozenset((*f.path, f.key) for f in found if f.tag == "unknown" and f.key is not None)
    renames = tuple(
        (f.path, f.key, f.suggestion)
        for f in found
        if f.tag == "unknown" and f.key is not None and f.suggestion and not f.extra
    )
    return Report(sort(f.diagnostic() for f in found), unknown, renames=renames)


def _foreign(doc: Document) -> _Found | None:
    """A YAML file that is not a workflow (a compose file, a CI config): one error, not one per key.

    Judged by its top-level keys: no ``steps``, at least two keys the language does not know, more of
    those than known ones, and none that looks like a misspelt ``name`` or ``steps`` (a workflow with
    typos gets its typos reported)."""
    value = doc.value
    if not isinstance(value, dict) or "steps" in value:
        return None
    allowed = list(load_schema()["properties"])
    unknown = [k for k in value if k not in allowed]
    if len(unknown) < 2 or len(unknown) <= len(value) - len(unknown):
        return None
    if any(difflib.get_close_matches(str(k).lower(), ["name", "steps"], n=1, cutoff=0.6) for k in unknown):
        return None
    shown = ", ".join(repr(k) for k in unknown[:4]) + (", …" if len(unknown) > 4 else "")
    return _Found(
        "schema",
        f"this is not a hopflow workflow: it has no 'steps', and its keys ({shown}) are not workflow "
        "keys; a workflow has at least 'name' and 'steps'",
        doc.key_at((unknown[0],)),
        (),
        "foreign",
    )


def _schema_errors(value: Any, compiled: _Compiled | None) -> Iterable[ValidationError]:
    """jsonschema's errors for an invalid document, run only on the parts that fail.

    A file with one bad step out of hundreds then costs one step's worth of jsonschema, not the
    file's: the top level is validated with the steps' contents left out, and each step whose
    predicate fails is validated on its own (its error paths are prefixed with ``steps, i``).
    """
    steps = value.get("steps") if isinstance(value, dict) else None
    if compiled is None or not isinstance(steps, list):
        yield from validator().iter_errors(value)
        return
    top, one_step = _partial_validators()
    yield from top.iter_errors(value)
    step_ok = compiled.ref("step")
    for i, step in enumerate(steps):
        if step_ok(step):
            continue
        for error in one_step.iter_errors(step):
            error.path.appendleft(i)
            error.path.appendleft("steps")
            yield error


# ---------------------------------------------------------------------------- fast path (predicates)


class _Unsupported(Exception):
    pass


_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "examples", "default", "deprecated"}
)
Predicate = Callable[[Any], bool]


def _is_integer(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and x.is_integer())


_TYPES: dict[str, Predicate] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "integer": _is_integer,
    "number": lambda x: isinstance(x, int | float) and not isinstance(x, bool),
}


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


@dataclass(frozen=True)
class _Compiled:
    check: Predicate  # the whole schema
    ref: Callable[[str], Predicate]  # one of its $defs, by name


def _compile(root: dict[str, Any]) -> _Compiled:
    """Translate the (subset of) JSON Schema our schema uses into nested closures.

    Anything unknown raises :class:`_Unsupported` so a future schema edit can never silently be
    checked less strictly: the caller then uses jsonschema for every document.
    """
    refs: dict[str, Predicate] = {}

    def ref(target: str) -> Predicate:
        if not target.startswith("#/$defs/"):
            raise _Unsupported(target)
        name = target[len("#/$defs/") :]
        if name not in refs:
            refs[name] = _always  # placeholder while compiling a recursive definition
            refs[name] = build(root["$defs"][name])
        return lambda x: refs[name](x)

    def build(schema: Any) -> Predicate:
        if schema is True or schema == {}:
            return _always
        if schema is False:
            return lambda x: False
        if not isinstance(schema, dict):
            raise _Unsupported(repr(schema))
        checks: list[Predicate] = []
        for keyword, arg in schema.items():
            if keyword in _ANNOTATIONS or keyword in ("properties", "additionalProperties"):
                continue
            checks.append(keyword_check(keyword, arg, schema))
        if "properties" in schema or "additionalProperties" in schema:
            checks.append(properties_check(schema))
        if not checks:
            return _always
        if len(checks) == 1:
            return checks[0]
        checks_t = tuple(checks)
        return lambda x: all(c(x) for c in checks_t)

    def properties_check(schema: dict[str, Any]) -> Predicate:
        props = {k: build(s) for k, s in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties", True)
        extra_check: Predicate | None = None if extra is False else build(extra)

        def check(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            for k, v in x.items():
                f = props.get(k, extra_check)
                if f is None or not f(v):
                    return False
            return True

        return check

    def keyword_check(keyword: str, arg: Any, schema: dict[str, Any]) -> Predicate:
        if keyword == "$ref":
            return ref(arg)
        if keyword == "type":
            names = [arg] if isinstance(arg, str) else list(arg)
            preds = tuple(_TYPES[n] for n in names)
            return lambda x: any(p(x) for p in preds)
        if keyword == "pattern":
            search = re.compile(arg).search
            return lambda x: not isinstance(x, str) or search(x) is not None
        if keyword == "enum":
            if not all(isinstance(v, str) for v in arg):
                raise _Unsupported("enum of non-strings")
            allowed = frozenset(arg)
            return lambda x: isinstance(x, str) and x in allowed
        if keyword == "required":
            req = tuple(arg)
            return lambda x: not isinstance(x, dict) or all(k in x for k in req)
        if keyword == "dependentRequired":
            deps = tuple((k, tuple(v)) for k, v in arg.items())
            return lambda x: (
                not isinstance(x, dict) or all(k not in x or all(d in x for d in ds) for k, ds in deps)
            )
        if keyword == "propertyNames":
            names_ok = build(arg)
            return lambda x: not isinstance(x, dict) or all(names_ok(k) for k in x)
        if keyword == "items":
            item = build(arg)
            return lambda x: not isinstance(x, list) or all(item(i) for i in x)
        if keyword == "minItems":
            return lambda x: not isinstance(x, list) or len(x) >= arg
        if keyword == "minProperties":
            return lambda x: not isinstance(x, dict) or len(x) >= arg
        if keyword == "maxProperties":
            return lambda x: not isinstance(x, dict) or len(x) <= arg
        if keyword == "minLength":
            return lambda x: not isinstance(x, str) or len(x) >= arg
        if keyword == "minimum":
            return lambda x: not _is_number(x) or x >= arg
        if keyword == "maximum":
            return lambda x: not _is_number(x) or x <= arg
        if keyword == "uniqueItems":
            return _unique if arg else _always
        if keyword == "oneOf":
            subs = tuple(build(s) for s in arg)

            def one_of(x: Any) -> bool:
                hits = 0
                for s in subs:
                    if s(x):
                        hits += 1
                        if hits > 1:
                            return False
                return hits == 1

            return one_of
        if keyword == "anyOf":
            subs_any = tuple(build(s) for s in arg)
            return lambda x: any(s(x) for s in subs_any)
        if keyword == "allOf":
            subs_all = tuple(build(s) for s in arg)
            return lambda x: all(s(x) for s in subs_all)
        if keyword == "not":
            inner = build(arg)
            return lambda x: not inner(x)
        raise _Unsupported(keyword)

    return _Compiled(build(root), lambda name: ref("#/$defs/" + name))


def _always(x: Any) -> bool:
    return True


def _unique(x: Any) -> bool:
    """Conservative: only lists of plain strings or plain integers are judged; others go the slow way."""
    if not isinstance(x, list):
        return True
    if all(isinstance(i, str) for i in x) or all(type(i) is int for i in x):
        return len(set(x)) == len(x)
    return False


# ------------------------------------------------------------------------------ explaining errors


@dataclass
class _Found:
    rule: str
    message: str
    position: Position
    path: JsonPath  # the mapping or value the problem is about
    tag: str = ""  # "unknown", "missing", "nokind", "type", "depends", ...
    key: str | None = None  # the key concerned (unknown/missing/depends)
    suggestion: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def diagnostic(self) -> Diagnostic:
        return Diagnostic(self.rule, "error", self.message, self.position)


# What a value at a titled definition is, in words ("expected a duration such as '30s', got ...")
_NOUNS = {
    "Duration": "a duration such as '30s' or '1h30m'",
    "Duration or template": "a duration such as '30s' or '1h30m'",
    "Whole number or template": "an integer",
    "Number or template": "a number",
    "Template": "a template such as '{{ input.x }}'",
    "Condition": "a condition: a template such as '{{ input.x > 1 }}', or true/false",
    "Step id": "a step id such as 'book_table'",
    "Workflow name": "a workflow name such as 'order-fulfilment'",
    "Environment name": "an environment variable name such as 'API_URL'",
    "Environment names": "a list of environment variable names",
    "Variable name": "a variable name",
    "Action name": "an action name such as 'payments.charge'",
    "Event name": "an event name such as 'order.approved'",
    "Error name": "an error name such as 'timeout' or 'http.5xx'",
    "Raised error name": "an error name such as 'NoTable'",
    "Retry policy": "a retry policy mapping such as {max_attempts: 3, interval: 1s}",
    "Catch list": "a list of {errors: [...], goto: id} entries",
    "Catch entry": "a mapping {errors: [...], goto: id}",
    "Steps": "a list of steps",
    "Step": "a step (a mapping with an id and one kind key such as http or action)",
    "Compensation": "a compensation (a mapping with one of http, action or workflow)",
    "Action arguments": "a mapping of argument names to values",
    "HTTP request": "a mapping such as {method: GET, url: ...}",
    "HTTP method": "an HTTP method such as GET or POST",
    "URL": "a URL or a template",
    "Headers": "a mapping of header names to values, or a template",
    "Query parameters": "a mapping of parameter names to values, or a template",
    "Wait": "a mapping with one of for, until or event",
    "Point in time": "a template or an ISO-8601 date-time with offset",
    "Switch": "a list of {if, goto} cases",
    "Switch case": "a mapping {if: condition, goto: id} or {default: id}",
    "Parallel block": "a mapping {branches: [{steps: [...]}, ...]}",
    "Branch": "a mapping {steps: [...]}",
    "Foreach": "a mapping {items, as, concurrency, steps}",
    "Items": "a list or a template such as '{{ input.items }}'",
    "Item variable": "a variable name such as 'item'",
    "Variables": "a mapping of variable names to values",
    "Child workflow": "a mapping {name: workflow, input: ...}",
    "Succeed": "a mapping: {} or {output: ...}",
    "Fail": "a mapping {error: Name, message: ...}",
    "Input schema": "a JSON Schema object such as {type: object, properties: {...}}",
    "Version": "an integer or a string",
    "Defaults": "a mapping {retry, timeout}",
    "hopflow workflow": "a workflow: a mapping with at least 'name' and 'steps'",
}

# Why a string does not match a titled definition's pattern, and how to write it instead.
_PATTERN_HINTS = {
    "Step id": "is not a valid step id: start with a lowercase letter, then use lowercase letters, digits "
    "or '_' (at most 64 characters)",
    "Workflow name": "is not a valid workflow name: start with a lowercase letter, then use lowercase "
    "letters, digits, '_', '.' or '-' (at most 64 characters)",
    "Environment name": "is not an environment variable name: use uppercase letters, digits and '_'",
    "Variable name": "is not a valid variable name: use letters, digits and '_', not starting with a digit",
    "Action name": "is not an action name: use dotted Python identifiers such as 'payments.charge'",
    "Event name": "is not an event name: start with a letter, then letters, digits, '_', '.' or '-'",
    "Error name": "is not an error name: use timeout, http.connect, http.<status> (e.g. http.404), "
    "http.4xx, http.5xx, action.<ExceptionName>, input.invalid, template, cancelled, any, "
    "or a name raised by a fail step",
    "Raised error name": "cannot be raised by a fail step: use a name such as 'NoTable' or "
    "'order.rejected' (or an http.<status>, action.<Name>, input.invalid)",
    "Template": "is not a template: write '{{ expression }}'",
    "Condition": "is not a condition: write a template such as '{{ input.amount > 100 }}', or true/false",
    "Items": "is not a list or a template: write a template such as '{{ input.items }}' or a YAML list",
    "Headers": "is not a template: give a mapping of header names to values, or one '{{ expression }}'",
    "Query parameters": "is not a template: give a mapping of parameter names to values, or one "
    "'{{ expression }}'",
    "HTTP method": "is not an HTTP method: use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS "
    "(uppercase), or a template",
    "URL": "is not an absolute URL: start with http:// or https://, or use a template such as "
    "'{{ env.API }}/path'",
    "Point in time": "is not a point in time: use a template such as '{{ input.when }}' or an ISO-8601 "
    "date-time with offset such as '2030-01-31T19:00:00+01:00'",
    "Item variable": "cannot name the foreach item: use a lowercase name that is not one of input, "
    "steps, vars, env, execution, error, result, index, loop",
}

_PLACE_NOUNS = {
    "http": "http request",
    "retry": "retry policy",
    "wait": "wait",
    "compensate": "compensation",
    "parallel": "parallel block",
    "foreach": "foreach",
    "workflow": "child workflow",
    "succeed": "succeed",
    "fail": "fail",
    "emit": "emit",
    "defaults": "defaults",
    "catch": "catch list",
    "switch": "switch",
    "set": "set",
    "with": "arguments",
    "headers": "headers",
    "query": "query",
    "branches": "branches",
    "input": "input schema",
    "expect": "expected statuses",
    "env": "env list",
    "on": "retried errors",
    "errors": "caught errors",
}


def _value_text(value: Any, limit: int = 40) -> str:
    """How a value reads in a message: its YAML type, and the value when short."""
    import datetime as dt

    if value is None:
        return "an empty value (null)"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value:g}"
    if isinstance(value, str):
        shown = value if len(value) <= limit else value[: limit - 1] + "…"
        return f"string {shown!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dt.datetime | dt.date):
        return f"a YAML timestamp {value.isoformat()} (quote it to keep it a string)"
    return f"a {type(value).__name__}"


def _suggest(word: str, options: Iterable[str]) -> str | None:
    options = list(options)
    lowered = {o.lower(): o for o in options}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(word.lower(), options, n=1, cutoff=0.6)
    if not close and 2 <= len(word) <= 4:
        # short words: difflib's ratio is harsh ('ks' vs 'as' is 0.5); one changed letter is a typo
        close = [
            o
            for o in options
            if len(o) == len(word) and sum(a != b for a, b in zip(o, word.lower(), strict=True)) == 1
        ]
    return close[0] if close else None


BUILTIN_ERRORS = (
    "timeout",
    "http.connect",
    "http.egress",
    "http.4xx",
    "http.5xx",
    "input.invalid",
    "template",
    "template.limit",
    "cancelled",
    "any",
)


def _suggest_error(value: str) -> str | None:
    """The built-in error name a malformed one was probably meant to be (``http.5XX`` → ``http.5xx``)."""
    lowered = value.lower().strip()
    match = re.fullmatch(r"https?[._ -]?(\d)(\d\d|xx)", lowered)
    if match:
        return f"http.{match.group(1)}{match.group(2)}" if match.group(1) in "12345" else None
    match = re.fullmatch(r"http\.(\d)\d?", lowered)
    if match and match.group(1) in "12345":
        return f"http.{match.group(1)}xx"
    return _suggest(value, BUILTIN_ERRORS)


def _url_hint(value: str) -> str:
    """``${API}/x`` or ``$API/x`` (shell style) → the template that reads the variable; a URL without
    its scheme → with it."""
    if re.match(r"^(localhost|[\w-]+(\.[\w-]+)+)(:\d+)?(/|$)", value.strip()):
        scheme = "http" if value.startswith(("localhost", "127.")) else "https"
        return f"; did you mean '{scheme}://{value.strip()}'?"
    shell = re.match(r"\$\{?(\w+)\}?(.*)$", value.strip())
    if shell:
        name, rest = shell.group(1), shell.group(2)
        return f"; environment variables are read in templates: write '{{{{ env.{name} }}}}{rest}'"
    if value.startswith("/"):
        return f"; to call your API, write '{{{{ env.API }}}}{value}' with API listed under env"
    return ""


def _did_you_mean(suggestion: str | None) -> str:
    return f"; did you mean {suggestion!r}?" if suggestion else ""


def _get(value: Any, path: Iterable[str | int]) -> Any:
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _step_name(root: Any, path: JsonPath) -> str:
    step = _get(root, path)
    sid = step.get("id") if isinstance(step, dict) else None
    if isinstance(sid, str) and sid:
        return f"step {sid!r}"
    where = f"step {path[-1] + 1}"  # type: ignore[operator]
    parent = path[:-2]
    return where if not parent else f"{where} of {_where(root, parent)}"


def _where(root: Any, path: JsonPath) -> str:
    """A place in the document in words: "the retry policy of step 'book'", "branch 2 of step 'x'"."""
    if not path:
        return "the workflow"
    last = path[-1]
    parent = path[:-1]
    if isinstance(last, int):
        container = parent[-1] if parent else None
        owner = parent[:-1]
        if container == "steps":
            return _step_name(root, path)
        label = {"catch": "catch entry", "switch": "switch case", "branches": "branch"}.get(
            str(container), f"item {last + 1} of"
        )
        if label.endswith(" of"):
            return f"{label} {_where(root, parent)}"
        return f"{label} {last + 1} of {_where(root, owner)}"
    if last == "defaults" and not parent:
        return "the defaults"
    noun = _PLACE_NOUNS.get(last, repr(last))
    if not parent:
        return f"the {noun}" if last in _PLACE_NOUNS else f"{last!r}"
    if last == "retry" and parent == ("defaults",):
        return "the default retry policy"
    return f"the {noun} of {_where(root, parent)}"


def _label(path: JsonPath) -> str:
    """The key (or list item) a value sits under, for "KEY: expected ..." messages."""
    if not path:
        return "the file"
    last = path[-1]
    if isinstance(last, int):
        parent = path[-2] if len(path) > 1 else "list"
        if parent == "steps":
            return f"step {last + 1}"
        return f"item {last + 1} of {parent}"
    if len(path) > 1 and path[-2] in ("headers", "query", "set", "with"):
        return f"{path[-2]}.{last}"
    return str(last)


class _Explainer:
    """Turns jsonschema errors into :class:`_Found` records, then drops the ones that are just noise."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.found: list[_Found] = []

    # -- positions
    def value_pos(self, path: JsonPath) -> Position:
        return self.doc.at(path)

    def key_pos(self, path: JsonPath) -> Position:
        return self.doc.key_at(path)

    def mapping_pos(self, path: JsonPath) -> Position:
        """Where to report something missing from the mapping at ``path``: its key, or its start."""
        if path and isinstance(path[-1], str) and tuple(path) in self.doc.keys:
            return self.doc.key_at(path)
        return self.doc.at(path)

    def add(self, rule: str, message: str, position: Position, path: JsonPath, tag: str, **kw: Any) -> None:
        self.found.append(_Found(rule, message, position, tuple(path), tag, **kw))

    def _unknown_key(self, message: str, path: JsonPath, key: str, **kw: Any) -> None:
        """An unknown ``key`` in the mapping at ``path``, reported at the key itself."""
        self.add("unknown-key", message, self.key_pos((*path, key)), path, "unknown", key=key, **kw)

    # -- dispatch
    def explain(self, error: ValidationError) -> None:
        path: JsonPath = tuple(error.absolute_path)
        handler = getattr(self, "_on_" + str(error.validator), None)
        if handler is None:
            self.add("schema", f"{_label(path)}: {error.message}", self.value_pos(path), path, "other")
            return
        handler(error, path)

    def _on_additionalProperties(self, error: ValidationError, path: JsonPath) -> None:
        instance = error.instance
        allowed = list(error.schema.get("properties", {}))
        root = self.doc.value
        where = _where(root, path)
        kinds_here = [k for k in KINDS if k in instance and k in allowed]
        for key in instance:
            if key in allowed:
                continue
            title = error.schema.get("title")
            if title == "Compensation" and key in KINDS:
                message = (
                    f"a compensation cannot be a {key!r} step: use one of http, action (with 'with') "
                    f"or workflow"
                )
                self._unknown_key(message, path, key, extra={"kind": True})
                continue
            if title == "Compensation" and key in ("id", "if", "next", "catch", "output", "compensate"):
                message = (
                    f"a compensation has no {key!r}: it is a step body (http, action or workflow) with "
                    f"only its own retry and timeout"
                )
                self._unknown_key(message, path, key)
                continue
            # a key that belongs inside the step's kind body ("url:" next to "http:")
            if title == "Step" and len(kinds_here) == 1:
                kind = kinds_here[0]
                body_schema = load_schema()["$defs"].get(_KIND_DEFS.get(kind, ""), {})
                if key in body_schema.get("properties", {}):
                    message = (
                        f"unknown key {key!r} in {where}: it belongs inside '{kind}:' "
                        f"(indent it under {kind})"
                    )
                    self._unknown_key(message, path, key, extra={"inside": kind})
                    continue
            # a kind's key written where the kind itself is missing ("url:" with no "http:")
            if title in ("Step", "Compensation") and not kinds_here:
                candidates = ("http", "workflow") if title == "Compensation" else tuple(_KIND_DEFS)
                homes = [
                    k
                    for k in candidates
                    if key in load_schema()["$defs"].get(_KIND_DEFS[k], {}).get("properties", {})
                    and key not in allowed
                ]
                if len(homes) == 1:
                    kind = homes[0]
                    self._unknown_key(
                        f"unknown key {key!r} in {where}: it belongs inside '{kind}:', which is missing "
                        f"(write '{kind}:' and indent {key!r} under it)",
                        path,
                        key,
                        extra={"inside": kind, "bodyless": True},
                    )
                    continue
            # a step's own key written inside its kind body ("timeout:" under "http:")
            owner = path[:-1]
            if (
                path
                and path[-1] in KINDS
                and key in _STEP_KEYS
                and isinstance(_get(root, owner), dict)
                and key not in _get(root, owner)
            ):
                message = (
                    f"unknown key {key!r} in {where}: {key!r} is a key of the step itself; move it out of "
                    f"'{path[-1]}:' and line it up with '{path[-1]}'"
                )
                self._unknown_key(message, path, key)
                continue
            empty = self._empty_sibling(instance, path, key, allowed)
            if empty is not None:
                message = f"unknown key {key!r} in {where}: {hints.indent_under(*empty, what=repr(key))}"
                self._unknown_key(message, path, key, extra={"inside": empty[0]})
                continue
            if title == "Branch" and key in _STEP_PROPS:
                adopt = self._last_step_without(key, (*path, "steps"))
                if adopt is not None:
                    step_path, column = adopt
                    message = (
                        f"unknown key {key!r} in {where}: it looks like a key of {_where(root, step_path)} "
                        f"above that is not indented enough; line it up with "
                        f"{self._first_key(step_path)!r} (column {column})"
                    )
                    self._unknown_key(message, path, key, extra={"step_key": True})
                    continue
            odd = hints.invisible(key)
            if odd:
                suggestion = _suggest("".join(ch for ch in key if ch.isascii() and ch.isprintable()), allowed)
                message = f"unknown key {key!r} in {where}: {odd}{_did_you_mean(suggestion)}"
                self._unknown_key(message, path, key, suggestion=suggestion)
                continue
            if title == "hopflow workflow" and key in _STEP_PROPS:
                adopt = self._last_step_without(key)
                if adopt is not None:
                    step_path, column = adopt
                    message = (
                        f"unknown key {key!r} in the workflow: it looks like a key of "
                        f"{_where(root, step_path)} above that is not indented enough; line it up with "
                        f"'id' (column {column})"
                    )
                    extra = {"belongs_to": step_path} if key in KINDS else {"step_key": True}
                    self._unknown_key(message, path, key, extra=extra)
                    continue
            if title == "hopflow workflow" and key in _JSON_SCHEMA_WORDS and "input" in allowed:
                message = (
                    f"unknown key {key!r} in the workflow: {key!r} is a JSON Schema keyword; it belongs "
                    "inside 'input:' (indent it under input)"
                )
                self._unknown_key(message, path, key)
                continue
            if title == "Parallel block" and key == "steps":
                message = (
                    f"unknown key 'steps' in {where}: a parallel block holds branches, each with its own "
                    "steps: write branches: [{steps: [...]}, {steps: [...]}]"
                )
                self._unknown_key(message, path, key, suggestion="branches")
                continue
            down = _one_level_down(error.schema, key)
            if down is not None and not _suggest(key, allowed):
                message = (
                    f"unknown key {key!r} in {where}: it belongs inside '{down}:' (indent it under {down})"
                )
                self._unknown_key(message, path, key, extra={"inside": down})
                continue
            if title == "hopflow workflow" and key.startswith("x-"):
                message = (
                    f"unknown key {key!r} in the workflow: hopflow has no extension keys; to reuse a value, "
                    "put its anchor (&name) where it is first used"
                )
                self._unknown_key(message, path, key)
                continue
            if title == "Step" and key in ("description", "comment", "title", "label"):
                message = (
                    f"unknown key {key!r} in {where}: steps have no {key}; write it as a YAML comment (# …)"
                )
                self._unknown_key(message, path, key)
                continue
            if len(allowed) == 1 and len(instance) >= 2 and not any(k in allowed for k in instance):
                if key == next(iter(instance)):
                    names = ", ".join(repr(k) for k in instance)
                    message = (
                        f"{where} has no {allowed[0]!r}: its keys {names} belong inside "
                        f"'{allowed[0]}:' (write '{allowed[0]}:' and indent them under it)"
                    )
                    self._unknown_key(message, path, key, extra={"inside": allowed[0]})
                continue
            suggestion = hints.synonym(title, key, allowed) or _suggest(key, allowed)
            message = f"unknown key {key!r} in {where}{_did_you_mean(suggestion)}"
            if not suggestion and len(allowed) <= 16:  # the top level has 14 keys
                message += f" (allowed: {', '.join(allowed)})"
            self._unknown_key(message, path, key, suggestion=suggestion)

    def _on_required(self, error: ValidationError, path: JsonPath) -> None:
        instance = error.instance
        if not isinstance(instance, dict):
            return
        root = self.doc.value
        for key in error.validator_value:
            if key in instance:
                continue
            if key == "id" and error.schema.get("title") == "Step":
                message = (
                    f"{_where(root, path)} has no 'id': every step needs a unique id such as 'book_table'"
                )
            elif not path and key in ("name", "steps"):
                message = f"the workflow has no {key!r}" + (
                    " (a name such as 'order-fulfilment')"
                    if key == "name"
                    else " (a non-empty list of steps)"
                )
            else:
                message = f"{_where(root, path)} has no {key!r}"
                description = _property_description(error.schema, key)
                if description:
                    message += f" ({description})"
            self.add("missing-key", message, self.mapping_pos(path), path, "missing", key=key)

    def _on_type(self, error: ValidationError, path: JsonPath) -> None:
        title = error.schema.get("title")
        expected = _NOUNS.get(title) if title else None
        if expected is None:
            expected = _type_words(error.validator_value)
        value = error.instance
        if not path:
            message = f"expected {expected}, got {_value_text(value)}"
            if value is None:
                message = "the file is empty: a workflow is a mapping with at least 'name' and 'steps'"
        else:
            message = f"{_label(path)}: expected {expected}, got {_value_text(value)}"
            hint = self._type_hint(error, path, title, value)
            if hint:
                message += f"; {hint}"
        self.add("schema", message, self.value_pos(path), path, "type", extra={"null": value is None})

    def _type_hint(self, error: ValidationError, path: JsonPath, title: str | None, value: Any) -> str | None:
        """Why the value has the wrong type, when there is a usual reason, and how to write it."""
        reading = hints.yaml_reading(self.source(path), value)
        if reading:
            return reading
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            return (
                "this value cannot be a template: it must be known before the workflow runs (it is "
                "part of the compiled graph)"
            )
        key = path[-1] if path and isinstance(path[-1], str) else None
        expected = error.validator_value
        names = [expected] if isinstance(expected, str) else list(expected)
        if title in _DURATION_TITLES:
            return hints.duration_hint(value)
        if value is None and not (self.source(path) or "").strip() and key is not None:
            if "object" in names or "array" in names:
                return (
                    f"nothing follows '{key}:'; indent its entries on the lines below it, deeper than '{key}'"
                )
        if key == "body" and isinstance(value, dict | list):
            return "send structured data with json: instead of body: (body is raw text)"
        if title == "Point in time" and isinstance(value, int | float) and not isinstance(value, bool):
            return (
                "a Unix timestamp is not read as a time: use an ISO-8601 date-time with offset, or a template"
            )
        if len(path) >= 2 and path[-2] == "expect" and isinstance(value, str):
            if re.fullmatch(r"[1-5][xX]{2}", value.strip()):
                return "expect lists exact statuses such as [200, 201]; any 2xx is already the default"
        if title == "Step id" and isinstance(value, int):
            return f"quote it, or better use a name: ids start with a letter, e.g. 'step_{value}'"
        if key is not None and _get(self.doc.value, path[:-1]) is not None:
            short = hints.shorthand(key, value)
            if short:
                return short
        if "array" in names and key is not None:
            return hints.list_hint(key, value)
        if title == "Whole number or template" and isinstance(value, float):
            return "give a whole number"
        if ("integer" in names or "number" in names) and "string" in names and isinstance(value, float):
            return f"quote it: '{self.source(path) or value}'"
        if "integer" in names or "number" in names:
            return hints.number_hint("integer" if "integer" in names else "number", value)
        if title == "Condition" and isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return f"write {value.strip().lower()} without quotes"
        if names == ["boolean"] and isinstance(value, str) and value.lower() in ("true", "false"):
            return f"write {value.lower()} without quotes"
        return None

    def source(self, path: JsonPath) -> str | None:
        """The text of the scalar at ``path`` as written in the file (None for collections)."""
        span = self.doc.spans.get(tuple(path))
        if span is None or span.start < 0:
            return None
        return self.doc.text[span.start : span.end]

    def _on_pattern(self, error: ValidationError, path: JsonPath) -> None:
        value = error.instance
        title = error.schema.get("title")
        is_key = "propertyNames" in error.absolute_schema_path
        position = self.key_pos((*path, value)) if is_key else self.value_pos(path)
        static = hints.static_template(title, value)
        if static is not None:
            message = f"{_label(path)}: {static}"
        elif title in _NUMBER_TITLES:  # text that is no template where a number goes
            kind = _NUMBER_TITLES[title]
            hint = hints.number_hint(kind, value)
            message = f"{_label(path)}: expected {_NOUNS[title]}, got string {value!r}" + (
                f"; {hint}" if hint else " (or a template '{{ expression }}')"
            )
        elif title in _DURATION_TITLES:
            try:
                parse_ms(value)
                reason = f"{value!r} is not a duration (write a number and a unit, e.g. '30s' or '1h30m')"
            except DurationError as exc:
                reason = str(exc)
            hint = hints.duration_hint(value)
            message = f"{_label(path)}: {reason}" + (f"; {hint}" if hint else "")
        elif title == "Raised error name" and value == "any":
            message = "'any' cannot be raised: it only matches errors (in catch and retry.on)"
        elif title == "HTTP method" and value.upper() in (
            "GET",
            "HEAD",
            "POST",
            "PUT",
            "PATCH",
            "DELETE",
            "OPTIONS",
        ):
            message = (
                f"{value!r} is not an HTTP method: methods are uppercase; did you mean {value.upper()!r}?"
            )
        elif title in ("Error name", "Raised error name"):
            message = f"{value!r} {_PATTERN_HINTS[title]}" + _did_you_mean(_suggest_error(value))
        elif isinstance(value, str) and hints.invisible(value):
            message = f"{value!r} {_PATTERN_HINTS.get(title, 'is not valid here')}: {hints.invisible(value)}"
        elif title in _PATTERN_HINTS:
            message = f"{value!r} {_PATTERN_HINTS[title]}"
            fixed = _fix_name(title, value)
            if fixed and fixed != value:
                message += f"; did you mean {fixed!r}?"
            elif title == "URL":
                message += _url_hint(value)
            elif title == "Condition" and value.strip().lower() in ("true", "false"):
                message += f"; write {value.strip().lower()} without quotes"
        else:
            message = f"{_label(path)}: {value!r} does not match {error.validator_value!r}"
        self.add("schema", message, position, (*path, value) if is_key else path, "pattern")

    def _on_enum(self, error: ValidationError, path: JsonPath) -> None:
        options = [str(o) for o in error.validator_value]
        value = error.instance
        message = f"{_label(path)}: expected one of {', '.join(options)}, got {_value_text(value)}"
        if isinstance(value, str):
            message += _did_you_mean(_suggest(value, options))
        elif isinstance(value, bool):
            source = (self.source(path) or "").strip()
            shown = source or str(value).lower()
            message += (
                f" (YAML reads yes/no/on/off as booleans: the unquoted {shown} here is {str(value).lower()})"
            )
            if not value and "none" in options:
                message += "; did you mean 'none'?"
            else:
                message += "; write one of the words above"
        self.add("schema", message, self.value_pos(path), path, "enum")

    def _on_oneOf(self, error: ValidationError, path: JsonPath) -> None:
        instance = error.instance
        branches = error.validator_value
        if isinstance(instance, dict) and all(
            isinstance(b, dict) and set(b) <= {"required", "maxProperties"} for b in branches
        ):
            self._exactly_one_of(error, path)
            return
        self._best_of(error)

    def _on_anyOf(self, error: ValidationError, path: JsonPath) -> None:
        self._best_of(error)

    def _best_of(self, error: ValidationError) -> None:
        from jsonschema.exceptions import best_match

        # every form refused the value's type (`compensate: x.undo`, a mapping or a list of them):
        # explain it as the first form's type error, which carries the hints
        firsts: dict[Any, ValidationError] = {}
        for e in error.context or ():
            if e.validator == "type" and not e.relative_path and e.schema_path:
                firsts.setdefault(e.schema_path[0], e)
        branches = error.validator_value if isinstance(error.validator_value, list) else []
        if branches and len(firsts) == len(branches):
            self.explain(firsts[min(firsts)])
            return

        # a branch that fails only on the value's type is about another form: explain the form written
        # (`env: [api_url]` is a name with a bad pattern, not a mapping that is missing); a "one of
        # these keys" rule says nothing about a value that is not a mapping (its type error does)
        context = [e for e in error.context or () if not _vacuous_one_of(e)]
        same_form = [e for e in context if e.validator != "type" or e.relative_path]
        best = best_match(same_form or context) if context else None
        if best is None:
            path: JsonPath = tuple(error.absolute_path)
            self.add("schema", f"{_label(path)}: {error.message}", self.value_pos(path), path, "other")
        else:
            self.explain(best)

    def _exactly_one_of(self, error: ValidationError, path: JsonPath) -> None:
        instance: dict[str, Any] = error.instance
        title = error.schema.get("title")
        root = self.doc.value
        where = _where(root, path)
        if title == "Switch case":
            has_default = "default" in instance
            case_keys = [k for k in ("if", "goto") if k in instance]
            if has_default and len(instance) > 1:
                other = next(k for k in instance if k != "default")
                self.add(
                    "schema",
                    f"{where} mixes 'default' with {other!r}: a case is either {{if, goto}} or, last, "
                    f"{{default: id}}",
                    self.key_pos((*path, "default")),
                    path,
                    "kinds",
                )
            elif not has_default:
                missing = [k for k in ("if", "goto") if k not in instance]
                if case_keys:
                    self.add(
                        "missing-key",
                        f"{where} has no {missing[0]!r}: a case is {{if: condition, goto: id}}",
                        self.mapping_pos(path),
                        path,
                        "missing",
                        key=missing[0],
                    )
                else:
                    self.add(
                        "missing-key",
                        f"{where} is empty: write {{if: condition, goto: id}} or {{default: id}}",
                        self.mapping_pos(path),
                        path,
                        "nokind",
                    )
            return
        keys = [b["required"][0] for b in error.validator_value]
        present = [k for k in instance if k in keys]  # document order: point at the second one
        names = {"Step": "kind", "Compensation": "kind", "Wait": "mode"}.get(str(title), "key")
        choices = ", ".join(keys[:-1]) + f" or {keys[-1]}"
        if not present and title == "Catch entry":  # the usual form first: say what goto is for
            description = _property_description(error.schema, "goto")
            message = f"{where} has no 'goto'" + (f" ({description})" if description else "")
            message += "; or write raise: {name: …} to fail under another name"
            self.add("missing-key", message, self.mapping_pos(path), path, "missing", key="goto")
            return
        if not present:
            if title == "Step":
                message = f"{where} has no kind: add exactly one of {', '.join(keys)}"
                if "with" in instance:
                    message += " ('with' goes with 'action')"
            elif title == "Compensation":
                message = f"{where} has nothing to run: add one of {choices}"
            elif title == "Wait":
                message = f"{where} has no {names}: add one of {choices}"
            else:
                message = f"{where} needs exactly one of {choices}"
            self.add("missing-key", message, self.mapping_pos(path), path, "nokind", extra={"keys": keys})
        else:
            first, second = present[0], present[1]
            message = (
                f"{where} has {len(present)} {names}s ({', '.join(repr(k) for k in present)}): "
                f"use exactly one of {choices}"
            )
            if title == "Step":
                message += "; to run several things, use several steps"
            self.add("schema", message, self.key_pos((*path, second)), path, "kinds", extra={"first": first})

    def _on_dependentRequired(self, error: ValidationError, path: JsonPath) -> None:
        instance = error.instance
        if not isinstance(instance, dict):
            return
        where = _where(self.doc.value, path)
        for key, deps in error.validator_value.items():
            if key not in instance:
                continue
            for dep in deps:
                if dep in instance:
                    continue
                if key == "event" and dep == "key":
                    self.add(
                        "missing-key",
                        f"{where} waits for event {instance['event']!r} but has no 'key': add "
                        f"key: '{{{{ ... }}}}' naming which event of that name to take",
                        self.key_pos((*path, "event")),
                        path,
                        "missing",
                        key=dep,
                    )
                else:
                    self.add(
                        "schema",
                        f"{key!r} only goes with {dep!r} in {where}",
                        self.key_pos((*path, key)),
                        path,
                        "depends",
                        key=key,
                    )

    def _on_not(self, error: ValidationError, path: JsonPath) -> None:
        instance = error.instance
        if not isinstance(instance, dict):
            return  # `not: {required: [...]}` holds vacuously for a non-mapping: its type error says it
        if isinstance(instance, dict) and "json" in instance and "body" in instance:
            self.add(
                "schema",
                f"{_where(self.doc.value, path)} has both 'json' and 'body': send one of them",
                self.key_pos((*path, "body")),
                path,
                "not",
            )
            return
        self.add("schema", f"{_label(path)}: {error.message}", self.value_pos(path), path, "other")

    def _on_minItems(self, error: ValidationError, path: JsonPath) -> None:
        label = _label(path)
        if label == "steps":
            message = "steps is empty: add at least one step"
        else:
            count = error.validator_value
            message = f"{label} is empty: give at least {'one item' if count == 1 else f'{count} items'}"
        self.add("schema", message, self.value_pos(path), path, "min")

    def _on_minProperties(self, error: ValidationError, path: JsonPath) -> None:
        what = "variable" if path and path[-1] == "set" else "entry"
        self.add(
            "schema", f"{_label(path)} is empty: give at least one {what}", self.value_pos(path), path, "min"
        )

    def _on_minLength(self, error: ValidationError, path: JsonPath) -> None:
        self.add("schema", f"{_label(path)} must not be empty", self.value_pos(path), path, "min")

    def _on_minimum(self, error: ValidationError, path: JsonPath) -> None:
        key = path[-1] if path else None
        why = _RANGE_WHY.get(str(key), "")
        if len(path) >= 2 and path[-2] == "expect":
            why = " (an HTTP status is 100-599)"
        self.add(
            "schema",
            f"{_label(path)}: expected at least {error.validator_value}, got {error.instance}{why}",
            self.value_pos(path),
            path,
            "range",
        )

    def _on_maximum(self, error: ValidationError, path: JsonPath) -> None:
        self.add(
            "schema",
            f"{_label(path)}: expected at most {error.validator_value}, got {error.instance}",
            self.value_pos(path),
            path,
            "range",
        )

    def _on_uniqueItems(self, error: ValidationError, path: JsonPath) -> None:
        seen: list[Any] = []
        for i, item in enumerate(error.instance):
            if any(_same(item, s) for s in seen):
                self.add(
                    "schema",
                    f"{_label(path)} lists {item!r} more than once",
                    self.value_pos((*path, i)),
                    path,
                    "unique",
                )
            else:
                seen.append(item)

    # -- noise removal
    def result(self) -> list[_Found]:
        found = self._under_indented(self._bodyless(self._merge_misnamed(self._branch_as_step(self.found))))
        typed = {f.path for f in found if f.tag == "type"}
        suggested = {(f.path, f.suggestion) for f in found if f.tag == "unknown" and f.suggestion}
        unknown_kind_at = {
            f.path for f in found if f.tag == "unknown" and (f.suggestion in KINDS or f.extra.get("kind"))
        }
        suggestions: dict[JsonPath, set[str]] = {}
        for g in found:
            if g.tag == "unknown" and g.suggestion:
                suggestions.setdefault(g.path, set()).add(g.suggestion)
        nokind_fixed = {
            f.path
            for f in found
            if f.tag == "nokind" and suggestions.get(f.path, set()) & set(f.extra.get("keys", ()))
        }
        # "unknown key 'url' in step 'a': it belongs inside 'http:'" explains an empty or incomplete http
        inside = {(*f.path, f.extra["inside"]) for f in found if f.tag == "unknown" and "inside" in f.extra}
        adopted = {f.extra["belongs_to"] for f in found if f.tag == "unknown" and "belongs_to" in f.extra}
        nokind_at = {f.path for f in found if f.tag == "nokind"}
        missing_id = {(f.path, f.key) for f in found if f.tag == "missing" and f.key == "id"}
        out: list[_Found] = []
        seen: set[tuple[str, str, Position]] = set()
        for f in found:
            if f.tag != "type" and f.path in typed:
                continue  # a value of the wrong type: its other complaints are consequences
            if f.tag == "missing" and (f.path, f.key) in suggested:
                continue  # "unknown key 'ID'; did you mean 'id'?" already says it
            if f.tag == "nokind" and (f.path in unknown_kind_at or f.path in nokind_fixed):
                continue  # "unknown key 'actoin'; did you mean 'action'?" already says it
            if f.tag == "nokind" and f.path in adopted:
                continue  # its kind key is there, just not indented enough (reported at that key)
            if f.path in inside and (
                f.tag in ("missing", "nokind") or (f.tag == "type" and f.extra.get("null"))
            ):
                continue
            if f.tag == "depends" and f.path in nokind_at:
                continue
            if f.tag == "missing" and f.key == "id" and f.path in nokind_at - unknown_kind_at:
                continue  # merged into the "no kind" message below
            if f.tag == "nokind" and (f.path, "id") in missing_id:
                f = _Found(f.rule, _merge_no_id(f.message), f.position, f.path, f.tag, extra=f.extra)
            key = (f.rule, f.message, f.position)
            if key not in seen:
                seen.add(key)
                out.append(f)
        return _name_and_steps(_not_a_step(out))

    def _under_indented(self, found: list[_Found]) -> list[_Found]:
        """``output:`` with nothing after it, then keys that mean nothing here: those keys were meant
        to be indented under it. One message for them, none about the empty ``output``."""
        by_path: dict[JsonPath, list[_Found]] = {}
        for f in found:
            if f.tag == "unknown" and f.key is not None and not f.suggestion:
                by_path.setdefault(f.path, []).append(f)
        drop: set[int] = set()
        replace: dict[int, _Found] = {}
        emptied: set[JsonPath] = set()
        for path, unknowns in by_path.items():
            mapping = _get(self.doc.value, path)
            if not isinstance(mapping, dict):
                continue
            stray = {f.key: f for f in unknowns}
            keys = list(mapping)
            for i, key in enumerate(keys):
                if key in stray or mapping[key] is not None:
                    continue
                following = []
                for later in keys[i + 1 :]:
                    f = stray.get(later)
                    if f is None or (f.extra and f.extra.get("inside") not in (None, key)):
                        break
                    following.append(f)
                if not following:
                    continue
                names = ", ".join(repr(f.key) for f in following)
                line = self.doc.key_at((*path, key)).line
                verb = "is" if len(following) == 1 else "are"
                message = (
                    f"{names} {verb} not indented under {key!r} (line {line}), which is empty as written: "
                    f"indent {'it' if len(following) == 1 else 'them'} deeper than '{key}'"
                )
                first = following[0]
                replace[id(first)] = _Found(
                    "unknown-key",
                    message,
                    first.position,
                    path,
                    "unknown",
                    key=first.key,
                    extra={"inside": key},
                )
                drop.update(id(f) for f in following[1:])
                emptied.add((*path, key))
        out = []
        for f in found:
            if id(f) in drop:
                continue
            if f.path in emptied and f.tag in ("type", "missing", "nokind"):
                continue  # the empty value's own complaint: its content is just under-indented
            out.append(replace.get(id(f), f))
        return out

    def _bodyless(self, found: list[_Found]) -> list[_Found]:
        """Keys of a kind's body written without the kind (``url:``, ``method:`` and no ``http:``): one
        message for all of them, and none about the missing kind."""
        groups: dict[tuple[JsonPath, str], list[_Found]] = {}
        for f in found:
            if f.tag == "unknown" and f.extra.get("bodyless"):
                groups.setdefault((f.path, f.extra["inside"]), []).append(f)
        if not groups:
            return found
        fixed = {path for path, _ in groups}
        out = []
        for f in found:
            if f.tag == "nokind" and f.path in fixed:
                continue
            group = groups.get((f.path, f.extra.get("inside", ""))) if f.extra.get("bodyless") else None
            if group is not None:
                if f is not group[0]:
                    continue
                if len(group) > 1:
                    keys = ", ".join(repr(g.key) for g in group)
                    kind = f.extra["inside"]
                    message = (
                        f"{_where(self.doc.value, f.path)} has no kind, and its keys {keys} belong inside "
                        f"'{kind}:' (write '{kind}:' and indent them under it)"
                    )
                    f = _Found(f.rule, message, f.position, f.path, f.tag, key=f.key, extra=f.extra)
            out.append(f)
        return out

    def _merge_misnamed(self, found: list[_Found]) -> list[_Found]:
        """One unknown key and one missing key in the same mapping are one mistake: the unknown key is
        the missing one under another name ("then:" for "goto:"). Report it once, at the key, naming
        the key to use instead."""
        by_path: dict[JsonPath, list[_Found]] = {}
        for f in found:
            by_path.setdefault(f.path, []).append(f)
        drop: set[int] = set()
        replace: dict[int, _Found] = {}
        for path, group in by_path.items():
            unknown = [f for f in group if f.tag == "unknown" and not f.suggestion and not f.extra]
            missing = [f for f in group if f.tag == "missing"]
            nokind = [f for f in group if f.tag == "nokind"]
            if len(unknown) != 1:
                continue
            u = unknown[0]
            head = u.message.split(" (allowed: ")[0]
            if len(missing) == 1 and not nokind and missing[0].key:
                key = missing[0].key
                replace[id(u)] = _Found(
                    u.rule,
                    f"{head}; did you mean {key!r}?",
                    u.position,
                    u.path,
                    u.tag,
                    key=u.key,
                    suggestion=key,
                )
                drop.add(id(missing[0]))
            elif len(nokind) == 1 and not missing:
                keys = nokind[0].extra.get("keys", ())
                what = {"Step": "kind", "Wait": "mode"}.get(str(self._title_at(path)), "key")
                replace[id(u)] = _Found(
                    u.rule,
                    f"{head}: {_where(self.doc.value, path)} has no {what}; use one of {', '.join(keys)}",
                    u.position,
                    u.path,
                    u.tag,
                    key=u.key,
                )
                drop.add(id(nokind[0]))
        return [replace.get(id(f), f) for f in found if id(f) not in drop]

    def _empty_sibling(
        self, instance: Any, path: JsonPath, key: str, allowed: list[str]
    ) -> tuple[str, int] | None:
        """The key written just before ``key`` when it is empty (``with:`` and nothing under it) and
        ``key`` is no key of this mapping: then ``key`` is that key's entry, not indented enough.
        Returns the empty key and its 0-based line."""
        keys = list(instance) if isinstance(instance, dict) else []
        if key not in keys or keys.index(key) == 0 or key in allowed:
            return None
        before = keys[keys.index(key) - 1]
        if instance[before] is not None or before not in allowed:
            return None
        here, there = self.doc.key_at((*path, key)), self.doc.key_at((*path, before))
        if here.column != there.column or here.line <= there.line:
            return None
        return str(before), there.line - 1

    def _first_key(self, path: JsonPath) -> str:
        value = _get(self.doc.value, path)
        return str(next(iter(value), "id")) if isinstance(value, dict) and value else "id"

    def _last_step_without(self, key: str, where: JsonPath = ("steps",)) -> tuple[JsonPath, int] | None:
        """The last step of a list (the top level by default), when it lacks ``key`` (and a kind, for
        a kind key), with the column of its keys; for a key written after it that was meant to be
        that step's."""
        steps = _get(self.doc.value, where)
        if not isinstance(steps, list) or not steps or not isinstance(steps[-1], dict):
            return None
        last = steps[-1]
        if key in last or (key in KINDS and any(k in last for k in KINDS)):
            return None
        path: JsonPath = (*where, len(steps) - 1)
        first_key = next(iter(last), None)
        column = self.doc.key_at((*path, first_key)).column if first_key is not None else 1
        return path, column

    def _title_at(self, path: JsonPath) -> str | None:
        if not path:
            return "hopflow workflow"
        if len(path) >= 2 and path[-2] == "steps" and isinstance(path[-1], int):
            return "Step"
        return {"wait": "Wait"}.get(str(path[-1]))

    def _branch_as_step(self, found: list[_Found]) -> list[_Found]:
        """A parallel branch written as a step (``- id: x`` right under ``branches:``) gets one message
        instead of "no 'steps'" plus an unknown key for every key of the step."""
        root = self.doc.value
        out: list[_Found] = []
        done: set[JsonPath] = set()
        for f in found:
            path = f.path
            if len(path) >= 2 and path[-2] == "branches" and isinstance(path[-1], int):
                branch = _get(root, path)
                if (
                    isinstance(branch, dict)
                    and "steps" not in branch
                    and ("id" in branch or set(branch) & set(KINDS))
                ):
                    if f.tag in ("missing", "unknown"):
                        if path not in done:
                            done.add(path)
                            out.append(
                                _Found(
                                    "schema",
                                    f"{_where(root, path)} is written as a step, but a branch is "
                                    "{steps: [...]}: write '- steps:' and indent the step below it",
                                    self.value_pos(path),
                                    path,
                                    "branch",
                                )
                            )
                        continue
            out.append(f)
        return out


def _not_a_step(found: list[_Found]) -> list[_Found]:
    """A list item under ``steps`` with neither an id nor a kind is not recognisably a step (often a
    line that gained a '- ' or lost its indentation): its one message stands for it, and what is
    wrong inside it (keys that mean nothing for a step) is left out unless it has a suggestion."""
    shapeless = {f.path for f in found if f.tag == "nokind" and "has no 'id' and no kind" in f.message}
    if not shapeless:
        return found
    out = []
    for f in found:
        inside = any(f.path[: len(p)] == p for p in shapeless) and f.tag != "nokind"
        if inside and not f.suggestion:
            continue
        out.append(f)
    return out


def _name_and_steps(found: list[_Found]) -> list[_Found]:
    """A file with neither 'name' nor 'steps' gets one message for both (they share a position)."""
    top = [f for f in found if f.tag == "missing" and not f.path and f.key in ("name", "steps")]
    if len(top) != 2:
        return found
    merged = _Found(
        "missing-key",
        "the workflow has no 'name' and no 'steps': a workflow has a name such as 'order-fulfilment' "
        "and a non-empty list of steps",
        top[0].position,
        (),
        "missing",
        key="name",
    )
    return [merged if f is top[0] else f for f in found if f is not top[1]]


def _merge_no_id(message: str) -> str:
    """'step 3 has no kind: add ...' → 'step 3 has no 'id' and no kind: add a unique id and ...'."""
    head, _, tail = message.partition(" has no kind: add ")
    return f"{head} has no 'id' and no kind: add a unique id and {tail}" if tail else message


_RANGE_WHY = {
    "max_attempts": " (it counts every attempt, the first included: 1 means no retry)",
    "concurrency": " (how many items run at once; leave it out for the default, 10)",
    "backoff": " (the interval is multiplied by it after each attempt: 1 keeps it constant)",
}

_JSON_SCHEMA_WORDS = frozenset(
    {"properties", "required", "additionalProperties", "type", "items", "$defs", "patternProperties"}
)
_STEP_KEYS = ("if", "output", "next", "retry", "timeout", "catch", "compensate")
_STEP_PROPS = ("if", "next", "retry", "catch", "compensate", "with", *KINDS)


_DURATION_TITLES = ("Duration", "Duration or template")
_NUMBER_TITLES = {"Whole number or template": "integer", "Number or template": "number"}


def _vacuous_one_of(error: Any) -> bool:
    """A ``oneOf`` of "required" branches failing on a value that is no mapping (each branch holds)."""
    branches = error.validator_value if error.validator == "oneOf" else None
    return (
        isinstance(branches, list)
        and not isinstance(error.instance, dict)
        and all(isinstance(b, dict) and set(b) <= {"required", "maxProperties"} for b in branches)
    )


def _resolve(schema: Any) -> dict[str, Any]:
    """A subschema with its local ``$ref`` followed (one level is all our schema needs); for a
    ``oneOf`` of a mapping and other forms (`retry`: a policy or a list of them), the mapping."""
    if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        target = schema["$ref"].rsplit("/", 1)[-1]
        resolved = load_schema()["$defs"].get(target)
        if isinstance(resolved, dict):
            return resolved
    if isinstance(schema, dict) and isinstance(schema.get("oneOf"), list) and "properties" not in schema:
        for branch in schema["oneOf"]:
            found = _resolve(branch) if isinstance(branch, dict) and "$ref" in branch else None
            if found and found.get("type") == "object":
                return found
    return schema if isinstance(schema, dict) else {}


def _one_level_down(schema: dict[str, Any], key: str) -> str | None:
    """The one allowed key of this mapping whose own mapping allows ``key`` (``max_attempts`` in
    ``defaults`` → ``retry``); None when there is not exactly one."""
    homes = [
        name
        for name, sub in schema.get("properties", {}).items()
        if key in _resolve(sub).get("properties", {}) and name not in KINDS
    ]
    return homes[0] if len(homes) == 1 else None


_KIND_DEFS = {
    "http": "http",
    "wait": "wait",
    "parallel": "parallel",
    "foreach": "foreach",
    "workflow": "child_workflow",
    "succeed": "succeed",
    "fail": "fail",
    "emit": "emit",
}


def _same(a: Any, b: Any) -> bool:
    return (type(a) is type(b) and a == b) or (_is_number(a) and _is_number(b) and a == b)


def _type_words(expected: str | list[str]) -> str:
    words = {
        "object": "a mapping",
        "array": "a list",
        "string": "a string",
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "null": "null",
    }
    names = [expected] if isinstance(expected, str) else list(expected)
    parts = [words.get(n, n) for n in names]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _property_description(schema: dict[str, Any], key: str) -> str | None:
    prop = schema.get("properties", {}).get(key)
    if not isinstance(prop, dict):
        return None
    text = prop.get("description")
    if not isinstance(text, str):
        return None
    first = text.split(". ")[0].rstrip(".").replace("`", "'")
    return first[0].lower() + first[1:] if first else None


def _fix_name(title: str, value: str) -> str | None:
    """A likely intended spelling of a malformed id/name (lowercased, separators to '_')."""
    import unicodedata

    value = "".join(ch for ch in unicodedata.normalize("NFKD", value) if not unicodedata.combining(ch))
    if title == "Step id":
        fixed = re.sub(r"[^a-z0-9_]+", "_", value.strip().lower()).strip("_")
        return fixed if re.fullmatch(r"[a-z][a-z0-9_]{0,63}", fixed) else None
    if title == "Workflow name":
        fixed = re.sub(r"[^a-z0-9_.-]+", "-", value.strip().lower()).strip("-")
        return fixed if re.fullmatch(r"[a-z][a-z0-9_.-]{0,63}", fixed) else None
    if title == "Environment name":
        fixed = re.sub(r"[^A-Z0-9_]+", "_", value.strip().upper())
        return fixed if re.fullmatch(r"[A-Z_][A-Z0-9_]*", fixed) else None
    return None


# ------------------------------------------------------------------ beyond what JSON Schema can say


def _not_json(doc: Document, reported: set[JsonPath]) -> list[_Found]:
    """Values YAML can hold but JSON cannot: unquoted dates and times (YAML timestamps) and ``!!binary``.

    A workflow is JSON once loaded (the graph is hashed as JSON, payloads travel as JSON), so such a
    value anywhere, also in free-form places such as ``with``, is an error that says to quote it.
    Values the schema already complained about are left to that message.
    """
    import datetime as dt

    out: list[_Found] = []
    for path in doc.not_json:
        value = _get(doc.value, path)
        if path in reported or path[-1:] == ("\0key",) or not isinstance(value, dt.date | bytes):
            continue
        span = doc.spans.get(path)
        text = doc.text[span.start : span.end] if span is not None and span.start >= 0 else str(value)
        if isinstance(value, bytes):
            message = f"{_label(path)}: binary values (!!binary) are not supported: give the text itself"
        else:
            message = (
                f"{_label(path)}: the unquoted {text} is a YAML timestamp, not text: quote it to keep "
                f"it as written: '{text}'"
            )
        out.append(_Found("schema", message, doc.at(path), path, "type"))
    return out


def _switch_default_last(doc: Document) -> list[_Found]:
    """A ``{default: id}`` case must be the last one (JSON Schema cannot express "only last")."""
    out: list[_Found] = []

    def walk(steps: Any, path: JsonPath) -> None:
        if not isinstance(steps, list):
            return
        for i, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            here = (*path, i)
            cases = step.get("switch")
            if isinstance(cases, list):
                for j, case in enumerate(cases[:-1]):
                    if isinstance(case, dict) and "default" in case:
                        out.append(
                            _Found(
                                "schema",
                                f"the default of {_where(doc.value, here)} must be its last case "
                                f"(cases after it would never be tried)",
                                doc.key_at((*here, "switch", j, "default")),
                                (*here, "switch", j),
                                "order",
                            )
                        )
            parallel = step.get("parallel")
            if isinstance(parallel, dict) and isinstance(parallel.get("branches"), list):
                for b, branch in enumerate(parallel["branches"]):
                    if isinstance(branch, dict):
                        walk(branch.get("steps"), (*here, "parallel", "branches", b, "steps"))
            foreach = step.get("foreach")
            if isinstance(foreach, dict):
                walk(foreach.get("steps"), (*here, "foreach", "steps"))

    if isinstance(doc.value, dict):
        walk(doc.value.get("steps"), ("steps",))
    return out


def explain(doc: Document, errors: Iterable[ValidationError]) -> list[Diagnostic]:
    """jsonschema errors of *any* hopflow schema (test files too) → positioned, de-noised diagnostics,
    phrased the way workflow errors are (unknown keys with did-you-mean, types in words)."""
    explainer = _Explainer(doc)
    for error in errors:
        explainer.explain(error)
    return sort(f.diagnostic() for f in explainer.result())
