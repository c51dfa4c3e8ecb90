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

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from engine.asgi import create_app
from engine.config import Config
from engine.signing import generate_ed25519_keypair

PUBLIC = "https://hopflow.test"
API_KEY = "red-team-api-key-0123456789abcdefghij"
QSTASH_CURRENT = "sig_redteam_current_0123456789ab"
QSTASH_NEXT = "sig_redteam_next_0123456789abcdef"
QSTASH_TOKEN = "qstash-token-redteam-0123456789"
KEYS = generate_ed25519_keypair()
SECRETS = (API_KEY, QSTASH_CURRENT, QSTASH_NEXT, QSTASH_TOKEN, KEYS.private_key)
AUTH = {"Authorization": f"Bearer {API_KEY}"}

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

    def start(self, input: Any, **extra: Any) -> str:
        r = self.client.post(
            "/v1/executions", json={"workflow": "greet", "input": input, **extra}, headers=AUTH
        )
        assert r.status_code == 202, r.text
        return str(r.json()["execution_id"])


@pytest.fixture
def api(harness: Any, redis_db: Any) -> Iterator[Api]:
    h = harness(GREET)
    with TestClient(create_app(h.runtime, config=config())) as client:
        a = Api(h, client, redis_db)
        a.start({"name": "warm"}, id="warm")  # the graph is stored: refusals must not add or change it
        yield a


# ------------------------------------------------------------------------------------ execution ids


def test_an_id_with_a_trailing_newline_is_refused(api: Api) -> None:
    """``^…$`` matched before a trailing newline: ``"abc\\n"`` was accepted as an execution id."""
    from engine.errors import InvalidExecutionId
    from engine.store import check_execution_id

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
