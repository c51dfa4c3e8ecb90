"""pytest collects ``*.test.yaml`` files: one item per case, run exactly like ``hopflow test`` runs it.

Registered as the ``hopflow`` plugin (entry point ``pytest11``), so installing hopflow is enough;
``-p no:hopflow`` turns it off. Each pytest process (each xdist worker) starts one private embedded
Redis on first use and stops it at the end of the session; every case flushes its database first.
A failed case shows the same report as ``hopflow test``: each failed expectation with its diff.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsl.testfile import is_test_file

_SERVER_KEY = pytest.StashKey[Any]()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if is_test_file(file_path):
        return WorkflowTestFile.from_parent(parent, path=file_path)
    return None


class WorkflowTestFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from dsl.testfile import load_test_file
        from engine.testing.spec import SpecError, cases_of

        found = load_test_file(self.path)
        try:
            cases = cases_of(found)
        except SpecError:
            yield BrokenTestFile.from_parent(self, name="(test file)", problems=found.diagnostics)
            return
        for case in cases:
            yield WorkflowCase.from_parent(self, name=case.name, case=case)


class CaseFailed(Exception):
    """A case whose expectations failed; its text is the report."""


class WorkflowCase(pytest.Item):
    def __init__(self, *, case: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        from engine.testing.report import failure_text
        from engine.testing.runner import run_one

        client = _server(self.config).client(0)
        result = run_one(self.case, client, self.case.position)
        if not result.passed:
            raise CaseFailed(failure_text(result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, CaseFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, self.case.line - 1, f"{self.path.name}::{self.case.name}"


class BrokenTestFile(pytest.Item):
    """A test file that cannot run: one failing item listing its problems (file:line:col)."""

    def __init__(self, *, problems: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.problems = problems

    def runtest(self) -> None:
        from engine.testing.report import problems_text

        raise CaseFailed(problems_text([d for d in self.problems if d.is_error]))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, 0, f"{self.path.name}: test file with errors"


def _server(config: pytest.Config) -> Any:
    server = config.stash.get(_SERVER_KEY, None)
    if server is None:
        from engine.testing.server import TestRedis

        server = TestRedis.start()
        config.stash[_SERVER_KEY] = server
        config.add_cleanup(server.close)
    return server
