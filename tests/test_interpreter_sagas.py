"""Compensation: order (linear, parallel, foreach, nested), statuses, retries, resume; child workflows."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import NotResumable
from engine.model import StepError, StepFailure


class Recorder:
    """Actions that record what ran; `fail_on` names fail (once, or always)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.keys: dict[str, str] = {}
        self.fail_on: dict[str, int] = {}

    def __call__(self, ctx: Any, name: str, **extra: Any) -> Any:
        self.calls.append(name)
        self.keys[name] = ctx.idempotency_key
        left = self.fail_on.get(name, 0)
        if left:
            self.fail_on[name] = left - 1
            raise StepFailure(StepError("http.503", f"{name} unavailable"))
        return {"name": name, **extra}


def comp_steps(trace: list[dict]) -> list[str]:
    return [t["step"] for t in trace if t["phase"] == "compensate" and t["status"] == "ok"]


LINEAR = """
    name: linear
    steps:
      - id: book
        action: rec
        with: {name: book, id: B1}
        compensate:
          action: rec
          with: {name: "cancel {{ steps.book.output.id }}"}
      - id: note
        set: {x: 1}
      - id: charge
        action: rec
        with: {name: charge, id: C1}
        compensate:
          action: rec
          with: {name: "refund {{ steps.charge.output.id }}"}
      - id: boom
        fail: {error: Broken}
"""


def test_linear_compensation_runs_newest_first_one_per_call(harness: Any) -> None:
    rec = Recorder()
    h = harness(LINEAR, actions={"rec": rec})
    eid = h.start("linear")
    results = h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "compensated"
    assert r["error"]["name"] == "Broken"
    assert rec.calls == ["book", "charge", "refund C1", "cancel B1"]
    assert comp_steps(r["trace"]) == ["charge", "book"]
    assert sum(1 for x in results if x.kind == "advanced") == 4 + 2 + 1  # 4 steps, 2 compensations, end


def test_nothing_to_compensate_is_failed_and_on_failure_stop_does_not_compensate(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: nothing
        steps:
          - id: a
            set: {x: 1}
          - id: boom
            fail: {error: Broken}
        """,
        LINEAR.replace("name: linear", "name: stopper\n    on_failure: stop"),
        actions={"rec": rec},
    )
    assert h.run("nothing")["status"] == "failed"
    r = h.run("stopper")
    assert r["status"] == "failed"
    assert rec.calls == ["book", "charge"]


def test_compensation_retries_then_compensation_failed_then_resume(harness: Any) -> None:
    rec = Recorder()
    rec.fail_on["cancel B1"] = 5
    h = harness(
        LINEAR.replace(
            'with: {name: "cancel {{ steps.book.output.id }}"}',
            'with: {name: "cancel {{ steps.book.output.id }}"}\n'
            "          retry: {max_attempts: 3, interval: 1s}",
        ),
        actions={"rec": rec},
    )
    eid = h.start("linear")
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "compensation_failed"
    assert rec.calls == ["book", "charge", "refund C1", "cancel B1", "cancel B1", "cancel B1"]
    comp = [(t["step"], t["status"], t["attempt"]) for t in r["trace"] if t["phase"] == "compensate"]
    assert comp == [("charge", "ok", 1), ("book", "error", 1), ("book", "error", 2), ("book", "error", 3)]
    assert h.runtime.record(eid)["current"] == [{"branch": "", "node": "$compensate", "phase": "compensate"}]

    rec.fail_on["cancel B1"] = 0  # the operator fixed the downstream service
    h.runtime.resume(eid)
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "compensated"
    assert rec.calls[-1] == "cancel B1"
    assert comp_steps(r["trace"]) == ["charge", "book"]
    with pytest.raises(NotResumable):
        h.runtime.resume(eid)


def test_compensations_in_parallel_branches_newest_first(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: par
        steps:
          - id: first
            action: rec
            with: {name: first}
            compensate: {action: rec, with: {name: undo-first}}
          - id: both
            parallel:
              branches:
                - steps:
                    - id: l1
                      action: rec
                      with: {name: l1}
                      compensate: {action: rec, with: {name: undo-l1}}
                    - id: l2
                      action: rec
                      with: {name: l2}
                      compensate: {action: rec, with: {name: undo-l2}}
                - steps:
                    - id: r1
                      action: rec
                      with: {name: r1}
                      compensate: {action: rec, with: {name: undo-r1}}
          - id: boom
            fail: {error: Broken}
        """,
        actions={"rec": rec},
    )
    eid = h.start("par")
    h.runtime.advance(h.dispatcher.pop().message)  # first
    h.runtime.advance(h.dispatcher.pop().message)  # fan out
    pending = {o.message.branch: o for o in (h.dispatcher.pop(), h.dispatcher.pop())}
    h.runtime.advance(pending["both/0"].message)  # l1
    h.runtime.advance(pending["both/1"].message)  # r1
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "compensated"
    ran = [c for c in rec.calls if not c.startswith("undo")]
    assert ran == ["first", "l1", "r1", "l2"]
    undo = [c for c in rec.calls if c.startswith("undo")]
    assert undo == ["undo-l2", "undo-r1", "undo-l1", "undo-first"]  # exact reverse of completion
    assert comp_steps(r["trace"]) == ["l2", "r1", "l1", "first"]


