"""``hopflow start / status / history / cancel / notify``: the HTTP API's operations from the shell.

Each command talks to a :class:`Backend`. Today that is :class:`LocalBackend` — the same store that
``hopflow run`` uses (``REDIS_URL``, else the embedded Redis under ``.hopflow/``). A remote backend
(``--url``/``--api-key`` against ``hopflow serve``) only has to implement the same five methods and
be returned by :func:`backend_from_options`; the commands do not change.

Exit codes: 0 done; 1 the operation failed (unknown execution, not resumable, store down);
2 usage errors (bad JSON, invalid input, unknown workflow).
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
    print_record,
    progress_target,
    usage_exit,
)
from engine.commands.validate import _guard


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
    def cancel(self, execution_id: str) -> None: ...
    def notify(self, event: str, key: str, data: Any) -> int: ...


class LocalBackend:
    """The local store, through a :class:`~engine.runtime.Runtime` built on the embedded default."""

    def __init__(self, command: str, workflows: str | None = None, actions: tuple[str, ...] = ()) -> None:
        self.command = command
        self.workflows = workflows
        self.actions = actions
        self._runtime: Any = None
        self._dispatcher: Any = None
        self.workflow_file: str | None = None

    def runtime(self) -> Any:
        if self._runtime is None:
            from engine.catalog import Catalog

            catalog = Catalog()
            if self.workflow_file is not None or self.workflows is not None:
                catalog, _ = build_catalog(self.command, self.workflow_file, self.workflows, 7500)
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
        from engine.store import check_execution_id

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
        return str(self._call(self.runtime().start, catalog_name, input, execution_id))

    def _name_of_file(self) -> str:
        from engine.catalog import Catalog

        assert self.workflow_file is not None
        catalog, name = build_catalog(self.command, self.workflow_file, self.workflows, 7500)
        self._runtime, self._dispatcher = local_runtime(self.command, catalog, self.actions)
        assert isinstance(catalog, Catalog) and name is not None
        return name

    def record(self, execution_id: str) -> dict[str, Any]:
        self._known(execution_id)
        return dict(self._call(self.runtime().record, execution_id))

    def history(self, execution_id: str) -> list[dict[str, Any]]:
        self._known(execution_id)
        return list(self._call(self.runtime().history, execution_id))

    def cancel(self, execution_id: str) -> None:
        self._known(execution_id)
        self._call(self.runtime().cancel, execution_id)

    def notify(self, event: str, key: str, data: Any) -> int:
        return int(self._call(self.runtime().notify, event, key, data))


def backend_from_options(
    command: str, workflows: str | None = None, actions: tuple[str, ...] = ()
) -> Backend:
    """The backend the options ask for (today: always the local store)."""
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


def print_status(record: dict[str, Any]) -> None:
    click.echo(f"execution  {record.get('execution_id')}")
    click.echo(f"workflow   {record.get('workflow')}  (graph {str(record.get('graph') or '')[:12]})")
    click.echo(f"status     {record.get('status')}")
    for key in ("created_at", "started_at", "updated_at", "finished_at"):
        if record.get(key) is not None:
            click.echo(f"{key.replace('_at', ''):<10} {_when(record[key])}")
    current = record.get("current") or record.get("nodes")
    if current and record.get("status") not in FINAL:
        click.echo(f"current    {json.dumps(current, ensure_ascii=False)}")
    if record.get("error"):
        error = record["error"]
        click.echo(f"error      {error.get('name')}: {error.get('message')} (step {error.get('step')})")
    if record.get("status") == "succeeded":
        click.echo(f"output     {json.dumps(record.get('output'), ensure_ascii=False)}")
    trace = record.get("trace") or []
    if trace:
        click.echo("trace")
        for item in trace:
            click.echo(
                f"  {item.get('step', ''):<24} {item.get('phase', ''):<11} #{item.get('attempt') or '-':<3} "
                f"{item.get('status', '')}"
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


# -------------------------------------------------------------------------------------- commands


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
) -> None:
    """Start an execution of WORKFLOW (a name in --workflows, or a .yaml file) and print its id.

    Without --wait the first message waits in the local queue for a worker (`hopflow serve`, or any
    `hopflow run`/`resume` on the same store).
    """
    payload = parse_json_option("start", "--input", input_, default={})
    backend = LocalBackend("start", workflows, actions)
    eid = guarded("start", lambda: backend.start(workflow, payload, execution_id))
    if not wait:
        click.echo(json.dumps({"execution_id": eid}) if as_json else eid)
        return
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
    print_record(record, as_json=as_json)
    sys.exit(0 if record.get("status") == "succeeded" else 1)


@click.command("status", context_settings=CONTEXT)
@click.argument("execution_id", metavar="EXEC")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
@_guard
def status(execution_id: str, as_json: bool) -> None:
    """Show an execution: status, current node(s), output or error, timestamps, trace."""
    backend = backend_from_options("status")
    record = guarded("status", lambda: backend.record(execution_id))
    if as_json:
        click.echo(json.dumps(record, ensure_ascii=False, default=str))
    else:
        print_status(record)


@click.command("history", context_settings=CONTEXT)
@click.argument("execution_id", metavar="EXEC")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as a JSON list.")
@_guard
def history(execution_id: str, as_json: bool) -> None:
    """Show the event history of an execution, oldest first."""
    backend = backend_from_options("history")
    entries = guarded("history", lambda: backend.history(execution_id))
    if as_json:
        click.echo(json.dumps(entries, ensure_ascii=False, default=str))
    else:
        print_history(entries)


@click.command("cancel", context_settings=CONTEXT)
@click.argument("execution_id", metavar="EXEC")
@workflows_option
@actions_option
@click.option("--wait", is_flag=True, help="Deliver here until the cancellation (and compensation) is done.")
@click.option("--json", "as_json", is_flag=True, help="With --wait: print the final record as JSON.")
@_guard
def cancel(
    execution_id: str, workflows: str | None, actions: tuple[str, ...], wait: bool, as_json: bool
) -> None:
    """Cancel an execution: it stops at its next node boundary and compensates what it did."""
    backend = LocalBackend("cancel", workflows or (default_workflows_dir() if wait else None), actions)
    guarded("cancel", lambda: backend.cancel(execution_id))
    if not wait:
        click.echo(f"cancellation of {execution_id} requested")
        return
    record = drive(
        "cancel",
        backend.runtime(),
        backend.dispatcher,
        execution_id,
        progress_stream=progress_target(as_json),
        live=None,
        resume_hint=f"hopflow resume {execution_id}",
    )
    print_record(record, as_json=as_json)
    sys.exit(0 if record.get("status") in ("cancelled", "compensated", "failed") else 1)


@click.command("notify", context_settings=CONTEXT)
@click.argument("event", metavar="EVENT")
@click.option("--key", required=True, help="The key the waiting step expects.")
@click.option("--data", metavar="JSON|@FILE", help="The event's data (JSON text, @file, @-); default null.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_guard
def notify(event: str, key: str, data: str | None, as_json: bool) -> None:
    """Deliver EVENT with KEY to the executions waiting for it (or keep it 7 days for the first)."""
    payload = parse_json_option("notify", "--data", data, default=None)
    if not event.strip():
        usage_exit("notify", "EVENT must not be empty")
    backend = backend_from_options("notify")
    resumed = guarded("notify", lambda: backend.notify(event, key, payload))
    if as_json:
        click.echo(json.dumps({"resumed": resumed}))
    elif resumed:
        click.echo(f"resumed {resumed} execution(s) waiting for {event} {key!r}")
    else:
        click.echo(f"no execution is waiting for {event} {key!r}; the event is kept for 7 days")


__all__ = ["Backend", "BackendError", "LocalBackend", "backend_from_options", "core", "fail_exit"]
