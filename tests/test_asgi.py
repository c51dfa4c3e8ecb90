"""The HTTP API in-process (Starlette TestClient) on a real Redis and the real runtime.

Messages the runtime publishes are delivered back through ``POST /v1/step`` with a real Ed25519
signature, so every test exercises the webhook exactly as the local dispatcher would. Refusals
(400/401/404/413/422) are checked against the Redis keyspace: they must change nothing.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import GREET
from starlette.testclient import TestClient as _TestClient

from engine.asgi import create_app, openapi_document
from engine.config import Config
from engine.model import Message
from engine.runtime import Runtime
from engine.signing import generate_ed25519_keypair, sign_ed25519

PUBLIC = "https://hopflow.test"
# clients reach the app by its public name, as QStash and API clients do (the guard answers no other Host)
TestClient = functools.partial(_TestClient, base_url=PUBLIC)
API_KEY = "k" * 40
KEYS = generate_ed25519_keypair()
# API calls send JSON (the request guard refuses other bodies with 415)
AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

BOOK = """
name: book
input: {type: object}
steps:
  - id: reserve
    action: t.reserve
    compensate:
      action: t.release
  - id: wait_pay
    wait: {event: paid, key: "x"}
  - id: done
    succeed: {}
"""


def config(**overrides: Any) -> Config:
    values: dict[str, Any] = {"api_key": API_KEY, "public_url": PUBLIC, "verify_keys": (KEYS.public_key,)}
    values.update(overrides)
    return Config(**values)


class Api:
    """A TestClient plus the harness whose queue holds what the runtime published."""

    def __init__(self, harness: Any, client: TestClient, redis: Any) -> None:
        self.h = harness
        self.client = client
        self.redis = redis
        self.released: list[str] = []

    def post_step(self, message: Message | bytes, path: str = "/v1/step", **kw: Any) -> Any:
        body = message if isinstance(message, bytes) else message.to_json()
        sig = sign_ed25519(body, PUBLIC + path, KEYS.private_key)
        return self.client.post(path, content=body, headers={"Hopflow-Signature": sig, **kw})

    def deliver_all(self, limit: int = 200) -> list[dict[str, Any]]:
        """Deliver every published message through the webhook (jumping the virtual clock)."""
        answers = []
        while self.h.dispatcher.queue and len(answers) < limit:
            outgoing = self.h.dispatcher.pop()
            r = self.post_step(outgoing.message)
            assert r.status_code == 200, r.text
            answers.append(r.json())
        return answers

    def start(self, workflow: str, input: Any, **extra: Any) -> str:
        r = self.client.post(
            "/v1/executions", json={"workflow": workflow, "input": input, **extra}, headers=AUTH
        )
        assert r.status_code == 202, r.text
        return str(r.json()["execution_id"])

    def record(self, eid: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/executions/{eid}", headers=AUTH)
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture
def api(harness: Any, redis_db: Any) -> Iterator[Api]:
    released: list[str] = []
    h = harness(
        GREET,
        BOOK,
        actions={"t.reserve": lambda ctx: {"id": "r1"}, "t.release": lambda ctx: released.append("r1")},
    )
    app = create_app(h.runtime, config=config())
    with TestClient(app) as client:
        a = Api(h, client, redis_db)
        a.released = released
        yield a


def keyspace(redis: Any) -> tuple[int, set[bytes]]:
    return redis.dbsize(), set(redis.scan_iter(count=1000))


def assert_problem(r: Any, status: int, kind: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert {"type", "title", "status", "detail"} <= set(doc)
    assert doc["status"] == status
    assert isinstance(doc["detail"], str) and doc["detail"]
    if kind is not None:
        assert doc["type"].endswith("/" + kind), doc
    return dict(doc)


# ------------------------------------------------------------------------------- the happy paths


def test_start_wait_event_and_finish_through_the_webhook(api: Api) -> None:
    r = api.client.post("/v1/executions", json={"workflow": "greet", "input": {"name": "ada"}}, headers=AUTH)
    assert r.status_code == 202
    eid = r.json()["execution_id"]
    assert r.headers["location"] == f"/v1/executions/{eid}"
    answers = api.deliver_all()
    assert [a["result"] for a in answers] == ["advanced", "advanced"]  # hello, then wait_ok parks
    record = api.record(eid)
    assert record["status"] == "running"
    assert [c["node"] for c in record["current"]] == ["wait_ok"]

    r = api.client.post("/v1/events/greet.ok", json={"key": "ada", "data": {"by": "grace"}}, headers=AUTH)
    assert r.status_code == 202
    answer = r.json()
    assert answer.pop("id")  # generated: the request gave none
    assert answer == {"event": "greet.ok", "key": "ada", "resumed": 1, "kept": False, "started": []}
    api.deliver_all()
    record = api.record(eid)
    assert record["status"] == "succeeded"
    assert record["output"] == {"greeting": "Hello ada", "ok": {"by": "grace"}}
    assert [t["step"] for t in record["trace"]] == ["hello", "wait_ok", "done"]

    r = api.client.get(f"/v1/executions/{eid}/history", headers=AUTH)
    assert r.status_code == 200
    events = r.json()["events"]
    assert r.json()["execution_id"] == eid
    assert events[0]["event"] == "started" and any(e.get("step") == "done" for e in events)


def test_an_event_sent_before_the_wait_is_kept_and_consumed(api: Api) -> None:
    r = api.client.post("/v1/events/greet.ok", json={"key": "bob", "data": "early"}, headers=AUTH)
    assert r.status_code == 202 and r.json()["resumed"] == 0 and r.json()["kept"] is True
    eid = api.start("greet", {"name": "bob"})
    api.deliver_all()
    record = api.record(eid)
    assert record["status"] == "succeeded" and record["output"]["ok"] == "early"


def test_start_with_an_id_is_idempotent(api: Api) -> None:
    first = api.start("greet", {"name": "cy"}, id="order-1")
    second = api.start("greet", {"name": "cy"}, id="order-1")
    assert first == second == "order-1"
    api.deliver_all()
    history = api.client.get("/v1/executions/order-1/history", headers=AUTH).json()["events"]
    assert sum(e.get("event") == "started" for e in history) == 1


def test_duplicate_and_stale_deliveries_are_acknowledged(api: Api) -> None:
    eid = api.start("greet", {"name": "dee"})
    first = api.h.dispatcher.pop().message
    assert api.post_step(first).json()["result"] == "advanced"
    again = api.post_step(first)
    assert again.status_code == 200 and again.json()["result"] == "stale"
    assert api.record(eid)["status"] == "running"


def test_cancel_compensates_by_default(api: Api) -> None:
    eid = api.start("book", {})
    api.deliver_all()
    assert api.record(eid)["current"][0]["node"] == "wait_pay"
    r = api.client.post(f"/v1/executions/{eid}/cancel", headers=AUTH)
    assert r.status_code == 202 and r.json()["execution_id"] == eid and r.json()["compensate"] is True
    api.deliver_all()
    record = api.record(eid)
    assert record["status"] == "cancelled"
    assert api.released == ["r1"]


def test_only_a_running_execution_can_be_cancelled(api: Api) -> None:
    eid = api.start("book", {})
    api.deliver_all()
    api.client.post(f"/v1/executions/{eid}/cancel", headers=AUTH)
    api.deliver_all()
    before = keyspace(api.redis)
    doc = assert_problem(api.client.post(f"/v1/executions/{eid}/cancel", headers=AUTH), 409, "conflict")
    assert "is cancelled" in doc["detail"]
    assert keyspace(api.redis) == before


def test_cancel_without_compensation(api: Api) -> None:
    eid = api.start("book", {})
    api.deliver_all()
    r = api.client.post(f"/v1/executions/{eid}/cancel", json={"compensate": False}, headers=AUTH)
    assert r.status_code == 202 and r.json()["compensate"] is False
    api.deliver_all()
    assert api.record(eid)["status"] == "cancelled"
    assert api.released == []


def test_failure_callback_marks_the_execution_dead(api: Api) -> None:
    eid = api.start("greet", {"name": "eve"})
    message = api.h.dispatcher.pop().message  # QStash gave up on it
    callback = {
        "status": 500,
        "header": {},
        "body": base64.b64encode(b"boom").decode(),
        "retried": 3,
        "maxRetries": 3,
        "sourceMessageId": "msg_1",
        "url": PUBLIC + "/v1/step",
        "method": "POST",
        "sourceBody": base64.b64encode(message.to_json()).decode(),
        "dlqId": "dlq_1",
    }
    r = api.post_step(json.dumps(callback).encode(), path="/v1/step/failed")
    assert r.status_code == 200 and r.json()["result"] == "dead"
    record = api.record(eid)
    assert record["status"] == "dead"
    assert "HTTP 500" in record["error"]["message"] and "4 attempt" in record["error"]["message"]
    history = api.client.get(f"/v1/executions/{eid}/history", headers=AUTH).json()["events"]
    assert any(e.get("event") == "dead" and "HTTP 500" in e["message"] for e in history)


def test_a_failure_callback_for_a_message_the_execution_moved_past_reports_stale(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 7 item 12: QStash gave up on a message the execution had already moved past (a
    duplicate, an old hop). Nothing is marked dead, so the answer and the log line must not say so."""
    eid = api.start("book", {})
    first = api.h.dispatcher.pop().message
    assert api.post_step(first).json()["result"] == "advanced"  # the execution moves past it
    callback = {
        "status": 500,
        "retried": 3,
        "maxRetries": 3,
        "sourceBody": base64.b64encode(first.to_json()).decode(),
        "dlqId": "dlq_9",
    }
    with caplog.at_level("INFO", logger="hopflow.asgi"):
        r = api.post_step(json.dumps(callback).encode(), path="/v1/step/failed")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["result"] == "stale" and "moved past" in answer["detail"]
    assert api.record(eid)["status"] == "running"
    assert not any("is dead" in rec.getMessage() for rec in caplog.records)
    assert any("old message" in rec.getMessage() and eid in rec.getMessage() for rec in caplog.records)
    # and one for an execution that has ended is "ignored", not "dead"
    api.deliver_all()
    api.client.post(f"/v1/executions/{eid}/cancel", json={"compensate": False}, headers=AUTH)
    api.deliver_all()
    assert api.record(eid)["status"] == "cancelled"
    r = api.post_step(json.dumps(callback).encode(), path="/v1/step/failed")
    assert r.json()["result"] == "ignored" and "ended" in r.json()["detail"]
    assert api.record(eid)["status"] == "cancelled"


