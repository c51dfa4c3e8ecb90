"""The local dispatcher: a durable delay queue in Redis and a delivery loop, for running without QStash.

Redis holds everything (all keys share one hash tag, so the Lua scripts also run on a cluster):

==================== ====== =================================================================
``hf:{q}:due``        zset   dedup id → due time (ms on the runtime's clock)
``hf:{q}:leased``     zset   dedup id → lease deadline (ms on the wall clock): being delivered
``hf:{q}:msg``        hash   dedup id → message JSON
``hf:{q}:att``        hash   dedup id → delivery attempts so far (counted when leased)
``hf:{q}:d:<id>``     string dedup marker, 10 minutes (like QStash's deduplication window)
``hf:{q}:dead``       list   the last 1000 messages given up on, with the reason (inspection only)
==================== ====== =================================================================

Guarantees:

* **Nothing is lost by a crash.** A message is moved from ``due`` to ``leased`` atomically when a
  process takes it, and deleted only after ``deliver`` returned. If the process dies first, the
  lease expires and any process on the same Redis takes the message again (at-least-once; the
  runtime makes the effect exactly-once by ``seq``).
* **Duplicates are absorbed.** Publishing a dedup id that is pending, or was published in the last
  10 minutes, does nothing.
* **Failures back off, then escalate.** ``deliver`` raising retries with exponential backoff (with
  jitter); after ``max_attempts`` the message goes to ``on_dead`` (the runtime marks the execution
  ``dead``) and to the dead list — never silently dropped. ``Redeliver`` asks for another try later
  without counting an attempt (the execution is busy).
* **No polling period for local work.** ``publish`` in this process (including from a delivery
  thread) wakes the loop at once; the loop otherwise sleeps exactly until the next due message, or
  at most ``poll_interval_s`` so messages published by other processes are seen. It leases only
  when something may have become due (a publish or retry here, a worker freed while all were busy,
  a timed wake-up), so a chain of deliveries costs one lease per message.
* **Parallel means parallel.** Up to ``workers`` messages are delivered at the same time.
* **A chain runs in place.** While a delivery advances an execution whose next message is due now,
  and nothing else is waiting here (no publish or retry since the last lease, nothing due that was
  left unleased, the loop not stopping), :meth:`may_run_in_place` lets the runtime run that next node
  in the same delivery instead of a publish → lease → ack round trip per node. The crash guarantee
  is unchanged: the delivery being run stays leased (and renewed) until the whole chain returns, and
  every node's checkpoint records the next message in its outbox before it runs, so a crash
  anywhere in the chain leaves a lease that expires, a redelivery that finds its message stale, and
  an outbox that the stale path publishes (docs/engine-design.md, "The in-process fast path").
  ``fast_path=False`` turns it off (benchmarks compare both).
* **A delivery's own next messages ride on its ack.** :meth:`publish_later` (the runtime's messages
  that its outbox keeps until consumed) holds them while the delivery runs and queues them in the
  script that acknowledges it: a lease and one ack+publish per delivered node.
* **Fast-forward.** With a :class:`~engine.clock.VirtualClock` and ``fast_forward=True``, when
  nothing is due and nothing is being delivered, the clock jumps to the next due time. Leases never
  use that clock: they are stamped and expired on the wall clock (``time.time()``), so a
  fast-forwarded process that dies leaves leases that expire ``lease_s`` later in real time, for
  whichever process (``resume``, ``recover --drive``, ``serve``) delivers next.
* **Offloaded calls** (``call``, for ``offload: true`` http steps) are queue entries too (body
  ``{"call": request}``, id = the request's dedup id). Delivering one makes the HTTP request
  (:func:`engine.steps.offload.perform`, the step's timeout), stores the answer on the entry
  (``{"call", "result"}``), then hands it to ``complete(message, result)`` — in-process that is
  ``Runtime.complete_offloaded``. A failed completion is retried from the stored answer without
  calling again; a crash between making the call and storing its answer makes the call again when
  the lease expires (at least once: the request's ``Idempotency-Key`` lets the target deduplicate).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from engine.clock import Clock, SystemClock, VirtualClock, wall_of
from engine.dispatch import CallResult, DispatchError
from engine.dispatch.flow_control import FlowControl, RedisGate, Resolver
from engine.model import Message, OffloadRequest, Outgoing

log = logging.getLogger("hopflow.dispatch")

DEDUP_TTL_MS = 10 * 60 * 1000
DEAD_LIST_MAX = 1000

Deliver = Callable[[Message], None]
OnDead = Callable[[Message, str], None]
Complete = Callable[[Message, CallResult], None]
Perform = Callable[[OffloadRequest], CallResult]

# Queue each (id, score, body) triple once (its dedup key NX-set for ARGV[1] ms), unless it is already due
# or leased. KEYS: due, leased, bodies, then ``skip`` more, then one dedup key per message; the triples
# start at ARGV[first]. Shared text, so publishing alone and publishing with an ack cannot drift apart.
_PUBLISH_LOOP = """
local function publish(skip, first)
  local n = 0
  for i = 1, #KEYS - 3 - skip do
    local at = first + 3 * (i - 1)
    local id, score, body = ARGV[at], ARGV[at + 1], ARGV[at + 2]
    if not redis.call('ZSCORE', KEYS[1], id) and not redis.call('ZSCORE', KEYS[2], id) then
      if redis.call('SET', KEYS[3 + skip + i], '1', 'NX', 'PX', ARGV[1]) then
        redis.call('HSET', KEYS[3], id, body)
        redis.call('ZADD', KEYS[1], score, id)
        n = n + 1
      end
    end
  end
  return n
