"""The request guard (Host, Origin, JSON bodies) and scoped API keys, route by route."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from engine.config import ApiKey, Config
from engine.web.app import create_app

PUBLIC = "https://hopflow.test"
OPERATE = "o" * 40
READ = "r" * 40
OLD = "p" * 40  # HOPFLOW_API_KEY, still valid during a rotation
GREET = """
name: greet
input: {type: object, properties: {name: {type: string}}}
steps:
  - id: wait
    wait: {event: greet.ok, key: "{{ input.name }}"}
"""


def config(**overrides: Any) -> Config:
    values: dict[str, Any] = {
        "api_key": OLD,
        "api_keys": (ApiKey("read", READ), ApiKey("operate", OPERATE)),
        "public_url": PUBLIC,
    }
    values.update(overrides)
    return Config(**values)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


@pytest.fixture
def app(harness: Any, redis_db: Any) -> Any:
    h = harness(GREET)
    h.runtime.start("greet", {"name": "a"}, "x1")
    return create_app(h.runtime, config=config())


def problem(r: Any, status: int, kind: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["type"].endswith("/" + kind), doc
    return dict(doc)


# ----------------------------------------------------------------------------------- scopes

ROUTES = [  # (method, path, body, scope)
    ("GET", "/v1/executions/x1", None, "read"),
    ("GET", "/v1/executions/x1/history", None, "read"),
    ("POST", "/v1/executions", {"workflow": "greet", "input": {"name": "b"}, "id": "x2"}, "operate"),
    ("POST", "/v1/events/greet.ok", {"key": "zzz", "data": 1}, "operate"),
    ("POST", "/v1/executions/x1/cancel", {"compensate": False}, "operate"),
]


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
@pytest.mark.parametrize("key", ["none", "wrong", READ, OPERATE, OLD])
def test_every_route_needs_a_key_with_its_scope(
    app: Any, method: str, path: str, body: Any, scope: str, key: str
) -> None:
    headers = {} if key == "none" else auth("w" * 40 if key == "wrong" else key)
    with TestClient(app, base_url=PUBLIC) as c:
        r = c.request(method, path, json=body, headers=headers)
    if key in ("none", "wrong"):
        problem(r, 401, "unauthorized")
    elif key == READ and scope == "operate":
        doc = problem(r, 403, "forbidden")
        assert "scope read" in doc["detail"] and "needs scope operate" in doc["detail"]
        assert READ not in r.text
    else:
        assert r.status_code in (200, 202), r.text


def test_without_any_key_the_api_is_disabled(app: Any, harness: Any) -> None:
    bare = create_app(harness(GREET).runtime, config=config(api_key=None, api_keys=()))
    with TestClient(bare, base_url=PUBLIC) as c:
        problem(c.get("/v1/executions/x1", headers=auth(READ)), 503, "api-disabled")


def test_the_config_never_shows_a_key() -> None:
    text = repr(config()) + config().redact(f"{READ} {OPERATE} {OLD}")
    assert READ not in text and OPERATE not in text and OLD not in text


# ------------------------------------------------------------------------------------- Host


@pytest.mark.parametrize("host", ["evil.example", "hopflow.test.evil.example", "127.0.0.1.nip.io"])
def test_a_foreign_host_is_421(app: Any, host: str) -> None:
    with TestClient(app, base_url=f"http://{host}") as c:
        problem(c.get("/v1/executions/x1", headers=auth(READ)), 421, "misdirected-request")
        problem(c.post("/v1/step", content=b"{}"), 421, "misdirected-request")
        assert c.get("/healthz").status_code in (200, 503)  # probes use the pod's address


def test_loopback_names_are_answered_on_a_loopback_connection_only(app: Any) -> None:
    for base in ("http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000"):
        with TestClient(app, base_url=base) as c:  # the TestClient's server address is the URL's host
            assert c.get("/v1/executions/x1", headers=auth(READ)).status_code == 200


def test_allowed_hosts_add_names_and_patterns(harness: Any) -> None:
    app = create_app(
        harness(GREET).runtime, config=config(allowed_hosts=("api.example.com", "*.preview.app"))
    )
    for base, ok in (
        ("https://api.example.com", True),
        ("https://pr-1.preview.app", True),
        ("https://preview.app", False),
        ("https://example.com", False),
    ):
        with TestClient(app, base_url=base) as c:
            r = c.get("/v1/executions/nope", headers=auth(READ))
            assert (r.status_code == 404) if ok else (r.status_code == 421), (base, r.text)


# ----------------------------------------------------------------------------------- Origin


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "null", "http://hopflow.test:8080", "https://hopflow.test.evil.example"],
)
def test_a_foreign_origin_is_403_and_changes_nothing(app: Any, redis_db: Any, origin: str) -> None:
    before = sorted(redis_db.scan_iter())
    with TestClient(app, base_url=PUBLIC) as c:
        body = {"workflow": "greet", "input": {"name": "z"}, "id": "evil"}
        r = c.post("/v1/executions", json=body, headers={**auth(OPERATE), "Origin": origin})
        problem(r, 403, "cross-origin")
        problem(
            c.post("/v1/events/greet.ok", json={"key": "a"}, headers={"Origin": origin}), 403, "cross-origin"
        )
    assert sorted(redis_db.scan_iter()) == before


def test_same_origin_and_no_origin_pass(app: Any) -> None:
    with TestClient(app, base_url=PUBLIC) as c:
        for extra in ({}, {"Origin": PUBLIC}, {"Origin": PUBLIC, "Sec-Fetch-Site": "same-origin"}):
            assert c.get("/v1/executions/x1", headers={**auth(READ), **extra}).status_code == 200
        r = c.get("/v1/executions/x1", headers={**auth(READ), "Sec-Fetch-Site": "cross-site"})
        problem(r, 403, "cross-origin")
    with TestClient(app, base_url="http://localhost:8000") as c:
        r = c.get("/v1/executions/x1", headers={**auth(READ), "Origin": "http://localhost:8000"})
        assert r.status_code == 200
        r = c.get("/v1/executions/x1", headers={**auth(READ), "Origin": "http://localhost:3000"})
        problem(r, 403, "cross-origin")


# ------------------------------------------------------------------------------- JSON bodies


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
@pytest.mark.parametrize("path", ["/v1/executions", "/v1/events/greet.ok", "/v1/executions/x1/cancel"])
def test_non_json_bodies_are_415(app: Any, redis_db: Any, ctype: str | None, path: str) -> None:
    before = sorted(redis_db.scan_iter())
    headers = {"Authorization": f"Bearer {OPERATE}"}
    if ctype:
        headers["Content-Type"] = ctype
    body = b'{"workflow": "greet", "input": {"name": "t"}, "key": "a"}'
    with TestClient(app, base_url=PUBLIC) as c:
        problem(c.post(path, content=body, headers=headers), 415, "unsupported-media-type")
    assert sorted(redis_db.scan_iter()) == before


def test_json_types_pass(app: Any) -> None:
    with TestClient(app, base_url=PUBLIC) as c:
        for ctype in ("application/json", "application/json; charset=utf-8", "application/merge-patch+json"):
            headers = {"Authorization": f"Bearer {OPERATE}", "Content-Type": ctype}
            r = c.post("/v1/events/greet.ok", content=b'{"key": "q"}', headers=headers)
            assert r.status_code == 202, (ctype, r.text)
        # a bodiless cancel needs no type
        r = c.post("/v1/executions/x1/cancel", headers={"Authorization": f"Bearer {OPERATE}"})
        assert r.status_code == 202, r.text


# ----------------------------------------------------------------------------- the dev key


def test_serve_without_a_key_makes_a_dev_key_shown_once(
    harness: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """No key-less mode: ``hopflow serve`` without a key prints a random one (once) and requires it."""
    from engine.commands.serve import with_dev_key

    cfg = with_dev_key(Config(public_url=PUBLIC))
    err = capsys.readouterr().err
    key = cfg.api_key
    assert key and len(key) >= 32 and err.count(key) == 1 and f"export HOPFLOW_API_KEY={key}" in err
    assert key not in repr(cfg) and key not in cfg.redact(f"token {key}")
    assert with_dev_key(Config()).api_key != key  # random per run
    capsys.readouterr()
    app = create_app(harness(GREET).runtime, config=cfg)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:  # a loopback client gets no pass
        problem(c.get("/v1/executions/nope"), 401, "unauthorized")
        assert c.get("/v1/executions/nope", headers=auth(key)).status_code == 404
