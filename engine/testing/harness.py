"""Virtual time: one case runs on the real :class:`~engine.runtime.Runtime` and a real Redis, with a
clock that stands still while a node runs and jumps to the next due delivery when nothing else is.

The harness is the case's dispatcher: published messages go into a due-time queue (ids deduplicated
for 10 minutes, like QStash and the local dispatcher), offloaded http calls are answered from the
mocks and their answers queued, and the case's events are queued at their time. An event due at T
is delivered before anything else due at T, so an event at 2d beats a wait's 3d timeout. Waits,
retry backoffs and timeouts therefore cost no time at all.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from engine.dispatch import CallResult
from engine.model import Message, OffloadRequest, Outgoing, StepContext
from engine.runtime import Runtime
from engine.testing.mocks import MockBook, context_of, judge
from engine.testing.spec import Case, Event

DEDUP_WINDOW_S = 600
MAX_DELIVERIES = 20_000  # a workflow that loops forever ends the case instead of the test run
EVENT, OTHER = 0, 1  # at the same instant, events first


class FrozenClock:
    """Virtual time that moves only when the harness moves it (so outputs are reproducible)."""

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance_to(self, when: float) -> None:
        if when > self._now:
            self._now = when


class TestRuntime(Runtime):
    """The real runtime, except that inline http calls are answered from the case's mocks."""

    __test__ = False  # not a pytest class

    book: MockBook

    def call_http(self, config: Any, ctx: Any, *, timeout_s: float, egress: Any = None) -> dict[str, Any]:
        from engine.steps import http, offload

        here = Message(ctx.execution_id, ctx.step, 0, ctx.branch)
        request = offload.build(config, ctx, timeout_s=max(timeout_s, 0.001), message=here)
        answer = self.book.http(request, ctx)
        if answer is None:
            return super().call_http(config, ctx, timeout_s=timeout_s, egress=egress)
        return judge(ctx.step, request, http._expect(config), answer)


@dataclass
class Observed:
    """What one case did: the final record, its history, vars, and the calls made."""

    execution_id: str
    record: dict[str, Any]
    history: list[dict[str, Any]]
    vars: dict[str, Any]
    calls: list[Any]
    problems: list[str]
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # every execution (children)
    workflows: dict[str, str] = field(default_factory=dict)  # execution id → workflow name


class QueueDispatcher:
    """Deliveries by due time; the runtime's Dispatcher and Offloader."""

    def __init__(self, clock: FrozenClock, runtime_ref: list[Runtime]) -> None:
        self.clock = clock
        self.queue: list[tuple[float, int, int, str, Any]] = []
        self.seen: dict[str, float] = {}
        self.counter = itertools.count()
        self.runtime_ref = runtime_ref

    def push(self, due: float, kind: str, payload: Any, priority: int = OTHER) -> None:
        heapq.heappush(self.queue, (due, priority, next(self.counter), kind, payload))

    def publish(self, outgoing: Sequence[Outgoing]) -> None:
        now = self.clock.now()
        for o in outgoing:
            first = self.seen.get(o.dedup_id)
            if first is not None and now - first < DEDUP_WINDOW_S:
                continue
            self.seen[o.dedup_id] = now
            due = o.not_before if o.not_before is not None else now + o.delay_ms / 1000
            self.push(max(due, now), "message", o.message)

    def call(self, request: OffloadRequest) -> None:
        """An offloaded http call: answered from the mocks (or made for real), answer queued now."""
        runtime = self.runtime_ref[0]
        book: MockBook = runtime.book  # type: ignore[attr-defined]
        workflow = runtime.store.header(request.message.execution_id).get("workflow") or ""
        ctx = context_of(request, workflow)
        try:
            answer = book.http(request, ctx)
        except Exception as exc:  # an unmocked/exhausted call: the step fails like a broken network
            error = getattr(getattr(exc, "error", None), "name", "test.unmocked")
            answer = CallResult(0, error=error, detail=str(exc))
        if answer is None:
            from engine.steps.offload import perform

            answer = perform(request, policy=runtime.egress)
        self.push(self.clock.now(), "complete", (request.message, answer))


