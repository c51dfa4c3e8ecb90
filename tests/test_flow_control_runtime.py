"""flow_control end to end on a real Redis and the local dispatcher: rendered keys on the messages,
`max_running` slots (queued in start order, freed by every end, cancel included), and crashes that
must not leak a slot (recover frees them)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from engine.actions import ActionRegistry
from engine.catalog import Catalog
from engine.dispatch.inprocess import in_process_delivery
from engine.dispatch.local import LocalDispatcher
from engine.flow import slots as flow_slots
from engine.model import Message
from engine.runtime import Runtime
from engine.state.store import Store

HANG_GUARD_S = 60.0  # only stops a broken test from hanging; no assertion depends on it
TERMINAL = {"succeeded", "failed", "compensated", "cancelled", "dead"}

SINGLETON = """
name: singleton
input:
  type: object
  required: [account]
flow_control:
  key: "acct-{{ input.account }}"
  max_running: 1
steps:
  - id: work
    action: t.work
    with: {n: "{{ input.n }}", account: "{{ input.account }}"}
"""

LIMITED = """
name: limited
vars:
  region: {initial: eu}
flow_control:
  key: "{{ vars.region }}-{{ input.tenant }}"
  parallelism: 2
steps:
  - id: first
    action: t.step
  - id: call
    action: t.step
    flow_control: {key: "api", rate: 3, period: 1s}
"""


class Tracker:
    """Counts executions running an action at once, per key, and the order they ran in."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.lock = threading.Lock()
        self.hold_s = hold_s
        self.current: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.order: list[int] = []

    def work(self, ctx: Any, n: int, account: str) -> int:
        with self.lock:
            self.current[account] = self.current.get(account, 0) + 1
            self.peak[account] = max(self.peak.get(account, 0), self.current[account])
            self.order.append(int(n))
        time.sleep(self.hold_s)
        with self.lock:
            self.current[account] -= 1
        return int(n)


def build(
    redis_db: Any, texts: list[str], actions: dict[str, Callable[..., Any]]
) -> tuple[Runtime, LocalDispatcher]:
    registry = ActionRegistry()
    for name, fn in actions.items():
        registry.register(name, fn)
    dispatcher = LocalDispatcher(redis_db, workers=6, jitter=False, poll_interval_s=0.2)
    runtime = Runtime(Store(redis_db), dispatcher, Catalog.from_texts(texts), actions=registry)
    dispatcher.deliver = in_process_delivery(runtime)
    dispatcher.on_dead = runtime.mark_dead
    return runtime, dispatcher


def statuses(runtime: Runtime, ids: list[str]) -> list[str]:
    return [runtime.record(e)["status"] for e in ids]


def all_ended(runtime: Runtime, ids: list[str]) -> Callable[[], bool]:
    return lambda: all(s in TERMINAL for s in statuses(runtime, ids))


def test_messages_carry_the_rendered_keys_of_the_workflow_and_of_the_step(redis_db: Any) -> None:
    runtime, dispatcher = build(redis_db, [LIMITED], {"t.step": lambda ctx: 1})
    eid = runtime.start("limited", {"tenant": "acme"}, "lim-1")
    record = json.loads(redis_db.hget(runtime.store.header_key(eid), "fc"))
    assert record == {
        "": {"k": "eu-acme", "n": 2},
        "call": {"k": "api", "r": 3, "s": 1},
    }
    flow = dispatcher.flow
    assert flow is not None
    assert flow(Message(eid, "first", 1)).key == "eu-acme"  # the workflow's key
    assert flow(Message(eid, "call", 2)).key == "api"  # the step's own replaces it
    assert flow(Message(eid, "$timeout", 0)).key == "eu-acme"
    queued = redis_db.hgetall(dispatcher.key_msg)
    assert any(b'"fc":{"k":"eu-acme","n":2}' in body for body in queued.values())
    assert dispatcher.run_until(all_ended(runtime, [eid]), timeout_s=HANG_GUARD_S)
    assert runtime.record(eid)["status"] == "succeeded"


