"""Readable status: the record's ``where`` (one entry per active branch, in words) for each waiting
state, and ``hopflow status`` printing it — real time, no ``None``, the trace capped."""

from __future__ import annotations

import datetime as _dt
import json
import time
from typing import Any

import pytest
from click.testing import CliRunner

from engine.commands.operate import print_status

WAIT_EVENT = """
name: wait-event
steps:
  - id: pay
    wait: {event: paid, key: "{{ input.order }}", timeout: 2h}
"""

WAIT_FOREVER = """
name: wait-forever
steps:
  - id: pay
    wait: {event: paid, key: k1}
"""

WAIT_FOR = """
name: wait-for
steps:
  - id: nap
    wait: {for: 3h}
"""

RETRY = """
name: retrying
steps:
  - id: charge
    action: t.flaky
    retry: {max_attempts: 3, interval: 2m, jitter: none, on: [action.RuntimeError]}
"""

OFFLOAD = """
name: offloading
steps:
  - id: call
    http: {method: POST, url: "http://127.0.0.1:9/hook", offload: true}
    timeout: 30s
"""

CHILD = """
name: parent-of-waiter
steps:
  - id: kid
    workflow: {name: wait-forever}
"""

PARALLEL = """
name: fan
steps:
  - id: both
    parallel:
      branches:
        - steps:
            - id: left
              set: {x: 1}
        - steps:
            - id: right
              wait: {event: right, key: r}
"""

COMP_RETRY = """
name: undo-slowly
steps:
  - id: book
    action: t.ok
    compensate:
      action: t.flaky
      retry: {max_attempts: 2, interval: 5m, jitter: none, on: [action.RuntimeError]}
  - id: fail
    action: t.flaky
"""

LOOP = """
name: loop
steps:
  - id: items
    foreach:
      items: "{{ input.items }}"
      as: i
      steps:
        - id: one
          set: {v: "{{ i }}"}
  - id: pay
    wait: {event: paid, key: loop}
"""


def flaky(*_a: Any, **_k: Any) -> None:
    raise RuntimeError("card network down")


@pytest.fixture
def h(harness: Any) -> Any:
    return harness(
        WAIT_EVENT,
        WAIT_FOREVER,
        WAIT_FOR,
        RETRY,
        OFFLOAD,
        CHILD,
        PARALLEL,
        COMP_RETRY,
        LOOP,
        actions={"t.flaky": flaky, "t.ok": lambda *a, **k: 1},
    )


def settle(h: Any) -> None:
    """Deliver what is due now (never jump the clock over a wait or a backoff)."""
    q = h.dispatcher.queue
    while q and q[0][0] <= h.clock.now():
        o = h.dispatcher.pop()
        h.runtime.advance(o.message)


def near(iso: str, expected: float, slack: float = 60) -> bool:
    return abs(_dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - expected) < slack


def where(h: Any, eid: str) -> list[dict[str, Any]]:
    record = h.runtime.record(eid)
    assert "None" not in repr([e["text"] for e in record["where"]])
    return list(record["where"])


def test_waiting_for_an_event_with_a_timeout(h: Any) -> None:
    eid = h.start("wait-event", {"order": "A-7"})
    settle(h)
    (w,) = where(h, eid)
    assert w["node"] == "pay" and w["kind"] == "wait" and w["state"] == "waiting"
    assert w["waiting_for"] == {"event": "paid", "key": "A-7"}
    assert near(w["until"], time.time() + 2 * 3600)
    assert "waiting for event 'paid' with key 'A-7' until" in w["text"]


def test_waiting_for_an_event_without_a_timeout(h: Any) -> None:
    eid = h.start("wait-forever", {})
    settle(h)
    (w,) = where(h, eid)
    assert w["until"] is None and w["waiting_for"] == {"event": "paid", "key": "k1"}
    assert w["text"].endswith("(no timeout)")


def test_a_timed_wait_says_until_when_in_real_time(h: Any) -> None:
    eid = h.start("wait-for", {})
    settle(h)
    (w,) = where(h, eid)
    assert w["state"] == "waiting" and near(w["until"], time.time() + 3 * 3600)
    h.clock.advance_to(h.clock.now() + 86_400)  # the runtime's clock is virtual; status is not
    record = h.runtime.record(eid)
    assert near(record["created_at"], time.time(), 30)
    assert near(record["updated_at"], time.time(), 30)
    assert near(record["where"][0]["until"], time.time() + 3 * 3600)


def test_a_retry_says_which_attempt_comes_when_and_why(h: Any) -> None:
    eid = h.start("retrying", {})
    settle(h)
    (w,) = where(h, eid)
    assert w["state"] == "retrying" and w["attempt"] == 2 and w["kind"] == "action"
    assert near(w["next_attempt_at"], time.time() + 120, 10)
    assert "attempt 1 failed (action.RuntimeError: card network down); attempt 2 at" in w["text"]


