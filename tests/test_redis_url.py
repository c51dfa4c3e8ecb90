"""Reading ``REDIS_URL``: standalone, cluster (``redis+cluster://``), the mistakes a user makes, and no
password in what is shown. Detection of a cluster from a plain URL runs on a real cluster in
tests/test_cluster_commands.py; here a plain server must stay a plain client."""

from __future__ import annotations

import re
from typing import Any

import pytest

from engine.config import inspect_env, redact_url
from engine.state.redis_url import ConnectError, connect, describe, parse


def test_cluster_urls_list_their_seed_nodes_and_credentials() -> None:
    t = parse("rediss+cluster://app:s%40cret@h1:7000,h2:7001,[::1]:7002?ssl_cert_reqs=none")
    assert t.cluster and t.tls and t.scheme == "rediss"
    assert t.nodes == (("h1", 7000), ("h2", 7001), ("::1", 7002))
    assert (t.username, t.password) == ("app", "s@cret")
    assert dict(t.query) == {"ssl_cert_reqs": "none"}
    assert "s@cret" not in repr(t)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("localhost:6379", "is not a redis://"),
        ("http://h:6379", "is not a redis://"),
        ("redis://h1:1,h2:2", "redis+cluster://"),
        ("redis+cluster://h1:1/2", "only database 0"),
        ("redis://h:port", "not a number"),
        ("redis://h:6379/x", "not a number"),
        ("redis+cluster://", "names no host"),
    ],
)
def test_unusable_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(ConnectError, match=re.escape(why)):
        parse(url)


def test_upstash_is_recognised_by_its_host() -> None:
    assert parse("rediss://default:x@eu1-fine-cat-123.upstash.io:6379").upstash
    assert not parse("redis://upstash.io.example.com:6379").upstash


def test_a_cluster_url_is_shown_without_its_password() -> None:
    shown = redact_url("redis+cluster://app:hunter22@h1:7000,h2:7001")
    assert shown == "redis+cluster://app:***@h1:7000,h2:7001"
    config, issues = inspect_env({"REDIS_URL": "redis+cluster://app:hunter22@h1:7000,h2:7001"})
    assert config is not None and all("hunter22" not in i.message for i in issues)
    assert "hunter22" not in config.redact("error talking to redis+cluster://app:hunter22@h1:7000")


def test_a_standalone_server_stays_a_plain_client(redis_server: Any) -> None:
    import redis

    kwargs = redis_server.connection_pool.connection_kwargs
    if "path" in kwargs:
        url = f"unix://{kwargs['path']}"
    else:
        url = f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    client = connect(url)
    assert type(client) is redis.Redis
    assert describe(client)["mode"] == "standalone"
    client.close()


def test_an_unreachable_server_is_one_readable_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectError, match="cannot reach Redis"):
        connect(f"redis://127.0.0.1:{port}", socket_connect_timeout=1)


def test_only_fully_declared_scripts_carry_upstashs_key_locking_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.state.redis_url import script_key_locking
    from engine.state.store import FULLY_DECLARED, SCRIPTS, Store

    monkeypatch.delenv("HOPFLOW_SCRIPT_KEY_LOCKING", raising=False)
    assert script_key_locking("rediss://default:x@eu1-cat.upstash.io:6379")
    assert not script_key_locking("redis://127.0.0.1:6379")
    monkeypatch.setenv("HOPFLOW_SCRIPT_KEY_LOCKING", "0")
    assert not script_key_locking("rediss://default:x@eu1-cat.upstash.io:6379")
    flagged = Store(None, key_locking=True)._scripts
    plain = Store(None)._scripts
    for name in SCRIPTS:
        assert flagged[name].source.startswith("#!lua flags=allow-key-locking\n") == (name in FULLY_DECLARED)
        assert not plain[name].source.startswith("#!")
    assert {"checkpoint", "stop"} & FULLY_DECLARED == set()


def test_doctor_names_upstash_and_what_hopflow_does_there(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.commands.doctor import run_checks

    monkeypatch.delenv("HOPFLOW_SCRIPT_KEY_LOCKING", raising=False)
    found = run_checks({"REDIS_URL": "rediss://default:pw@eu1-cat-1.upstash.io:6379"}, network=False)
    upstash = [i for i in found if i.variable == "REDIS_URL" and "Upstash Redis" in i.message]
    assert len(upstash) == 1 and upstash[0].severity == "info"
    assert "allow-key-locking" in upstash[0].message and "pw" not in upstash[0].message
    found = run_checks({"REDIS_URL": "redis://default:pw@eu1-cat-1.upstash.io:6379"}, network=False)
    assert [i.severity for i in found if i.variable == "REDIS_URL" and "Upstash Redis" in i.message] == [
        "warning"
    ]
    local = run_checks({"REDIS_URL": "redis://127.0.0.1:1"}, network=False)
    assert not [i for i in local if i.variable == "REDIS_URL" and "Upstash" in i.message]


def test_the_app_answers_503_while_redis_is_unreachable_and_builds_again_later(tmp_path: Any) -> None:
    """Asking a server whether it is a cluster can fail (Redis down at a cold start): transient, so the
    API answers 503 (QStash retries) rather than calling the deployment misconfigured."""
    import socket

    from starlette.testclient import TestClient

    from engine.asgi import create_app
    from engine.config import Config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = "u" * 40
    config = Config(
        redis_url=f"redis://127.0.0.1:{port}/0",
        api_key=key,
        workflows_dir=str(tmp_path),
        public_url="https://testserver",  # the host TestClient sends (the request guard checks it)
    )
    with TestClient(create_app(config=config, run_local_dispatcher=False)) as http:
        for _ in range(2):  # not cached: each request tries again
            r = http.get("/v1/executions/x", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 503, r.text
