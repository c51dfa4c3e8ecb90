"""flow_control through the whole QStash stack over loopback: uvicorn serving the app, the QStash
dispatcher publishing with Flow-Control headers, ``hopflow qstash-dev`` holding deliveries back, a
real Redis. Many executions at once: the limits hold (counters; start times with the tolerance of
tests/test_flow_control_dispatch.py) and every execution ends exactly as it should, each step once."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import serve_app

API_KEY = "flow-control-api-key-0123456789abcdefghij"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
TERMINAL = {"succeeded", "failed", "compensated", "compensation_failed", "cancelled", "dead"}
HANG_GUARD_S = 90.0  # only stops a broken test from hanging; no assertion depends on it
TOLERANCE = 0.5

PACED = """
name: paced
input: {type: object, required: [tenant, n]}
flow_control:
  key: "t-{{ input.tenant }}"
  parallelism: 2
steps:
  - id: one
    action: fc.hit
    with: {tenant: "{{ input.tenant }}", step: one, n: "{{ input.n }}"}
  - id: two
    action: fc.hit
    with: {tenant: "{{ input.tenant }}", step: two, n: "{{ input.n }}"}
    flow_control: {key: partner-api, rate: 4, period: 1s}
"""

SINGLE = """
name: single
input: {type: object, required: [account, n]}
flow_control:
  key: "{{ input.account }}"
  max_running: 1
steps:
  - id: work
    action: fc.hit
    with: {tenant: "{{ input.account }}", step: work, n: "{{ input.n }}"}
  - id: pause
    wait: {for: 200ms}
"""


class Meter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[tuple[str, str], int] = {}
        self.peak: dict[tuple[str, str], int] = {}
        self.starts: dict[str, list[float]] = {}
        self.runs: list[tuple[str, int]] = []

    def hit(self, ctx: Any, tenant: str, step: str, n: int) -> int:
        where = (tenant, step)
        with self.lock:
            self.now[where] = self.now.get(where, 0) + 1
            self.peak[where] = max(self.peak.get(where, 0), self.now[where])
            self.starts.setdefault(step, []).append(time.monotonic())
            self.runs.append((step, int(n)))
        time.sleep(0.08)
        with self.lock:
            self.now[where] -= 1
        return int(n)


@contextlib.contextmanager
def stack(redis_db: Any, meter: Meter) -> Iterator[tuple[str, httpx.Client, Any]]:
    from engine.actions import ActionRegistry
    from engine.asgi import create_app
    from engine.catalog import Catalog
    from engine.config import Config
    from engine.devtools.qstash_dev.server import start_dev_server
    from engine.dispatch.qstash import QStashDispatcher
    from engine.runtime import Runtime
    from engine.state.store import Store

    registry = ActionRegistry()
    registry.register("fc.hit", meter.hit)
    catalog = Catalog.from_texts([PACED, SINGLE])
    holder: dict[str, Any] = {}
    with start_dev_server(max_retries=5, backoff_scale=0.001) as dev:

        def make_app(url: str) -> Any:
            dispatcher = QStashDispatcher(
                dev.token, dev.url, url + "/v1/step", failure_callback_url=url + "/v1/step/failed"
            )
            runtime = Runtime(Store(redis_db), dispatcher, catalog, actions=registry)
            holder["runtime"] = runtime
            config = Config(
                api_key=API_KEY,
                public_url=url,
                qstash_token=dev.token,
                qstash_url=dev.url,
                qstash_current_signing_key=dev.current_signing_key,
                qstash_next_signing_key=dev.next_signing_key,
            )
            return create_app(runtime, config=config)

        with serve_app(make_app, start_timeout_s=10) as url, httpx.Client(base_url=url, timeout=30) as http:
            yield url, http, dev
        holder["runtime"].dispatcher.close()


def start(http: httpx.Client, workflow: str, input: Any, eid: str) -> None:
    r = http.post("/v1/executions", json={"workflow": workflow, "input": input, "id": eid}, headers=AUTH)
    assert r.status_code == 202, r.text


def status(http: httpx.Client, eid: str) -> str:
    r = http.get(f"/v1/executions/{eid}", headers=AUTH)
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


def wait_all(http: httpx.Client, ids: list[str]) -> dict[str, str]:
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        found = {eid: status(http, eid) for eid in ids}
        if all(s in TERMINAL for s in found.values()):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.1)


@pytest.mark.parametrize("n", [15])
def test_many_executions_through_qstash_dev_keep_their_keys_limits(redis_db: Any, n: int) -> None:
    meter = Meter()
    with stack(redis_db, meter) as (_url, http, dev):
        ids = []
        for i in range(n):
            eid = f"paced-{i}"
            start(http, "paced", {"tenant": "abc"[i % 3], "n": i}, eid)
            ids.append(eid)
        found = wait_all(http, ids)
        assert dev.server.wait_idle(HANG_GUARD_S)
        waits = [e for e in dev.server.events() if e["event"] == "flow-waiting"]
    assert set(found.values()) == {"succeeded"}, found
    assert sorted(meter.runs) == sorted([("one", i) for i in range(n)] + [("two", i) for i in range(n)])
    assert max(v for (_, step), v in meter.peak.items() if step == "one") <= 2  # each tenant's parallelism
    starts = sorted(meter.starts["two"])  # partner-api: 4 per second across every tenant
    for i in range(len(starts) - 4):
        assert starts[i + 4] - starts[i] >= 1.0 * TOLERANCE, (i, starts[i + 4] - starts[i])
    assert waits  # qstash-dev really held deliveries back


def test_max_running_through_the_http_api_queues_in_start_order(redis_db: Any) -> None:
    meter = Meter()
    with stack(redis_db, meter) as (_url, http, _dev):
        ids = [f"single-{i}" for i in range(4)]
        for i, eid in enumerate(ids):
            start(http, "single", {"account": "acme", "n": i}, eid)
        assert [status(http, e) for e in ids[1:]] == ["queued"] * 3
        listed = http.get("/v1/executions", params={"status": "queued"}, headers=AUTH)
        assert listed.status_code == 200, listed.text
        assert {e["execution_id"] for e in listed.json()["executions"]} == set(ids[1:])
        r = http.post(f"/v1/executions/{ids[2]}/cancel", headers=AUTH)
        assert r.status_code == 202, r.text
        found = wait_all(http, ids)
    assert found == {ids[0]: "succeeded", ids[1]: "succeeded", ids[2]: "cancelled", ids[3]: "succeeded"}
    assert [n for _, n in meter.runs] == [0, 1, 3]  # start order, the cancelled one never ran
    assert meter.peak[("acme", "work")] == 1
