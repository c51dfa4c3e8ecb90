"""Red team of the HTTP API: hostile requests and deliveries, in-process and over real loopback.

The bar: a bad request of any kind gets its documented status as a JSON problem document
(``application/problem+json`` with ``type``/``title``/``status``/``detail``, no traceback, no secret)
and changes nothing in Redis — every refusal below is checked against a full snapshot of the
keyspace (every key's type and value, not only the key names).

In-process cases use Starlette's TestClient on a real Redis; the ones where the network is what is
tested (lying ``Content-Length``, chunked and trickled bodies, oversized headers, proxy headers,
concurrency) run uvicorn on 127.0.0.1 and speak HTTP over real sockets.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient as _TestClient

from engine.asgi import create_app
from engine.config import Config
from engine.model import Message
from engine.signing import generate_ed25519_keypair, sign_ed25519, sign_qstash

PUBLIC = "https://hopflow.test"
# clients reach the app by its public name, as QStash and API clients do (the guard answers no other Host)
TestClient = functools.partial(_TestClient, base_url=PUBLIC)
API_KEY = "red-team-api-key-0123456789abcdefghij"
QSTASH_CURRENT = "sig_redteam_current_0123456789ab"
QSTASH_NEXT = "sig_redteam_next_0123456789abcdef"
QSTASH_TOKEN = "qstash-token-redteam-0123456789"
KEYS = generate_ed25519_keypair()
SECRETS = (API_KEY, QSTASH_CURRENT, QSTASH_NEXT, QSTASH_TOKEN, KEYS.private_key)
# API calls send JSON (the request guard refuses other bodies with 415)
AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

GREET = """
name: greet
input:
  type: object
  required: [name]
  properties:
    name: {type: string, minLength: 1}
    times: {type: integer, minimum: 1}
    extra: {}
steps:
  - id: hello
    set: {greeting: "Hello {{ input.name }}"}
  - id: wait_ok
    wait: {event: greet.ok, key: "{{ input.name }}"}
  - id: done
    succeed:
      output: {greeting: "{{ vars.greeting }}", ok: "{{ steps.wait_ok.output }}"}
"""


def config(**overrides: Any) -> Config:
    values: dict[str, Any] = {
        "api_key": API_KEY,
        "public_url": PUBLIC,
        "verify_keys": (KEYS.public_key,),
        "qstash_current_signing_key": QSTASH_CURRENT,
        "qstash_next_signing_key": QSTASH_NEXT,
    }
    values.update(overrides)
    return Config(**values)


def snapshot(redis: Any) -> dict[bytes, Any]:
    """Every key with its type and whole value (TTLs aside): any write shows up as a difference."""
    out: dict[bytes, Any] = {}
    for key in redis.scan_iter(count=1000):
        kind = redis.type(key)
        if kind == b"string":
            value: Any = redis.get(key)
        elif kind == b"hash":
            value = redis.hgetall(key)
        elif kind == b"list":
            value = redis.lrange(key, 0, -1)
        elif kind == b"set":
            value = redis.smembers(key)
        elif kind == b"zset":
            value = redis.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            value = redis.xrange(key)
        else:  # pragma: no cover - the runtime uses no other types
            value = None
        out[key] = (kind, value)
    return out


def assert_problem(r: Any, status: int, kind: str | None = None) -> dict[str, Any]:
    """A problem document of ``status`` (and ``kind``) with no traceback and no secret in it."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    doc = r.json()
    assert {"type", "title", "status", "detail"} <= set(doc), doc
    assert doc["status"] == status and isinstance(doc["detail"], str) and doc["detail"]
    if kind is not None:
        assert doc["type"] == "https://hopflow.dev/problems/" + kind, doc
    assert "Traceback" not in r.text and 'File "' not in r.text
    for secret in SECRETS:
        assert secret not in r.text
    return dict(doc)


class Api:
    """The app in-process on a real Redis; ``h`` is the harness whose queue holds what was published."""

    def __init__(self, harness: Any, client: TestClient, redis: Any) -> None:
        self.h = harness
        self.client = client
        self.redis = redis
        self.first: Message | None = None

    def start(self, input: Any, **extra: Any) -> str:
        r = self.client.post(
            "/v1/executions", json={"workflow": "greet", "input": input, **extra}, headers=AUTH
        )
        assert r.status_code == 202, r.text
        return str(r.json()["execution_id"])

    def signed(self, body: bytes, path: str = "/v1/step", **headers: str) -> Any:
        """POST ``body`` to ``path`` with a valid Ed25519 signature for exactly these bytes and URL."""
        sig = sign_ed25519(body, PUBLIC + path, KEYS.private_key)
        return self.client.post(path, content=body, headers={"Hopflow-Signature": sig, **headers})


@pytest.fixture
def api(harness: Any, redis_db: Any) -> Iterator[Api]:
    h = harness(GREET)
    with TestClient(create_app(h.runtime, config=config())) as client:
        a = Api(h, client, redis_db)
        a.start({"name": "warm"}, id="warm")  # the graph is stored: refusals must not add or change it
        a.first = h.dispatcher.pop().message  # warm's current message, for the webhook cases
        yield a


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def failure_callback(message: bytes, **extra: Any) -> bytes:
    body = {"status": 500, "retried": 2, "maxRetries": 2, "sourceBody": base64.b64encode(message).decode()}
    return json.dumps({**body, **extra}).encode()


# ------------------------------------------------------------------------------------ execution ids


def test_an_id_with_a_trailing_newline_is_refused(api: Api) -> None:
    """``^…$`` matched before a trailing newline: ``"abc\\n"`` was accepted as an execution id."""
    from engine.errors import InvalidExecutionId
    from engine.state.store import check_execution_id

    for bad in ("abc\n", "a\n", "abc\r\n"):
        with pytest.raises(InvalidExecutionId):
            check_execution_id(bad)
    before = snapshot(api.redis)
    r = api.client.post(
        "/v1/executions", json={"workflow": "greet", "input": {"name": "x"}, "id": "abc\n"}, headers=AUTH
    )
    doc = assert_problem(r, 422, "invalid-request")
    assert [e["path"] for e in doc["errors"]] == ["/id"]
    assert snapshot(api.redis) == before


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "{x}",
        "a}b{",
        "warm}",
        "a\n",
        "a b",
        "..",
        "../x",
        "a/b",
        "-x",
        ".x",
        "x" * 201,
        "é",
        "a\x00",
        5,
        True,
    ],
)
def test_start_refuses_ids_outside_the_pattern(api: Api, bad: Any) -> None:
    """Braces would move an execution's keys to another hash tag (cluster slot); all refused as 422."""
    before = snapshot(api.redis)
    r = api.client.post(
        "/v1/executions", json={"workflow": "greet", "input": {"name": "x"}, "id": bad}, headers=AUTH
    )
    doc = assert_problem(r, 422, "invalid-request")
    assert [e["path"] for e in doc["errors"]] == ["/id"]
    assert snapshot(api.redis) == before


