"""The validation pipeline: text → load → schema → compile → every check → sorted diagnostics.

Every problem in a file is reported at once: when the schema rejects a document the checks still run
on the raw document, and the flow checks on a graph compiled from its well-formed parts (see
:mod:`dsl.salvage`); what they had to skip is said in a ``checks-skipped`` info. A check that trips
over a malformed document is skipped (and said so) rather than allowed to hide the schema's own,
better, message. On a schema-valid document a crashing
check is a bug in hopflow, so it is reported as an ``internal-error`` diagnostic instead of a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dsl.diagnostics import Diagnostic, Position, sort
from dsl.files import SUFFIXES as SUFFIXES  # re-exported (engine.lsp)
from dsl.files import read_regular as _read_regular
from dsl.files import workflow_files as workflow_files  # re-exported (catalog, run, ui)
from dsl.source import Document, LoadError, loads

if TYPE_CHECKING:
    from dsl.graph import Graph
    from dsl.workspace import Links

DEFAULT_TIME_BUDGET_MS = 7500

# rules that are not checks in dsl/checks/ (the loader's, and the pipeline's own)
PIPELINE_RULES: dict[str, str] = {
    "yaml-syntax": "the file is not one readable YAML document (syntax error, not UTF-8, several documents)",
    "yaml-duplicate-key": "a mapping has the same key twice",
    "io": "the file cannot be read (permissions, a broken link, not a regular file)",
    "unquoted-template": "a value starting with '{{' is not quoted, so YAML reads it as a mapping",
    "checks-skipped": "info: some rules did not run on part of a file because that part is malformed",
    "internal-error": "a check crashed on a schema-valid document: a bug in hopflow, please report it",
}


@dataclass(frozen=True)
class Result:
    """What validating one file found. ``graph`` is set only when there are no errors."""

    file: str
    doc: Document | None
    diagnostics: tuple[Diagnostic, ...]
    graph: Graph | None = None
    text: str | None = field(default=None, repr=False, compare=False)
    links: Links | None = field(default=None, repr=False, compare=False)  # for the cross-file checks

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def infos(self) -> list[Diagnostic]:
        """What could not be checked (e.g. flow rules skipped around a malformed step)."""
        return [d for d in self.diagnostics if d.severity == "info"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def line(self, number: int) -> str:
        """Source line ``number`` (1-based) of this file, for showing diagnostics in context."""
        if self.doc is not None:
            return self.doc.line_text(number)
        if self.text is None:
            return ""
        lines = self.text.splitlines()
        return lines[number - 1] if 0 < number <= len(lines) else ""


def rules() -> dict[str, str]:
    """Every rule name the validator can report, with its one-line description."""
    from dsl.checks import RULES, all_checks
    from dsl.schema import RULES as SCHEMA_RULES
    from dsl.workspace import RULES as WORKSPACE_RULES

    all_checks()
    return {**PIPELINE_RULES, **SCHEMA_RULES, **RULES, **WORKSPACE_RULES}


def validate_text(
    text: str, file: str = "<string>", *, time_budget_ms: int = DEFAULT_TIME_BUDGET_MS
) -> Result:
    """Validate one workflow given as text; never raises for anything the text contains."""
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte order mark is not part of the YAML
    from dsl.testfile import is_test_file

    if is_test_file(file):
        return _test_result(file, text, time_budget_ms)
    try:
        doc = loads(text, file)
    except LoadError as exc:
        return Result(file, None, (_tidy_load_error(exc.diagnostic, text),), None, text)
    return validate_document(doc, time_budget_ms=time_budget_ms)


_YAML_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # what PyYAML counts as a line break
_READER_AT = re.compile(r'\s*in "<[^>]*>", position (\d+)\s*$')


def _tidy_load_error(diag: Diagnostic, text: str) -> Diagnostic:
    """One-line message, and a position inside the file.

    PyYAML's reader errors (control characters) carry their offset only in the message text, and an
    error at the very end of the input is marked one line past the last; editors and the caret line
    need a real place.
    """
    message = diag.message
    line, column = diag.position.line, diag.position.column
    reader = _READER_AT.search(message)
    if reader is not None:
        message = message[: reader.start()]
        offset = min(int(reader.group(1)), len(text))
        before = _YAML_BREAK.split(text[:offset])
        line, column = len(before), len(before[-1]) + 1
    message = " ".join(message.split())
    lines = _YAML_BREAK.split(text)
    if line > len(lines):
        line, column = len(lines), len(lines[-1]) + 1
    column = max(1, min(column, len(lines[line - 1]) + 1))
    return Diagnostic(diag.rule, diag.severity, message, Position(diag.position.file, max(line, 1), column))


def validate_document(doc: Document, *, time_budget_ms: int = DEFAULT_TIME_BUDGET_MS) -> Result:
    """Schema, compile and every check on an already loaded document."""
    from dsl.checks import CheckContext, all_checks
    from dsl.schema import Report, analyse

    found: list[Diagnostic] = list(doc.problems)
    try:
        report = analyse(doc)
    except Exception as exc:  # a schema crash must not take the whole run down
        report = Report([_internal(doc, "schema validation", exc)])
    found.extend(report.diagnostics)
    if report.foreign:  # not a workflow at all: one message says it all
        from dsl.workspace import links_of

        return Result(doc.file, doc, tuple(sort(found)), None, doc.text, links_of(doc))
    schema_ok = not any(d.is_error for d in found)
    unknown = report.unknown
    if report.renames:
        # read the file as if each misspelt key had been spelled as suggested: the checks then report
        # what is wrong beyond the typo, and nothing that only follows from it
        renamed = {(*path, old) for path, old, new in report.renames if doc.rename_key(path, old, new)}
        unknown = frozenset(unknown - renamed)

    graph: Graph | None = None
    uncertain: frozenset[str] = frozenset()
    if schema_ok:
        from dsl.compiler import compile_document

        try:
            graph = compile_document(doc, time_budget_ms=time_budget_ms)
        except Exception as exc:  # compiling a schema-valid file must not fail
            found.append(_internal(doc, "the compiler", exc))
    else:
        graph, uncertain, skipped = _salvaged_graph(doc)
        found.extend(skipped)

    ctx = CheckContext(
        doc,
        time_budget_ms=time_budget_ms,
        graph=graph,
        schema_ok=schema_ok,
        unknown=unknown,
        uncertain=uncertain,
    )
    for name, check in all_checks():
        try:
            found.extend(check(ctx))
        except Exception as exc:  # see the module docstring
            if schema_ok:
                found.append(_internal(doc, f"rule {name!r}", exc))
            else:
                found.append(
                    Diagnostic(
                        "checks-skipped",
                        "info",
                        f"rule {name!r} did not run: it cannot read this file until the errors above "
                        "are fixed",
                        Position(doc.file, 1, 1),
                    )
                )

    diagnostics = tuple(_group_repeats(sort(found)))
    ok = not any(d.is_error for d in diagnostics)
    if graph is not None and not graph.hash:
        graph = graph.with_hash()
    from dsl.workspace import links_of

    return Result(doc.file, doc, diagnostics, graph if ok else None, doc.text, links_of(doc, ctx.steps))


FLOW_RULES = "reference-never-before, reference-not-completed, unreachable-step, endless-loop"


def _salvaged_graph(doc: Document) -> tuple[Graph | None, frozenset[str], list[Diagnostic]]:
    """The graph of a schema-invalid file's well-formed parts (see :mod:`dsl.salvage`), the lists
    whose flow it only approximates, and an info diagnostic for each thing the flow rules skip."""
    import dataclasses

    from dsl.compiler import compile_document
    from dsl.salvage import salvage

    where = doc.key_at(("steps",)) if "steps" in doc.keys else Position(doc.file, 1, 1)
    try:
        saved = salvage(doc.value)
        if saved.value is None:
            reason = saved.reason
            graph = None
        else:
            graph = compile_document(dataclasses.replace(doc, value=saved.value))
    except Exception as exc:  # salvaging is best effort: never worse than not trying
        saved, graph, reason = None, None, f"the file could not be read ({type(exc).__name__})"
    if saved is None or graph is None:
        message = f"the flow rules ({FLOW_RULES}) did not run: {reason}; fix the errors above first"
        return None, frozenset(), [Diagnostic("checks-skipped", "info", message, where)]
    out = []
    for u in saved.uncertain:
        place = doc.key_at((*u.path, "id")) if (*u.path, "id") in doc.keys else doc.at(u.path)
        out.append(
            Diagnostic(
                "checks-skipped",
                "info",
                f"step {u.step!r} cannot be read ({u.what}), so the flow rules ({FLOW_RULES}) skip "
                f"{_describe_scope(u.scope)} until the errors there are fixed",
                place,
            )
        )
    return graph, frozenset(u.scope for u in saved.uncertain), out


def _describe_scope(scope: str) -> str:
    if scope == "":
        return "the top-level steps"
    if "/" in scope:
        owner, branch = scope.rsplit("/", 1)
        return f"branch {branch} of parallel {owner!r}"
    return f"the body of foreach {scope!r}"


# rules whose repeats are one mistake with one fix (a name missing where it is defined): reported
# once, at the first use, with the other places listed
GROUPED = frozenset(
    {"reference-unknown-step", "unknown-target", "undeclared-env", "input-reference", "undefined-var"}
)


def _group_repeats(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """``env.API is not declared`` at ten templates is one mistake: one diagnostic, naming the lines."""
    groups: dict[tuple[str, str, str], list[Diagnostic]] = {}
    for d in diagnostics:
        if d.rule in GROUPED:
            groups.setdefault((d.rule, d.severity, d.message), []).append(d)
    out = []
    for d in diagnostics:
        group = groups.get((d.rule, d.severity, d.message))
        if group is None:
            out.append(d)
        elif group[0] is d:
            lines = sorted({o.position.line for o in group[1:]} - {d.position.line})
            if lines:
                shown = ", ".join(str(n) for n in lines[:5]) + (" and more" if len(lines) > 5 else "")
                word = "line" if len(lines) == 1 else "lines"
                d = Diagnostic(d.rule, d.severity, f"{d.message} (also on {word} {shown})", d.position)
            out.append(d)
    return out


def _internal(doc: Document, where: str, exc: Exception) -> Diagnostic:
    return Diagnostic(
        "internal-error",
        "error",
        f"internal error in {where}: {type(exc).__name__}: {exc} "
        "(this is a bug in hopflow; please report it)",
        Position(doc.file, 1, 1),
    )


def validate_path(path: str | Path, *, time_budget_ms: int = DEFAULT_TIME_BUDGET_MS) -> Result:
    """Validate one file; unreadable, binary or non-UTF-8 files give a diagnostic, not an exception."""
    name = str(path)
    try:
        data = _read_regular(Path(path))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return Result(
            name, None, (Diagnostic("io", "error", f"cannot read file: {reason}", Position(name, 1, 1)),)
        )
    return validate_bytes(data, name, time_budget_ms=time_budget_ms)


def validate_bytes(data: bytes, name: str, *, time_budget_ms: int = DEFAULT_TIME_BUDGET_MS) -> Result:
    """Validate a file's bytes already read (``name`` for the diagnostics): the graph cache hashes
    and compiles the very same bytes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return Result(
            name,
            None,
            (
                Diagnostic(
                    "yaml-syntax",
                    "error",
                    f"file is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                    Position(name, line, column),
                ),
            ),
        )
    if text.startswith("\ufeff"):
        text = text[1:]  # a UTF-8 byte order mark is not part of the YAML
    return validate_text(text, name, time_budget_ms=time_budget_ms)


