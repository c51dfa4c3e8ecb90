"""Trying to break the guarantees: duplicates, concurrent deliveries, expired locks, crashes at every
fault point, lost messages, per-node cost, pinned graphs, dead messages."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from engine.catalog import Catalog
from engine.dispatch import DispatchError
from engine.errors import GraphMissing, UnknownExecution
from engine.model import Message
from engine.runtime import Runtime
from engine.state.store import Store, lock_key

LINEAR = """
    name: lin
    steps:
      - id: a
        action: count
        with: {name: a}
      - id: b
        action: count
        with: {name: b}
      - id: c
        set: {done: "{{ steps.b.output }}"}
"""


class Counter:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[str] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, ctx: Any, name: str) -> str:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.calls.append(name)
            return f"{name}#{len(self.calls)}"


def test_the_same_message_delivered_twice_advances_once(harness: Any) -> None:
    count = Counter()
    h = harness(LINEAR, actions={"count": count})
    eid = h.start("lin")
    first = h.dispatcher.pop()
    assert h.runtime.advance(first.message).kind == "advanced"
    assert h.runtime.advance(first.message).kind == "stale"
    h.drain()
    r = h.runtime.record(eid)
    assert [t["step"] for t in r["trace"]] == ["a", "b", "c"]
    assert count.calls == ["a", "b"]
    assert h.runtime.advance(first.message).kind in ("stale", "finished")


def test_eight_threads_delivering_one_message_advance_once(harness: Any) -> None:
    count = Counter(delay=0.05)
    h = harness(LINEAR, actions={"count": count})
    eid = h.start("lin")
    message = h.dispatcher.pop().message
    barrier = threading.Barrier(8)
    kinds: list[str] = []

    def deliver() -> None:
        barrier.wait()
        kinds.append(h.runtime.advance(message).kind)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert kinds.count("advanced") == 1
    assert set(kinds) <= {"advanced", "busy", "stale"}
    assert count.calls == ["a"]
    assert len(h.dispatcher.queue) == 1  # exactly one next message
    h.drain()
    assert [t["step"] for t in h.runtime.record(eid)["trace"]] == ["a", "b", "c"]


def test_a_worker_whose_lock_expired_cannot_overwrite_the_newer_checkpoint(
    harness: Any, redis_db: Any
) -> None:
    count = Counter()
    h = harness(LINEAR, actions={"count": count})
    eid = h.start("lin")
    message = h.dispatcher.pop().message
    outcomes: list[str] = []

    def slow_worker(point: str, msg: Any) -> None:
        if point == "after_step" and not outcomes:
            outcomes.append("expired")
            redis_db.delete(lock_key(eid, ""))  # A's lock expires while its step is still running
            h.runtime.faults = None
            outcomes.append(h.runtime.advance(message).kind)  # worker B takes over and checkpoints

    h.runtime.faults = slow_worker
    a = h.runtime.advance(message)  # worker A finishes its step late and tries to checkpoint
    assert outcomes == ["expired", "advanced"]
    assert a.kind == "stale"
    assert count.calls == ["a", "a"]  # at least once: both ran the step…
    h.drain()
    r = h.runtime.record(eid)
    assert [t["step"] for t in r["trace"]] == ["a", "b", "c"]  # …but only B's checkpoint counts
    assert h.store.outputs(eid, ["a"]) == ["a#2"]


def test_a_late_checkpoint_after_the_branch_moved_on_is_fenced(harness: Any, redis_db: Any) -> None:
    """Same as above, but A's checkpoint comes after B already moved the branch two nodes further."""
    count = Counter()
    h = harness(LINEAR, actions={"count": count})
    eid = h.start("lin")
    message = h.dispatcher.pop().message
    state: dict[str, Any] = {}

    def hook(point: str, msg: Any) -> None:
        if point == "after_step" and "done" not in state:
            state["done"] = True
            redis_db.delete(lock_key(eid, ""))
            h.runtime.faults = None
            h.runtime.advance(message)  # a
            h.runtime.advance(h.dispatcher.pop().message)  # b

    h.runtime.faults = hook
    assert h.runtime.advance(message).kind == "stale"
    h.drain()
    r = h.runtime.record(eid)
    assert [t["step"] for t in r["trace"]] == ["a", "b", "c"]
    assert r["output"] == {"done": "b#3"}


