"""QStashDispatcher: request shapes against a recording stand-in, and round trips through qstash-dev."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from conftest_qstash import Endpoint, Recorded, assert_qstash_signed, endpoint, free_port

from engine.devtools.qstash_dev.server import RunningDevServer, start_dev_server
from engine.dispatch import Dispatcher, DispatchError
from engine.dispatch.qstash import (
    NOT_BEFORE_HEADER,
    DispatchRejected,
    QStashDispatcher,
    parse_callback,
)
from engine.model import Message, MessageError, Outgoing
from engine.signing import verify_qstash

TOKEN = "test-token-do-not-log"
MSG = Message("exec-1", "charge", 4)


def fast(dispatcher_kwargs: dict | None = None) -> dict:
    return {"backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 2.0, **(dispatcher_kwargs or {})}


# ------------------------------------------------------------------ request shapes (a stand-in QStash)


@pytest.fixture
def fake_qstash() -> Iterator[Endpoint]:
    counter = iter(range(1_000_000))

    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if rec.path == "/v2/batch":
            n = len(json.loads(rec.body))
            return 200, {}, json.dumps([{"messageId": f"m{next(counter)}"} for _ in range(n)]).encode()
        return 200, {}, json.dumps({"messageId": f"m{next(counter)}"}).encode()

    with endpoint(answer) as ep:
        yield ep


def test_is_a_dispatcher_and_hides_its_token() -> None:
    d = QStashDispatcher(TOKEN, "http://127.0.0.1:1", "https://w.example/v1/step")
    assert isinstance(d, QStashDispatcher)
    _: Dispatcher = d  # structural: satisfies the protocol
    assert TOKEN not in repr(d)
    with pytest.raises(ValueError):
        QStashDispatcher("", "http://127.0.0.1:1", "https://w.example/v1/step")
    with pytest.raises(ValueError):
        QStashDispatcher(TOKEN, "http://127.0.0.1:1", "/v1/step")


def test_single_publish_headers(fake_qstash: Endpoint) -> None:
    dest = "https://w.example/v1/step"
    now = 1_800_000_000.0
    d = QStashDispatcher(TOKEN, fake_qstash.url, dest, failure_callback_url=dest + "?hopflow=failure",
                         retries=3, clock=lambda: now)
    d.publish([Outgoing(MSG)])
    d.publish([Outgoing(MSG, delay_ms=1500)])
    d.publish([Outgoing(MSG, not_before=now + 60.2)])
    d.publish([Outgoing(MSG, delay_ms=5000, not_before=now + 60)])  # not_before wins
    d.publish([Outgoing(MSG, not_before=now - 5)])  # already due: no scheduling header
    plain, delayed, at, both, past = fake_qstash.requests
    assert unquote(plain.path) == f"/v2/publish/{dest}"
    assert plain.headers["authorization"] == f"Bearer {TOKEN}"
    assert plain.headers["upstash-deduplication-id"] == MSG.dedup_id == "exec-1:-:4:charge"
    assert plain.headers["upstash-retries"] == "3"
    assert plain.headers["upstash-failure-callback"] == dest + "?hopflow=failure"
    assert plain.headers["content-type"] == "application/json"
    assert plain.body == MSG.to_json()
    assert "upstash-delay" not in plain.headers and "upstash-not-before" not in plain.headers
    assert delayed.headers["upstash-delay"] == "2s"
    assert at.headers["upstash-not-before"] == str(math.ceil(now + 60.2))
    assert both.headers["upstash-not-before"] == str(int(now + 60)) and "upstash-delay" not in both.headers
    assert "upstash-not-before" not in past.headers and "upstash-delay" not in past.headers
    for rec in fake_qstash.requests:
        assert rec.headers["upstash-deduplication-id"] == MSG.dedup_id


def test_fan_out_uses_batch_in_chunks(fake_qstash: Endpoint) -> None:
    dest = "https://w.example/v1/step"
    d = QStashDispatcher(TOKEN, fake_qstash.url, dest, batch_size=2)
    items = [Outgoing(Message("e", "item", 2, branch=f"items/{i}")) for i in range(3)]
    d.publish(items)
    d.publish([])  # nothing to do, no request
    assert [r.path for r in fake_qstash.requests] == ["/v2/batch", "/v2/batch"]
    entries = [e for r in fake_qstash.requests for e in json.loads(r.body)]
    assert [e["destination"] for e in entries] == [dest] * 3
    assert [e["body"] for e in entries] == [o.message.to_json().decode() for o in items]
    assert [e["headers"]["Upstash-Deduplication-Id"] for e in entries] == [o.dedup_id for o in items]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in fake_qstash.requests)


def test_long_delays_are_chained(fake_qstash: Endpoint) -> None:
    now = 1_800_000_000.0
    week = 7 * 86400
    d = QStashDispatcher(TOKEN, fake_qstash.url, "https://w.example/v1/step", clock=lambda: now)
    d.publish([Outgoing(MSG, not_before=now + 20 * 86400)])
    d.publish([Outgoing(MSG, delay_ms=8 * 86400 * 1000)])
    d.publish([Outgoing(MSG, delay_ms=week * 1000)])  # exactly the maximum: no chaining
    far, delay, edge = fake_qstash.requests
    assert far.headers["upstash-delay"] == f"{week}s"
    assert far.headers[f"upstash-forward-{NOT_BEFORE_HEADER.lower()}"] == str(int(now + 20 * 86400))
    assert "upstash-not-before" not in far.headers
    assert far.headers["upstash-deduplication-id"] == f"{MSG.dedup_id}:hop3@{int(now + 20 * 86400)}"
    assert delay.headers[f"upstash-forward-{NOT_BEFORE_HEADER.lower()}"] == str(int(now + 8 * 86400))
    assert edge.headers["upstash-delay"] == f"{week}s"
    assert f"upstash-forward-{NOT_BEFORE_HEADER.lower()}" not in edge.headers
    assert edge.headers["upstash-deduplication-id"] == MSG.dedup_id


def test_retries_qstash_429_and_5xx_then_succeeds() -> None:
    answers = iter([(503, {}, b"busy"), (429, {"Retry-After": "0"}, b"slow down"),
                    (200, {}, b'{"messageId":"m1"}')])
    with endpoint(lambda _r: next(answers)) as ep:
        d = QStashDispatcher(TOKEN, ep.url, "https://w.example/v1/step", **fast())
        d.publish([Outgoing(MSG)])
        assert len(ep.requests) == 3
        assert {r.headers["upstash-deduplication-id"] for r in ep.requests} == {MSG.dedup_id}


def test_gives_up_after_bounded_attempts_with_dispatch_error() -> None:
    with endpoint(lambda _r: (500, {}, b"internal")) as ep:
        d = QStashDispatcher(TOKEN, ep.url, "https://w.example/v1/step", max_attempts=3, **fast())
        with pytest.raises(DispatchError, match="3 attempt") as info:
            d.publish([Outgoing(MSG)])
        assert len(ep.requests) == 3 and TOKEN not in str(info.value)


def test_a_4xx_is_rejected_at_once() -> None:
    with endpoint(lambda _r: (400, {}, b'{"error":"invalid destination"}')) as ep:
        d = QStashDispatcher(TOKEN, ep.url, "https://w.example/v1/step", **fast())
        with pytest.raises(DispatchRejected, match="invalid destination"):
            d.publish([Outgoing(MSG)])
        assert len(ep.requests) == 1


def test_connection_refused_is_a_dispatch_error() -> None:
    port = free_port()  # nothing listens there
    d = QStashDispatcher(TOKEN, f"http://127.0.0.1:{port}", "https://w.example/v1/step", max_attempts=3,
                         **fast())
    with pytest.raises(DispatchError, match="cannot reach QStash") as info:
        d.publish([Outgoing(MSG)])
    assert not isinstance(info.value, DispatchRejected) and TOKEN not in str(info.value)
    with pytest.raises(DispatchError):
        d.publish([Outgoing(MSG), Outgoing(Message("exec-1", "other", 4))])
    d.close()


def test_from_env() -> None:
    env = {"QSTASH_TOKEN": TOKEN, "QSTASH_URL": "http://127.0.0.1:8080", "HOPFLOW_PUBLIC_URL": "https://a.example/"}
    d = QStashDispatcher.from_env(env, retries=2)
    assert d.base_url == "http://127.0.0.1:8080" and d.destination_url == "https://a.example/v1/step"
    assert d.failure_callback_url == "https://a.example/v1/step?hopflow=failure" and d.retries == 2
    minimal = {"QSTASH_TOKEN": "t", "HOPFLOW_PUBLIC_URL": "https://a.example"}
    assert QStashDispatcher.from_env(minimal).base_url == "https://qstash.upstash.io"
    with pytest.raises(ValueError, match="QSTASH_TOKEN"):
        QStashDispatcher.from_env({"HOPFLOW_PUBLIC_URL": "https://a.example"})
    with pytest.raises(ValueError, match="HOPFLOW_PUBLIC_URL"):
        QStashDispatcher.from_env({"QSTASH_TOKEN": "t"})


def test_parse_callback_rejects_garbage() -> None:
    for bad in (b"", b"[]", b"{}", b'{"status":"200"}', b'{"status":200,"body":"@@@"}'):
        with pytest.raises(MessageError):
            parse_callback(bad)
    cb = parse_callback(json.dumps({"status": 200, "body": "", "sourceMessasgeId": "msg_1",
                                    "header": {"a": "b"}}))
    assert cb.source_message_id == "msg_1" and cb.headers == {"a": ["b"]} and cb.ok and cb.final


# ------------------------------------------------------------------------ round trips via qstash-dev


@pytest.fixture(scope="module")
def dev() -> Iterator[RunningDevServer]:
    with start_dev_server(backoff=lambda n: 0.05, max_delay_s=1) as running:
        yield running


def dispatcher_for(dev: RunningDevServer, ep: Endpoint, **kwargs: object) -> QStashDispatcher:
    dest = f"{ep.url}/v1/step"
    options: dict = {"failure_callback_url": dest + "?hopflow=failure", "max_delay_s": 1, **fast(), **kwargs}
    return QStashDispatcher(dev.token, dev.url, dest, **options)


def fresh(node: str = "charge") -> Message:
    """A message no other test published: the module's dev server remembers dedup ids for 10 minutes."""
    return Message(f"exec-{uuid.uuid4().hex[:12]}", node, 4)