def _test_result(file: str, text: str, time_budget_ms: int) -> Result:
    """A test file (``NAME.test.yaml``) is checked against its own schema and its workflow."""
    from dsl.testfile import load_test_file

    found = load_test_file(file, text, time_budget_ms=time_budget_ms)
    return Result(file, found.doc, tuple(found.diagnostics), None, text)


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Every file ``paths`` names, each once, in the order given (folders expanded in place, test
    files included: ``hopflow validate`` checks them too)."""
    seen: set[Path] = set()
    out: list[Path] = []
    for given in paths:
        for file in workflow_files(given, tests=True):
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                out.append(file)
    return out


def validate_paths(
    paths: Iterable[str | Path], *, time_budget_ms: int = DEFAULT_TIME_BUDGET_MS
) -> list[Result]:
    """Validate files and folders (see :func:`workflow_files`)."""
    return list(iter_results(paths, time_budget_ms=time_budget_ms))


def iter_results(
    paths: Iterable[str | Path], *, time_budget_ms: int = DEFAULT_TIME_BUDGET_MS, jobs: int = 1
) -> Iterator[Result]:
    """Results for every file ``paths`` names, in order.

    With ``jobs > 1`` files are validated in that many worker processes (forked, so they share the
    already imported validator); their results are *reports*: diagnostics and source text, but no
    ``doc`` and no ``graph``, which are not worth sending between processes.
    """
    files = expand(paths)
    jobs = min(jobs, len(files))
    if jobs <= 1 or not _can_fork():
        for file in files:
            yield validate_path(file, time_budget_ms=time_budget_ms)
        return

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    _warm_up()
    context = multiprocessing.get_context("fork")
    chunk = max(1, min(16, len(files) // (jobs * 4)))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        yield from pool.map(partial(_report, time_budget_ms=time_budget_ms), files, chunksize=chunk)


def auto_jobs(files: int) -> int:
    """Worker processes worth starting for ``files`` files (1 below a few dozen: forking costs more)."""
    if files < 32:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _warm_up() -> None:
    """Import and build everything once in the parent, so forked workers inherit it."""
    from dsl.checks import all_checks
    from dsl.compiler import compile_document  # noqa: F401
    from dsl.schema import fast_check, validator

    all_checks()
    fast_check()
    validator()


def _report(file: Path, *, time_budget_ms: int) -> Result:
    result = validate_path(file, time_budget_ms=time_budget_ms)
    text = result.text if result.diagnostics else None
    return Result(result.file, None, result.diagnostics, None, text, result.links)


def cross_file(results: Iterable[Result]) -> list[Result]:
    """The folder-level problems (see :mod:`dsl.workspace`) as extra results, one per file concerned;
    the source text comes along so they render with their source line."""
    from dsl.workspace import check

    results = list(results)
    found = check([(r.file, r.links) for r in results])
    by_file: dict[str, list[Diagnostic]] = {}
    for d in found:
        by_file.setdefault(d.position.file, []).append(d)
    out = []
    for r in results:
        if r.file in by_file:
            out.append(Result(r.file, r.doc, tuple(sort(by_file.pop(r.file))), None, r.text or _text_of(r)))
    return out


def _text_of(result: Result) -> str | None:
    if result.doc is not None:
        return result.doc.text
    try:
        return Path(result.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
