"""``max_running``: at most N running executions per flow-control key; the others wait, in start order.

One group per (workflow, rendered key), all its keys under the hash tag ``{fx:<digest>}`` (one slot,
every key in ``KEYS``):

================= ====== ==========================================================================
``…:run``          zset   the executions holding a slot (score: when admitted, real time)
``…:q``            zset   the executions waiting (score: a counter: start order)
``…:in``           hash   execution id → ``{g, i, p}`` (graph hash, input, parent): what starts it later
``…:n``            string the counter
================= ====== ==========================================================================

``hf:fx:groups`` (a set, its own slot) names every group, for ``recover``.

A start joins the queue and then, in the same script, the queue's head is admitted while slots are
free — so a start that finds a free slot and an empty queue runs at once, and one behind others
waits its turn (FIFO). A queued execution exists at once with status ``queued`` (a placeholder
header: ``status``/``list``/``cancel`` know it); when admitted, ``start.lua`` replaces the
placeholder by the real header in one script (it treats a ``queued`` header as absent), so the
execution is never unknown in between. Every terminal state frees the slot (``Runtime.finished``
→ :func:`finished`), cancel of a queued execution takes it out of the queue, and :func:`sweep`
(``recover``) frees the slots of holders that ended or never got created and finishes promotions a
crash interrupted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from dsl.flow_control import default_key
from dsl.graph import Graph
from engine.flow.keys import HEADER_FIELD, render_key, rendered, start_scope, uses_flow_control
from engine.model import Message, Outgoing
from engine.state import index

log = logging.getLogger("hopflow.flow")

QUEUED = "queued"
GROUP_FIELD = "fx"  # the header field naming the execution's group
TERMINAL = frozenset({"succeeded", "failed", "compensated", "cancelled", "dead"})

# KEYS: run, q, in, n. ARGV: eid ("" to only promote), limit, now, payload ("" for none).
# → {state of eid ("admitted" | "queued" | ""), promoted eid, payload, promoted eid, payload, …}
_ADMIT = """
local eid, limit, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local state = ''
if eid ~= '' then
  if redis.call('ZSCORE', KEYS[1], eid) then return {'admitted'} end
  if redis.call('ZSCORE', KEYS[2], eid) then return {'queued'} end
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), eid)
  redis.call('HSET', KEYS[3], eid, ARGV[4])
  state = 'queued'
end
local out = {state}
while redis.call('ZCARD', KEYS[1]) < limit do
  local head = redis.call('ZPOPMIN', KEYS[2])
  if #head == 0 then break end
  redis.call('ZADD', KEYS[1], now, head[1])
  if head[1] == eid then
    out[1] = 'admitted'
    redis.call('HDEL', KEYS[3], eid)  -- the caller starts it now
  else
    table.insert(out, head[1])
    table.insert(out, redis.call('HGET', KEYS[3], head[1]) or '')
  end