def test_failure_callback_at_the_dispatchers_default_url(api: Api) -> None:
    eid = api.start("greet", {"name": "fay"})
    message = api.h.dispatcher.pop().message
    callback = {
        "status": 0,
        "retried": 2,
        "maxRetries": 2,
        "sourceBody": base64.b64encode(message.to_json()).decode(),
    }
    body = json.dumps(callback).encode()
    sig = sign_ed25519(body, PUBLIC + "/v1/step?hopflow=failure", KEYS.private_key)
    r = api.client.post("/v1/step?hopflow=failure", content=body, headers={"Hopflow-Signature": sig})
    assert r.status_code == 200, r.text
    record = api.record(eid)
    assert record["status"] == "dead" and "no response" in record["error"]["message"]


def test_failure_callback_for_an_unknown_execution_is_acknowledged(api: Api) -> None:
    callback = {
        "status": 489,
        "retried": 0,
        "maxRetries": 3,
        "sourceBody": base64.b64encode(Message("nobody", "x", 1).to_json()).decode(),
    }
    r = api.post_step(json.dumps(callback).encode(), path="/v1/step/failed")
    assert r.status_code == 200 and r.json()["result"] == "ignored"


def test_healthz(api: Api) -> None:
    r = api.client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "checks": {"dispatcher": "QueueDispatcher", "redis": "ok"}}


