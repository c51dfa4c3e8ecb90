"""The local dispatcher's in-process fast path: a delivery runs its execution's next nodes in place
while nothing else is due — one queue round trip per run instead of one per node — and a process
that dies anywhere inside such a chain loses nothing: the delivery's lease expires, its redelivery
finds the message stale and publishes the outbox entry the last checkpoint recorded.

Redis is real; the "process death" is a BaseException from the fault hook, which the dispatcher
neither acknowledges nor retries in process (as if the process had gone): only the lease expiring
brings the delivery back, exactly as after a kill."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import pytest

from engine.actions import ActionRegistry
from engine.catalog import Catalog
from engine.dispatch.inprocess import in_process_delivery
from engine.dispatch.local import LocalDispatcher
from engine.model import Message, Outgoing
from engine.runtime import Runtime
from engine.state.store import Store, lock_key

HANG_GUARD_S = 30.0  # only stops a broken test from hanging; no assertion depends on it
STEPS = 6

FLOW = "name: chain\nsteps:\n" + "".join(
    f"  - id: a{i}\n    action: t.work\n    with: {{n: {i}}}\n" for i in range(STEPS)
)
FINAL = {"succeeded", "failed", "compensated", "cancelled", "dead"}


class Died(BaseException):
    """The process died here: nothing after this point runs (no ack, no retry, no unlock of a lease)."""


class Ledger:
    """Effects keyed by the step's idempotency key (what a real target deduplicates on) and calls."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.order: list[str] = []
        self.lock = threading.Lock()

    def work(self, ctx: Any, n: int) -> dict[str, Any]:
        with self.lock:
            self.calls[ctx.idempotency_key] += 1
            self.order.append(ctx.execution_id)
        return {"n": n}


def wire(
    redis_db: Any, ledger: Ledger, *, faults: Any = None, workers: int = 4, fast_path: bool = True
) -> tuple[Runtime, LocalDispatcher]:
    registry = ActionRegistry()
    registry.register("t.work", ledger.work)
    dispatcher = LocalDispatcher(
        redis_db, workers=workers, lease_s=0.3, poll_interval_s=0.05, jitter=False, fast_path=fast_path
    )
    catalog = Catalog.from_texts([FLOW])
    runtime = Runtime(Store(redis_db), dispatcher, catalog, actions=registry, faults=faults)
    dispatcher.deliver = in_process_delivery(runtime)
    dispatcher.on_dead = runtime.mark_dead
    return runtime, dispatcher


def run(runtime: Runtime, dispatcher: LocalDispatcher, eid: str) -> dict[str, Any]:
    runtime.start("chain", {}, eid)
    assert dispatcher.run_until(lambda: runtime.store.status(eid) in FINAL, timeout_s=HANG_GUARD_S)
    # and until the queue is empty: a delivery that died holds a lease until it expires
    assert dispatcher.run_until(lambda: dispatcher.pending() == 0, timeout_s=HANG_GUARD_S)
    return runtime.record(eid)


def steps(record: dict[str, Any]) -> list[str]:
    return [t["step"] for t in record["trace"]]


def test_a_linear_run_is_one_delivery_with_the_fast_path_and_one_per_node_without(redis_db: Any) -> None:
    for fast, deliveries in ((True, 1), (False, STEPS)):
        ledger = Ledger()
        runtime, dispatcher = wire(redis_db, ledger, fast_path=fast)
        record = run(runtime, dispatcher, f"linear-{fast}")
        assert record["status"] == "succeeded" and steps(record) == [f"a{i}" for i in range(STEPS)]
        assert dispatcher.stats.published == dispatcher.stats.delivered == deliveries
        assert set(ledger.calls.values()) == {1}
        assert runtime.store.outbox(f"linear-{fast}") == []
        assert dispatcher.pending() == 0


def test_a_chained_node_costs_one_round_trip_its_predecessors_checkpoint_begins_it(redis_db: Any) -> None:
    """Inside the chain, the checkpoint script of node k also begins node k+1 (takes the branch lock,
    loads what it reads): one ``begin`` for the whole run, one ``checkpoint`` per node, and the
    chained nodes see exactly what a separate ``begin`` would have loaded (their outputs are right)."""
    for fast, begins in ((True, 1), (False, STEPS)):
        ledger = Ledger()
        runtime, dispatcher = wire(redis_db, ledger, fast_path=fast)
        scripts: Counter[str] = Counter()
        store_run = runtime.store.run

        def counted(name: str, *args: Any, _store_run: Any = store_run, _s: Any = scripts, **kw: Any) -> dict:
            _s[name] += 1
            return _store_run(name, *args, **kw)

        runtime.store.run = counted  # type: ignore[method-assign]
        record = run(runtime, dispatcher, f"trips-{fast}")
        assert record["status"] == "succeeded" and steps(record) == [f"a{i}" for i in range(STEPS)]
        assert record["output"] == {"n": STEPS - 1}
        assert scripts["begin"] == begins and scripts["checkpoint"] == STEPS
        assert set(ledger.calls.values()) == {1} and len(ledger.calls) == STEPS
        assert not redis_db.exists(lock_key(f"trips-{fast}", ""))