def check_signed(dev: RunningDevServer, ep: Endpoint) -> None:
    assert assert_qstash_signed(ep, dev.current_signing_key, dev.next_signing_key) == len(ep.requests)


def test_round_trip_single_batch_and_dedup(dev: RunningDevServer) -> None:
    msg = fresh()
    with endpoint() as ep:
        d = dispatcher_for(dev, ep)
        d.publish([Outgoing(msg)])
        d.publish([Outgoing(msg)])  # a re-published outbox: deduplicated by QStash
        fan = [Outgoing(Message(msg.execution_id, "item", 5, branch=f"items/{i}")) for i in range(3)]
        d.publish(fan)
        got = ep.wait_for(4, "/v1/step")
        assert dev.server.wait_idle()
        bodies = sorted(r.body for r in ep.on("/v1/step"))
        assert bodies == sorted([msg.to_json()] + [o.message.to_json() for o in fan])
        assert {Message.from_json(r.body) for r in got} == {msg} | {o.message for o in fan}
        for rec in got:
            verify_qstash(rec.headers["upstash-signature"], rec.body, f"{ep.url}/v1/step",
                          [dev.current_signing_key, dev.next_signing_key])
        check_signed(dev, ep)
        d.close()


def test_round_trip_delay_and_not_before(dev: RunningDevServer) -> None:
    with endpoint() as ep:
        d = dispatcher_for(dev, ep, max_delay_s=2)  # the server allows 1 s (+1 for whole-second rounding)
        started = time.time()
        target = math.ceil(started) + 1
        d.publish([Outgoing(fresh("at"), not_before=target)])
        d.publish([Outgoing(fresh("later"), delay_ms=400)])
        got = {Message.from_json(r.body).node: r for r in ep.wait_for(2, "/v1/step")}
        assert got["at"].at >= target
        assert got["later"].at >= started + 0.4
        check_signed(dev, ep)


