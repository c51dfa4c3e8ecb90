"""wait (for / until / event), cancel and the execution timeout."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from engine.errors import UnknownExecution


def test_wait_for_is_a_delayed_message(harness: Any) -> None:
    h = harness("""
        name: nap
        steps:
          - id: nap
            wait: {for: 2h}
          - id: after
            set: {done: true}
    """)
    eid = h.start("nap")
    t0 = h.clock.now()
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "succeeded"
    delayed = [o for o in h.dispatcher.published if o.delay_ms]
    assert [(o.message.node, o.delay_ms) for o in delayed] == [("nap", 7_200_000)]
    assert h.clock.now() - t0 >= 7200
    assert [t["step"] for t in r["trace"]] == ["nap", "after"]


def test_wait_until_uses_not_before_and_past_times_continue(harness: Any) -> None:
    h = harness("""
        name: later
        input: {type: object}
        steps:
          - id: w
            wait: {until: "{{ input.at }}"}
          - id: after
            set: {done: true}
    """)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    eid = h.start("later", {"at": future.isoformat()})
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    nb = [o.not_before for o in h.dispatcher.published if o.not_before]
    assert nb == [pytest.approx(future.timestamp(), abs=0.01)]

    h.dispatcher.published.clear()
    r = h.run("later", {"at": "2001-01-01T00:00:00+00:00"})
    assert r["status"] == "succeeded"
    assert all(o.not_before is None for o in h.dispatcher.published)

    r = h.run("later", {"at": "not a date"})
    assert r["status"] == "failed" and r["error"]["name"] == "template"


EVENT_WF = """
    name: ev
    input: {type: object}
    steps:
      - id: w
        wait: {event: paid, key: "{{ input.order }}", timeout: 1h}
        catch:
          - errors: [timeout]
            goto: gave_up
      - id: got
        succeed: {output: "{{ steps.w.output }}"}
      - id: gave_up
        succeed: {output: timed out}
"""


def test_event_delivered_to_a_waiting_execution(harness: Any) -> None:
    h = harness(EVENT_WF)
    eid = h.start("ev", {"order": "o-1"})
    h.drain(until=lambda: h.runtime.record(eid)["current"][0]["phase"] == "park")
    assert h.runtime.record(eid)["current"] == [{"branch": "", "node": "w", "phase": "park"}]
    assert h.runtime.notify("paid", "o-2", {"n": 0}) == 0  # another key: kept for later
    assert h.runtime.notify("paid", "o-1", {"amount": 42}) == 1
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "succeeded" and r["output"] == {"amount": 42}


def test_event_sent_before_the_wait_is_kept_and_consumed_once(harness: Any) -> None:
    h = harness(EVENT_WF)
    assert h.runtime.notify("paid", "o-7", {"early": True}) == 0
    r = h.run("ev", {"order": "o-7"})
    assert r["output"] == {"early": True}
    r = h.run("ev", {"order": "o-7"})  # consumed by the first wait: the second one times out
    assert r["output"] == "timed out"


def test_event_wait_times_out_and_a_late_event_is_kept(harness: Any) -> None:
    h = harness(EVENT_WF)
    r = h.run("ev", {"order": "o-9"})
    assert r["output"] == "timed out"
    timeouts = [o for o in h.dispatcher.published if o.delay_ms]
    assert [(o.message.node, o.delay_ms) for o in timeouts] == [("w#timeout", 3_600_000)]
    assert h.runtime.notify("paid", "o-9", 1) == 0  # nobody waits any more: pending
    assert h.run("ev", {"order": "o-9"})["output"] == 1


def test_event_wait_without_timeout_waits_until_notified(harness: Any) -> None:
    h = harness("""
        name: forever
        steps:
          - id: w
            wait: {event: go, key: k}
    """)
    eid = h.start("forever")
    h.drain()
    assert h.runtime.record(eid)["status"] == "running"
    assert h.dispatcher.queue == []
    assert h.runtime.notify("go", "k", [1, 2]) == 1
    h.drain()
    assert h.runtime.record(eid)["output"] == [1, 2]


def test_a_crash_between_claim_and_checkpoint_does_not_lose_the_event(harness: Any) -> None:
    crash = {"armed": True}

    def faults(point: str, message: Any) -> None:
        if point == "after_step" and message.node == "w" and crash["armed"]:
            crash["armed"] = False
            raise RuntimeError("crash after claiming")

    h = harness(EVENT_WF, faults=faults)
    h.runtime.notify("paid", "o-5", {"v": 5})
    eid = h.start("ev", {"order": "o-5"})
    o = h.dispatcher.pop()
    with pytest.raises(RuntimeError):
        h.runtime.advance(o.message)  # the event was claimed, then the worker died
    assert h.runtime.advance(o.message).kind == "advanced"  # redelivery: the same claim is re-read
    h.drain()
    assert h.runtime.record(eid)["output"] == {"v": 5}


def test_notify_resumes_every_waiter_of_that_key(harness: Any) -> None:
    h = harness(EVENT_WF)
    a = h.start("ev", {"order": "shared"})
    b = h.start("ev", {"order": "shared"})
    h.drain(until=lambda: all(h.runtime.record(e)["current"][0]["phase"] == "park" for e in (a, b)))
    assert h.runtime.notify("paid", "shared", "x") == 2
    h.drain()
    assert h.runtime.record(a)["output"] == "x"
    assert h.runtime.record(b)["output"] == "x"


CANCEL_WF = """
    name: long
    steps:
      - id: book
        action: rec
        with: {name: book}
        compensate:
          action: rec
          with: {name: "unbook {{ steps.book.output }}"}
      - id: nap
        wait: {for: 7d}
      - id: charge
        action: rec
        with: {name: charge}
