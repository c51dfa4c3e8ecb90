"""Guarantees 1-3 (no double advance, no lost execution, effects exactly once), by crashing at every
node boundary and by racing workers on real threads.

For each workflow shape and each boundary — before the step, after the step (nothing written), before
the checkpoint of any node (compensations included), after the checkpoint (nothing published), after
the publish (outbox not cleared), and a publish that fails — we first run the workflow undisturbed
(the baseline), count how often that boundary is passed, and then, for every single occurrence N,
run it again with a crash injected at the N-th passage.

A crash is an exception raised from the runtime's fault hook that the test treats like the process
dying: the delivery is not acknowledged (so the message is redelivered, as QStash or the local
dispatcher would), and for crashes inside the node the branch lock is *not* released in-process — it
stays held until its (short) TTL runs out, exactly what a dead worker leaves behind. Redis is real.

Every crashed run must end exactly like the baseline: same status, output and error, the same trace
per branch, the same effects (deduplicated by ``ctx.idempotency_key``) and compensations, nothing left
in the outbox and no lock held — and it must also satisfy the reference model (which checks the
compensation order against the actual completion order: branch interleaving is timing, not meaning).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import QueueDispatcher
from reference_model import Act, Each, Ledger, Par, Plan, Switch, Wait, check

from engine.actions import ActionRegistry
from engine.catalog import Catalog
from engine.clock import VirtualClock
from engine.dispatch import DispatchError
from engine.model import Message
from engine.runtime import Runtime
from engine.state.store import Store, lock_key

HELD_MS = 25  # how long a crashed worker's lock outlives it (its TTL, shortened for the tests)


class Crash(Exception):
    """The process died here."""


class CrashStore(Store):
    """The real store, except that a simulated crash inside a node skips the in-process unlock: the
    dead worker's lock stays held until its TTL (``HELD_MS``) expires, as it would in production."""

    crashing = False
    faults: Any = None

    def unlock(self, execution_id: str, branch: str, token: str) -> None:
        if self.crashing:
            self.crashing = False
            self.client.pexpire(lock_key(execution_id, branch), HELD_MS)
            return
        super().unlock(execution_id, branch, token)

    def run(self, name: str, execution_id: str, args: dict[str, Any], branch: str | None = None) -> dict:
        """``before_checkpoint``: the node — *any* node: a step, a compensation, a halted branch —
        ran, and the worker dies before writing it (its lock stays until the TTL)."""
        if name == "checkpoint" and self.faults is not None and self.faults.active:
            message = Message(execution_id, "?", int(args.get("seq") or 0), branch or "")
            if self.faults.hit("before_checkpoint", message):
                self.client.pexpire(lock_key(execution_id, branch or ""), HELD_MS)
                raise Crash(f"before_checkpoint #{self.faults.nth}")
        return super().run(name, execution_id, args, branch)


