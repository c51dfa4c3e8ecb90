"""``hopflow validate``, ``compile`` and ``graph``: the static side of the CLI.

Imports nothing from ``engine`` beyond this module (and only ``dsl`` inside the commands), so these
commands start fast: no Redis, Starlette or httpx. User mistakes end with one readable line and exit 2
(usage) or positioned diagnostics and exit 1; never a traceback.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from dsl.diagnostics import Diagnostic
    from dsl.validate import Result

ENV_BUDGET = "HOPFLOW_TIME_BUDGET"
DEFAULT_BUDGET = "7.5"
FORMATS = ("text", "json", "github", "sarif")


def parse_budget(text: str) -> int:
    """``7.5`` (seconds) or a duration (``10s``, ``2500ms``) → milliseconds; ValueError when unusable."""
    from dsl.durations import DurationError, parse_ms

    raw = text.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            ms = parse_ms(raw)
        except DurationError:
            raise ValueError(f"{text!r} is not a time budget (give seconds such as 7.5, or 10s)") from None
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"{text!r} is not a time budget (give seconds such as 7.5, or 10s)")
        ms = round(seconds * 1000)
    if ms <= 0:
        raise ValueError(f"{text!r}: the time budget must be more than 0")
    return ms


class _Budget(click.ParamType):
    name = "SECONDS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_budget(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _usage_exit(command: str, message: str) -> NoReturn:
    """A user mistake on the command line: one readable line on stderr, exit 2."""
    click.echo(f"hopflow {command}: {message}", err=True)
    sys.exit(2)


def _resolve_budget(command: str, given: int | None) -> int:
    if given is not None:
        return given
    raw = os.environ.get(ENV_BUDGET)
    if raw is None or not raw.strip():
        return parse_budget(DEFAULT_BUDGET)
    try:
        return parse_budget(raw)
    except ValueError as exc:
        _usage_exit(command, f"{ENV_BUDGET}: {exc}")


def _budget_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--time-budget",
        "time_budget",
        type=_Budget(),
        default=None,
        help=f"Time budget of one webhook call, in seconds (7.5) or as a duration (10s); default "
        f"${ENV_BUDGET}, else {DEFAULT_BUDGET}.",
    )(fn)


def _check_exists(command: str, paths: Sequence[str]) -> None:
    for path in paths:
        if not os.path.exists(path):
            _usage_exit(command, f"no such file or directory: {path}")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary(results: Sequence[Result]) -> str:
    """``2 errors, 1 warning in 7 files`` (or ``no problems in 7 files``)."""
    errors = sum(len(r.errors) for r in results)
    warnings = sum(len(r.warnings) for r in results)
    files = _plural(len({r.file for r in results}), "file")
    skipped = (
        " (some rules skipped a malformed part: see the info lines)" if any(r.infos for r in results) else ""
    )
    if not errors and not warnings:
        return f"no problems in {files}{skipped}"
    return f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')} in {files}{skipped}"


def _text(results: Sequence[Result]) -> str:
    from dsl.diagnostics import render_text

    by_file = {r.file: r for r in results}
    diagnostics = [d for r in results for d in r.diagnostics]

    def line_of(file: str, line: int) -> str:
        result = by_file.get(file)
        return result.line(line) if result is not None else ""

    return render_text(diagnostics, line_of)


def _emit(text: str, err: bool = False) -> None:
    if text:
        click.echo(text, err=err)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A closed pipe (``hopflow validate . | head``) or Ctrl-C ends quietly, not with a traceback."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (engine.lifecycle)
            from engine.lifecycle import exit_code

            click.echo("hopflow: interrupted", err=True)
            sys.exit(exit_code(exc))

    return run


@click.command("validate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text: FILE:LINE:COL lines with the source and a caret; json; github (Actions annotations); sarif.",
)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Worker processes; 0 = one per CPU (up to 8) when there are 32 files or more, else 1.",
)
@_budget_option
@_guard
def validate(paths: tuple[str, ...], fmt: str, strict: bool, jobs: int, time_budget: int | None) -> None:
    """Check workflow files, and every *.yaml/*.yml file in folders, without running anything.

    Exit 0 when clean (warnings allowed unless --strict), 1 when there are errors, 2 on usage errors.
    """
    _check_exists("validate", paths)
    budget = _resolve_budget("validate", time_budget)

    from dsl.validate import auto_jobs, expand, iter_results

    files = expand(paths)
    if not files:
        where = ", ".join(paths)
        _usage_exit("validate", f"no .yaml or .yml files in {where}")

    results: list[Result] = []
    workers = jobs if jobs > 0 else auto_jobs(len(files))
    for result in iter_results(files, time_budget_ms=budget, jobs=workers):
        results.append(result)
        if fmt == "text" and result.diagnostics:
            _emit(_text([result]))
        elif fmt == "github" and result.diagnostics:
            from dsl.diagnostics import render_github

            _emit(render_github(result.diagnostics))

    from dsl.validate import cross_file

    extra = cross_file(results)  # folder-level problems, known only once every file is read
    for result in extra:
        if fmt == "text":
            _emit(_text([result]))
        elif fmt == "github":
            from dsl.diagnostics import render_github

            _emit(render_github(result.diagnostics))
    results.extend(extra)
    diagnostics: list[Diagnostic] = [d for r in results for d in r.diagnostics]
    if fmt == "json":
        from dsl.diagnostics import render_json

        _emit(render_json(diagnostics))
    elif fmt == "sarif":
        from dsl.diagnostics import render_sarif
        from dsl.validate import rules

        _emit(render_sarif(diagnostics, rules()))
    click.echo(summary(results), err=True)
    failed = any(d.is_error for d in diagnostics) or (
        strict and any(d.severity == "warning" for d in diagnostics)
    )
    sys.exit(1 if failed else 0)


def _compiled(command: str, file: str, time_budget: int | None) -> Any:
    """Validate one file and return its graph, or print its diagnostics on stderr and exit 1."""
    _check_exists(command, [file])
    if os.path.isdir(file):
        _usage_exit(command, f"{file} is a folder; give one workflow file")
    budget = _resolve_budget(command, time_budget)

    from dsl.validate import validate_path

    result = validate_path(file, time_budget_ms=budget)
    if result.diagnostics:
        _emit(_text([result]), err=True)
    if result.graph is None:
        click.echo(summary([result]), err=True)
        sys.exit(1)
    return result.graph


@click.command("compile", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, metavar="FILE | --cache [PATH]...")
@click.option(
    "--cache",
    "fill_cache",
    is_flag=True,
    help="Compile every workflow in PATHs (default: $HOPFLOW_WORKFLOWS, else ./workflows) into the "
    "graph cache instead of printing one: a build step, so a server's cold start reads compiled "
    "graphs instead of parsing YAML (docs/deploy.md).",
)
@click.option(
    "--cache-dir",
    default=None,
    metavar="DIR",
    help="The graph cache's folder (default: $HOPFLOW_CACHE_DIR, else .hopflow/cache).",
)
@_budget_option
@_guard
def compile_(
    paths: tuple[str, ...], fill_cache: bool, cache_dir: str | None, time_budget: int | None
) -> None:
    """Print the compiled graph of FILE as JSON, with its content hash.

    The hash pins running executions to this exact graph. Exit 1 (diagnostics on stderr) when FILE has
    errors. With --cache, fill the graph cache for a deployment instead (exit 1 when a file has errors).
    """
    if fill_cache:
        _fill_cache(paths, cache_dir, time_budget)
        return
    if cache_dir is not None:
        _usage_exit("compile", "--cache-dir goes with --cache")
    if len(paths) != 1:
        _usage_exit("compile", "give one workflow file (or --cache to fill the graph cache)")
    graph = _compiled("compile", paths[0], time_budget)
    body = json.loads(graph.canonical())  # sorted keys, exactly what is hashed
    click.echo(json.dumps({"hash": graph.hash, "graph": body}, indent=2, ensure_ascii=False))


def _fill_cache(paths: tuple[str, ...], cache_dir: str | None, time_budget: int | None) -> None:
    """``hopflow compile --cache``: every workflow file compiled once into the graph cache, keyed the
    way a server built with the same HOPFLOW_TIME_BUDGET looks it up (dsl/cache.py)."""
    from dsl.cache import ENV, GraphCache
    from dsl.diagnostics import render_text
    from dsl.files import read_regular, workflow_files
    from engine.catalog import compile_file

    given = paths or (os.environ.get("HOPFLOW_WORKFLOWS") or "workflows",)
    _check_exists("compile", given)
    budget = _resolve_budget("compile", time_budget)
    cache = GraphCache.from_setting(cache_dir if cache_dir is not None else os.environ.get(ENV))
    if cache is None:
        _usage_exit("compile", f"the graph cache is off ({ENV}={os.environ.get(ENV, '')}); nothing to fill")
    files = [f for p in given for f in workflow_files(p)]
    if not files:
        _usage_exit("compile", f"no .yaml or .yml files in {', '.join(given)}")
    from dsl.templates import compile_all, set_code_cache

    set_code_cache(cache)  # every template of every graph compiled into the cache too
    written = present = failed = templates = 0
    for file in files:
        try:
            key = cache.key(read_regular(file), budget)
        except OSError:
            key = None
        hit = key is not None and cache.get(key) is not None
        graph, errors = compile_file(file, time_budget_ms=budget, cache=cache)
        if graph is None:
            failed += 1
            _emit(render_text(errors, lambda _file, _line: ""), err=True)
            continue
        templates += compile_all(graph.to_dict())
        if hit:
            present += 1
        elif key is not None and cache.path(key).is_file():
            written += 1
        else:
            click.echo(f"hopflow compile: cannot write the graph cache in {cache.directory}", err=True)
            sys.exit(1)
    click.echo(
        f"graph cache {cache.directory}: {written} written, {present} already there, "
        f"{templates} template(s) compiled"
        + (f", {failed} file(s) with errors (not cached)" if failed else ""),
        err=True,
    )
    sys.exit(1 if failed else 0)


@click.command("graph", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", metavar="FILE")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("mermaid", "dot")),
    default="mermaid",
    show_default=True,
    help="mermaid (paste into a ```mermaid block in Markdown) or dot (Graphviz: dot -Tsvg).",
)
@_budget_option
@_guard
def graph(file: str, fmt: str, time_budget: int | None) -> None:
    """Draw the control flow of FILE: steps, switches, catches, branches and compensations."""
    compiled = _compiled("graph", file, time_budget)
    from dsl.render import to_dot, to_mermaid

    click.echo(to_mermaid(compiled) if fmt == "mermaid" else to_dot(compiled), nl=False)