# ------------------------------------------------------------------- the webhook's refusals (489)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"execution_id": "", "node": "a", "seq": 1}',
        b'{"execution_id": "e", "node": "a"}',
        b'{"execution_id": "e", "node": "a", "seq": -1}',
        b'{"execution_id": "e", "node": "a", "seq": true}',
    ],
)
def test_a_malformed_message_is_never_retried(api: Api, body: bytes) -> None:
    before = keyspace(api.redis)
    r = api.post_step(body)
    assert_problem(r, 489, "non-retryable")
    assert r.headers["upstash-nonretryable-error"] == "true"
    assert keyspace(api.redis) == before


def test_an_unknown_execution_is_never_retried(api: Api) -> None:
    before = keyspace(api.redis)
    r = api.post_step(Message("no-such-execution", "hello", 1))
    assert_problem(r, 489, "unknown-execution")
    assert r.headers["upstash-nonretryable-error"] == "true"
    assert keyspace(api.redis) == before


def test_a_missing_graph_is_never_retried(api: Api) -> None:
    eid = api.start("greet", {"name": "gus"})
    for key in api.redis.scan_iter("hf:graph:*"):
        api.redis.delete(key)
    api.h.runtime.store._graphs.clear()  # a fresh worker: nothing cached in memory either
    r = api.post_step(api.h.dispatcher.pop().message)
    doc = assert_problem(r, 489)
    assert "not stored" in doc["detail"]
    assert api.record(eid)["status"] == "running"


