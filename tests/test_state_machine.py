"""Guarantees 1-3 under an adversarial delivery service, explored by a Hypothesis state machine.

Each example generates a small random workflow (linear steps, ``switch``, ``if``, ``catch``,
``wait.for``, ``parallel``, ``foreach`` with a concurrency bound, retries, compensations — with
actions whose failures are driven by the generated data), starts it on a real Redis, and then lets
Hypothesis play the message bus: deliver any pending message in any order, deliver duplicates,
redeliver long-acknowledged (stale) messages, crash a worker at any node boundary (its lock stays
held until it "expires"), make a worker stall past its lock TTL while another worker takes over,
make a publish fail, run ``recover`` at random moments.

After every rule: a branch's ``seq`` never decreases; no branch lock is held except by a crashed
worker (a lock is never leaked by a healthy one, and never two per branch); a finished execution
never changes again. At the end everything pending is delivered and the outcome is compared with
``reference_model``: final status, output, the completed steps per branch (in order), compensations
newest first, and every effect applied exactly once under its idempotency key.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from typing import Any

from conftest import QueueDispatcher
from hypothesis import HealthCheck, settings
from hypothesis import event as _event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from reference_model import Act, Each, Ledger, Par, Plan, Step, Switch, Wait, check

from engine.actions import ActionRegistry
from engine.catalog import Catalog
from engine.clock import VirtualClock
from engine.dispatch import DispatchError
from engine.model import Message, Outgoing
from engine.runtime import Runtime
from engine.state.store import Store, lock_key

STATS: Counter[str] = Counter()  # what the runs did (printed with -s; Hypothesis events too)


def event(name: str) -> None:
    STATS[name] += 1
    _event(name)


TERMINAL = {"succeeded", "failed", "compensated", "cancelled", "dead"}
POINTS = (
    "before_step",
    "after_step",
    "before_checkpoint",
    "after_checkpoint",
    "after_publish",
    "publish_error",
)

# ------------------------------------------------------------------------------------- workflows


@st.composite
def plans(draw: Any) -> Plan:
    ids = itertools.count()
    flags: dict[str, bool] = {}

    def new_id(prefix: str) -> str:
        return f"{prefix}{next(ids)}"

    def flag() -> str:
        name = draw(st.sampled_from(["f1", "f2", "f3"]))
        flags.setdefault(name, draw(st.booleans()))
        return name

    def act(can_fail: bool) -> Act:
        attempts = draw(st.integers(1, 3))
        fail_until = draw(st.integers(0, attempts - 1))  # recovers within its retries ...
        if can_fail and draw(st.integers(0, 7)) == 0:
            fail_until = attempts  # ... or exhausts them
        comp = draw(st.integers(0, 4)) > 1
        return Act(
            new_id("a"),
            fail_until=fail_until,
            fatal=can_fail and draw(st.integers(0, 7)) == 0,
            attempts=attempts,
            comp=comp,
            comp_fail_until=draw(st.integers(0, 1)) if comp else 0,
            when=flag() if draw(st.integers(0, 5)) == 0 else None,
        )

    def scope(depth: int, length: int, can_fail: bool) -> tuple[Step, ...]:
        out: list[Step] = []
        catches: list[int] = []
        for i in range(length):
            last = i == length - 1
            kinds = ["act", "act", "act", "wait"]
            if not last:
                kinds.append("switch")
            if depth < 2:
                kinds += ["par", "each"]
            kind = draw(st.sampled_from(kinds))
            if kind == "act":
                step: Step = act(can_fail)
                if not last and draw(st.integers(0, 4)) == 0:
                    catches.append(i)
            elif kind == "wait":
                step = Wait(new_id("w"), draw(st.sampled_from([500, 3000])))
            elif kind == "switch":
                step = Switch(new_id("s"), flag(), "")  # target filled in below
            elif kind == "par":
                n = draw(st.integers(2, 3))
                step = Par(
                    new_id("p"),
                    tuple(scope(depth + 1, draw(st.integers(1, 2)), can_fail) for _ in range(n)),
                )
            else:
                items = tuple(range(draw(st.integers(1, 4))))
                step = Each(
                    new_id("e"),
                    items,
                    draw(st.integers(1, 3)),
                    scope(depth + 1, draw(st.integers(1, 2)), can_fail),
                )
            out.append(step)
        for i, s in enumerate(out):  # jumps go forward, within the same list
            if isinstance(s, Switch):
                out[i] = Switch(s.id, s.flag, out[draw(st.integers(i + 1, len(out) - 1))].id)
        for i in catches:
            s = out[i]
            assert isinstance(s, Act)
            out[i] = Act(**{**s.__dict__, "catch_to": out[draw(st.integers(i + 1, len(out) - 1))].id})
        return tuple(out)

    steps = scope(0, draw(st.integers(2, 6)), draw(st.booleans()))
    return Plan("gen", steps, tuple(sorted(flags.items())))


# ------------------------------------------------------------------------------------ the machine


class Crash(Exception):
    """The worker process died here."""


class CrashStore(Store):
    """A crashed worker does not unlock in-process: its lock stays until it expires (the machine
    expires it with ``expire_locks``)."""

    crashing = False
    machine: Any = None

    def unlock(self, execution_id: str, branch: str, token: str) -> None:
        if self.crashing:
            self.crashing = False
            return
        super().unlock(execution_id, branch, token)

    def run(self, name: str, execution_id: str, args: dict[str, Any], branch: str | None = None) -> dict:
        """``before_checkpoint``: any node (compensations and halted branches too) ran, and the
        worker dies before writing it; its lock stays."""
        m = self.machine
        if name == "checkpoint" and m is not None and m.mode == ("crash", "before_checkpoint"):
            m.mode = None
            m.held.add(lock_key(execution_id, branch or ""))
            raise Crash("before_checkpoint")
        return super().run(name, execution_id, args, branch)


class FrozenClock(VirtualClock):
    """Time moves only when a delayed message is delivered: runs replay identically (Hypothesis
    needs that), and every time is a multiple of 0.5 s, exact in binary and in the scripts' %.3f."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 1_800_000_000.0

    def now(self) -> float:
        return self.t

    def advance_to(self, when: float) -> None:
        self.t = max(self.t, when)