def test_an_offloaded_call_names_the_call(h: Any) -> None:
    eid = h.start("offloading", {})
    settle(h)
    (w,) = where(h, eid)
    assert w["state"] == "offloaded" and w["kind"] == "http"
    assert w["call"]["request"] == "POST http://127.0.0.1:9/hook"
    assert near(w["until"], time.time() + 35)
    assert "its call POST http://127.0.0.1:9/hook is with the dispatcher" in w["text"]


def test_waiting_for_a_child_execution(h: Any) -> None:
    eid = h.start("parent-of-waiter", {})
    settle(h)
    (w,) = where(h, eid)
    assert w["state"] == "waiting" and w["kind"] == "workflow"
    assert w["child"] == {"execution_id": f"{eid}~kid.1", "status": "running"}
    (c,) = where(h, f"{eid}~kid.1")
    assert c["waiting_for"] == {"event": "paid", "key": "k1"}


def test_parallel_branches_each_say_where_they_are(h: Any) -> None:
    eid = h.start("fan", {})
    settle(h)
    found = {w["branch"]: w for w in where(h, eid)}
    assert found[""]["state"] == "joining" and "1 of 2 branch(es) finished" in found[""]["text"]
    assert found["both/1"]["waiting_for"] == {"event": "right", "key": "r"}
    assert "(branch both/1)" in found["both/1"]["text"]


def test_a_fan_out_with_a_timeout_says_until_when(harness: Any) -> None:
    timed = PARALLEL.replace("name: fan", "name: timed-fan").replace(
        "    parallel:\n", "    timeout: 1h\n    parallel:\n"
    )
    h = harness(timed)
    eid = h.start("timed-fan", {})
    settle(h)
    found = {w["branch"]: w for w in where(h, eid)}
    assert found[""]["state"] == "joining" and near(found[""]["until"], time.time() + 3600)
    assert "then it times out" in found[""]["text"]


def test_a_compensation_being_retried(h: Any) -> None:
    eid = h.start("undo-slowly", {})
    settle(h)
    (w,) = where(h, eid)
    assert w["kind"] == "compensate" and w["state"] == "retrying"
    assert "undoing step 'book' (action); attempt 2 at" in w["text"]
    assert "card network down" in w["text"]
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "compensation_failed"
    (w,) = record["where"]
    assert w["state"] == "compensation_failed" and "hopflow resume" in w["text"]
    with CliRunner().isolation() as (out, _err, *_):
        print_status(record)
        text = out.getvalue().decode()
    assert "comp error action.RuntimeError: card network down (step book)" in text and "None" not in text


def test_status_prints_words_caps_the_trace_and_never_none(h: Any) -> None:
    eid = h.start("loop", {"items": list(range(30))})
    settle(h)
    record = h.runtime.record(eid)
    assert len(record["trace"]) > 30
    runner = CliRunner()

    def printed(**kwargs: Any) -> str:
        with runner.isolation() as (out, _err, *_):
            print_status(record, **kwargs)
            return out.getvalue().decode()

    text = printed()
    assert "None" not in text
    assert "where      step 'pay' (wait): waiting for event 'paid' with key 'loop' (no timeout)" in text
    assert f"the last 20 of {len(record['trace'])}" in text and "--full for all" in text
    assert len([line for line in text.splitlines() if line.startswith("  ")]) == 20
    full = printed(full=True)
    assert len([line for line in full.splitlines() if line.startswith("  ")]) == len(record["trace"])
    failed = dict(record, status="failed", error={"name": "boom", "message": None, "step": None})
    with runner.isolation() as (out, _err, *_):
        print_status(failed)
        assert "None" not in out.getvalue().decode()


SECRET = "sk_live_where_0123456789abcdef"

SECRET_RETRY = """
name: secret-retry
env: [{name: WHERE_KEY, secret: true}]
steps:
  - id: charge
    action: t.echo
    with: {key: "{{ env.WHERE_KEY }}"}
    retry: {max_attempts: 3, interval: 1m, jitter: none, on: [action.RuntimeError]}
"""

SECRET_WAIT = """
name: secret-wait
env: [{name: WHERE_KEY, secret: true}]
steps:
  - id: pay
    wait: {event: paid, key: "{{ env.WHERE_KEY }}"}
"""


def echo(_ctx: Any, key: str) -> None:
    raise RuntimeError(f"refused key {key}")


def test_where_never_shows_a_secret(harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHERE_KEY", SECRET)
    h = harness(SECRET_RETRY, SECRET_WAIT, actions={"t.echo": echo})
    retrying = h.start("secret-retry", {})
    waiting = h.start("secret-wait", {})
    settle(h)
    for eid in (retrying, waiting):
        record = h.runtime.record(eid)
        assert record["where"] and SECRET not in json.dumps(record)
    (w,) = h.runtime.record(retrying)["where"]
    assert w["state"] == "retrying" and "refused key" in w["text"]
