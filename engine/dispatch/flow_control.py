"""Flow control of deliveries: QStash's ``Upstash-Flow-Control-Key``/``-Value`` and the two gates
that enforce the same limits without QStash.

A :class:`FlowControl` is what one message carries: a key and its limits — at most ``rate``
deliveries *start* in any ``period_s``-long window, at most ``parallelism`` deliveries with the key
are *in progress* at once. Three places use it, so the rules are written once here:

* :class:`~engine.dispatch.qstash.QStashDispatcher` sends it as the two headers
  (:meth:`FlowControl.headers`); QStash enforces it.
* ``hopflow qstash-dev`` reads those headers back (:func:`from_headers`) and enforces them with
  :class:`MemoryGate` (in memory, like the rest of the dev server).
* :class:`~engine.dispatch.local.LocalDispatcher` enforces them with :class:`RedisGate` (Lua, one
  script per admission/release, every key under the queue's hash tag and declared in ``KEYS``), so
  every process that delivers from the same Redis shares the limits.

Both gates decide alike: a delivery over the parallelism limit waits in the key's waitlist until a
delivery of that key ends (not strictly first-come first-served, like QStash); one over the rate
waits until the oldest start in the window is ``period`` old. The window slides (any
``period``-long interval holds at most ``rate`` starts), which is a little stricter than QStash's
fixed periods. Which messages carry which key is decided by the runtime (engine/flow/): the
dispatchers ask their ``flow`` resolver, a callable ``Message -> FlowControl | None``.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.model import Message

KEY_HEADER = "Upstash-Flow-Control-Key"
VALUE_HEADER = "Upstash-Flow-Control-Value"
# keys QStash takes as they are; anything else (spaces, non-ASCII, very long) is sent as a digest
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9._:/@+=-]{1,100}$")
_PERIOD = re.compile(r"^(\d+)(s|m|h|d)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}

Resolver = Callable[[Message], "FlowControl | None"]


class FlowControlError(ValueError):
    """A Flow-Control header that cannot be read (the dev server answers 400)."""


def wire_key(key: str) -> str:
    """A key as it goes on the wire: unchanged when plain, else ``k-<sha256 prefix>`` (stable)."""
    if _PLAIN_KEY.fullmatch(key):
        return key
    return "k-" + hashlib.sha256(key.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class FlowControl:
    key: str
    rate: int | None = None
    period_s: int = 1
    parallelism: int | None = None

    def value(self) -> str:
        """``parallelism=2, rate=10, period=60s`` (only what is set): the order and separator both
        official SDKs write and QStash's API reference gives."""
        parts = []
        if self.parallelism:
            parts.append(f"parallelism={self.parallelism}")
        if self.rate:
            parts += [f"rate={self.rate}", f"period={self.period_s}s"]
        return ", ".join(parts)

    def headers(self) -> dict[str, str]:
        return {KEY_HEADER: wire_key(self.key), VALUE_HEADER: self.value()}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"k": self.key}
        if self.rate:
            d["r"] = self.rate
            d["s"] = self.period_s
        if self.parallelism:
            d["n"] = self.parallelism
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FlowControl:
        return cls(
            key=str(data["k"]),
            rate=int(data["r"]) if data.get("r") else None,
            period_s=int(data.get("s") or 1),
            parallelism=int(data["n"]) if data.get("n") else None,
        )

    @classmethod
    def from_limits(cls, key: str, limits: Mapping[str, Any]) -> FlowControl | None:
        """From a compiled ``flow_control`` mapping (dsl/flow_control.py); None without a message limit."""
        rate, parallelism = limits.get("rate"), limits.get("parallelism")
        if not rate and not parallelism:
            return None
        period_ms = int(limits.get("period_ms") or 1000)
        return cls(key, int(rate) if rate else None, max(1, period_ms // 1000), parallelism or None)


def parse_period(text: str) -> int:
    """``10s``, ``1m``, ``2h``, ``1d`` or bare seconds → seconds (QStash's period syntax)."""
    match = _PERIOD.fullmatch(text.strip())
    if not match or int(match.group(1)) < 1:
        raise FlowControlError(f"invalid flow-control period {text!r} (e.g. 1s, 30s, 1m)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def from_headers(headers: Mapping[str, str]) -> FlowControl | None:
    """The flow control a publish asks for (lower-cased header names), or None. Accepts QStash's
    value syntax: ``parallelism=5, rate=10, period=1m`` in any order, commas with or without spaces."""
    key = headers.get(KEY_HEADER.lower())
    value = headers.get(VALUE_HEADER.lower())
    if not key and not value:
        return None
    if not key or not value:
        raise FlowControlError(f"{KEY_HEADER} and {VALUE_HEADER} go together")
    fields: dict[str, str] = {}
    for part in value.split(","):
        name, sep, raw = part.strip().partition("=")
        if not sep or name.strip().lower() not in ("rate", "period", "parallelism"):
            raise FlowControlError(f"invalid {VALUE_HEADER}: {value!r}")
        fields[name.strip().lower()] = raw.strip()
    try:
        rate = int(fields["rate"]) if "rate" in fields else None
        parallelism = int(fields["parallelism"]) if "parallelism" in fields else None
    except ValueError:
        raise FlowControlError(f"invalid {VALUE_HEADER}: {value!r}") from None
    if (rate is not None and rate < 1) or (parallelism is not None and parallelism < 1):
        raise FlowControlError(f"invalid {VALUE_HEADER}: {value!r} (limits are at least 1)")
    if rate is None and parallelism is None:
        raise FlowControlError(f"{VALUE_HEADER} sets neither rate nor parallelism")
    period = parse_period(fields["period"]) if "period" in fields else 1
    return FlowControl(key.strip(), rate, period, parallelism)


@dataclass(frozen=True)
class Admission:
    """A gate's answer: ``ok``; else ``retry_at`` (rate: when the window frees, seconds on the
    caller's clock) or None (parallelism: waitlisted until a delivery of the key ends)."""

    ok: bool
    retry_at: float | None = None


class MemoryGate:
    """The gate in memory (``hopflow qstash-dev``): one process, one event loop, no locks needed
    beyond the one that keeps it safe to call from threads too."""

    def __init__(self) -> None:
        self._starts: dict[str, deque[float]] = {}
        self._running: dict[str, set[str]] = {}
        self._waiting: dict[str, dict[str, None]] = {}  # key → waitlisted ids (insertion order)
        self._lock = threading.Lock()

    def admit(self, flow: FlowControl, ident: str, now: float) -> Admission:
        with self._lock:
            running = self._running.setdefault(flow.key, set())
            if flow.parallelism and ident not in running and len(running) >= flow.parallelism:
                self._waiting.setdefault(flow.key, {})[ident] = None
                return Admission(False, None)
            if flow.rate:
                starts = self._starts.setdefault(flow.key, deque())
                while starts and starts[0] <= now - flow.period_s:
                    starts.popleft()
                if len(starts) >= flow.rate:
                    return Admission(False, starts[0] + flow.period_s)
                starts.append(now)
            if flow.parallelism:
                running.add(ident)
            self._waiting.get(flow.key, {}).pop(ident, None)
            return Admission(True)

    def release(self, flow: FlowControl, ident: str) -> list[str]:
        """The delivery ``ident`` ended; the waitlisted ids, to try again now (all of them: one that
        went away meanwhile — cancelled — must not keep the others waiting; those that lose the race
        for the free slot join the waitlist again)."""
        with self._lock:
            self._running.get(flow.key, set()).discard(ident)
            waiting = self._waiting.pop(flow.key, None)
            return list(waiting) if waiting else []

    def running(self, key: str) -> int:
        with self._lock:
            return len(self._running.get(key, ()))


# KEYS: rate log, holders, waitlist, due, leased, attempts. ARGV: id, now (ms, the queue's clock),
# wall (ms), lease (ms), rate, period (ms), parallelism.
_ADMIT = """
local id, now, wall, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local rate, period, par = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local function back(at)
  if redis.call('ZREM', KEYS[5], id) == 1 then
    redis.call('ZADD', KEYS[4], at, id)
    redis.call('HINCRBY', KEYS[6], id, -1)
  end
end
if par > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', wall)
  if not redis.call('ZSCORE', KEYS[2], id) and redis.call('ZCARD', KEYS[2]) >= par then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    back(now + math.max(1, tonumber(first[2]) - wall))
    redis.call('ZADD', KEYS[3], 'NX', now, id)
    redis.call('PEXPIRE', KEYS[3], 2 * lease + period)
    return {'wait', 0}
  end
end
if rate > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
  if redis.call('ZCARD', KEYS[1]) >= rate then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    local at = tonumber(first[2]) + period
    back(at)
    return {'rate', at}
  end
  redis.call('ZADD', KEYS[1], now, id .. '@' .. now)
  redis.call('PEXPIRE', KEYS[1], period + 1000)
end
if par > 0 then
  redis.call('ZADD', KEYS[2], wall + lease, id)
  redis.call('PEXPIRE', KEYS[2], 2 * lease)
end
redis.call('ZREM', KEYS[3], id)
return {'ok', 0}
"""

# KEYS: holders, waitlist, due. ARGV: id, now (ms), free (parallelism). Frees the holder and makes
# as many waitlisted messages due now as there are free slots (they are admitted when leased).
_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
local free = tonumber(ARGV[3]) - redis.call('ZCARD', KEYS[1])
local woken = 0
while free > 0 do
  local first = redis.call('ZPOPMIN', KEYS[2])
  if #first == 0 then break end
  if redis.call('ZADD', KEYS[3], 'XX', 'LT', 'CH', ARGV[2], first[1]) == 1 then
    free = free - 1
    woken = woken + 1
  end
end
return woken
"""


class RedisGate:
    """The gate in Redis (the local dispatcher): keys ``<queue prefix>:f:<digest of key>:r|p|w``
    (rate log, holders with their lease deadline, waitlist), under the queue's hash tag so one
    script touches one slot; each is given in ``KEYS``. A process that dies holding a slot frees it
    when its lease deadline passes (renewed with the delivery's lease)."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._admit = redis.register_script(_ADMIT)
        self._release = redis.register_script(_RELEASE)

    def keys(self, flow: FlowControl) -> tuple[str, str, str]:
        digest = hashlib.sha256(flow.key.encode()).hexdigest()[:24]
        base = f"{self.prefix}:f:{digest}"
        return f"{base}:r", f"{base}:p", f"{base}:w"

    def admit(
        self,
        flow: FlowControl,
        ident: str,
        *,
        now_ms: int,
        wall_ms: int,
        lease_ms: int,
        queue: tuple[str, str, str],
    ) -> Admission:
        """Admit the leased message ``ident`` or put it back in ``queue`` (due, leased, attempts) —
        due when the rate window frees, or waitlisted — without counting a delivery attempt."""
        rate_key, holders, waitlist = self.keys(flow)
        verdict, at = self._admit(
            keys=[rate_key, holders, waitlist, *queue],
            args=[
                ident,
                now_ms,
                wall_ms,
                lease_ms,
                flow.rate or 0,
                flow.period_s * 1000,
                flow.parallelism or 0,
            ],
        )
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        if verdict == "ok":
            return Admission(True)
        return Admission(False, float(at) / 1000 if verdict == "rate" else None)

    def release(self, flow: FlowControl, ident: str, *, now_ms: int, due_key: str) -> int:
        """Free ``ident``'s slot; the number of waitlisted messages made due now."""
        _, holders, waitlist = self.keys(flow)
        return int(
            self._release(keys=[holders, waitlist, due_key], args=[ident, now_ms, flow.parallelism or 0])
        )

    def renew(self, pipe: Any, flow: FlowControl, ident: str, deadline_ms: int) -> None:
        """Extend a held slot with its delivery's lease (on a pipeline the caller executes)."""
        if flow.parallelism:
            pipe.zadd(self.keys(flow)[1], {ident: deadline_ms}, xx=True)