class Bus(QueueDispatcher):
    """Everything published lands in ``pending``, undeduplicated (harsher than QStash's 10 minutes)."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock)
        self.pending: list[Outgoing] = []

    def publish(self, outgoing: Any) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise DispatchError("injected publish failure")
        self.pending.extend(outgoing)


class DeliveryMachine(RuleBasedStateMachine):
    redis: Any = None  # set by the test function (a real Redis client)

    def __init__(self) -> None:
        super().__init__()
        self.redis.flushdb()  # each example alone: `recover` scans the whole active index
        self.clock = FrozenClock()
        self.bus = Bus(self.clock)
        self.store = CrashStore(self.redis)
        self.store.machine = self
        self.ledger = Ledger()
        self.acked: list[Outgoing] = []
        self.held: set[str] = set()
        self.seqs: dict[str, int] = {}
        self.final: dict[str, Any] | None = None
        self.mode: tuple[str, str] | None = None
        self.overtaken: list[Any] = []
        self.plan: Plan | None = None
        self.eid = ""
        self.cancelled: bool | None = None  # a cancel accepted while running (compensate or not)

    # -- the fault hook

    def fault(self, point: str, message: Message) -> None:
        if self.mode is None:
            return
        kind, at = self.mode
        target = "after_checkpoint" if at == "publish_error" else at
        if point != target:
            return
        self.mode = None
        if at == "publish_error":
            self.bus.fail_next = 1
            return
        if kind == "crash":
            if point in ("before_step", "after_step"):
                self.store.crashing = True
                self.held.add(lock_key(message.execution_id, message.branch))
            raise Crash(point)
        # stall: this worker hangs past its lock TTL; the redelivery runs on another worker
        self.store.client.delete(lock_key(message.execution_id, message.branch))
        self.overtaken.append(self.runtime.advance(message))

    # -- set-up

    @initialize(plan=plans())
    def start(self, plan: Plan) -> None:
        self.plan = plan
        registry = ActionRegistry()
        for name, fn in self.ledger.actions().items():
            registry.register(name, fn)
        self.runtime = Runtime(
            self.store,
            self.bus,
            Catalog.from_texts([plan.yaml()]),
            actions=registry,
            clock=self.clock,
            faults=self.fault,
            random=lambda: 0.5,
        )
        # a fixed id (the db is flushed per example): the order of a big Redis hash (the outbox)
        # depends on its field names, and replays must see the same order
        self.eid = "sm-1"
        self.runtime.start(plan.name, plan.input, self.eid)

    # -- deliveries

    def _deliver(self, outgoing: Outgoing) -> str:
        due = outgoing.not_before if outgoing.not_before is not None else None
        if due is None and outgoing.delay_ms:
            due = self.clock.now() + outgoing.delay_ms / 1000  # time passes until a delayed message
        if due is not None:
            self.clock.advance_to(due)
        try:
            result = self.runtime.advance(outgoing.message)
        except (Crash, DispatchError):
            event("delivery: crashed")
            return "crashed"
        finally:
            self.mode = None
            self.bus.fail_next = 0  # an armed publish failure that found nothing to publish
        event(f"delivery: {result.kind}")
        return result.kind

    def _take(self, data: Any) -> tuple[int, Outgoing]:
        i = data.draw(st.integers(0, len(self.bus.pending) - 1), label="message")
        return i, self.bus.pending[i]

    def _settle(self, i: int, outgoing: Outgoing, kind: str) -> None:
        if kind in ("busy", "crashed"):
            return  # not acknowledged: stays pending (redelivered later)
        assert self.bus.pending[i] is outgoing
        del self.bus.pending[i]
        self.acked.append(outgoing)

    @precondition(lambda self: self.bus.pending)
    @rule(data=st.data())
    def deliver(self, data: Any) -> None:
        i, outgoing = self._take(data)
        self._settle(i, outgoing, self._deliver(outgoing))

    @precondition(lambda self: self.bus.pending)
    @rule(data=st.data())
    def deliver_duplicate(self, data: Any) -> None:
        """The same message delivered twice in a row (the first copy stays pending)."""
        _, outgoing = self._take(data)
        self._deliver(outgoing)

    @precondition(lambda self: self.acked)
    @rule(data=st.data())
    def redeliver_acknowledged(self, data: Any) -> None:
        outgoing = self.acked[data.draw(st.integers(0, len(self.acked) - 1), label="old message")]
        kind = self._deliver(outgoing)
        assert kind in ("stale", "finished", "busy", "crashed"), f"an acknowledged message {kind}"

    @precondition(lambda self: self.bus.pending)
    @rule(data=st.data(), point=st.sampled_from(POINTS))
    def crash(self, data: Any, point: str) -> None:
        i, outgoing = self._take(data)
        self.mode = ("crash", point)
        self._settle(i, outgoing, self._deliver(outgoing))

    @precondition(lambda self: self.bus.pending)
    @rule(data=st.data(), point=st.sampled_from(["before_step", "after_step"]))
    def stall_past_lock_ttl(self, data: Any, point: str) -> None:
        i, outgoing = self._take(data)
        self.mode = ("stall", point)
        self.overtaken = []
        kind = self._deliver(outgoing)
        if self.overtaken:  # the stall happened: the other worker advanced, this one is fenced out
            (other,) = self.overtaken
            assert other.kind == "advanced", other
            assert kind == "stale", f"the stalled worker's late checkpoint was {kind}"
        self._settle(i, outgoing, kind)

    @precondition(lambda self: self.held)
    @rule()
    def expire_locks(self) -> None:
        """The crashed workers' locks reach their TTL."""
        for key in self.held:
            self.store.client.delete(key)
        self.held.clear()

    @precondition(lambda self: self.cancelled is None and self.final is None)
    @rule(data=st.data(), compensate=st.booleans())
    def cancel(self, data: Any, compensate: bool) -> None:
        """An operator cancels (now and then: most examples should also run to their own end)."""
        if data.draw(st.integers(0, 7), label="cancel now") != 0:
            return
        status = self.runtime.record(self.eid)["status"]
        self.runtime.cancel(self.eid, compensate=compensate)
        if status == "running":  # accepted (a compensating or finished execution ignores it)
            self.cancelled = compensate

    @rule()
    def recover(self) -> None:
        self.runtime.recover(older_than_s=0)

    # -- invariants

    @invariant()
    def seq_never_decreases(self) -> None:
        if not self.eid:
            return
        for branch, fields in self.store.branches(self.eid).items():
            seq = int(fields.get("seq") or 0)
            assert seq >= self.seqs.get(branch, 0), f"branch {branch!r} seq went back to {seq}"
            self.seqs[branch] = seq

    @invariant()
    def only_crashed_workers_hold_locks(self) -> None:
        if not self.eid:
            return
        held = {
            k if isinstance(k, str) else k.decode() for k in self.store.client.keys(f"hf:{{{self.eid}}}:l:*")
        }
        assert held <= self.held, f"locks held by nobody alive: {sorted(held - self.held)}"

    @invariant()
    def a_finished_execution_never_changes(self) -> None:
        if not self.eid:
            return
        rec = self.runtime.record(self.eid)
        snapshot = {k: rec[k] for k in ("status", "output", "error", "trace")}
        if self.final is not None:
            assert snapshot == self.final, "a finished execution changed"
        elif rec["status"] in TERMINAL:
            self.final = snapshot

    # -- the end: drain, then judge against the reference

    def teardown(self) -> None:
        if not self.eid or self.plan is None:
            return
        for _ in range(5000):
            if not self.bus.pending:
                break
            self.expire_locks() if self.held else None
            self.bus.pending.sort(key=lambda o: (o.not_before or 0, o.delay_ms))
            outgoing = self.bus.pending[0]
            kind = self._deliver(outgoing)
            assert kind not in ("busy", "crashed"), f"{kind} while draining"
            self._settle(0, outgoing, kind)
        assert not self.bus.pending, "the drain did not end"
        rec = self.runtime.record(self.eid)
        assert rec["status"] in TERMINAL, f"stuck as {rec['status']} at {rec['current']}"
        event(f"outcome: {rec['status']}")
        fans = sum(1 for k in self.seqs if k)
        event(f"branches: {'none' if not fans else '1-4' if fans < 5 else '5+'}")
        check(self.plan, self.eid, rec, self.runtime.history(self.eid), self.ledger, self.cancelled)
        assert self.store.outbox(self.eid) == [], "outbox entries left behind"


