"""How a test session reads: pytest-like text (progress, failures with diffs, a summary line), or
JUnit XML for CI."""

from __future__ import annotations

from collections.abc import Callable

from dsl.diagnostics import Diagnostic
from engine.testing.runner import CaseResult, Session

WIDTH = 80
MARKS = {"passed": ".", "failed": "F", "error": "E"}


class Progress:
    """``FILE .F.`` lines as results arrive (one line per test file, like pytest)."""

    def __init__(self, write: Callable[[str], None], verbose: bool = False) -> None:
        self.write = write
        self.verbose = verbose
        self.file: str | None = None
        self.line = ""

    def __call__(self, result: CaseResult) -> None:
        if self.verbose:
            self.write(f"{result.id} {result.outcome.upper()} ({result.duration_s * 1000:.0f} ms)")
            return
        if result.file != self.file:
            self.flush()
            self.file = result.file
            self.line = f"{result.file} "
        self.line += MARKS[result.outcome]

    def flush(self) -> None:
        if self.line:
            self.write(self.line)
            self.line = ""


def _rule(title: str, char: str = "=") -> str:
    title = f" {title} "
    left = max(3, (WIDTH - len(title)) // 2)
    return f"{char * left}{title}{char * max(3, WIDTH - left - len(title))}"


def failure_text(result: CaseResult) -> str:
    """One failed case: each failed expectation, its line, and its diff."""
    lines = []
    if result.error:
        lines.append(f"{result.file}:{result.line}: error: {result.error.rstrip()}")
    for m in result.mismatches:
        where = f"{result.file}:{m.line}: " if m.line else f"{result.file}:{result.line}: "
        lines.append(f"{where}{m.message}")
        lines += [f"    {d}" for d in m.diff]
    return "\n".join(lines)


def problems_text(problems: list[Diagnostic]) -> str:
    return "\n".join(
        f"{d.position.file}:{d.position.line}:{d.position.column}: {d.severity}: {d.message} [{d.rule}]"
        for d in problems
    )


def summary(session: Session, elapsed_s: float) -> str:
    counts = []
    failed = sum(1 for r in session.results if r.outcome == "failed")
    errors = sum(1 for r in session.results if r.outcome == "error")
    passed = sum(1 for r in session.results if r.passed)
    if failed:
        counts.append(f"{failed} failed")
    if errors:
        counts.append(f"{errors} error{'s' if errors != 1 else ''}")
    counts.append(f"{passed} passed")
    if session.deselected:
        counts.append(f"{session.deselected} deselected")
    if session.problems:
        files = len({d.position.file for d in session.problems})
        counts.append(f"{files} test file{'s' if files != 1 else ''} with errors")
    return _rule(f"{', '.join(counts)} in {elapsed_s:.2f}s")


def text(session: Session, elapsed_s: float) -> str:
    out = []
    if session.problems:
        out += [_rule("TEST FILES WITH ERRORS"), problems_text(session.problems)]
    failed = session.failed
    if failed:
        out.append(_rule("FAILURES"))
        for r in failed:
            out.append(_rule(r.id, "_"))
            out.append(failure_text(r))
    out.append(summary(session, elapsed_s))
    return "\n".join(out)


def junit(session: Session, elapsed_s: float) -> str:
    """JUnit XML: one testsuite per test file, one testcase per case; failures carry the diffs."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name="hopflow test", time=f"{elapsed_s:.3f}")
    by_file: dict[str, list[CaseResult]] = {}
    for r in session.results:
        by_file.setdefault(r.file, []).append(r)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for file, results in by_file.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=file,
            tests=str(len(results)),
            failures=str(sum(r.outcome == "failed" for r in results)),
            errors=str(sum(r.outcome == "error" for r in results)),
            time=f"{sum(r.duration_s for r in results):.3f}",
        )
        for r in results:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=file,
                name=r.name,
                file=file,
                line=str(r.line),
                time=f"{r.duration_s:.3f}",
            )
            if r.outcome == "failed":
                first = r.mismatches[0].message if r.mismatches else "failed"
                ET.SubElement(case, "failure", message=first, type="expectation").text = failure_text(r)
            elif r.outcome == "error":
                ET.SubElement(
                    case, "error", message=(r.error or "").splitlines()[0], type="error"
                ).text = r.error
        totals["tests"] += len(results)
        totals["failures"] += sum(r.outcome == "failed" for r in results)
        totals["errors"] += sum(r.outcome == "error" for r in results)
    for d in session.problems:
        suite = ET.SubElement(root, "testsuite", name=d.position.file, tests="1", failures="0", errors="1")
        case = ET.SubElement(suite, "testcase", classname=d.position.file, name="load", file=d.position.file)
        ET.SubElement(case, "error", message=d.message, type=d.rule).text = problems_text([d])
        totals["tests"] += 1
        totals["errors"] += 1
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
