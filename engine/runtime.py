"""The runtime facade: everything the edges (webhook, CLI, embedded runner, dispatchers) may call.

It owns no state of its own beyond caches: executions live in Redis (:mod:`engine.state.store`), graphs
come from the :class:`~engine.catalog.Catalog` when an execution starts and from Redis (by the
pinned hash) afterwards, and messages leave through the dispatcher.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import random as _random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from dsl.graph import Graph, thaw
from engine.catalog import Catalog
from engine.clock import Clock, SystemClock, wall_of
from engine.context import iso
from engine.dispatch import DispatchError
from engine.egress import EgressPolicy
from engine.errors import InputInvalid, NotResumable, StoreUnavailable, UnknownExecution, UnknownWorkflow
from engine.flow import slots as flow_slots
from engine.flow.keys import FlowResolver
from engine.interpreter import PLAIN_HISTORY, WAKE_SKEW_S, Advance, Interpreter, dumps, loads
from engine.model import Message, Outgoing, Status, StepError, StepFailure
from engine.observe import ExecutionEvent, Observers
from engine.redact import Redactor, env_secrets, install_log_filter, remember, secret_strings
from engine.state import index
from engine.state.store import (
    CHILD_MARK,
    Store,
    check_client_execution_id,
    check_execution_id,
    outbox_entries,
)
from engine.triggers import Notified, start_triggered

log = logging.getLogger("hopflow.runtime")

__all__ = ["Advance", "Runtime"]

Faults = Callable[[str, Message], None]
InPlace = Callable[[Message], bool]
TRACE_PHASES = ("run", "compensate", "skip")
TERMINAL = {
    s.value for s in (Status.SUCCEEDED, Status.FAILED, Status.COMPENSATED, Status.CANCELLED, Status.DEAD)
}


class Runtime:
    def __init__(
        self,
        store: Store,
        dispatcher: Any,
        catalog: Catalog,
        *,
        actions: Any = None,
        clock: Clock | None = None,
        time_budget_s: float = 7.5,
        max_nodes_per_call: int = 1,
        faults: Faults | None = None,
        random: Callable[[], float] = _random.random,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.catalog = catalog
        self.actions = actions
        self.clock: Clock = clock or SystemClock()
        store.wall = lambda: wall_of(self.clock)  # outbox stamps: real time, as this runtime sees it
        self.time_budget_s = time_budget_s
        self.max_nodes_per_call = max(1, int(max_nodes_per_call))
        self.faults = faults
        self.random = random
        # what http steps may connect to (None: the environment's policy, loopback refused)
        self.egress: EgressPolicy = egress if egress is not None else EgressPolicy.from_env()
        self.interpreter = Interpreter(self)
        install_log_filter()
        self.observers = Observers()  # metrics, node logs (engine.observe); empty: no cost
        self.metrics: Any = None  # engine.observe.metrics.PrometheusMetrics once enabled
        self.traces: Any = None  # engine.observe.traces.Traces once enabled (steps then send traceparent)
        self._modules: dict[str, Any] = {}
        self._validators: dict[str, Any] = {}
        self._delivery = threading.local()  # .in_place: the fast-path policy of this thread's delivery
        if getattr(dispatcher, "complete", False) is None:
            # a local dispatcher makes offloaded calls itself: their answers come back in-process
            from engine.dispatch.inprocess import in_process_completion  # lazy: not on a webhook

            dispatcher.complete = in_process_completion(self)
        if getattr(dispatcher, "perform", False) is None:
            # and makes them under this runtime's egress policy
            import functools

            from engine.steps.offload import perform

            dispatcher.perform = functools.partial(perform, policy=self.egress)
        if getattr(dispatcher, "flow", False) is None:  # which messages carry a flow-control key
            dispatcher.flow = FlowResolver(store)

    # ------------------------------------------------------------------------------- public API

    def start(self, workflow: str, input: Any, execution_id: str | None = None) -> str:
        """Validate ``input``, create the execution, publish its first message; idempotent per id."""
        graph = self.catalog.get(workflow)
        if execution_id is not None:
            check_client_execution_id(execution_id)  # "~" is reserved for child executions
        return self._create(graph, input, execution_id, None)

    def advance(self, message: Message) -> Advance:
        result = self.interpreter.advance(message)
        if self.observers:
            self.observers.delivery(result.kind)
        return result

    @contextlib.contextmanager
    def running_in_place(self, policy: InPlace) -> Iterator[None]:
        """While this thread delivers a message: ``policy(next)`` says whether the execution's next,
        immediate node may run right here instead of being published (the local dispatcher's fast
        path; :mod:`engine.dispatch.inprocess` sets it around ``advance``). Thread-local, so only
        the delivery that set it chains."""
        previous = getattr(self._delivery, "in_place", None)
        self._delivery.in_place = policy
        try:
            yield
        finally:
            self._delivery.in_place = previous

    def complete_offloaded(self, message: Message, callback: Any, *, failure: bool = False) -> Advance:
        """The answer to an ``offload: true`` http call: completes the step parked at ``message``
        (execution, node, the parked ``seq``, branch) like an inline response — a status in ``expect``
        (default 2xx) succeeds with ``{status, headers, json, text}``, anything else fails with
        ``http.<status>`` (``http.connect`` when there was no response) through retry/catch/saga.
        ``callback`` is a :class:`~engine.dispatch.qstash.QStashCallback` or a
        :class:`~engine.dispatch.CallResult`; ``failure`` marks QStash's failure callback. A stale,
        duplicate or out-of-place answer changes nothing (kind ``stale``/``finished``); ``busy`` means
        the branch stayed locked by another delivery (the caller should deliver it again later)."""
        result = self.interpreter.complete(message, callback, failure=failure)
        if self.observers:
            self.observers.delivery(result.kind)
        return result

    def cancel(self, execution_id: str, *, compensate: bool = True) -> None:
        """Stop every branch at its next node boundary; compensate (unless told not to); ``cancelled``."""
        if flow_slots.cancel_queued(self, execution_id):
            return  # it was waiting for a max_running slot: cancelled before it ran
        self.stop(
            execution_id,
            {"name": "cancelled", "message": "the execution was cancelled", "compensate": compensate},
        )

    def notify(self, event: str, key: Any, data: Any = None, *, event_id: str | None = None) -> int:
        """Deliver an event (see :meth:`notify_event`); returns how many waiting executions resumed."""
        return self.notify_event(event, key, data, event_id=event_id).resumed

    def notify_event(
        self, event: str, key: Any, data: Any = None, *, event_id: str | None = None
    ) -> Notified:
        """Deliver an event to every execution waiting for (event, key); none waiting: keep it 7 days
        for the first wait that matches. Then start one execution of each workflow whose `triggers`
        name the event (engine.triggers). ``event_id``: the same id again (a retried call, a
        redelivered `emit`) is not a new event — no second delivery, no second start."""
        key = key if isinstance(key, str) else dumps(key)
        now = self.clock.now()
        ident = event_id or uuid.uuid4().hex
        body = dumps({"data": data, "id": ident, "at": now})
        args: dict[str, Any] = {"op": "notify", "now": now, "event": body}
        if event_id is not None:
            args["id"] = event_id
        found = self.store.event(event, key, args)
        resumed = 0
        if found["kind"] == "delivered":
            resumed = self._wake_waiters(event, found)
        # a duplicate event still (re)starts its triggered executions: start is idempotent per id,
        # and a retry after a crash between the delivery and the start must not lose the start
        notified = start_triggered(self, event, key, data, ident)
        notified.resumed = resumed
        return notified

    def _wake_waiters(self, event: str, found: dict[str, Any]) -> int:
        infos = [json.loads(i) for i in found.get("infos") or [] if i and i != "null"]
        if infos:
            wake = [
                Outgoing(Message(i["eid"], i["node"], int(i["seq"]), i.get("branch") or "")) for i in infos
            ]
            try:
                self.interpreter.publish(wake)
            except DispatchError as exc:
                # The event is already handed to its waiters (durably claimed), so the notification
                # has succeeded: reporting a failure would make the caller retry, and the retry
                # would be kept as a second event. The wake-up itself is re-sent by `recover`.
                log.warning(
                    "event %r delivered to %d waiting execution(s), but waking them failed (%s); "
                    "`hopflow recover` (or the periodic sweep) re-sends the wake-up",
                    event,
                    len(wake),
                    exc,
                )
        return len(infos)

    def resume(self, execution_id: str) -> None:
        """``compensation_failed`` → ``compensating`` (or ``running``, when a fan-out's partial unwind
        gave up): retry the compensation that gave up."""
        now = self.clock.now()
        found = self.store.run(
            "resume", execution_id, {"eid": execution_id, "now": now, "hist": self._event("resumed", now)}
        )
        if found["kind"] == "missing":
            raise UnknownExecution(execution_id)
        if found["kind"] != "resumed":
            raise NotResumable(
                f"execution {execution_id!r} is {found.get('status')}, not compensation_failed"
            )
        self.store.touch(execution_id)
        # compensating again, or running again after a fan-out's partial unwind gave up (resume.lua)
        self.indexed(execution_id, str(found.get("status") or Status.COMPENSATING.value), force=True)
        self._flush(execution_id, outbox_entries(found.get("out")))

    def recover(self, older_than_s: float = 60) -> int:
        """Re-publish outboxes older than the bound, hand over offloaded calls recorded but never
        handed to the dispatcher, and wake waits whose event or child arrived while the resuming
        message was lost. Returns how many executions were re-driven.

        Ages are measured on the wall clock (entries carry their wall-clock stamp): a virtual clock
        that ``run --fast-forward`` jumped must not make an entry look years old or in the future."""
        now = wall_of(self.clock)
        count = 0
        for eid in self.store.active():
            status = self.store.status(eid)
            if status is None:
                self.store.remove_active(eid)
                continue
            redriven = False
            entries = self.store.outbox(eid)
            old = [(i, o) for i, o, at in entries if now - at >= older_than_s]
            if old:
                self._flush(eid, old)
                redriven = True
            calls = [r for _, r, at in self.store.calls(eid) if now - at >= older_than_s]
            if calls and status not in TERMINAL:
                self.interpreter.hand_off(eid, calls)  # offloaded calls recorded, never handed over
                redriven = True
            if status in TERMINAL:
                if len(old) == len(entries):  # crashed after its final checkpoint: tidy up now
                    self.indexed(eid, status)
                    self.finished(eid)
                count += redriven
                continue
            for branch, seq in self.store.parked(eid).items():
                if self._rewake(eid, branch, int(seq)):
                    redriven = True
            count += redriven
        index.sweep(self.store)  # entries of executions whose records expired (retention)
        return count + flow_slots.sweep(self, older_than_s)  # max_running slots of dead holders

    def record(self, execution_id: str) -> dict[str, Any]:
        """The final record (docs/running.md), plus ``created_at``, ``updated_at`` and ``current``."""
        header = self.store.header(execution_id)
        if not header:
            raise UnknownExecution(execution_id)
        redactor = self.redactor(execution_id, header)
        error = _shown_error(loads(header.get("error")), redactor)
        comp_error = _shown_error(loads(header.get("comp_error")), redactor)
        output = loads(header.get("output")) if header.get("status") == Status.SUCCEEDED else None
        entries = self.store.history(execution_id)
        trace = [
            {
                "step": h.get("step"),
                "phase": h["phase"],
                "status": h.get("status"),
                "attempt": int(h.get("attempt") or 1),
            }
            for h in entries
            if h.get("phase") in TRACE_PHASES
        ]
        status = header.get("status")
        current: list[dict[str, Any]] = []
        located: list[dict[str, Any]] = []
        if status not in TERMINAL:
            branches = self.store.branches(execution_id)
            for branch, fields in branches.items():
                if fields.get("phase", "run") != "done" and fields.get("node"):
                    current.append(
                        {"branch": branch, "node": fields["node"], "phase": fields.get("phase", "run")}
                    )
            located = self._where(execution_id, header, status, branches, entries)
            if redactor:  # event keys, retried errors' messages, call URLs may quote a secret
                located = redactor.value(located)
        return {
            "execution_id": execution_id,
            "workflow": header.get("workflow"),
            "graph": header.get("graph"),
            "status": status,
            "output": redactor.value(output) if redactor else output,
            "error": error if status != Status.SUCCEEDED else None,
            **({"compensation_error": comp_error} if comp_error else {}),
            "trace": trace,
            "created_at": _real_iso(header, "created"),
            "updated_at": _real_iso(header, "updated"),
            "current": current,
            "where": located,
        }

    def _where(
        self,
        execution_id: str,
        header: dict[str, str],
        status: str | None,
        branches: dict[str, dict[str, str]],
        entries: list[dict[str, str]],
    ) -> list[dict[str, Any]]:
        from engine import where
        from engine.errors import GraphMissing

        try:
            graph = self.store.get_graph(header.get("graph") or "")
        except GraphMissing:
            graph = None
        top = None
        if status in (Status.COMPENSATING, Status.COMPENSATION_FAILED):
            top = self.store.compensation_top(execution_id)
        return where.branches(
            graph=graph,
            status=status,
            branches=branches,
            parked=self.store.parked(execution_id),
            history=entries,
            compensation_top=top,
            child_status=self.store.status,
        )

    def history(self, execution_id: str) -> list[dict[str, Any]]:
        """Every history entry, oldest first, with numbers as numbers and ``time`` as ISO-8601."""
        entries = self.store.history(execution_id)
        if not entries and not self.store.exists(execution_id):
            raise UnknownExecution(execution_id)
        redactor = self.redactor(execution_id)
        if redactor:
            entries = [
                {k: v if k in PLAIN_HISTORY else redactor.text(v) for k, v in e.items()} for e in entries
            ]
        out = []
        for e in entries:
            item: dict[str, Any] = {}
            for k, v in e.items():
                if k in ("attempt", "duration_ms", "delay_ms"):
                    item[k] = int(v)
                elif k == "time":
                    item[k] = iso(float(v))
                else:
                    item[k] = v
            out.append(item)
        return out

    def redactor(self, execution_id: str, header: dict[str, str] | None = None) -> Redactor:
        """What the views redact by value (engine/redact.py): the secret env values this process
        has, and the stored outputs of the execution's secret steps. The interpreter redacted what it
        stored already; this also covers a secret step's output that became the execution's output."""
        header = self.store.header(execution_id) if header is None else header
        graph_hash = header.get("graph") if header else None
        if not graph_hash:
            return Redactor()
        try:
            graph = self.store.get_graph(graph_hash)
        except Exception:  # a view must not fail because the graph is gone
            return Redactor()
        redactor = Redactor(env_secrets(graph.secret_env))
        secret = graph.secret_steps
        if secret:
            for field, value in self.store.all_outputs(execution_id).items():
                if field.rsplit("/", 1)[-1] in secret:
                    redactor.add(secret_strings(value))
        remember(redactor.values)
        return redactor

    def mark_dead(self, message: Message, reason: str) -> str:
        """The dispatcher gave up on ``message``: the execution becomes ``dead`` (unless it moved on).

        Returns what happened: ``dead`` (marked now), ``stale`` (the execution had moved past the
        message: nothing changed) or ``ignored`` (the execution had already ended)."""
        eid = message.execution_id
        header = self.store.header(eid)
        if not header:
            raise UnknownExecution(eid)
        now = self.clock.now()
        error = {"name": "dead", "message": reason, "step": message.node, "attempt": None}
        parent = loads(header.get("parent"))
        found = self.store.run(
            "dead",
            eid,
            {
                "eid": eid,
                "now": now,
                "seq": message.seq,
                "branch": message.branch,
                "error": dumps(error),
                "hist": [
                    "event",
                    "dead",
                    "step",
                    message.node,
                    "message",
                    reason[:500],
                    "time",
                    f"{now:.3f}",
                ],
                "parent": parent,
            },
        )
        if found["kind"] == "dead":
            self.store.touch(eid)
            self.indexed(eid, Status.DEAD.value)
            if self.observers:
                self.observers.finished(header.get("workflow") or "", Status.DEAD.value)
                self.observers.ended(
                    ExecutionEvent(
                        eid,
                        header.get("workflow") or "",
                        Status.DEAD.value,
                        float(header.get("created_rt") or 0),
                        time.time(),
                        loads(header.get("parent")),
                    )
                )
            self._flush(eid, outbox_entries(found.get("out")))
            self.finished(eid)
        return str(found["kind"])

    # ------------------------------------------------------------------- used by the interpreter

    def fault(self, point: str, message: Message) -> None:
        if self.faults is not None:
            self.faults(point, message)

    def in_place(self, message: Message) -> bool:
        """Whether the next node (``message``) may run in this delivery (see :meth:`running_in_place`)."""
        policy = getattr(self._delivery, "in_place", None)
        return policy is not None and policy(message)

    def call_http(self, config: Any, ctx: Any, *, timeout_s: float, egress: Any = None) -> dict[str, Any]:
        """An inline ``http`` call (steps and compensations), under the egress policy. The one place
        a request leaves the process, so ``hopflow test`` (:mod:`engine.testing`) can answer it from
        a mock instead."""
        from engine.steps import http

        result: dict[str, Any] = http.execute(config, ctx, timeout_s=timeout_s, egress=egress)
        return result

    def step_module(self, kind: str) -> Any:
        module = self._modules.get(kind)
        if module is None:
            module = self._modules[kind] = importlib.import_module(f"engine.steps.{kind}")
        return module

    def stop(
        self, execution_id: str, error: dict[str, Any], *, except_branch: str | None = None
    ) -> dict | None:
        """Set the stop flag (cancel/timeout) and wake parked branches; the flag now in force."""
        now = self.clock.now()
        found = self.store.run(
            "stop",
            execution_id,
            {
                "eid": execution_id,
                "now": now,
                "stop": dumps(error),
                "hist": ["event", error["name"], "message", error.get("message") or "", "time", f"{now:.3f}"],
                "except": except_branch,
            },
        )
        if found["kind"] == "missing":
            raise UnknownExecution(execution_id)
        self._flush(execution_id, outbox_entries(found.get("out")))
        if found["kind"] == "stopped":
            self.store.touch(execution_id)
            return error
        if found["kind"] == "already":
            return loads(self.store.header(execution_id).get("stop"))
        return None

    def deadline_reached(self, execution_id: str, message: Message | None = None) -> Advance:
        header = self.store.header(execution_id)
        if not header:
            raise UnknownExecution(execution_id)
        if not header.get("deadline"):
            return Advance("stale", execution_id)  # no timeout: a `$timeout` message is not its own
        deadline = float(header["deadline"])
        if message is not None and deadline - self.clock.now() > WAKE_SKEW_S:
            # delivered early (a relayed long delay, a replay): the stored deadline decides
            if header.get("status") in ("running", "compensating"):
                self.interpreter.defer(message, deadline)
                return Advance("deferred", execution_id)
            return Advance("finished", execution_id, header.get("status"))
        error = {"name": "timeout", "message": "the execution's timeout passed"}
        done = self.stop(execution_id, error)
        return Advance("advanced" if done else "finished", execution_id)

    def child_id(self, execution_id: str, branch: str, step: str, seq: int) -> str:
        """``<parent>~<branch.>step.seq``: deterministic (a redelivery restarts nothing) and in a
        namespace no client can start an execution in (``~`` is refused for client-chosen ids)."""
        where = f"{branch.replace('/', '.')}." if branch else ""
        child = f"{execution_id}{CHILD_MARK}{where}{step}.{seq}"
        if len(child) > 200:
            digest = hashlib.sha1(child.encode()).hexdigest()[:24]
            child = f"{execution_id[:150]}{CHILD_MARK}{digest}"
        return child

    def start_child(self, workflow: str, child_input: Any, child_id: str, parent: dict[str, Any]) -> None:
        try:
            graph = self.catalog.get(workflow)
        except UnknownWorkflow as exc:
            raise StepFailure(StepError("workflow.unknown", exc.message)) from None
        try:
            self._create(graph, child_input, child_id, parent)
        except InputInvalid as exc:
            raise StepFailure(StepError("input.invalid", exc.message)) from None

    def child_state(
        self, child_id: str, parent: dict[str, Any] | None = None
    ) -> tuple[str | None, Any, dict | None]:
        """A child's status, output and error. With ``parent`` ({eid, branch}), an execution whose
        recorded parent link does not name that parent and branch is not this parent's child: it
        fails the step (``workflow.conflict``) instead of handing over its output."""
        header = self.store.header(child_id)
        if parent is not None and not _is_child_of(header, parent):
            return "failed", None, _conflict(child_id)
        return header.get("status"), loads(header.get("output")), loads(header.get("error"))

    def release(self, info: dict[str, Any]) -> None:
        """A halted branch lets go of what it waited for: its event registration, its child."""
        if info.get("wait") == "event":
            for name in info.get("events") or [info["event"]]:  # `event: [a, b]`: every slot
                self.store.event(
                    name, info["key"], {"op": "release", "token": info["token"], "now": self.clock.now()}
                )
        elif info.get("child"):
            try:
                self.cancel(info["child"])
            except UnknownExecution:
                pass

    def indexed(self, execution_id: str, status: str, *, force: bool = False) -> None:
        """Tell the listing index about a status change (after the record has it). A failure here
        changes nothing the execution does: a listing repairs a stale entry from the record."""
        try:
            index.moved(self.store, execution_id, status, force=force)
        except StoreUnavailable as exc:
            log.warning("the listing index missed %s becoming %s (%s)", execution_id, status, exc.message)

    def finished(self, execution_id: str) -> None:
        flow_slots.finished(self, execution_id)  # a max_running slot goes to the next queued start
        self.store.remove_active(execution_id)
        if self.store.retention_s:
            self.store.expire_execution(execution_id, self.store.retention_s)

    # ------------------------------------------------------------------------------- internals

    def _create(self, graph: Graph, input: Any, execution_id: str | None, parent: dict | None) -> str:
        self._validate_input(graph, input)
        eid = check_execution_id(execution_id) if execution_id is not None else uuid.uuid4().hex
        flow = flow_slots.on_start(self, graph, eid, input, parent, self.clock.now())
        if flow is None:
            return eid  # waits for a max_running slot, recorded `queued` (engine/flow/slots.py)
        self.store.put_graph(graph)
        now = self.clock.now()
        header: dict[str, Any] = {
            "workflow": graph.name,
            "graph": graph.hash,
            "status": Status.RUNNING.value,
            "input": dumps(input),
            "created_at": now,
            "started_at": now,
            "updated_at": now,
        }
        if graph.timeout_ms:
            header["deadline"] = now + graph.timeout_ms / 1000
        if parent is not None:
            header["parent"] = dumps(parent)
        header.update(flow)  # rendered flow-control keys (engine/flow/keys.py)
        real = time.time()  # listings and status show real time, whatever clock the runtime runs on
        header["created_rt"] = header["updated_rt"] = real
        self.store.add_active(eid, now)
        index.put(
            self.store,
            eid,
            workflow=graph.name,
            graph=graph.hash,
            status=Status.RUNNING.value,
            started=real,
            parent=parent["eid"] if parent else None,
        )
        found = self.store.run(
            "start",
            eid,
            {
                "eid": eid,
                "now": now,
                "header": header,
                "entry": graph.entry,
                "timeout_ms": graph.timeout_ms,
                "hist": self._event("started", now, workflow=graph.name, graph=graph.hash),
                **self._initial_vars(graph),
            },
        )
        if found["kind"] == "exists":
            if parent is not None and not _is_child_of({"parent": found.get("parent")}, parent):
                # not created by this step (a squatter, or another parent): never adopt it
                raise StepFailure(StepError(**_conflict(eid)))
            self._flush(eid, outbox_entries(found.get("outbox")))
            return eid
        self.store.pin(eid, graph.hash)
        self._flush(eid, outbox_entries(found.get("out")))
        return eid

    @staticmethod
    def _initial_vars(graph: Graph) -> dict[str, Any]:
        """The start script's arguments for the workflow's declared vars (none: no arguments)."""
        if not graph.vars:
            return {}
        from engine.state.reducers import initial_fields

        fields, merged = initial_fields(graph.vars)
        return {"vars": fields, "vm": merged}

    def _validate_input(self, graph: Graph, value: Any) -> None:
        if graph.input_schema is None:
            return
        validator = self._validators.get(graph.hash)
        if validator is None:
            from jsonschema import FormatChecker
            from jsonschema.validators import validator_for

            schema = thaw(graph.input_schema)
            cls = validator_for(schema)
            validator = self._validators[graph.hash] = cls(schema, format_checker=FormatChecker())
        errors = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            raise InputInvalid(
                [
                    {"path": "/" + "/".join(str(p) for p in e.absolute_path), "message": e.message}
                    for e in errors
                ]
            )

    def _flush(self, eid: str, entries: list[tuple[str, Outgoing]]) -> int:
        return self.interpreter.flush(eid, entries)

    def _rewake(self, eid: str, branch: str, seq: int) -> bool:
        fields = self.store.branches_one(eid, branch)
        info = loads(fields.get("park"))
        if not info or fields.get("phase") != "park" or int(fields.get("seq") or -1) != seq:
            return False
        node = fields.get("node") or ""
        if info.get("wait") == "event":
            ask = {"op": "claimed", "token": info["token"], "now": self.clock.now()}
            names = info.get("events") or [info["event"]]
            claims = [self.store.event(name, info["key"], ask) for name in names]
            if not any(found.get("event") for found in claims):
                return False
        elif info.get("child"):
            status = self.store.header(info["child"]).get("status")
            if status not in TERMINAL:
                return False
        else:
            return False
        self.dispatcher.publish([Outgoing(Message(eid, node, seq, branch))])
        return True

    @staticmethod
    def _event(name: str, now: float, **fields: str) -> list[str]:
        flat = ["event", name]
        for k, v in fields.items():
            flat += [k, v]
        return [*flat, "time", f"{now:.3f}"]


def _shown_error(error: Any, redactor: Any) -> dict[str, Any] | None:
    """An error as the record shows it: name, message (redacted), step, and what a catch renamed."""
    if not isinstance(error, dict):
        return None
    message = error.get("message")
    if redactor and isinstance(message, str):
        message = redactor.text(message)
    shown = {"name": error.get("name"), "message": message, "step": error.get("step")}
    if isinstance(error.get("cause"), dict):
        shown["cause"] = _shown_error(error["cause"], redactor)
    return shown


def _real_iso(header: dict[str, str], name: str) -> str | None:
    """A header time in real time: ``<name>_rt`` (written beside the runtime clock's ``<name>_at``,
    which is virtual under ``run --fast-forward``), else ``<name>_at``."""
    raw = header.get(f"{name}_rt") or header.get(f"{name}_at")
    return iso(float(raw)) if raw else None


def _is_child_of(header: dict[str, Any], parent: dict[str, Any]) -> bool:
    """Whether a child's recorded parent link names this parent execution and branch."""
    try:
        link = loads(header.get("parent"))
    except ValueError:
        return False
    return (
        isinstance(link, dict)
        and link.get("eid") == parent.get("eid")
        and link.get("branch", "") == parent.get("branch", "")
    )


def _conflict(child_id: str) -> dict[str, Any]:
    return {
        "name": "workflow.conflict",
        "message": f"execution {child_id} exists but was not started by this step; it is not adopted",
    }
