"""Flow control on the wire and under load: QStash's Flow-Control headers (as the official SDK writes
them, as QStashDispatcher writes them), the local dispatcher's gate in Redis (two dispatchers sharing
one key, a holder that dies) and qstash-dev's emulation, over real sockets.

Limits are asserted on counters (the most deliveries of one key in progress at once, observed by the
receiver) and on recorded start times with a generous tolerance: any ``rate`` + 1 consecutive starts
of one key span at least half a period (the gates guarantee a full period; the slack absorbs thread
scheduling on a loaded machine, never the other way round). Nothing may be lost or doubled."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest_qstash import Recorded, endpoint
from qstash import QStash

from engine.devtools.qstash_dev.server import RunningDevServer, start_dev_server
from engine.dispatch.flow_control import (
    FlowControl,
    FlowControlError,
    MemoryGate,
    from_headers,
    wire_key,
)
from engine.dispatch.local import LocalDispatcher
from engine.dispatch.qstash import QStashDispatcher
from engine.model import Message, Outgoing

HANG_GUARD_S = 60.0  # only stops a broken test from hanging; no assertion depends on it
TOLERANCE = 0.5  # a fraction of the period the recorded starts may lose to scheduling


class Meter:
    """In progress now / at most, per key; start times per key; every delivery id once."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.starts: dict[str, list[float]] = {}
        self.seen: list[str] = []

    def run(self, key: str, ident: str) -> None:
        with self.lock:
            self.now[key] = self.now.get(key, 0) + 1
            self.peak[key] = max(self.peak.get(key, 0), self.now[key])
            self.starts.setdefault(key, []).append(time.monotonic())
            self.seen.append(ident)
        time.sleep(self.hold_s)
        with self.lock:
            self.now[key] -= 1

    def assert_rate(self, key: str, rate: int, period_s: float) -> None:
        starts = sorted(self.starts[key])
        for i in range(len(starts) - rate):
            spanned = starts[i + rate] - starts[i]
            assert spanned >= period_s * TOLERANCE, (key, i, spanned)


# ------------------------------------------------------------------------------------ the header


def test_the_value_header_uses_qstash_syntax_and_reads_back() -> None:
    flow = FlowControl("tenant-a", rate=10, period_s=60, parallelism=2)
    assert flow.headers() == {
        "Upstash-Flow-Control-Key": "tenant-a",
        "Upstash-Flow-Control-Value": "parallelism=2, rate=10, period=60s",
    }
    lower = {k.lower(): v for k, v in flow.headers().items()}
    assert from_headers(lower) == flow
    # the SDKs write minutes too; the docs' curl examples use bare commas and another order
    sdk = {"upstash-flow-control-key": "k", "upstash-flow-control-value": "parallelism=5, rate=10, period=1m"}
    assert from_headers(sdk) == FlowControl("k", rate=10, period_s=60, parallelism=5)
    curl = {"upstash-flow-control-key": "k", "upstash-flow-control-value": "rate=10,parallelism=20,period=1m"}
    assert from_headers(curl) == FlowControl("k", rate=10, period_s=60, parallelism=20)
    assert from_headers({"upstash-flow-control-key": "k", "upstash-flow-control-value": "parallelism=1"}) == (
        FlowControl("k", parallelism=1)
    )
    assert from_headers({}) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "rate=0",
        "rate=x",
        "speed=3",
        "period=1m",
        "rate=3,period=0s",
        "rate=3,period=soon",
        "parallelism=0",
    ],
)
def test_a_malformed_value_header_is_refused(value: str) -> None:
    with pytest.raises(FlowControlError):
        from_headers({"upstash-flow-control-key": "k", "upstash-flow-control-value": value})


def test_a_key_that_is_not_plain_goes_on_the_wire_as_a_stable_digest() -> None:
    assert wire_key("acme:eu/orders") == "acme:eu/orders"
    odd = wire_key("café tenant\r\nX: y")
    assert odd.startswith("k-") and odd == wire_key("café tenant\r\nX: y") and odd.isascii()


def test_the_memory_gate_decides_like_the_redis_gate() -> None:
    gate = MemoryGate()
    flow = FlowControl("k", rate=2, period_s=1, parallelism=2)
    assert gate.admit(flow, "a", 0.0).ok and gate.admit(flow, "b", 0.1).ok
    waiting = gate.admit(flow, "c", 0.2)
    assert not waiting.ok and waiting.retry_at is None  # parallelism: waitlisted
    assert not gate.admit(flow, "d", 0.2).ok
    assert gate.release(flow, "a") == ["c", "d"]  # both try again; one gets the slot
    held = gate.admit(flow, "c", 0.3)
    assert not held.ok and held.retry_at == pytest.approx(1.0)  # rate: two starts within the second
    assert gate.admit(flow, "c", 1.0).ok