def test_a_key_that_cannot_render_refuses_the_start_and_writes_nothing(redis_db: Any) -> None:
    from engine.errors import InputInvalid

    text = SINGLETON.replace("required: [account]", "properties: {}")
    runtime, _ = build(redis_db, [text], {"t.work": Tracker().work})
    with pytest.raises(InputInvalid) as caught:
        runtime.start("singleton", {"n": 1}, "no-account")
    assert caught.value.errors[0]["path"] == "/flow_control/key"
    assert "account" in caught.value.errors[0]["message"]
    assert not redis_db.exists(runtime.store.header_key("no-account"))
    assert flow_slots.Slots(runtime.store).groups() == []


def test_max_running_one_runs_one_execution_per_key_at_a_time_in_start_order(redis_db: Any) -> None:
    tracker = Tracker(hold_s=0.05)
    runtime, dispatcher = build(redis_db, [SINGLETON], {"t.work": tracker.work})
    ids = []
    for n in range(6):
        account = "a" if n % 2 == 0 else "b"
        ids.append(runtime.start("singleton", {"account": account, "n": n}, f"single-{n}"))
    # one of each key runs; the others wait, recorded as queued
    assert statuses(runtime, ids) == ["running", "running", "queued", "queued", "queued", "queued"]
    listed = {e["execution_id"] for e in runtime_list(runtime, "queued")}
    assert listed == set(ids[2:])
    assert dispatcher.run_until(all_ended(runtime, ids), timeout_s=HANG_GUARD_S)
    assert statuses(runtime, ids) == ["succeeded"] * 6
    assert tracker.peak == {"a": 1, "b": 1}  # never two of one key at once
    a_order = [n for n in tracker.order if n % 2 == 0]
    b_order = [n for n in tracker.order if n % 2 == 1]
    assert a_order == [0, 2, 4] and b_order == [1, 3, 5]  # each key in start order
    assert sorted(tracker.order) == list(range(6))  # each exactly once
    for group in flow_slots.Slots(runtime.store).groups():  # nothing left holding or waiting
        assert flow_slots.Slots(runtime.store).holders(group) == []
        assert flow_slots.Slots(runtime.store).queued(group) == []


def runtime_list(runtime: Runtime, status: str) -> list[dict[str, Any]]:
    from engine.state import index

    return index.list_executions(runtime.store, index.Filters(status=frozenset({status}))).executions


def test_cancelling_a_queued_execution_ends_it_at_once_and_it_never_runs(redis_db: Any) -> None:
    tracker = Tracker()
    runtime, dispatcher = build(redis_db, [SINGLETON], {"t.work": tracker.work})
    first = runtime.start("singleton", {"account": "a", "n": 0}, "c-0")
    second = runtime.start("singleton", {"account": "a", "n": 1}, "c-1")
    third = runtime.start("singleton", {"account": "a", "n": 2}, "c-2")
    runtime.cancel(second)
    assert runtime.record(second)["status"] == "cancelled"
    assert runtime.record(second)["error"]["name"] == "cancelled"
    assert dispatcher.run_until(all_ended(runtime, [first, third]), timeout_s=HANG_GUARD_S)
    assert statuses(runtime, [first, second, third]) == ["succeeded", "cancelled", "succeeded"]
    assert tracker.order == [0, 2]


def test_cancelling_the_running_one_passes_its_slot_on(redis_db: Any) -> None:
    tracker = Tracker()
    runtime, dispatcher = build(redis_db, [SINGLETON], {"t.work": tracker.work})
    first = runtime.start("singleton", {"account": "a", "n": 0}, "r-0")
    second = runtime.start("singleton", {"account": "a", "n": 1}, "r-1")
    runtime.cancel(first)  # running, nothing ran yet: it ends cancelled when its message is delivered
    assert dispatcher.run_until(all_ended(runtime, [first, second]), timeout_s=HANG_GUARD_S)
    assert statuses(runtime, [first, second]) == ["cancelled", "succeeded"]
    assert tracker.order == [1]


