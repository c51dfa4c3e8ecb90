"""The operations routes: GET /v1/executions, GET /v1/counts and GET /metrics, in-process on a real
Redis and the real runtime (the listing's own logic is in tests/test_index.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_asgi import API_KEY, AUTH, TestClient, assert_problem, config

from engine.asgi import create_app

METRICS_KEY = "m" * 40

SAGA = """
name: saga
steps:
  - id: book
    action: t.ok
    compensate:
      action: t.ok
  - id: flaky
    action: t.flaky
    retry: {max_attempts: 2, interval: 1s, on: [action.RuntimeError]}
"""

OK = """
name: ok
steps:
  - id: a
    action: t.ok
  - id: b
    set: {x: 1}
"""


def boom(*_a: Any, **_k: Any) -> None:
    raise RuntimeError("always")


@pytest.fixture
def ops(harness: Any) -> Iterator[tuple[Any, TestClient]]:
    h = harness(SAGA, OK, actions={"t.ok": lambda *a, **k: 1, "t.flaky": boom})
    app = create_app(h.runtime, config=config(metrics=True, metrics_key=METRICS_KEY))
    with TestClient(app) as client:
        yield h, client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_listing_and_counts_over_http(ops: Any) -> None:
    h, client = ops
    for i in range(3):
        h.start("ok", {}, f"ok{i}")
    h.start("saga", {}, "s1")
    h.drain()
    r = client.get("/v1/executions", headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [e["execution_id"] for e in body["executions"]] == ["s1", "ok2", "ok1", "ok0"]
    assert body["next_cursor"] is None
    assert set(body["executions"][0]) == {
        "execution_id",
        "workflow",
        "graph",
        "status",
        "started_at",
        "updated_at",
        "parent",
    }
    r = client.get("/v1/executions?status=compensated", headers=AUTH)
    assert [e["execution_id"] for e in r.json()["executions"]] == ["s1"]
    r = client.get("/v1/executions", params={"workflow": "ok", "limit": 2}, headers=AUTH)
    first = r.json()
    assert [e["execution_id"] for e in first["executions"]] == ["ok2", "ok1"]
    r = client.get(
        "/v1/executions", params={"workflow": "ok", "limit": 2, "cursor": first["next_cursor"]}, headers=AUTH
    )
    assert [e["execution_id"] for e in r.json()["executions"]] == ["ok0"]
    r = client.get("/v1/counts", headers=AUTH)
    assert r.json() == {
        "status": {"succeeded": 3, "compensated": 1},
        "workflow": {"ok": {"succeeded": 3}, "saga": {"compensated": 1}},
    }


@pytest.mark.parametrize(
    "query", ["limit=201", "limit=0", "status=sleeping", "cursor=zzz", "started_after=soon", "colour=red"]
)
def test_bad_listing_requests_are_400_problems(ops: Any, query: str) -> None:
    _h, client = ops
    assert_problem(client.get(f"/v1/executions?{query}", headers=AUTH), 400, "bad-request")


def test_listing_needs_the_key(ops: Any) -> None:
    _h, client = ops
    assert_problem(client.get("/v1/executions"), 401)
    assert_problem(client.get("/v1/counts", headers={"Authorization": "Bearer nope"}), 401)
    # the metrics key reads metrics, nothing else
    assert_problem(client.get("/v1/executions", headers={"Authorization": f"Bearer {METRICS_KEY}"}), 401)


def test_metrics_count_what_ran(ops: Any) -> None:
    h, client = ops
    h.start("ok", {}, "m1")
    h.start("saga", {}, "m2")
    h.drain()
    assert_problem(client.get("/metrics"), 401)
    r = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)
    assert client.get("/metrics", headers=AUTH).status_code == 200  # the API key reads them too

    def v(name: str, **labels: str) -> float:
        return got.get((name, tuple(sorted(labels.items()))), 0.0)

    assert v("hopflow_nodes_total", workflow="ok", kind="action", outcome="ok") == 1
    assert v("hopflow_nodes_total", workflow="ok", kind="set", outcome="ok") == 1
    assert v("hopflow_nodes_total", workflow="saga", kind="action", outcome="retry") == 1
    assert v("hopflow_nodes_total", workflow="saga", kind="action", outcome="error") == 1
    assert v("hopflow_retries_total", workflow="saga", kind="action") == 1
    assert v("hopflow_compensations_total", workflow="saga", outcome="ok") == 1
    assert v("hopflow_executions_finished_total", workflow="ok", status="succeeded") == 1
    assert v("hopflow_executions_finished_total", workflow="saga", status="compensated") == 1
    assert v("hopflow_step_seconds_count", workflow="ok", kind="action") == 1
    # ok: 2 nodes; saga: book, flaky, flaky again, the compensation, the end of the unwinding
    assert v("hopflow_deliveries_total", result="advanced") == 7
    assert v("hopflow_redis_round_trips_per_node_count", kind="action") >= 4
    assert v("hopflow_redis_round_trips_per_node_sum", kind="action") >= 2 * 4  # begin + checkpoint
    assert v("hopflow_publishes_total", dispatcher="queuedispatcher", result="ok") >= 7


def test_metrics_start_at_the_first_scrape_when_not_switched_on(harness: Any) -> None:
    h = harness(OK, actions={"t.ok": lambda *a, **k: 1})
    app = create_app(h.runtime, config=config())
    h.start("ok", {}, "before")
    h.drain()
    assert not h.runtime.observers  # nothing collects, nothing imported for it
    with TestClient(app) as client:
        got = samples(client.get("/metrics", headers=AUTH).text)
        assert got.get(("hopflow_deliveries_total", (("result", "advanced"),)), 0) == 0
        h.start("ok", {}, "after")
        h.drain()
        got = samples(client.get("/metrics", headers=AUTH).text)
        assert got[("hopflow_deliveries_total", (("result", "advanced"),))] == 2
    assert API_KEY  # the fixtures' key


def test_local_queue_depth_is_a_gauge(tmp_path: Any, redis_db: Any) -> None:
    from engine.catalog import Catalog
    from engine.dispatch.local import LocalDispatcher
    from engine.observe.metrics import enable
    from engine.runtime import Runtime
    from engine.state.store import Store

    dispatcher = LocalDispatcher(redis_db)
    runtime = Runtime(Store(redis_db), dispatcher, Catalog.from_texts([OK]))
    metrics = enable(runtime)
    runtime.start("ok", {}, "q1")
    got = samples(metrics.render()[0].decode())
    assert got[("hopflow_local_queue_depth", ())] == 1


def test_the_http_record_says_where_each_branch_is(harness: Any) -> None:
    wait = "name: waiter\nsteps:\n  - id: pay\n    wait: {event: paid, key: '{{ input.k }}'}\n"
    h = harness(wait)
    app = create_app(h.runtime, config=config())
    with TestClient(app) as client:
        h.start("waiter", {"k": "A1"}, "w1")
        h.drain()
        record = client.get("/v1/executions/w1", headers=AUTH).json()
    (where,) = record["where"]
    assert where["node"] == "pay" and where["kind"] == "wait" and where["state"] == "waiting"
    assert where["waiting_for"] == {"event": "paid", "key": "A1"}
    assert where["text"] == "step 'pay' (wait): waiting for event 'paid' with key 'A1' (no timeout)"


def test_prometheus_client_is_not_imported_until_metrics_are_used() -> None:
    import subprocess
    import sys

    code = (
        "import sys, engine.asgi, engine.web.app, engine.runtime, engine.interpreter, engine.commands.serve; "
        "print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_an_early_qstash_delivery_counts_as_deferred(harness: Any) -> None:
    """A wait's wake-up arrives an hour early (a replay, a relay hop): the checkpoint's stored wake-up
    time defers it (whatever its headers say), and the metric counts it as deferred."""
    import time

    from test_asgi import PUBLIC

    from engine.devtools.qstash_dev.server import start_dev_server
    from engine.dispatch.qstash import QStashDispatcher
    from engine.signing import sign_qstash

    h = harness("name: nap\nsteps:\n  - {id: nap, wait: {for: 2h}}\n  - {id: after, set: {x: 1}}\n")
    h.start("nap", {}, "early")
    h.runtime.advance(h.dispatcher.pop().message)  # the wait parks; its wake-up is 2 h away
    wake = h.dispatcher.queue[0][2].message  # peeked, not popped: the clock stays 2 h before it
    with start_dev_server() as dev:
        h.runtime.dispatcher = QStashDispatcher(dev.token, dev.url, PUBLIC + "/v1/step")
        cfg = config(qstash_current_signing_key=dev.current_signing_key, metrics=True)
        frozen = time.time()
        with TestClient(create_app(h.runtime, config=cfg, now=lambda: frozen)) as client:
            body = wake.to_json()
            token = sign_qstash(body, PUBLIC + "/v1/step", dev.current_signing_key, now=frozen)
            r = client.post("/v1/step", content=body, headers={"Upstash-Signature": token})
            assert r.status_code == 200 and r.json()["result"] == "deferred", r.text
            got = samples(client.get("/metrics", headers=AUTH).text)
        h.runtime.dispatcher.close()
    assert got[("hopflow_deliveries_total", (("result", "deferred"),))] == 1
    assert ("hopflow_deliveries_total", (("result", "advanced"),)) not in got
