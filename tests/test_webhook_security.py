"""Who may drive executions: every way to get a delivery or an API call past the checks, refused.

A refused request must change nothing: the tests start a real execution, aim forged deliveries of
its current message at the webhook, and check that its record and the Redis keyspace did not move.
The dev bypass is proven loopback-only with Starlette's TestClient ``client=`` address.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient as _TestClient

from engine.asgi import create_app
from engine.config import Config
from engine.model import Message
from engine.signing import b64url_encode, generate_ed25519_keypair, sign_ed25519, sign_qstash

PUBLIC = "https://hopflow.test"
# clients reach the app by its public name, as QStash and API clients do (the guard answers no other Host)
TestClient = functools.partial(_TestClient, base_url=PUBLIC)
STEP = PUBLIC + "/v1/step"
CURRENT = "sig_current_0123456789abcdef"
NEXT = "sig_next_0123456789abcdef012"
API_KEY = "a-very-secret-api-key-0123456789abcdef"
KEYS = generate_ed25519_keypair()
OTHER = generate_ed25519_keypair()
SECRETS = (CURRENT, NEXT, API_KEY, KEYS.private_key, OTHER.private_key)

FLOW = """
name: two
steps:
  - id: one
    set: {a: 1}
  - id: two
    set: {b: 2}