def test_the_longest_and_oddest_allowed_ids_work(api: Api) -> None:
    for eid in ("x" * 200, "Order-42:a.b@c+d=e_f", "0"):
        assert api.start({"name": "x"}, id=eid) == eid
        assert api.client.get(f"/v1/executions/{eid}", headers=AUTH).json()["execution_id"] == eid


@pytest.mark.parametrize(
    "path",
    [
        "%7Bwarm%7D",
        "warm%7D",
        "%00",
        "warm%00",
        "warm%0A",
        "%2e%2e",
        "..",
        "x" * 300,
        "%C3%A9",
        "warm%20",
    ],
)
def test_execution_ids_in_the_url_that_cannot_exist_are_404(api: Api, path: str) -> None:
    before = snapshot(api.redis)
    for method, suffix in (("GET", ""), ("GET", "/history"), ("POST", "/cancel")):
        r = api.client.request(method, f"/v1/executions/{path}{suffix}", headers=AUTH)
        # ".." is resolved by the client ("/v1/executions/.." is "/v1"), an encoded "/" splits the path
        assert_problem(r, 404)
        assert len(r.json()["detail"]) < 400
    assert snapshot(api.redis) == before


def test_an_encoded_slash_is_a_slash(api: Api) -> None:
    """ASGI servers decode the path: "a%2Fb" is "a/b", so an id can never smuggle a "/" in."""
    doc = assert_problem(api.client.get("/v1/executions/a%2Fb", headers=AUTH), 404, "not-found")
    assert "no route" in doc["detail"]
    encoded = api.client.get("/v1/executions/warm%2Fhistory", headers=AUTH)
    assert encoded.json() == api.client.get("/v1/executions/warm/history", headers=AUTH).json()


# ----------------------------------------------------------------------------------- JSON bodies

BODY_ROUTES = ["/v1/executions", "/v1/events/greet.ok", "/v1/executions/warm/cancel"]
HOSTILE_JSON = {
    "nested 100 000 deep": nested(100_000).encode(),
    "nested 65 deep": nested(65).encode(),
    "NaN": b'{"key": NaN}',
    "Infinity": b'{"key": Infinity}',
    "-Infinity": b'{"key": -Infinity}',
    "1e400": b'{"key": 1e400}',
    "duplicate keys": b'{"key": "a", "key": "b"}',
    "UTF-16": '{"key": "a"}'.encode("utf-16"),
    "latin-1": '{"key": "é"}'.encode("latin-1"),
    "byte order mark": b'\xef\xbb\xbf{"key": "a"}',
    "lone surrogate": b'{"key": "\\ud800"}',
    "lone low surrogate in a key": b'{"\\udc00": 1}',
    "5000-digit integer": b'{"key": ' + b"9" * 5000 + b"}",
    "trailing garbage": b'{"key": "a"} x',
    "two documents": b'{"key": "a"}{"key": "b"}',
    "single quotes": b"{'key': 'a'}",
    "unterminated": b'{"key": "a',
    "NUL byte": b'{"key": "a"}\x00',
    "comment": b'{"key": "a"} // hi',
}


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize("name", sorted(HOSTILE_JSON))
def test_hostile_json_is_400_and_changes_nothing(api: Api, route: str, name: str) -> None:
    before = snapshot(api.redis)
    r = api.client.post(
        route, content=HOSTILE_JSON[name], headers={**AUTH, "Content-Type": "application/json"}
    )
    assert_problem(r, 400, "malformed-json")
    assert snapshot(api.redis) == before
    assert api.client.get("/v1/executions/warm", headers=AUTH).json()["status"] == "running"


@pytest.mark.parametrize("route", ["/v1/executions", "/v1/events/greet.ok"])
@pytest.mark.parametrize("body", [b"[]", b'"hello"', b"42", b"null", b"true", b'[{"key": "a"}]'])
def test_a_body_that_is_not_an_object_is_422(api: Api, route: str, body: bytes) -> None:
    before = snapshot(api.redis)
    doc = assert_problem(api.client.post(route, content=body, headers=AUTH), 422, "invalid-request")
    assert doc["errors"][0]["path"] == ""
    assert snapshot(api.redis) == before


def test_the_depth_limit_is_64_levels(api: Api) -> None:
    body = '{"key": "deep", "data": ' + nested(63) + "}"  # the object is level 1
    r = api.client.post("/v1/events/greet.ok", content=body.encode(), headers=AUTH)
    assert r.status_code == 202, r.text
    before = snapshot(api.redis)
    body = '{"key": "deeper", "data": ' + nested(64) + "}"
    doc = assert_problem(api.client.post("/v1/events/greet.ok", content=body.encode(), headers=AUTH), 400)
    assert "64 levels" in doc["detail"]
    assert snapshot(api.redis) == before


def test_valid_unicode_and_escapes_are_accepted(api: Api) -> None:
    body = '{"workflow": "greet", "input": {"name": "\\ud83d\\ude00 é \\u00e9 \\u4e2d"}, "id": "uni"}'
    assert api.client.post("/v1/executions", content=body.encode(), headers=AUTH).status_code == 202
    r = api.client.get("/v1/executions/uni/history", headers=AUTH)
    assert r.status_code == 200


def test_a_huge_invalid_input_gets_a_bounded_422(api: Api) -> None:
    """jsonschema quotes the offending value: the detail and each error stay short, the list capped."""
    before = snapshot(api.redis)
    big = {"name": ["x" * 1000] * 500, "times": "no"}
    r = api.client.post("/v1/executions", json={"workflow": "greet", "input": big}, headers=AUTH)
    doc = assert_problem(r, 422, "invalid-input")
    assert len(doc["detail"]) < 500 and all(len(e["message"]) <= 300 for e in doc["errors"])
    assert {e["path"] for e in doc["errors"]} == {"/name", "/times"}
    many = {"name": "x", "extra": [1] * 10}
    schema_errors = [{"name": "x", "times": 0}] * 100  # one input, many errors when it is an array
    r = api.client.post("/v1/executions", json={"workflow": "greet", "input": schema_errors}, headers=AUTH)
    assert_problem(r, 422, "invalid-input")
    assert len(r.content) < 20_000
    assert (
        api.client.post("/v1/executions", json={"workflow": "greet", "input": many}, headers=AUTH).status_code
        == 202
    )
    assert snapshot(api.redis) != before  # the last one was valid