def test_the_chain_gives_way_while_another_message_is_due(redis_db: Any) -> None:
    """One worker, two messages due: the delivery of the first may not run anything in place while
    the second waits for the worker; the second, with nothing else due, may."""
    answers: dict[str, list[bool]] = {"x": [], "y": []}
    probe = Message("z", "next", 1)

    def deliver(message: Message) -> None:
        if message.execution_id == "x":
            answers["x"].append(d.may_run_in_place(probe))
            return
        for _ in range(400):  # the loop's pass after this lease settles within a moment
            if d.may_run_in_place(probe):
                answers["y"].append(True)
                return
            threading.Event().wait(0.005)
        answers["y"].append(False)

    d = LocalDispatcher(redis_db, deliver, workers=1, poll_interval_s=0.05, jitter=False)
    d.publish([Outgoing(Message("x", "a", 1))])
    d.publish([Outgoing(Message("y", "a", 1))])
    assert d.run_until(lambda: bool(answers["y"]), timeout_s=HANG_GUARD_S)
    assert answers == {"x": [False], "y": [True]}


def test_two_executions_on_one_worker_both_finish(redis_db: Any) -> None:
    ledger = Ledger()
    runtime, dispatcher = wire(redis_db, ledger, workers=1)
    runtime.start("chain", {}, "one")
    runtime.start("chain", {}, "two")
    assert dispatcher.run_until(
        lambda: {runtime.store.status(e) for e in ("one", "two")} == {"succeeded"}, timeout_s=HANG_GUARD_S
    )
    assert sorted(ledger.order) == ["one"] * STEPS + ["two"] * STEPS
    assert ledger.order[:2] != ["one", "one"]  # "two" was due: "one" did not run its next node in place


def test_a_stub_that_is_not_a_delivery_never_chains(redis_db: Any) -> None:
    """``Runtime.advance`` called outside a delivery of the dispatcher (no lease held for it) runs
    one node, whatever the dispatcher would allow."""
    ledger = Ledger()
    runtime, dispatcher = wire(redis_db, ledger)
    runtime.start("chain", {}, "direct")
    (_, body, _), *_ = dispatcher._lease(dispatcher._now_ms(), 1)[0]
    first = Message.from_dict(json.loads(body)["message"])
    assert dispatcher.may_run_in_place(first) is False
    assert runtime.advance(first).nodes == 1


POINTS = ("before_chain", "before_step", "after_step", "after_checkpoint")


@pytest.mark.parametrize("point", POINTS)
def test_a_process_dying_inside_the_chain_loses_nothing(redis_db: Any, point: str) -> None:
    """Die at each passage of ``point`` inside the in-place chain (never the first node of a
    delivery: that is the queue's ordinary crash, covered by test_crash_injection.py). The run ends
    exactly like an undisturbed one, each effect applied once per idempotency key (a step that died
    after its effect runs again with the same key), nothing left in the outbox, the queue or a lock."""
    baseline_ledger = Ledger()
    runtime, dispatcher = wire(redis_db, baseline_ledger)
    baseline = run(runtime, dispatcher, "baseline")
    passages = STEPS - 1  # nodes 2..N run in place: each passes every point once
    for nth in range(1, passages + 1):
        ledger = Ledger()
        seen = {"n": 0, "died": False}
        eid = f"died-{point}-{nth}"
        holder: dict[str, Any] = {}

        def faults(
            where: str,
            message: Message,
            nth: int = nth,
            seen: Any = seen,
            holder: Any = holder,
            eid: str = eid,
        ) -> None:
            if where != point or seen["died"]:
                return
            seen["n"] += 1
            # passage 1 of a node's own points is the delivery's first node, not inside the chain
            if seen["n"] == nth + (0 if point == "before_chain" else 1):
                seen["died"] = True
                rt, d = holder["runtime"], holder["dispatcher"]
                if where == "before_chain":
                    # the next node's message is recorded in the outbox, never published, and the
                    # delivery that runs the chain is still leased: both survive the death
                    assert [m.message for _, m, _ in rt.store.outbox(eid)] == [message]
                    assert redis_db.zcard(d.key_leased) == 1 and redis_db.zcard(d.key_due) == 0
                raise Died(f"{where} #{nth}")

        runtime, dispatcher = wire(redis_db, ledger, faults=faults)
        holder.update(runtime=runtime, dispatcher=dispatcher)
        record = run(runtime, dispatcher, eid)
        assert seen["died"], f"{point} #{nth} never happened"
        assert record["status"] == baseline["status"] == "succeeded"
        assert steps(record) == steps(baseline)
        assert record["output"] == baseline["output"]
        assert len(ledger.calls) == STEPS  # every step's effect, once per key
        rerun = ledger.calls.most_common(1)[0][1]
        assert rerun == (2 if point == "after_step" else 1)  # only a step that died after its effect reruns
        assert runtime.store.outbox(eid) == []
        assert dispatcher.pending() == 0
        assert dispatcher.stats.reclaimed >= 1  # it came back through the expired lease
        assert not redis_db.exists(lock_key(eid, ""))