def test_random_workflows_under_adversarial_delivery(redis_db: Any) -> None:
    DeliveryMachine.redis = redis_db
    run_state_machine_as_test(
        DeliveryMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            database=None,
        ),
    )
    print(sorted(STATS.items()))


def test_the_generated_workflows_compile_and_the_reference_accepts_an_undisturbed_run(redis_db: Any) -> None:
    """The oracle is not vacuous: quiet runs of generated plans match it (both outcomes occur)."""
    from hypothesis import given

    outcomes: set[str] = set()

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(plan=plans())
    def run(plan: Plan) -> None:
        ledger = Ledger()
        registry = ActionRegistry()
        for name, fn in ledger.actions().items():
            registry.register(name, fn)
        clock = VirtualClock()
        bus = QueueDispatcher(clock)
        rt = Runtime(Store(redis_db), bus, Catalog.from_texts([plan.yaml()]), actions=registry, clock=clock)
        eid = rt.start(plan.name, plan.input, f"q-{uuid.uuid4().hex[:10]}")
        bus.drain(rt)
        rec = rt.record(eid)
        check(plan, eid, rec, rt.history(eid), ledger)
        outcomes.add(rec["status"])

    run()
    assert "succeeded" in outcomes and outcomes & {"failed", "compensated"}, outcomes
