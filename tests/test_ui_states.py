"""Node states for the dashboard (engine.web.ui.states), from real runs and from hand-written histories.

The real runs go through the runtime (harness: real Redis, virtual clock), so the histories are the
ones the interpreter writes; the hand-written ones pin down cases a run reaches only by timing.
"""

from __future__ import annotations

from typing import Any

from dsl.compiler import compile_document
from dsl.source import loads
from engine.web.ui.states import STATES, node_states
from engine.web.ui.timeline import compensations, timeline

SAGA = """
name: trip
input: {type: object}
steps:
  - id: book
    action: t.ok
    compensate: {action: t.undo}
  - id: pay
    action: t.ok
    compensate: {action: t.undo}
  - id: fork
    parallel:
      branches:
        - steps:
            - id: left
              action: t.ok
        - steps:
            - id: right
              action: t.ok
  - id: maybe
    if: "{{ false }}"
    action: t.ok
  - id: wait_go
    wait: {event: go, key: "{{ input.k }}"}
  - id: ship
    action: t.ship
  - id: never
    action: t.ok
"""

FLAKY = """
name: flaky
input: {type: object}
steps:
  - id: call
    action: t.flaky
    retry: {max_attempts: 3, interval: 10s, jitter: none, on: [action.RuntimeError]}
  - id: after
    action: t.ok
"""


def states(h: Any, eid: str) -> dict[str, Any]:
    rt = h.runtime
    record = rt.record(eid)
    graph = rt.store.get_graph(record["graph"])
    return node_states(graph, record, rt.history(eid))


def state_of(found: dict[str, Any]) -> dict[str, str]:
    return {node: info["state"] for node, info in found.items()}


def actions(fail_ship: bool) -> dict[str, Any]:
    def ship(ctx: Any) -> Any:
        if fail_ship:
            raise RuntimeError("truck broke down")
        return {"shipped": True}

    return {"t.ok": lambda ctx: {"ok": 1}, "t.undo": lambda ctx: None, "t.ship": ship}


def test_a_waiting_saga_shows_done_skipped_waiting_and_pending(harness: Any) -> None:
    h = harness(SAGA, actions=actions(fail_ship=True))
    eid = h.start("trip", {"k": "a"})
    h.drain()
    found = states(h, eid)
    assert state_of(found) == {
        "book": "done",
        "pay": "done",
        "fork": "done",
        "left": "done",
        "right": "done",
        "maybe": "skipped",
        "wait_go": "waiting",
        "ship": "pending",
        "never": "pending",
    }
    assert found["wait_go"]["detail"] == "waiting for event go (key a)"
    assert found["wait_go"]["branches"] == [""]
    assert found["wait_go"]["wait"] == {"wait": "event", "event": "go", "key": "a"}
    assert found["book"]["compensation"] == "registered"
    assert found["fork"]["compensation"] is None


def test_a_failed_saga_shows_the_failed_step_and_what_was_compensated(harness: Any) -> None:
    h = harness(SAGA, actions=actions(fail_ship=True))
    eid = h.start("trip", {"k": "b"})
    h.drain()
    h.runtime.notify("go", "b", None)
    h.drain()
    assert h.runtime.record(eid)["status"] == "compensated"
    found = states(h, eid)
    assert state_of(found) == {
        "book": "compensated",
        "pay": "compensated",
        "fork": "done",
        "left": "done",
        "right": "done",
        "maybe": "skipped",
        "wait_go": "done",
        "ship": "failed",
        "never": "pending",
    }
    assert found["ship"]["detail"] == "action.RuntimeError: truck broke down"
    assert found["ship"]["error"]["name"] == "action.RuntimeError"
    assert found["book"]["compensation"] == "done"
    history = h.runtime.history(eid)
    assert [c["step"] for c in compensations(history)] == ["pay", "book"]  # newest first
    texts = [e["text"] for e in timeline(history)["entries"]]
    assert texts.index("pay compensated") < texts.index("book compensated")
    assert any(t.startswith("ship failed (attempt 1): action.RuntimeError") for t in texts)


def test_a_succeeded_execution_is_done_everywhere_it_went(harness: Any) -> None:
    h = harness(SAGA, actions=actions(fail_ship=False))
    eid = h.start("trip", {"k": "c"})
    h.drain()
    h.runtime.notify("go", "c", {"x": 1})
    h.drain()
    found = states(h, eid)
    assert found["ship"]["state"] == "done" and found["never"]["state"] == "done"
    assert found["book"]["state"] == "done" and found["book"]["compensation"] == "registered"
    assert all(info["branches"] == [] for info in found.values())