# ---------------------------------------------------------------- the API's refusals change nothing


def test_unknown_workflow_is_404_and_writes_nothing(api: Api) -> None:
    before = keyspace(api.redis)
    r = api.client.post("/v1/executions", json={"workflow": "nope", "input": {}}, headers=AUTH)
    doc = assert_problem(r, 404, "unknown-workflow")
    assert "nope" in doc["detail"]
    assert keyspace(api.redis) == before


def test_invalid_input_is_422_with_the_schema_errors_and_writes_nothing(api: Api) -> None:
    api.start("greet", {"name": "warm"})  # the graph is stored: the keyspace is not empty
    before = keyspace(api.redis)
    r = api.client.post(
        "/v1/executions", json={"workflow": "greet", "input": {"name": "", "times": 0, "x": 1}}, headers=AUTH
    )
    doc = assert_problem(r, 422, "invalid-input")
    paths = {e["path"] for e in doc["errors"]}
    assert {"/name", "/times"} <= paths
    assert all(isinstance(e["message"], str) and e["message"] for e in doc["errors"])
    assert keyspace(api.redis) == before


@pytest.mark.parametrize("body", [b"{", b'{"workflow": "greet", "input": {}', b"\xff\xfe", b"", b"   "])
def test_malformed_json_is_400_and_writes_nothing(api: Api, body: bytes) -> None:
    before = keyspace(api.redis)
    r = api.client.post("/v1/executions", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert_problem(r, 400, "malformed-json")
    assert keyspace(api.redis) == before


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ([], ""),
        ({"input": {}}, "/workflow"),
        ({"workflow": 3}, "/workflow"),
        ({"workflow": "greet", "input": {"name": "a"}, "extra": 1}, "/extra"),
        ({"workflow": "greet", "input": {"name": "a"}, "id": ""}, "/id"),
        ({"workflow": "greet", "input": {"name": "a"}, "id": "has space"}, "/id"),
        ({"workflow": "greet", "input": {"name": "a"}, "id": "{brace}"}, "/id"),
    ],
)
def test_invalid_start_requests_are_422_and_write_nothing(api: Api, body: Any, path: str) -> None:
    before = keyspace(api.redis)
    r = api.client.post("/v1/executions", json=body, headers=AUTH)
    doc = assert_problem(r, 422)
    assert path in [e["path"] for e in doc["errors"]]
    assert keyspace(api.redis) == before


@pytest.mark.parametrize(
    "body",
    [[], {"data": 1}, {"key": None}, {"key": True}, {"key": "a", "extra": 1}, {"key": 1.5}, {"key": ""}],
)
def test_invalid_event_requests_are_422_and_write_nothing(api: Api, body: Any) -> None:
    before = keyspace(api.redis)
    r = api.client.post("/v1/events/greet.ok", json=body, headers=AUTH)
    assert_problem(r, 422, "invalid-request")
    assert keyspace(api.redis) == before


def test_invalid_cancel_bodies_are_refused(api: Api) -> None:
    eid = api.start("book", {})
    api.deliver_all()
    before = keyspace(api.redis)
    assert_problem(
        api.client.post(f"/v1/executions/{eid}/cancel", json={"compensate": "no"}, headers=AUTH), 422
    )
    assert_problem(api.client.post(f"/v1/executions/{eid}/cancel", json={"other": 1}, headers=AUTH), 422)
    assert_problem(api.client.post(f"/v1/executions/{eid}/cancel", content=b"{", headers=AUTH), 400)
    assert keyspace(api.redis) == before
    assert api.record(eid)["status"] == "running"


def test_unknown_executions_are_404(api: Api) -> None:
    before = keyspace(api.redis)
    for method, path in [
        ("GET", "/v1/executions/nope"),
        ("GET", "/v1/executions/nope/history"),
        ("POST", "/v1/executions/nope/cancel"),
        ("GET", "/v1/executions/{x}"),
        ("GET", "/v1/executions/" + "x" * 300),
    ]:
        assert_problem(api.client.request(method, path, headers=AUTH), 404, "unknown-execution")
    assert keyspace(api.redis) == before


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