@contextmanager
def environment(values: dict[str, str], declared: Sequence[str]) -> Iterator[None]:
    """The case's environment: its values, and every declared name it does not give *unset* (so the
    runner's own environment never leaks into a case)."""
    names = set(values) | set(declared)
    saved = {n: os.environ.get(n) for n in names}
    try:
        for n in names:
            if n in values:
                os.environ[n] = values[n]
            else:
                os.environ.pop(n, None)
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def run_case(case: Case, store: Any, execution_id: str, real_actions: Any = None) -> Observed:
    """Run ``case`` to quiescence (nothing left to deliver) and observe it."""
    from engine.catalog import Catalog

    clock = FrozenClock(case.now)
    ref: list[Runtime] = []
    dispatcher = QueueDispatcher(clock, ref)
    book = MockBook(case.workflow, case.graphs, case.mocks, case.allow_real, real_actions)
    catalog = Catalog(case.graphs)
    runtime = TestRuntime(
        store, dispatcher, catalog, actions=book.registry(), clock=clock, random=lambda: 0.5
    )
    runtime.book = book
    ref.append(runtime)
    declared = sorted({n for g in case.graphs.values() for n in g.env})
    with environment(case.env, declared):
        return _drive(case, runtime, dispatcher, clock, book, execution_id)


def _drive(
    case: Case,
    runtime: TestRuntime,
    dispatcher: QueueDispatcher,
    clock: FrozenClock,
    book: MockBook,
    eid: str,
) -> Observed:
    from engine.errors import InputInvalid

    try:
        runtime.start(case.workflow, case.input, eid)
    except InputInvalid as exc:
        details = "; ".join(f"{e['path']}: {e['message']}" for e in exc.errors)
        raise CaseError(f"the input does not match the workflow's input schema: {details}") from None
    waiting_after: list[Event] = []
    for event in case.events:
        if event.after is not None:
            waiting_after.append(event)
        else:
            dispatcher.push(event.at if event.at is not None else case.now, "event", event, EVENT)
    seen_history = 0
    deliveries = 0
    while dispatcher.queue:
        deliveries += 1
        if deliveries > MAX_DELIVERIES:
            book.problems.append(
                f"stopped after {MAX_DELIVERIES} deliveries: the workflow seems to loop forever"
            )
            break
        due, _, _, kind, payload = heapq.heappop(dispatcher.queue)
        clock.advance_to(due)
        if kind == "message":
            result = runtime.advance(payload)
            if result.kind == "busy":
                dispatcher.push(clock.now() + 1, "message", payload)
        elif kind == "complete":
            message, answer = payload
            result = runtime.complete_offloaded(message, answer)
            if result.kind == "busy":
                dispatcher.push(clock.now() + 1, "complete", payload)
        else:
            runtime.notify(payload.name, payload.key, payload.data)
        if waiting_after:
            history = runtime.history(eid)
            for entry in history[seen_history:]:
                if entry.get("phase") == "run" and entry.get("status") == "ok":
                    for event in [e for e in waiting_after if e.after == entry.get("step")]:
                        waiting_after.remove(event)
                        dispatcher.push(clock.now(), "event", event, EVENT)
            seen_history = len(history)
    for event in waiting_after:
        book.problems.append(
            f"event {event.name!r} (after step {event.after!r}) was never delivered: that step never finished"
        )
    return observe(runtime, eid, book)


class CaseError(Exception):
    """The case could not run at all (bad input); the report shows the message."""


def observe(runtime: Runtime, eid: str, book: MockBook) -> Observed:
    record = runtime.record(eid)
    history = runtime.history(eid)
    histories = {eid: history}
    workflows = {eid: record.get("workflow") or ""}
    for child in _children(runtime, eid):
        histories[child] = runtime.history(child)
        workflows[child] = runtime.store.header(child).get("workflow") or ""
    return Observed(
        eid,
        record,
        history,
        runtime.store.all_vars(eid),
        list(book.calls),
        list(book.problems),
        histories,
        workflows,
    )


def _children(runtime: Runtime, eid: str) -> list[str]:
    """Every other execution in the case's database: the children it started (a case owns its db)."""
    found = set()
    for raw in runtime.store.client.scan_iter(match="hf:{*}:h", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        child = key[len("hf:{") : -len("}:h")]
        if child != eid and runtime.store.header(child).get("workflow"):  # an execution, not an index
            found.add(child)
    return sorted(found)


__all__ = ["CaseError", "FrozenClock", "Observed", "StepContext", "TestRuntime", "run_case"]