@pytest.mark.parametrize("point", ["before_step", "after_step", "after_checkpoint", "after_publish"])
def test_a_crash_at_any_fault_point_is_healed_by_redelivery(harness: Any, point: str) -> None:
    count = Counter()
    crashed: set[str] = set()

    def crash(at: str, message: Any) -> None:
        if at == point and message.node not in crashed:
            crashed.add(message.node)
            raise RuntimeError(f"crash at {at}")

    h = harness(LINEAR, actions={"count": count}, faults=crash)
    eid = h.start("lin")
    delivered = 0
    while h.dispatcher.queue and delivered < 50:
        o = h.dispatcher.pop()
        delivered += 1
        try:
            h.runtime.advance(o.message)
        except RuntimeError:
            h.dispatcher.seen.pop(o.dedup_id, None)
            h.dispatcher.publish([o])  # not acknowledged: the dispatcher redelivers it
    r = h.runtime.record(eid)
    assert r["status"] == "succeeded"
    assert [t["step"] for t in r["trace"]] == ["a", "b", "c"]
    if point in ("before_step",):
        assert count.calls == ["a", "b"]
    else:
        assert sorted(set(count.calls)) == ["a", "b"]
    assert h.store.outbox(eid) == [] or point == "after_publish"
    if point == "after_publish":
        h.runtime.recover(older_than_s=0)  # leftover outbox entries: re-published, deduplicated
        h.drain()
        assert h.store.outbox(eid) == []


def test_a_lost_message_is_recovered_from_the_outbox(harness: Any) -> None:
    h = harness(LINEAR, actions={"count": Counter()})

    def lose(at: str, message: Any) -> None:
        if at == "after_checkpoint" and message.node == "a":
            raise RuntimeError("crash: the next message was never published")

    h.runtime.faults = lose
    eid = h.start("lin")
    o = h.dispatcher.pop()
    with pytest.raises(RuntimeError):
        h.runtime.advance(o.message)
    h.runtime.faults = None
    assert h.dispatcher.queue == []  # and the dispatcher lost the original too
    assert h.runtime.recover(older_than_s=60) == 0  # too young
    h.clock.advance_to(h.clock.now() + 61)
    assert h.runtime.recover(older_than_s=60) == 1
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    assert h.runtime.recover(older_than_s=0) == 0
    assert eid not in h.store.active()


def test_a_publish_failure_is_retried_by_redelivery(harness: Any) -> None:
    h = harness(LINEAR, actions={"count": Counter()})
    eid = h.start("lin")
    o = h.dispatcher.pop()
    h.dispatcher.fail_next = 1
    with pytest.raises(DispatchError):
        h.runtime.advance(o.message)
    assert h.runtime.advance(o.message).kind == "stale"  # the redelivery re-publishes the outbox
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"


def test_recover_wakes_a_wait_whose_event_resume_was_lost(harness: Any) -> None:
    h = harness("""
        name: ev
        steps:
          - id: w
            wait: {event: paid, key: k}
    """)
    eid = h.start("ev")
    h.drain()
    h.dispatcher.fail_next = 1
    # claimed for the waiter, but the resume was never sent: still a delivered notification
    # (docs/semantics.md), since a retry by the caller would be a second event
    assert h.runtime.notify("paid", "k", 7) == 1
    assert h.runtime.record(eid)["status"] == "running"
    assert h.runtime.recover(older_than_s=60) == 1
    h.drain()
    assert h.runtime.record(eid)["output"] == 7


def _counting(client: Any) -> list[str]:
    calls: list[str] = []
    original = client.execute_command

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(str(args[0]).upper())
        return original(*args, **kwargs)

    client.execute_command = counted
    return calls


def _commandstats(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k: v["calls"] for k, v in stats.items() if k not in ("cmdstat_info",)}


def test_per_node_cost_does_not_grow_with_history(harness: Any, redis_db: Any) -> None:
    if os.environ.get("REDIS_URL") and os.environ.get("PYTEST_XDIST_WORKER"):
        # INFO commandstats counts the whole server, and other xdist workers share it (each with a
        # database of its own): their commands would count here. The embedded run measures this.
        pytest.skip("INFO commandstats is server-wide: with REDIS_URL and xdist, other workers count")
    steps = ["name: big", "steps:"]
    for i in range(500):
        reads = f', prev: "{{{{ steps.s{i - 1}.output.v | length }}}}"' if i else ""
        steps.append(f"  - id: s{i}")
        steps.append(f"    set: {{v: \"{{{{ 'x' * 10000 }}}}\"{reads}}}")
    h = harness("\n".join(steps), unchecked=True)
    eid = h.start("big")
    h.drain(limit=5)  # s0..s4
    calls = _counting(redis_db)

    def measure() -> tuple[dict[str, int], list[str]]:
        calls.clear()
        before = _commandstats(redis_db)
        o = h.dispatcher.pop()
        assert h.runtime.advance(o.message).kind == "advanced"
        after = _commandstats(redis_db)
        diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        return {k: v for k, v in diff.items() if v}, [c for c in calls if c != "INFO"]

    early, early_trips = measure()
    h.drain(limit=490)
    late, late_trips = measure()
    assert early == late
    assert early_trips == late_trips == ["EVALSHA", "EVALSHA"]  # begin, checkpoint (no outbox HDEL)
    assert int(redis_db.hget(f"hf:{{{eid}}}:b:", "seq")) > 495
    assert h.runtime.history(eid)[-1]["step"] == "s496"