end
return out
"""

# KEYS: run, q, in. ARGV: eid. Frees a slot or a place in the queue; promotion is a separate _ADMIT.
_RELEASE = """
local a = redis.call('ZREM', KEYS[1], ARGV[1])
local b = redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return a + b
"""

# KEYS: header. ARGV: field, value, … Cancel a placeholder that is still queued (atomically: a start
# that got its slot meanwhile must not have its status overwritten).
_CANCEL_QUEUED = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: header. A queued placeholder; nothing if the execution exists.
_PLACEHOLDER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


def limit_of(graph: Graph) -> int:
    flow = graph.flow_control
    return int(flow.get("max_running") or 0) if flow else 0


class Slots:
    """The ``max_running`` bookkeeping of one store (Redis client + namespace prefix)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        client = store.client
        self._admit = client.register_script(_ADMIT)
        self._release = client.register_script(_RELEASE)
        self._placeholder = client.register_script(_PLACEHOLDER)
        self._cancel_queued = client.register_script(_CANCEL_QUEUED)
        self.groups_key = f"{store.prefix}hf:fx:groups"

    def group(self, graph: Graph, execution_id: str, input: Any, now: float) -> str:
        """The group id (a digest of workflow and rendered key; the key may hold anything)."""
        flow = graph.flow_control or {}
        key = render_key(
            flow.get("key"),
            default_key(graph.name),
            start_scope(graph, execution_id, input, now),
            "/flow_control/key",
        )
        return hashlib.sha256(f"{graph.name}\0{key}".encode()).hexdigest()[:24]

    def keys(self, group: str) -> list[str]:
        base = f"{self.store.prefix}hf:{{fx:{group}}}:"
        return [base + "run", base + "q", base + "in", base + "n"]

    def admit(
        self, group: str, limit: int, execution_id: str, payload: dict[str, Any] | None
    ) -> tuple[str, list[tuple[str, dict[str, Any] | None]]]:
        """(state of ``execution_id``, the queued executions admitted now with their payloads)."""
        self.store.client.sadd(self.groups_key, group)
        raw = self._admit(
            keys=self.keys(group),
            args=[execution_id, limit, repr(time.time()), json.dumps(payload) if payload is not None else ""],
        )
        state = _text(raw[0])
        promoted = []
        for i in range(1, len(raw), 2):
            body = _text(raw[i + 1])
            promoted.append((_text(raw[i]), json.loads(body) if body else None))
        return state, promoted

    def release(self, group: str, execution_id: str) -> int:
        return int(self._release(keys=self.keys(group)[:3], args=[execution_id]))

    def holders(self, group: str) -> list[str]:
        return [_text(x) for x in self.store.client.zrange(self.keys(group)[0], 0, -1)]

    def holders_since(self, group: str) -> list[tuple[str, float]]:
        raw = self.store.client.zrange(self.keys(group)[0], 0, -1, withscores=True)
        return [(_text(x), float(s)) for x, s in raw]

    def queued(self, group: str) -> list[str]:
        return [_text(x) for x in self.store.client.zrange(self.keys(group)[1], 0, -1)]

    def queued_all(self) -> list[str]:
        """Every queued execution of every group (inspection, tests)."""
        return [eid for group in self.groups() for eid in self.queued(group)]

    def payload(self, group: str, execution_id: str) -> dict[str, Any] | None:
        raw = self.store.client.hget(self.keys(group)[2], execution_id)
        return json.loads(raw) if raw else None

    def forget_payload(self, group: str, execution_id: str) -> None:
        self.store.client.hdel(self.keys(group)[2], execution_id)

    def prune(self, group: str) -> None:
        """Forget an empty group (keys per tenant would otherwise pile up in the registry). A start
        that raced in is seen by the re-check and the group named again."""
        client = self.store.client
        client.srem(self.groups_key, group)
        run, queue = self.keys(group)[:2]
        if client.zcard(run) or client.zcard(queue):
            client.sadd(self.groups_key, group)

    def groups(self) -> list[str]:
        return sorted(_text(g) for g in self.store.client.smembers(self.groups_key))

    def placeholder(self, execution_id: str, fields: dict[str, Any]) -> None:
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v]
        self._placeholder(keys=[self.store.header_key(execution_id)], args=flat)

    def cancel_placeholder(self, execution_id: str, fields: dict[str, Any]) -> bool:
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v]
        return bool(self._cancel_queued(keys=[self.store.header_key(execution_id)], args=flat))


# ------------------------------------------------------------------------------ runtime hooks


def _slots(runtime: Any) -> Slots:
    slots = getattr(runtime, "_flow_slots", None)
    if slots is None:
        slots = runtime._flow_slots = Slots(runtime.store)
    return slots


def on_start(
    runtime: Any, graph: Graph, execution_id: str, input: Any, parent: dict[str, Any] | None, now: float
) -> dict[str, Any] | None:
    """Before an execution is created: the header fields flow control adds (``fc``, ``fx``), or
    None when it must wait for a slot (it is then recorded ``queued``; the caller returns its id)."""
    if not uses_flow_control(graph):
        return {}
    fields: dict[str, Any] = {}
    record = rendered(graph, execution_id, input, now, runtime.store.prefix)
    if record:
        fields[HEADER_FIELD] = json.dumps(record, separators=(",", ":"))
        resolver = getattr(runtime.dispatcher, "flow", None)
        if hasattr(resolver, "remember"):
            resolver.remember(execution_id, record)
    limit = limit_of(graph)
    if not limit:
        return fields
    slots = _slots(runtime)
    group = slots.group(graph, execution_id, input, now)
    fields[GROUP_FIELD] = group
    status = runtime.store.client.hget(runtime.store.header_key(execution_id), "status")
    if status is not None and _text(status) != QUEUED:
        return fields  # a repeated start of an execution that exists: it holds (or held) its slot
    payload = {"g": graph.hash, "i": input, "p": parent}
    state, promoted = slots.admit(group, limit, execution_id, payload)
    _start_promoted(runtime, slots, group, promoted)
    if state == "admitted":
        return fields  # start.lua replaces a queued placeholder in the same script: never unknown
    runtime.store.put_graph(graph)
    real = time.time()
    header = {
        "workflow": graph.name,
        "graph": graph.hash,
        "status": QUEUED,
        "input": json.dumps(input),
        "created_at": now,
        "updated_at": now,
        "created_rt": real,
        "updated_rt": real,
        GROUP_FIELD: group,
    }
    if parent is not None:
        header["parent"] = json.dumps(parent)
    slots.placeholder(execution_id, header)
    index.put(
        runtime.store,
        execution_id,
        workflow=graph.name,
        graph=graph.hash,
        status=QUEUED,
        started=real,
        parent=parent["eid"] if parent else None,
    )
    return None


