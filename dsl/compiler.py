"""Workflow document → :class:`dsl.graph.Graph`: the one place where YAML shapes become runtime meaning.

The compiler is lenient on purpose. The validation pipeline compiles every schema-valid file, even one
with semantic mistakes, so the graph-based checks can report all problems at once: a duplicate id keeps
its first definition (the later one and everything nested in it are left out), a jump to an unknown id
is kept as written, a duration that does not parse falls back to "unset". ``strict=True`` (used by
:func:`compile_file`) turns each of those into a :class:`CompileError` instead, for callers that want a
graph they can run without having validated first.

Decisions (see docs/compiler.md): ``defaults.retry`` applies to ``http``, ``action`` and ``workflow``
steps and to compensations; ``defaults.timeout`` applies to ``http`` and ``action`` steps and
compensations only (a wait, a child workflow, a parallel or a foreach is not one attempt inside a
webhook call). An unset timeout stays ``None`` = "the runtime's time budget", so the graph — and its
hash — does not depend on the platform it is compiled for.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsl import flow_control
from dsl.diagnostics import Diagnostic
from dsl.durations import DurationError, parse_ms
from dsl.graph import (
    COMPENSATION_KINDS,
    DEFAULT_RETRY_ON,
    KINDS,
    TOP_SCOPE,
    Catch,
    Compensation,
    FrozenDict,
    Graph,
    Node,
    Retry,
    Scope,
    TemplateRef,
    env_names,
    freeze,
)
from dsl.source import Document, JsonPath, LoadError, load
from dsl.templates import TemplateError, is_template, parse, templates_in

RETRY_DEFAULT_KINDS = frozenset({"http", "action", "workflow"})
TIMEOUT_DEFAULT_KINDS = frozenset({"http", "action"})
DEFAULT_CONCURRENCY = 10
DEFAULT_AS = "item"


class CompileError(Exception):
    """The document cannot be turned into a graph; ``diagnostic`` says where and why."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(f"{diagnostic.position.file}:{diagnostic.position.line}: {diagnostic.message}")
        self.diagnostic = diagnostic


def compile_document(doc: Document, *, time_budget_ms: int = 7500, strict: bool = False) -> Graph:
    """Compile a loaded (ideally schema-valid) document into a hashed graph.

    ``time_budget_ms`` is accepted so callers can pass their configuration along, but it is not baked
    into the graph: a step without a timeout keeps ``timeout_ms=None`` (= the runtime's budget).
    """
    del time_budget_ms  # see docstring: deliberately not part of the graph
    return _Compiler(doc, strict).run().with_hash()


def compile_file(path: str | Path, *, time_budget_ms: int = 7500) -> Graph:
    """Load and strictly compile one file (raises :class:`CompileError`, never LoadError).

    The file must get past the loader's and the schema's checks first: the compiler trusts the
    document's shape, and a value YAML reads as a date, or an unquoted template it reads as a
    mapping, must stop here with the validator's message rather than compile into something else."""
    from dsl.schema import validate_document as schema_problems

    try:
        doc = load(path)
    except LoadError as exc:
        raise CompileError(exc.diagnostic) from None
    errors = [*doc.problems, *(d for d in schema_problems(doc) if d.is_error)]
    if errors:
        raise CompileError(errors[0])
    return compile_document(doc, time_budget_ms=time_budget_ms, strict=True)


# ------------------------------------------------------------------------------------------ helpers


def path_key(path: tuple[str | int, ...]) -> tuple[tuple[int, str | int], ...]:
    """A sort key for mixed str/int paths that never compares a str with an int."""
    return tuple((0, p) if isinstance(p, int) else (1, p) for p in path)


def template_refs(value: Any, base: tuple[str | int, ...] = ()) -> tuple[TemplateRef, ...]:
    """Every template in ``value``, pre-parsed, sorted by path (so key order does not change the hash)."""
    refs = []
    for path, source in templates_in(value, base):
        try:
            parsed = parse(source)
            native, names = parsed.native, parsed.names
        except TemplateError:  # reported by the template-syntax check; the graph keeps the source
            native, names = False, ()
        refs.append(TemplateRef(tuple(path), source, native, names))
    refs.sort(key=lambda r: path_key(r.path))
    return tuple(refs)