def test_a_retry_in_its_backoff_is_retrying_then_done(harness: Any) -> None:
    calls = {"n": 0}

    def flaky(ctx: Any) -> Any:
        calls["n"] += 1
        if calls["n"] < 3:
            raise RuntimeError(f"try {calls['n']}")
        return "ok"

    h = harness(FLAKY, actions={"t.flaky": flaky, "t.ok": lambda ctx: 1})
    eid = h.start("flaky", {})
    h.drain(limit=1)  # the first attempt fails; its retry waits 10 s in the queue
    found = states(h, eid)
    assert found["call"]["state"] == "retrying"
    detail = found["call"]["detail"]  # "in 10s", or "at <time>" from the record's where when present
    assert detail.startswith("retrying: attempt 2 ") and detail.endswith(" after action.RuntimeError: try 1")
    assert found["after"]["state"] == "pending"
    h.drain()
    found = states(h, eid)
    assert found["call"]["state"] == "done"
    assert found["call"]["detail"].startswith("done after 3 attempts")
    assert found["after"]["state"] == "done"


def test_cancel_while_waiting_marks_the_wait_cancelled(harness: Any) -> None:
    h = harness(SAGA, actions=actions(fail_ship=False))
    eid = h.start("trip", {"k": "d"})
    h.drain()
    h.runtime.cancel(eid)
    h.drain()
    assert h.runtime.record(eid)["status"] == "cancelled"
    found = states(h, eid)
    assert found["wait_go"]["state"] == "cancelled"
    assert found["book"]["state"] == found["pay"]["state"] == "compensated"
    assert found["ship"]["state"] == "pending"


# ---------------------------------------------------------------------------- hand-written histories

LINE = """
name: line
steps:
  - id: a
    action: t.a
    compensate: {action: t.undo}
  - id: b
    action: t.b
    compensate: {action: t.undo}
  - id: c
    action: t.c
"""


def graph(text: str) -> Any:
    return compile_document(loads(text.strip() + "\n"), strict=True)


def ok(step: str, **extra: Any) -> dict[str, Any]:
    return {"step": step, "phase": "run", "status": "ok", "attempt": 1, **extra}


def test_the_compensation_in_progress_is_the_newest_one_not_yet_undone() -> None:
    g = graph(LINE)
    history = [
        ok("a"),
        ok("b"),
        {"step": "c", "phase": "run", "status": "error", "error": "x", "message": "no"},
        {"event": "compensating", "error": "x"},
    ]
    record = {
        "status": "compensating",
        "current": [{"branch": "", "node": "$compensate", "phase": "compensate"}],
    }
    found = node_states(g, record, history)
    assert found["b"]["state"] == "running" and found["b"]["compensation"] == "running"
    assert found["a"]["state"] == "done" and found["a"]["compensation"] == "registered"
    assert found["c"]["state"] == "failed"
    history.append({"step": "b", "phase": "compensate", "status": "ok", "attempt": 1})
    found = node_states(g, record, history)
    assert found["b"]["state"] == "compensated"
    assert found["a"]["compensation"] == "running"


def test_a_compensation_that_gave_up_is_failed_until_resumed() -> None:
    g = graph(LINE)
    history = [
        ok("a"),
        {"step": "c", "phase": "run", "status": "error", "error": "x"},
        {"event": "compensating", "error": "x"},
        {"step": "a", "phase": "compensate", "status": "error", "error": "http.503", "message": "down"},
        {"event": "compensation_failed", "step": "a", "error": "http.503"},
    ]
    found = node_states(g, {"status": "compensation_failed", "current": []}, history)
    assert found["a"]["state"] == "failed"
    assert found["a"]["detail"] == "compensation failed: http.503: down"
    assert found["a"]["compensation"] == "failed"


