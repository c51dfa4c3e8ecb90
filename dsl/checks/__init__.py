"""Static checks: one module per rule family, all sharing one parsed :class:`CheckContext`.

A check is a function ``check(ctx) -> Iterable[Diagnostic]`` registered with :func:`rule`. Checks run
on the loaded document even when it has schema errors (so every problem is reported at once), so they
must read the document defensively: use :meth:`CheckContext.steps` (which skips malformed steps) and
``isinstance`` before trusting a value's shape. Checks that need the compiled graph get
``ctx.graph is None`` when compiling was impossible and then report nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from dsl.diagnostics import Diagnostic, Severity
from dsl.graph import KINDS, TOP_SCOPE
from dsl.source import Document, JsonPath
from dsl.templates import Parsed, TemplateError, is_template, parse

if TYPE_CHECKING:
    from dsl.graph import Graph

Check = Callable[["CheckContext"], Iterable[Diagnostic]]

# rule name → one-line description (documented in docs/rules.md; names are stable)
RULES: dict[str, str] = {}
_CHECKS: list[tuple[str, Check]] = []


def rule(name: str, description: str) -> Callable[[Check], Check]:
    """Register a check under a stable rule name (a module may register several). Warnings inside a
    step that lists their rule under `ignore:` are dropped (an author's acknowledged exception)."""

    def register(fn: Check) -> Check:
        RULES[name] = description

        def checked(ctx: CheckContext) -> Iterator[Diagnostic]:
            for found in fn(ctx):
                if found.severity != "warning" or not ctx.ignored(found):
                    yield found

        _CHECKS.append((name, checked))
        return fn

    return register


def all_checks() -> list[tuple[str, Check]]:
    """Every registered check; importing each module of this package registers its rules."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")
    return list(_CHECKS)


@dataclass(frozen=True)
class StepRef:
    """One step as written, wherever it is nested."""

    id: str
    kind: str | None  # None when the step has no (or more than one) kind key
    path: JsonPath  # where the step mapping is, e.g. ("steps", 3, "parallel", "branches", 0, "steps", 1)
    scope: str  # the graph scope id: "" top level, "<parallel id>/<i>", "<foreach id>"
    body: Mapping[str, Any]
    # the id is missing or malformed (the schema reports it): ``id`` is then the malformed text, the
    # value of a misspelt id key (``- ia: book``), or a placeholder such as "<step at line 7>"
    broken: bool = False


@dataclass(frozen=True)
class TemplateSite:
    """One template string in the file: where it is, which step holds it, and its parse (or error)."""

    path: JsonPath  # document path of the string
    source: str
    step: StepRef | None  # the step it belongs to (None for top-level `output`)
    parsed: Parsed | None
    error: TemplateError | None


@dataclass
class CheckContext:
    doc: Document
    time_budget_ms: int = 7500
    graph: Graph | None = None
    schema_ok: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # analyses shared between checks (e.g. "flow")
    # keys the schema reported as unknown: what is under them is not part of the workflow, so the
    # checks leave it alone (one "unknown key" error, not a template error inside it as well)
    unknown: frozenset[JsonPath] = frozenset()
    # lists whose flow the graph only approximates (the graph was compiled from a salvaged copy of a
    # schema-invalid file, see dsl/salvage.py): flow rules skip what depends on them
    uncertain: frozenset[str] = frozenset()

    @property
    def root(self) -> Mapping[str, Any]:
        return self.doc.value if isinstance(self.doc.value, Mapping) else {}

    @cached_property
    def steps(self) -> list[StepRef]:
        """Every step in document order, nested ones included; malformed entries are skipped."""
        out: list[StepRef] = []
        _walk(self.root.get("steps"), ("steps",), TOP_SCOPE, out, self.doc)
        return out

    @cached_property
    def broken_ids(self) -> list[str]:
        """Ids of steps whose id is missing or malformed (placeholders included)."""
        return [s.id for s in self.steps if s.broken]

    def maybe_broken(self, target: str) -> bool:
        """Whether a reference to the unknown step ``target`` is probably to a step whose id is
        itself broken (then the schema's error on that id is the one to fix, not each reference)."""
        if any(len([k for k in s.body if k in KINDS]) > 1 for s in self.steps):
            return True  # two steps run together (a lost '- id:' line): the other id is gone
        broken = self.broken_ids
        if not broken:
            return False
        if any(b.startswith("<") for b in broken):
            return True  # a step without any id: any unknown name may be meant for it
        import difflib

        return bool(difflib.get_close_matches(target, broken, n=1, cutoff=0.6))

    @cached_property
    def by_id(self) -> dict[str, StepRef]:
        """First step for each id (duplicates are reported by their own rule)."""
        found: dict[str, StepRef] = {}
        for s in self.steps:
            if not s.broken:
                found.setdefault(s.id, s)
        for s in self.steps:
            if s.broken:
                found.setdefault(s.id, s)  # a broken id never hides a real step of that id
        return found

    def scope_chain(self, scope: str) -> list[str]:
        """``scope`` and the lists enclosing it, innermost first (a branch, its parallel's list, …)."""
        out = [scope]
        seen = {scope}
        while scope != TOP_SCOPE:
            owner = self.by_id.get(scope.rsplit("/", 1)[0] if "/" in scope else scope)
            if owner is None or owner.scope in seen:
                break
            scope = owner.scope
            seen.add(scope)
            out.append(scope)
        return out

    def flow_uncertain(self, scope: str) -> bool:
        """Whether the flow of ``scope`` (or of a list around it) is only approximated by the graph."""
        return bool(self.uncertain) and any(s in self.uncertain for s in self.scope_chain(scope))

    @cached_property
    def strings(self) -> list[tuple[JsonPath, str]]:
        """Every string value in the file with its path (one walk, shared by the checks)."""
        return list(_strings(self.doc.value, ()))

    @cached_property
    def templates(self) -> list[TemplateSite]:
        """Every template string in the file (steps, compensations, top-level output), parsed once."""
        sites: list[TemplateSite] = []
        owners = {s.path: s for s in self.steps}
        unknown = self.unknown
        for path, source in self.strings:
            if not is_template(source) or path[:1] == ("input",):
                continue
            if unknown and any(path[:n] in unknown for n in range(1, len(path) + 1)):
                continue
            # the innermost step whose mapping holds the string
            owner = next((owners[path[:n]] for n in range(len(path) - 1, 0, -1) if path[:n] in owners), None)
            try:
                parsed, error = parse(source), None
            except TemplateError as exc:
                parsed, error = None, exc
            sites.append(TemplateSite(path, source, owner, parsed, error))
        return sites

    def ignored(self, found: Diagnostic) -> bool:
        """Whether a step that `ignore`s this rule encloses the diagnostic's position."""
        return id(found) in self.extra.get("ignored", ())

    def diag(
        self,
        rule: str,
        severity: Severity,
        message: str,
        path: JsonPath,
        *,
        key: bool = False,
        offset: int | None = None,
    ) -> Diagnostic:
        """A diagnostic at a document path: the key that names it (key=True), a character inside a
        string (offset), or the value."""
        if offset is not None:
            position = self.doc.in_string(path, offset)
        elif key:
            position = self.doc.key_at(path)
        else:
            position = self.doc.at(path)
        found = Diagnostic(rule, severity, message, position)
        if severity == "warning" and self._ignores(rule, path):
            self.extra.setdefault("ignored", set()).add(id(found))
        return found

    def _ignores(self, rule: str, path: JsonPath) -> bool:
        for step in self.steps:
            if tuple(path[: len(step.path)]) != tuple(step.path):
                continue
            ignore = step.body.get("ignore")
            if isinstance(ignore, list) and rule in ignore:
                return True
        return False


def _strings(value: Any, path: JsonPath) -> Iterator[tuple[JsonPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))


_ID = re.compile(r"[a-z][a-z0-9_]{0,63}")
_STEP_KEYS = frozenset(
    {"id", "if", "output", "next", "retry", "timeout", "catch", "compensate", "with", "ignore", *KINDS}
)


def _step_id(step: Mapping[str, Any], line: int, column: int) -> tuple[str, bool]:
    """The step's id and whether it is broken; a broken id is recovered as well as possible, so that
    what the step holds (its output template, a foreach body) is still checked in the right scope."""
    sid = step.get("id")
    if isinstance(sid, str) and _ID.fullmatch(sid):
        return sid, False
    if isinstance(sid, str) and sid:
        return sid, True
    if "id" not in step:
        for key, value in step.items():  # `- ia: book`, `- name: book`: a misspelt id key
            if key not in _STEP_KEYS and isinstance(value, str) and _ID.fullmatch(value):
                return value, True
    return f"<step at line {line}, column {column}>", True


def _walk(steps: Any, path: JsonPath, scope: str, out: list[StepRef], doc: Document | None = None) -> None:
    """Collect the steps of a list, and of the lists nested in them, in document order.

    Lenient on purpose, so that a malformed step (two kinds, no id, a body written as a mapping
    instead of a list) still gives the templates inside it the scope they were written for."""
    if isinstance(steps, Mapping) and ("id" in steps or any(k in steps for k in KINDS)):
        items: list[tuple[JsonPath, Any]] = [(path, steps)]  # `steps:` holding one step, not a list
    elif isinstance(steps, list):
        items = [((*path, i), step) for i, step in enumerate(steps)]
    else:
        return
    for step_path, step in items:
        if not isinstance(step, Mapping):
            continue
        kinds = [k for k in KINDS if k in step]
        kind = kinds[0] if len(kinds) == 1 else None
        where = doc.at(step_path) if doc is not None else None
        sid, broken = _step_id(step, where.line if where else 0, where.column if where else 0)
        out.append(StepRef(sid, kind, step_path, scope, step, broken))
        parallel = step.get("parallel")
        if isinstance(parallel, Mapping) or isinstance(parallel, list):
            # a list here is the branches without their `branches:` key (the schema says so)
            branches = parallel.get("branches") if isinstance(parallel, Mapping) else parallel
            inner = ("parallel", "branches") if isinstance(parallel, Mapping) else ("parallel",)
            if isinstance(branches, list):
                for b, branch in enumerate(branches):
                    if isinstance(branch, Mapping):
                        _walk(
                            branch.get("steps"),
                            (*step_path, *inner, b, "steps"),
                            f"{sid}/{b}",
                            out,
                            doc,
                        )
        foreach = step.get("foreach")
        if isinstance(foreach, Mapping):
            _walk(foreach.get("steps"), (*step_path, "foreach", "steps"), f"{sid}", out, doc)