def test_a_repeated_start_is_idempotent_and_takes_no_second_slot(redis_db: Any) -> None:
    tracker = Tracker()
    runtime, dispatcher = build(redis_db, [SINGLETON], {"t.work": tracker.work})
    first = runtime.start("singleton", {"account": "a", "n": 0}, "i-0")
    second = runtime.start("singleton", {"account": "a", "n": 1}, "i-1")
    assert runtime.start("singleton", {"account": "a", "n": 0}, "i-0") == first
    assert runtime.start("singleton", {"account": "a", "n": 1}, "i-1") == second  # still queued, once
    assert statuses(runtime, [first, second]) == ["running", "queued"]
    assert dispatcher.run_until(all_ended(runtime, [first, second]), timeout_s=HANG_GUARD_S)
    assert runtime.start("singleton", {"account": "a", "n": 0}, "i-0") == first  # ended: no new slot
    third = runtime.start("singleton", {"account": "a", "n": 2}, "i-2")
    assert runtime.record(third)["status"] == "running"
    assert dispatcher.run_until(all_ended(runtime, [third]), timeout_s=HANG_GUARD_S)
    assert tracker.order == [0, 1, 2]


def test_a_crash_before_the_slot_is_freed_is_healed_by_recover(redis_db: Any, monkeypatch: Any) -> None:
    """The holder ends, but the process dies before ``finished`` frees its slot: the next one stays
    queued until ``recover`` (or serve's sweep) sees the holder ended and passes the slot on."""
    tracker = Tracker()
    runtime, dispatcher = build(redis_db, [SINGLETON], {"t.work": tracker.work})
    real = flow_slots.finished
    first = runtime.start("singleton", {"account": "a", "n": 0}, "k-0")
    second = runtime.start("singleton", {"account": "a", "n": 1}, "k-1")
    monkeypatch.setattr(flow_slots, "finished", lambda rt, eid: None)  # died before the release
    assert dispatcher.run_until(all_ended(runtime, [first]), timeout_s=HANG_GUARD_S)
    assert statuses(runtime, [first, second]) == ["succeeded", "queued"]
    monkeypatch.setattr(flow_slots, "finished", real)
    assert runtime.recover(older_than_s=60) >= 1
    assert runtime.record(second)["status"] == "running"
    assert dispatcher.run_until(all_ended(runtime, [second]), timeout_s=HANG_GUARD_S)
    assert tracker.order == [0, 1]


def test_a_holder_that_was_never_created_is_freed_by_recover(redis_db: Any) -> None:
    """Admitted, then the process died before the start script ran: no record, no payload. Once
    older than recover's bound the slot is freed and the next start runs."""
    runtime, dispatcher = build(redis_db, [SINGLETON], {"t.work": Tracker().work})
    graph = runtime.catalog.get("singleton")
    slots = flow_slots.Slots(runtime.store)
    group = slots.group(graph, "ghost", {"account": "a"}, 0.0)
    state, _ = slots.admit(group, 1, "ghost", {"g": graph.hash, "i": {"account": "a"}, "p": None})
    assert state == "admitted"  # ... and the process dies here
    waiting = runtime.start("singleton", {"account": "a", "n": 1}, "g-1")
    assert runtime.record(waiting)["status"] == "queued"
    assert runtime.recover(older_than_s=60) == 0  # too young: it may be being created right now
    assert runtime.record(waiting)["status"] == "queued"
    assert runtime.recover(older_than_s=0) >= 1
    assert runtime.record(waiting)["status"] == "running"
    assert slots.holders(group) == [waiting]
    assert dispatcher.run_until(all_ended(runtime, [waiting]), timeout_s=HANG_GUARD_S)


def test_a_promotion_interrupted_by_a_crash_is_finished_by_recover(redis_db: Any, monkeypatch: Any) -> None:
    """The slot went to the next queued execution, but starting it failed (the process died): it
    holds the slot with its payload kept, and recover starts it."""
    tracker = Tracker()
    runtime, dispatcher = build(redis_db, [SINGLETON], {"t.work": tracker.work})
    first = runtime.start("singleton", {"account": "a", "n": 0}, "p-0")
    second = runtime.start("singleton", {"account": "a", "n": 1}, "p-1")
    real_create = runtime._create
    failing = {"on": True}

    def create(graph: Any, input: Any, execution_id: Any, parent: Any) -> str:
        if failing["on"] and execution_id == second:
            raise ConnectionError("the process died while starting it")
        return real_create(graph, input, execution_id, parent)

    monkeypatch.setattr(runtime, "_create", create)
    assert dispatcher.run_until(all_ended(runtime, [first]), timeout_s=HANG_GUARD_S)
    slots = flow_slots.Slots(runtime.store)
    (group,) = slots.groups()
    assert slots.holders(group) == [second] and slots.payload(group, second) is not None
    assert runtime.record(second)["status"] == "queued"
    failing["on"] = False
    assert runtime.recover(older_than_s=60) >= 1
    assert dispatcher.run_until(all_ended(runtime, [second]), timeout_s=HANG_GUARD_S)
    assert runtime.record(second)["status"] == "succeeded"
    assert slots.payload(group, second) is None
    assert tracker.order == [0, 1]


