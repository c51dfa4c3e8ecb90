"""Every command path on a real Redis Cluster chosen by ``REDIS_URL`` alone (issue 10, item 1).

A 3-master cluster with one replica per master (tests/cluster.py). ``REDIS_URL`` names *one* master
(``redis://127.0.0.1:PORT``): hopflow must notice it is a cluster node and use a cluster client, for
``hopflow run`` (a saga, a fan-out and a foreach, as subprocesses), the HTTP API with its webhook and
local dispatcher (the ASGI app builds its own runtime), ``hopflow recover`` and ``hopflow doctor``.
``redis+cluster://`` URLs work too. Last, a master fails over to its replica while executions run
(``CLUSTER FAILOVER`` on the replica of the master holding the local queue) and none is lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import RedisClusterProcess, redis_cluster

HANG_GUARD_S = 120  # only stops a broken run from hanging the suite; nothing is timed

ACTIONS = """
import engine


@engine.action("t.echo")
def echo(ctx, **kwargs):
    return {"args": kwargs}


@engine.action("t.boom")
def boom(ctx):
    raise RuntimeError("kaput")
"""

WORKFLOWS = {
    "saga.yaml": """
        name: saga
        steps:
          - id: one
            action: t.echo
            with: {n: 1}
            compensate: {action: t.echo, with: {undo: 1}}
          - id: two
            action: t.echo
            with: {n: 2}
            compensate: {action: t.echo, with: {undo: 2}}
          - id: three
            action: t.boom
    """,
    "fanout.yaml": """
        name: fanout
        steps:
          - id: fan
            parallel:
              branches:
                - steps:
                    - id: left
                      action: t.echo
                      with: {side: left}
                - steps:
                    - id: right
                      action: t.echo
                      with: {side: right}
          - id: done
            succeed: {output: "{{ steps.fan.output }}"}
    """,
    "each.yaml": """
        name: each
        input: {type: object, properties: {xs: {type: array}}}
        steps:
          - id: loop
            foreach:
              items: "{{ input.xs }}"
              as: x
              concurrency: 2
              steps:
                - id: double
                  set: {d: "{{ x * 2 }}"}
                  output: "{{ result.d }}"
          - id: done
            succeed: {output: "{{ steps.loop.output }}"}
    """,
    "slow.yaml": """
        name: slow
        steps:
          - id: a
            action: t.echo
          - id: nap
            wait: {for: 300ms}
          - id: b
            action: t.echo
          - id: nap2
            wait: {for: 300ms}
          - id: c
            action: t.echo
    """,
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterProcess]:
    try:
        with redis_cluster(3, replicas_per_master=1, node_timeout_ms=2000) as c:
            yield c
    except LookupError as exc:
        pytest.skip(f"cannot run a Redis Cluster here: {exc}")


@pytest.fixture(scope="module")
def actions_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One actions file for the module: in-process tests import it once (a second copy under
    another path would register the same action names twice)."""
    path = tmp_path_factory.mktemp("cluster-actions") / "cluster_acts.py"
    path.write_text(ACTIONS)
    return path


@pytest.fixture
def project(tmp_path: Path, cluster: RedisClusterProcess, actions_file: Path) -> Path:
    cluster.flushall()
    (tmp_path / "workflows").mkdir()
    for name, text in WORKFLOWS.items():
        (tmp_path / "workflows" / name).write_text(textwrap.dedent(text).strip() + "\n")
    (tmp_path / "acts.py").write_text(ACTIONS)  # for the subprocesses
    (tmp_path / "in_process_actions").write_text(str(actions_file))
    return tmp_path


