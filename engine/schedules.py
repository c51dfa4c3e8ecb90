"""Schedules: starting a workflow's execution at each fire time of its `schedules`, on either path.

Locally, ``hopflow serve`` (with the local dispatcher) runs :class:`Scheduler`: one
:meth:`~Scheduler.tick` looks at every schedule once, and when a fire time has passed since the last
one recorded in Redis it starts an execution with the id ``<workflow>@<fire time, UTC ISO>``
(``.<n>`` appended for the workflow's n-th schedule, n > 0). ``Runtime.start`` is idempotent per id,
so two serve processes ticking at the same moment start it once. Catch-up after downtime: only the
most recent missed fire time runs, once; older missed times are skipped (logged), never a burst. A
schedule seen for the first time starts from now: it does not fire for a time that passed before it
existed, unless that time is within ``GRACE_S``.

With QStash, QStash keeps the schedules (engine/schedule_sync.py) and posts a fire body to the
webhook, which calls :func:`fire_delivered`. QStash says nothing signed about *which* fire time a
delivery is for, so the fire time is the schedule's most recent one at arrival (``FIRE_EARLY_S`` of
clock skew allowed): every copy and retry of one fire that arrives before the next fire time gets the
same id and starts one execution; a retry that arrives later counts for the later time (the same
"only the most recent missed time" catch-up as locally). The overlap policy (:func:`fire`) is shared.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from typing import Any

from dsl.graph import Graph, thaw
from dsl.schedule_times import next_fires, previous_fire
from engine.errors import InputInvalid, UnknownExecution

log = logging.getLogger("hopflow.schedules")

GRACE_S = 60.0  # a schedule first seen this soon after a fire time still fires for it
TICK_S = 1.0
FIRE_EARLY_S = 15.0  # a QStash fire arriving this much before its time (clocks apart) counts for it


def state_key(workflow: str, index: int, prefix: str = "") -> str:
    """``prefix``: the store's namespace prefix (HOPFLOW_NAMESPACE), so deployments keep apart."""
    return f"{prefix}hf:sched:{{{workflow}}}:{index}"


def fire_id(workflow: str, index: int, at: float) -> str:
    iso = dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{workflow}@{iso}" + (f".{index}" if index else "")


@dataclass
class Fired:
    workflow: str
    index: int
    at: float
    execution_id: str | None  # None: skipped (overlap) or failed to start
    note: str = ""