def step_reads(refs: tuple[TemplateRef, ...]) -> tuple[str, ...]:
    """Step ids whose outputs these templates read (``steps.ID...``), sorted."""
    out: set[str] = set()
    for ref in refs:
        for name in ref.names:
            parts = name.split(".")
            if parts[0] == "steps" and len(parts) > 1:
                out.add(parts[1])
    return tuple(sorted(out))


def strip_nested(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The step mapping without its nested steps (those belong to their own nodes)."""
    out = dict(body)
    inner = body.get(kind)
    if kind == "parallel" and isinstance(inner, Mapping):
        branches = inner.get("branches")
        stripped = dict(inner)
        if isinstance(branches, list):
            stripped["branches"] = [
                {k: v for k, v in b.items() if k != "steps"} if isinstance(b, Mapping) else b
                for b in branches
            ]
        out[kind] = stripped
    elif kind == "foreach" and isinstance(inner, Mapping):
        out[kind] = {k: v for k, v in inner.items() if k != "steps"}
    return out


def wait_for_count(spec: Mapping[str, Any], total: int) -> int | None:
    """How many branches of a parallel must succeed, or None for all of them (the default: a
    failure stops the others). ``first: true`` and ``wait_for: any`` are 1; ``all`` is None."""
    value = spec.get("wait_for")
    if value is None and spec.get("first") is True:
        value = 1
    if value == "any":
        return 1
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < total:
        return value
    return None  # `all`, N >= the branch count (same meaning; `wait-for-too-many` flags N > count)


def kind_of(body: Mapping[str, Any], kinds: tuple[str, ...] = KINDS) -> list[str]:
    return [k for k in kinds if k in body]


# ----------------------------------------------------------------------------------------- compiler


class _Compiler:
    def __init__(self, doc: Document, strict: bool) -> None:
        self.doc = doc
        self.strict = strict
        self.nodes: dict[str, Node] = {}
        self.scopes: dict[str, Scope] = {}
        self.paths: dict[str, JsonPath] = {}  # node id → where its step mapping is
        self.defaults_retry: Retry | None = None
        self.defaults_timeout: int | None = None

    # -- errors

    def fail(self, message: str, path: JsonPath) -> CompileError:
        return CompileError(Diagnostic("compile", "error", message, self.doc.at(path)))

    def lenient(self, message: str, path: JsonPath) -> None:
        """A semantic problem the checks report; only strict mode stops on it."""
        if self.strict:
            raise self.fail(message, path)

    def mapping(self, value: Any, path: JsonPath, what: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(f"{what} must be a mapping", path)
        return value

    def duration(self, value: Any, path: JsonPath) -> int | None:
        if value is None:
            return None
        try:
            return parse_ms(value)
        except DurationError as exc:
            self.lenient(str(exc), path)
            return None

    # -- top level

    def run(self) -> Graph:
        root = self.mapping(self.doc.value, (), "a workflow file")
        name = root.get("name")
        if not isinstance(name, str):
            raise self.fail("the workflow needs a `name`", ("name",))
        steps = root.get("steps")
        if not isinstance(steps, list) or not steps:
            raise self.fail("`steps` must be a non-empty list", ("steps",))
        defaults = root.get("defaults")
        if defaults is not None:
            defaults = self.mapping(defaults, ("defaults",), "`defaults`")
            if defaults.get("retry") is not None:
                self.defaults_retry = self.retry(defaults["retry"], ("defaults", "retry"))
            self.defaults_timeout = self.duration(defaults.get("timeout"), ("defaults", "timeout"))
        self.steps(steps, ("steps",), TOP_SCOPE, None)
        self.nodes = {sid: self.nodes[sid] for sid in self.paths}  # document order (pre-order)
        self.check_targets()
        env = root.get("env")
        output_refs = template_refs(root.get("output"))
        on_failure = root.get("on_failure", "compensate")
        egress = root.get("egress")
        allow = egress.get("allow") if isinstance(egress, dict) else None
        return Graph(
            name=name,
            nodes=FrozenDict(self.nodes),
            scopes=FrozenDict(self.scopes),
            version=root.get("version"),
            description=root.get("description"),
            input_schema=freeze(root.get("input")),
            env=tuple(sorted(set(env_names(env)))),
            timeout_ms=self.duration(root.get("timeout"), ("timeout",)),
            output=freeze(root.get("output")),
            has_output="output" in root,
            output_reads=step_reads(output_refs),
            on_failure=on_failure if isinstance(on_failure, str) else "compensate",
            secret_env=tuple(sorted(set(env_names(env, secret=True)))),
            vars=freeze(declared_vars(root.get("vars"))),
            egress_allow=tuple(a for a in allow if isinstance(a, str)) if isinstance(allow, list) else (),
            triggers=_triggers(root.get("triggers")),
            schedules=_schedules(root.get("schedules")),
            flow_control=freeze(flow_control.normalise(root.get("flow_control"), workflow=True)),
        )

    def steps(self, steps: Any, path: JsonPath, scope: str, owner: str | None) -> None:
        """Compile one list of steps (pre-order, so "first definition wins" matches the checks)."""
        if not isinstance(steps, list):
            raise self.fail("`steps` must be a list", path)
        members: list[tuple[str, Mapping[str, Any], JsonPath]] = []
        for i, step in enumerate(steps):
            step_path = (*path, i)
            body = self.mapping(step, step_path, "a step")
            sid = body.get("id")
            if not isinstance(sid, str):
                raise self.fail("a step needs an `id`", step_path)
            kinds = kind_of(body)
            if len(kinds) != 1:
                raise self.fail(
                    f"step {sid!r} needs exactly one kind key ({', '.join(KINDS)})", (*step_path, "id")
                )
            if sid in self.paths:
                self.lenient(f"duplicate step id {sid!r}", (*step_path, "id"))
                continue  # first definition wins; this one (and its nested steps) is left out
            self.paths[sid] = step_path
            members.append((sid, body, step_path))
            self.nested(sid, kinds[0], body, step_path)
        ids = [m[0] for m in members]
        self.scopes[scope] = Scope(id=scope, nodes=tuple(ids), owner=owner)
        for i, (sid, body, step_path) in enumerate(members):
            following = ids[i + 1] if i + 1 < len(ids) else None
            self.nodes[sid] = self.node(sid, body, step_path, scope, following)

    def nested(self, sid: str, kind: str, body: Mapping[str, Any], path: JsonPath) -> None:
        if kind == "parallel":
            inner = self.mapping(body["parallel"], (*path, "parallel"), "`parallel`")
            branches = inner.get("branches")
            if not isinstance(branches, list):
                raise self.fail("`parallel.branches` must be a list", (*path, "parallel"))
            for b, branch in enumerate(branches):
                bpath = (*path, "parallel", "branches", b)
                branch = self.mapping(branch, bpath, "a parallel branch")
                self.steps(branch.get("steps"), (*bpath, "steps"), f"{sid}/{b}", sid)
        elif kind == "foreach":
            inner = self.mapping(body["foreach"], (*path, "foreach"), "`foreach`")
            self.steps(inner.get("steps"), (*path, "foreach", "steps"), sid, sid)

    # -- one step

    def node(
        self, sid: str, body: Mapping[str, Any], path: JsonPath, scope: str, following: str | None
    ) -> Node:
        kind = kind_of(body)[0]
        config = self.config(kind, body, path, sid)
        explicit = body.get("next")
        # succeed/fail never continue when they run; their `next` is where a skip (`if` false) goes
        nxt = explicit if isinstance(explicit, str) else following
        templates = template_refs(strip_nested(kind, body))
        own = tuple(t for t in templates if t.path[:1] != ("compensate",))
        return Node(
            id=sid,
            kind=kind,
            scope=scope,
            config=freeze(config),
            next=nxt,
            when=freeze(body.get("if")),
            output=freeze(body.get("output")),
            has_output="output" in body,
            retry=self.step_retry(kind, body, path),
            retries=self.step_retries(body, path),
            timeout_ms=self.step_timeout(kind, body, path),
            catch=self.catch(body.get("catch"), (*path, "catch")),
            compensate=self.compensation(_first(body.get("compensate")), _first_path(body, path)),
            compensate_more=self.compensations_after_first(body.get("compensate"), (*path, "compensate")),
            compensate_on_failure=body.get("compensate_on_failure") is True,
            reads=step_reads(own),
            templates=templates,
            secret=body.get("secret") is True,
            flow_control=freeze(flow_control.normalise(body.get("flow_control"), workflow=False)),
        )

    def step_retry(self, kind: str, body: Mapping[str, Any], path: JsonPath) -> Retry:
        if isinstance(body.get("retry"), list) and body["retry"]:
            return self.retry(body["retry"][0], (*path, "retry", 0))
        if body.get("retry") is not None:
            return self.retry(body["retry"], (*path, "retry"))
        if self.defaults_retry is not None and kind in RETRY_DEFAULT_KINDS:
            return self.defaults_retry
        return Retry()

    def step_retries(self, body: Mapping[str, Any], path: JsonPath) -> tuple[Retry, ...]:
        """`retry` written as a list of policies (the first matching the error decides)."""
        value = body.get("retry")
        if not isinstance(value, list):
            return ()
        return tuple(self.retry(r, (*path, "retry", i)) for i, r in enumerate(value))

    def step_timeout(self, kind: str, body: Mapping[str, Any], path: JsonPath) -> int | None:
        if body.get("timeout") is not None:
            return self.duration(body["timeout"], (*path, "timeout"))
        return self.defaults_timeout if kind in TIMEOUT_DEFAULT_KINDS else None

    def dynamic_duration(self, value: Any, path: JsonPath) -> int | str | None:
        """A duration that may be a template: kept as written, rendered by the step at run time."""
        return value if is_template(value) else self.duration(value, path)

    def retry(self, value: Any, path: JsonPath) -> Retry:
        spec = self.mapping(value, path, "`retry`")
        base = Retry()
        dynamic = tuple(
            (key, spec[key])
            for key in ("max_attempts", "interval", "backoff", "max_interval")
            if is_template(spec.get(key))
        )
        interval = self.dynamic_duration(spec.get("interval"), (*path, "interval"))
        max_interval = self.dynamic_duration(spec.get("max_interval"), (*path, "max_interval"))
        interval = interval if isinstance(interval, int) else None
        max_interval = max_interval if isinstance(max_interval, int) else None
        on = spec.get("on")
        not_on = spec.get("not_on")
        attempts = spec.get("max_attempts", base.max_attempts)
        backoff = spec.get("backoff", base.backoff)
        return Retry(
            max_attempts=attempts if isinstance(attempts, int) else base.max_attempts,
            interval_ms=base.interval_ms if interval is None else interval,
            backoff=float(backoff) if isinstance(backoff, int | float) else base.backoff,
            max_interval_ms=base.max_interval_ms if max_interval is None else max_interval,
            jitter=spec.get("jitter", base.jitter),
            on=tuple(str(e) for e in on) if isinstance(on, list) else DEFAULT_RETRY_ON,
            not_on=tuple(str(e) for e in not_on) if isinstance(not_on, list) else (),
            dynamic=dynamic,
        )

    def catch(self, value: Any, path: JsonPath) -> tuple[Catch, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail("`catch` must be a list", path)
        out = []
        for i, clause in enumerate(value):
            clause = self.mapping(clause, (*path, i), "a catch clause")
            errors = clause.get("errors", ["any"])
            goto = clause.get("goto")
            raises = clause.get("raise")
            names = tuple(str(e) for e in errors) if isinstance(errors, list) else ("any",)
            if isinstance(raises, Mapping) and isinstance(raises.get("name"), str) and goto is None:
                message = raises.get("message")
                spec = {"name": raises["name"], "message": message if isinstance(message, str) else None}
                out.append(Catch(names, None, freeze(spec)))
                continue
            if not isinstance(goto, str):
                raise self.fail("a catch clause needs `goto` (or `raise`)", (*path, i))
            out.append(Catch(names, goto))
        return tuple(out)

    def compensations_after_first(self, value: Any, path: JsonPath) -> tuple[Compensation, ...]:
        if not isinstance(value, list):
            return ()
        out = [self.compensation(v, (*path, i)) for i, v in enumerate(value) if i > 0]
        return tuple(c for c in out if c is not None)

    def compensation(self, value: Any, path: JsonPath) -> Compensation | None:
        if value is None:
            return None
        body = self.mapping(value, path, "`compensate`")
        kinds = kind_of(body, COMPENSATION_KINDS)
        if len(kinds) != 1:
            raise self.fail(f"`compensate` needs exactly one of {', '.join(COMPENSATION_KINDS)}", path)
        kind = kinds[0]
        refs = template_refs(body)
        if body.get("retry") is not None:
            retry = self.retry(body["retry"], (*path, "retry"))
        else:
            retry = self.defaults_retry or Retry()
        if body.get("timeout") is not None:
            timeout = self.duration(body["timeout"], (*path, "timeout"))
        else:
            timeout = self.defaults_timeout if kind in TIMEOUT_DEFAULT_KINDS else None
        return Compensation(
            kind=kind,
            config=freeze(self.config(kind, body, path, None)),
            retry=retry,
            timeout_ms=timeout,
            reads=step_reads(refs),
        )

    # -- per-kind config (shapes documented in dsl/graph.py)

    def config(self, kind: str, body: Mapping[str, Any], path: JsonPath, sid: str | None) -> dict[str, Any]:
        value = body[kind]
        kpath = (*path, kind)
        if kind == "http":
            spec = self.mapping(value, kpath, "`http`")
            method = str(spec.get("method", "GET"))
            out: dict[str, Any] = {
                "method": method if is_template(method) else method.upper(),
                "url": spec.get("url"),
            }
            for key in ("headers", "query", "json", "body"):
                if key in spec:
                    out[key] = spec[key]
            out["expect"] = self.expect(spec.get("expect"), (*kpath, "expect"))
            out["offload"] = bool(spec.get("offload", False))
            return out
        if kind == "action":
            return {"name": value, "with": body.get("with") if body.get("with") is not None else {}}
        if kind == "wait":
            return self.wait(self.mapping(value, kpath, "`wait`"), kpath)
        if kind == "switch":
            return self.switch(value, kpath)
        if kind == "parallel":
            branches = value.get("branches") if isinstance(value, Mapping) else None
            count = len(branches) if isinstance(branches, list) else 0
            out = {"branches": [f"{sid}/{b}" for b in range(count)]}
            # new keys only when used, so graphs without them keep their hash
            wait_for = wait_for_count(value, count) if isinstance(value, Mapping) else None
            if wait_for is not None:
                out["wait_for"] = wait_for
            timeouts = [
                self.duration(b.get("timeout"), (*kpath, "branches", i, "timeout")) or 0
                if isinstance(b, Mapping)
                else 0
                for i, b in enumerate(branches or [])
            ]
            if any(timeouts):
                out["timeouts_ms"] = timeouts
            return out
        if kind == "foreach":
            spec = self.mapping(value, kpath, "`foreach`")
            concurrency = spec.get("concurrency", DEFAULT_CONCURRENCY)
            return {
                "items": spec.get("items"),
                "as": spec.get("as", DEFAULT_AS),
                "concurrency": concurrency
                if isinstance(concurrency, int) or is_template(concurrency)
                else DEFAULT_CONCURRENCY,
                "body": sid,
                **({"until": spec["until"]} if spec.get("until") is not None else {}),
                **(
                    {"item_timeout_ms": self.duration(spec["item_timeout"], (*kpath, "item_timeout"))}
                    if spec.get("item_timeout") is not None
                    else {}
                ),
            }
        if kind == "set":
            return {"vars": dict(self.mapping(value, kpath, "`set`"))}
        if kind == "workflow":
            spec = self.mapping(value, kpath, "`workflow`")
            return {"name": spec.get("name"), "input": spec.get("input", {})}
        if kind == "succeed":
            spec = self.mapping(value if value is not None else {}, kpath, "`succeed`")
            return {"output": spec.get("output"), "has_output": "output" in spec}
        if kind == "fail":
            spec = self.mapping(value, kpath, "`fail`")
            return {"error": spec.get("error"), "message": spec.get("message")}
        if kind == "emit":
            spec = self.mapping(value, kpath, "`emit`")
            return {"event": spec.get("event"), "key": spec.get("key"), "data": spec.get("data")}
        raise self.fail(f"unknown step kind {kind!r}", kpath)  # pragma: no cover - KINDS is closed

    def expect(self, value: Any, path: JsonPath) -> list[int] | None:
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            if isinstance(item, int) and not isinstance(item, bool):
                out.append(item)
            elif isinstance(item, str) and item.strip().isdigit():
                out.append(int(item))
            else:
                raise self.fail(f"`expect` lists HTTP statuses (integers), not {item!r}", (*path, i))
        return out

    def wait(self, spec: Mapping[str, Any], path: JsonPath) -> dict[str, Any]:
        if "for" in spec:
            return {"mode": "for", "ms": self.dynamic_duration(spec["for"], (*path, "for"))}
        if "until" in spec:
            return {"mode": "until", "until": spec["until"]}
        if "event" in spec:
            return {
                "mode": "event",
                "event": spec["event"],
                "key": spec.get("key"),
                "timeout_ms": self.dynamic_duration(spec.get("timeout"), (*path, "timeout")),
            }
        raise self.fail("`wait` needs one of `for`, `until` or `event`", path)

    def switch(self, value: Any, path: JsonPath) -> dict[str, Any]:
        if not isinstance(value, list):
            raise self.fail("`switch` must be a list of cases", path)
        cases: list[dict[str, Any]] = []
        default = None
        for i, case in enumerate(value):
            case = self.mapping(case, (*path, i), "a switch case")
            if "default" in case:
                default = case["default"]
            elif "goto" in case:
                cases.append({"if": case.get("if"), "goto": case["goto"]})
            else:
                raise self.fail("a switch case needs `if` and `goto` (or is `{default: id}`)", (*path, i))
        return {"cases": cases, "default": default}

    # -- lenient target bookkeeping (the targets check reports these with suggestions)

    def check_targets(self) -> None:
        if not self.strict:
            return
        for sid, node in self.nodes.items():
            path = self.paths[sid]
            body = self.doc.value
            for part in path:
                body = body[part]
            targets: list[tuple[Any, JsonPath]] = [(body.get("next"), (*path, "next"))]
            for i, case in enumerate(body.get("switch") or () if node.kind == "switch" else ()):
                for key in ("goto", "default"):
                    targets.append((case.get(key), (*path, "switch", i, key)))
            for i, clause in enumerate(body.get("catch") or ()):
                targets.append((clause.get("goto"), (*path, "catch", i, "goto")))
            for target, tpath in targets:
                if target is None:
                    continue
                if target not in self.nodes:
                    raise self.fail(f"{target!r} is not a step id", tpath)
                if self.nodes[target].scope != node.scope:
                    raise self.fail(f"jump to {target!r} crosses a parallel/foreach boundary", tpath)


REDUCER_INITIAL: dict[str, Any] = {"append": [], "extend": [], "sum": 0, "merge": {}}


def declared_vars(raw: Any) -> dict[str, dict[str, Any]]:
    """The workflow's `vars:` declarations with defaults filled in (reducer and initial value)."""
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, decl in raw.items():
        decl = decl if isinstance(decl, Mapping) else {}
        reduce = decl.get("reduce", "replace")
        initial = decl["initial"] if "initial" in decl else REDUCER_INITIAL.get(reduce)
        out[str(name)] = {"reduce": reduce, "initial": initial}
    return out


def _first(value: Any) -> Any:
    """`compensate` as one body, or the first body of a list."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _first_path(body: Mapping[str, Any], path: JsonPath) -> JsonPath:
    return (*path, "compensate", 0) if isinstance(body.get("compensate"), list) else (*path, "compensate")


def _triggers(value: Any) -> tuple[Any, ...]:
    """The `triggers` entries as written (only the known keys; the schema reports the rest)."""
    if not isinstance(value, list):
        return ()
    out = []
    for entry in value:
        if isinstance(entry, Mapping) and isinstance(entry.get("event"), str):
            out.append(freeze({k: entry[k] for k in ("event", "key", "input") if k in entry}))
    return tuple(out)


def _schedules(value: Any) -> tuple[Any, ...]:
    """The `schedules` entries as written (only the known keys; the schema reports the rest)."""
    if not isinstance(value, list):
        return ()
    keys = ("cron", "timezone", "input", "overlap")
    return tuple(
        freeze({k: entry[k] for k in keys if k in entry})
        for entry in value
        if isinstance(entry, Mapping) and isinstance(entry.get("cron"), str)
    )
