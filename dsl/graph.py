"""The compiled workflow: an immutable, content-hashed graph of nodes — the contract dsl → engine.

All ids are unique across a file (nested steps included), so ``Graph.nodes`` is one flat mapping.
Steps nested in ``parallel`` branches and ``foreach`` bodies live in their own :class:`Scope`;
``Node.next is None`` means "end of my scope" (end of the execution for the top-level scope, end of
the branch or item otherwise).

``Node.config`` per kind (templates are left unrendered, as the author wrote them):

========== =====================================================================================
http       ``{method, url, headers?, query?, json? | body?, expect: [int, ...] | None, offload: bool}``
           (``expect`` None = any 2xx)
action     ``{name, with: {...}}``
wait       ``{mode: "for", ms}`` | ``{mode: "until", until: template}`` |
           ``{mode: "event", event, key: template, timeout_ms: int | None}``
switch     ``{cases: [{if: template, goto: id}, ...], default: id | None}``
parallel   ``{branches: [scope id, ...], wait_for?: int, timeouts_ms?: [int, ...]}`` (``wait_for`` only
           for a race, < the branch count; ``timeouts_ms`` per branch, 0 = none, only when one is set)
foreach    ``{items: template, as: name, concurrency: int, body: scope id, until?: template,
           item_timeout_ms?: int}`` (the ``?`` keys only when written: older graphs keep their hash)
set        ``{vars: {name: template, ...}}``
workflow   ``{name, input: value}``
succeed    ``{output: value | None, has_output: bool}``
fail       ``{error: Name, message: template | None}``
emit       ``{event: name, key: template, data: value}``
========== =====================================================================================
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

Json = Any
KINDS = (
    *("http", "action", "wait", "switch", "parallel", "foreach", "set", "workflow", "succeed", "fail"),
    "emit",
)
COMPENSATION_KINDS = ("http", "action", "workflow")
DEFAULT_RETRY_ON = ("timeout", "http.5xx", "http.429", "http.connect")
TOP_SCOPE = ""


class FrozenDict(Mapping[str, Any]):
    """A read-only, hashable mapping, so a compiled graph cannot be changed by accident at run time."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = dict(data or {})
        self._hash: int | None = None

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(canonical_json(self))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenDict({self._data!r})"