def test_changing_the_workflow_file_does_not_change_a_running_execution(harness: Any, store: Any) -> None:
    v1 = """
        name: pinned
        steps:
          - id: a
            set: {v: 1}
          - id: nap
            wait: {for: 1h}
          - id: b
            set: {version: one}
    """
    v2 = """
        name: pinned
        steps:
          - id: a
            set: {v: 1}
          - id: nap
            wait: {for: 1h}
          - id: b
            set: {version: two}
          - id: extra
            set: {more: true}
    """
    h = harness(v1)
    old = h.start("pinned")
    h.drain(until=lambda: h.runtime.record(old)["current"][0]["node"] == "nap")
    new_catalog = Catalog.from_texts([h_text(v2)])
    h.runtime.catalog.replace(new_catalog.get("pinned"))
    # a fresh process (empty caches) with the new file continues the old execution
    fresh = Runtime(Store(store.client), h.dispatcher, new_catalog, clock=h.clock)
    new = fresh.start("pinned", {})
    h.dispatcher.drain(fresh)
    assert fresh.record(old)["output"] == {"version": "one"}
    assert fresh.record(new)["output"] == {"more": True}
    assert fresh.record(old)["graph"] != fresh.record(new)["graph"]


def h_text(text: str) -> str:
    import textwrap

    return textwrap.dedent(text).strip() + "\n"


def test_mark_dead_and_stale_dead_letters(harness: Any) -> None:
    h = harness(LINEAR, actions={"count": Counter()})
    eid = h.start("lin")
    o = h.dispatcher.pop()
    h.runtime.advance(o.message)
    h.runtime.mark_dead(o.message, "old message")  # stale: the execution moved on
    assert h.runtime.record(eid)["status"] == "running"
    current = h.dispatcher.pop()
    h.runtime.mark_dead(current.message, "endpoint returned 500 five times")
    r = h.runtime.record(eid)
    assert r["status"] == "dead"
    assert r["error"] == {"name": "dead", "message": "endpoint returned 500 five times", "step": "b"}
    assert any(e.get("event") == "dead" for e in h.runtime.history(eid))
    assert h.runtime.advance(current.message).kind == "finished"


def test_unknown_execution_and_missing_graph(harness: Any, redis_db: Any) -> None:
    h = harness(LINEAR, actions={"count": Counter()})
    with pytest.raises(UnknownExecution):
        h.runtime.advance(Message("nope", "a", 1))
    with pytest.raises(UnknownExecution):
        h.runtime.record("nope")
    eid = h.start("lin")
    graph = h.runtime.record(eid)["graph"]
    redis_db.delete(f"hf:graph:{graph}")
    fresh = Runtime(Store(redis_db), h.dispatcher, Catalog(), clock=h.clock)
    with pytest.raises(GraphMissing):
        fresh.advance(h.dispatcher.pop().message)


def test_a_lock_lost_without_a_newer_worker_is_redelivered_not_acknowledged(
    harness: Any, redis_db: Any
) -> None:
    count = Counter()
    h = harness(LINEAR, actions={"count": count})
    eid = h.start("lin")
    message = h.dispatcher.pop().message

    def expire(point: str, msg: Any) -> None:
        if point == "after_step":
            h.runtime.faults = None
            redis_db.delete(lock_key(eid, ""))  # expired; nobody else came

    h.runtime.faults = expire
    assert h.runtime.advance(message).kind == "busy"  # refused, and not acknowledged
    assert h.runtime.advance(message).kind == "advanced"  # the redelivery runs the step again
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    assert count.calls == ["a", "a", "b"]