BOSS = """
name: boss
steps:
  - id: kid
    workflow: {name: singleton, input: {account: a, n: 9}}
"""


def test_a_parent_waiting_for_a_queued_child_that_is_cancelled_goes_on(redis_db: Any) -> None:
    tracker = Tracker()
    gate = threading.Event()

    def work(ctx: Any, n: int, account: str) -> int:
        gate.wait(HANG_GUARD_S)  # the holder keeps its slot until the child was cancelled
        return tracker.work(ctx, n, account)

    runtime, dispatcher = build(redis_db, [SINGLETON, BOSS], {"t.work": work})
    holder = runtime.start("singleton", {"account": "a", "n": 0}, "h-0")
    boss = runtime.start("boss", {}, "boss-1")
    ended: list[bool] = []
    loop = threading.Thread(
        target=lambda: ended.append(dispatcher.run_until(all_ended(runtime, [holder, boss]), HANG_GUARD_S))
    )
    loop.start()
    try:
        child = runtime.child_id(boss, "", "kid", 1)
        deadline = time.monotonic() + HANG_GUARD_S
        while not redis_db.exists(runtime.store.header_key(child)) and time.monotonic() < deadline:
            time.sleep(0.02)  # the boss's first delivery starts it (and finds the slot taken)
        assert runtime.record(child)["status"] == "queued"
        runtime.cancel(child)
    finally:
        gate.set()
        loop.join()
    assert ended == [True]
    assert runtime.record(boss)["status"] in ("failed", "compensated")  # its child was cancelled
    assert runtime.record(boss)["error"]["step"] == "kid"
    assert tracker.order == [0]


def test_recover_forgets_groups_with_nobody_running_or_waiting(redis_db: Any) -> None:
    runtime, dispatcher = build(redis_db, [SINGLETON], {"t.work": Tracker().work})
    ids = [runtime.start("singleton", {"account": f"tenant-{i}", "n": i}, f"t-{i}") for i in range(3)]
    slots = flow_slots.Slots(runtime.store)
    assert len(slots.groups()) == 3
    assert dispatcher.run_until(all_ended(runtime, ids), timeout_s=HANG_GUARD_S)
    runtime.recover(older_than_s=60)
    assert slots.groups() == []


def test_cancelling_one_that_just_got_its_slot_never_overwrites_its_status(
    redis_db: Any, monkeypatch: Any
) -> None:
    """The cancel read `queued`, but the execution got its slot and started before the cancel wrote
    anything: the queued-cancel must not mark a running execution cancelled (its steps would go on);
    the normal cancel stops it instead."""
    tracker = Tracker()
    runtime, dispatcher = build(redis_db, [SINGLETON], {"t.work": tracker.work})
    eid = runtime.start("singleton", {"account": "a", "n": 0}, "race-0")
    header = runtime.store.header(eid)
    assert header["status"] == "running"
    stale = dict(header, status="queued")  # what the cancel read an instant earlier
    real_header = runtime.store.header
    monkeypatch.setattr(runtime.store, "header", lambda e: stale if e == eid else real_header(e))
    assert flow_slots.cancel_queued(runtime, eid) is False
    monkeypatch.setattr(runtime.store, "header", real_header)
    assert runtime.record(eid)["status"] == "running"
    runtime.cancel(eid)
    assert dispatcher.run_until(all_ended(runtime, [eid]), timeout_s=HANG_GUARD_S)
    assert runtime.record(eid)["status"] == "cancelled"
    assert tracker.order == []  # stopped at its first node boundary
