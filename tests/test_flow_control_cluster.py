"""Flow control on a real 3-master Redis Cluster: the local dispatcher's gate and the max_running
slots run there, and every one of their script calls touches one slot and only keys it declares in
``KEYS`` (watched with MONITOR on every node, as tests/test_cluster.py does for the engine's scripts)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator

import pytest
from cluster import RedisClusterProcess, redis_cluster
from test_cluster import KeyFinder, Monitor, script_calls
from test_flow_control_runtime import LIMITED, SINGLETON, TERMINAL, Tracker

from engine.actions import ActionRegistry
from engine.catalog import Catalog
from engine.dispatch import flow_control as gate_module
from engine.dispatch.inprocess import in_process_delivery
from engine.dispatch.local import LocalDispatcher
from engine.flow import slots as slots_module
from engine.runtime import Runtime
from engine.state.store import Store

HANG_GUARD_S = 60.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterProcess]:
    try:
        with redis_cluster(3) as c:
            yield c
    except LookupError as exc:
        pytest.skip(f"cannot run a Redis Cluster here: {exc}")


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def test_flow_control_scripts_touch_one_slot_and_declare_every_key(cluster: RedisClusterProcess) -> None:
    from redis.crc import key_slot

    cluster.flushall()
    client = cluster.client()
    monitors = [Monitor(n.port) for n in cluster.nodes]
    try:
        for m in monitors:
            assert m.ready.wait(5), "MONITOR did not start"
        tracker = Tracker(hold_s=0.02)
        registry = ActionRegistry()
        registry.register("t.work", tracker.work)
        registry.register("t.step", lambda ctx: 1)
        dispatcher = LocalDispatcher(client, workers=4, jitter=False, poll_interval_s=0.1)
        runtime = Runtime(
            Store(client), dispatcher, Catalog.from_texts([SINGLETON, LIMITED]), actions=registry
        )
        dispatcher.deliver = in_process_delivery(runtime)
        ids = [runtime.start("singleton", {"account": f"acct-{i % 3}", "n": i}, f"s-{i}") for i in range(9)]
        ids += [runtime.start("limited", {"tenant": f"t{i % 2}"}, f"l-{i}") for i in range(4)]
        assert dispatcher.run_until(
            lambda: all(runtime.record(e)["status"] in TERMINAL for e in ids), timeout_s=HANG_GUARD_S
        )
        assert {runtime.record(e)["status"] for e in ids} == {"succeeded"}
        assert tracker.peak == {"acct-0": 1, "acct-1": 1, "acct-2": 1}
        runtime.recover(older_than_s=0)
        marker = uuid.uuid4().hex
        for n in cluster.nodes:
            c = n.client()
            c.echo(marker)
            c.close()
        deadline = time.monotonic() + 10
        while not all(m.sees(marker) for m in monitors):
            assert time.monotonic() < deadline, "MONITOR streams did not catch up"
            time.sleep(0.02)
    finally:
        for m in monitors:
            m.close()
        client.close()

    ours = {
        sha(gate_module._ADMIT): "gate admit",
        sha(gate_module._RELEASE): "gate release",
        sha(slots_module._ADMIT): "slots admit",
        sha(slots_module._RELEASE): "slots release",
        sha(slots_module._PLACEHOLDER): "placeholder",
        sha(slots_module._CANCEL_QUEUED): "cancel queued",
    }
    seen: dict[str, int] = {}
    problems = []
    keys_of = KeyFinder(cluster.nodes[0].port)
    for m in monitors:
        for call, inner in script_calls(m.lines):
            name = ours.get(call[1]) if call[0].upper() == "EVALSHA" else ours.get(sha(call[1]))
            if name is None:
                continue
            seen[name] = seen.get(name, 0) + 1
            declared = call[3 : 3 + int(call[2])]
            touched = [k for args in inner for k in keys_of(args)]
            if len({key_slot(k.encode()) for k in declared + touched}) != 1:
                problems.append((name, "slots", sorted(set(declared + touched))))
            if set(touched) - set(declared):
                problems.append((name, "undeclared", sorted(set(touched) - set(declared))))
    keys_of.close()
    assert problems == []
    assert {"gate admit", "gate release", "slots admit", "slots release", "placeholder"} <= set(seen)
