"""Event triggers: an event starts one execution per triggering workflow, once per event id."""

from __future__ import annotations

from typing import Any

from engine import index

ON_ORDER = """
    name: on-order
    input: {type: object, required: [order], properties: {order: {type: string}}}
    triggers:
      - event: order.placed
        input: {order: "{{ event.key }}", total: "{{ event.data.total }}", via: "{{ event.name }}"}
    steps:
      - id: done
        succeed: {output: "{{ input }}"}
"""

ON_VIP = """
    name: on-vip
    triggers:
      - event: order.placed
        key: "{{ event.key.startswith('vip-') }}"
      - event: order.placed
        key: exact-1
    steps:
      - id: done
        succeed: {output: "{{ input }}"}
"""


def executions(h: Any, workflow: str) -> list[dict[str, Any]]:
    page = index.list_executions(h.runtime.store, index.Filters(workflow=workflow), None, 100)
    return page.executions


def test_an_event_starts_the_workflow_once_with_its_input(harness: Any) -> None:
    h = harness(ON_ORDER)
    done = h.runtime.notify_event("order.placed", "o-1", {"total": 12}, event_id="evt-1")
    assert done.resumed == 0 and len(done.started) == 1 and not done.failed
    h.drain()
    record = h.runtime.record(done.started[0])
    assert record["status"] == "succeeded"
    assert record["output"] == {"order": "o-1", "total": 12, "via": "order.placed"}
    # a retried notify with the same id (even after the execution finished): still one execution
    again = h.runtime.notify_event("order.placed", "o-1", {"total": 12}, event_id="evt-1")
    h.drain()
    assert again.started == done.started
    assert [e["execution_id"] for e in executions(h, "on-order")] == done.started
    assert h.runtime.record(done.started[0])["status"] == "succeeded"
    assert [e["status"] for e in executions(h, "on-order")] == ["succeeded"]  # the listing too
    # another event id is another event
    other = h.runtime.notify_event("order.placed", "o-1", {"total": 12}, event_id="evt-2")
    assert other.started != done.started
    h.drain()
    assert len(executions(h, "on-order")) == 2


def test_without_an_id_each_notify_is_a_new_event_and_the_default_input_is_the_data(harness: Any) -> None:
    h = harness(ON_VIP)
    first = h.runtime.notify_event("order.placed", "vip-7", {"n": 1})
    second = h.runtime.notify_event("order.placed", "vip-7", {"n": 2})
    h.drain()
    assert first.started and second.started and first.started != second.started
    assert h.runtime.record(first.started[0])["output"] == {"n": 1}


def test_the_key_filters_events(harness: Any) -> None:
    h = harness(ON_VIP)
    assert h.runtime.notify_event("order.placed", "plain-1", None).started == []
    assert h.runtime.notify_event("order.placed", "exact-1", None).started != []
    assert h.runtime.notify_event("order.placed", "vip-1", None).started != []
    assert h.runtime.notify_event("other.event", "vip-1", None).started == []
    h.drain()
    assert len(executions(h, "on-vip")) == 2


def test_a_trigger_and_a_waiter_both_get_the_event(harness: Any) -> None:
    waiter = """
        name: waiter
        steps:
          - id: w
            wait: {event: order.placed, key: o-9}
    """
    h = harness(ON_ORDER, waiter)
    wid = h.start("waiter")
    h.drain()
    done = h.runtime.notify_event("order.placed", "o-9", {"total": 1}, event_id="e9")
    assert done.resumed == 1 and len(done.started) == 1
    h.drain()
    assert h.runtime.record(wid)["status"] == "succeeded"
    assert h.runtime.record(done.started[0])["status"] == "succeeded"


def test_an_emit_step_triggers_a_workflow_once(harness: Any) -> None:
    emitter = """
        name: emitter
        steps:
          - id: tell
            emit: {event: order.placed, key: o-5, data: {total: 5}}
    """
    h = harness(ON_ORDER, emitter)
    eid = h.start("emitter")
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "succeeded"
    started = record["output"]["started"]
    assert len(started) == 1
    assert h.runtime.record(started[0])["output"]["order"] == "o-5"
    # the emit's event id is its step path: a redelivered emit starts nothing new
    again = h.runtime.notify_event("order.placed", "o-5", {"total": 5}, event_id=f"{eid}:tell")
    assert again.started == started
    h.drain()
    assert len(executions(h, "on-order")) == 1


def test_input_the_schema_rejects_is_reported_and_starts_nothing(harness: Any) -> None:
    strict = """
        name: strict
        input: {type: object, required: [n], properties: {n: {type: integer}}}
        triggers:
          - event: tick
        steps:
          - id: done
            succeed: {}
    """
    h = harness(strict, ON_VIP.replace("order.placed", "tick"))
    done = h.runtime.notify_event("tick", "vip-1", {"n": "not a number"})
    assert [f["workflow"] for f in done.failed] == ["strict"]
    assert len(done.started) == 1  # the other workflow still starts
    assert executions(h, "strict") == []