def test_a_sibling_finishing_after_the_failure_is_still_compensated_first(harness: Any) -> None:
    """Branch 1 fails while branch 0 is mid-step; branch 0's step completes (its compensation is
    registered), then branch 0 stops at its boundary; unwinding starts only after the join."""
    rec = Recorder()
    h = harness(
        """
        name: race
        steps:
          - id: both
            parallel:
              branches:
                - steps:
                    - id: slow
                      action: rec
                      with: {name: slow}
                      compensate: {action: rec, with: {name: undo-slow}}
                    - id: more
                      action: rec
                      with: {name: more}
                - steps:
                    - id: early
                      action: rec
                      with: {name: early}
                      compensate: {action: rec, with: {name: undo-early}}
                    - id: bad
                      fail: {error: Broken}
        """,
        actions={"rec": rec},
    )
    eid = h.start("race")
    h.runtime.advance(h.dispatcher.pop().message)  # fan out
    pending = {o.message.branch: o for o in (h.dispatcher.pop(), h.dispatcher.pop())}
    h.runtime.advance(pending["both/1"].message)  # early
    fail_msg = h.dispatcher.pop()
    assert fail_msg.message.node == "bad"

    def during_slow(point: str, message: Any) -> None:
        if point == "after_step" and message.node == "slow":
            h.runtime.faults = None
            h.runtime.advance(fail_msg.message)  # the sibling fails while `slow` is running

    h.runtime.faults = during_slow
    h.runtime.advance(pending["both/0"].message)
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "compensated"
    assert "more" not in rec.calls
    assert [c for c in rec.calls if c.startswith("undo")] == ["undo-slow", "undo-early"]


def test_foreach_item_compensations_see_their_own_item_outputs(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: each
        input: {type: object}
        steps:
          - id: loop
            foreach:
              items: "{{ input.xs }}"
              as: x
              concurrency: 1
              steps:
                - id: reserve
                  action: rec
                  with: {name: "reserve {{ x }}", seat: "{{ x }}-{{ index }}"}
                  compensate:
                    action: rec
                    with: {name: "release {{ steps.reserve.output.seat }} ({{ x }})"}
          - id: boom
            fail: {error: Broken}
        """,
        actions={"rec": rec},
    )
    r = h.run("each", {"xs": ["a", "b", "c"]})
    assert r["status"] == "compensated"
    assert [c for c in rec.calls if c.startswith("release")] == [
        "release c-2 (c)",
        "release b-1 (b)",
        "release a-0 (a)",
    ]
    eid = r["execution_id"]
    assert rec.keys["reserve b"] == f"{eid}:loop/1/reserve"
    assert rec.keys["release b-1 (b)"] == f"{eid}:loop/1/reserve:compensate"


def test_nested_compensation_order(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: nested
        input: {type: object}
        steps:
          - id: top
            action: rec
            with: {name: top}
            compensate: {action: rec, with: {name: undo-top}}
          - id: loop
            foreach:
              items: "{{ input.xs }}"
              concurrency: 1
              steps:
                - id: inner
                  parallel:
                    branches:
                      - steps:
                          - id: p
                            action: rec
                            with: {name: "p{{ item }}"}
                            compensate: {action: rec, with: {name: "undo-p{{ item }}"}}
          - id: boom
            fail: {error: Broken}
        """,
        actions={"rec": rec},
    )
    r = h.run("nested", {"xs": [1, 2]})
    assert r["status"] == "compensated"
    assert [c for c in rec.calls if c.startswith("undo")] == ["undo-p2", "undo-p1", "undo-top"]


def test_compensation_is_registered_only_after_success(harness: Any) -> None:
    rec = Recorder()
    rec.fail_on["charge"] = 99
    h = harness(LINEAR, actions={"rec": rec})
    r = h.run("linear")
    assert r["status"] == "compensated"
    assert r["error"]["name"] == "http.503"
    assert rec.calls == ["book", "charge", "cancel B1"]  # the failed charge is not refunded


