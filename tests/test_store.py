"""The Redis layer: scripts by SHA, key layout and hash tags, outbox ids, events, caps, clients."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from engine.catalog import Catalog
from engine.clock import VirtualClock
from engine.errors import InvalidExecutionId
from engine.model import Message
from engine.runtime import Runtime
from engine.state.store import Store, check_execution_id, event_base

WF = """
    name: mixed
    steps:
      - id: split
        parallel:
          branches:
            - steps:
                - id: loop
                  foreach:
                    items: "{{ [1, 2, 3] }}"
                    steps:
                      - id: body
                        set: {v: "{{ item }}"}
            - steps:
                - id: w
                  wait: {event: ping, key: k}
      - id: after
        set: {done: true}
"""


@pytest.fixture
def run_mixed(harness: Any) -> Any:
    h = harness(WF)
    eid = h.start("mixed")
    h.drain()
    h.runtime.notify("ping", "k", 1)
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    return h, eid


def test_every_execution_key_carries_the_hash_tag(run_mixed: Any, redis_db: Any) -> None:
    _h, eid = run_mixed
    keys = sorted(k.decode() for k in redis_db.keys("*"))
    tagged = [k for k in keys if k.startswith(f"hf:{{{eid}}}:")]
    others = [k for k in keys if k not in tagged]
    assert len(tagged) > 10
    shared = ("hf:graph:", "hf:ev:{", "hf:{idx}:")  # graphs, events, the listing index
    assert all(k.startswith(shared) or k == "hf:active" for k in others), others
    # one slot per execution: the hash tag is the only part Redis Cluster hashes
    from redis.crc import key_slot

    assert len({key_slot(k.encode()) for k in tagged}) == 1


def test_outbox_ids_are_the_message_dedup_ids(harness: Any, redis_db: Any) -> None:
    h = harness(WF)

    def keep(point: str, message: Any) -> None:
        if point == "after_publish":
            raise RuntimeError("stop before clearing")

    eid = h.start("mixed")
    h.runtime.faults = keep
    with pytest.raises(RuntimeError):
        h.runtime.advance(h.dispatcher.pop().message)  # the fan-out: two messages in the outbox
    entries = h.store.outbox(eid)
    assert len(entries) == 2
    for entry_id, outgoing, at in entries:
        assert entry_id == outgoing.dedup_id == outgoing.message.dedup_id
        assert at > 0
    assert {o.message.branch for _, o, _ in entries} == {"split/0", "split/1"}


def test_scripts_reload_after_script_flush(harness: Any, redis_db: Any) -> None:
    h = harness(WF)
    eid = h.start("mixed")
    redis_db.script_flush()
    h.drain()
    assert h.runtime.record(eid)["current"]


def test_a_decode_responses_client_works_too(redis_server: Any) -> None:
    import redis

    redis_server.flushdb()
    pool = redis_server.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": True}
    client = redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )
    from conftest import QueueDispatcher

    clock = VirtualClock()
    dispatcher = QueueDispatcher(clock)
    runtime = Runtime(Store(client), dispatcher, Catalog.from_texts([textwrap.dedent(WF)]), clock=clock)
    eid = runtime.start("mixed", {})
    dispatcher.drain(runtime)
    runtime.notify("ping", "k", {"x": 1})
    dispatcher.drain(runtime)
    record = runtime.record(eid)
    assert record["status"] == "succeeded"
    assert record["output"] == {"done": True}
    assert runtime.history(eid)[0]["event"] == "started"


def test_graph_is_stored_once_and_never_overwritten(store: Store, redis_db: Any) -> None:
    catalog = Catalog.from_texts([textwrap.dedent(WF)])
    graph = catalog.get("mixed")
    store.put_graph(graph)
    key = f"hf:graph:{graph.hash}"
    redis_db.set(key, redis_db.get(key))  # same bytes
    fresh = Store(redis_db)
    assert fresh.get_graph(graph.hash) == graph
    assert json.loads(redis_db.get(key))["name"] == "mixed"


def test_history_stream_is_capped(harness: Any, redis_db: Any) -> None:
    h = harness("""
        name: loop
        steps:
          - id: init
            set: {i: 0}
          - id: body
            set: {i: "{{ vars.i + 1 }}"}
          - id: again
            switch:
              - if: "{{ vars.i < 150 }}"
                goto: body
    """)
    h.store.history_max = 50
    eid = h.start("loop")
    h.drain()
    length = redis_db.xlen(f"hf:{{{eid}}}:x")
    assert 50 <= length < 200  # approximate trimming (MAXLEN ~) keeps it near the cap
    assert h.runtime.record(eid)["status"] == "succeeded"


def test_pending_events_fifo_expiry_and_release(store: Store) -> None:
    now = 1_000_000.0

    def ev(op: str, token: str = "t", **kw: Any) -> dict:
        return store.event("pay", "k", {"op": op, "token": token, "now": kw.pop("now", now), **kw})

    assert ev("notify", event=json.dumps({"data": "old"}), now=now - 8 * 86400)["kind"] == "pending"
    assert ev("notify", event=json.dumps({"data": 1}))["kind"] == "pending"
    assert ev("notify", event=json.dumps({"data": 2}))["kind"] == "pending"
    first = ev("claim", "w1", info="{}")
    assert json.loads(first["event"])["data"] == 1  # FIFO, and the 8-day-old event was dropped
    assert json.loads(ev("claim", "w1", info="{}")["event"])["data"] == 1  # same token: same claim
    ev("release", "w1")  # a cancelled wait gives its event back, at the front
    assert json.loads(ev("claim", "w2", info="{}")["event"])["data"] == 1
    assert json.loads(ev("claim", "w3", info="{}")["event"])["data"] == 2
    assert ev("claim", "w4", info=json.dumps({"eid": "e"}))["kind"] == "waiting"
    delivered = ev("notify", event=json.dumps({"data": 3}))
    assert delivered["kind"] == "delivered" and json.loads(delivered["infos"][0]) == {"eid": "e"}
    assert ev("check", "w4")["kind"] == "event"
    assert ev("check", "nobody")["kind"] == "none"
    assert event_base("pay", "k") != event_base("pay", "k2")


def test_execution_ids_are_checked() -> None:
    assert check_execution_id("order-42:a.b@c") == "order-42:a.b@c"
    for bad in ["", "has space", "{tag}", "-leading", "x" * 201, 42]:
        with pytest.raises(InvalidExecutionId):
            check_execution_id(bad)


def test_stale_message_of_a_foreign_node_is_acknowledged(harness: Any) -> None:
    h = harness(WF)
    eid = h.start("mixed")
    assert h.runtime.advance(Message(eid, "no_such_step", 1)).kind == "stale"
    assert h.runtime.advance(Message(eid, "split", 99)).kind == "stale"


def _nulls(value: Any, path: str = "") -> list[str]:
    if value is None:
        return [path or "<top>"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, f"{path}[{i}]")]
    return []


RAW_OUTPUT = """
name: raw-output
steps:
  - id: tricky
    action: t.tricky
  - id: after
    set: {done: true}