def counting(dispatcher: LocalDispatcher) -> Counter[str]:
    """Calls of each queue script (one round trip each)."""
    calls: Counter[str] = Counter()
    for name in ("_publish_script", "_lease_script", "_ack_script", "_ack_publish_script"):
        script = getattr(dispatcher, name)

        def counted(*args: Any, _script: Any = script, _name: str = name, **kwargs: Any) -> Any:
            calls[_name.strip("_").removesuffix("_script")] += 1
            return _script(*args, **kwargs)

        setattr(dispatcher, name, counted)
    return calls


def test_without_the_fast_path_a_delivery_queues_its_next_message_with_its_ack(redis_db: Any) -> None:
    """Each node's delivery acknowledges itself and queues the next node's message in one script:
    two queue round trips per node (lease, ack + publish) instead of three."""
    ledger = Ledger()
    runtime, dispatcher = wire(redis_db, ledger, fast_path=False)
    calls = counting(dispatcher)
    record = run(runtime, dispatcher, "acked")
    assert record["status"] == "succeeded" and steps(record) == [f"a{i}" for i in range(STEPS)]
    assert calls["publish"] == 1  # the start's first message only
    assert calls["ack_publish"] == STEPS - 1  # every node but the last carried its successor
    assert calls["ack"] == 1  # the last node had nothing to queue
    assert dispatcher.stats.published == dispatcher.stats.delivered == STEPS


def test_a_process_dying_before_the_ack_that_carries_the_next_message_loses_nothing(redis_db: Any) -> None:
    """Die right after a node handed its next message to the dispatcher (held for the ack, not yet
    in Redis's queue): the delivery comes back when its lease expires, is stale, and publishes the
    next message from the outbox."""
    for nth in range(1, STEPS):
        ledger = Ledger()
        seen = {"n": 0}

        def faults(where: str, message: Message, nth: int = nth, seen: Any = seen) -> None:
            if where == "after_publish":
                seen["n"] += 1
                if seen["n"] == nth:
                    raise Died(f"after_publish #{nth}")

        runtime, dispatcher = wire(redis_db, ledger, faults=faults, fast_path=False)
        record = run(runtime, dispatcher, f"held-{nth}")
        assert seen["n"] >= nth
        assert record["status"] == "succeeded" and steps(record) == [f"a{i}" for i in range(STEPS)]
        assert set(ledger.calls.values()) == {1} and len(ledger.calls) == STEPS
        assert dispatcher.stats.reclaimed == 1
        assert runtime.store.outbox(f"held-{nth}") == [] and dispatcher.pending() == 0


def test_a_literal_config_is_scanned_for_templates_once_not_per_node(monkeypatch: Any) -> None:
    """The render plan: a compiled value without templates renders as a copy, decided once."""
    from dsl.graph import freeze
    from engine import context

    scans: list[Any] = []
    real = context.templates_in
    monkeypatch.setattr(context, "templates_in", lambda v: scans.append(v) or real(v))
    context._static_frozen.cache_clear()
    literal = freeze({"blob": "x" * 10_000, "n": [1, 2, {"k": "v"}]})
    templated = freeze({"who": "{{ input.name }}"})
    scope = {"input": {"name": "ada"}}
    for _ in range(3):
        copy = context.render_value(literal, scope)
        assert copy == {"blob": "x" * 10_000, "n": [1, 2, {"k": "v"}]} and isinstance(copy["n"], list)
        copy["n"].append("mutated")  # a copy: the compiled value is untouched
        assert context.render_value(templated, scope) == {"who": "ada"}
    assert scans.count(literal) == 1 and scans.count(templated) == 1


FLOW_LIMITED = "name: limited\nsteps:\n" + "".join(
    f"  - id: a{i}\n    action: t.work\n    with: {{n: {i}}}\n"
    + ("    flow_control: {key: api, parallelism: 1}\n" if i in (2, 3) else "")
    for i in range(STEPS)
)


def test_a_flow_controlled_step_is_never_run_in_place(redis_db: Any) -> None:
    """A step with flow_control goes through the queue, where its key's gate admits it; the steps
    around it still chain."""
    ledger = Ledger()
    registry = ActionRegistry()
    registry.register("t.work", ledger.work)
    dispatcher = LocalDispatcher(redis_db, workers=4, poll_interval_s=0.05, jitter=False)
    runtime = Runtime(Store(redis_db), dispatcher, Catalog.from_texts([FLOW_LIMITED]), actions=registry)
    dispatcher.deliver = in_process_delivery(runtime)
    runtime.start("limited", {}, "limited-1")
    assert dispatcher.run_until(lambda: runtime.store.status("limited-1") in FINAL, timeout_s=HANG_GUARD_S)
    assert steps(runtime.record("limited-1")) == [f"a{i}" for i in range(STEPS)]
    # a0 (start) → a1 in place; a2 and a3 queued (their own deliveries); a3 → a4 → a5 in place
    assert dispatcher.stats.published == dispatcher.stats.delivered == 3