CHILD = """
    name: child
    input: {type: object, required: [n]}
    steps:
      - id: work
        action: rec
        with: {name: "child {{ input.n }}"}
        compensate: {action: rec, with: {name: "undo child {{ input.n }}"}}
      - id: check
        switch:
          - if: "{{ input.n > 5 }}"
            goto: too_big
      - id: done
        succeed: {output: "{{ input.n * 2 }}"}
      - id: too_big
        fail: {error: TooBig, message: "{{ input.n }} is too big"}
"""

PARENT = """
    name: parent
    input: {type: object}
    steps:
      - id: sub
        workflow: {name: child, input: {n: "{{ input.n }}"}}
        catch:
          - errors: [TooBig]
            goto: small
      - id: done
        succeed: {output: "{{ steps.sub.output }}"}
      - id: small
        succeed: {output: "caught {{ error.name }}: {{ error.message }}"}
"""


def test_child_workflow_success(harness: Any) -> None:
    rec = Recorder()
    h = harness(CHILD, PARENT, actions={"rec": rec})
    eid = h.start("parent", {"n": 3})
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "succeeded", r
    assert r["output"] == 6
    child_id = f"{eid}~sub.1"
    assert h.runtime.record(child_id)["status"] == "succeeded"


def test_child_failure_fails_the_parent_step_with_the_childs_error(harness: Any) -> None:
    rec = Recorder()
    h = harness(CHILD, PARENT, actions={"rec": rec})
    r = h.run("parent", {"n": 9})
    assert r["status"] == "succeeded"
    assert r["output"] == "caught TooBig: 9 is too big"
    assert rec.calls == ["child 9", "undo child 9"]  # the child compensated itself first


def test_child_start_is_idempotent_on_redelivery(harness: Any) -> None:
    rec = Recorder()
    crashed = {"done": False}

    def faults(point: str, message: Any) -> None:
        if point == "after_step" and message.node == "sub" and not crashed["done"]:
            crashed["done"] = True
            raise RuntimeError("crash after starting the child")

    h = harness(CHILD, PARENT, actions={"rec": rec}, faults=faults)
    eid = h.start("parent", {"n": 2})
    o = h.dispatcher.pop()
    with pytest.raises(RuntimeError):
        h.runtime.advance(o.message)
    h.runtime.advance(o.message)  # redelivered: the same child id, no second child
    h.drain()
    assert h.runtime.record(eid)["output"] == 4
    assert rec.calls == ["child 2"]


def test_cancelling_the_parent_cancels_a_running_child(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: slowchild
        steps:
          - id: w
            wait: {event: never, key: k}
        """,
        """
        name: parent
        steps:
          - id: sub
            workflow: {name: slowchild, input: {}}
        """,
        actions={"rec": rec},
    )
    eid = h.start("parent")
    h.drain()
    child = f"{eid}~sub.1"
    assert h.runtime.record(child)["status"] == "running"
    h.runtime.cancel(eid)
    h.drain()
    assert h.runtime.record(eid)["status"] == "cancelled"
    assert h.runtime.record(child)["status"] == "cancelled"


def test_a_workflow_compensation_runs_a_child_and_waits_for_it(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: refund
        input: {type: object, required: [charge]}
        steps:
          - id: undo
            action: rec
            with: {name: "refund {{ input.charge }}"}
        """,
        """
        name: shop
        steps:
          - id: charge
            action: rec
            with: {name: charge, id: C9}
            compensate:
              workflow: {name: refund, input: {charge: "{{ steps.charge.output.id }}"}}
          - id: boom
            fail: {error: Broken}
        """,
        actions={"rec": rec},
    )
    eid = h.start("shop")
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "compensated", r
    assert rec.calls == ["charge", "refund C9"]
    assert comp_steps(r["trace"]) == ["charge"]


def test_after_a_cancel_a_compensation_retry_keeps_its_backoff(harness: Any) -> None:
    """A stop turns a branch's delays into "now" so nothing waits past a cancel — but not the
    retries of the unwinding a cancel starts (they used to fire at once, spending every attempt)."""
    calls: list[float] = []
    h: Any = None

    def undo(ctx: Any) -> None:
        calls.append(h.clock.now())
        if len(calls) == 1:
            raise StepFailure(StepError("svc.down", "down"))

    h = harness(
        """
        name: slow-undo
        steps:
          - id: a
            action: ok
            compensate: {action: undo, retry: {max_attempts: 3, interval: 1m, jitter: none, on: [any]}}
          - {id: pause, wait: {for: 1h}}
        """,
        actions={"ok": lambda ctx: None, "undo": undo},
    )
    eid = h.start("slow-undo")
    h.drain(until=lambda: bool(h.dispatcher.queue) and h.dispatcher.queue[0][0] > h.clock.now() + 60)
    h.runtime.cancel(eid)
    h.drain()
    assert h.runtime.record(eid)["status"] == "cancelled"
    assert len(calls) == 2 and calls[1] - calls[0] >= 59