end
"""

_PUBLISH = _PUBLISH_LOOP + "return publish(0, 2)\n"

_LEASE = """
local now, lease, want, wall = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', wall, 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], math.min(now, wall), id)
end
local out = {}
if want > 0 then
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, want)
  for _, id in ipairs(ids) do
    redis.call('ZREM', KEYS[1], id)
    local body = redis.call('HGET', KEYS[3], id)
    if body then
      redis.call('ZADD', KEYS[2], wall + lease, id)
      local attempts = redis.call('HINCRBY', KEYS[4], id, 1)
      table.insert(out, id)
      table.insert(out, body)
      table.insert(out, attempts)
    end
  end
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_lease = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {out, next_due[2] or false, next_lease[2] or false, #expired}
"""

_ACK = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""

# KEYS: due, leased, bodies, attempts, dedup keys; ARGV: dedup TTL, the acked id, the triples
_ACK_PUBLISH = (
    _PUBLISH_LOOP
    + """
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
return publish(1, 3)
"""
)

_RETRY = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  if ARGV[3] == '0' then redis.call('HINCRBY', KEYS[4], ARGV[1], -1) end
  return 1
end
return 0
"""


class Redeliver(Exception):
    """Raised by ``deliver``: try again after ``delay_s`` without counting an attempt (e.g. busy)."""

    def __init__(self, delay_s: float = 0.25, reason: str = "busy") -> None:
        super().__init__(reason)
        self.delay_s = delay_s


@dataclass
class Stats:
    """Counters for tests and ``doctor``; updated under the dispatcher's lock."""

    iterations: int = 0  # loop passes
    wakeups: int = 0  # times the loop slept and woke up (by publish, a finished delivery, or timeout)
    published: int = 0
    deduplicated: int = 0
    delivered: int = 0
    calls: int = 0  # offloaded calls made
    retried: int = 0
    redelivered: int = 0
    reclaimed: int = 0  # expired leases taken back (another process crashed or was too slow)
    dead: int = 0
    jumps: int = 0  # fast-forward clock jumps
    flow_waits: int = 0  # deliveries held back by flow control (rate or parallelism), not attempts
    errors: dict[str, int] = field(default_factory=dict)


class LocalDispatcher:
    """Publishes into, and delivers from, the Redis delay queue. See the module docstring."""

    def __init__(
        self,
        redis: Any,
        deliver: Deliver | None = None,
        *,
        on_dead: OnDead | None = None,
        clock: Clock | None = None,
        prefix: str = "hf:{q}",
        workers: int = 8,
        lease_s: float = 60.0,
        max_attempts: int = 8,
        backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        jitter: bool = True,
        poll_interval_s: float = 1.0,
        fast_forward: bool = False,
        complete: Complete | None = None,
        perform: Perform | None = None,
        fast_path: bool = True,
    ) -> None:
        if "{" not in prefix:
            raise ValueError("prefix must contain a {hash tag} so the queue's keys share a cluster slot")
        if fast_forward and not isinstance(clock, VirtualClock):
            raise ValueError("fast_forward needs a VirtualClock")
        self.redis = redis
        self.deliver = deliver
        self.on_dead = on_dead
        self.complete = complete  # where answers to offloaded calls go (a Runtime binds its own)
        self.perform = perform  # None: engine.steps.offload.perform (httpx)
        self.clock: Clock = clock or SystemClock()
        self.workers = max(1, workers)
        self.lease_ms = int(lease_s * 1000)
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.jitter = jitter
        self.poll_interval_s = poll_interval_s
        self.fast_forward = fast_forward
        self.fast_path = fast_path
        self.stats = Stats()
        self.key_due = f"{prefix}:due"
        self.key_leased = f"{prefix}:leased"
        self.key_msg = f"{prefix}:msg"
        self.key_att = f"{prefix}:att"
        self.key_dead = f"{prefix}:dead"
        self._key_dedup = f"{prefix}:d:"
        self._publish_script = redis.register_script(_PUBLISH)
        self._lease_script = redis.register_script(_LEASE)
        self._ack_script = redis.register_script(_ACK)
        self._ack_publish_script = redis.register_script(_ACK_PUBLISH)
        self._retry_script = redis.register_script(_RETRY)
        self._cond = threading.Condition()
        self._dirty = False  # something happened: run one more loop pass (and ask ``done()``)
        self._lease_needed = True  # something may have become due: lease on the next pass
        self._saturated = False  # the last lease filled every free worker (more may be due)
        self._in_flight = 0
        self._leased_at: dict[str, int] = {}  # own deliveries in progress → when their lease was renewed
        self._next_due: int | None = None  # the earliest due time the last lease saw (runtime clock, ms)
        self._stopping = False  # the loop is ending: chains stop at their next node boundary
        self._delivering = threading.local()  # .ident: the delivery this thread runs (for may_run_in_place)
        self._running = threading.Lock()  # one delivery loop per dispatcher object
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # flow control (engine/dispatch/flow_control.py): which messages carry a key (a Runtime binds
        # its resolver), and the gate every process on this Redis shares
        self.flow: Resolver | None = None
        self.gate = RedisGate(redis, prefix)
        self._holding: dict[str, FlowControl] = {}  # own deliveries holding a parallelism slot

    # ----------------------------------------------------------------------------------- publishing

    def _now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def _wall_ms(self) -> int:
        """Leases live on the wall clock (``clock.wall()``), never on workflow time: a lease must
        expire ``lease_s`` of real time later for every process, whatever clock it has."""
        return int(wall_of(self.clock) * 1000)

    def _soon_ms(self) -> int:
        """ "Now" for work that is due at once or after a short pause: the earlier of workflow
        time and real time. A fast-forwarded clock runs ahead of real time; stamping an immediate
        message with it would make every other process (a ``resume`` after this one was killed)
        wait until real time catches up — hours or months. The earlier stamp is due at once for
        both."""
        return min(self._now_ms(), self._wall_ms())

    def due_ms(self, outgoing: Outgoing, now_ms: int | None = None) -> int:
        """A delayed message is due on workflow time (fast-forward jumps to it); an immediate one
        at :meth:`_soon_ms`."""
        if outgoing.not_before is not None:
            return int(outgoing.not_before * 1000)
        delay = max(0, int(outgoing.delay_ms))
        if delay == 0 and now_ms is None:
            return self._soon_ms()
        base = self._now_ms() if now_ms is None else now_ms
        return base + delay

    def publish(self, outgoing: Sequence[Outgoing]) -> None:
        """Store every message durably (deduplicated); wakes this process's delivery loop."""
        if not outgoing:
            return
        keys, args = self._publish_args(outgoing)
        try:
            added = int(
                self._publish_script(keys=[self.key_due, self.key_leased, self.key_msg, *keys], args=args)
            )
        except Exception as exc:  # redis.RedisError, connection errors: the outbox stays for later
            raise DispatchError(f"local queue unavailable: {type(exc).__name__}: {exc}") from exc
        self._published(len(outgoing), added)

    def publish_later(self, outgoing: Sequence[Outgoing]) -> None:
        """Messages the caller keeps recoverable elsewhere until they are consumed (the runtime's
        outbox: an execution's own next messages). Inside one of this dispatcher's deliveries they
        are queued together with that delivery's acknowledgement, in one round trip instead of two;
        anywhere else they are published now. Lost only with the process before that ack — and then
        the delivery, unacknowledged, comes back, finds its message stale and re-publishes them from
        the outbox."""
        held = getattr(self._delivering, "held", None)
        if held is None:
            self.publish(outgoing)
            return
        held.extend(outgoing)

    def _publish_args(self, outgoing: Sequence[Outgoing]) -> tuple[list[str], list[Any]]:
        """Dedup keys, and ``[ttl, id, due, body, …]`` for the publish scripts."""
        now, soon = self._now_ms(), self._soon_ms()
        keys: list[str] = []
        args: list[Any] = [DEDUP_TTL_MS]
        for item in outgoing:
            keys.append(self._key_dedup + item.dedup_id)
            body = json.dumps(
                {"message": item.message.to_dict(), **self._flow_of(item.message)}, separators=(",", ":")
            )
            immediate = item.not_before is None and item.delay_ms <= 0
            args += [item.dedup_id, soon if immediate else self.due_ms(item, now), body]
        return keys, args

    def _published(self, offered: int, added: int) -> None:
        with self._cond:
            self.stats.published += added
            self.stats.deduplicated += offered - added
            self._dirty = self._lease_needed = True
            self._cond.notify_all()

    def _flow_of(self, message: Message) -> dict[str, Any]:
        """``{"fc": …}`` for a message its resolver gives a flow-control key, else nothing."""
        flow = self.flow(message) if self.flow is not None else None
        return {"fc": flow.to_dict()} if flow is not None else {}

    def call(self, request: OffloadRequest) -> None:
        """Queue an offloaded call durably (deduplicated by ``request.dedup_id``); a delivery worker
        makes it and hands the answer to ``complete``."""
        body = json.dumps(
            {"call": request.to_dict(), **self._flow_of(request.message)}, separators=(",", ":")
        )
        ident = request.dedup_id
        try:
            added = int(
                self._publish_script(
                    keys=[self.key_due, self.key_leased, self.key_msg, self._key_dedup + ident],
                    args=[DEDUP_TTL_MS, ident, self._soon_ms(), body],
                )
            )
        except Exception as exc:  # the interpreter keeps the call's record and hands it over again
            raise DispatchError(f"local queue unavailable: {type(exc).__name__}: {exc}") from exc
        with self._cond:
            self.stats.published += added
            self.stats.deduplicated += 1 - added
            self._dirty = self._lease_needed = True
            self._cond.notify_all()

    # ------------------------------------------------------------------------------------ inspection

    def pending(self) -> int:
        """Messages not yet acknowledged (due later, due now, or being delivered)."""
        return int(self.redis.zcard(self.key_due)) + int(self.redis.zcard(self.key_leased))

    def in_flight(self) -> int:
        """Deliveries of this dispatcher running right now."""
        with self._cond:
            return self._in_flight

    def may_run_in_place(self, message: Message) -> bool:
        """Whether the delivery running on this thread may run ``message`` (its execution's next,
        immediate message) itself, without queueing it: only inside one of this dispatcher's own
        deliveries (its lease held and renewed here), and only while nothing else waits for this
        loop — no publish or retry since the last lease, nothing due then that was left unleased
        (the last lease's next due time is later than now), the loop not stopping — and never for a
        flow-controlled message (its key's gate admits it only through the queue). In-process state
        only (the flow resolver caches per execution): no round trip. Messages other processes
        publish are seen at the next lease (a publish here, a poll), as without the fast path."""
        if not self.fast_path or getattr(self._delivering, "ident", None) is None:
            return False
        with self._cond:
            if self._stopping or self._lease_needed:
                return False
            next_due = self._next_due
        if next_due is not None and next_due <= self._now_ms():
            return False
        if self.flow is not None:  # a flow-controlled message goes through its key's gate, queued
            try:
                return self.flow(message) is None
            except Exception:  # its key cannot be read now: the queue's delivery will tell
                return False
        return True

    def idle(self) -> bool:
        """Nothing is due now and this dispatcher delivers nothing (``run_until(d.idle)`` drains)."""
        with self._cond:
            if self._in_flight:
                return False
        due = self.redis.zrangebyscore(self.key_due, "-inf", self._now_ms(), start=0, num=1)
        return not due

    def due_for(self, execution_id: str) -> float | None:
        """Unix seconds of the earliest scheduled message of one execution (progress display)."""
        best: float | None = None
        for _member, score in self.redis.zscan_iter(self.key_due, match=f"{execution_id}:*", count=500):
            best = score if best is None else min(best, score)
        return None if best is None else best / 1000

    def next_due(self) -> float | None:
        """Unix seconds of the earliest scheduled message, or None."""
        first = self.redis.zrange(self.key_due, 0, 0, withscores=True)
        return first[0][1] / 1000 if first else None

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.redis.lrange(self.key_dead, 0, limit - 1)]

    # -------------------------------------------------------------------------------------- running

    def run_until(self, predicate: Callable[[], bool], timeout_s: float | None = None) -> bool:
        """Deliver until ``predicate()`` holds (checked after every delivery); False on wall timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return self._run(predicate, deadline)

    def run_forever(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set (call :meth:`wake` after setting it to return at once)."""
        self._run(stop.is_set, None)

    def start(self) -> threading.Thread:
        """Run the loop in a background thread (``hopflow serve`` without QStash)."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run_forever, args=(self._stop,), name="hopflow-dispatcher", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout_s: float | None = 30.0) -> None:
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wake(self) -> None:
        with self._cond:
            self._dirty = self._lease_needed = True
            self._cond.notify_all()

    def _run(self, done: Callable[[], bool], deadline: float | None) -> bool:
        if self.deliver is None:
            raise RuntimeError("LocalDispatcher.deliver is not set")
        if not self._running.acquire(blocking=False):
            raise RuntimeError("this dispatcher's delivery loop is already running")
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="hopflow-deliver")
        failures = 0
        next_due: int | None = None
        next_lease: int | None = None
        with self._cond:
            self._lease_needed = True
            self._stopping = False
        try:
            while True:
                with self._cond:
                    self._dirty = False
                    self.stats.iterations += 1
                    free = self.workers - self._in_flight
                    lease_now, self._lease_needed = self._lease_needed, False
                if done():
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                now = self._now_ms()
                wall = self._wall_ms()
                # Lease only when something may have become due: a publish or retry (in this
                # process), a worker freed while every worker was busy, or a timed wake-up (a due
                # time, an expired lease, the poll for other processes' messages). A pass woken
                # only by a delivery that ended just asks ``done()`` again.
                if lease_now:
                    try:
                        batch, next_due, next_lease, reclaimed = self._lease(now, free)
                        failures = 0
                    except Exception as exc:  # Redis down: back off, keep trying (nothing is lost)
                        failures += 1
                        self._count_error(type(exc).__name__)
                        log.warning("local queue: leasing failed (%s); retrying", type(exc).__name__)
                        with self._cond:
                            self._lease_needed = True
                        self._sleep(min(5.0, 0.05 * 2**failures), deadline)
                        continue
                    with self._cond:
                        self._next_due = next_due
                    if reclaimed:
                        log.warning("local queue: %d expired lease(s) taken back for redelivery", reclaimed)
                    for ident, body, attempts in batch:
                        with self._cond:
                            self._in_flight += 1
                            self._leased_at[ident] = wall
                        pool.submit(self._deliver_one, ident, body, attempts)
                    with self._cond:
                        self._saturated = len(batch) >= free
                        if batch and self._saturated:  # every free worker got one: more may be due
                            self._lease_needed = True
                            continue
                renew_in = self._renew(wall)
                with self._cond:
                    if self._dirty:
                        continue
                    if (
                        self.fast_forward
                        and self._in_flight == 0
                        and next_due is not None
                        and next_due > now
                        and not done()
                    ):
                        assert isinstance(self.clock, VirtualClock)
                        self.clock.jump_to((next_due + 1) / 1000)
                        self.stats.jumps += 1
                        self._lease_needed = True
                        continue
                    wait = self.poll_interval_s
                    if free > 0 and next_due is not None:
                        wait = min(wait, (next_due - now) / 1000)
                    if next_lease is not None:
                        wait = min(wait, (next_lease - wall) / 1000)
                    if renew_in is not None:
                        wait = min(wait, renew_in / 1000)
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                    if not self._cond.wait(max(wait, 0.001)):
                        self._lease_needed = True  # timed out: a due time or a lease deadline passed
                    self.stats.wakeups += 1
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (engine.lifecycle): drain, then stop
            with self._cond:
                self._stopping = True  # a chain running in place stops at its next node
                busy = self._in_flight
            if busy:
                log.warning(
                    "local queue: stopping; finishing %d delivery(ies) in progress "
                    "(interrupt again to stop at once: the next run takes them over after their lease)",
                    busy,
                )
            raise
        finally:
            with self._cond:
                self._stopping = True  # nobody leases after this: chains hand their next node back
            pool.shutdown(wait=True)  # in-flight deliveries finish and are acknowledged
            self._running.release()

    def _renew(self, now: int) -> int | None:
        """Extend the leases of this process's deliveries in progress (a long step must not look like
        a crash); ms until the next renewal is due, or None when nothing is in flight. ``now`` is
        wall-clock ms (leases never follow a virtual clock)."""
        third = max(1, self.lease_ms // 3)
        with self._cond:
            stale = [i for i, at in self._leased_at.items() if now - at >= third]
            for ident in stale:
                self._leased_at[ident] = now
            pending = list(self._leased_at.values())
        if stale:
            try:
                pipe = self.redis.pipeline(transaction=False)
                for ident in stale:  # XX: a lease already acknowledged or rescheduled stays gone
                    pipe.zadd(self.key_leased, {ident: now + self.lease_ms}, xx=True)
                    flow = self._holding.get(ident)
                    if flow is not None:  # its flow-control slot lives as long as its lease
                        self.gate.renew(pipe, flow, ident, now + self.lease_ms)
                pipe.execute()
            except Exception as exc:
                log.warning("local queue: renewing leases failed (%s)", type(exc).__name__)
        if not pending:
            return None
        return max(1, min(at + third - now for at in pending))

    def _sleep(self, seconds: float, deadline: float | None) -> None:
        if deadline is not None:
            seconds = min(seconds, max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._cond.wait(seconds)

    def _lease(
        self, now: int, want: int, wall: int | None = None
    ) -> tuple[list[tuple[str, str, int]], int | None, int | None, int]:
        """Take back expired leases (wall clock) and lease up to ``want`` messages due by ``now``
        (the runtime's clock); next due time (runtime clock) and next lease deadline (wall clock)."""
        keys = [self.key_due, self.key_leased, self.key_msg, self.key_att]
        wall = self._wall_ms() if wall is None else wall
        raw, next_due, next_lease, reclaimed = self._lease_script(
            keys=keys, args=[now, self.lease_ms, max(0, want), wall]
        )
        batch = []
        for i in range(0, len(raw), 3):
            batch.append((_text(raw[i]), _text(raw[i + 1]), int(raw[i + 2])))
        if reclaimed:
            with self._cond:
                self.stats.reclaimed += int(reclaimed)
        return (
            batch,
            None if next_due is None else int(float(next_due)),
            None if next_lease is None else int(float(next_lease)),
            int(reclaimed),
        )

    # ------------------------------------------------------------------------------------ delivering

    def _deliver_one(self, ident: str, body: str, attempts: int) -> None:
        flow: FlowControl | bool | None = None
        try:
            flow = self._admit(ident, body)
            if flow is not False:
                self._attempt(ident, body, attempts)
        except Exception:  # pragma: no cover - a bug here must not kill the worker silently
            log.exception("local queue: unexpected error handling %s", ident)
        finally:
            if isinstance(flow, FlowControl):
                self._release(ident, flow)
            with self._cond:
                self._in_flight -= 1
                self._leased_at.pop(ident, None)
                self._dirty = True
                if self._saturated:  # a worker is free and messages may be waiting for one
                    self._lease_needed = True
                self._cond.notify_all()

    def _admit(self, ident: str, body: str) -> FlowControl | bool | None:
        """Flow control: the message's key admits it now (its flow, to release afterwards; None: it
        has none), or False — the gate put it back (due when the rate window frees, or waitlisted
        until a delivery of the key ends) without counting an attempt."""
        if '"fc":' not in body:
            return None
        try:
            flow = FlowControl.from_dict(json.loads(body)["fc"])
        except (ValueError, KeyError, TypeError):
            return None  # malformed: _attempt dead-letters it
        verdict = self.gate.admit(
            flow,
            ident,
            now_ms=self._now_ms(),
            wall_ms=self._wall_ms(),
            lease_ms=self.lease_ms,
            queue=(self.key_due, self.key_leased, self.key_att),
        )
        if not verdict.ok:
            with self._cond:
                self.stats.flow_waits += 1
                self._lease_needed = True
            return False
        if flow.parallelism:
            with self._cond:
                self._holding[ident] = flow
        return flow

    def _release(self, ident: str, flow: FlowControl) -> None:
        """The delivery ended (acknowledged, retried or given up): free its slot, wake a waiter."""
        if not flow.parallelism:
            return
        with self._cond:
            self._holding.pop(ident, None)
        try:
            woken = self.gate.release(flow, ident, now_ms=self._soon_ms(), due_key=self.key_due)
        except Exception as exc:  # the slot frees itself when its lease deadline passes
            log.warning("local queue: releasing a flow-control slot failed (%s)", type(exc).__name__)
            return
        if woken:
            self.wake()

    def _attempt(self, ident: str, body: str, attempts: int) -> None:
        request: OffloadRequest | None = None
        try:
            data = json.loads(body)
            if isinstance(data, dict) and "call" in data:
                request = OffloadRequest.from_dict(data["call"])
            else:
                message = Message.from_dict(data["message"])
        except (ValueError, KeyError, TypeError) as exc:
            log.error("local queue: dropping malformed message %s: %s", ident, exc)
            self._dead_letter(ident, body, f"malformed message: {exc}")
            self._ack(ident)
            return
        if request is not None:
            self._attempt_call(ident, data, request, attempts)
            return
        assert self.deliver is not None
        deliver = self.deliver

        def note_retry(exc: Exception, reason: str, delay: float) -> None:
            log.warning(
                "local queue: %s for %s (attempt %d/%d); retrying in %.2fs",
                type(exc).__name__,
                ident,
                attempts,
                self.max_attempts,
                delay,
            )

        held: list[Outgoing] = []

        def run() -> None:
            self._delivering.ident = ident  # may_run_in_place: this thread runs one of our deliveries
            self._delivering.held = held  # publish_later: queued with this delivery's ack
            try:
                deliver(message)
            except Exception:  # (a dying process — BaseException — publishes nothing more)
                self._release_held(held)  # the retry or the redelivery comes later: publish them now
                raise
            finally:
                self._delivering.ident = self._delivering.held = None

        self._settle(ident, attempts, run, "delivery failed", body, message, note_retry, held)

    def _attempt_call(self, ident: str, data: dict[str, Any], request: OffloadRequest, attempts: int) -> None:
        """An offloaded call: make it (unless its answer is already stored), then complete it."""
        stored = data.get("result")
        if stored is None:
            perform = self.perform
            if perform is None:
                from engine.steps.offload import perform
            result = perform(request)
            with self._cond:
                self.stats.calls += 1
            entry = json.dumps({"call": data["call"], "result": result.to_dict()}, separators=(",", ":"))
            try:  # keep the answer: a failed completion must not make the call again
                self.redis.hset(self.key_msg, ident, entry)
            except Exception as exc:
                log.warning("local queue: could not store the answer of %s (%s)", ident, type(exc).__name__)
        else:
            result = CallResult.from_dict(stored)
            entry = json.dumps(data, separators=(",", ":"))

        def complete() -> None:
            if self.complete is None:
                raise RuntimeError("LocalDispatcher.complete is not set (no runtime to complete the call)")
            self.complete(request.message, result)

        def note_retry(exc: Exception, reason: str, delay: float) -> None:
            log.warning("local queue: %s; retrying", reason)

        failed = "completing offloaded call failed"
        self._settle(ident, attempts, complete, failed, entry, request.message, note_retry)

    def _settle(
        self,
        ident: str,
        attempts: int,
        act: Callable[[], None],
        failed: str,
        body: str,
        message: Message,
        note_retry: Callable[[Exception, str, float], None],
        held: list[Outgoing] | None = None,
    ) -> None:
        """Run a delivery (or an offloaded call's completion) and settle its entry: ack on success
        (with the messages it held, :meth:`publish_later`), retry a Redeliver without counting it,
        retry a failure with backoff until ``max_attempts``."""
        try:
            act()
        except Redeliver as again:
            with self._cond:
                self.stats.redelivered += 1
            self._retry(ident, again.delay_s, count=False)
            return
        except Exception as exc:
            self._count_error(type(exc).__name__)
            reason = f"{failed} {attempts} time(s); last: {type(exc).__name__}: {exc}"
            if attempts >= self.max_attempts:
                self._give_up(ident, body, message, reason)
            else:
                delay = self.backoff(attempts)
                note_retry(exc, reason, delay)
                with self._cond:
                    self.stats.retried += 1
                self._retry(ident, delay, count=True)
            return
        with self._cond:
            self.stats.delivered += 1
        if held:
            self._ack_publish(ident, held)
        else:
            self._ack(ident)

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: exponential, capped, with "equal" jitter."""
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** max(0, attempts - 1))
        return delay / 2 + random.uniform(0, delay / 2) if self.jitter else delay

    def _give_up(self, ident: str, body: str, message: Message, reason: str) -> None:
        log.error("local queue: giving up on %s: %s", ident, reason)
        try:
            if self.on_dead is not None:
                self.on_dead(message, reason)
        except Exception as exc:  # keep it leased: the lease expires and we try again later
            log.error("local queue: on_dead failed for %s (%s); will retry", ident, type(exc).__name__)
            return
        self._dead_letter(ident, body, reason)
        with self._cond:
            self.stats.dead += 1
        self._ack(ident)

    def _dead_letter(self, ident: str, body: str, reason: str) -> None:
        entry = json.dumps({"id": ident, "body": body, "reason": reason, "at": self.clock.now()})
        try:
            pipe = self.redis.pipeline()
            pipe.lpush(self.key_dead, entry)
            pipe.ltrim(self.key_dead, 0, DEAD_LIST_MAX - 1)
            pipe.execute()
        except Exception as exc:  # pragma: no cover - inspection aid only
            log.warning("local queue: could not record dead letter %s (%s)", ident, type(exc).__name__)

    def _ack(self, ident: str) -> None:
        try:
            self._ack_script(keys=[self.key_leased, self.key_msg, self.key_att], args=[ident])
        except Exception as exc:  # the lease expires and it is delivered again; seq makes that harmless
            log.warning("local queue: ack of %s failed (%s)", ident, type(exc).__name__)

    def _ack_publish(self, ident: str, held: list[Outgoing]) -> None:
        """Acknowledge a delivery and queue the messages it held, in one script."""
        keys, args = self._publish_args(held)
        try:
            added = int(
                self._ack_publish_script(
                    keys=[self.key_due, self.key_leased, self.key_msg, self.key_att, *keys],
                    args=[args[0], ident, *args[1:]],
                )
            )
        except Exception as exc:  # the lease expires, the redelivery is stale and re-publishes them
            log.warning("local queue: ack of %s failed (%s)", ident, type(exc).__name__)
            return
        self._published(len(held), added)

    def _release_held(self, held: list[Outgoing]) -> None:
        """A delivery that did not succeed publishes what it held at once (best effort: its outbox
        keeps them for the redelivery anyway)."""
        if not held:
            return
        batch = list(held)
        held.clear()
        try:
            self.publish(batch)
        except DispatchError as exc:
            log.warning("local queue: %s; the redelivery re-publishes from the outbox", exc)

    def _retry(self, ident: str, delay_s: float, *, count: bool) -> None:
        due = self._now_ms() + int(max(0.0, delay_s) * 1000)  # a backoff: workflow time (jumped over)
        try:
            self._retry_script(
                keys=[self.key_due, self.key_leased, self.key_msg, self.key_att],
                args=[ident, due, "1" if count else "0"],
            )
        except Exception as exc:
            log.warning("local queue: rescheduling %s failed (%s)", ident, type(exc).__name__)
        self.wake()

    def _count_error(self, name: str) -> None:
        with self._cond:
            self.stats.errors[name] = self.stats.errors.get(name, 0) + 1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