# ------------------------------------------------------------------------------- wire compatibility


@pytest.fixture(scope="module")
def dev() -> Iterator[RunningDevServer]:
    with start_dev_server(backoff=lambda n: 0.05) as running:
        yield running


def test_the_official_sdk_flow_control_is_read_by_qstash_dev(dev: RunningDevServer) -> None:
    """The SDK's headers (``parallelism=1, rate=4, period=1m``) reach the dev server's gate: while the
    first delivery is held, the second waits under the key (and GET shows its key)."""
    sdk = QStash(dev.token, base_url=dev.url, retry=False)
    release = threading.Event()

    def responder(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        release.wait(HANG_GUARD_S)
        return 200, {}, b"ok"

    with endpoint(responder) as ep:
        options = {"key": "sdk-key", "parallelism": 1, "rate": 4, "period": "1m"}
        first = sdk.message.publish_json(url=f"{ep.url}/hook", body={"n": 1}, flow_control=options)
        second = sdk.message.publish_json(url=f"{ep.url}/hook", body={"n": 2}, flow_control=options)
        ep.wait_for(1)
        assert dev.server.flow_gate.running("sdk-key") == 1
        waiting = sdk.message.get(second.message_id)
        time.sleep(0.3)  # (a negative check: the second must not arrive while the first is held)
        assert len(ep.requests) == 1
        release.set()
        ep.wait_for(2, timeout_s=HANG_GUARD_S)
    assert waiting.message_id == second.message_id and first.message_id != second.message_id
    raw = [e for e in dev.server.events() if e["message_id"] == second.message_id]
    assert any(e["event"] == "flow-waiting" for e in raw)
    assert dev.server.flow_gate.running("sdk-key") == 0  # released after the delivery


def test_qstash_dispatcher_sends_the_headers_qstash_dev_enforces(dev: RunningDevServer) -> None:
    meter = Meter(hold_s=0.05)

    def responder(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        meter.run("k", rec.body.decode())
        return 200, {}, b"ok"

    with endpoint(responder) as ep:
        dispatcher = QStashDispatcher(dev.token, dev.url, f"{ep.url}/v1/step")
        dispatcher.flow = lambda m: FlowControl("qd", parallelism=1)
        messages = [Outgoing(Message(f"q{i}", "a", 1)) for i in range(6)]
        dispatcher.publish(messages)
        ep.wait_for(6, timeout_s=HANG_GUARD_S)
        dispatcher.close()
    assert meter.peak == {"k": 1}
    assert len(set(meter.seen)) == 6 and len(meter.seen) == 6


def test_qstash_dev_under_load_holds_rate_and_parallelism_and_loses_nothing() -> None:
    n, rate, parallelism = 24, 5, 2
    meter = Meter(hold_s=0.05)

    def responder(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        key = rec.path.rsplit("/", 1)[-1]
        meter.run(key, rec.body.decode())
        return 200, {}, b"ok"

    with start_dev_server(backoff=lambda n: 0.05) as dev, endpoint(responder) as ep:
        sdk = QStash(dev.token, base_url=dev.url, retry=False)
        for i in range(n):
            key = "a" if i % 2 == 0 else "b"
            sdk.message.publish(
                url=f"{ep.url}/{key}",
                body=f"m{i}",
                flow_control={"key": key, "rate": rate, "period": 1, "parallelism": parallelism},
            )
        ep.wait_for(n, timeout_s=HANG_GUARD_S)
        assert dev.server.wait_idle(HANG_GUARD_S)
    assert sorted(meter.seen) == sorted(f"m{i}" for i in range(n))  # each exactly once
    assert max(meter.peak.values()) <= parallelism
    for key in ("a", "b"):
        meter.assert_rate(key, rate, 1.0)


# ------------------------------------------------------------------------------ the local dispatcher


@pytest.fixture
def rdb(redis_db: Any) -> Any:
    return redis_db


def test_two_local_dispatchers_share_the_limits_of_a_key_under_load(rdb: Any) -> None:
    """Two dispatchers (two processes' worth) deliver from one queue: a key's parallelism and rate
    hold across both, and every message is delivered exactly once."""
    n, rate, parallelism = 40, 8, 3
    meter = Meter(hold_s=0.03)
    flows = {
        "a": FlowControl("a", rate=rate, period_s=1, parallelism=parallelism),
        "b": FlowControl("b", parallelism=1),
    }

    def deliver(message: Message) -> None:
        meter.run(message.node, message.execution_id)

    prefix = f"hf:{{t{uuid.uuid4().hex[:10]}}}"
    dispatchers = [
        LocalDispatcher(rdb, deliver, prefix=prefix, workers=6, jitter=False, poll_interval_s=0.05)
        for _ in range(2)
    ]
    for d in dispatchers:
        d.flow = lambda m: flows[m.node]
    dispatchers[0].publish([Outgoing(Message(f"e{i}", "a" if i % 4 else "b", 1)) for i in range(n)])
    threads = [
        threading.Thread(
            target=d.run_until, args=(lambda d=d: d.pending() == 0,), kwargs={"timeout_s": HANG_GUARD_S}
        )
        for d in dispatchers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dispatchers[0].pending() == 0
    assert sorted(meter.seen) == sorted(f"e{i}" for i in range(n))  # nothing lost, nothing doubled
    assert meter.peak["a"] <= parallelism and meter.peak["b"] == 1
    meter.assert_rate("a", rate, 1.0)
    assert sum(d.stats.flow_waits for d in dispatchers) > 0  # the gate really held some back
    assert sum(d.stats.delivered for d in dispatchers) == n
    assert all(d.stats.dead == 0 and d.stats.retried == 0 for d in dispatchers)


def test_a_slot_held_by_a_dispatcher_that_died_frees_itself_after_its_lease(rdb: Any) -> None:
    """A process took the key's only slot and died mid-delivery: the others wait (waitlisted, not
    spinning) until its lease passes, then deliver; nothing is lost."""
    delivered: list[str] = []
    prefix = f"hf:{{t{uuid.uuid4().hex[:10]}}}"
    flow = FlowControl("solo", parallelism=1)
    dead = LocalDispatcher(rdb, lambda m: None, prefix=prefix, lease_s=1.0, jitter=False)
    dead.flow = lambda m: flow
    dead.publish([Outgoing(Message("held", "a", 1))])
    (ident, _body, _att), *_ = dead._lease(dead._now_ms(), 1)[0]
    assert dead._admit(ident, _body) == flow  # holds the slot ... and the process dies here
    alive = LocalDispatcher(
        rdb,
        lambda m: delivered.append(m.execution_id),
        prefix=prefix,
        lease_s=1.0,
        jitter=False,
        poll_interval_s=0.05,
    )
    alive.flow = lambda m: flow
    alive.publish([Outgoing(Message(f"w{i}", "a", 1)) for i in range(3)])
    assert alive.run_until(lambda: alive.pending() == 0, timeout_s=HANG_GUARD_S)
    assert sorted(delivered) == ["held", "w0", "w1", "w2"]  # the dead one's message too (lease expired)
    assert alive.stats.reclaimed == 1
    assert alive.stats.flow_waits <= 20  # waitlisted until the lease passed, not polled in a loop


@pytest.mark.parametrize(
    "flow",
    [
        FlowControl("k", rate=10, period_s=60, parallelism=2),
        FlowControl("k", parallelism=3),
        FlowControl("k", rate=5, period_s=1),
    ],
)
def test_our_headers_are_the_official_sdks_byte_for_byte(flow: FlowControl) -> None:
    """What QStashDispatcher sends is exactly what the official Python SDK sends for the same limits."""
    from qstash.message import prepare_headers

    options: dict[str, Any] = {"key": flow.key}
    if flow.parallelism:
        options["parallelism"] = flow.parallelism
    if flow.rate:
        options.update(rate=flow.rate, period=flow.period_s)  # an int period: the SDK writes "<n>s"
    none = dict.fromkeys(
        [
            "content_type", "method", "headers", "callback_headers", "failure_callback_headers", "retries",
            "retry_delay", "callback", "failure_callback", "delay", "not_before", "deduplication_id",
            "content_based_deduplication", "timeout", "label", "redact",
        ]
    )  # fmt: skip
    sdk = prepare_headers(flow_control=options, **none)  # type: ignore[arg-type]
    ours = flow.headers()
    assert {k: sdk[k] for k in ours} == ours


def test_flow_keys_carry_the_namespace_and_share_the_queues_hash_tag(redis_db: Any) -> None:
    from engine.dispatch.flow_control import RedisGate
    from engine.flow.slots import Slots
    from engine.state.namespace import queue_prefix
    from engine.state.store import Store

    for key in RedisGate(redis_db, queue_prefix("shop")).keys(FlowControl("k", parallelism=1)):
        assert key.startswith("shop:hf:{q}:f:")  # one slot with the queue it is admitted from
    for key in Slots(Store(redis_db, namespace="shop")).keys("abc"):
        assert key.startswith("shop:hf:{fx:abc}:")
    assert Slots(Store(redis_db, namespace="shop")).groups_key == "shop:hf:fx:groups"