def test_a_large_input_under_the_bound_is_stored_whole(api: Api) -> None:
    extra = "é" * 400_000  # 800 kB of UTF-8
    eid = api.start({"name": "big", "extra": extra}, id="big")
    assert eid == "big"
    assert api.client.get("/v1/executions/big", headers=AUTH).json()["status"] == "running"


# ---------------------------------------------------------------------------- workflows and events


@pytest.mark.parametrize(
    "name", ["../greet", "greet/../greet", "/etc/passwd", "GREET", "grëet", "greet ", "x" * 200]
)
def test_unknown_workflow_names_are_404_and_change_nothing(api: Api, name: str) -> None:
    before = snapshot(api.redis)
    r = api.client.post("/v1/executions", json={"workflow": name, "input": {"name": "x"}}, headers=AUTH)
    assert_problem(r, 404, "unknown-workflow")
    assert snapshot(api.redis) == before


@pytest.mark.parametrize("name", ["", None, 5, ["greet"], {"name": "greet"}, "x" * 201])
def test_workflow_names_of_the_wrong_shape_are_422(api: Api, name: Any) -> None:
    before = snapshot(api.redis)
    r = api.client.post("/v1/executions", json={"workflow": name, "input": {"name": "x"}}, headers=AUTH)
    doc = assert_problem(r, 422, "invalid-request")
    assert doc["errors"][0]["path"] == "/workflow"
    assert snapshot(api.redis) == before


@pytest.mark.parametrize("name", ["%C3%ABvent", "%7Bx%7D", "a%20b", "1abc", "_x", "e" * 129, "a%0Ab", "a%00"])
def test_event_names_no_wait_can_have_are_422(api: Api, name: str) -> None:
    """Anything outside the DSL's event-name pattern could never resume a wait, only fill Redis."""
    before = snapshot(api.redis)
    r = api.client.post(f"/v1/events/{name}", json={"key": "k"}, headers=AUTH)
    assert_problem(r, 422, "invalid-request")
    assert snapshot(api.redis) == before


@pytest.mark.parametrize(
    "body",
    [
        {"key": "k" * 1025},
        {"key": 10**1100},
        {"key": 1.5},
        {"key": False},
        {"key": ["a"]},
        {"key": {"a": 1}},
        {"key": ""},
        {"data": 1},
        {"key": "k", "date": 1},
    ],
    ids=lambda b: json.dumps(b)[:30],
)
def test_event_bodies_of_the_wrong_shape_are_422(api: Api, body: Any) -> None:
    before = snapshot(api.redis)
    assert_problem(api.client.post("/v1/events/greet.ok", json=body, headers=AUTH), 422, "invalid-request")
    assert snapshot(api.redis) == before


def test_event_keys_up_to_the_bound_and_any_data_are_kept(api: Api) -> None:
    for key in ("k" * 1024, -5, 10**300, "warm"):
        r = api.client.post("/v1/events/greet.ok", json={"key": key, "data": {"x": "y" * 1000}}, headers=AUTH)
        assert r.status_code == 202, r.text
    assert r.json()["resumed"] == 0  # warm's wait is not reached yet: kept for it


# ------------------------------------------------------------------------------- body size and time


def test_a_lying_content_length_is_400_in_process(api: Api) -> None:
    body = b'{"workflow": "greet", "input": {"name": "x"}}'
    before = snapshot(api.redis)
    for declared in ("5", str(len(body) + 10)):
        r = api.client.post("/v1/executions", content=body, headers={**AUTH, "Content-Length": declared})
        doc = assert_problem(r, 400, "bad-request")
        assert "Content-Length" in doc["detail"]
    for declared in ("-1", "1e3", "0x10", "5, 5", " "):
        r = api.client.post("/v1/executions", content=body, headers={**AUTH, "Content-Length": declared})
        assert_problem(r, 400, "bad-request")
    r = api.client.post("/v1/executions", content=body, headers={**AUTH, "Content-Length": "9" * 5000})
    assert_problem(r, 413, "payload-too-large")
    assert snapshot(api.redis) == before


