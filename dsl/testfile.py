"""Test files (``NAME.test.yaml`` beside ``NAME.yaml``): load with positions, check against
``schemas/workflow-test.schema.json``, and check what the schema cannot see — that every step a case
names exists in the workflow under test, that a mock fits its step's kind, that case names are unique.

Pure like the rest of ``dsl``: the runner (:mod:`engine.testing`) builds on :func:`load_test_file`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from dsl.diagnostics import Diagnostic, Position, sort
from dsl.files import TEST_SUFFIXES as SUFFIXES
from dsl.files import is_test_file
from dsl.graph import Graph, compensations
from dsl.source import Document, JsonPath, LoadError, loads

RULES: dict[str, str] = {
    "test-schema": "a test file value has the wrong type or shape (schemas/workflow-test.schema.json)",
    "test-workflow": "the workflow under test is missing or has errors",
    "test-reference": "a test case names a step the workflow (or the child workflow) does not have",
    "test-mock": "a mock does not fit its step (e.g. status for an action, result for an http step)",
    "test-case": "a test case is ambiguous (duplicate name, an event with both `at` and `after`)",
}
CALL_KINDS = ("http", "action")
ANSWER_FORMS = ("result", "error", "status", "body", "sequence", "per_item")


def examples(folder: str | Path) -> list[Path]:
    """The workflow files directly in ``folder`` (not below it), without their test files."""
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.suffix in (".yaml", ".yml") and p.is_file() and not is_test_file(p)
    )


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    from schemas import WORKFLOW_TEST_SCHEMA

    with open(WORKFLOW_TEST_SCHEMA, encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


@lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema())


@dataclass
class TestFile:
    """A loaded test file: its document, the workflow under test, and every workflow of that folder
    by name (the child workflows a case may mock), with what was found wrong."""

    file: str
    doc: Document | None
    workflow_file: Path | None = None
    graph: Graph | None = None
    graphs: dict[str, Graph] = field(default_factory=dict)  # name → graph, the folder's workflows
    workflow_docs: dict[str, Document] = field(default_factory=dict)  # name → its loaded document
    diagnostics: list[Diagnostic] = field(default_factory=list)
    tainted: set[JsonPath] = field(default_factory=set)  # where the schema found problems

    def is_tainted(self, path: JsonPath) -> bool:
        """The schema found a problem at ``path`` or inside it."""
        n = len(path)
        return any(t[:n] == path for t in self.tainted)

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


def workflow_path(test_file: str | Path, value: Any) -> Path:
    """The workflow a test file is about: its ``workflow`` key (relative to it), else the sibling."""
    path = Path(test_file)
    given = value.get("workflow") if isinstance(value, dict) else None
    if isinstance(given, str) and given:
        return path.parent / given
    stem = path.name
    for suffix in SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    for ext in (".yaml", ".yml"):
        candidate = path.parent / f"{stem}{ext}"
        if candidate.exists():
            return candidate
    return path.parent / f"{stem}.yaml"


def load_test_file(path: str | Path, text: str | None = None, *, time_budget_ms: int = 7500) -> TestFile:
    """Load, schema-check and cross-check one test file; never raises for what the file contains."""
    name = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            return TestFile(name, None, diagnostics=[_diag("io", f"cannot read file: {reason}", name)])
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        doc = loads(text, name)
    except LoadError as exc:
        return TestFile(name, None, diagnostics=[exc.diagnostic])
    _timestamps_as_text(doc)
    found = TestFile(name, doc, diagnostics=list(doc.problems))
    errors = list(_validator().iter_errors(doc.value))
    if errors:
        from dsl.schema import explain

        found.diagnostics.extend(
            Diagnostic(
                "test-schema" if d.rule == "schema" else d.rule, d.severity, _words(d.message), d.position
            )
            for d in explain(doc, errors)
        )
        found.tainted = {tuple(e.absolute_path) for e in errors}
        if not isinstance(doc.value, dict):
            return found
    # every problem in one pass: the cross-checks run on the well-formed parts even when the schema
    # found problems elsewhere (a case or mock the schema rejected is not checked again)
    _load_workflows(found, time_budget_ms)
    if found.graph is not None:
        found.diagnostics.extend(_cross_check(found))
    found.diagnostics = sort(found.diagnostics)
    return found


def _words(message: str) -> str:
    """The schema's place names are a workflow's ("the expected statuses" is an http step's
    ``expect``); in a test file, say case N and expectations."""
    import re

    message = re.sub(r"item (\d+) of 'cases'", r"case \1", message)
    return message.replace("the expected statuses of case", "the expectations of case")


def _diag(rule: str, message: str, file: str, line: int = 1, column: int = 1) -> Diagnostic:
    return Diagnostic(rule, "error", message, Position(file, line, column))


def _timestamps_as_text(doc: Document) -> None:
    """YAML reads ``now: 2030-06-14T12:00:00Z`` as a date; in a test file it is always meant as text."""
    for path in doc.not_json:
        span = doc.spans.get(path)
        if span is None or span.start < 0 or not path:
            continue
        parent: Any = doc.value
        for part in path[:-1]:
            parent = parent[part]
        raw = doc.text[span.start : span.end]
        if isinstance(parent[path[-1]], bytes):
            continue
        parent[path[-1]] = raw.strip("'\"")


_VALIDATED: dict[tuple[str, int, int, int], Any] = {}  # (path, mtime, size, budget) → Result


def _validated(path: Path, time_budget_ms: int) -> Any:
    """``validate_path`` once per file version (a folder of test files shares its workflows)."""
    from dsl.validate import validate_path

    try:
        stat = path.stat()
    except OSError:
        return validate_path(path, time_budget_ms=time_budget_ms)
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, time_budget_ms)
    if key not in _VALIDATED:
        if len(_VALIDATED) > 512:
            _VALIDATED.clear()
        _VALIDATED[key] = validate_path(path, time_budget_ms=time_budget_ms)
    return _VALIDATED[key]


def _load_workflows(found: TestFile, time_budget_ms: int) -> None:
    doc = found.doc
    assert doc is not None
    target = workflow_path(found.file, doc.value)
    where = doc.at(("workflow",)) if "workflow" in doc.value else Position(found.file, 1, 1)
    if not target.is_file():
        found.diagnostics.append(
            Diagnostic(
                "test-workflow",
                "error",
                f"no workflow file {target} for this test file (name it like the workflow, NAME.test.yaml "
                "beside NAME.yaml, or say which with 'workflow: FILE')",
                where,
            )
        )
        return
    found.workflow_file = target
    result = _validated(target, time_budget_ms)
    if result.graph is None:
        first = result.errors[0] if result.errors else None
        detail = f": {first.position.line}:{first.position.column}: {first.message}" if first else ""
        found.diagnostics.append(
            Diagnostic(
                "test-workflow",
                "error",
                f"the workflow under test, {target}, has errors (run hopflow validate {target}){detail}",
                where,
            )
        )
        return
    found.graph = result.graph
    if result.doc is not None:
        found.workflow_docs[result.graph.name] = result.doc
    found.graphs[result.graph.name] = result.graph
    # child workflows come from the workflow's own folder (like `run` and the folder checks), not
    # from folders below it
    for other in examples(target.parent):
        if other.resolve() == target.resolve():
            continue
        sibling = _validated(other, time_budget_ms)
        if sibling.graph is not None and sibling.graph.name not in found.graphs:
            found.graphs[sibling.graph.name] = sibling.graph
            if sibling.doc is not None:
                found.workflow_docs[sibling.graph.name] = sibling.doc


def foreach_owner(graph: Graph, step: str) -> str | None:
    """The innermost foreach whose body holds ``step`` (None: not inside a foreach)."""
    scope = graph.scopes[graph.nodes[step].scope]
    while scope.owner is not None:
        owner = graph.nodes[scope.owner]
        if owner.kind == "foreach":
            return owner.id
        scope = graph.scopes[owner.scope]
    return None


def _cross_check(found: TestFile) -> Iterator[Diagnostic]:
    doc = found.doc
    assert doc is not None
    cases = doc.value.get("cases")
    seen: dict[str, int] = {}
    for i, case in enumerate(cases if isinstance(cases, list) else []):
        if not isinstance(case, dict):
            continue
        try:
            yield from list(_check_case(found, i, case, seen))
        except (TypeError, KeyError, AttributeError, ValueError):
            if not found.tainted:
                raise  # a schema-valid case must never crash a check
            # a malformed case (the schema said how): its other checks would only repeat that


def _check_case(found: TestFile, i: int, case: dict[str, Any], seen: dict[str, int]) -> Iterator[Diagnostic]:
    doc = found.doc
    graph = found.graph
    assert doc is not None and graph is not None
    base: JsonPath = ("cases", i)
    name = case.get("name")
    if isinstance(name, str):
        if name in seen:
            yield Diagnostic(
                "test-case",
                "error",
                f"case name {name!r} is already used by case {seen[name] + 1}: names select cases (-k) and "
                "name them in reports, so they must be unique",
                doc.at((*base, "name")),
            )
        seen.setdefault(name, i)
    for key, mock in (case.get("mocks") or {}).items():
        if found.is_tainted((*base, "mocks", key)):
            yield from _mocked_step(found, (*base, "mocks", key), key)
            continue
        yield from _check_mock(found, (*base, "mocks", key), key, mock)
    for j, event in enumerate(case.get("events") or []):
        if "at" in event and "after" in event:
            yield Diagnostic(
                "test-case",
                "error",
                "an event arrives either at a time ('at') or after a step ('after'), not both",
                doc.key_at((*base, "events", j, "after")),
            )
        if "after" in event:
            yield from _step_ref(found, (*base, "events", j, "after"), event["after"])
    expect = case.get("expect") or {}
    for key in ("path", "compensated"):
        for j, sid in enumerate(expect.get(key) or []):
            yield from _step_ref(found, (*base, "expect", key, j), sid)
            if key == "compensated" and sid in graph.nodes and graph.nodes[sid].compensate is None:
                yield Diagnostic(
                    "test-reference",
                    "error",
                    f"step {sid!r} has no compensation, so it can never be compensated",
                    doc.at((*base, "expect", key, j)),
                )
    for key in expect.get("calls") or {}:
        yield from _mocked_step(found, (*base, "expect", "calls", key), key)


def _resolve(found: TestFile, key: str) -> tuple[Graph | None, str, str | None]:
    """``step`` or ``child/step`` → (graph, step id, why not found)."""
    assert found.graph is not None
    if "/" not in key:
        return found.graph, key, None
    child, step = key.split("/", 1)
    graph = found.graphs.get(child)
    if graph is None:
        known = ", ".join(sorted(n for n in found.graphs if n != found.graph.name)) or "none"
        return (
            None,
            step,
            f"no workflow named {child!r} in the folder of {found.workflow_file} (others: {known})",
        )
    return graph, step, None


def _step_ref(found: TestFile, path: JsonPath, sid: Any) -> Iterator[Diagnostic]:
    assert found.doc is not None and found.graph is not None
    if isinstance(sid, str) and not found.is_tainted(path) and sid not in found.graph.nodes:
        yield _unknown(found, path, found.graph, sid)


def _unknown(found: TestFile, path: JsonPath, graph: Graph, sid: str, key_pos: bool = False) -> Diagnostic:
    import difflib

    assert found.doc is not None
    close = difflib.get_close_matches(sid, list(graph.nodes), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    position = found.doc.key_at(path) if key_pos else found.doc.at(path)
    return Diagnostic(
        "test-reference", "error", f"workflow {graph.name!r} has no step {sid!r}{hint}", position
    )


def _mocked_step(found: TestFile, path: JsonPath, key: str) -> Iterator[Diagnostic]:
    """A mock or call key: must name an http/action step (of the workflow, or of a child)."""
    assert found.doc is not None
    graph, sid, problem = _resolve(found, key)
    if graph is None:
        yield Diagnostic("test-reference", "error", problem or "", found.doc.key_at(path))
        return
    node = graph.nodes.get(sid)
    if node is None:
        yield _unknown(found, path, graph, sid, key_pos=True)
        return
    kinds = {node.kind} | {c.kind for c in compensations(node)}
    if not kinds & set(CALL_KINDS):
        yield Diagnostic(
            "test-mock",
            "error",
            f"step {sid!r} is a {node.kind} step: only http and action steps (and compensations) make "
            "calls that can be mocked"
            + (
                " (a child workflow runs for real: mock its steps as CHILD/STEP)"
                if node.kind == "workflow"
                else ""
            ),
            found.doc.key_at(path),
        )


def _check_mock(found: TestFile, path: JsonPath, key: str, mock: dict[str, Any]) -> Iterator[Diagnostic]:
    assert found.doc is not None
    problems = list(_mocked_step(found, path, key))
    yield from problems
    if problems:
        return
    graph, sid, _ = _resolve(found, key)
    assert graph is not None
    node = graph.nodes[sid]
    own = {k: v for k, v in mock.items() if k != "compensate"}
    if own:
        if node.kind not in CALL_KINDS:
            yield Diagnostic(
                "test-mock",
                "error",
                f"step {sid!r} is a {node.kind} step and makes no call of its own: mock only its "
                "compensation (compensate: ...)",
                found.doc.key_at(path),
            )
        else:
            in_foreach = foreach_owner(graph, sid) is not None
            yield from _check_answer(found, path, own, {node.kind}, sid, in_foreach)
    if "compensate" in mock:
        calling = [c for c in compensations(node) if c.kind in CALL_KINDS]
        comp = calling[0] if calling else node.compensate
        if comp is None:
            yield Diagnostic(
                "test-mock",
                "error",
                f"step {sid!r} has no compensation to mock",
                found.doc.key_at((*path, "compensate")),
            )
        elif comp.kind not in CALL_KINDS:
            yield Diagnostic(
                "test-mock",
                "error",
                f"the compensation of {sid!r} starts a child workflow, which runs for real: mock its steps "
                f"as {comp.config['name']}/STEP",
                found.doc.key_at((*path, "compensate")),
            )
        else:
            in_foreach = foreach_owner(graph, sid) is not None
            kinds = {c.kind for c in calling}  # a `compensate` list may mix action and http bodies
            yield from _check_answer(found, (*path, "compensate"), mock["compensate"], kinds, sid, in_foreach)


def _check_answer(
    found: TestFile, path: JsonPath, answer: dict[str, Any], kinds: set[str], sid: str, in_foreach: bool
) -> Iterator[Diagnostic]:
    assert found.doc is not None
    forms = [k for k in ANSWER_FORMS if k in answer and not (k == "body" and "status" in answer)]
    where = found.doc.at(path)
    if len(forms) != 1:
        listed = " and ".join(repr(f) for f in forms) if forms else "none of them"
        yield Diagnostic(
            "test-mock",
            "error",
            f"a mock answers with exactly one of result, error, status (+ body), sequence or per_item; "
            f"this one has {listed}",
            where,
        )
        return
    form = forms[0]
    if "message" in answer and form != "error":
        yield Diagnostic(
            "test-mock", "error", "'message' goes with 'error'", found.doc.key_at((*path, "message"))
        )
    if "headers" in answer and form not in ("status", "body"):
        yield Diagnostic(
            "test-mock",
            "error",
            "'headers' goes with 'status' (an http response)",
            found.doc.key_at((*path, "headers")),
        )
    if form in ("status", "body") and "http" not in kinds:
        yield Diagnostic(
            "test-mock",
            "error",
            f"step {sid!r} is an action: mock it with 'result' (its return value) or 'error', "
            "not an http status",
            found.doc.key_at((*path, form)),
        )
    if form == "result" and "action" not in kinds:
        yield Diagnostic(
            "test-mock",
            "error",
            f"step {sid!r} is an http step: mock its response with 'status' and 'body' "
            "(e.g. {status: 200, body: {...}}), or fail it with 'error'",
            found.doc.key_at((*path, "result")),
        )
    if form == "per_item" and not in_foreach:
        yield Diagnostic(
            "test-mock",
            "error",
            f"step {sid!r} is not inside a foreach, so it has no items: use 'sequence' (one answer per call)",
            found.doc.key_at((*path, "per_item")),
        )
    if form in ("sequence", "per_item"):
        for i, item in enumerate(answer[form]):
            yield from _check_answer(
                found, (*path, form, i), item, kinds, sid, in_foreach and form == "sequence"
            )
