"""A master of a real Redis Cluster fails over while sagas, fan-outs and foreach loops run (issue 10).

Each test builds its own cluster of 3 masters + 3 replicas on 127.0.0.1 (tests/cluster.py, a short
``cluster-node-timeout`` so an unplanned failover takes about 1 to 3 s), points an in-process runtime and its
local dispatcher at it from ``REDIS_URL`` of one node (``engine.state.redis_url.connect``), starts a mix
of executions that straddle the failover (timed waits between steps), and then fails over the
master that holds the local queue (``hf:{q}``) — the busiest one:

* ``CLUSTER FAILOVER`` on its replica (planned: the replica catches up first, then takes over);
* ``SIGKILL`` of the master process (unplanned: the others notice after the node timeout and
  promote its replica; the client meets connection errors, then ``MOVED``/a new slot map).

The oracle: every execution ends with the status and output its workflow implies; every action's
effect (counted by ``ctx.idempotency_key``) happened — none lost, none extra; no message was dead
lettered; and exactly the executions that were started exist (none doubled). On the planned
failover each effect ran exactly once. On the unplanned one a step may run again (its checkpoint
failed while the master was gone, so the delivery is retried: at-least-once, the same idempotency key
each time — docs/reliability.md, "Failover"); the number of such repeats is bounded by the steps that
were in flight, and is printed.

No timing is asserted; the deadlines only keep a broken run from hanging the suite.
"""

from __future__ import annotations

import collections
import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import ClusterNode, RedisClusterProcess, redis_cluster

import engine

HANG_GUARD_S = 60
EFFECTS: collections.Counter[str] = collections.Counter()
_effects_lock = threading.Lock()


@engine.action("failover.effect")
def _effect(ctx: Any, **kwargs: Any) -> dict[str, Any]:
    with _effects_lock:
        EFFECTS[ctx.idempotency_key] += 1
    return dict(kwargs)


@engine.action("failover.boom")
def _boom(ctx: Any) -> None:
    raise RuntimeError("kaput")


WORKFLOWS = {
    "fo-saga.yaml": """
        name: fo-saga
        steps:
          - id: one
            action: failover.effect
            with: {n: 1}
            compensate: {action: failover.effect, with: {undo: 1}}
          - id: nap
            wait: {for: 250ms}
          - id: two
            action: failover.effect
            with: {n: 2}
            compensate: {action: failover.effect, with: {undo: 2}}
          - id: nap2
            wait: {for: 250ms}
          - id: three
            action: failover.boom
    """,
    "fo-fanout.yaml": """
        name: fo-fanout
        steps:
          - id: fan
            parallel:
              branches:
                - steps:
                    - id: left
                      action: failover.effect
                      with: {side: left}
                    - id: lnap
                      wait: {for: 300ms}
                    - id: left2
                      action: failover.effect
                      with: {side: left2}
                - steps:
                    - id: rnap
                      wait: {for: 200ms}
                    - id: right
                      action: failover.effect
                      with: {side: right}
          - id: done
            succeed: {output: "{{ steps.fan.output }}"}
    """,
    "fo-each.yaml": """
        name: fo-each
        input: {type: object, properties: {xs: {type: array}}}
        steps:
          - id: loop
            foreach:
              items: "{{ input.xs }}"
              as: x
              concurrency: 2
              steps:
                - id: touch
                  action: failover.effect
                  with: {x: "{{ x }}"}
                - id: pause
                  wait: {for: 150ms}
                - id: double
                  set: {d: "{{ x * 2 }}"}
                  output: "{{ result.d }}"
          - id: done
            succeed: {output: "{{ steps.loop.output }}"}
    """,
}

XS = [1, 2, 3, 4]
PER_KIND = 5  # executions of each workflow


def expected_effects(eid: str, kind: str) -> set[str]:
    """The idempotency keys of every action effect an execution of ``kind`` must produce."""
    if kind == "fo-saga":
        return {f"{eid}:one", f"{eid}:two", f"{eid}:two:compensate", f"{eid}:one:compensate"}
    if kind == "fo-fanout":
        return {f"{eid}:{p}" for p in ("fan/0/left", "fan/0/left2", "fan/1/right")}
    return {f"{eid}:loop/{i}/touch" for i in range(len(XS))}


@pytest.fixture
def cluster() -> Iterator[RedisClusterProcess]:
    try:
        with redis_cluster(3, replicas_per_master=1, node_timeout_ms=1000) as c:
            yield c
    except LookupError as exc:
        pytest.skip(f"cannot run a Redis Cluster here: {exc}")


@pytest.fixture
def workflows(tmp_path: Path) -> Path:
    for name, text in WORKFLOWS.items():
        (tmp_path / name).write_text(textwrap.dedent(text).strip() + "\n")
    return tmp_path


