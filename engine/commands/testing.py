"""``hopflow test``: run the cases of ``NAME.test.yaml`` files (docs/testing.md).

Exit 0 when every case passed (and coverage reached ``--min-coverage``), 1 otherwise, 2 on usage
errors. The engine (Redis, the interpreter) is imported only once the arguments are known.
"""

from __future__ import annotations

import os
import sys
import time

import click

from engine.commands.validate import _guard, _usage_exit


@click.command("test", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, metavar="[PATH...]")
@click.option("-k", "keyword", metavar="EXPR", help="Run only cases whose FILE::name matches (and/or/not).")
@click.option(
    "--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("text", "junit")),
    default="text",
    show_default=True,
    help="text: pytest-like report; junit: JUnit XML on stdout (the text report goes to stderr).",
)
@click.option(
    "--coverage/--no-coverage", default=True, show_default=True, help="Print the path coverage table."
)
@click.option(
    "--annotate", is_flag=True, help="Print each workflow's YAML with the paths that never ran marked."
)
@click.option(
    "--min-coverage",
    type=click.FloatRange(0, 100),
    default=None,
    metavar="N",
    help="Fail (exit 1) when the total path coverage is below N percent.",
)
@click.option("--verbose", "-v", is_flag=True, help="One line per case.")
@_guard
def test(
    paths: tuple[str, ...],
    keyword: str | None,
    jobs: int,
    fmt: str,
    coverage: bool,
    annotate: bool,
    min_coverage: float | None,
    verbose: bool,
) -> None:
    """Run workflow test cases in process: real interpreter, embedded Redis, mocked calls, virtual time.

    PATH: test files, workflow files (their NAME.test.yaml) or folders; default: ./workflows if it
    exists, else the current folder.
    """
    if not paths:
        paths = ("workflows",) if os.path.isdir("workflows") else (".",)

    from engine.testing import coverage as cov
    from engine.testing import report
    from engine.testing.runner import UsageError, run

    def say(line: str) -> None:
        click.echo(line, err=fmt == "junit")

    progress = report.Progress(say, verbose)
    started = time.perf_counter()
    try:
        session = run(paths, keyword=keyword, jobs=jobs, on_result=progress)
    except UsageError as exc:
        _usage_exit("test", str(exc))
    progress.flush()
    elapsed = time.perf_counter() - started
    say(report.text(session, elapsed))
    total = cov.total(session.coverage)
    if coverage and session.coverage:
        say("")
        say("path coverage")
        say(cov.table(session.coverage))
    if annotate:
        for item in session.coverage.values():
            if item.missed():
                say("")
                say(cov.listing(item))
    if fmt == "junit":
        click.echo(report.junit(session, elapsed), nl=False)
    failed = not session.ok
    if min_coverage is not None and total < min_coverage:
        say(f"hopflow test: path coverage {total:.1f}% is below --min-coverage {min_coverage:g}%")
        failed = True
    sys.exit(1 if failed else 0)