def test_an_immediate_message_keeps_its_outbox_entry_until_its_own_checkpoint(harness: Any) -> None:
    """The interpreter does not delete a published immediate message's outbox entry (that would
    cost a round trip per node): the checkpoint of that message's delivery does (``consumed``).
    Delayed messages (a wait, a retry, the execution's timeout) and messages to other executions
    (a child resuming its parent) are deleted right after publishing, as is everything ``start``
    publishes."""
    h = harness(
        """
        name: parent
        timeout: 1h
        steps:
          - id: a
            action: count
            with: {name: a}
          - id: nap
            wait: {for: 10s}
          - id: kid
            workflow: {name: child}
          - id: z
            set: {done: true}
        """,
        """
        name: child
        steps:
          - id: only
            set: {v: 1}
        """,
        actions={"count": Counter()},
    )
    eid = h.start("parent", execution_id="p1")
    child = "p1~kid.4"

    def outbox(execution_id: str) -> list[str]:
        return sorted(i for i, _, _ in h.store.outbox(execution_id))

    assert outbox(eid) == []
    seen: list[tuple[str, str, list[str], list[str]]] = []
    while h.dispatcher.queue:
        o = h.dispatcher.pop()
        kind = h.runtime.advance(o.message).kind
        seen.append((o.dedup_id, kind, outbox(eid), outbox(child)))
    assert seen == [
        ("p1:-:1:a", "advanced", ["p1:-:2:nap"], []),  # published, in flight, kept
        ("p1:-:2:nap", "advanced", [], []),  # consumed; the 10 s wake-up is delayed: cleared
        ("p1:-:3:nap", "advanced", ["p1:-:4:kid"], []),
        ("p1:-:4:kid", "advanced", [], []),  # the child's start cleared its own outbox
        (f"{child}:-:1:only", "advanced", [], []),  # the parent's resume: another execution's
        ("p1:-:5:kid", "advanced", ["p1:-:6:z"], []),
        ("p1:-:6:z", "advanced", [], []),
        ("p1:-:0:$timeout", "finished", [], []),
    ]
    assert h.runtime.record(eid)["status"] == "succeeded"
    assert h.runtime.recover(older_than_s=0) == 0


def test_duplicates_and_recover_while_a_message_is_in_flight_change_nothing(harness: Any) -> None:
    """An in-flight message's entry is visible to whoever re-publishes the outbox: a stale
    duplicate delivery and ``recover``. Every copy is one of: deduplicated by its id, ``busy``
    (its node is running right now), or stale once that node checkpointed. The step runs once."""
    count = Counter()
    h = harness(LINEAR, actions={"count": count})
    eid = h.start("lin")
    first = h.dispatcher.pop()
    assert h.runtime.advance(first.message).kind == "advanced"
    (b_entry,) = [o for _, o, _ in h.store.outbox(eid)]
    assert b_entry.message.node == "b"
    h.dispatcher.seen.clear()  # no deduplication at all from here on: every copy is delivered

    copies: list[str] = []

    def mid_step(point: str, message: Any) -> None:
        if point == "before_step" and message.node == "b" and not copies:
            # while b runs (its lock held): recover re-publishes b's in-flight entry (and, like
            # any re-publish, clears it); a stale duplicate of a's message would have done the
            # same; a copy delivered now finds the branch busy
            copies.append(str(h.runtime.recover(older_than_s=0)))
            copies.append(h.runtime.advance(first.message).kind)
            copies.append(h.runtime.advance(b_entry.message).kind)

    h.runtime.faults = mid_step
    b = h.dispatcher.pop()
    assert b.message == b_entry.message
    assert h.runtime.advance(b.message).kind == "advanced"
    h.runtime.faults = None
    assert copies == ["1", "stale", "busy"]
    assert sorted(o.message.node for o in h.dispatcher.pending()) == ["b", "c"]  # b: recover's copy
    results = h.drain()
    assert {r.kind for r in results} <= {"advanced", "stale", "finished"}
    r = h.runtime.record(eid)
    assert r["status"] == "succeeded" and [t["step"] for t in r["trace"]] == ["a", "b", "c"]
    assert count.calls == ["a", "b"]
    assert h.store.outbox(eid) == []


def test_a_message_given_up_on_leaves_no_outbox_entry_behind(harness: Any) -> None:
    """A published immediate message keeps its outbox entry until its delivery checkpoints; if the
    dispatcher gives up on it instead, ``mark_dead`` removes that entry with the execution's death
    (nothing would ever consume it), and later deliveries of it are ``finished``."""
    h = harness(LINEAR, actions={"count": Counter()})
    eid = h.start("lin")
    h.runtime.advance(h.dispatcher.pop().message)
    current = h.dispatcher.pop()
    assert [i for i, _, _ in h.store.outbox(eid)] == [current.dedup_id]
    h.runtime.mark_dead(current.message, "endpoint returned 500 five times")
    assert h.runtime.record(eid)["status"] == "dead"
    assert h.store.outbox(eid) == []
    assert h.runtime.advance(current.message).kind == "finished"
    assert eid not in h.store.active()