def run_through_a_failover(
    cluster: RedisClusterProcess, workflows: Path, tmp_path: Path, fail_over: Any
) -> tuple[dict[str, str], dict[str, dict[str, Any]], Any, Any]:
    """Start the executions, let them get going, call ``fail_over(queue_master_node)``, drive
    everything to its end; returns (kind by id, final records, the runtime's client, the dispatcher)."""
    from engine.catalog import Catalog
    from engine.embedded import embedded_runtime
    from engine.state.redis_url import connect

    EFFECTS.clear()
    client = connect(cluster.url(1), decode_responses=False)  # REDIS_URL of one node: a cluster
    runtime, dispatcher = embedded_runtime(
        Catalog.from_directory(workflows), redis=client, directory=tmp_path / ".unused"
    )
    # A lease lost with the dead master comes back after lease_s; 60 s in production, 3 s here.
    dispatcher.lease_ms = 3000
    queue_port = client.get_node_from_key("{q}").port
    queue_master = next(n for n in cluster.nodes if n.port == queue_port)
    kinds: dict[str, str] = {}
    for i in range(PER_KIND):
        for kind in ("fo-saga", "fo-fanout", "fo-each"):
            eid = f"{kind}-{i}"
            runtime.start(kind, {"xs": XS} if kind == "fo-each" else {}, eid)
            kinds[eid] = kind
    stop = threading.Event()
    loop = threading.Thread(target=dispatcher.run_forever, args=(stop,), daemon=True)
    loop.start()
    try:
        time.sleep(0.2)  # mid-run: executions are between their waits
        running = [e for e in kinds if runtime.record(e)["status"] in ("running", "compensating")]
        assert running, "the failover must happen while executions run"
        fail_over(queue_master)
        deadline = time.monotonic() + HANG_GUARD_S
        records: dict[str, dict[str, Any]] = {}
        while True:
            try:
                records = {e: runtime.record(e) for e in kinds}
            except Exception:  # a read during the failover window: ask again
                time.sleep(0.1)
                continue
            if all(r["status"] not in ("running", "compensating") for r in records.values()):
                break
            assert time.monotonic() < deadline, {e: r["status"] for e, r in records.items()}
            time.sleep(0.1)
    finally:
        stop.set()
        dispatcher.wake()
        loop.join(30)
    return kinds, records, client, dispatcher


def check_outcome(
    cluster: RedisClusterProcess,
    kinds: dict[str, str],
    records: dict[str, dict[str, Any]],
    client: Any,
    dispatcher: Any,
) -> dict[str, int]:
    """The oracle shared by both tests; returns the effects that ran more than once."""
    for eid, kind in kinds.items():
        record = records[eid]
        if kind == "fo-saga":
            assert record["status"] == "compensated", (eid, record)
        elif kind == "fo-fanout":
            assert record["status"] == "succeeded", (eid, record)
            assert [o["side"] for o in record["output"]] == ["left2", "right"], (eid, record["output"])
        else:
            assert record["status"] == "succeeded", (eid, record)
            assert record["output"] == [2 * x for x in XS], (eid, record["output"])
    wanted = set().union(*(expected_effects(e, k) for e, k in kinds.items()))
    assert set(EFFECTS) == wanted, {"missing": wanted - set(EFFECTS), "extra": set(EFFECTS) - wanted}
    assert dispatcher.stats.dead == 0 and client.llen(dispatcher.key_dead) == 0
    headers = set()
    for node in cluster.all_nodes():
        if node.process.poll() is None and cluster.role(node) == "master":
            headers |= {k for k in node.client().scan_iter(match="hf:{*}:h", count=1000)}
    assert headers == {f"hf:{{{e}}}:h" for e in kinds}, "exactly the executions started, none doubled"
    return {key: n for key, n in EFFECTS.items() if n > 1}


def wait_for_master(cluster: RedisClusterProcess, node: ClusterNode) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        try:
            if cluster.role(node) == "master":
                return
        except Exception:
            pass
        assert time.monotonic() < deadline, f"replica {node.port} was not promoted"
        time.sleep(0.05)


def replica_of(cluster: RedisClusterProcess, master: ClusterNode) -> ClusterNode:
    return next(r for r in cluster.replicas if cluster.master_of(r) == master.port)


def test_planned_failover_of_the_queue_master_loses_and_repeats_nothing(
    cluster: RedisClusterProcess, workflows: Path, tmp_path: Path
) -> None:
    promoted: list[ClusterNode] = []

    def fail_over(master: ClusterNode) -> None:
        replica = replica_of(cluster, master)
        replica.client().execute_command("CLUSTER", "FAILOVER")
        wait_for_master(cluster, replica)
        promoted.append(replica)

    kinds, records, client, dispatcher = run_through_a_failover(cluster, workflows, tmp_path, fail_over)
    repeats = check_outcome(cluster, kinds, records, client, dispatcher)
    assert repeats == {}, "a coordinated failover loses no write, so no step runs twice"
    assert client.get_node_from_key("{q}").port == promoted[0].port, "the client follows the new master"
    client.close()


def test_the_queue_master_killed_mid_run_its_replica_takes_over_and_nothing_is_lost(
    cluster: RedisClusterProcess, workflows: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    promoted: list[ClusterNode] = []

    def fail_over(master: ClusterNode) -> None:
        replica = replica_of(cluster, master)
        os.kill(master.process.pid, signal.SIGKILL)
        master.process.wait(10)
        wait_for_master(cluster, replica)
        promoted.append(replica)

    kinds, records, client, dispatcher = run_through_a_failover(cluster, workflows, tmp_path, fail_over)
    repeats = check_outcome(cluster, kinds, records, client, dispatcher)
    assert dispatcher.stats.errors, "the dispatcher must have met the dead master (else nothing was tested)"
    in_flight_bound = dispatcher.workers * 2  # steps delivered or checkpointing when the master died
    assert sum(n - 1 for n in repeats.values()) <= in_flight_bound, repeats
    with capsys.disabled():
        print(
            f"\n  unplanned failover: {len(repeats)} step(s) ran again (at least once): {sorted(repeats)};"
            f" errors met on the way: {dispatcher.stats.errors}, retried {dispatcher.stats.retried},"
            f" leases taken back {dispatcher.stats.reclaimed}"
        )
    assert client.get_node_from_key("{q}").port == promoted[0].port, "the client follows the new master"
    client.close()