@dataclass
class Faults:
    """Crash at the ``nth`` passage of ``point`` (0: never; just count) while a delivery runs."""

    store: CrashStore
    dispatcher: QueueDispatcher
    point: str | None = None
    nth: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    active: bool = False
    fired: list[tuple[str, Message]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store.faults = self

    def hit(self, point: str, message: Message) -> bool:
        """Count a passage; whether this is the one to crash at."""
        self.counts[point] = self.counts.get(point, 0) + 1
        target = "after_checkpoint" if self.point == "publish_error" else self.point
        if point != target or self.counts[point] != self.nth:
            return False
        self.fired.append((point, message))
        return True

    def __call__(self, point: str, message: Message) -> None:
        if not self.active or not self.hit(point, message):
            return
        if self.point == "publish_error":
            self.dispatcher.fail_next = 1  # the publish that follows raises DispatchError
            return
        if point in ("before_step", "after_step", "after_checkpoint", "before_chain"):
            # after a checkpoint that began the next node (a chain), that node's lock is held too
            self.store.crashing = True
        raise Crash(f"{point} #{self.nth}")


@dataclass
class Run:
    runtime: Runtime
    dispatcher: QueueDispatcher
    faults: Faults
    ledger: Ledger
    store: CrashStore
    eid: str = ""
    deliveries: int = 0
    crashes: int = 0

    def record(self) -> dict[str, Any]:
        return self.runtime.record(self.eid)


def make_run(
    redis_db: Any, plan: Plan, point: str | None = None, nth: int = 0, texts: list[str] | None = None
) -> Run:
    clock = VirtualClock()
    dispatcher = QueueDispatcher(clock)
    store = CrashStore(redis_db)
    ledger = Ledger()
    registry = ActionRegistry()
    for name, fn in ledger.actions().items():
        registry.register(name, fn)
    faults = Faults(store, dispatcher, point, nth)
    runtime = Runtime(
        store,
        dispatcher,
        Catalog.from_texts(texts or [plan.yaml()]),
        actions=registry,
        clock=clock,
        faults=faults,
        random=lambda: 0.5,
    )
    return Run(runtime, dispatcher, faults, ledger, store)


def drive(run: Run, plan: Plan, eid: str, limit: int = 2000) -> Run:
    """Start and deliver until the queue is empty. A crashed or busy delivery is redelivered first."""
    run.eid = run.runtime.start(plan.name, plan.input, eid)
    return deliver_all(run, limit)


def deliver_all(run: Run, limit: int = 2000, stop_at: Callable[[], bool] | None = None) -> Run:
    q = run.dispatcher
    while q.queue and not (stop_at is not None and stop_at()):
        assert run.deliveries < limit, "no progress"
        outgoing = q.pop()
        assert outgoing is not None
        run.deliveries += 1
        run.faults.active = True
        try:
            result = run.runtime.advance(outgoing.message)
        except (Crash, DispatchError):
            run.store.crashing = False  # a crash that held no lock: the next in-process unlock is real
            run.crashes += 1
            heapq.heappush(q.queue, (float("-inf"), -run.deliveries, outgoing))  # redelivered next
            continue
        finally:
            run.faults.active = False
            q.fail_next = 0  # an armed publish failure that found nothing to publish
        if result.kind == "busy":  # a dead worker's lock: QStash retries a little later
            time.sleep(HELD_MS / 5000)
            heapq.heappush(q.queue, (float("-inf"), -run.deliveries, outgoing))
    return run


def leftovers(run: Run) -> tuple[list[Any], list[str]]:
    outbox = run.store.outbox(run.eid)
    locks = [k for k in run.store.client.scan_iter(match=f"hf:{{{run.eid}}}:l:*")]
    return outbox, locks


# ------------------------------------------------------------------------------------------ shapes

SHAPES: dict[str, Plan] = {
    # a → b → c fails: undo b (whose undo fails once and is retried), then a
    "linear_compensation": Plan(
        "linear",
        (
            Act("a", comp=True),
            Act("b", comp=True, comp_fail_until=1),
            Act("c", fatal=True),
            Act("never"),
        ),
    ),
    "switch": Plan(
        "switching",
        (
            Act("first"),
            Switch("pick", "go", "target"),
            Act("jumped_over"),
            Act("target", when="off"),
            Act("last"),
        ),
        (("go", True), ("off", False)),
    ),
    "parallel": Plan(
        "par",
        (
            Act("before", comp=True),
            Par(
                "fan",
                (
                    (Act("a1", comp=True), Act("a2", comp=True)),
                    (Act("b1", comp=True),),
                    (Act("c1"), Wait("c_wait", 2000), Act("c2", comp=True)),
                ),
            ),
            Act("after", fatal=True),
        ),
    ),
    "parallel_branch_fails": Plan(
        "par-abort",
        (
            Act("before", comp=True),
            Par(
                "fan",
                (
                    (Act("a1", comp=True), Wait("a_wait", 3000), Act("a2", comp=True)),
                    (Act("b1", comp=True), Act("b2", fatal=True)),
                ),
            ),
            Act("never"),
        ),
    ),
    "foreach": Plan(
        "each",
        (
            Each(
                "items",
                (1, 2, 3, 4, 5),
                2,
                (Act("x", comp=True), Act("y", fail_until=1, attempts=2)),
            ),
            Act("done"),
        ),
    ),
    "retry": Plan(
        "retrying",
        (
            Act("flaky", fail_until=2, attempts=3, comp=True),
            Act("hopeless", fail_until=9, attempts=2, catch_to="handler"),
            Act("skipped_by_catch"),
            Act("handler"),
        ),
    ),
    "wait_for": Plan(
        "waiting",
        (Act("a"), Wait("pause", 5000), Act("b"), Wait("again", 60_000), Act("c")),
    ),
}

OPEN_ENDED = {"parallel_branch_fails"}
# the runtime's fault points, plus two of ours: a checkpoint never written by a worker that died
# after running *any* node (the runtime's before/after_step hooks are not called for compensations
# and halted branches), and a publish that fails after the checkpoint
POINTS = (
    "before_step",
    "after_step",
    "before_checkpoint",
    "after_checkpoint",
    "after_publish",
    "publish_error",
)


def _summary(run: Run, eid: str | None = None) -> dict[str, Any]:
    """What must not change. Branch runs interleave by completion time (timing, not semantics), so
    the trace is compared per branch in order, and globally as a multiset; the compensation order
    depends on that interleaving and is checked against the actual completion order by ``check``."""
    eid = eid or run.eid
    rec = run.runtime.record(eid)
    per_branch: dict[str, list[tuple[Any, ...]]] = {}
    for h in run.runtime.history(eid):
        if h.get("phase") in ("run", "skip"):
            item = (h.get("step"), h["phase"], h.get("status"), h.get("attempt"))
            per_branch.setdefault(h.get("branch") or "", []).append(item)
    return {
        "status": rec["status"],
        "output": rec["output"],
        "error": rec["error"],
        "trace": sorted(tuple(t.values()) for t in rec["trace"]),
        "per_branch": per_branch,
        "work": sorted(k.split(":", 1)[1] for k in run.ledger.only(eid).work_keys()),
        "undo": sorted(k.split(":", 1)[1] for k in run.ledger.only(eid).undo_keys()),
    }


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("point", POINTS)
def test_a_crash_at_any_boundary_changes_nothing(redis_db: Any, shape: str, point: str) -> None:
    plan = SHAPES[shape]
    base = drive(make_run(redis_db, plan), plan, f"base-{shape}")
    check(plan, base.eid, base.record(), base.runtime.history(base.eid), base.ledger)
    expected = _summary(base)
    passages = base.faults.counts.get("after_checkpoint" if point == "publish_error" else point, 0)
    assert passages >= 3, f"{shape}: the baseline passed {point} only {passages} times"

    for nth in range(1, passages + 1):
        run = drive(make_run(redis_db, plan, point, nth), plan, f"{shape}-{point}-{nth}")
        where = f"{shape}: crash at {point} #{nth} ({run.faults.fired})"
        assert run.faults.fired, f"{where}: the crash never fired"
        got = _summary(run)
        if shape in OPEN_ENDED:  # how far a halted sibling got is timing: the reference model judges it
            got = {k: v for k, v in got.items() if k in ("status", "output", "error")}
            assert got == {k: expected[k] for k in got}, where
        else:
            assert got == expected, where
        check(plan, run.eid, run.record(), run.runtime.history(run.eid), run.ledger)
        outbox, locks = leftovers(run)
        assert outbox == [] and locks == [], f"{where}: left outbox {outbox} / locks {locks}"


# ----------------------------------------------------------------------- focused crash scenarios


def test_after_step_crash_reruns_the_step_but_the_effect_applies_once(redis_db: Any) -> None:
    plan = Plan("once", (Act("pay", comp=True), Act("ship")))
    run = drive(make_run(redis_db, plan, "after_step", 1), plan, "once-1")
    assert run.record()["status"] == "succeeded"
    key = "once-1:pay"
    assert run.ledger.calls_for(key) == 2, "the crashed step must run again (at least once)"
    assert run.ledger.work_keys() == [key, "once-1:ship"]  # deduplicated downstream: once each


def test_a_crashed_workers_lock_makes_redeliveries_wait_until_it_expires(redis_db: Any) -> None:
    plan = Plan("held", (Act("a"), Act("b")))
    run = make_run(redis_db, plan, "before_step", 1)
    eid = run.runtime.start(plan.name, plan.input, "held-1")
    run.eid = eid
    first = run.dispatcher.pop()
    assert first is not None
    run.faults.active = True
    with pytest.raises(Crash):
        run.runtime.advance(first.message)
    run.faults.active = False
    held = run.store.client.pttl(lock_key(eid, ""))
    assert 0 < held <= HELD_MS, "the dead worker's lock is still held (until its TTL)"
    assert run.runtime.advance(first.message).kind == "busy"  # → 5xx, QStash retries later
    assert run.ledger.calls == []  # nothing ran twice while the lock was held
    deadline = time.monotonic() + 5
    while run.store.client.exists(lock_key(eid, "")) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert run.runtime.advance(first.message).kind == "advanced"
    run.dispatcher.drain(run.runtime)
    assert run.record()["status"] == "succeeded"


@pytest.mark.parametrize("point", ["after_checkpoint", "before_chain"])
def test_a_crash_right_after_the_checkpoint_that_began_the_next_node(redis_db: Any, point: str) -> None:
    """A chained node is begun by the previous node's checkpoint script (one round trip, not two):
    a worker dying right after that script leaves the next node's lock held until its TTL. The
    redelivery is stale and publishes the outbox; the next node's delivery waits (busy) for the
    lock, then runs: every step once, the run ends like an undisturbed one."""
    steps = (Act("first"), Switch("pick", "go", "last"), Act("skipped"), Act("last"))
    plan = Plan("chained", steps, (("go", True),))
    run = make_run(redis_db, plan, point, 1)
    run.runtime.max_nodes_per_call = 5  # `pick` (a switch: cheap) runs in the delivery of `first`
    scripts: list[str] = []
    store_run = run.store.run

    def counted(name: str, *args: Any, **kwargs: Any) -> dict:
        scripts.append(name)
        return store_run(name, *args, **kwargs)

    run.store.run = counted  # type: ignore[method-assign]
    eid = run.runtime.start(plan.name, plan.input, f"began-{point}")
    run.eid = eid
    first = run.dispatcher.pop()
    assert first is not None and first.message.node == "first"
    scripts.clear()
    run.faults.active = True
    with pytest.raises(Crash):
        run.runtime.advance(first.message)
    run.faults.active = False
    assert scripts == ["begin", "checkpoint"], "the checkpoint of `first` began `pick` itself"
    assert run.store.branches_one(eid, "")["node"] == "pick"
    held = run.store.client.pttl(lock_key(eid, ""))
    assert 0 < held <= HELD_MS, "the dead worker's lock on `pick` is still held (until its TTL)"
    assert [o.message.node for _, o, _ in run.store.outbox(eid)] == ["pick"]
    assert run.runtime.advance(first.message).kind == "stale"  # its redelivery publishes the outbox
    pick = run.dispatcher.pop()
    assert pick is not None and pick.message.node == "pick"
    assert run.runtime.advance(pick.message).kind == "busy"  # → 5xx, redelivered later
    deadline = time.monotonic() + 5
    while run.store.client.exists(lock_key(eid, "")) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert run.runtime.advance(pick.message).kind == "advanced"
    run.dispatcher.drain(run.runtime)
    record = run.record()
    assert record["status"] == "succeeded"
    assert [t["step"] for t in record["trace"]] == ["first", "pick", "last"]
    assert run.ledger.work_keys() == [f"{eid}:first", f"{eid}:last"]  # once each
    assert leftovers(run) == ([], [])


def test_crash_while_publishing_the_first_message_of_start(redis_db: Any) -> None:
    """``start`` crashed after publishing (outbox not cleared): a retried start with the same id
    re-publishes, creates nothing twice, and the execution runs once."""
    plan = Plan("first", (Act("a"),))
    run = make_run(redis_db, plan)
    publish = run.dispatcher.publish

    def publish_then_die(outgoing: Any) -> None:
        publish(outgoing)  # the first message is out ...
        raise Crash("start")  # ... and the process dies before the outbox is cleared

    run.dispatcher.publish = publish_then_die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        run.runtime.start(plan.name, plan.input, "first-1")
    run.dispatcher.publish = publish  # type: ignore[method-assign]
    assert len(run.store.outbox("first-1")) == 1
    assert run.runtime.start(plan.name, plan.input, "first-1") == "first-1"
    run.eid = "first-1"
    run.dispatcher.drain(run.runtime)
    assert run.record()["status"] == "succeeded"
    assert run.ledger.work_keys() == ["first-1:a"]
    assert len([h for h in run.runtime.history("first-1") if h.get("event") == "started"]) == 1


def test_a_finished_execution_leaves_the_active_index_even_after_a_crash(redis_db: Any) -> None:
    """A crash after the final checkpoint (before the in-process "finished" bookkeeping) must not
    leave the execution in ``hf:active`` forever: ``recover`` scans that index on every sweep."""
    plan = Plan("tidy", (Act("a"), Act("b")))
    base = drive(make_run(redis_db, plan), plan, "tidy-base")
    last = base.faults.counts["after_checkpoint"]
    run = drive(make_run(redis_db, plan, "after_checkpoint", last), plan, "tidy-1")
    assert run.record()["status"] == "succeeded"
    run.runtime.recover(older_than_s=0)
    assert "tidy-1" not in run.store.active(), "a succeeded execution is still listed as active"


# ------------------------------------------------------------- lock expiry and fencing (real time)


class ShortLockStore(CrashStore):
    """Branch locks live ``lock_ms`` (real milliseconds) instead of the step timeout plus a margin."""

    lock_ms = 300

    def run(self, name: str, execution_id: str, args: dict[str, Any], branch: str | None = None) -> dict:
        if name == "begin":
            args["lock_ms"] = self.lock_ms
        return super().run(name, execution_id, args, branch)


class Stall:
    """A fault hook that makes the worker running on one chosen thread stall at ``point`` until told
    to go on (the process hangs: GC pause, a frozen container) — every other thread passes."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.stalled_thread: int | None = None
        self.reached = threading.Event()
        self.go_on = threading.Event()

    def __call__(self, point: str, message: Message) -> None:
        if point == self.point and threading.get_ident() == self.stalled_thread:
            self.reached.set()
            assert self.go_on.wait(30), "the test never released the stalled worker"


def _short_lock_run(redis_db: Any, plan: Plan, stall: Stall) -> Run:
    run = make_run(redis_db, plan)
    store = ShortLockStore(redis_db)
    run.store = store
    run.runtime.store = store
    run.runtime.faults = stall
    return run


def _wait_lock_gone(store: Store, eid: str, branch: str = "") -> None:
    deadline = time.monotonic() + 10
    while store.client.exists(lock_key(eid, branch)):
        assert time.monotonic() < deadline, "the lock never expired"
        time.sleep(0.01)


def _deliver_in_thread(run: Run, message: Message, stall: Stall) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def work() -> None:
        stall.stalled_thread = threading.get_ident()
        try:
            out.append(run.runtime.advance(message))
        except BaseException as exc:  # surfaced by the test
            out.append(exc)

    thread = threading.Thread(target=work, name="stalled-worker", daemon=True)
    thread.start()
    return thread, out


@pytest.mark.parametrize("point", ["before_step", "after_step"])
def test_a_worker_whose_lock_expired_cannot_overwrite_the_newer_checkpoint(redis_db: Any, point: str) -> None:
    """Two real threads, a real lock TTL: worker A stalls mid-node past its lock; worker B gets the
    redelivery, takes the lock, runs the step and checkpoints; A wakes up and its checkpoint is
    refused (fencing) — the execution advances exactly once and keeps B's result."""
    plan = Plan("fenced", (Act("pay", comp=True), Act("ship")))
    stall = Stall(point)
    run = _short_lock_run(redis_db, plan, stall)
    eid = run.runtime.start(plan.name, plan.input, f"fenced-{point}")
    run.eid = eid
    first = run.dispatcher.pop()
    assert first is not None
    thread, out_a = _deliver_in_thread(run, first.message, stall)
    assert stall.reached.wait(10)
    _wait_lock_gone(run.store, eid)  # A is still "running"; its lock has expired

    b = run.runtime.advance(first.message)  # the dispatcher's redelivery, on this thread
    assert b.kind == "advanced"
    branch_after_b = run.store.branches_one(eid, "")
    stall.go_on.set()
    thread.join(10)
    assert not thread.is_alive()
    (a,) = out_a
    assert not isinstance(a, BaseException), a
    assert a.kind == "stale", "the late worker's checkpoint must be refused"
    assert run.store.branches_one(eid, "") == branch_after_b, "the late worker changed the branch"
    assert not run.store.client.exists(lock_key(eid, "")), "the late worker must not hold or free B's lock"

    run.dispatcher.drain(run.runtime)
    rec = run.record()
    assert rec["status"] == "succeeded"
    assert [(t["step"], t["phase"]) for t in rec["trace"]] == [("pay", "run"), ("ship", "run")]
    assert run.ledger.work_keys() == [f"{eid}:pay", f"{eid}:ship"]
    assert run.ledger.calls_for(f"{eid}:pay") == 2  # both workers ran it: at least once, applied once
    assert run.store.client.llen(f"hf:{{{eid}}}:c") == 1, "one compensation registered, not two"


def test_a_worker_whose_lock_expired_while_nobody_else_came_does_not_lose_the_execution(
    redis_db: Any,
) -> None:
    """Guarantee 2 with a slow worker: A stalls past its lock TTL but no redelivery happens in the
    meantime (nobody else advanced: ``seq`` is unchanged). A's late checkpoint may be refused, but
    then the delivery must not be acknowledged as done ("stale") — nothing else would ever advance
    the execution: the outbox is empty and the branch is not parked, so neither a redelivery nor
    ``recover`` brings it back."""
    plan = Plan("slow", (Act("pay"), Act("ship")))
    stall = Stall("after_step")
    run = _short_lock_run(redis_db, plan, stall)
    eid = run.runtime.start(plan.name, plan.input, "slow-1")
    run.eid = eid
    first = run.dispatcher.pop()
    assert first is not None
    thread, out_a = _deliver_in_thread(run, first.message, stall)
    assert stall.reached.wait(10)
    _wait_lock_gone(run.store, eid)
    stall.go_on.set()
    thread.join(10)
    (a,) = out_a
    acknowledged = not isinstance(a, BaseException) and a.kind in ("advanced", "stale", "finished")
    if not acknowledged:  # busy / an exception → 5xx → the dispatcher redelivers
        heapq.heappush(run.dispatcher.queue, (float("-inf"), -1, first))
    run.dispatcher.drain(run.runtime)
    run.runtime.recover(older_than_s=0)
    run.dispatcher.drain(run.runtime)
    rec = run.record()
    assert rec["status"] == "succeeded", (
        f"the execution is stuck at {rec['current']} after the slow worker's delivery was answered "
        f"{getattr(a, 'kind', a)!r}"
    )


# ------------------------------- event waits, child workflows, deadlines, cancel, resume

EVENTS = """
name: approval
steps:
  - id: ask
    action: t.work
    with: {step: ask}
  - id: answer
    wait: {event: approved, key: "{{ execution.id }}"}
  - id: after
    action: t.work
    with: {step: after}
  - id: done
    succeed: {output: "{{ steps.answer.output }}"}
"""

PARENT = """
name: parent
steps:
  - id: a
    action: t.work
    with: {step: a}
    compensate:
      action: t.undo
      with: {step: a}
  - id: kid
    workflow: {name: kid, input: {fail: "{{ input.fail }}"}}
  - id: b
    action: t.work
    with: {step: b}
"""

KID = """
name: kid
steps:
  - id: k1
    action: t.work
    with: {step: k1}
    compensate:
      action: t.undo
      with: {step: k1}
  - id: k2
    action: t.work
    with: {step: k2, fatal: "{{ input.fail }}"}
"""


def _event_after_wait(run: Run, eid: str) -> list[str]:
    run.eid = run.runtime.start("approval", {}, eid)
    deliver_all(run)
    assert run.runtime.record(eid)["status"] == "running"
    assert run.runtime.notify("approved", eid, {"by": "ann"}) == 1
    deliver_all(run)
    return [eid]


def _event_before_wait(run: Run, eid: str) -> list[str]:
    assert run.runtime.notify("approved", eid, {"by": "ann"}) == 0  # kept for the wait
    run.eid = run.runtime.start("approval", {}, eid)
    deliver_all(run)
    return [eid]


def _child(fail: bool) -> Callable[[Run, str], list[str]]:
    def scenario(run: Run, eid: str) -> list[str]:
        run.eid = run.runtime.start("parent", {"fail": fail}, eid)
        deliver_all(run)
        headers = [k for k in run.store.client.scan_iter(match=f"hf:{{{eid}~*}}:h")]
        assert len(headers) == 1, f"{len(headers)} child executions"
        child = headers[0].decode().split("{", 1)[1].split("}", 1)[0]
        return [eid, child]

    return scenario


TIMED = """
name: timed
timeout: 30m
steps:
  - id: a
    action: t.work
    with: {step: a}
    compensate:
      action: t.undo
      with: {step: a}
  - id: nap
    wait: {for: 1h}
  - id: b
    action: t.work
    with: {step: b}
"""

STUCK = """
name: stuck
steps:
  - id: a
    action: t.work
    with: {step: a}
    compensate:
      action: t.undo
      with: {step: a}
      retry: {max_attempts: 2, interval: 1s, jitter: none, on: [action.Transient]}
  - id: b
    action: t.work
    with: {step: b}
    compensate:
      action: t.undo
      with: {step: b}
  - id: c
    action: t.work
    with: {step: c, fatal: true}
"""


def _timed_out(run: Run, eid: str) -> list[str]:
    """The execution's own deadline passes while it waits: halt, compensate, ``failed``-like end."""
    run.eid = run.runtime.start("timed", {}, eid)
    deliver_all(run)
    rec = run.runtime.record(eid)
    assert rec["status"] == "compensated" and rec["error"]["name"] == "timeout", rec
    return [eid]


def _cancelled(run: Run, eid: str) -> list[str]:
    run.eid = run.runtime.start("timed", {}, eid)
    deliver_all(run, stop_at=lambda: run.runtime.record(eid)["current"][0]["phase"] == "park")
    run.runtime.cancel(eid)
    deliver_all(run)
    rec = run.runtime.record(eid)
    assert rec["status"] == "cancelled", rec
    return [eid]


def _resumed(run: Run, eid: str) -> list[str]:
    """A compensation exhausts its retries (parked for an operator), is repaired, and resumed."""
    run.ledger.broken.add("a")
    run.eid = run.runtime.start("stuck", {}, eid)
    deliver_all(run)
    assert run.runtime.record(eid)["status"] == "compensation_failed"
    run.ledger.broken.clear()
    run.runtime.resume(eid)
    deliver_all(run)
    return [eid]


SCENARIOS: dict[str, tuple[list[str], Callable[[Run, str], list[str]]]] = {
    "execution_timeout": ([TIMED], _timed_out),
    "cancel_while_waiting": ([TIMED], _cancelled),
    "compensation_failed_then_resumed": ([STUCK], _resumed),
    "event_after_wait": ([EVENTS], _event_after_wait),
    "event_before_wait": ([EVENTS], _event_before_wait),
    "child_succeeds": ([PARENT, KID], _child(False)),
    "child_fails": ([PARENT, KID], _child(True)),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("point", POINTS)
def test_crashes_around_waits_children_timeouts_cancel_and_resume(
    redis_db: Any, scenario: str, point: str
) -> None:
    """Whatever boundary a worker dies at: an event is never lost or consumed twice, a child is
    started exactly once, a deadline, a cancel and a resume end the same way as without the crash."""
    texts, play = SCENARIOS[scenario]
    base = make_run(redis_db, Plan("-", ()), texts=texts)
    eids = play(base, f"b-{scenario}")
    expected = [_summary(base, e) for e in eids]
    assert expected[0]["status"] in ("succeeded", "compensated", "cancelled"), expected[0]
    passages = base.faults.counts.get("after_checkpoint" if point == "publish_error" else point, 0)
    assert passages >= 2
    for nth in range(1, passages + 1):
        run = make_run(redis_db, Plan("-", ()), point, nth, texts=texts)
        got_eids = play(run, f"{scenario}-{point}-{nth}")
        where = f"{scenario}: crash at {point} #{nth} ({run.faults.fired})"
        assert run.faults.fired, where
        assert [_summary(run, e) for e in got_eids] == expected, where
        for e in got_eids:
            assert run.store.outbox(e) == [], where


# ------------------------------------------------- concurrent duplicate deliveries (real threads)


class ThreadedBus:
    """Every published message is handed to ``copies`` workers at once (duplicates in flight at the
    same time, on different threads); busy answers are redelivered a moment later."""

    def __init__(self, copies: int) -> None:
        self.copies = copies
        self.cv = threading.Condition()
        self.items: list[Message] = []
        self.inflight = 0
        self.kinds: list[str] = []
        self.errors: list[BaseException] = []

    def publish(self, outgoing: Any) -> None:
        with self.cv:
            for o in outgoing:
                self.items.extend([o.message] * self.copies)
            self.cv.notify_all()

    def worker(self, runtime: Runtime) -> None:
        while True:
            with self.cv:
                while not self.items and self.inflight:
                    self.cv.wait(0.05)
                if not self.items:
                    self.cv.notify_all()
                    return
                message = self.items.pop(0)
                self.inflight += 1
            try:
                kind = runtime.advance(message).kind
            except BaseException as exc:
                self.errors.append(exc)
                kind = "error"
            with self.cv:
                self.inflight -= 1
                self.kinds.append(kind)
                if kind == "busy":
                    self.items.append(message)
                self.cv.notify_all()
            if kind == "busy":
                time.sleep(0.002)

    def run(self, runtime: Runtime, threads: int = 6) -> None:
        pool = [threading.Thread(target=self.worker, args=(runtime,), daemon=True) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(60)
            assert not t.is_alive(), "a worker hung"


@pytest.mark.parametrize(
    "shape", ["parallel", "parallel_branch_fails", "foreach", "retry", "linear_compensation"]
)
def test_concurrent_duplicate_deliveries_advance_once(redis_db: Any, shape: str) -> None:
    plan = SHAPES[shape]
    bus = ThreadedBus(copies=3)
    ledger = Ledger()
    registry = ActionRegistry()
    for name, fn in ledger.actions().items():
        registry.register(name, fn)
    rt = Runtime(Store(redis_db), bus, Catalog.from_texts([plan.yaml()]), actions=registry)
    eid = rt.start(plan.name, plan.input, f"threads-{shape}")
    bus.run(rt)
    assert not bus.errors, bus.errors
    assert "advanced" in bus.kinds and "stale" in bus.kinds
    check(plan, eid, rt.record(eid), rt.history(eid), ledger)
    assert rt.record(eid)["status"] in ("succeeded", "compensated")


def test_parallel_branches_really_run_at_the_same_time(redis_db: Any) -> None:
    """Branch locks are per branch: three branches' steps can only all pass a 3-party barrier if
    three workers run them at the same moment."""
    barrier = threading.Barrier(3, timeout=10)

    def meet(ctx: Any, who: str) -> str:
        barrier.wait()
        return who

    text = """
name: meeting
steps:
  - id: all
    parallel:
      branches:
        - steps: [{id: x, action: t.meet, with: {who: x}}]
        - steps: [{id: y, action: t.meet, with: {who: y}}]
        - steps: [{id: z, action: t.meet, with: {who: z}}]
"""
    registry = ActionRegistry()
    registry.register("t.meet", meet)
    bus = ThreadedBus(copies=1)
    rt = Runtime(Store(redis_db), bus, Catalog.from_texts([text]), actions=registry, time_budget_s=15)
    eid = rt.start("meeting", {}, "meeting-1")
    bus.run(rt, threads=3)
    assert not bus.errors, bus.errors
    rec = rt.record(eid)
    assert rec["status"] == "succeeded", rec
    assert rec["output"] == ["x", "y", "z"]


# ------------------------------------------------------------------ partial unwinds (fan-outs ending early)


def _act(step: str, undo_fails: int | None = None) -> str:
    """One action step in flow style; with ``undo_fails``, a compensation failing that many times."""
    text = f"{{id: {step}, action: t.work, with: {{step: {step}, item: null, fail_until: 0, fatal: false}}"
    if undo_fails is not None:
        text += (
            f", compensate: {{action: t.undo, with: {{step: {step}, item: null, fail_until: {undo_fails}}},"
            " retry: {max_attempts: 3, interval: 1s, on: [any]}}"
        )
    return text + "}"


UNWIND_SHAPES: dict[str, str] = {
    # b wins; a (two entries, one undo failing once) and c (one entry) lose and are undone before `after`
    "race_won": f"""
name: race-won
steps:
  - {_act("before", 0)}
  - id: race
    parallel:
      first: true
      branches:
        - steps:
            - {_act("a1", 0)}
            - {_act("a2", 1)}
            - {{id: a_wait, wait: {{for: 10s}}}}
        - steps:
            - {{id: b_wait, wait: {{for: 2s}}}}
            - {_act("b", 0)}
        - steps:
            - {_act("c1", 0)}
            - {{id: c_wait, wait: {{for: 5s}}}}
  - {_act("after")}
""",
    # the parallel's timeout stops the slow branch: undone, then the catch target runs
    "fanout_timeout": f"""
name: fanout-timeout
steps:
  - id: both
    timeout: 3s
    catch: [{{errors: [timeout], goto: after}}]
    parallel:
      branches:
        - steps:
            - {_act("fast", 0)}
        - steps:
            - {_act("hold", 1)}
            - {{id: slow, wait: {{for: 1h}}}}
  - {_act("after")}
""",
}
UNWIND_EXPECTED = {"race_won": ["a1", "a2", "c1"], "fanout_timeout": ["hold"]}


def _undone_before_after(run: Run) -> list[str]:
    """The steps undone (by the ledger's first application) before `after` did its work; their
    order must be the reverse of the order their work completed in (branch interleaving is timing:
    a crash may change it, and the undo order follows)."""
    order = run.ledger.only(run.eid).order
    name = lambda k: k.split(":")[1].split("/")[-1]  # noqa: E731
    after = order.index(f"{run.eid}:after")
    undone = [name(k) for k in order[:after] if k.endswith(":compensate")]
    worked = [name(k) for k in order if not k.endswith(":compensate") and name(k) in undone]
    assert undone == worked[::-1], f"undone {undone}, but they completed in the order {worked}"
    return sorted(undone)


@pytest.mark.parametrize("shape", sorted(UNWIND_SHAPES))
@pytest.mark.parametrize("point", POINTS)
def test_a_crash_during_a_partial_unwind_changes_nothing(redis_db: Any, shape: str, point: str) -> None:
    """Each loser's compensation is checkpointed like a saga's: a crash anywhere (the undo's own
    nodes included) re-runs at most the node it interrupted, with the same idempotency key, and the
    execution ends exactly like the undisturbed one — losers undone once, before the next step."""
    text = UNWIND_SHAPES[shape]
    plan = Plan(text.split("\n", 2)[1].split(": ")[1], ())
    base = drive(make_run(redis_db, plan, texts=[text]), plan, f"base-u-{shape}")
    assert base.record()["status"] == "succeeded"
    assert _undone_before_after(base) == UNWIND_EXPECTED[shape]
    expected = _summary(base)
    passages = base.faults.counts.get("after_checkpoint" if point == "publish_error" else point, 0)
    assert passages >= 3, f"{shape}: the baseline passed {point} only {passages} times"

    for nth in range(1, passages + 1):
        run = drive(make_run(redis_db, plan, point, nth, texts=[text]), plan, f"u-{shape}-{point}-{nth}")
        where = f"{shape}: crash at {point} #{nth} ({run.faults.fired})"
        assert run.faults.fired, f"{where}: the crash never fired"
        assert _summary(run) == expected, where
        assert _undone_before_after(run) == UNWIND_EXPECTED[shape], where
        done = [
            (h["step"], h.get("branch"))
            for h in run.runtime.history(run.eid)
            if h.get("phase") == "compensate" and h.get("status") == "ok"
        ]
        assert len(done) == len(set(done)) == len(UNWIND_EXPECTED[shape]), f"{where}: {done}"
        outbox, locks = leftovers(run)
        assert outbox == [] and locks == [], f"{where}: left outbox {outbox} / locks {locks}"