def test_where_from_the_record_gives_the_real_times_of_a_live_node() -> None:
    g = graph(LINE)
    history = [ok("a"), {"step": "b", "phase": "run", "status": "error", "error": "http.503", "attempt": 1}]
    history.append({"event": "retry", "step": "b", "attempt": 2, "delay_ms": 5000})
    record = {
        "status": "running",
        "current": [{"branch": "", "node": "b", "phase": "run"}],
        "where": [
            {"branch": "", "node": "b", "state": "retrying", "next_attempt_at": "2026-01-01T10:00:05Z"}
        ],
    }
    found = node_states(g, record, history)
    assert found["b"]["state"] == "retrying"
    assert found["b"]["detail"] == "retrying: attempt 2 at 2026-01-01T10:00:05Z after http.503"
    record["where"] = []  # a server without where: the delay from the history
    assert node_states(g, record, history)["b"]["detail"] == "retrying: attempt 2 in 5s after http.503"
    record["where"] = [{"node": "b", "state": "offloaded", "until": "2026-01-01T10:01:00Z"}]
    found = node_states(g, record, history)
    assert found["b"]["state"] == "waiting"
    assert (
        found["b"]["detail"]
        == "waiting for the answer of its offloaded call (times out at 2026-01-01T10:01:00Z)"
    )


def test_a_timed_event_wait_says_when_it_times_out() -> None:
    g = graph("name: w\nsteps:\n  - id: w\n    wait: {event: go, key: k, timeout: 1h}\n")
    history = [{"event": "park", "step": "w", "wait_wait": "event", "wait_event": "go", "wait_key": "k"}]
    record = {
        "status": "running",
        "current": [{"branch": "", "node": "w", "phase": "park"}],
        "where": [{"node": "w", "state": "waiting", "until": "2026-01-01T11:00:00Z"}],
    }
    found = node_states(g, record, history)
    assert found["w"]["detail"] == "waiting for event go (key k) (times out at 2026-01-01T11:00:00Z)"
    assert found["w"]["wait"] == {"wait": "event", "event": "go", "key": "k"}


def test_a_running_node_and_unknown_entries() -> None:
    g = graph(LINE)
    record = {"status": "running", "current": [{"branch": "", "node": "a", "phase": "run"}]}
    history = [{"event": "started"}, {"step": "zzz", "phase": "run", "status": "ok"}, {"odd": "entry"}]
    found = node_states(g, record, history)
    assert found["a"]["state"] == "running" and found["a"]["branches"] == [""]
    assert {info["state"] for info in found.values()} <= set(STATES)
    assert timeline(history, limit=2)["total"] == 3
    assert timeline(history, limit=2)["shown"] == 2


PARTIAL = """
name: partial
input: {type: object}
steps:
  - id: book
    action: t.ok
    compensate: {action: t.undo}
  - id: pay
    action: t.pay
    with: {cents: 200}
    retry: {max_attempts: 2, interval: 1s, jitter: none, on: [action.RuntimeError]}
    compensate_on_failure: true
    compensate: {action: t.undo}
"""


def test_a_step_that_failed_for_good_with_compensate_on_failure_is_undone_first(harness: Any) -> None:
    def pay(ctx: Any, cents: int) -> Any:
        raise RuntimeError(f"captured {cents}, then refused")

    h = harness(PARTIAL, actions={"t.ok": lambda ctx: 1, "t.undo": lambda ctx: None, "t.pay": pay})
    eid = h.start("partial", {})
    h.drain(limit=2)  # book, then pay's first attempt fails and is retried: nothing registered for it
    found = states(h, eid)
    assert found["pay"]["state"] == "retrying" and found["pay"]["compensation"] is None
    h.drain()
    assert h.runtime.record(eid)["status"] == "compensated"
    history = h.runtime.history(eid)
    assert [c["step"] for c in compensations(history)] == ["pay", "book"]
    found = states(h, eid)
    assert found["pay"]["state"] == "compensated"
    assert found["pay"]["detail"] == (
        "failed (action.RuntimeError: captured 200, then refused), then compensated"
    )
    assert found["book"]["state"] == "compensated"


def test_while_compensating_the_failed_step_with_compensate_on_failure_is_on_top() -> None:
    g = graph(PARTIAL)
    history = [
        ok("book"),
        {"step": "pay", "phase": "run", "status": "error", "error": "x", "attempt": 1},
        {"event": "retry", "step": "pay", "attempt": 2, "delay_ms": 1000},
        {"step": "pay", "phase": "run", "status": "error", "error": "x", "attempt": 2},
        {"event": "compensating", "error": "x"},
    ]
    record = {
        "status": "compensating",
        "current": [{"branch": "", "node": "$compensate", "phase": "compensate"}],
    }
    found = node_states(g, record, history)
    assert found["pay"]["compensation"] == "running" and found["pay"]["state"] == "running"
    assert found["book"]["compensation"] == "registered"