@pytest.mark.parametrize("path", ["/v1/executions", "/v1/step", "/v1/events/greet.ok", "/v1/step/failed"])
def test_a_streamed_body_over_the_bound_is_413(api: Api, path: str) -> None:
    before = keyspace(api.redis)
    # no Content-Length: chunked transfer, so the bound must be enforced while reading
    r = api.client.post(path, content=chunks(2 * 1_048_576), headers=AUTH)
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "payload-too-large")
    assert keyspace(api.redis) == before


def test_a_declared_body_over_the_bound_is_413_before_reading(api: Api) -> None:
    r = api.client.post("/v1/executions", content=b"x" * (1_048_576 + 1), headers=AUTH)
    assert_problem(r, 413)


def test_the_bound_is_configurable(harness: Any) -> None:
    h = harness(GREET)
    with TestClient(create_app(h.runtime, config=config(max_body_bytes=2048))) as client:
        body = {"workflow": "greet", "input": {"name": "n" * 1000}}
        assert client.post("/v1/executions", json=body, headers=AUTH).status_code == 202
        body = {"workflow": "greet", "input": {"name": "n" * 3000}}
        assert_problem(client.post("/v1/executions", json=body, headers=AUTH), 413)


# ------------------------------------------------------------------------------------ auth (API)


def test_the_api_needs_the_bearer_key(api: Api) -> None:
    before = keyspace(api.redis)
    body = {"workflow": "greet", "input": {"name": "x"}}
    r = api.client.post("/v1/executions", json=body)
    doc = assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "missing" in doc["detail"]
    assert_problem(
        api.client.post("/v1/executions", json=body, headers={"Authorization": "Bearer " + "k" * 39 + "x"}),
        401,
    )
    assert_problem(api.client.post("/v1/executions", json=body, headers={"Authorization": API_KEY}), 401)
    assert_problem(
        api.client.post("/v1/executions", json=body, headers={"Authorization": f"Basic {API_KEY}"}), 401
    )
    for path in ["/v1/executions/x", "/v1/executions/x/history"]:
        assert_problem(api.client.get(path), 401)
    assert_problem(api.client.post("/v1/executions/x/cancel"), 401)
    assert_problem(api.client.post("/v1/events/e", json={"key": "k"}), 401)
    assert keyspace(api.redis) == before


def test_without_a_configured_key_the_api_is_disabled(harness: Any) -> None:
    h = harness(GREET)
    with TestClient(create_app(h.runtime, config=config(api_key=None))) as client:
        r = client.post("/v1/executions", json={"workflow": "greet", "input": {"name": "x"}}, headers=AUTH)
        assert_problem(r, 503, "api-disabled")
        assert client.get("/healthz").status_code == 200


# ------------------------------------------------------------------------- routing and documents


def test_unknown_routes_and_methods_are_problem_documents(api: Api) -> None:
    doc = assert_problem(api.client.get("/nowhere"), 404, "not-found")
    assert "/nowhere" in doc["detail"]
    r = api.client.get("/v1/step")
    doc = assert_problem(r, 405, "method-not-allowed")
    assert r.headers["allow"] == "POST"
    r = api.client.delete("/v1/executions/x", headers=AUTH)
    assert_problem(r, 405)
    assert "GET" in r.headers["allow"]
    assert_problem(api.client.put("/healthz"), 405)