def test_a_client_that_disconnects_mid_body_gets_no_500(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    app = api.client.app
    sent: list[dict[str, Any]] = []
    parts = [
        {"type": "http.request", "body": b'{"workflow": "gr', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return parts.pop(0) if parts else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/executions",
        "raw_path": b"/v1/executions",
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [
            (b"authorization", AUTH["Authorization"].encode()),
            (b"host", b"hopflow.test"),
            (b"content-type", b"application/json"),
        ],
        "client": ("203.0.113.7", 1234),
        "server": ("x", 80),
    }
    before = snapshot(api.redis)
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400
    assert "unhandled" not in caplog.text and "Traceback" not in caplog.text
    assert snapshot(api.redis) == before


# ------------------------------------------------------------------------------ webhook deliveries


@pytest.mark.parametrize(
    "body",
    [
        nested(100_000).encode(),
        b'{"execution_id": "warm", "node": "hello", "seq": NaN}',
        b'{"execution_id": "warm", "node": "hello", "seq": 1, "seq": 2}',
        '{"execution_id": "warm", "node": "hello", "seq": 1}'.encode("utf-16"),
        b'{"execution_id": "warm", "node": "\\ud800", "seq": 1}',
        b'{"execution_id": "warm", "node": "hello", "seq": 1.0}',
        b'{"execution_id": "warm", "node": "hello", "seq": 9007199254740992}',
        b'{"execution_id": "warm", "node": "hello", "seq": ' + b"9" * 4000 + b"}",
        b'{"execution_id": "warm", "node": "hello", "seq": -1}',
        b'{"execution_id": "{warm}", "node": "hello", "seq": 1}',
        b'{"execution_id": "warm\\n", "node": "hello", "seq": 1}',
        b'{"execution_id": "' + b"w" * 201 + b'", "node": "hello", "seq": 1}',
        b'{"execution_id": "warm", "node": "", "seq": 1}',
        b'{"execution_id": "warm", "node": "' + b"n" * 201 + b'", "seq": 1}',
        b'{"execution_id": "warm", "node": "hello", "seq": 1, "branch": 5}',
        b"[]",
        b'"warm"',
    ],
    ids=lambda b: b[:40].decode(errors="replace"),
)
def test_a_signed_delivery_that_is_no_message_is_489_and_changes_nothing(api: Api, body: bytes) -> None:
    before = snapshot(api.redis)
    r = api.signed(body)
    assert_problem(r, 489)
    assert r.headers["upstash-nonretryable-error"] == "true"
    assert snapshot(api.redis) == before


@pytest.mark.parametrize(
    "branch",
    ["a/b/c", "../", "..", "x/1/", "/x/1", "x//1", "x/1/y", "x/-1", "x/٣", "x/1" + "/x/1" * 300, "x/1\n"],
)
def test_a_malformed_branch_path_is_489(api: Api, branch: str) -> None:
    assert api.first is not None
    before = snapshot(api.redis)
    message = {**api.first.to_dict(), "branch": branch}
    r = api.signed(json.dumps(message).encode())
    doc = assert_problem(r, 489)
    assert "branch" in doc["detail"] or "message" in doc["detail"]
    assert snapshot(api.redis) == before


@pytest.mark.parametrize(
    "change",
    [{"node": "no_such_step"}, {"node": "$compensate"}, {"seq": 1000}, {"seq": 0}, {"branch": "hello/0"}],
    ids=lambda c: json.dumps(c),
)
def test_a_well_formed_message_for_no_current_node_is_acknowledged_as_stale(api: Api, change: Any) -> None:
    assert api.first is not None
    before = snapshot(api.redis)
    r = api.signed(json.dumps({**api.first.to_dict(), **change}).encode())
    assert r.status_code == 200 and r.json()["result"] == "stale", r.text
    assert snapshot(api.redis) == before


def test_an_unknown_execution_is_489_and_changes_nothing(api: Api) -> None:
    before = snapshot(api.redis)
    r = api.signed(Message("no-such-execution", "hello", 1).to_json())
    assert_problem(r, 489, "unknown-execution")
    assert snapshot(api.redis) == before


def test_replayed_signed_deliveries_are_acknowledged_and_change_nothing(api: Api) -> None:
    """The first replay may re-publish and tidy the outbox its own delivery left (by design: a
    redelivery re-sends what may not have been sent); after that, replays change nothing at all."""
    assert api.first is not None
    body = api.first.to_json()
    sig = sign_ed25519(body, PUBLIC + "/v1/step", KEYS.private_key)
    first = api.client.post("/v1/step", content=body, headers={"Hopflow-Signature": sig})
    assert first.status_code == 200 and first.json()["result"] == "advanced"
    record = api.client.get("/v1/executions/warm", headers=AUTH).json()
    published = len(api.h.dispatcher.published)
    api.client.post("/v1/step", content=body, headers={"Hopflow-Signature": sig})
    after = snapshot(api.redis)
    token = sign_qstash(body, PUBLIC + "/v1/step", QSTASH_CURRENT)
    for headers in [{"Hopflow-Signature": sig}] * 3 + [{"Upstash-Signature": token}] * 2:
        r = api.client.post("/v1/step", content=body, headers=headers)
        assert r.status_code == 200 and r.json()["result"] == "stale"
    assert snapshot(api.redis) == after
    assert api.client.get("/v1/executions/warm", headers=AUTH).json() == record
    again = api.h.dispatcher.published[published:]
    assert {o.dedup_id for o in again} <= {o.dedup_id for o in api.h.dispatcher.published[:published]}


@pytest.mark.parametrize(
    "source",
    [
        nested(100_000).encode(),
        b"not json",
        b'{"execution_id": "warm", "node": "hello", "seq": 1, "branch": "a/b/c"}',
        b'{"execution_id": "{warm}", "node": "hello", "seq": 1}',
        b'{"execution_id": "warm", "node": "hello", "seq": 1, "seq": 2}',
    ],
    ids=lambda b: b[:30].decode(errors="replace"),
)
def test_a_signed_failure_callback_without_a_proper_message_is_489(api: Api, source: bytes) -> None:
    before = snapshot(api.redis)
    for path in ("/v1/step/failed", "/v1/step?hopflow=failure"):
        assert_problem(api.signed(failure_callback(source), path=path), 489)
    assert_problem(api.signed(nested(100_000).encode(), path="/v1/step/failed"), 489)
    assert snapshot(api.redis) == before
    assert api.client.get("/v1/executions/warm", headers=AUTH).json()["status"] == "running"


@pytest.mark.parametrize(
    "query",
    [
        "execution_id=warm&node=hello&seq=x",
        "execution_id=warm&node=hello&seq=%EF%BC%91",  # a full-width digit
        "execution_id=warm&node=hello&seq=99999999999999999999999",
        "execution_id=%7Bwarm%7D&node=hello&seq=1",
        "execution_id=warm&node=hello&seq=1&branch=../",
        "node=hello&seq=1",
    ],
)
def test_a_signed_offload_callback_naming_no_step_is_489(api: Api, query: str) -> None:
    before = snapshot(api.redis)
    body = json.dumps({"status": 200, "body": "", "retried": 0, "maxRetries": 0}).encode()
    assert_problem(api.signed(body, path="/v1/step/callback?" + query), 489)
    assert_problem(
        api.signed(nested(100_000).encode(), path="/v1/step/callback?execution_id=warm&node=hello&seq=1"), 489
    )
    assert snapshot(api.redis) == before


# ------------------------------------------------------------------------------- signatures and URLs


def qstash(body: bytes, url: str, key: str = QSTASH_CURRENT) -> dict[str, str]:
    return {"Upstash-Signature": sign_qstash(body, url, key)}


@pytest.mark.parametrize(
    ("signed_for", "sent_to"),
    [
        ("/v1/step/failed", "/v1/step"),  # a token for another route
        ("/v1/step", "/v1/step?x=1"),  # a query the signer did not sign
        ("/v1/step?x=1", "/v1/step"),
        ("/v1/step?hopflow=failure", "/v1/step"),
        ("/v1/step", "/v1/step?hopflow=failure"),
        ("/v1/step/", "/v1/step"),
        ("//v1/step", "/v1/step"),
        ("/V1/STEP", "/v1/step"),
    ],
)
def test_a_qstash_token_for_another_url_is_401(api: Api, signed_for: str, sent_to: str) -> None:
    assert api.first is not None
    body = api.first.to_json()
    before = snapshot(api.redis)
    r = api.client.post(sent_to, content=body, headers=qstash(body, PUBLIC + signed_for))
    doc = assert_problem(r, 401, "invalid-signature")
    assert "another URL" in doc["detail"]
    assert snapshot(api.redis) == before


def test_a_trailing_slash_is_no_route_not_a_redirect(api: Api) -> None:
    assert api.first is not None
    body = api.first.to_json()
    before = snapshot(api.redis)
    for path in ("/v1/step/", "/v1/executions/", "/healthz/", "/v1/executions/warm/"):
        r = api.client.post(path, content=body, headers=qstash(body, PUBLIC + path), follow_redirects=False)
        assert_problem(r, 404, "not-found")
        assert "location" not in r.headers
    assert snapshot(api.redis) == before


@pytest.mark.parametrize("public", ["https://example.test/api", "https://example.test/api/"])
def test_a_public_url_with_a_path_prefix(harness: Any, redis_db: Any, public: str) -> None:
    """Deployed under /api (uvicorn --root-path /api: path /api/v1/step, root_path /api)."""
    h = harness(GREET)
    eid = h.runtime.start("greet", {"name": "p"})
    message = h.dispatcher.pop().message
    body = message.to_json()
    app = create_app(h.runtime, config=config(public_url=public))
    with TestClient(app, root_path="/api", base_url="https://example.test") as client:
        before = snapshot(redis_db)
        for wrong in ("https://example.test/v1/step", "https://example.test/api/api/v1/step"):
            r = client.post("/api/v1/step", content=body, headers=qstash(body, wrong))
            assert_problem(r, 401, "invalid-signature")
        assert snapshot(redis_db) == before
        r = client.post(
            "/api/v1/step", content=body, headers=qstash(body, "https://example.test/api/v1/step")
        )
        assert r.status_code == 200 and r.json()["result"] == "advanced", r.text
    assert h.runtime.record(eid)["trace"][0]["step"] == "hello"


@pytest.mark.parametrize(
    "header",
    [
        "t={t},kid={kid},sig={sig},extra=1",
        "t={t},kid={kid}",
        "t={t},kid={kid},sig={sig},sig={sig}",
        "t={t},t={t},kid={kid},sig={sig}",
        "t={t},kid={kid},sig= {sig}",
        "T={t},KID={kid},SIG={sig}",
        "t={t};kid={kid};sig={sig}",
        "t=+{t},kid={kid},sig={sig}",
        "t={t}.0,kid={kid},sig={sig}",
        "t={t},kid={kid},sig={sig}" + "," * 2000,
        "",
        " ",
    ],
)
def test_malformed_ed25519_headers_are_401(api: Api, header: str) -> None:
    import time

    assert api.first is not None
    body = api.first.to_json()
    real = sign_ed25519(body, PUBLIC + "/v1/step", KEYS.private_key)
    fields = dict(part.split("=", 1) for part in real.split(","))
    value = header.format(t=fields["t"], kid=fields["kid"], sig=fields["sig"])
    assert abs(int(fields["t"]) - time.time()) < 60
    before = snapshot(api.redis)
    r = api.client.post("/v1/step", content=body, headers={"Hopflow-Signature": value})
    assert_problem(r, 401, "invalid-signature")
    assert snapshot(api.redis) == before


def test_whitespace_around_ed25519_fields_is_tolerated(api: Api) -> None:
    assert api.first is not None
    body = api.first.to_json()
    spaced = ", ".join(sign_ed25519(body, PUBLIC + "/v1/step", KEYS.private_key).split(","))
    r = api.client.post("/v1/step", content=body, headers={"Hopflow-Signature": spaced})
    assert r.status_code == 200 and r.json()["result"] == "advanced"


# ---------------------------------------------------------------------------------- API key


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer",
        "Bearer ",
        f"Bearer\t{API_KEY}",
        f"Bearer {API_KEY} extra",
        f"Bearer {API_KEY[:-1]}",
        f"Bearer {API_KEY}x",
        f"Bearer {API_KEY.upper()}",
        f"Basic {API_KEY}",
        f"Token {API_KEY}",
        API_KEY,
        f"Bearer{API_KEY}",
        f"Bearer {base64.b64encode(API_KEY.encode()).decode()}",
    ],
)
def test_wrong_authorization_headers_are_401_everywhere(api: Api, value: str) -> None:
    before = snapshot(api.redis)
    headers = {"Authorization": value} if value else {}
    calls = [
        ("POST", "/v1/executions", {"workflow": "greet", "input": {"name": "x"}}),
        ("GET", "/v1/executions/warm", None),
        ("GET", "/v1/executions/warm/history", None),
        ("POST", "/v1/executions/warm/cancel", None),
        ("POST", "/v1/events/greet.ok", {"key": "warm"}),
    ]
    for method, path, body in calls:
        r = api.client.request(method, path, json=body, headers=headers)
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert snapshot(api.redis) == before