def freeze(value: Json) -> Json:
    """Deeply convert dicts to FrozenDict and lists to tuples."""
    if isinstance(value, Mapping):
        return FrozenDict({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Json) -> Json:
    """Plain JSON data (dicts and lists) from a frozen value."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Retry:
    max_attempts: int = 1
    interval_ms: int = 2000
    backoff: float = 2.0
    max_interval_ms: int = 300_000
    jitter: str = "full"  # "full" | "none"
    on: tuple[str, ...] = DEFAULT_RETRY_ON
    not_on: tuple[str, ...] = ()
    # numbers written as templates (field name → template), rendered by the interpreter with the
    # step's scope when the step fails; the plain fields then hold the defaults
    dynamic: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Catch:
    errors: tuple[str, ...]
    goto: str | None  # None: the entry `raise`s instead
    raises: Json = None  # {"name": NAME, "message": template | None}: fail under this name


@dataclass(frozen=True)
class TemplateRef:
    """One template string inside a node, pre-parsed: where it is and which names it reads."""

    # where it sits inside the step mapping as written: ("http", "url"), ("if",), ("compensate", "with", "id")
    path: tuple[str | int, ...]
    source: str
    native: bool  # exactly one ``{{ expr }}``: keeps the expression's type
    names: tuple[str, ...]  # dotted names read, e.g. "input.when", "steps.book.output", "vars.x", "item"


@dataclass(frozen=True)
class Compensation:
    kind: str  # one of COMPENSATION_KINDS
    config: Json  # same shape as Node.config for that kind
    retry: Retry
    timeout_ms: int | None
    reads: tuple[str, ...]  # step ids whose outputs its templates reference


@dataclass(frozen=True)
class Scope:
    """An ordered list of steps: the top level, one parallel branch, or a foreach body."""

    id: str  # "" top level; "<parallel id>/<index>" for a branch; "<foreach id>" for a body
    nodes: tuple[str, ...]  # in document order
    owner: str | None  # the parallel/foreach node that owns it; None for the top level

    @property
    def entry(self) -> str | None:
        return self.nodes[0] if self.nodes else None


@dataclass(frozen=True)
class Node:
    id: str
    kind: str
    scope: str
    config: Json
    next: str | None = None  # successor on success; None = end of the scope
    when: Json = None  # the `if` template, or None
    output: Json = None  # the `output` template; meaningful only when has_output
    has_output: bool = False
    retry: Retry = field(default_factory=Retry)
    timeout_ms: int | None = None
    catch: tuple[Catch, ...] = ()
    compensate: Compensation | None = None
    # `retry` written as a list: the policies tried in order (``retry`` is then the first of them)
    retries: tuple[Retry, ...] = ()
    # `compensate` written as a list: the bodies after the first (``compensate``), run in order
    compensate_more: tuple[Compensation, ...] = ()
    compensate_on_failure: bool = False
    reads: tuple[str, ...] = ()  # step ids whose outputs this node's templates (not compensate's) read
    templates: tuple[TemplateRef, ...] = ()
    secret: bool = False  # `secret: true`: its rendered input and output are redacted from every view
    # `flow_control` on the step: {key?, rate?, period_ms?, parallelism?} (dsl/flow_control.py)
    flow_control: Json = None


def compensations(node: Node) -> tuple[Compensation, ...]:
    """A node's compensation bodies in the order they run (none, one, or a `compensate` list)."""
    if node.compensate is None:
        return ()
    return (node.compensate, *node.compensate_more)


@dataclass(frozen=True)
class Graph:
    name: str
    nodes: Mapping[str, Node]
    scopes: Mapping[str, Scope]
    version: str | int | None = None
    description: str | None = None
    input_schema: Json = None
    env: tuple[str, ...] = ()
    timeout_ms: int | None = None
    output: Json = None
    has_output: bool = False
    output_reads: tuple[str, ...] = ()
    on_failure: str = "compensate"  # "compensate" | "stop"
    secret_env: tuple[str, ...] = ()  # the names of `env` declared `secret: true`
    # declared vars: name → {"reduce": replace|append|extend|sum|min|max|merge, "initial": value}
    vars: Mapping[str, Any] = field(default_factory=lambda: FrozenDict())
    egress_allow: tuple[str, ...] = ()  # the workflow's `egress.allow` rules (dsl/egress.py)
    # `triggers`: ({event: name, key?: literal | template, input?: value}, ...) as written
    triggers: tuple[Json, ...] = ()
    # `schedules`: ({cron, timezone?, input?, overlap?}, ...) as written
    schedules: tuple[Json, ...] = ()
    # `flow_control`: {key?, rate?, period_ms?, parallelism?, max_running?} (dsl/flow_control.py)
    flow_control: Json = None
    hash: str = field(default="", compare=False)

    @property
    def secret_steps(self) -> frozenset[str]:
        return frozenset(sid for sid, node in self.nodes.items() if node.secret)

    @property
    def entry(self) -> str | None:
        return self.scopes[TOP_SCOPE].entry

    def scope_of(self, node_id: str) -> Scope:
        return self.scopes[self.nodes[node_id].scope]

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-JSON form (the thing that is hashed, stored in Redis and printed)."""
        data = {
            "format": FORMAT,
            **{
                f.name: _plain(getattr(self, f.name))
                for f in fields(self)
                if f.name != "hash" and not (f.name in _OMITTED_WHEN_EMPTY and not getattr(self, f.name))
            },
        }
        return data

    def canonical(self) -> str:
        # to_dict() is already plain JSON data: serialise it directly (same text as canonical_json)
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def with_hash(self) -> Graph:
        digest = hashlib.sha256(self.canonical().encode()).hexdigest()
        return Graph(**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "hash"}, hash=digest)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Graph:
        """Inverse of :meth:`to_dict` (the engine loads graphs stored by hash)."""
        nodes = {k: _node(v) for k, v in data["nodes"].items()}
        scopes = {
            k: Scope(id=v["id"], nodes=tuple(v["nodes"]), owner=v["owner"]) for k, v in data["scopes"].items()
        }
        graph = cls(
            name=data["name"],
            nodes=FrozenDict(nodes),
            scopes=FrozenDict(scopes),
            version=data.get("version"),
            description=data.get("description"),
            input_schema=freeze(data.get("input_schema")),
            env=tuple(data.get("env") or ()),
            timeout_ms=data.get("timeout_ms"),
            output=freeze(data.get("output")),
            has_output=bool(data.get("has_output")),
            output_reads=tuple(data.get("output_reads") or ()),
            on_failure=data.get("on_failure", "compensate"),
            secret_env=tuple(data.get("secret_env") or ()),
            vars=freeze(data.get("vars") or {}),
            egress_allow=tuple(data.get("egress_allow") or ()),
            triggers=tuple(freeze(t) for t in data.get("triggers") or ()),
            schedules=tuple(freeze(t) for t in data.get("schedules") or ()),
            flow_control=freeze(data.get("flow_control")),
        )
        return graph.with_hash()

    def reducer(self, name: str) -> str:
        """How a `set` of var ``name`` combines with its current value (``replace`` unless declared)."""
        decl = self.vars.get(name)
        return decl["reduce"] if decl is not None else "replace"


FORMAT = 1  # bump when the meaning of the serialised form changes


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8: identical across runs, machines and PYTHONHASHSEEDs."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_SCALARS = (str, int, float, bool, type(None))


def env_names(env: Any, *, secret: bool = False) -> list[str]:
    """The names a document's `env` declares (``NAME`` or ``{name: NAME, secret: true}``); with
    ``secret``, only the secret ones. Forgiving: a malformed entry is skipped (the schema reports it)."""
    if isinstance(env, str):
        env = [env]
    elif isinstance(env, Mapping):
        env = list(env)
    if not isinstance(env, list):
        return []
    out = []
    for entry in env:
        if isinstance(entry, str) and not secret:
            out.append(entry)
        elif isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            if not secret or entry.get("secret") is True:
                out.append(entry["name"])
    return out


# fields added after graphs were first stored: left out while unset, so older graphs keep their hash
_OMITTED_WHEN_EMPTY = frozenset(
    {"secret", "secret_env", "vars", "not_on", "retries", "raises", "dynamic"}
    | {"compensate_more", "compensate_on_failure", "egress_allow", "triggers", "schedules"}
    | {"flow_control"}
)


def _plain(value: Any) -> Any:
    if isinstance(value, _SCALARS):  # fast path: most values in a graph are scalars
        return value
    if hasattr(value, "__dataclass_fields__"):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in fields(value)
            if not (f.name in _OMITTED_WHEN_EMPTY and not getattr(value, f.name))
        }
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _retry(d: Mapping[str, Any]) -> Retry:
    return Retry(
        max_attempts=d["max_attempts"],
        interval_ms=d["interval_ms"],
        backoff=d["backoff"],
        max_interval_ms=d["max_interval_ms"],
        jitter=d["jitter"],
        on=tuple(d["on"]),
        not_on=tuple(d.get("not_on") or ()),
        dynamic=tuple((str(k), str(v)) for k, v in d.get("dynamic") or ()),
    )


def _compensation(comp: Mapping[str, Any]) -> Compensation:
    return Compensation(
        kind=comp["kind"],
        config=freeze(comp["config"]),
        retry=_retry(comp["retry"]),
        timeout_ms=comp.get("timeout_ms"),
        reads=tuple(comp.get("reads") or ()),
    )


def _node(d: Mapping[str, Any]) -> Node:
    comp = d.get("compensate")
    return Node(
        id=d["id"],
        kind=d["kind"],
        scope=d["scope"],
        config=freeze(d["config"]),
        next=d.get("next"),
        when=freeze(d.get("when")),
        output=freeze(d.get("output")),
        has_output=bool(d.get("has_output")),
        retry=_retry(d["retry"]),
        timeout_ms=d.get("timeout_ms"),
        catch=tuple(
            Catch(tuple(c["errors"]), c.get("goto"), freeze(c.get("raises"))) for c in d.get("catch") or ()
        ),
        compensate=None if comp is None else _compensation(comp),
        retries=tuple(_retry(r) for r in d.get("retries") or ()),
        compensate_more=tuple(_compensation(c) for c in d.get("compensate_more") or ()),
        compensate_on_failure=bool(d.get("compensate_on_failure")),
        reads=tuple(d.get("reads") or ()),
        templates=tuple(
            TemplateRef(tuple(t["path"]), t["source"], t["native"], tuple(t["names"]))
            for t in d.get("templates") or ()
        ),
        secret=bool(d.get("secret")),
        flow_control=freeze(d.get("flow_control")),
    )