def test_store_unavailable_is_503_so_the_dispatcher_retries(harness: Any) -> None:
    import socket

    import redis as redis_lib

    from engine.state.store import Store

    h = harness(GREET)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    unreachable = redis_lib.Redis(port=port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    h.runtime.store = Store(unreachable)
    with TestClient(create_app(h.runtime, config=config())) as client:
        body = Message("e1", "hello", 1).to_json()
        sig = sign_ed25519(body, PUBLIC + "/v1/step", KEYS.private_key)
        r = client.post("/v1/step", content=body, headers={"Hopflow-Signature": sig})
        assert_problem(r, 503, "unavailable")
        assert "upstash-nonretryable-error" not in r.headers
        r = client.post("/v1/executions", json={"workflow": "greet", "input": {"name": "x"}}, headers=AUTH)
        assert_problem(r, 503)
        r = client.get("/healthz")
        doc = assert_problem(r, 503, "unavailable")
        assert doc["checks"]["redis"] == "unreachable"


def test_offloaded_callback_route_says_what_is_missing(api: Api) -> None:
    eid = api.start("greet", {"name": "hal"})
    callback = {
        "status": 200,
        "body": base64.b64encode(b'{"ok": true}').decode(),
        "retried": 0,
        "maxRetries": 0,
    }
    body = json.dumps(callback).encode()
    path = f"/v1/step/callback?execution_id={eid}&node=hello&seq=1"
    sig = sign_ed25519(body, PUBLIC + path, KEYS.private_key)
    r = api.client.post(path, content=body, headers={"Hopflow-Signature": sig})
    if not hasattr(api.h.runtime, "complete_offloaded"):
        doc = assert_problem(r, 501, "not-implemented")
        assert "complete_offloaded" in doc["detail"]
    else:
        assert r.status_code == 200
    bad = "/v1/step/callback?execution_id=&node=hello&seq=x"
    sig = sign_ed25519(body, PUBLIC + bad, KEYS.private_key)
    assert_problem(api.client.post(bad, content=body, headers={"Hopflow-Signature": sig}), 489)


@pytest.mark.xfail(
    not hasattr(Runtime, "complete_offloaded"),
    strict=True,
    reason="Runtime.complete_offloaded(message, callback, *, failure) does not exist yet: the "
    "interpreter side of `offload: true` (hand the call to the dispatcher with a callback URL to "
    "/v1/step/callback, then complete the parked step from the callback) is not written",
)
def test_an_offloaded_call_completes_its_step_through_the_callback(harness: Any) -> None:
    from urllib.parse import urlencode

    workflow = """
    name: offloaded
    steps:
      - id: call
        http: {url: "https://example.test/export", offload: true}
        timeout: 60s
      - id: done
        succeed: {output: "{{ steps.call.output }}"}
    """
    h = harness(workflow)
    assert hasattr(h.runtime, "complete_offloaded"), "Runtime.complete_offloaded is missing"
    calls: list[Any] = []
    h.dispatcher.call = calls.append  # an offloading dispatcher: records the call QStash would make

    def callback(path: str, status: int, body: bytes, **extra: Any) -> Any:
        payload = {
            "status": status,
            "header": {"Content-Type": ["application/json"]},
            "body": base64.b64encode(body).decode(),
            "retried": 0,
            "maxRetries": 0,
            **extra,
        }
        raw = json.dumps(payload).encode()
        sig = sign_ed25519(raw, PUBLIC + path, KEYS.private_key)
        return client.post(path, content=raw, headers={"Hopflow-Signature": sig})

    with TestClient(create_app(h.runtime, config=config())) as client:
        eid = h.start("offloaded", {})
        first = h.dispatcher.pop().message
        body = first.to_json()
        sig = sign_ed25519(body, PUBLIC + "/v1/step", KEYS.private_key)
        assert client.post("/v1/step", content=body, headers={"Hopflow-Signature": sig}).status_code == 200
        (request,) = calls  # the step parked and handed its call over
        parked = request.message
        assert (parked.execution_id, parked.node) == (eid, "call")
        query = urlencode({"execution_id": eid, "node": "call", "seq": parked.seq})
        r = callback(f"/v1/step/callback?{query}", 200, b'{"done": 1}')
        assert r.status_code == 200 and r.json()["result"] == "advanced", r.text
        # QStash's failure callback (or a duplicate) for the same call afterwards changes nothing
        r = callback(f"/v1/step/callback?{query}&failure=1", 500, b"late", dlqId="dlq_1")
        assert r.status_code == 200 and r.json()["result"] in ("stale", "finished")
        h.drain()
        record = h.runtime.record(eid)
        assert record["status"] == "succeeded" and record["output"] == {"done": 1}, (
            record["error"],
            record["trace"],
        )


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_openapi_document_describes_every_route(api: Api) -> None:
    r = api.client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc == json.loads(json.dumps(openapi_document(PUBLIC)))
    assert doc["openapi"].startswith("3.1")
    try:
        from openapi_spec_validator import validate
    except ImportError:  # structural checks below still run
        pass
    else:
        validate(doc)
    from starlette.routing import Route

    for route in api.client.app.routes:  # type: ignore[attr-defined]
        assert isinstance(route, Route)
        assert route.path in doc["paths"], route.path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in doc["paths"][route.path], (route.path, method)
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    refs.append(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert refs
    for ref in refs:
        _resolve(doc, ref)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["operationId"] and op["responses"], (path, method)
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert "application/problem+json" in response["content"], (path, method, status)
            for scheme in op.get("security", []):
                assert set(scheme) <= set(doc["components"]["securitySchemes"])
    from jsonschema import Draft202012Validator

    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    problem = doc["components"]["schemas"]["Problem"]
    Draft202012Validator(problem).validate(api.client.get("/nowhere").json())


# ------------------------------------------------------------------------------- the lazy entry point


def test_the_module_level_app_reports_a_bad_environment_as_a_problem(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from engine.asgi import LazyApp

    monkeypatch.setenv("HOPFLOW_TIME_BUDGET", "soon")
    monkeypatch.setenv("HOPFLOW_API_KEY", "short-secret")
    with TestClient(LazyApp()) as client:
        doc = assert_problem(client.get("/healthz"), 500, "misconfigured")
        assert "doctor" in doc["detail"]
    assert "HOPFLOW_TIME_BUDGET" in caplog.text and "HOPFLOW_API_KEY" in caplog.text
    assert "short-secret" not in caplog.text


def test_the_module_level_app_builds_itself_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, redis_db: Any
) -> None:
    from engine.asgi import LazyApp

    (tmp_path / "greet.yaml").write_text(GREET.strip() + "\n")
    socket_path = redis_db.connection_pool.connection_kwargs.get("path")
    if socket_path:
        monkeypatch.setenv("REDIS_URL", f"unix://{socket_path}")
    else:  # REDIS_URL is set (the fixture's server is that URL, this worker's database)
        monkeypatch.setenv("REDIS_URL", os.environ["REDIS_URL"])
    for name in ("QSTASH_TOKEN", "HOPFLOW_SIGNING_KEY", "HOPFLOW_DEV_INSECURE", "HOPFLOW_ACTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOPFLOW_WORKFLOWS", str(tmp_path))
    monkeypatch.setenv("HOPFLOW_API_KEY", API_KEY)
    monkeypatch.setenv("HOPFLOW_PUBLIC_URL", PUBLIC)
    entry = LazyApp()
    with TestClient(entry) as client:  # the lifespan starts the local dispatcher's loop
        health = client.get("/healthz")
        assert health.status_code == 200, health.text
        assert health.json()["checks"] == {"dispatcher": "local (running)", "redis": "ok"}
        eid = client.post(
            "/v1/executions", json={"workflow": "greet", "input": {"name": "zed"}}, headers=AUTH
        ).json()["execution_id"]
        import time

        deadline = time.monotonic() + 10
        while client.get(f"/v1/executions/{eid}", headers=AUTH).json()["current"] != [
            {"branch": "", "node": "wait_ok", "phase": "park"}
        ]:
            assert time.monotonic() < deadline, "the local dispatcher did not deliver"
            time.sleep(0.02)
        client.post("/v1/events/greet.ok", json={"key": "zed", "data": 1}, headers=AUTH)
        while client.get(f"/v1/executions/{eid}", headers=AUTH).json()["status"] != "succeeded":
            assert time.monotonic() < deadline, "the local dispatcher did not deliver"
            time.sleep(0.02)


# ------------------------------------------------------------------------------- busy deliveries


def test_a_busy_qstash_delivery_is_republished_for_later(harness: Any, redis_db: Any) -> None:
    import time

    from engine.devtools.qstash_dev.server import start_dev_server
    from engine.dispatch.qstash import QStashDispatcher
    from engine.signing import sign_qstash
    from engine.state.store import lock_key

    h = harness(GREET)
    eid = h.start("greet", {"name": "ivy"})
    message = h.dispatcher.pop().message
    with start_dev_server() as dev:
        h.runtime.dispatcher = QStashDispatcher(dev.token, dev.url, PUBLIC + "/v1/step")
        cfg = config(qstash_current_signing_key=dev.current_signing_key)
        redis_db.set(lock_key(eid, ""), "another-worker", px=60_000)  # someone is running this branch
        frozen = time.time()  # the app's clock: both deliveries below fall in the same second
        with TestClient(create_app(h.runtime, config=cfg, now=lambda: frozen)) as client:
            body = message.to_json()
            token = sign_qstash(body, PUBLIC + "/v1/step", dev.current_signing_key, now=frozen)
            before = frozen
            r = client.post("/v1/step", content=body, headers={"Upstash-Signature": token})
            assert r.status_code == 200 and r.json()["result"] == "busy"
            accepted = [e for e in dev.server.events() if e["event"] == "accepted"]
            assert len(accepted) == 1 and accepted[0]["url"] == PUBLIC + "/v1/step"
            assert accepted[0]["not_before"] >= before + 1  # a copy, a little later
            # the same delivery again within the second: deduplicated, not a storm of copies
            client.post("/v1/step", content=body, headers={"Upstash-Signature": token})
            assert len([e for e in dev.server.events() if e["event"] == "accepted"]) == 1
        h.runtime.dispatcher.close()
    assert h.runtime.record(eid)["trace"] == []  # nothing ran while the branch was held


# ---------------------------------------------------------------------------------------- client


def test_the_client_speaks_the_api(harness: Any) -> None:
    from engine.client import ClientError, HopflowClient
    from engine.devtools.qstash_dev.server import serve_in_thread

    h = harness(GREET)
    with serve_in_thread(create_app(h.runtime, config=config())) as url:
        with HopflowClient(url, API_KEY) as hop:
            assert "secret" not in repr(hop) and API_KEY not in repr(hop)
            eid = hop.start("greet", {"name": "jo"}, execution_id="client-1")
            assert eid == "client-1" and hop.status(eid)["status"] == "running"
            h.drain()
            assert hop.notify("greet.ok", "jo", {"ok": 1}) == 1
            h.drain()
            assert hop.record(eid)["output"] == {"greeting": "Hello jo", "ok": {"ok": 1}}
            assert any(e.get("event") == "started" for e in hop.history(eid))
            assert hop.notify("greet.ok", "nobody") == 0
            hop.start("greet", {"name": "kit"}, execution_id="client-2")
            assert hop.cancel("client-2", compensate=False)["compensate"] is False
            assert hop.health()["status"] == "ok"

            with pytest.raises(ClientError) as caught:
                hop.start("nope", {})
            assert (
                caught.value.status == 404
                and caught.value.code == 2
                and "unknown workflow" in str(caught.value)
            )
            with pytest.raises(ClientError) as caught:
                hop.start("greet", {"name": 3})
            assert caught.value.code == 2 and caught.value.lines[1] == "  /name: 3 is not of type 'string'"
            with pytest.raises(ClientError) as caught:
                hop.status("missing")
            assert caught.value.status == 404 and caught.value.code == 1
        with HopflowClient(url, "wrong-key") as hop, pytest.raises(ClientError) as caught:
            hop.status("client-1")
        assert caught.value.status == 401 and "HOPFLOW_API_KEY" in str(caught.value)
        assert "wrong-key" not in str(caught.value)
    with HopflowClient(url, API_KEY, timeout_s=2) as hop, pytest.raises(ClientError) as caught:
        hop.status("client-1")  # the server is gone
    assert caught.value.status is None and "cannot reach" in str(caught.value)
    with pytest.raises(ClientError):
        HopflowClient("localhost:8000", API_KEY)


def test_the_bound_is_enforced_while_the_body_streams_over_a_real_socket(harness: Any) -> None:
    """A client streaming an endless chunked body gets its 413 after about the bound, not at the end."""
    import select
    import socket

    from engine.devtools.qstash_dev.server import serve_in_thread

    h = harness(GREET)
    with serve_in_thread(create_app(h.runtime, config=config())) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/executions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                + f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n\r\n".encode()
            )
            chunk = b" " * 65536
            sent = 0
            answered = False
            while sent < 64 * 1_048_576:  # the client would go on for 64 MiB
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                except OSError:  # the server closed the connection after answering
                    answered = True
                    break
                sent += len(chunk)
                if select.select([sock], [], [], 0)[0]:
                    answered = True
                    break
            assert answered and sent < 8 * 1_048_576, sent  # cut off near the bound, not after 64 MiB
            try:
                reply = sock.recv(65536).decode(errors="replace")
            except ConnectionResetError:  # the server closed with our unread chunks pending: fine
                reply = ""
    if reply:
        assert reply.startswith("HTTP/1.1 413"), reply[:200]
        assert "application/problem+json" in reply