@pytest.mark.parametrize(
    "value", [f"bearer {API_KEY}", f"BEARER {API_KEY}", f"Bearer   {API_KEY}", f"Bearer {API_KEY} "]
)
def test_the_bearer_scheme_is_case_insensitive_and_spaces_are_tolerated(api: Api, value: str) -> None:
    assert api.client.get("/v1/executions/warm", headers={"Authorization": value}).status_code == 200


def test_the_first_of_two_authorization_headers_counts(api: Api) -> None:
    headers = [("Authorization", "Bearer wrong"), ("Authorization", AUTH["Authorization"])]
    assert_problem(api.client.get("/v1/executions/warm", headers=headers), 401)


# ---------------------------------------------------------------------------------- dev bypass


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP", "Forwarded"])
@pytest.mark.parametrize("client", ["203.0.113.7", "127.0.0.1"])
def test_forwarded_loopback_claims_win_nothing(
    harness: Any, redis_db: Any, header: str, client: str
) -> None:
    h = harness(GREET)
    h.runtime.start("greet", {"name": "d"}, "dev")
    message = h.dispatcher.pop().message
    app = create_app(h.runtime, config=config())
    value = "for=127.0.0.1" if header == "Forwarded" else "127.0.0.1"
    with TestClient(app, client=(client, 5000)) as c:
        before = snapshot(redis_db)
        r = c.post("/v1/step", content=message.to_json(), headers={header: value})
        assert_problem(r, 401, "invalid-signature")
        assert_problem(c.get("/v1/executions/dev", headers={header: value}), 401, "unauthorized")
        assert snapshot(redis_db) == before


# ------------------------------------------------------------------------------ methods and routes