"""


def config(**overrides: Any) -> Config:
    values: dict[str, Any] = {
        "api_key": API_KEY,
        "public_url": PUBLIC,
        "qstash_current_signing_key": CURRENT,
        "qstash_next_signing_key": NEXT,
        "verify_keys": (KEYS.public_key,),
    }
    values.update(overrides)
    return Config(**values)


class Target:
    """A running execution whose current message forged requests aim at."""

    def __init__(self, harness: Any, redis: Any, **cfg: Any) -> None:
        self.h = harness(FLOW)
        self.redis = redis
        self.config = config(**cfg)
        self.app = create_app(self.h.runtime, config=self.config)
        self.eid = self.h.start("two", {})
        self.message: Message = self.h.dispatcher.pop().message
        self.body = self.message.to_json()

    def client(self, host: str = "203.0.113.7") -> TestClient:
        # by the server's public name (or, without one, as a local client of a loopback server)
        public = urlsplit(self.config.public_url or "http://localhost")
        base = f"{public.scheme}://{public.netloc}"
        return TestClient(self.app, client=(host, 40000), base_url=base)

    def snapshot(self) -> Any:
        keys = sorted(self.redis.scan_iter(count=1000))
        return keys, self.h.runtime.record(self.eid)

    def unchanged(self, before: Any) -> bool:
        return bool(self.snapshot() == before and not self.h.dispatcher.queue)


@pytest.fixture
def target(harness: Any, redis_db: Any) -> Iterator[Target]:
    yield Target(harness, redis_db)


def refused(target: Target, r: Any, before: Any, reason: str | None = None) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["type"].endswith("/invalid-signature") or doc["type"].endswith("/unauthorized")
    if reason is not None:
        assert reason in doc["detail"], doc["detail"]
    for secret in SECRETS:
        assert secret not in r.text
    assert target.unchanged(before)


def qstash_header(token: str) -> dict[str, str]:
    return {"Upstash-Signature": token, "Content-Type": "application/json"}


# ----------------------------------------------------------------------------------------- QStash


def test_no_signature_is_401(target: Target) -> None:
    before = target.snapshot()
    with target.client() as c:
        refused(target, c.post("/v1/step", content=target.body), before, "not signed")


def test_a_valid_qstash_signature_advances(target: Target) -> None:
    with target.client() as c:
        r = c.post(
            "/v1/step", content=target.body, headers=qstash_header(sign_qstash(target.body, STEP, CURRENT))
        )
    assert r.status_code == 200 and r.json()["result"] == "advanced"


def test_the_next_key_is_accepted_during_rotation(target: Target) -> None:
    with target.client() as c:
        r = c.post(
            "/v1/step", content=target.body, headers=qstash_header(sign_qstash(target.body, STEP, NEXT))
        )
    assert r.status_code == 200 and r.json()["result"] == "advanced"


def test_a_forged_qstash_signature_is_401(target: Target) -> None:
    before = target.snapshot()
    with target.client() as c:
        token = sign_qstash(target.body, STEP, "sig_attacker_guess_0123456789")
        refused(
            target,
            c.post("/v1/step", content=target.body, headers=qstash_header(token)),
            before,
            "invalid signature",
        )


def test_a_tampered_body_is_401(target: Target) -> None:
    before = target.snapshot()
    token = sign_qstash(target.body, STEP, CURRENT)
    tampered = json.dumps({**target.message.to_dict(), "seq": target.message.seq + 1}).encode()
    with target.client() as c:
        refused(
            target,
            c.post("/v1/step", content=tampered, headers=qstash_header(token)),
            before,
            "body does not match",
        )
        # the same JSON, re-serialised: not the bytes that were signed
        spaced = json.dumps(target.message.to_dict(), indent=1).encode()
        refused(target, c.post("/v1/step", content=spaced, headers=qstash_header(token)), before)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.test/v1/step",
        "http://testserver/v1/step",  # the URL as seen behind a proxy, not the public one
        PUBLIC + "/v1/step/failed",
        PUBLIC + "/v1/step?x=1",
        "http://hopflow.test/v1/step",
    ],
)
def test_a_signature_for_another_url_is_401(target: Target, url: str) -> None:
    before = target.snapshot()
    with target.client() as c:
        r = c.post(
            "/v1/step", content=target.body, headers=qstash_header(sign_qstash(target.body, url, CURRENT))
        )
        refused(target, r, before, "another URL")


def test_the_query_string_is_part_of_the_signed_url(target: Target) -> None:
    before = target.snapshot()
    callback = json.dumps({"status": 500, "sourceBody": base64.b64encode(target.body).decode()}).encode()
    token = sign_qstash(callback, PUBLIC + "/v1/step/failed", CURRENT)
    with target.client() as c:
        # a failure callback signed for /v1/step/failed cannot be replayed at the alias URL
        r = c.post("/v1/step?hopflow=failure", content=callback, headers=qstash_header(token))
        refused(target, r, before, "another URL")


def test_an_expired_token_is_401(target: Target) -> None:
    before = target.snapshot()
    token = sign_qstash(target.body, STEP, CURRENT, now=time.time() - 3600)
    with target.client() as c:
        refused(
            target, c.post("/v1/step", content=target.body, headers=qstash_header(token)), before, "expired"
        )


def test_a_token_from_the_future_is_401(target: Target) -> None:
    before = target.snapshot()
    token = sign_qstash(target.body, STEP, CURRENT, now=time.time() + 3600)
    with target.client() as c:
        refused(
            target,
            c.post("/v1/step", content=target.body, headers=qstash_header(token)),
            before,
            "not valid yet",
        )


def _token(header: dict[str, Any], claims: dict[str, Any], key: str | None) -> str:
    head = b64url_encode(json.dumps(header).encode())
    body = b64url_encode(json.dumps(claims).encode())
    mac = hmac.new((key or "").encode(), f"{head}.{body}".encode(), hashlib.sha256).digest() if key else b""
    return f"{head}.{body}.{b64url_encode(mac)}"


def test_algorithm_confusion_and_garbage_are_401(target: Target) -> None:
    before = target.snapshot()
    now = int(time.time())
    claims = {
        "iss": "Upstash",
        "sub": STEP,
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "j",
        "body": b64url_encode(hashlib.sha256(target.body).digest()),
    }
    with target.client() as c:
        for token in [
            _token({"alg": "none", "typ": "JWT"}, claims, None),
            _token({"alg": "HS512", "typ": "JWT"}, claims, CURRENT),
            _token({"alg": "HS256", "typ": "JWT"}, {**claims, "iss": "Someone"}, CURRENT),
            "a.b",
            "",
            "x" * 9000,
        ]:
            refused(target, c.post("/v1/step", content=target.body, headers=qstash_header(token)), before)


def test_a_qstash_header_is_judged_only_as_qstash(target: Target) -> None:
    before = target.snapshot()
    headers = {
        "Upstash-Signature": "garbage",
        "Hopflow-Signature": sign_ed25519(target.body, STEP, KEYS.private_key),
    }
    with target.client() as c:
        refused(target, c.post("/v1/step", content=target.body, headers=headers), before)


def test_failure_callbacks_and_callbacks_need_a_signature_too(target: Target) -> None:
    before = target.snapshot()
    callback = json.dumps({"status": 500, "sourceBody": base64.b64encode(target.body).decode()}).encode()
    with target.client() as c:
        refused(target, c.post("/v1/step/failed", content=callback), before)
        refused(target, c.post("/v1/step?hopflow=failure", content=callback), before)
        query = f"?execution_id={target.eid}&node=one&seq=1"
        refused(target, c.post("/v1/step/callback" + query, content=callback), before)
        token = sign_qstash(callback, PUBLIC + "/v1/step/failed", "sig_wrong_key_0123456789")
        refused(target, c.post("/v1/step/failed", content=callback, headers=qstash_header(token)), before)
    assert target.h.runtime.record(target.eid)["status"] == "running"


def test_a_signed_failure_callback_is_accepted(target: Target) -> None:
    callback = json.dumps(
        {"status": 500, "retried": 3, "maxRetries": 3, "sourceBody": base64.b64encode(target.body).decode()}
    ).encode()
    token = sign_qstash(callback, PUBLIC + "/v1/step/failed", CURRENT)
    with target.client() as c:
        r = c.post("/v1/step/failed", content=callback, headers=qstash_header(token))
    assert r.status_code == 200
    assert target.h.runtime.record(target.eid)["status"] == "dead"


def test_the_public_url_with_a_path_prefix(harness: Any, redis_db: Any) -> None:
    """Behind a proxy mounting the app under /hopflow, the signed URL is the public one."""
    t = Target(harness, redis_db, public_url="https://example.test/hopflow")
    token = sign_qstash(t.body, "https://example.test/hopflow/v1/step", CURRENT)
    with t.client() as c:
        assert c.post("/v1/step", content=t.body, headers=qstash_header(token)).status_code == 200


def test_without_a_public_url_nothing_can_be_verified(harness: Any, redis_db: Any) -> None:
    t = Target(harness, redis_db, public_url=None)
    before = t.snapshot()
    token = sign_qstash(t.body, "http://testserver/v1/step", CURRENT)
    with t.client() as c:
        r = c.post("/v1/step", content=t.body, headers=qstash_header(token))
    assert r.status_code == 500 and r.json()["type"].endswith("/misconfigured")
    assert t.unchanged(before)


# ---------------------------------------------------------------------------------------- Ed25519


def ed_header(
    body: bytes, key: str = KEYS.private_key, url: str = STEP, now: float | None = None
) -> dict[str, str]:
    return {"Hopflow-Signature": sign_ed25519(body, url, key, now=now)}


def test_a_valid_ed25519_signature_advances(target: Target) -> None:
    with target.client() as c:
        r = c.post("/v1/step", content=target.body, headers=ed_header(target.body))
    assert r.status_code == 200 and r.json()["result"] == "advanced"


def test_a_rotated_ed25519_key_is_accepted_when_listed(harness: Any, redis_db: Any) -> None:
    t = Target(harness, redis_db, verify_keys=(KEYS.public_key, OTHER.public_key))
    with t.client() as c:
        assert (
            c.post("/v1/step", content=t.body, headers=ed_header(t.body, OTHER.private_key)).status_code
            == 200
        )


def test_an_unknown_ed25519_key_is_401(target: Target) -> None:
    before = target.snapshot()
    with target.client() as c:
        refused(
            target,
            c.post("/v1/step", content=target.body, headers=ed_header(target.body, OTHER.private_key)),
            before,
            "unknown key id",
        )


def test_a_forged_ed25519_signature_with_a_known_key_id_is_401(target: Target) -> None:
    before = target.snapshot()
    real = sign_ed25519(target.body, STEP, KEYS.private_key)
    forged = sign_ed25519(target.body, STEP, OTHER.private_key)
    # the right key id, someone else's signature
    mixed = real.rsplit("sig=", 1)[0] + "sig=" + forged.rsplit("sig=", 1)[1]
    with target.client() as c:
        refused(
            target,
            c.post("/v1/step", content=target.body, headers={"Hopflow-Signature": mixed}),
            before,
            "invalid signature",
        )


def test_ed25519_tampered_body_wrong_url_stale_and_future_are_401(target: Target) -> None:
    before = target.snapshot()
    tampered = json.dumps({**target.message.to_dict(), "node": "two"}).encode()
    with target.client() as c:
        refused(target, c.post("/v1/step", content=tampered, headers=ed_header(target.body)), before)
        refused(
            target,
            c.post(
                "/v1/step",
                content=target.body,
                headers=ed_header(target.body, url="http://testserver/v1/step"),
            ),
            before,
        )
        refused(
            target,
            c.post("/v1/step", content=target.body, headers=ed_header(target.body, now=time.time() - 301)),
            before,
            "stale",
        )
        refused(
            target,
            c.post("/v1/step", content=target.body, headers=ed_header(target.body, now=time.time() + 301)),
            before,
            "stale",
        )
        refused(
            target,
            c.post("/v1/step", content=target.body, headers={"Hopflow-Signature": "t=1,kid=x"}),
            before,
        )


# ------------------------------------------------------------------------------------- dev bypass


def test_there_is_no_dev_mode_even_when_the_old_variable_is_set(harness: Any, redis_db: Any) -> None:
    """HOPFLOW_DEV_INSECURE=1 used to let loopback clients skip signatures and keys — including the
    server's own http steps, which are loopback clients. It is ignored now (doctor warns)."""
    from engine.config import inspect_env

    cfg, issues = inspect_env({"HOPFLOW_DEV_INSECURE": "1", "HOPFLOW_PUBLIC_URL": PUBLIC})
    assert cfg is not None and not hasattr(cfg, "dev_insecure")
    assert any(i.variable == "HOPFLOW_DEV_INSECURE" and i.severity == "warning" for i in issues)
    t = Target(harness, redis_db, api_key=None)
    before = t.snapshot()
    for host in ("127.0.0.1", "::1"):
        with t.client(host) as c:
            refused(t, c.post("/v1/step", content=t.body), before)
            r = c.get(f"/v1/executions/{t.eid}")
            assert r.status_code == 503 and r.json()["type"].endswith("/api-disabled")
            assert t.unchanged(before)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "::1", "203.0.113.7", "10.0.0.2", "192.168.1.1", "testclient", "::ffff:8.8.8.8"]
)
def test_no_client_address_is_trusted(harness: Any, redis_db: Any, host: str) -> None:
    t = Target(harness, redis_db)
    before = t.snapshot()
    with t.client(host) as c:
        refused(t, c.post("/v1/step", content=t.body), before)
        refused(t, c.get(f"/v1/executions/{t.eid}"), before)
        refused(t, c.get(f"/v1/executions/{t.eid}/history"), before)