class ScheduleUnknown(Exception):
    """A fire for a schedule this deployment does not declare (removed, renamed, another namespace):
    retrying cannot help; ``hopflow schedules sync`` removes stale QStash schedules."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def fire(runtime: Any, graph: Graph, index: int, schedule: Any, due: float) -> Fired:
    """Start ``graph``'s execution for fire time ``due`` of its ``index``-th schedule, under its overlap
    policy. Idempotent per fire time: the id is :func:`fire_id`, and starting an existing id is a no-op."""
    redis = runtime.store.client
    key = state_key(graph.name, index, getattr(runtime.store, "prefix", ""))
    eid = fire_id(graph.name, index, due)
    previous = redis.hget(key, "eid")
    previous_id = previous.decode() if isinstance(previous, bytes) else previous
    overlap = schedule.get("overlap", "skip")
    last_raw = redis.hget(key, "last")
    if last_raw is None or float(last_raw) < due:
        redis.hset(key, mapping={"last": repr(due)})
    if previous_id and previous_id != eid and _running(runtime, previous_id):
        if overlap == "skip":
            log.info(
                "schedule %s#%d: %s is still running; fire at %s skipped", graph.name, index, previous_id, due
            )
            return Fired(graph.name, index, due, None, f"skipped: {previous_id} is still running")
        if overlap == "cancel-previous":
            try:
                runtime.cancel(previous_id)
            except UnknownExecution:  # pragma: no cover - it was running a moment ago
                pass
    value = thaw(schedule["input"]) if "input" in schedule else {}
    try:
        runtime.start(graph.name, value, eid)
    except InputInvalid as exc:
        log.warning("schedule %s#%d did not start: %s", graph.name, index, exc)
        return Fired(graph.name, index, due, None, "the input does not match the workflow's schema")
    redis.hset(key, mapping={"eid": eid})
    return Fired(graph.name, index, due, eid)


def _running(runtime: Any, execution_id: str) -> bool:
    try:
        status = runtime.record(execution_id).get("status")
    except UnknownExecution:
        return False
    return status in ("running", "compensating")


def fire_delivered(
    runtime: Any, workflow: str, index: int, namespace: str, now: float | None = None
) -> Fired:
    """A fire QStash delivered for ``workflow``'s ``index``-th schedule (the names in the fire's body),
    arriving at ``now`` (default the runtime's clock): started for the schedule's most recent fire time.

    The deployed workflow decides the cron, time zone, input and overlap, never the fire's body.
    ScheduleUnknown when this deployment declares no such schedule.
    """
    own = getattr(runtime.store, "namespace", "")
    if namespace != own:
        raise ScheduleUnknown(
            f"this fire is for namespace {namespace or '(none)'}, this deployment's is {own or '(none)'}"
        )
    catalog = runtime.catalog
    if workflow not in catalog.names():
        raise ScheduleUnknown(
            f"no workflow {workflow!r} is deployed: its QStash schedule is stale "
            "(run `hopflow schedules sync`)"
        )
    graph = catalog.get(workflow)
    if index >= len(graph.schedules):
        raise ScheduleUnknown(
            f"workflow {workflow!r} declares no schedule #{index}: its QStash schedule is stale "
            "(run `hopflow schedules sync`)"
        )
    schedule = graph.schedules[index]
    now = runtime.clock.now() if now is None else now
    due = previous_fire(schedule["cron"], schedule.get("timezone", "UTC"), now + FIRE_EARLY_S)
    return fire(runtime, graph, index, schedule, due)


class Scheduler:
    """Fires the schedules of ``runtime``'s catalog; :meth:`start` runs :meth:`tick` in a thread."""

    def __init__(self, runtime: Any, *, tick_s: float = TICK_S) -> None:
        self.runtime = runtime
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scheduled(self) -> list[Graph]:
        catalog = self.runtime.catalog
        graphs = [catalog.get(name) for name in catalog.names()]
        return [g for g in graphs if g.schedules]

    def tick(self, now: float | None = None) -> list[Fired]:
        """Start what is due at ``now`` (epoch seconds; default the runtime's clock)."""
        now = self.runtime.clock.now() if now is None else now
        fired: list[Fired] = []
        for graph in self.scheduled():
            for index, schedule in enumerate(graph.schedules):
                done = self._one(graph, index, schedule, now)
                if done is not None:
                    fired.append(done)
        return fired

    def _one(self, graph: Graph, index: int, schedule: Any, now: float) -> Fired | None:
        cron, zone = schedule["cron"], schedule.get("timezone", "UTC")
        due = previous_fire(cron, zone, now)
        redis = self.runtime.store.client
        key = state_key(graph.name, index, getattr(self.runtime.store, "prefix", ""))
        last_raw = redis.hget(key, "last")
        if last_raw is None:
            if now - due > GRACE_S:
                redis.hsetnx(key, "last", repr(due))  # first seen: start from now
                return None
        else:
            last = float(last_raw)
            if due <= last:
                return None
            missed = next_fires(cron, zone, last, 2)
            if len(missed) > 1 and missed[1] < due:
                log.info(
                    "schedule %s#%d: fire times before %s were missed and are skipped", graph.name, index, due
                )
        return fire(self.runtime, graph, index, schedule, due)

    # ------------------------------------------------------------------------------ the loop

    def start(self) -> threading.Thread:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hopflow-scheduler", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a tick that fails (Redis away) is retried on the next one
                log.exception("schedules: tick failed")
            self._stop.wait(self.tick_s)