def env_for(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_"))}
    env["REDIS_URL"] = url
    return env


def hopflow(*args: str, cwd: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd,
        env=env_for(url),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )


def keys_on_each_master(cluster: RedisClusterProcess) -> list[int]:
    return [int(n.client().dbsize()) for n in cluster.nodes if cluster.role(n) == "master"]


# ----------------------------------------------------------------------------------------- tests


def test_a_cluster_node_url_builds_a_cluster_client(cluster: RedisClusterProcess) -> None:
    from redis.cluster import RedisCluster

    from engine.state.redis_url import ConnectError, connect, describe

    client = connect(cluster.url(1))
    assert isinstance(client, RedisCluster)
    about = describe(client)
    assert about["mode"] == "cluster" and len(about["nodes"]) == 6
    seeds = ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes[:2])
    assert isinstance(connect(f"redis+cluster://{seeds}"), RedisCluster)
    with pytest.raises(ConnectError, match="only database 0"):
        connect(cluster.url(0) + "/3")
    client.close()


def test_hopflow_run_a_saga_a_fan_out_and_a_foreach_from_redis_url_alone(
    project: Path, cluster: RedisClusterProcess
) -> None:
    url = cluster.url(2)
    saga = hopflow("run", "workflows/saga.yaml", "--actions", "acts.py", "--json", cwd=project, url=url)
    assert saga.stdout, saga.stderr
    record = json.loads(saga.stdout)
    assert record["status"] == "compensated", saga.stderr
    undone = [t["step"] for t in record["trace"] if t["phase"] == "compensate"]
    assert undone == ["two", "one"], record["trace"]

    fan = hopflow("run", "workflows/fanout.yaml", "--actions", "acts.py", "--json", cwd=project, url=url)
    assert fan.returncode == 0, fan.stderr
    out = json.loads(fan.stdout)["output"]
    assert [o["args"]["side"] for o in out] == ["left", "right"]

    each = hopflow(
        "run", "workflows/each.yaml", "--input", '{"xs": [1, 2, 3, 4, 5]}', "--json", cwd=project, url=url
    )
    assert each.returncode == 0, each.stderr
    assert json.loads(each.stdout)["output"] == [2, 4, 6, 8, 10]
    assert not (project / ".hopflow").exists(), "the embedded Redis must not be started"
    # the executions (hash tags) and the local queue spread over the masters
    assert sum(1 for n in keys_on_each_master(cluster) if n) >= 2


def test_redis_cluster_url_scheme_and_doctor(project: Path, cluster: RedisClusterProcess) -> None:
    seeds = ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes)
    url = f"redis+cluster://{seeds}"
    fan = hopflow("run", "workflows/fanout.yaml", "--actions", "acts.py", "--json", cwd=project, url=url)
    assert fan.returncode == 0, fan.stderr
    for target in (url, cluster.url(0)):
        doctor = hopflow("doctor", cwd=project, url=target)
        assert "cluster" in doctor.stdout, doctor.stdout
        assert "Redis Cluster: 6 node(s)" in doctor.stdout, doctor.stdout
        assert f"127.0.0.1:{cluster.nodes[1].port}" in doctor.stdout


def test_recover_on_a_cluster_from_redis_url(project: Path, cluster: RedisClusterProcess) -> None:
    """An execution whose first message never reached the queue (a crash after its checkpoint) is
    re-driven by ``hopflow recover --drive`` against the cluster."""
    from engine.catalog import Catalog
    from engine.embedded import embedded_runtime
    from engine.state.redis_url import connect

    client = connect(cluster.url(0))
    runtime, dispatcher = embedded_runtime(
        Catalog.from_directory(project / "workflows"), redis=client, directory=project / ".unused"
    )

    def lost(outgoing: Any) -> None:
        raise RuntimeError("the process died before publishing")

    dispatcher.publish = lost  # type: ignore[method-assign]
    eids = []
    for i in range(3):
        try:
            runtime.start("fanout", {}, f"lost-{i}")
        except Exception:
            pass
        eids.append(f"lost-{i}")
    assert all(runtime.record(e)["status"] == "running" for e in eids)
    client.close()

    rec = hopflow(
        "recover", "--older-than", "0", "--drive", "--actions", "acts.py", "--workflows", "workflows",
        cwd=project, url=cluster.url(1),
    )  # fmt: skip
    assert rec.returncode == 0, rec.stderr
    assert "re-drove 3 execution(s)" in rec.stdout, rec.stdout
    status = hopflow("status", "lost-1", "--json", cwd=project, url=cluster.url(2))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "succeeded"