"""

NULLS_PARENT = """
    name: nulls
    input: {type: object}
    on_failure: compensate
    steps:
      - id: first
        action: t.ok
        compensate:
          action: t.flaky
          retry: {max_attempts: 3, interval: 1s, on: [action.TimeoutError]}
      - id: fan
        parallel:
          branches:
            - steps:
                - id: each
                  foreach:
                    items: "{{ [1, 2, 3] }}"
                    as: n
                    concurrency: 2
                    steps:
                      - id: body
                        set: {v: "{{ n }}"}
            - steps:
                - id: nap
                  wait: {for: 1s}
                - id: later
                  wait: {until: "{{ input.at }}"}
            - steps:
                - id: ev
                  wait: {event: ping, key: k, timeout: 1h}
      - id: kid
        workflow: {name: nulls-child}
      - id: flaky
        action: t.flaky
        retry: {max_attempts: 2, interval: 1s, on: [action.TimeoutError]}
      - id: boom
        fail: {error: boom, message: "the end"}
"""

NULLS_CHILD = """
    name: nulls-child
    steps:
      - id: inner
        parallel:
          branches:
            - steps:
                - {id: x, set: {v: 1}}
            - steps:
                - {id: y, fail: {error: child.broke}}
        catch:
          - errors: [child.broke]
            goto: done
      - id: done
        succeed: {output: ok}
"""


def test_script_payloads_carry_no_nulls_at_any_depth(harness: Any) -> None:
    """Lua's cjson decodes null into a truthy sentinel; ``Store.script`` only drops top-level
    ``None`` arguments, so every nested value the runtime builds must already be free of them —
    across fan-outs (both kinds), waits (for, until, event), child workflows, retries, a failed
    branch, catch and compensation."""
    import datetime as dt

    attempts: dict[str, int] = {}

    def flaky(ctx: Any) -> str:
        attempts[ctx.step] = attempts.get(ctx.step, 0) + 1
        if attempts[ctx.step] == 1:
            raise TimeoutError("first try")
        return "ok"

    h = harness(NULLS_PARENT, NULLS_CHILD, actions={"t.ok": lambda ctx: "ok", "t.flaky": flaky})
    found: list[tuple[str, list[str]]] = []
    original = h.store.script

    def checked(name: str, keys: Any, execution_base: str, args: dict[str, Any], raw: Any = ()) -> dict:
        nested = {k: v for k, v in args.items() if v is not None}
        if _nulls(nested):
            found.append((name, _nulls(nested)))
        return original(name, keys, execution_base, args, raw)

    h.store.script = checked  # type: ignore[method-assign]
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    eid = h.start("nulls", {"at": future.isoformat()})
    h.drain()
    h.runtime.notify("ping", "k", {"n": None})
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "compensated", record
    assert [t["step"] for t in record["trace"] if t["phase"] == "compensate"] == ["first", "first"]
    assert found == []


def test_step_outputs_reach_the_checkpoint_as_raw_arguments(harness: Any) -> None:
    """A step's output travels to checkpoint.lua as its own ARGV string (not escaped inside the JSON
    arguments), and is stored byte for byte — quotes, backslashes, non-ASCII and all."""
    tricky = {"q": 'say "hi"\\n', "u": "zürich ✓", "big": "x" * 20_000}
    h = harness(RAW_OUTPUT, actions={"t.tricky": lambda ctx: tricky})
    seen: list[tuple[dict[str, Any], list[str]]] = []
    original = h.store.script

    def spy(name: str, keys: Any, execution_base: str, args: dict[str, Any], raw: Any = ()) -> dict:
        if name == "checkpoint":
            seen.append((args, list(raw)))
        return original(name, keys, execution_base, args, raw)

    h.store.script = spy  # type: ignore[method-assign]
    eid = h.start("raw-output", {})
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    assert h.store.outputs(eid, ["tricky"]) == [tricky]
    args, raw = seen[0]
    assert "outputs" not in args and args["oraw"] == ["tricky"]
    assert [json.loads(r) for r in raw] == [tricky]
    assert "x" * 20_000 not in json.dumps(args)  # not inside the JSON payload