def test_chained_delay_is_deferred_by_the_receiver_until_due(dev: RunningDevServer) -> None:
    state: dict = {}
    msg = fresh()

    def receiver(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        # the receiver knows the target itself (hopflow: the checkpoint), never from a header
        message = Message.from_json(rec.body)
        if state["target"] - time.time() > 1.0:
            state["dispatcher"].publish(
                [Outgoing(message, not_before=state["target"], dedup_suffix=f":defer{int(time.time())}")]
            )
            return 200, {}, b"deferred"
        state.setdefault("ran", []).append(rec)
        return 200, {}, b"ran"

    with endpoint(receiver) as ep:
        d = dispatcher_for(dev, ep)
        state["dispatcher"] = d
        target = state["target"] = math.ceil(time.time()) + 3
        # the plan allows 1 s: a direct publish of 3 s is refused by QStash...
        with pytest.raises(DispatchRejected, match="maximum"):
            dispatcher_for(dev, ep, max_delay_s=3600).publish([Outgoing(msg, not_before=target)])
        # ...so the dispatcher chains hops of at most 1 s and the receiver defers early arrivals
        d.publish([Outgoing(msg, not_before=target)])
        deadline = time.monotonic() + 15
        while not state.get("ran"):
            assert time.monotonic() < deadline, "the chained message never ran"
            time.sleep(0.05)
        assert dev.server.wait_idle()
        [ran] = state["ran"]
        assert Message.from_json(ran.body) == msg
        assert ran.at >= target - 1.0  # runs within the documented 1 s skew of its target
        hops = ep.on("/v1/step")
        assert len(hops) >= 2 and all(NOT_BEFORE_HEADER.lower() in r.headers for r in hops[:-1])
        check_signed(dev, ep)


def test_dead_message_reaches_the_failure_callback(dev: RunningDevServer) -> None:
    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        return (200, {}, b"") if "hopflow=failure" in rec.path else (500, {}, b"worker crashed")

    msg = fresh()
    with endpoint(answer) as ep:
        d = dispatcher_for(dev, ep, retries=1)
        d.publish([Outgoing(msg)])
        [fail] = [r for r in ep.wait_for(3) if "hopflow=failure" in r.path]  # 2 attempts, then this
        assert dev.server.wait_idle()
        cb = parse_callback(fail.body)
        assert cb.source_message() == msg and cb.dlq_id and cb.status == 500
        assert cb.retried == cb.max_retries == 1 and cb.final and not cb.ok
        assert cb.body == b"worker crashed"
        check_signed(dev, ep)


def test_offloaded_call_posts_the_response_to_the_callback(dev: RunningDevServer) -> None:
    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if rec.path == "/api/charge":
            return 200, {"Content-Type": "application/json"}, b'{"charged":true}'
        if rec.path == "/api/flaky":
            return 502, {}, b"bad gateway"
        return 200, {}, b""

    with endpoint(answer) as ep:
        d = dispatcher_for(dev, ep)
        callback = f"{ep.url}/v1/step?hopflow=callback"
        mid = d.publish_call(f"{ep.url}/api/charge", "put",
                             {"Idempotency-Key": "exec-1:charge", "Content-Type": "application/json"},
                             b'{"amount":5}', callback, dedup_id="exec-1:charge:1", timeout=30,
                             callback_headers={"Hopflow-Step": "exec-1/charge"})
        [call] = ep.wait_for(1, "/api/charge")
        assert call.method == "PUT" and call.body == b'{"amount":5}'
        assert call.headers["idempotency-key"] == "exec-1:charge"
        assert call.headers["content-type"] == "application/json"
        [cb_rec] = [r for r in ep.wait_for(2) if r.path.endswith("hopflow=callback")]
        assert cb_rec.headers["hopflow-step"] == "exec-1/charge"
        cb = parse_callback(cb_rec.body)
        assert cb.ok and cb.final and cb.status == 200 and cb.body == b'{"charged":true}'
        assert cb.source_message_id == mid and cb.method == "PUT" and cb.source_body == b'{"amount":5}'
        # the same dedup id again: QStash does not make the call twice
        again = d.publish_call(f"{ep.url}/api/charge", "PUT", {}, b"{}", callback, dedup_id="exec-1:charge:1")
        assert again == mid

        failure = f"{ep.url}/v1/step?hopflow=failure"
        d.publish_call(f"{ep.url}/api/flaky", "GET", {}, None, callback, failure_callback_url=failure,
                       callback_headers={"Hopflow-Step": "exec-1/flaky"})
        assert dev.server.wait_idle()
        assert len(ep.on("/api/charge")) == 1 and len(ep.on("/api/flaky")) == 1  # retries=0
        flaky = [parse_callback(r.body) for r in ep.on("/v1/step") if "callback" in r.path
                 and r.headers["hopflow-step"] == "exec-1/flaky"]
        assert [(c.status, c.final, c.body) for c in flaky] == [(502, True, b"bad gateway")]
        [dead] = [r for r in ep.on("/v1/step") if "failure" in r.path]
        assert dead.headers["hopflow-step"] == "exec-1/flaky" and parse_callback(dead.body).dlq_id
        check_signed(dev, ep)
    with pytest.raises(DispatchRejected):
        d.publish_call("ftp://x", "GET", {}, None, callback)


# ------------------------------------------------------------ fidelity to QStash (issue 7 item 14)


def test_offloaded_callbacks_state_their_own_retries(fake_qstash: Endpoint) -> None:
    """(a) QStash's callbacks inherit the source's retries (0 for an offloaded call) unless told:
    both callbacks are published with explicit retries, and failure callbacks of messages too."""
    dest = "https://w.example/v1/step"
    d = QStashDispatcher(
        TOKEN, fake_qstash.url, dest, failure_callback_url=dest + "?hopflow=failure", retries=0
    )
    d.publish_call(
        "https://api.example/x",
        "POST",
        {},
        b"{}",
        dest + "/callback?x=1",
        failure_callback_url=dest + "/callback?x=1&failure=1",
    )
    d.publish([Outgoing(MSG)])
    call, message = fake_qstash.requests
    assert call.headers["upstash-retries"] == "0"
    assert call.headers["upstash-callback-retries"] == "3"
    assert call.headers["upstash-failure-callback-retries"] == "3"
    assert message.headers["upstash-retries"] == "0"
    assert message.headers["upstash-failure-callback-retries"] == "3"
    with pytest.raises(DispatchRejected, match="HEAD"):
        d.publish_call("https://api.example/x", "HEAD", {}, None, dest + "/callback?x=1")


def test_a_callback_meeting_a_busy_webhook_is_retried_through_qstash_dev(dev: RunningDevServer) -> None:
    """(a) end to end: the offloaded call's callback gets a 503 once and still arrives."""
    answers = iter([(503, {}, b"busy"), (200, {}, b"")])

    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if rec.path.startswith("/cb"):
            return next(answers)
        return 200, {}, b"result"

    with endpoint(answer) as ep:
        d = dispatcher_for(dev, ep)
        d.publish_call(f"{ep.url}/api", "GET", {}, None, f"{ep.url}/cb")
        got = ep.wait_for(2, "/cb")
        assert [parse_callback(r.body).body for r in got] == [b"result", b"result"]
        assert dev.server.wait_idle()


def test_a_batch_entry_qstash_refuses_stays_in_the_outbox(harness: Any) -> None:
    """(b) /v2/batch answers per entry; a refused entry is an error (the delivery is retried), never
    taken for sent, and it stays in the outbox."""
    from engine.dispatch import PartialDispatch

    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        entries = json.loads(rec.body)
        out = [
            {"error": "invalid destination"} if "items/1" in e["body"] else {"messageId": f"m{i}"}
            for i, e in enumerate(entries)
        ]
        return 200, {}, json.dumps(out).encode()

    fan = """
name: fan
steps:
  - id: items
    foreach:
      items: [1, 2, 3]
      as: n
      concurrency: 3
      steps:
        - id: one
          set: {v: "{{ n }}"}
"""
    h = harness(fan)
    eid = h.start("fan", {})
    h.dispatcher.pop()  # the first node's message
    with endpoint(answer) as ep:
        h.runtime.dispatcher = QStashDispatcher(TOKEN, ep.url, "https://w.example/v1/step", **fast())
        with pytest.raises(PartialDispatch) as info:
            h.runtime.advance(Message(eid, "items", 1))
        assert "1 of 3" in str(info.value)
        # the refused entry is still recorded: the redelivery this error asks for (5xx), or
        # recover, publishes it again (entries consumed by their own checkpoint stay until then)
        left = [o.message.branch for _, o, _ in h.store.outbox(eid)]
        assert "items/1" in left, left
        h.runtime.dispatcher.close()


def test_429_rate_limit_reset_headers_are_honoured() -> None:
    """(e) QStash's 429 carries Burst-RateLimit-Reset / RateLimit-Reset (unix seconds), not
    Retry-After: wait until the reset within the budget, else fail fast (the outbox stays)."""
    from engine.dispatch.qstash import rate_limit_wait

    now = 1_800_000_000.0
    assert rate_limit_wait({"Burst-RateLimit-Reset": str(int(now) + 1)}, now) == 1.0
    assert rate_limit_wait({"RateLimit-Reset": str(int(now * 1000) + 2000)}, now) == 2.0
    assert rate_limit_wait({"Retry-After": "3"}, now) == 3.0
    assert rate_limit_wait({}, now) is None
    slept: list[float] = []
    answers = iter(
        [
            (429, {"Burst-RateLimit-Reset": str(int(time.time()) + 2)}, b"too many"),
            (200, {}, b'{"messageId":"m1"}'),
        ]
    )
    with endpoint(lambda _r: next(answers)) as ep:
        d = QStashDispatcher(TOKEN, ep.url, "https://w.example/v1/step", sleep=slept.append, **fast())
        d.publish([Outgoing(MSG)])
        assert len(ep.requests) == 2 and slept and slept[0] >= 0.5  # waited for the reset, not 50 ms
    daily = {
        "RateLimit-Limit": "500",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": str(int(time.time()) + 3600),
    }
    with endpoint(lambda _r: (429, daily, b"daily limit")) as ep:
        d = QStashDispatcher(TOKEN, ep.url, "https://w.example/v1/step", sleep=slept.append, **fast())
        with pytest.raises(DispatchError, match=r"wait 3[56]\d\d s"):
            d.publish([Outgoing(MSG)])
        assert len(ep.requests) == 1  # no pointless retries within a call