ROUTES = {
    "/v1/step": {"POST"},
    "/v1/step/failed": {"POST"},
    "/v1/step/callback": {"POST"},
    "/v1/executions": {"GET", "HEAD", "POST"},
    "/v1/counts": {"GET", "HEAD"},
    "/metrics": {"GET", "HEAD"},
    "/v1/executions/warm": {"GET", "HEAD"},
    "/v1/executions/warm/history": {"GET", "HEAD"},
    "/v1/executions/warm/cancel": {"POST"},
    "/v1/events/greet.ok": {"POST"},
    "/healthz": {"GET", "HEAD"},
    "/openapi.json": {"GET", "HEAD"},
}


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_every_route_refuses_the_other_methods_with_405(api: Api, path: str) -> None:
    before = snapshot(api.redis)
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "FOO"):
        if method in ROUTES[path]:
            continue
        r = api.client.request(method, path, headers=AUTH, content=b"{}")
        assert r.status_code == 405, (method, path, r.status_code)
        assert set(r.headers["allow"].split(", ")) == ROUTES[path]
        if method != "HEAD":  # a HEAD answer has no body
            assert_problem(r, 405, "method-not-allowed")
    assert snapshot(api.redis) == before


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v1",
        "/v2/step",
        "/v1/step/x",
        "/v1/events",
        "/v1/events/",
        "/" + "a" * 5000,
        "/%00",
        "/v1/step%00",
    ],
)
def test_unknown_routes_are_404_problems_with_a_bounded_echo(api: Api, path: str) -> None:
    r = api.client.post(path, headers=AUTH)
    doc = assert_problem(r, 404, "not-found")
    assert len(doc["detail"]) < 300 and len(doc.get("instance", "")) < 300


# ------------------------------------------------------------------------------------ health