def test_the_asgi_app_builds_a_cluster_runtime_and_its_webhook_runs_executions(
    project: Path, cluster: RedisClusterProcess
) -> None:
    from starlette.testclient import TestClient

    from engine.asgi import create_app
    from engine.config import Config

    key = "c" * 40
    config = Config.from_env(
        {
            "REDIS_URL": cluster.url(1),
            "HOPFLOW_API_KEY": key,
            "HOPFLOW_ALLOWED_HOSTS": "testserver",  # the Host TestClient sends (the request guard)
            "HOPFLOW_WORKFLOWS": str(project / "workflows"),
            "HOPFLOW_ACTIONS": (project / "in_process_actions").read_text(),
        }
    )
    auth = {"Authorization": f"Bearer {key}"}
    app = create_app(config=config)
    with TestClient(app) as http:
        started = [
            http.post("/v1/executions", json={"workflow": w, "input": i}, headers=auth)
            for w, i in (("saga", {}), ("fanout", {}), ("each", {"xs": [1, 2, 3]}))
        ]
        assert all(r.status_code == 202 for r in started), [r.text for r in started]
        eids = [r.json()["execution_id"] for r in started]
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            records = [http.get(f"/v1/executions/{e}", headers=auth).json() for e in eids]
            if all(r["status"] not in ("running", "compensating") for r in records):
                break
            assert time.monotonic() < deadline, records
            time.sleep(0.05)
    assert [r["status"] for r in records] == ["compensated", "succeeded", "succeeded"]
    assert records[2]["output"] == [2, 4, 6]


def test_a_master_fails_over_to_its_replica_during_a_run_and_nothing_is_lost(
    project: Path, cluster: RedisClusterProcess
) -> None:
    """``CLUSTER FAILOVER`` (the manual, coordinated kind: the replica catches up first) on the
    replica of the master that holds the local queue, and of one holding executions, while twelve
    executions run through the local dispatcher. Every execution ends as it should."""
    from redis.crc import key_slot

    from engine.catalog import Catalog
    from engine.embedded import embedded_runtime
    from engine.state.redis_url import connect

    client = connect(cluster.url(0), decode_responses=False)
    runtime, dispatcher = embedded_runtime(
        Catalog.from_directory(project / "workflows"),
        actions=(project / "in_process_actions").read_text(),
        redis=client,
        directory=project / ".unused",
    )
    queue_slot = key_slot(b"{q}")
    queue_master = client.get_node_from_key("{q}").port
    eids = [runtime.start("slow" if i % 2 else "fanout", {}, f"fo-{i}") for i in range(12)]
    stop = threading.Event()
    loop = threading.Thread(target=dispatcher.run_forever, args=(stop,), daemon=True)
    loop.start()
    try:
        time.sleep(0.3)  # mid-run: some executions are in their waits
        running = [e for e in eids if runtime.record(e)["status"] == "running"]
        assert running, "the failover must happen while executions run"
        replica = next(r for r in cluster.replicas if cluster.master_of(r) == queue_master)
        replica.client().execute_command("CLUSTER", "FAILOVER")
        deadline = time.monotonic() + 30
        while cluster.role(replica) != "master":
            assert time.monotonic() < deadline, "the replica did not take over"
            time.sleep(0.05)
        deadline = time.monotonic() + HANG_GUARD_S
        while any(runtime.record(e)["status"] == "running" for e in eids):
            assert time.monotonic() < deadline, [runtime.record(e)["status"] for e in eids]
            time.sleep(0.05)
    finally:
        stop.set()
        dispatcher.wake()
        loop.join(30)
    assert [runtime.record(e)["status"] for e in eids] == ["succeeded"] * 12
    assert client.get_node_from_key("{q}").port == replica.port, "the client follows the new master"
    assert key_slot(b"{q}") == queue_slot
    client.close()
