"""The local dispatcher on a real Redis: ordering, delays, dedup, leases after a crash, backoff, dead."""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from engine.clock import VirtualClock
from engine.dispatch import DispatchError
from engine.dispatch.local import LocalDispatcher, Redeliver
from engine.model import Message, Outgoing

HANG_GUARD_S = 20.0  # only stops a broken test from hanging; no assertion depends on it


@pytest.fixture(scope="module")
def rdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Redis: REDIS_URL if set, else an embedded server of our own."""
    from engine.embedded import redis_client, stop_embedded

    url = os.environ.get("REDIS_URL")
    directory = tmp_path_factory.mktemp("hopflow")
    client = redis_client(url, directory=directory)
    yield client
    client.close()
    if not url:
        stop_embedded(directory)


@pytest.fixture
def prefix() -> str:
    return f"hf:{{t{uuid.uuid4().hex[:12]}}}"


def msg(node: str, seq: int = 1, eid: str = "e1") -> Message:
    return Message(eid, node, seq)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Message] = []
        self.lock = threading.Lock()
        self.event = threading.Event()

    def __call__(self, message: Message) -> None:
        with self.lock:
            self.seen.append(message)
        self.event.set()

    @property
    def nodes(self) -> list[str]:
        with self.lock:
            return [m.node for m in self.seen]


def make(rdb: Any, prefix: str, deliver: Any = None, **kw: Any) -> LocalDispatcher:
    kw.setdefault("jitter", False)
    return LocalDispatcher(rdb, deliver, prefix=prefix, **kw)


def test_due_ordering_and_delays(rdb: Any, prefix: str) -> None:
    clock = VirtualClock(start=1_000_000.0)
    rec = Recorder()
    d = make(rdb, prefix, rec, clock=clock, fast_forward=True, workers=1)
    d.publish(
        [
            Outgoing(msg("c"), delay_ms=3000),
            Outgoing(msg("a")),
            Outgoing(msg("b"), delay_ms=1000),
            Outgoing(msg("d"), not_before=1_000_010.0, delay_ms=1),  # not_before wins over delay_ms
        ]
    )
    assert d.pending() == 4
    assert d.run_until(lambda: len(rec.nodes) == 4, timeout_s=HANG_GUARD_S)
    assert rec.nodes == ["a", "b", "c", "d"]
    assert clock.now() >= 1_000_010.0
    assert d.pending() == 0
    assert d.stats.delivered == 4 and d.stats.jumps == 3


def test_not_due_is_not_delivered_without_fast_forward(rdb: Any, prefix: str) -> None:
    clock = VirtualClock()
    rec = Recorder()
    d = make(rdb, prefix, rec, clock=clock, poll_interval_s=0.05)
    d.publish([Outgoing(msg("later"), delay_ms=3_600_000), Outgoing(msg("now"))])
    assert d.run_until(lambda: rec.nodes == ["now"], timeout_s=HANG_GUARD_S)
    assert not d.run_until(lambda: len(rec.nodes) > 1, timeout_s=0.3)
    assert d.pending() == 1
    assert d.next_due() is not None and d.next_due() > clock.now() + 3500


def test_fast_forward_makes_a_two_hour_wait_instant(rdb: Any, prefix: str) -> None:
    clock = VirtualClock()
    start = clock.now()
    rec = Recorder()
    d = make(rdb, prefix, rec, clock=clock, fast_forward=True, poll_interval_s=3600)
    d.publish([Outgoing(msg("remind"), delay_ms=2 * 3600 * 1000)])
    assert d.run_until(lambda: rec.nodes == ["remind"], timeout_s=HANG_GUARD_S)
    assert clock.now() - start >= 2 * 3600
    assert d.stats.jumps == 1
    assert d.stats.wakeups <= 2  # it jumped; it did not sleep its way there


def test_fast_forward_requires_a_virtual_clock(rdb: Any, prefix: str) -> None:
    with pytest.raises(ValueError):
        make(rdb, prefix, fast_forward=True)
    with pytest.raises(ValueError):
        LocalDispatcher(rdb, prefix="hf:no-hash-tag")


def test_dedup_by_id(rdb: Any, prefix: str) -> None:
    rec = Recorder()
    d = make(rdb, prefix, rec)
    out = Outgoing(msg("a"))
    d.publish([out, out])
    d.publish([out])
    assert d.stats.published == 1 and d.stats.deduplicated == 2
    assert d.run_until(lambda: rec.nodes == ["a"], timeout_s=HANG_GUARD_S)
    d.publish([out])  # already delivered, but within the 10-minute window: still a duplicate
    assert d.pending() == 0
    d.publish([Outgoing(msg("a", seq=2))])  # a new seq is a new message
    assert d.pending() == 1


def test_a_pending_message_is_not_rescheduled_by_a_republish(rdb: Any, prefix: str) -> None:
    clock = VirtualClock()
    d = make(rdb, prefix, Recorder(), clock=clock)
    out = Outgoing(msg("w"), delay_ms=60_000)
    d.publish([out])
    first = d.next_due()
    rdb.delete(f"{prefix}:d:{out.dedup_id}")  # the dedup window is long gone…
    clock.advance_to(clock.now() + 30)
    d.publish([out])  # …but the message is still pending: its due time must not move
    assert d.next_due() == first and d.pending() == 1


def test_publish_wakes_the_loop_without_a_poll_period(rdb: Any, prefix: str) -> None:
    rec = Recorder()
    d = make(rdb, prefix, rec, poll_interval_s=3600)  # without a wakeup it would sleep for an hour
    stop = threading.Event()
    loop = threading.Thread(target=d.run_forever, args=(stop,), daemon=True)
    loop.start()
    try:
        for i in range(3):
            rec.event.clear()
            d.publish([Outgoing(msg("n", seq=i))])
            assert rec.event.wait(HANG_GUARD_S)
        # each delivery costs a bounded number of loop passes: publish wake + completion wake
        assert d.stats.wakeups <= 3 * 3
    finally:
        stop.set()
        d.wake()
        loop.join(HANG_GUARD_S)
    assert not loop.is_alive()


def test_deliveries_publishing_next_messages_chain_immediately(rdb: Any, prefix: str) -> None:
    seen: list[int] = []

    def deliver(m: Message) -> None:
        seen.append(m.seq)
        if m.seq < 20:
            d.publish([Outgoing(msg("n", seq=m.seq + 1))])

    d = make(rdb, prefix, deliver, poll_interval_s=3600, workers=2)
    d.publish([Outgoing(msg("n", seq=1))])
    assert d.run_until(lambda: len(seen) == 20, timeout_s=HANG_GUARD_S)
    assert seen == list(range(1, 21))
    assert d.stats.wakeups <= 2 * 20


def test_parallel_deliveries_really_overlap(rdb: Any, prefix: str) -> None:
    barrier = threading.Barrier(4, timeout=HANG_GUARD_S)
    done: list[str] = []

    def deliver(m: Message) -> None:
        barrier.wait()  # passes only if four deliveries are in progress at the same time
        done.append(m.node)

    d = make(rdb, prefix, deliver, workers=4)
    d.publish([Outgoing(msg(f"b{i}")) for i in range(4)])
    assert d.run_until(lambda: len(done) == 4, timeout_s=HANG_GUARD_S)
    assert d.stats.delivered == 4 and d.stats.retried == 0


def test_crash_before_ack_loses_nothing(rdb: Any, prefix: str) -> None:
    clock = VirtualClock()
    first = make(rdb, prefix, Recorder(), clock=clock, lease_s=30)
    first.publish([Outgoing(msg("book"))])
    leased, *_ = first._lease(first._now_ms(), 1)  # what a loop does right before the process dies
    assert [ident for ident, _, _ in leased] == [Outgoing(msg("book")).dedup_id]
    del first  # the "crash": no ack, no retry, nothing else happens
    assert rdb.zcard(f"{prefix}:leased") == 1 and rdb.zcard(f"{prefix}:due") == 0

    rec = Recorder()
    second = make(rdb, prefix, rec, clock=clock, poll_interval_s=0.05)
    assert not second.run_until(lambda: bool(rec.nodes), timeout_s=0.2)  # still leased to the dead one
    clock.advance_to(clock.now() + 31)  # the lease runs out
    assert second.run_until(lambda: rec.nodes == ["book"], timeout_s=HANG_GUARD_S)
    assert second.stats.reclaimed == 1
    assert second.pending() == 0
    assert rdb.hlen(f"{prefix}:msg") == 0 and rdb.hlen(f"{prefix}:att") == 0


def test_failing_deliver_backs_off_then_goes_dead(rdb: Any, prefix: str) -> None:
    clock = VirtualClock()
    due_times: list[float] = []
    dead: list[tuple[Message, str]] = []

    def deliver(m: Message) -> None:
        due_times.append(clock.now())
        raise ConnectionError("worker down")

    d = make(
        rdb,
        prefix,
        deliver,
        on_dead=lambda m, reason: dead.append((m, reason)),
        clock=clock,
        fast_forward=True,
        max_attempts=4,
        backoff_s=1.0,
    )
    d.publish([Outgoing(msg("charge"))])
    assert d.run_until(lambda: bool(dead), timeout_s=HANG_GUARD_S)
    assert len(due_times) == 4
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(due_times)]
    assert gaps == [1.0, 2.0, 4.0]  # exponential (jitter off)
    message, reason = dead[0]
    assert message == msg("charge")
    assert "4 time(s)" in reason and "ConnectionError: worker down" in reason
    assert d.pending() == 0
    assert d.stats.dead == 1 and d.stats.retried == 3
    assert d.dead_letters()[0]["reason"] == reason


def test_on_dead_failing_keeps_the_message(rdb: Any, prefix: str) -> None:
    clock = VirtualClock()
    calls: list[str] = []

    def on_dead(m: Message, reason: str) -> None:
        calls.append(reason)
        if len(calls) == 1:
            raise ConnectionError("store down")

    def deliver(m: Message) -> None:
        raise RuntimeError("nope")

    d = make(rdb, prefix, deliver, on_dead=on_dead, clock=clock, max_attempts=1, lease_s=5)
    d.publish([Outgoing(msg("x"))])
    assert d.run_until(lambda: len(calls) == 1, timeout_s=HANG_GUARD_S)
    assert d.pending() == 1  # not acknowledged: still leased
    clock.advance_to(clock.now() + 6)
    assert d.run_until(lambda: len(calls) == 2, timeout_s=HANG_GUARD_S)
    assert d.run_until(lambda: d.pending() == 0, timeout_s=HANG_GUARD_S)


def test_redeliver_does_not_count_attempts(rdb: Any, prefix: str) -> None:
    clock = VirtualClock()
    tries: list[int] = []

    def deliver(m: Message) -> None:
        tries.append(1)
        if len(tries) < 5:
            raise Redeliver(0.5)

    dead: list[Any] = []
    on_dead = lambda *a: dead.append(a)  # noqa: E731
    d = make(rdb, prefix, deliver, clock=clock, fast_forward=True, max_attempts=2, on_dead=on_dead)
    d.publish([Outgoing(msg("busy"))])
    assert d.run_until(lambda: d.stats.delivered == 1, timeout_s=HANG_GUARD_S)
    assert len(tries) == 5 and not dead and d.stats.redelivered == 4


def test_malformed_body_goes_to_the_dead_list(rdb: Any, prefix: str) -> None:
    rec = Recorder()
    d = make(rdb, prefix, rec)
    rdb.hset(f"{prefix}:msg", "junk", "{not json")
    rdb.zadd(f"{prefix}:due", {"junk": 0})
    d.publish([Outgoing(msg("fine"))])
    assert d.run_until(lambda: rec.nodes == ["fine"] and d.pending() == 0, timeout_s=HANG_GUARD_S)
    assert d.dead_letters()[0]["id"] == "junk"


def test_publish_error_is_a_dispatch_error(tmp_path: Any) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    broken = redis.Redis(unix_socket_path=str(tmp_path / "nowhere.sock"), retry=Retry(NoBackoff(), 0))
    d = LocalDispatcher(broken, prefix="hf:{x}")
    with pytest.raises(DispatchError):
        d.publish([Outgoing(msg("a"))])


def test_background_start_and_stop(rdb: Any, prefix: str) -> None:
    rec = Recorder()
    d = make(rdb, prefix, rec, poll_interval_s=3600)
    d.start()
    try:
        d.publish([Outgoing(msg("bg"))])
        assert rec.event.wait(HANG_GUARD_S)
    finally:
        d.stop()
    with pytest.raises(RuntimeError):
        LocalDispatcher(rdb, prefix=prefix).run_until(lambda: True)  # no deliver callable


def test_two_dispatchers_share_the_work_exactly_once_each(rdb: Any, prefix: str) -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def deliver(m: Message) -> None:
        with lock:
            seen.append(m.node)
        time.sleep(0.001)

    a = make(rdb, prefix, deliver, workers=3)
    b = make(rdb, prefix, deliver, workers=3)
    a.publish([Outgoing(msg(f"n{i}")) for i in range(60)])
    ta = threading.Thread(target=a.run_until, args=(lambda: len(seen) >= 60, HANG_GUARD_S))
    tb = threading.Thread(target=b.run_until, args=(lambda: len(seen) >= 60, HANG_GUARD_S))
    ta.start()
    tb.start()
    ta.join()
    tb.join()
    assert sorted(seen) == sorted(f"n{i}" for i in range(60))  # each once: no double lease


def test_a_long_delivery_renews_its_lease(rdb: Any, prefix: str) -> None:
    clock = VirtualClock()
    started = threading.Event()
    release = threading.Event()
    seen: list[str] = []

    def slow(m: Message) -> None:
        started.set()
        release.wait(HANG_GUARD_S)
        seen.append(m.node)

    a = make(rdb, prefix, slow, clock=clock, lease_s=30, poll_interval_s=3600)
    a.publish([Outgoing(msg("long"))])
    runner = threading.Thread(target=a.run_until, args=(lambda: bool(seen), HANG_GUARD_S))
    runner.start()
    assert started.wait(HANG_GUARD_S)
    ident = Outgoing(msg("long")).dedup_id
    first = rdb.zscore(f"{prefix}:leased", ident)
    clock.advance_to(clock.now() + 11)  # past a third of the lease: time to renew
    a.wake()
    deadline = time.monotonic() + HANG_GUARD_S
    while rdb.zscore(f"{prefix}:leased", ident) == first and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rdb.zscore(f"{prefix}:leased", ident) > first
    clock.advance_to(clock.now() + 25)  # past the original lease, within the renewed one
    other = Recorder()
    b = make(rdb, prefix, other, clock=clock, poll_interval_s=0.05)
    assert not b.run_until(lambda: bool(other.nodes), timeout_s=0.3)
    assert b.stats.reclaimed == 0
    release.set()
    runner.join(HANG_GUARD_S)
    assert seen == ["long"] and a.pending() == 0


def _count_leases(d: LocalDispatcher) -> list[int]:
    """How many messages each lease script call asked for (one entry per call: a round trip)."""
    asked: list[int] = []
    lease = d._lease

    def counted(now: int, want: int) -> Any:
        asked.append(want)
        return lease(now, want)

    d._lease = counted  # type: ignore[method-assign]
    return asked


def test_a_chain_of_deliveries_costs_one_lease_per_message(rdb: Any, prefix: str) -> None:
    """A lease that returned fewer messages than there were free workers is not repeated at once,
    nor when a delivery ends while workers were free: only a publish (or retry), a freed worker
    when every worker was busy, or a timed wake-up can make something due."""
    seen: list[int] = []

    def deliver(m: Message) -> None:
        seen.append(m.seq)
        if m.seq < 30:
            d.publish([Outgoing(msg("n", seq=m.seq + 1))])

    d = make(rdb, prefix, deliver, poll_interval_s=3600, workers=4)
    asked = _count_leases(d)
    d.publish([Outgoing(msg("n", seq=1))])
    assert d.run_until(lambda: len(seen) == 30, timeout_s=HANG_GUARD_S)
    assert seen == list(range(1, 31))
    assert len(asked) <= 30 + 2, asked  # was about two per message


def test_a_freed_worker_takes_the_next_due_message_without_a_poll(rdb: Any, prefix: str) -> None:
    """More due messages than workers: every lease fills the free workers, and each freed worker
    makes the loop lease again, so nothing waits for the (hour-long) poll period."""
    seen: list[str] = []
    lock = threading.Lock()

    def deliver(m: Message) -> None:
        with lock:
            seen.append(m.node)

    d = make(rdb, prefix, deliver, poll_interval_s=3600, workers=2)
    asked = _count_leases(d)
    d.publish([Outgoing(msg(f"m{i}")) for i in range(9)])
    assert d.run_until(lambda: len(seen) == 9, timeout_s=HANG_GUARD_S)
    assert sorted(seen) == sorted(f"m{i}" for i in range(9))
    assert all(0 <= want <= 2 for want in asked)
    assert d.pending() == 0 or d.run_until(lambda: d.pending() == 0, timeout_s=HANG_GUARD_S)


def test_a_fast_forwarded_process_leaves_nothing_on_virtual_time_for_the_next_one(
    rdb: Any, prefix: str
) -> None:
    """After the virtual clock jumped two hours, what a dying fast-forwarded process leaves behind —
    a lease it held, a message it published for "now" — is taken by a process on the real clock
    within the lease period, not two hours later (issue: `resume` hung after a killed `run
    --fast-forward`)."""
    clock = VirtualClock()
    first = make(rdb, prefix, Recorder(), clock=clock, fast_forward=True, lease_s=0.5)
    clock.jump_to(clock.now() + 2 * 3600)  # what fast-forward does over a `wait: {for: 2h}`
    first.publish([Outgoing(msg("held")), Outgoing(msg("queued"))])
    wall_ms = time.time() * 1000
    for _member, due in rdb.zrange(f"{prefix}:due", 0, -1, withscores=True):
        assert due <= wall_ms + 1000  # immediate: due now for everyone, not in two hours
    leased, *_ = first._lease(first._now_ms(), 1)  # it takes one, then dies without an ack
    assert len(leased) == 1
    deadline = rdb.zrange(f"{prefix}:leased", 0, 0, withscores=True)[0][1]
    assert deadline <= time.time() * 1000 + 1000  # the lease is on the wall clock
    del first

    rec = Recorder()
    second = make(rdb, prefix, rec, poll_interval_s=0.05)  # a `resume`: the system clock
    assert second.run_until(lambda: sorted(rec.nodes) == ["held", "queued"], timeout_s=HANG_GUARD_S)
    assert second.stats.reclaimed == 1 and second.pending() == 0
