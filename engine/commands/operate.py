"""``hopflow start / status / history / cancel / notify``: the HTTP API's operations from the shell.

Each command talks to a :class:`Backend` chosen by :func:`backend_from_options`:
:class:`LocalBackend` — the same store that ``hopflow run`` uses (``REDIS_URL``, else the embedded
Redis under ``.hopflow/``) — or, with ``--url`` / ``HOPFLOW_URL``, :class:`RemoteBackend`, which
calls a server's HTTP API (``hopflow serve`` or any deployment) with ``--api-key`` /
``HOPFLOW_API_KEY``. The commands print the same things either way.

Exit codes: 0 done; 1 the operation failed (unknown execution, not cancellable, store or server
unreachable, API key refused); 2 usage errors (bad JSON, invalid input, unknown workflow, an option
that only works on the local store given with ``--url``).
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import click

from engine.commands.run import (
    CONTEXT,
    FINAL,
    JsonStdout,
    actions_option,
    build_catalog,
    core,
    default_workflows_dir,
    drive,
    fail_exit,
    input_errors,
    live_option,
    local_runtime,
    parse_json_option,
    preflight,
    print_record,
    progress_target,
    usage_exit,
)
from engine.commands.validate import _guard
from engine.triggers import EVENT_ID


class BackendError(Exception):
    """An operation failed; ``code`` is the exit code (1: operation failed, 2: the user's input)."""

    def __init__(self, message: str, code: int = 1, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.lines = lines or [message]


class Backend(Protocol):
    def start(self, workflow: str, input: Any, execution_id: str | None) -> str: ...
    def record(self, execution_id: str) -> dict[str, Any]: ...
    def history(self, execution_id: str) -> list[dict[str, Any]]: ...
    def cancel(self, execution_id: str, compensate: bool = True) -> None: ...
    def notify(self, event: str, key: str, data: Any, event_id: str | None = None) -> dict[str, Any]: ...
    def list(self, params: dict[str, list[str]]) -> dict[str, Any]: ...


class LocalBackend:
    """The local store, through a :class:`~engine.runtime.Runtime` built on the embedded default."""

    def __init__(self, command: str, workflows: str | None = None, actions: tuple[str, ...] = ()) -> None:
        self.command = command
        self.workflows = workflows
        self.actions = actions
        self._runtime: Any = None
        self._dispatcher: Any = None
        self.workflow_file: str | None = None
        # `start --wait` runs the steps here: check env and actions first (engine.preflight); a
        # plain `start` does not — a worker with its own environment runs them
        self.check: list[str] | None = None

    def runtime(self) -> Any:
        if self._runtime is None:
            from engine.catalog import Catalog

            catalog = Catalog()
            if self.workflow_file is not None or self.workflows is not None:
                catalog, _ = build_catalog(self.command, self.workflow_file, self.workflows, 7500)
            if self.check is not None:
                preflight(self.command, catalog, self.actions, self.check)
            self._runtime, self._dispatcher = local_runtime(self.command, catalog, self.actions)
        return self._runtime

    @property
    def dispatcher(self) -> Any:
        self.runtime()
        return self._dispatcher

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        from engine.errors import (
            InputInvalid,
            InvalidExecutionId,
            RuntimeProblem,
            UnknownExecution,
            UnknownWorkflow,
        )

        try:
            return fn(*args)
        except InputInvalid as exc:
            raise BackendError(exc.message, 2, input_errors(exc.errors)) from None
        except (UnknownWorkflow, InvalidExecutionId) as exc:
            raise BackendError(exc.message, 2) from None
        except UnknownExecution as exc:
            raise BackendError(exc.message, 1) from None
        except RuntimeProblem as exc:
            raise BackendError(exc.message, 1) from None

    def _known(self, execution_id: str) -> None:
        from engine.errors import InvalidExecutionId
        from engine.state.store import check_execution_id

        try:
            check_execution_id(execution_id)
        except InvalidExecutionId as exc:
            raise BackendError(exc.message, 2) from None
        if not self._call(self.runtime().store.exists, execution_id):
            raise BackendError(f"unknown execution {execution_id!r}", 1)

    def start(self, workflow: str, input: Any, execution_id: str | None) -> str:
        if workflow.endswith((".yaml", ".yml")) or Path(workflow).is_file():
            self.workflow_file = workflow
            self.workflows = self.workflows or str(Path(workflow).parent)
            catalog_name = self._name_of_file()
        else:
            self.workflows = self.workflows or default_workflows_dir()
            catalog_name = workflow
            if self.check is not None:
                self.check = [workflow]
        return str(self._call(self.runtime().start, catalog_name, input, execution_id))

    def _name_of_file(self) -> str:
        from engine.catalog import Catalog

        assert self.workflow_file is not None
        catalog, name = build_catalog(self.command, self.workflow_file, self.workflows, 7500)
        assert isinstance(catalog, Catalog) and name is not None
        if self.check is not None:
            preflight(self.command, catalog, self.actions, [name])
        self._runtime, self._dispatcher = local_runtime(self.command, catalog, self.actions)
        return name

    def record(self, execution_id: str) -> dict[str, Any]:
        self._known(execution_id)
        return dict(self._call(self.runtime().record, execution_id))

    def history(self, execution_id: str) -> list[dict[str, Any]]:
        self._known(execution_id)
        return list(self._call(self.runtime().history, execution_id))

    def cancel(self, execution_id: str, compensate: bool = True) -> None:
        self._known(execution_id)
        status = self._call(self.runtime().store.status, execution_id)
        if status not in ("running", "queued"):  # the same answer as the HTTP API's 409
            raise BackendError(
                f"execution {execution_id!r} is {status}: "
                "only a running or queued execution can be cancelled",
                1,
            )
        self._call(lambda: self.runtime().cancel(execution_id, compensate=compensate))

    def notify(self, event: str, key: str, data: Any, event_id: str | None = None) -> dict[str, Any]:
        self.workflows = self.workflows or default_workflows_dir()  # the workflows it may trigger
        runtime = self.runtime()
        done = self._call(lambda: runtime.notify_event(event, key, data, event_id=event_id))
        answer = {"id": done.id, "resumed": done.resumed, "started": done.started}
        return answer | ({"failed": done.failed} if done.failed else {})

    def list(self, params: dict[str, list[str]]) -> dict[str, Any]:
        from engine.state import index

        filters, cursor, limit = _filters(params)
        page = self._call(index.list_executions, self.runtime().store, filters, cursor, limit)
        return {"executions": page.executions, "next_cursor": page.next_cursor}


def _filters(params: dict[str, list[str]]) -> Any:
    """The listing's filters, or a usage error (2) naming the bad one."""
    from engine.state import index

    try:
        found = index.parse_filters(params)
        if found[1]:
            index.decode_cursor(found[1])
    except index.FilterError as exc:
        message = exc.message
        if exc.param and message.startswith(exc.param):  # name the option as the user typed it
            message = "--" + exc.param.replace("_", "-") + message[len(exc.param) :]
        raise BackendError(message, 2) from None
    return found


UNREACHABLE_HINT = "is `hopflow serve` running there? check --url / HOPFLOW_URL"


class RemoteBackend:
    """A hopflow server's HTTP API (``hopflow serve``, or a deployment) through :class:`HopflowClient`.

    Every :class:`~engine.client.ClientError` becomes a :class:`BackendError` whose lines read like
    the local backend's (invalid input: one ``input/PATH: message`` line per schema error), so the
    CLI prints the same thing whichever store it talks to. Nothing here touches the local store, and
    the API key appears in no message.
    """

    def __init__(self, url: str, api_key: str | None = None, *, timeout_s: float = 30.0) -> None:
        from engine.client import ClientError, HopflowClient

        try:
            self.client = HopflowClient(url, api_key, timeout_s=timeout_s)
        except ClientError as exc:
            raise self._error(exc) from None
        self.url = self.client.shown_url

    def _error(self, exc: Any) -> BackendError:
        kind, status = exc.kind, exc.status
        if kind in ("unreachable", "timeout"):
            return BackendError(f"{exc.message}: {UNREACHABLE_HINT}", 1)
        if kind == "invalid-input":
            errors = [e for e in exc.problem.get("errors") or [] if isinstance(e, dict)]
            return BackendError(exc.message, 2, input_errors(errors) or [exc.message])
        if kind == "not-found" or (status is not None and not exc.problem and status in (404, 405)):
            # a route the server does not have: --url is not a hopflow server's base URL
            return BackendError(
                f"{exc.message} (is {self.url} the base URL of a hopflow server? check --url)", 1
            )
        return BackendError(exc.message, exc.code, list(exc.lines))

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from engine.client import ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            raise self._error(exc) from None

    @staticmethod
    def _check_id(execution_id: str) -> None:
        """The local store's rule, so a malformed id is a usage error (2) here too, not a 404."""
        from engine.errors import InvalidExecutionId
        from engine.state.store import check_execution_id

        try:
            check_execution_id(execution_id)
        except InvalidExecutionId as exc:
            raise BackendError(exc.message, 2) from None

    def start(self, workflow: str, input: Any, execution_id: str | None) -> str:
        if execution_id is not None:
            from engine.errors import InvalidExecutionId
            from engine.state.store import check_client_execution_id

            try:
                check_client_execution_id(execution_id)  # "~" is reserved for child executions
            except InvalidExecutionId as exc:
                raise BackendError(exc.message, 2) from None
        return str(self._call(self.client.start, workflow, input, execution_id))

    def record(self, execution_id: str) -> dict[str, Any]:
        self._check_id(execution_id)
        return dict(self._call(self.client.status, execution_id))

    def history(self, execution_id: str) -> list[dict[str, Any]]:
        self._check_id(execution_id)
        return list(self._call(self.client.history, execution_id))

    def cancel(self, execution_id: str, compensate: bool = True) -> None:
        self._check_id(execution_id)
        self._call(self.client.cancel, execution_id, compensate=compensate)

    def notify(self, event: str, key: str, data: Any, event_id: str | None = None) -> dict[str, Any]:
        return dict(self._call(self.client.notify_event, event, key, data, event_id))

    def list(self, params: dict[str, list[str]]) -> dict[str, Any]:
        _filters(params)  # the same usage errors as the local store, before any request
        return dict(self._call(self.client.list_executions, params))

    def close(self) -> None:
        self.client.close()


def backend_from_options(
    command: str,
    workflows: str | None = None,
    actions: tuple[str, ...] = (),
    *,
    url: str | None = None,
    api_key: str | None = None,
) -> Backend:
    """:class:`RemoteBackend` when a URL is given (``--url``/``HOPFLOW_URL``), else the local store.

    Raises :class:`BackendError` (code 2) for an unusable URL or API key; run it under
    :func:`guarded`.
    """
    if url:
        return RemoteBackend(url, api_key)
    return LocalBackend(command, workflows, actions)


def guarded(command: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BackendError as exc:
        for line in exc.lines:
            click.echo(f"hopflow {command}: {line}", err=True)
        sys.exit(exc.code)


# ---------------------------------------------------------------------------------------- output


def _when(value: Any) -> str:
    try:
        return _dt.datetime.fromtimestamp(float(value), _dt.UTC).isoformat(timespec="milliseconds")
    except (TypeError, ValueError, OverflowError):
        return str(value) if value is not None else ""


TRACE_SHOWN = 20  # trace lines `hopflow status` prints without --full


def _shown(value: Any) -> str:
    """A value for a status line: never Python's ``None``."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def print_status(record: dict[str, Any], *, full: bool = False, last: int = TRACE_SHOWN) -> None:
    """The record in words: where each branch is and what it waits for, then a capped trace."""
    click.echo(f"execution  {_shown(record.get('execution_id'))}")
    graph = str(record.get("graph") or "")[:12]
    click.echo(f"workflow   {_shown(record.get('workflow'))}" + (f"  (graph {graph})" if graph else ""))
    click.echo(f"status     {_shown(record.get('status'))}")
    for key in ("created_at", "started_at", "updated_at", "finished_at"):
        if record.get(key) is not None:
            click.echo(f"{key.replace('_at', ''):<10} {_when(record[key])}")
    where = record.get("where")
    if where and record.get("status") not in FINAL:
        for i, entry in enumerate(where):
            click.echo(f"{'where' if i == 0 else '':<10} {_shown(entry.get('text'))}")
    elif record.get("status") not in FINAL:
        for i, item in enumerate(record.get("current") or []):  # a server without `where`
            branch = f" (branch {item['branch']})" if item.get("branch") else ""
            line = f"step {_shown(item.get('node'))}{branch}: {_shown(item.get('phase'))}"
            click.echo(f"{'where' if i == 0 else '':<10} {line}")
    for label, error in (("error", record.get("error")), ("comp error", record.get("compensation_error"))):
        if error:
            text = f"{_shown(error.get('name'))}: {_shown(error.get('message'))}"
            if error.get("step"):
                text += f" (step {error['step']})"
            click.echo(f"{label:<10} {text}")
    if record.get("status") == "succeeded":
        click.echo(f"output     {json.dumps(record.get('output'), ensure_ascii=False)}")
    trace = record.get("trace") or []
    if trace:
        hidden = 0 if full or len(trace) <= last else len(trace) - last
        if hidden:
            click.echo(
                f"trace      the last {last} of {len(trace)} ({hidden} earlier not shown: --full for all)"
            )
        else:
            click.echo("trace")
        for item in trace[hidden:]:
            attempt = item.get("attempt")
            click.echo(
                f"  {_shown(item.get('step')):<24} {_shown(item.get('phase')):<11} "
                f"#{attempt if attempt is not None else '-':<3} {_shown(item.get('status'))}"
            )


def print_history(entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        when = _when(entry.get("time"))
        rest = {k: v for k, v in entry.items() if k not in ("id", "time")}
        what = rest.pop("event", None) or "node"
        fields = " ".join(f"{k}={v}" for k, v in rest.items())
        click.echo(f"{when}  {what:<12} {fields}".rstrip())


def workflows_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--workflows", metavar="DIR", help="Folder of workflows (default: ./workflows).")(fn)


def remote_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--url`` / ``--api-key``: talk to a server's HTTP API instead of the local store.

    The key is read from the environment like any option but never shown: ``show_envvar`` names the
    variable in ``--help``, and no default is displayed.
    """
    fn = click.option(
        "--api-key",
        "api_key",
        envvar="HOPFLOW_API_KEY",
        show_envvar=True,
        show_default=False,
        metavar="KEY",
        help="The server's API key, with --url. Prefer the environment variable: a command line is "
        "visible to other users of the machine.",
    )(fn)
    return click.option(
        "--url",
        envvar="HOPFLOW_URL",
        show_envvar=True,
        metavar="URL",
        help="Base URL of a hopflow server (`hopflow serve`, or a deployment): use its HTTP API "
        "instead of the local store. --url '' forces the local store.",
    )(fn)


def _given(name: str) -> bool:
    """Whether the user set parameter ``name`` (on the command line or through its variable)."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source(name)
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def check_remote(command: str, url: str | None, local_only: dict[str, str]) -> None:
    """Usage errors (exit 2, one line) for options that cannot go with (or without) ``--url``.

    ``local_only`` maps parameter names to how the user spells them (``{"wait": "--wait"}``).
    """
    from click.core import ParameterSource

    ctx = click.get_current_context()
    if not url:
        if ctx.get_parameter_source("api_key") == ParameterSource.COMMANDLINE:
            usage_exit(command, "--api-key is for a server: give its --url too (or set HOPFLOW_URL)")
        return
    given = [spelling for name, spelling in local_only.items() if _given(name)]
    if not given:
        return
    via = (
        "HOPFLOW_URL set (unset it, or pass --url '' to use the local store)"
        if ctx.get_parameter_source("url") == ParameterSource.ENVIRONMENT
        else "--url"
    )
    what = given[0] if len(given) == 1 else ", ".join(given[:-1]) + " and " + given[-1]
    verb = "works" if len(given) == 1 else "work"
    usage_exit(command, f"{what} only {verb} on the local store, not with {via}")


# -------------------------------------------------------------------------------------- commands


def _looks_like_file(workflow: str) -> bool:
    return workflow.endswith((".yaml", ".yml")) or "/" in workflow or "\\" in workflow


@click.command("start", context_settings=CONTEXT)
@click.argument("workflow", metavar="WORKFLOW")
@click.option(
    "--input", "input_", metavar="JSON|@FILE", help="Start payload: JSON text, @file, or @- for stdin."
)
@click.option(
    "--id", "execution_id", metavar="ID", help="Execution id; starting again with the same id is a no-op."
)
@workflows_option
@actions_option
@click.option(
    "--wait", is_flag=True, help="Deliver here until the execution ends (needs --actions for its actions)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@live_option
@remote_options
@_guard
def start(
    workflow: str,
    input_: str | None,
    execution_id: str | None,
    workflows: str | None,
    actions: tuple[str, ...],
    wait: bool,
    as_json: bool,
    progress: str,
    url: str | None,
    api_key: str | None,
) -> None:
    """Start an execution of WORKFLOW and print its id.

    Locally, WORKFLOW is a name in --workflows or a .yaml file, and without --wait the first message
    waits in the local queue for a worker (`hopflow serve`, or any `hopflow run`/`resume` on the same
    store). With --url, WORKFLOW is the name of a workflow the server has, and the server runs it.
    """
    check_remote(
        "start",
        url,
        {"wait": "--wait", "actions": "--actions", "workflows": "--workflows", "progress": "--progress"},
    )
    if url and _looks_like_file(workflow):
        usage_exit(
            "start",
            f"with --url, WORKFLOW is the name of a workflow the server has, not a file ({workflow}); "
            "give its `name:`",
        )
    payload = parse_json_option("start", "--input", input_, default={})
    with JsonStdout(as_json) as out:
        _start(
            workflow, payload, execution_id, workflows, actions, wait, as_json, progress, url, api_key, out
        )


def _start(
    workflow: str,
    payload: Any,
    execution_id: str | None,
    workflows: str | None,
    actions: tuple[str, ...],
    wait: bool,
    as_json: bool,
    progress: str,
    url: str | None,
    api_key: str | None,
    out: JsonStdout,
) -> None:
    backend = guarded(
        "start", lambda: backend_from_options("start", workflows, actions, url=url, api_key=api_key)
    )
    if wait and isinstance(backend, LocalBackend):
        backend.check = []  # filled with the workflow started (engine.preflight)
    eid = guarded("start", lambda: backend.start(workflow, payload, execution_id))
    if not wait:
        out.echo(json.dumps({"execution_id": eid}) if as_json else eid)
        return
    assert isinstance(backend, LocalBackend)  # --wait with --url is refused above
    runtime = backend.runtime()
    record = drive(
        "start",
        runtime,
        backend.dispatcher,
        eid,
        progress_stream=progress_target(as_json),
        live=None if progress == "auto" else progress == "live",
        quiet=progress == "none",
        resume_hint=f"hopflow resume {eid}",
    )
    print_record(record, as_json=as_json, out=out)
    sys.exit(0 if record.get("status") == "succeeded" else 1)


@click.command("status", context_settings=CONTEXT)
@click.argument("execution_id", metavar="EXEC")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
@click.option("--full", is_flag=True, help="Print the whole trace (default: the last 20 entries).")
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=TRACE_SHOWN,
    show_default=True,
    metavar="N",
    help="Trace entries to print.",
)
@remote_options
@_guard
def status(
    execution_id: str, as_json: bool, full: bool, last: int, url: str | None, api_key: str | None
) -> None:
    """Show an execution: its status, where each branch is and what it waits for, output or error,
    timestamps (real time, UTC) and the end of its trace."""
    _show(
        "status",
        lambda backend: backend.record(execution_id),
        lambda record: print_status(record, full=full, last=last),
        as_json,
        url,
        api_key,
    )


@click.command("history", context_settings=CONTEXT)
@click.argument("execution_id", metavar="EXEC")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as a JSON list.")
@remote_options
@_guard
def history(execution_id: str, as_json: bool, url: str | None, api_key: str | None) -> None:
    """Show the event history of an execution, oldest first."""
    _show("history", lambda backend: backend.history(execution_id), print_history, as_json, url, api_key)


def _show(
    command: str,
    fetch: Callable[[Backend], Any],
    printer: Callable[[Any], None],
    as_json: bool,
    url: str | None,
    api_key: str | None,
) -> None:
    """The read-only commands: fetch from the local store or a server, print as text or JSON."""
    check_remote(command, url, {})
    backend = guarded(command, lambda: backend_from_options(command, url=url, api_key=api_key))
    found = guarded(command, lambda: fetch(backend))
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, default=str))
    else:
        printer(found)


def print_list(page: dict[str, Any]) -> None:
    """A table of executions (rich), then how to get the next page."""
    from rich.console import Console
    from rich.table import Table

    executions = page.get("executions") or []
    if not executions:
        click.echo("no executions match")
    else:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("EXECUTION", "WORKFLOW", "STATUS", "STARTED", "UPDATED", "PARENT"):
            table.add_column(column, no_wrap=True)
        for e in executions:
            table.add_row(
                _shown(e.get("execution_id")),
                _shown(e.get("workflow")),
                _shown(e.get("status")),
                _shown(e.get("started_at")),
                _shown(e.get("updated_at")),
                e.get("parent") or "",
            )
        console = Console(highlight=False)
        if not console.is_terminal:  # a pipe or a file: one line per execution, whatever the width
            console.width = 400
        console.print(table)
    if page.get("next_cursor"):
        click.echo(f"more: add --cursor {page['next_cursor']}", err=True)


@click.command("list", context_settings=CONTEXT)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATUS",
    help="running, failed, … (repeat, or a comma list).",
)
@click.option("--workflow", metavar="NAME", help="Only this workflow.")
@click.option("--graph", metavar="HASH", help="Only executions pinned to this graph hash.")
@click.option("--parent", metavar="EXEC", help="Only the child executions of EXEC.")
@click.option(
    "--started-after", metavar="TIME", help="ISO 8601 (UTC unless a zone is given) or epoch seconds."
)
@click.option("--started-before", metavar="TIME")
@click.option("--updated-after", metavar="TIME")
@click.option("--updated-before", metavar="TIME")
@click.option("--limit", default="50", show_default=True, metavar="N", help="Page size (1-200).")
@click.option("--cursor", metavar="CURSOR", help="The next page: the cursor the previous page printed.")
@click.option("--json", "as_json", is_flag=True, help='Print {"executions": [...], "next_cursor": ...}.')
@remote_options
@_guard
def list_(
    statuses: tuple[str, ...],
    workflow: str | None,
    graph: str | None,
    parent: str | None,
    started_after: str | None,
    started_before: str | None,
    updated_after: str | None,
    updated_before: str | None,
    limit: str,
    cursor: str | None,
    as_json: bool,
    url: str | None,
    api_key: str | None,
) -> None:
    """List executions, newest first, filtered; one page at a time (docs/operations.md)."""
    given = {
        "status": list(statuses),
        "workflow": [workflow],
        "graph": [graph],
        "parent": [parent],
        "started_after": [started_after],
        "started_before": [started_before],
        "updated_after": [updated_after],
        "updated_before": [updated_before],
        "limit": [limit],
        "cursor": [cursor],
    }
    params = {k: [v for v in values if v is not None] for k, values in given.items()}
    params = {k: v for k, v in params.items() if v}
    _show("list", lambda backend: backend.list(params), print_list, as_json, url, api_key)


@click.command("cancel", context_settings=CONTEXT)
@click.argument("execution_id", metavar="EXEC")
@click.option(
    "--no-compensate",
    is_flag=True,
    help="Stop without undoing what the execution did (its compensations do not run).",
)
@workflows_option
@actions_option
@click.option("--wait", is_flag=True, help="Deliver here until the cancellation (and compensation) is done.")
@click.option("--json", "as_json", is_flag=True, help="With --wait: print the final record as JSON.")
@remote_options
@_guard
def cancel(
    execution_id: str,
    no_compensate: bool,
    workflows: str | None,
    actions: tuple[str, ...],
    wait: bool,
    as_json: bool,
    url: str | None,
    api_key: str | None,
) -> None:
    """Cancel an execution: it stops at its next node boundary and compensates what it did.

    With --url, only a running execution can be cancelled (the server answers that one that is over
    or compensating cannot be).
    """
    check_remote(
        "cancel",
        url,
        {"wait": "--wait", "actions": "--actions", "workflows": "--workflows", "as_json": "--json"},
    )
    backend = guarded(
        "cancel",
        lambda: backend_from_options(
            "cancel",
            workflows or (default_workflows_dir() if wait else None),
            actions,
            url=url,
            api_key=api_key,
        ),
    )
    guarded("cancel", lambda: backend.cancel(execution_id, compensate=not no_compensate))
    if not wait:
        click.echo(f"cancellation of {execution_id} requested")
        return
    assert isinstance(backend, LocalBackend)  # --wait with --url is refused above
    with JsonStdout(as_json) as out:  # compensations (user code) run here: keep stdout for the JSON
        record = drive(
            "cancel",
            backend.runtime(),
            backend.dispatcher,
            execution_id,
            progress_stream=progress_target(as_json),
            live=None,
            resume_hint=f"hopflow resume {execution_id}",
        )
        print_record(record, as_json=as_json, out=out)
    sys.exit(0 if record.get("status") in ("cancelled", "compensated", "failed") else 1)


@click.command("notify", context_settings=CONTEXT)
@click.argument("event", metavar="EVENT")
@click.option(
    "--key", required=True, help="The event's key (what a waiting step or a trigger's key matches)."
)
@click.option("--data", metavar="JSON|@FILE", help="The event's data (JSON text, @file, @-); default null.")
@click.option(
    "--id",
    "event_id",
    metavar="ID",
    help="The event's id: notifying again with the same id resumes and starts nothing new.",
)
@workflows_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@remote_options
@_guard
def notify(
    event: str,
    key: str,
    data: str | None,
    event_id: str | None,
    workflows: str | None,
    as_json: bool,
    url: str | None,
    api_key: str | None,
) -> None:
    """Deliver EVENT with KEY to the executions waiting for it (or keep it 7 days for the first), and
    start the workflows whose `triggers` name it."""
    check_remote("notify", url, {"workflows": "--workflows"})
    payload = parse_json_option("notify", "--data", data, default=None)
    if not event.strip():
        usage_exit("notify", "EVENT must not be empty")
    if event_id is not None and not EVENT_ID.fullmatch(event_id):
        usage_exit(
            "notify", "--id must be 1-200 letters, digits or _.:@+=~/- (starting with a letter or digit)"
        )
    backend = guarded("notify", lambda: backend_from_options("notify", workflows, url=url, api_key=api_key))
    done = guarded("notify", lambda: backend.notify(event, key, payload, event_id))
    resumed = int(done.get("resumed") or 0)
    started = list(done.get("started") or [])
    if as_json:
        click.echo(json.dumps(done))
        return
    if resumed:
        click.echo(f"resumed {resumed} execution(s) waiting for {event} {key!r}")
    else:
        click.echo(f"no execution is waiting for {event} {key!r}; the event is kept for 7 days")
    for eid in started:
        click.echo(f"started {eid}")
    for failed in done.get("failed") or []:
        click.echo(f"did not start {failed.get('workflow')}: {failed.get('message')}", err=True)


__all__ = [
    "Backend",
    "BackendError",
    "LocalBackend",
    "RemoteBackend",
    "backend_from_options",
    "core",
    "fail_exit",
]