def test_loopback_requests_that_came_through_a_proxy_are_refused(harness: Any, redis_db: Any) -> None:
    t = Target(harness, redis_db)
    before = t.snapshot()
    with t.client("127.0.0.1") as c:
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            refused(t, c.post("/v1/step", content=t.body, headers={header: "203.0.113.7"}), before)


def test_without_the_flag_loopback_is_not_trusted(target: Target) -> None:
    before = target.snapshot()
    with target.client("127.0.0.1") as c:
        refused(target, c.post("/v1/step", content=target.body), before)
        refused(target, c.get(f"/v1/executions/{target.eid}"), before)


# ----------------------------------------------------------------------------------------- secrets


def test_secrets_never_appear_in_errors_logs_or_reprs(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG), target.client() as c:
        c.post(
            "/v1/step",
            content=target.body,
            headers=qstash_header(sign_qstash(target.body, STEP, "sig_bad_key_x")),
        )
        c.post(
            "/v1/executions",
            json={"workflow": "two"},
            headers={"Authorization": "Bearer " + API_KEY[:-1] + "!"},
        )
        c.get("/nowhere")
    cfg = config(signing_key=KEYS.private_key, qstash_token="qstash-token-secret-value")
    shown = repr(cfg) + str(cfg) + caplog.text
    for secret in (*SECRETS, "qstash-token-secret-value"):
        assert secret not in shown
    assert "sha256:" in repr(cfg)


def test_the_api_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch, target: Target) -> None:
    import engine.web.auth

    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(engine.web.auth.hmac, "compare_digest", spy)
    with target.client() as c:
        c.get(f"/v1/executions/{target.eid}", headers={"Authorization": "Bearer nope"})
    assert (b"nope", API_KEY.encode()) in seen


def test_an_unexpected_error_is_a_500_without_details_and_a_redacted_log(
    harness: Any, redis_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    t = Target(harness, redis_db)

    def broken(message: Any) -> Any:
        raise RuntimeError(f"bug while holding {API_KEY} and {CURRENT}")

    t.h.runtime.advance = broken
    with caplog.at_level(logging.ERROR, logger="hopflow.asgi"), t.client() as c:
        r = c.post("/v1/step", content=t.body, headers=ed_header(t.body))
    assert r.status_code == 500 and r.json()["type"].endswith("/internal")
    assert "bug" not in r.text and API_KEY not in r.text
    assert "RuntimeError: bug while holding sha256:" in caplog.text  # the traceback, redacted
    assert API_KEY not in caplog.text and CURRENT not in caplog.text
