"""Find test files, run their cases (in this process, or in ``jobs`` worker processes), and collect
results and coverage.

Isolation: every case runs in a Redis database of its own worker, flushed before the case starts,
with fresh execution ids and a fresh clock and mocks; nothing a case does can be seen by another.
Workers are *spawned* (not forked) and attach to the one private server by its socket, each with its
own database number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsl.diagnostics import Diagnostic
from dsl.testfile import SUFFIXES, TestFile, is_test_file, load_test_file
from engine.testing.coverage import WorkflowCoverage, measure
from engine.testing.expect import Mismatch
from engine.testing.spec import Case, SpecError, cases_of


@dataclass
class CaseResult:
    id: str
    file: str
    name: str
    line: int
    workflow: str
    outcome: str  # passed | failed | error
    mismatches: list[Mismatch] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0
    status: str | None = None
    runs: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)  # (workflow, history)

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


@dataclass
class Session:
    results: list[CaseResult]
    problems: list[Diagnostic]  # test files that cannot run
    files: list[TestFile]
    coverage: dict[str, WorkflowCoverage]
    deselected: int = 0

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.problems


class UsageError(Exception):
    """A command-line mistake (no test files, a bad -k): one line."""


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """Test files named by ``paths``: a test file as given; a workflow file → its ``NAME.test.yaml``;
    a folder → every test file below it (hidden folders skipped)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise UsageError(f"no such file or directory: {given}")
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if is_test_file(p)
                and p.is_file()
                and not any(s.startswith(".") for s in p.relative_to(path).parts)
            )
        elif is_test_file(path):
            found = [path]
        else:
            stem = path.name.rsplit(".", 1)[0]
            found = [c for c in (path.parent / f"{stem}{s}" for s in SUFFIXES) if c.exists()]
            if not found:
                raise UsageError(f"{given} is not a test file and has no {stem}.test.yaml beside it")
        for f in found:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                out.append(f)
    return out


def load(files: Sequence[Path]) -> tuple[list[TestFile], list[Case], list[Diagnostic]]:
    loaded, cases, problems = [], [], []
    for file in files:
        found = load_test_file(file)
        loaded.append(found)
        try:
            cases.extend(cases_of(found))
        except SpecError:
            problems.extend(d for d in found.diagnostics if d.is_error)
    return loaded, cases, problems


# ------------------------------------------------------------------------------------- one case


def run_one(case: Case, client: Any, index: int) -> CaseResult:
    """Run ``case`` in the (flushed) database of ``client`` and judge it."""
    from engine.state.store import Store
    from engine.testing.expect import check
    from engine.testing.harness import CaseError, run_case

    client.flushdb()
    started = time.perf_counter()
    result = CaseResult(case.id, case.file, case.name, case.line, case.workflow, "passed")
    try:
        observed = run_case(case, Store(client), f"case-{index}", _real_actions(case))
    except CaseError as exc:
        result.outcome, result.error = "error", str(exc)
    except Exception as exc:  # a bug in hopflow or in a real action: report it, keep going
        import traceback

        result.outcome = "error"
        result.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
    else:
        result.status = observed.record.get("status")
        result.mismatches = check(case, observed)
        result.runs = [(observed.workflows[e], h) for e, h in observed.histories.items()]
        if result.mismatches:
            result.outcome = "failed"
    result.duration_s = time.perf_counter() - started
    return result


def _real_actions(case: Case) -> Any:
    if not case.allow_real or not case.actions:
        return None
    from engine.actions import REGISTRY, load_modules

    load_modules(list(case.actions))
    return REGISTRY


# ---------------------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _init_worker(socket: str, dbs: Any) -> None:
    from engine.testing.server import TestRedis

    _WORKER["client"] = TestRedis.attach(socket).client(dbs.get())
    _WORKER["files"] = {}


def _run_in_worker(job: tuple[str, int, int]) -> CaseResult:
    file, position, index = job
    cache: dict[str, list[Case]] = _WORKER["files"]
    if file not in cache:
        cache[file] = cases_of(load_test_file(file))
    return run_one(cache[file][position], _WORKER["client"], index)


# ------------------------------------------------------------------------------------------ session


def run(
    paths: Iterable[str | Path],
    *,
    keyword: str | None = None,
    jobs: int = 1,
    on_result: Callable[[CaseResult], None] | None = None,
) -> Session:
    """Discover, load, select and run; coverage of what ran."""
    from engine.testing.select import SelectError, matcher

    files = discover(paths)
    if not files:
        raise UsageError("no test files (NAME.test.yaml) in " + ", ".join(str(p) for p in paths))
    loaded, cases, problems = load(files)
    try:
        wanted = matcher(keyword or "")
    except SelectError as exc:
        raise UsageError(str(exc)) from None
    selected = [(i, c) for i, c in enumerate(cases) if wanted(c.id)]
    results = _execute(selected, jobs, on_result)
    graphs: dict[str, Any] = {}
    docs: dict[str, Any] = {}
    tested: list[str] = []
    for found in loaded:
        for name, graph in found.graphs.items():
            graphs.setdefault(name, graph)
        for name, doc in found.workflow_docs.items():
            docs.setdefault(name, doc)
        if found.graph is not None and any(c.file == found.file for _, c in selected):
            tested.append(found.graph.name)
    coverage = measure(graphs, docs, (run for r in results for run in r.runs), tested)
    return Session(results, problems, loaded, coverage, len(cases) - len(selected))


def _execute(
    selected: list[tuple[int, Case]], jobs: int, on_result: Callable[[CaseResult], None] | None
) -> list[CaseResult]:
    from engine.testing.server import TestRedis

    server = TestRedis.start()
    try:
        if jobs <= 1 or len(selected) <= 1:
            client = server.client(0)
            out = []
            for index, case in selected:
                result = run_one(case, client, index)
                out.append(result)
                if on_result is not None:
                    on_result(result)
            return out
        return _parallel(server.socket, selected, min(jobs, len(selected)), on_result)
    finally:
        server.close()


def _parallel(
    socket: str, selected: list[tuple[int, Case]], jobs: int, on_result: Callable[[CaseResult], None] | None
) -> list[CaseResult]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    dbs = context.Manager().Queue()
    for db in range(jobs):
        dbs.put(db)
    jobs_list = [(case.file, case.position, index) for index, case in selected]
    out = []
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_init_worker, initargs=(socket, dbs)
    ) as pool:
        for result in pool.map(_run_in_worker, jobs_list):
            out.append(result)
            if on_result is not None:
                on_result(result)
    return out