"""


def test_cancel_a_waiting_execution_compensates_and_is_cancelled(harness: Any) -> None:
    calls: list[str] = []

    def rec(ctx: Any, name: str) -> str:
        calls.append(name)
        return name

    h = harness(CANCEL_WF, actions={"rec": rec})
    eid = h.start("long")
    h.drain(
        until=lambda: (
            h.runtime.record(eid)["current"][0]["node"] == "nap"
            and h.runtime.record(eid)["current"][0]["phase"] == "park"
        )
    )
    t0 = h.clock.now()
    h.runtime.cancel(eid)
    h.drain(until=lambda: h.runtime.record(eid)["status"] == "cancelled")
    assert h.clock.now() - t0 < 3600  # woken at once, not after the 7-day wait
    h.drain()  # the old 7-day message arrives later and is stale
    r = h.runtime.record(eid)
    assert r["status"] == "cancelled"
    assert r["error"]["name"] == "cancelled"
    assert calls == ["book", "unbook book"]
    assert [(t["step"], t["phase"]) for t in r["trace"]] == [("book", "run"), ("book", "compensate")]
    with pytest.raises(UnknownExecution):
        h.runtime.cancel("nope")


def test_cancel_without_compensation_and_cancel_of_a_finished_execution(harness: Any) -> None:
    calls: list[str] = []

    def rec(ctx: Any, name: str) -> str:
        calls.append(name)
        return name

    h = harness(CANCEL_WF, actions={"rec": rec})
    eid = h.start("long")
    h.drain(until=lambda: h.runtime.record(eid)["current"][0]["phase"] == "park")
    h.runtime.cancel(eid, compensate=False)
    h.drain()
    assert h.runtime.record(eid)["status"] == "cancelled"
    assert calls == ["book"]
    h.runtime.cancel(eid)  # finished: nothing happens
    h.drain()
    assert h.runtime.record(eid)["status"] == "cancelled"


def test_cancel_stops_every_parallel_branch(harness: Any) -> None:
    h = harness("""
        name: par
        steps:
          - id: both
            parallel:
              branches:
                - steps:
                    - id: slow
                      wait: {for: 30d}
                    - id: never
                      set: {a: 1}
                - steps:
                    - id: ev
                      wait: {event: e, key: k}
    """)
    eid = h.start("par")
    h.drain(until=lambda: len(h.runtime.store.parked(eid)) == 2)
    h.runtime.cancel(eid)
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "cancelled"
    assert "never" not in [t["step"] for t in r["trace"]]
    # the abandoned event wait was released: a later event is kept for someone else
    assert h.runtime.notify("e", "k", 1) == 0


def test_execution_timeout_fails_a_waiting_execution_and_compensates(harness: Any) -> None:
    calls: list[str] = []

    def rec(ctx: Any, name: str) -> str:
        calls.append(name)
        return name

    h = harness(
        """
        name: deadline
        timeout: 1h
        steps:
          - id: book
            action: rec
            with: {name: book}
            compensate:
              action: rec
              with: {name: unbook}
          - id: w
            wait: {event: never, key: k}
        """,
        actions={"rec": rec},
    )
    r = h.run("deadline")
    assert r["status"] == "compensated"
    assert r["error"]["name"] == "timeout"
    assert calls == ["book", "unbook"]


def test_execution_timeout_is_checked_at_node_boundaries(harness: Any) -> None:
    h = harness("""
        name: boundary
        timeout: 10s
        on_failure: stop
        steps:
          - id: a
            set: {x: 1}
          - id: b
            set: {x: 2}
    """)
    eid = h.start("boundary")
    h.runtime.advance(h.dispatcher.pop().message)  # a
    h.clock.advance_to(h.clock.now() + 11)
    nxt = next(o for o in h.dispatcher.pending() if o.message.node == "b")
    h.runtime.advance(nxt.message)
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "failed" and r["error"]["name"] == "timeout"
    assert [t["step"] for t in r["trace"]] == ["a"]


def test_the_common_timeout_key_bounds_a_wait(harness: Any) -> None:
    h = harness("""
        name: bounded
        steps:
          - id: nap
            wait: {for: 2d}
            timeout: 1h
            catch:
              - errors: [timeout]
                goto: late
          - id: ok
            succeed: {output: slept}
          - id: late
            succeed: {output: "{{ error.name }}"}
    """)
    r = h.run("bounded")
    assert r["output"] == "timeout"
    assert [o.delay_ms for o in h.dispatcher.published if o.delay_ms] == [3_600_000]


def test_a_child_workflow_step_timeout_cancels_the_child(harness: Any) -> None:
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
            timeout: 30m
        """,
    )
    eid = h.start("parent")
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "failed" and r["error"]["name"] == "timeout"
    assert h.runtime.record(f"{eid}~sub.1")["status"] == "cancelled"