def _start_promoted(
    runtime: Any, slots: Slots, group: str, promoted: list[tuple[str, dict[str, Any] | None]]
) -> int:
    """Start executions that got a slot (they waited in the queue). A crash before one is started
    leaves it holding a slot with its payload kept: :func:`sweep` starts it."""
    started = 0
    for execution_id, payload in promoted:
        if payload is None:
            continue  # its record went (cancelled meanwhile): the sweep frees the slot
        try:
            graph = runtime.store.get_graph(payload["g"])
            runtime._create(graph, payload.get("i"), execution_id, payload.get("p"))
            slots.forget_payload(group, execution_id)
            started += 1
        except Exception as exc:  # the payload stays: recover's sweep retries
            log.warning("flow control: starting queued execution %s failed (%s)", execution_id, exc)
    return started


def finished(runtime: Any, execution_id: str) -> None:
    """An execution ended: free its slot and start whoever waits next. Never raises: a failure
    here leaves the slot to :func:`sweep` (``recover``), which sees the holder ended."""
    try:
        graph = runtime.store.get_graph(runtime.store.pinned_graph(execution_id) or "")
    except Exception:
        return
    limit = limit_of(graph)
    if not limit:
        return
    try:
        raw = runtime.store.client.hget(runtime.store.header_key(execution_id), GROUP_FIELD)
        if not raw:
            return
        group = _text(raw)
        slots = _slots(runtime)
        slots.release(group, execution_id)
        _, promoted = slots.admit(group, limit, "", None)
        _start_promoted(runtime, slots, group, promoted)
    except Exception as exc:
        log.warning("flow control: freeing the slot of %s failed (%s); recover frees it", execution_id, exc)


def cancel_queued(runtime: Any, execution_id: str) -> bool:
    """Cancel an execution still waiting for a slot: out of the queue, ``cancelled`` at once (it never
    ran, so nothing to compensate). False when it is not queued (the normal cancel applies)."""
    header = runtime.store.header(execution_id)
    if header.get("status") != QUEUED or not header.get(GROUP_FIELD):
        return False
    slots = _slots(runtime)
    now = runtime.clock.now()
    error = {"name": "cancelled", "message": "the execution was cancelled while queued"}
    fields = {
        "status": "cancelled",
        "error": json.dumps(error),
        "finished_at": now,
        "updated_at": now,
        "updated_rt": time.time(),
    }
    if not slots.cancel_placeholder(execution_id, fields):
        return False  # it got its slot and started meanwhile: the normal cancel stops it
    slots.release(header[GROUP_FIELD], execution_id)
    runtime.indexed(execution_id, "cancelled")
    parent = json.loads(header["parent"]) if header.get("parent") else None
    if parent:  # a parent waits for this child: its step goes on (it reads the child's cancellation)
        wake = Message(parent["eid"], parent["node"], int(parent["seq"]), parent.get("branch") or "")
        try:
            runtime.dispatcher.publish([Outgoing(wake)])
        except Exception as exc:  # recover re-wakes a parent whose child ended
            log.warning("flow control: waking the parent of %s failed (%s)", execution_id, exc)
    try:  # it may have held a slot for an instant (promoted while being cancelled): pass it on
        graph = runtime.store.get_graph(header.get("graph") or "")
        _, promoted = slots.admit(header[GROUP_FIELD], limit_of(graph), "", None)
        _start_promoted(runtime, slots, header[GROUP_FIELD], promoted)
    except Exception as exc:
        log.warning("flow control: promoting after a cancel failed (%s); recover retries", exc)
    return True


def sweep(runtime: Any, older_than_s: float = 60) -> int:
    """``recover``: free the slots of holders that ended (a crash between their last checkpoint and
    :func:`finished`) or were never created, start admitted executions a crash left unstarted, and
    admit from the queue while slots are free. Returns how many executions it started or freed."""
    slots = _slots(runtime)
    count = 0
    for group in slots.groups():
        limit = 0
        admitted = dict(slots.holders_since(group))
        for execution_id, since in admitted.items():
            header = runtime.store.header(execution_id)
            status = header.get("status")
            payload = slots.payload(group, execution_id)
            if header.get("graph"):
                try:
                    limit = max(limit, limit_of(runtime.store.get_graph(header["graph"])))
                except Exception:
                    pass
            young = time.time() - since < older_than_s  # may be being created right now
            if status in TERMINAL or (status is None and payload is None and not young):
                slots.release(group, execution_id)
                count += 1
            elif status in (None, QUEUED) and payload is not None:
                count += _start_promoted(runtime, slots, group, [(execution_id, payload)])
            elif payload is not None:
                slots.forget_payload(group, execution_id)  # started; its payload was left behind
        waiting = slots.queued(group)
        if not admitted and not waiting:
            slots.prune(group)
            continue
        if waiting and not limit:
            payload = slots.payload(group, waiting[0])
            if payload is not None:
                try:
                    limit = limit_of(runtime.store.get_graph(payload["g"]))
                except Exception:
                    limit = 0
        if waiting and limit:
            _, promoted = slots.admit(group, limit, "", None)
            count += _start_promoted(runtime, slots, group, promoted)
    return count


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