def test_healthz_answers_in_bounded_time_when_redis_is_silent(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis that accepts connections and never answers: /healthz still answers, 503."""
    import socket
    import threading

    import redis as redis_lib

    import engine.web.api
    from engine.state.store import Store

    monkeypatch.setattr(engine.web.api, "HEALTH_TIMEOUT_S", 0.3)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:  # accept, read, answer nothing
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    h = harness(GREET)
    h.runtime.store = Store(redis_lib.Redis(port=listener.getsockname()[1], socket_timeout=None))
    try:
        with TestClient(create_app(h.runtime, config=config())) as client:
            r = client.get("/healthz")  # without a bound, this would hang for good (socket_timeout=None)
            doc = assert_problem(r, 503, "unavailable")
            assert doc["checks"]["redis"] == "unreachable"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()  # the abandoned PING sees EOF and its thread ends
        listener.close()


# ------------------------------------------------------------------------- over real loopback sockets


class Served:
    """uvicorn serving the app on 127.0.0.1 (a real socket), with the harness and Redis behind it."""

    def __init__(self, harness: Any, redis: Any, url: str) -> None:
        self.h = harness
        self.redis = redis
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])

    def exchange(
        self, data: bytes | list[bytes], *, pause: float = 0.0, timeout: float = 15.0
    ) -> tuple[int, dict[str, str], bytes]:
        """Send raw bytes; read one response (status, lower-cased headers, body)."""
        return exchange(self.port, data, pause=pause, timeout=timeout)


def exchange(
    port: int, data: bytes | list[bytes], *, pause: float = 0.0, timeout: float = 15.0
) -> tuple[int, dict[str, str], bytes]:
    import socket
    import time

    parts = [data] if isinstance(data, bytes) else data
    raw = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            for part in parts:
                sock.sendall(part)
                if pause:
                    time.sleep(pause)
        except OSError:  # the server answered and closed while we were still sending
            pass
        while b"\r\n\r\n" not in raw or len(raw) < _expected_length(raw):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def _expected_length(raw: bytes) -> int:
    head, sep, _ = raw.partition(b"\r\n\r\n")
    if not sep:
        return 1 << 60
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return 1 << 60  # no length: read until the server closes


@pytest.fixture
def served(harness: Any, redis_db: Any) -> Iterator[Served]:
    from engine.devtools.qstash_dev.server import serve_in_thread

    h = harness(GREET)
    h.runtime.start("greet", {"name": "warm"}, "warm")
    with serve_in_thread(create_app(h.runtime, config=config(body_timeout_s=0.5))) as url:
        yield Served(h, redis_db, url)


def request_bytes(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(["Content-Type: application/json"] if method == "POST" and "Content_Type" not in headers else []),
        *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


START = json.dumps({"workflow": "greet", "input": {"name": "x"}}).encode()


def assert_raw_problem(answer: tuple[int, dict[str, str], bytes], status: int, kind: str) -> dict[str, Any]:
    code, headers, body = answer
    assert code == status, (code, body[:300])
    assert headers["content-type"].startswith("application/problem+json")
    doc = json.loads(body)
    assert doc["status"] == status and doc["type"].endswith("/" + kind) and doc["detail"]
    for secret in SECRETS:
        assert secret.encode() not in body
    return dict(doc)


def test_over_loopback_a_lying_content_length_is_refused(served: Served) -> None:
    before = snapshot(served.redis)
    auth = {"Authorization": AUTH["Authorization"], "Content_Type": "application/json"}
    # shorter than the body: the server reads 5 bytes, which are no JSON (the rest is a bad next request)
    smaller = served.exchange(request_bytes("POST", "/v1/executions", START, Content_Length="5", **auth))
    assert_raw_problem(smaller, 400, "malformed-json")
    # longer than the body, and nothing more comes: the body timeout answers instead of hanging
    larger = served.exchange(request_bytes("POST", "/v1/executions", START, Content_Length="5000", **auth))
    doc = assert_raw_problem(larger, 408, "request-timeout")
    assert "0.5 s" in doc["detail"] and larger[1]["connection"] == "close"
    # Content-Length and chunked at once (a smuggling shape): refused
    both = request_bytes(
        "POST",
        "/v1/executions",
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(START), START),
        Content_Length="5",
        Transfer_Encoding="chunked",
        **auth,
    )
    assert served.exchange(both)[0] == 400
    assert snapshot(served.redis) == before


def test_over_loopback_malformed_http_is_refused_before_the_app(served: Served) -> None:
    """uvicorn (h11) answers these itself, 400 text/plain: the app never sees them (docs/http-api.md)."""
    before = snapshot(served.redis)
    auth = AUTH["Authorization"]
    for raw in [
        request_bytes("POST", "/v1/executions", START, Content_Length=str(len(START)), X_Other="1").replace(
            b"X-Other: 1", b"Content-Length: 3"
        ),  # two different lengths
        request_bytes("POST", "/v1/executions", START, Content_Length="12a", Authorization=auth),
        request_bytes("POST", "/v1/executions", START, Content_Length="9" * 5000, Authorization=auth),
        request_bytes(
            "POST",
            "/v1/executions",
            b"zz\r\n{}\r\n0\r\n\r\n",
            Transfer_Encoding="chunked",
            Authorization=auth,
        ),
        request_bytes("GET", "/v1/executions/warm", Authorization="Bearer \x00" + API_KEY),
        request_bytes("GET", "/healthz", X_Big="a" * 1_000_000),
        b"GARBAGE\r\n\r\n",
    ]:
        code, _, body = served.exchange(raw)
        assert code == 400, (code, body[:200])
        assert API_KEY.encode() not in body
    status, _, _ = served.exchange(request_bytes("GET", "/healthz"))
    assert status == 200  # the server is still there
    assert snapshot(served.redis) == before


def test_over_loopback_a_trickled_body_gets_408(served: Served) -> None:
    """A slow-loris body (a byte at a time, never finishing) is cut off by the body timeout."""
    import select
    import socket
    import time

    before = snapshot(served.redis)
    head = request_bytes(
        "POST", "/v1/events/greet.ok", Authorization=AUTH["Authorization"], Content_Length="1000"
    )
    with socket.create_connection(("127.0.0.1", served.port), timeout=15) as sock:
        sock.sendall(head + b"{")
        answered = False
        for _ in range(400):  # a byte every 50 ms would take 50 s to finish; the bound is 0.5 s
            if select.select([sock], [], [], 0.05)[0]:
                answered = True
                break
            try:
                sock.sendall(b" ")
            except OSError:
                answered = True
                break
        assert answered, "the server kept reading a trickled body"
        raw = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                # the server closed with our last trickled bytes unread, so its kernel answered them
                # with a reset; the answer that came before it has been read already (asserted below)
                break
            if not chunk:
                break
            raw += chunk
            time.sleep(0)
    assert raw.startswith(b"HTTP/1.1 408"), raw[:200]
    assert b"application/problem+json" in raw
    assert snapshot(served.redis) == before


def test_over_loopback_chunked_bodies_within_the_bound_work(served: Served) -> None:
    def chunked(body: bytes) -> bytes:
        pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
        return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"

    auth = {"Authorization": AUTH["Authorization"], "Transfer_Encoding": "chunked"}
    code, _, body = served.exchange(request_bytes("POST", "/v1/executions", chunked(START), **auth))
    assert code == 202, body
    before = snapshot(served.redis)
    answer = served.exchange(request_bytes("POST", "/v1/executions", chunked(nested(100).encode()), **auth))
    assert_raw_problem(answer, 400, "malformed-json")
    assert snapshot(served.redis) == before


def test_over_loopback_odd_headers_and_methods(served: Served) -> None:
    before = snapshot(served.redis)
    answer = served.exchange(
        request_bytes("GET", "/v1/executions/warm").replace(
            b"\r\n\r\n", b"\r\nAuthorization: Bearer \xd0\xba\xd0\xbb\r\n\r\n"
        )
    )
    assert_raw_problem(answer, 401, "unauthorized")
    assert_raw_problem(served.exchange(request_bytes("FOO", "/v1/executions")), 405, "method-not-allowed")
    # an absolute-form target reaches the app as its path: no route, nothing about evil.test trusted
    assert_raw_problem(
        served.exchange(request_bytes("GET", "http://evil.test/v1/executions/warm")), 404, "not-found"
    )
    assert_raw_problem(
        served.exchange(request_bytes("POST", "/v1/step/", b"{}", Content_Length="2")), 404, "not-found"
    )
    many = {f"X_H{i}": "a" for i in range(2000)}
    assert served.exchange(request_bytes("GET", "/healthz", **many))[0] == 200
    expect = request_bytes(
        "POST",
        "/v1/executions",
        Authorization=AUTH["Authorization"],
        Expect="100-continue",
        Content_Length="5000000",
    )
    assert_raw_problem(served.exchange(expect), 413, "payload-too-large")  # refused before the body is sent
    assert snapshot(served.redis) == before


def test_over_loopback_nothing_is_won_with_a_forwarded_for_header(harness: Any, redis_db: Any) -> None:
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 (its default): the client becomes whatever the
    header says. There is no loopback bypass any more: every variant needs a signature or a key."""
    from engine.devtools.qstash_dev.server import serve_in_thread

    h = harness(GREET)
    h.runtime.start("greet", {"name": "d"}, "dev")
    body = h.dispatcher.pop().message.to_json()
    with serve_in_thread(create_app(h.runtime, config=config())) as url:
        port = int(url.rsplit(":", 1)[1])
        before = snapshot(redis_db)
        for value in ("127.0.0.1", "203.0.113.7", "::1"):
            raw = request_bytes(
                "POST", "/v1/step", body, Content_Length=str(len(body)), X_Forwarded_For=value
            )
            assert_raw_problem(exchange(port, raw), 401, "invalid-signature")
            assert_raw_problem(
                exchange(port, request_bytes("GET", "/v1/executions/dev", X_Forwarded_For=value)),
                401,
                "unauthorized",
            )
        assert snapshot(redis_db) == before
        direct = request_bytes("GET", "/v1/executions/dev")  # plain loopback: no bypass either
        assert_raw_problem(exchange(port, direct), 401, "unauthorized")
        assert snapshot(redis_db) == before


def test_fifty_concurrent_starts_with_one_id_make_one_execution(served: Served) -> None:
    import threading

    import httpx

    barrier = threading.Barrier(50)
    answers: list[Any] = []

    def start() -> None:
        with httpx.Client(base_url=served.url, timeout=30) as client:
            barrier.wait()
            answers.append(
                client.post(
                    "/v1/executions",
                    json={"workflow": "greet", "input": {"name": "c"}, "id": "once"},
                    headers=AUTH,
                )
            )

    threads = [threading.Thread(target=start) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [202] * 50
    assert {a.json()["execution_id"] for a in answers} == {"once"}
    history = served.h.runtime.history("once")
    assert sum(e.get("event") == "started" for e in history) == 1
    results = [r.kind for r in served.h.drain() if r.execution_id == "once"]
    assert results.count("advanced") == 2 and set(results) <= {
        "advanced",
        "stale",
    }  # hello, then the wait parks
    record = served.h.runtime.record("once")
    assert [t["step"] for t in record["trace"]] == ["hello"]
    assert record["current"] == [{"branch": "", "node": "wait_ok", "phase": "park"}]


def test_no_secret_in_any_answer_or_log(
    harness: Any, redis_db: Any, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A battery of wrong requests against a server holding every kind of secret; answers and logs clean."""
    import logging

    import httpx

    from engine.devtools.qstash_dev.server import serve_in_thread

    h = harness(GREET)
    h.runtime.start("greet", {"name": "s"}, "sec")
    message = h.dispatcher.pop().message
    body = message.to_json()
    cfg = config(qstash_token=QSTASH_TOKEN, signing_key=KEYS.private_key)

    def broken(_message: Any) -> Any:
        raise RuntimeError(f"boom with {API_KEY} {QSTASH_TOKEN} {QSTASH_CURRENT} {KEYS.private_key}")

    answers: list[httpx.Response] = []
    with caplog.at_level(logging.DEBUG), serve_in_thread(create_app(h.runtime, config=cfg)) as url:
        with httpx.Client(base_url=url, timeout=15) as c:
            near = API_KEY[:-1] + "!"
            answers += [
                c.post(
                    "/v1/executions", json={"workflow": "greet"}, headers={"Authorization": f"Bearer {near}"}
                ),
                c.get("/v1/executions/sec", headers={"Authorization": f"Basic {API_KEY}"}),
                c.post(
                    "/v1/step",
                    content=body,
                    headers={
                        "Upstash-Signature": sign_qstash(body, PUBLIC + "/v1/step", QSTASH_NEXT[:-1] + "x")
                    },
                ),
                c.post(
                    "/v1/step",
                    content=body,
                    headers={
                        "Upstash-Signature": sign_qstash(body, "https://evil.test/v1/step", QSTASH_CURRENT)
                    },
                ),
                c.post("/v1/step", content=body, headers={"Upstash-Signature": QSTASH_CURRENT}),
                c.post(
                    "/v1/step",
                    content=body,
                    headers={"Hopflow-Signature": f"t=1,kid=x,sig={KEYS.private_key}"},
                ),
                c.post("/v1/executions", content=nested(5000).encode(), headers=AUTH),
                c.post(
                    "/v1/executions",
                    json={"workflow": "greet", "input": {"name": API_KEY * 2}, "id": "{x}"},
                    headers=AUTH,
                ),
                c.get("/nowhere/" + API_KEY),
                c.get("/healthz"),
                c.get("/openapi.json"),
            ]
            h.runtime.advance = broken
            sig = sign_ed25519(body, PUBLIC + "/v1/step", KEYS.private_key)
            answers.append(c.post("/v1/step", content=body, headers={"Hopflow-Signature": sig}))
    assert answers[-1].status_code == 500
    printed = capfd.readouterr()
    server_log = "\n".join(  # what the server logged (the test's own httpx client logs its URLs)
        caplog.handler.format(r) for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    for secret in SECRETS:
        for answer in answers[:-1] + answers[-1:]:
            if secret == API_KEY and answer.request.url.path.startswith("/nowhere"):
                continue  # the caller's own path, echoed back to the caller
            assert secret not in answer.text, (answer.request.url, secret)
        assert secret not in server_log, secret
        assert secret not in printed.out + printed.err, secret
    assert "boom with sha256:" in server_log  # the 500's traceback is logged, redacted


def test_the_openapi_document_states_the_limits() -> None:
    from engine.state.store import CLIENT_EXECUTION_ID, EXECUTION_ID
    from engine.web.openapi import CLIENT_ID_PATTERN, ID_PATTERN, openapi_document

    assert ID_PATTERN == EXECUTION_ID.pattern  # one pattern, stated twice
    assert CLIENT_ID_PATTERN == CLIENT_EXECUTION_ID.pattern  # a start's id: no "~" (child ids)
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    assert schemas["StartRequest"]["properties"]["id"]["pattern"] == CLIENT_ID_PATTERN
    assert schemas["Message"]["properties"]["seq"]["maximum"] == 2**53 - 1
    for path in ("/v1/step", "/v1/executions", "/v1/events/{name}"):
        assert "408" in doc["paths"][path]["post"]["responses"]


def test_a_timeout_message_for_an_execution_without_a_timeout_changes_nothing(api: Api) -> None:
    """``$timeout`` names no node of the graph: for an execution with no ``timeout`` it is stale,
    not a stop (it used to fail the execution with a timeout it never had)."""
    before = snapshot(api.redis)
    r = api.signed(Message("warm", "$timeout", 0).to_json())
    assert r.status_code == 200 and r.json()["result"] == "stale", r.text
    assert snapshot(api.redis) == before
    assert api.client.get("/v1/executions/warm", headers=AUTH).json()["status"] == "running"


def test_concurrent_deliveries_events_and_cancels_over_loopback(served: Served) -> None:
    """Twelve copies of one signed delivery advance once; twenty copies of one event resume the one
    waiter once; twelve concurrent cancels stop it once. No answer is a 5xx."""
    import threading

    import httpx

    def together(n: int, call: Any) -> list[httpx.Response]:
        barrier = threading.Barrier(n)
        answers: list[httpx.Response] = []

        def run() -> None:
            with httpx.Client(base_url=served.url, timeout=30) as client:
                barrier.wait()
                answers.append(call(client))

        threads = [threading.Thread(target=run) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(a.status_code < 500 for a in answers), [a.text for a in answers if a.status_code >= 500]
        return answers

    served.h.dispatcher.queue.clear()
    body = Message("warm", "hello", 1).to_json()
    sig = sign_ed25519(body, PUBLIC + "/v1/step", KEYS.private_key)
    step = together(12, lambda c: c.post("/v1/step", content=body, headers={"Hopflow-Signature": sig}))
    results = sorted(a.json()["result"] for a in step)
    assert results.count("advanced") == 1 and set(results) <= {"advanced", "stale", "busy"}, results
    served.h.drain()  # wait_ok parks on (greet.ok, warm)
    assert served.h.runtime.record("warm")["current"][0]["phase"] == "park"

    event = {"key": "warm", "data": {"ok": 1}}
    notified = together(20, lambda c: c.post("/v1/events/greet.ok", json=event, headers=AUTH))
    assert [a.status_code for a in notified] == [202] * 20
    assert sum(a.json()["resumed"] for a in notified) == 1

    served.h.runtime.start("greet", {"name": "cancel-me"}, "cancel-me")
    served.h.drain()
    cancels = together(12, lambda c: c.post("/v1/executions/cancel-me/cancel", headers=AUTH))
    assert {a.status_code for a in cancels} <= {202, 409} and 202 in {a.status_code for a in cancels}
    served.h.drain()
    record = served.h.runtime.record("cancel-me")
    assert record["status"] == "cancelled"
    history = served.h.runtime.history("cancel-me")
    assert sum(e.get("event") == "cancelled" for e in history) == 1
