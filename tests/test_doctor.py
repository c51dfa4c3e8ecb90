"""``hopflow doctor``: each misconfiguration gets its precise message, its fix and the right exit code.

Network checks run against real servers on 127.0.0.1: the embedded Redis, the QStash dev server,
and the ASGI app served by uvicorn (``--check-url``).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli import cli
from engine.commands.doctor import run_checks
from engine.config import VARIABLES, Issue, fingerprint
from engine.signing import generate_ed25519_keypair

API_KEY = "doctor-test-api-key-0123456789abcdefgh"
PAIR = generate_ed25519_keypair()
OTHER = generate_ed25519_keypair()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    kwargs = redis_server.connection_pool.connection_kwargs
    return f"unix://{kwargs['path']}" if kwargs.get("path") else f"redis://{kwargs['host']}:{kwargs['port']}"


def doctor(*args: str) -> Any:
    return CliRunner().invoke(cli, ["doctor", *args])


def findings(issues: list[Issue], variable: str, severity: str | None = None) -> list[Issue]:
    return [i for i in issues if i.variable == variable and (severity is None or i.severity == severity)]


def messages(issues: list[Issue], variable: str, severity: str) -> list[str]:
    return [i.message for i in findings(issues, variable, severity)]


def only(issues: list[Issue], variable: str, severity: str) -> Issue:
    found = findings(issues, variable, severity)
    assert len(found) == 1, (variable, severity, issues)
    return found[0]


# ------------------------------------------------------------------------- the variables, offline


def test_a_minimal_local_setup_passes_with_a_warning(clean_env: pytest.MonkeyPatch) -> None:
    result = doctor("--offline")
    assert result.exit_code == 0, result.output
    assert "warning  HOPFLOW_API_KEY" in result.output
    assert "unset: the local dispatcher delivers messages" in result.output
    assert "0 error(s), 1 warning(s): the runtime can work" in result.output
    for variable in VARIABLES:  # every variable is reported
        assert variable in result.output
    assert doctor("--offline", "--strict").exit_code == 1


def test_a_short_api_key_is_an_error_with_the_fix(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HOPFLOW_API_KEY", "hunter2")
    result = doctor("--offline")
    assert result.exit_code == 1
    assert "error    HOPFLOW_API_KEY" in result.output
    assert "too short (7 characters; at least 32)" in result.output
    assert "fix: set HOPFLOW_API_KEY to the output of `hopflow keys api-key`" in result.output
    assert "hunter2" not in result.output
    assert result.output.rstrip().endswith("the runtime cannot work as configured")


def test_a_good_api_key_is_shown_as_a_fingerprint(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HOPFLOW_API_KEY", API_KEY)
    result = doctor("--offline")
    assert result.exit_code == 0
    assert f"set ({fingerprint(API_KEY)}, {len(API_KEY)} characters, scope operate)" in result.output
    assert API_KEY not in result.output


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "'soon' is not a time budget"),
        ("0", "it must be a positive number"),
        ("-3", "positive"),
        ("1h30", "not a time budget"),
        ("nan", "positive"),
    ],
)
def test_a_bad_time_budget(clean_env: pytest.MonkeyPatch, value: str, message: str) -> None:
    issues = run_checks({"HOPFLOW_TIME_BUDGET": value}, network=False)
    issue = only(issues, "HOPFLOW_TIME_BUDGET", "error")
    assert message in issue.message
    assert "e.g. 7.5 or 10s" in issue.fix


@pytest.mark.parametrize(("value", "shown"), [("10s", "10 s"), ("2500ms", "2.5 s"), ("9.5", "9.5 s")])
def test_good_time_budgets(value: str, shown: str) -> None:
    assert (
        only(run_checks({"HOPFLOW_TIME_BUDGET": value}, network=False), "HOPFLOW_TIME_BUDGET", "ok").message
        == shown
    )


def test_qstash_without_public_url_or_signing_keys(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("QSTASH_TOKEN", "qstash-token-value")
    result = doctor("--offline")
    assert result.exit_code == 1
    assert (
        "error    HOPFLOW_PUBLIC_URL" in result.output
        and "QStash needs the webhook's public URL" in result.output
    )
    assert "error    QSTASH_CURRENT_SIGNING_KEY" in result.output
    assert "every webhook call would get 401" in result.output
    assert "qstash-token-value" not in result.output


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ftp://example.com", "is not an absolute http(s) URL"),
        ("example.com", "is not an absolute http(s) URL"),
        ("https://example.com/?a=1", "must not have a query string"),
        ("https://example.com#x", "fragment"),
        ("https://example.com:99999", "is not an absolute http(s) URL"),
    ],
)
def test_a_malformed_public_url(value: str, message: str) -> None:
    issue = only(run_checks({"HOPFLOW_PUBLIC_URL": value}, network=False), "HOPFLOW_PUBLIC_URL", "error")
    assert message in issue.message


def test_a_local_public_url_with_real_qstash_is_an_error() -> None:
    env = {
        "QSTASH_TOKEN": "t",
        "QSTASH_CURRENT_SIGNING_KEY": "sig_a",
        "QSTASH_NEXT_SIGNING_KEY": "sig_b",
        "HOPFLOW_PUBLIC_URL": "http://localhost:8000",
    }
    issue = only(run_checks(env, network=False), "HOPFLOW_PUBLIC_URL", "error")
    assert "QStash delivers over the internet" in issue.message and "qstash-dev" in issue.fix


def test_plain_http_public_url_is_a_warning() -> None:
    issue = only(
        run_checks({"HOPFLOW_PUBLIC_URL": "http://example.com"}, network=False),
        "HOPFLOW_PUBLIC_URL",
        "warning",
    )
    assert "https://" in issue.fix


def test_rotation_needs_the_next_signing_key() -> None:
    env = {"QSTASH_CURRENT_SIGNING_KEY": "sig_abc"}
    assert "rotation" in only(run_checks(env, network=False), "QSTASH_NEXT_SIGNING_KEY", "warning").message
    env = {"QSTASH_NEXT_SIGNING_KEY": "sig_abc"}
    assert (
        "unset while QSTASH_NEXT_SIGNING_KEY is set"
        in only(run_checks(env, network=False), "QSTASH_CURRENT_SIGNING_KEY", "error").message
    )


def test_ed25519_keys_that_parse_and_match() -> None:
    env = {
        "HOPFLOW_SIGNING_KEY": PAIR.private_key,
        "HOPFLOW_VERIFY_KEYS": f"{OTHER.public_key},{PAIR.public_key}",
    }
    issues = run_checks(env, network=False)
    assert only(issues, "HOPFLOW_SIGNING_KEY", "ok")
    assert "2 key(s)" in only(issues, "HOPFLOW_VERIFY_KEYS", "ok").message
    assert not findings(issues, "HOPFLOW_SIGNING_KEY", "error")


def test_ed25519_keys_that_do_not_match() -> None:
    env = {"HOPFLOW_SIGNING_KEY": PAIR.private_key, "HOPFLOW_VERIFY_KEYS": OTHER.public_key}
    issue = only(run_checks(env, network=False), "HOPFLOW_VERIFY_KEYS", "error")
    assert "does not contain the public key of HOPFLOW_SIGNING_KEY" in issue.message
    assert issue.fix == f"add {PAIR.public_key} to HOPFLOW_VERIFY_KEYS"


@pytest.mark.parametrize(
    ("env", "variable", "message"),
    [
        (
            {"HOPFLOW_SIGNING_KEY": PAIR.public_key},
            "HOPFLOW_SIGNING_KEY",
            "expected a private key but got a public key",
        ),
        (
            {"HOPFLOW_VERIFY_KEYS": PAIR.private_key},
            "HOPFLOW_VERIFY_KEYS",
            "expected a public key but got a private key",
        ),
        ({"HOPFLOW_SIGNING_KEY": "hopflow_sk_c2hvcnQ"}, "HOPFLOW_SIGNING_KEY", "must encode 32 bytes"),
        ({"HOPFLOW_VERIFY_KEYS": "ssh-ed25519 AAAA"}, "HOPFLOW_VERIFY_KEYS", "must start with 'hopflow_pk_'"),
        ({"HOPFLOW_VERIFY_KEYS": ", ,"}, "HOPFLOW_VERIFY_KEYS", "lists no key"),
    ],
)
def test_malformed_ed25519_keys(env: dict[str, str], variable: str, message: str) -> None:
    issue = only(run_checks(env, network=False), variable, "error")
    assert message in issue.message
    assert "hopflow keys generate" in issue.fix
    assert PAIR.private_key not in issue.message + issue.fix


def test_a_signing_key_without_verify_keys_is_a_warning() -> None:
    issue = only(
        run_checks({"HOPFLOW_SIGNING_KEY": PAIR.private_key}, network=False), "HOPFLOW_VERIFY_KEYS", "warning"
    )
    assert issue.fix == f"set HOPFLOW_VERIFY_KEYS={PAIR.public_key} on every worker"


def test_the_removed_dev_mode_is_ignored_with_a_warning() -> None:
    for value in ("1", "maybe"):
        issue = only(
            run_checks({"HOPFLOW_DEV_INSECURE": value}, network=False), "HOPFLOW_DEV_INSECURE", "warning"
        )
        assert "ignored" in issue.message
    assert not [
        i
        for i in run_checks({"HOPFLOW_DEV_INSECURE": "0"}, network=False)
        if i.severity in ("warning", "error") and i.variable == "HOPFLOW_DEV_INSECURE"
    ]


def test_scoped_keys_are_shown_as_fingerprints_only(clean_env: pytest.MonkeyPatch) -> None:
    reader, operator = "r" * 40, "o" * 40
    clean_env.setenv("HOPFLOW_API_KEY", API_KEY)
    clean_env.setenv("HOPFLOW_API_KEYS", f"read:{reader}, operate:{operator}")
    result = doctor("--offline", "--json")
    assert result.exit_code == 0, result.output
    assert reader not in result.output and operator not in result.output and API_KEY not in result.output
    keys = [f for f in json.loads(result.output)["findings"] if f["variable"] == "HOPFLOW_API_KEYS"]
    assert keys[0]["message"] == f"2 key(s): read {fingerprint(reader)}, operate {fingerprint(operator)}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("admin:" + "a" * 40, "entry 1 is not scope:key"),
        ("read:short", "entry 1: the key must be at least 32"),
        (f"read:{'a' * 40},operate:{'a' * 40}", "entry 2: the same key is listed twice"),
        (f"read:{API_KEY}", "lists the key of HOPFLOW_API_KEY again"),
    ],
)
def test_bad_scoped_keys_are_errors_that_never_echo_a_key(value: str, message: str) -> None:
    issues = run_checks({"HOPFLOW_API_KEY": API_KEY, "HOPFLOW_API_KEYS": value}, network=False)
    issue = only(issues, "HOPFLOW_API_KEYS", "error")
    assert message in issue.message
    assert "a" * 40 not in issue.message and API_KEY not in issue.message


def test_doctor_shows_the_egress_policy_and_the_answered_hosts() -> None:
    issues = run_checks(
        {
            "HOPFLOW_EGRESS_ALLOW": "10.0.0.0/8,*.internal.example.com",
            "HOPFLOW_EGRESS_DENY": "10.9.0.0/16",
            "HOPFLOW_ALLOWED_HOSTS": "api.example.com",
        },
        network=False,
    )
    policy = [i.message for i in issues if i.message.startswith("egress policy:")]
    assert len(policy) == 1
    assert "refused unless allowed: loopback, link-local, private, metadata" in policy[0]
    assert "allowed: 10.0.0.0/8, *.internal.example.com" in policy[0]
    assert "denied (beats every allow): 10.9.0.0/16" in policy[0]
    assert "api.example.com" in only(issues, "HOPFLOW_ALLOWED_HOSTS", "ok").message
    bad = only(
        run_checks({"HOPFLOW_EGRESS_ALLOW": "10.0.0.0/33"}, network=False), "HOPFLOW_EGRESS_ALLOW", "error"
    )
    assert "10.0.0.0/33" in bad.message
    assert only(
        run_checks({"HOPFLOW_ALLOWED_HOSTS": "http://x"}, network=False), "HOPFLOW_ALLOWED_HOSTS", "error"
    )


def test_max_body_bytes() -> None:
    assert only(
        run_checks({"HOPFLOW_MAX_BODY_BYTES": "12"}, network=False), "HOPFLOW_MAX_BODY_BYTES", "error"
    )
    assert only(
        run_checks({"HOPFLOW_MAX_BODY_BYTES": "2097152"}, network=False), "HOPFLOW_MAX_BODY_BYTES", "ok"
    )


# ------------------------------------------------------------------------------- Redis and QStash


def test_a_malformed_redis_url(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_URL", "localhost:6379")
    result = doctor()
    assert result.exit_code == 1
    assert "is not a redis://, rediss://, unix:// or redis+cluster:// URL" in result.output


def test_an_unreachable_redis_with_its_password_hidden(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_URL", f"redis://default:s3cretpass@127.0.0.1:{free_port()}/0")
    result = doctor()
    assert result.exit_code == 1
    assert "error    REDIS_URL" in result.output
    assert "cannot reach redis://default:***@127.0.0.1" in result.output
    assert "s3cretpass" not in result.output


def test_a_reachable_redis(clean_env: pytest.MonkeyPatch, redis_url: str) -> None:
    clean_env.setenv("REDIS_URL", redis_url)
    clean_env.setenv("HOPFLOW_API_KEY", API_KEY)
    result = doctor()
    assert result.exit_code == 0, result.output
    assert "answers PING in" in result.output


@pytest.fixture(scope="module")
def dev() -> Iterator[Any]:
    from engine.devtools.qstash_dev.server import start_dev_server

    with start_dev_server(backoff_scale=0.001) as running:
        yield running


def qstash_env(dev: Any, redis_url: str, **extra: str) -> dict[str, str]:
    env = {
        **dev.env(),
        "REDIS_URL": redis_url,
        "HOPFLOW_API_KEY": API_KEY,
        "HOPFLOW_PUBLIC_URL": "http://127.0.0.1:1",
    }
    env.update(extra)
    return env


def test_qstash_token_and_keys_that_match(dev: Any, redis_url: str) -> None:
    issues = run_checks(qstash_env(dev, redis_url))
    assert f"accepted by {dev.url}" in messages(issues, "QSTASH_TOKEN", "ok")
    current = f"matches this account's current key ({fingerprint(dev.current_signing_key)})"
    assert current in messages(issues, "QSTASH_CURRENT_SIGNING_KEY", "ok")
    nxt = f"matches this account's next key ({fingerprint(dev.next_signing_key)})"
    assert nxt in messages(issues, "QSTASH_NEXT_SIGNING_KEY", "ok")
    assert not [i for i in issues if i.severity == "error"]


def test_a_refused_qstash_token(dev: Any, redis_url: str) -> None:
    issue = only(
        run_checks(qstash_env(dev, redis_url, QSTASH_TOKEN="not-the-token")), "QSTASH_TOKEN", "error"
    )
    assert "refused the token" in issue.message and "HTTP 401" in issue.message
    assert "not-the-token" not in issue.message


def test_signing_keys_of_another_account(dev: Any, redis_url: str, clean_env: pytest.MonkeyPatch) -> None:
    env = qstash_env(
        dev,
        redis_url,
        QSTASH_CURRENT_SIGNING_KEY="sig_otheraccount1",
        QSTASH_NEXT_SIGNING_KEY="sig_otheraccount2",
    )
    for name, value in env.items():
        clean_env.setenv(name, value)
    result = doctor()
    assert result.exit_code == 1
    assert "neither configured key is this account's current signing key" in result.output
    assert fingerprint(dev.current_signing_key) in result.output
    assert dev.current_signing_key not in result.output and "sig_otheraccount1" not in result.output


def test_swapped_signing_keys_still_verify_but_are_reported(dev: Any, redis_url: str) -> None:
    env = qstash_env(
        dev,
        redis_url,
        QSTASH_CURRENT_SIGNING_KEY=dev.next_signing_key,
        QSTASH_NEXT_SIGNING_KEY=dev.current_signing_key,
    )
    issues = run_checks(env)
    assert "rotated or swapped" in only(issues, "QSTASH_CURRENT_SIGNING_KEY", "warning").message
    assert not [i for i in issues if i.severity == "error"]


def test_an_unreachable_qstash(redis_url: str) -> None:
    env = {
        "QSTASH_TOKEN": "t",
        "QSTASH_URL": f"http://127.0.0.1:{free_port()}",
        "QSTASH_CURRENT_SIGNING_KEY": "sig_a",
        "QSTASH_NEXT_SIGNING_KEY": "sig_b",
        "HOPFLOW_PUBLIC_URL": "https://example.com",
        "REDIS_URL": redis_url,
    }
    issue = only(run_checks(env), "QSTASH_URL", "error")
    assert "cannot reach QStash at http://127.0.0.1:" in issue.message


# ------------------------------------------------------------------------------------ --check-url


@pytest.fixture
def served(harness: Any) -> Iterator[str]:
    from engine.asgi import create_app
    from engine.config import Config
    from engine.devtools.qstash_dev.server import serve_in_thread

    h = harness("name: x\nsteps:\n  - id: a\n    set: {a: 1}\n")
    with serve_in_thread(create_app(h.runtime, config=Config(api_key=API_KEY))) as url:
        yield url


def test_check_url_directly_and_through_qstash(dev: Any, redis_url: str, served: str) -> None:
    issues = run_checks(qstash_env(dev, redis_url, HOPFLOW_PUBLIC_URL=served), check_url=True)
    messages = [i.message for i in findings(issues, "HOPFLOW_PUBLIC_URL", "ok")]
    assert f"{served}/healthz answers 200 from here" in messages
    assert f"QStash delivered a test message to {served}/healthz" in messages


def test_check_url_that_nobody_serves(dev: Any, redis_url: str, clean_env: pytest.MonkeyPatch) -> None:
    public = f"http://127.0.0.1:{free_port()}"
    for name, value in qstash_env(dev, redis_url, HOPFLOW_PUBLIC_URL=public).items():
        clean_env.setenv(name, value)
    result = doctor("--check-url")
    assert result.exit_code == 1, result.output
    assert f"{public}/healthz is unreachable from here" in result.output
    assert f"QStash could not reach {public}/healthz: no answer" in result.output


def test_json_output_and_no_secret_anywhere(dev: Any, redis_url: str, clean_env: pytest.MonkeyPatch) -> None:
    env = qstash_env(
        dev, redis_url, HOPFLOW_SIGNING_KEY=PAIR.private_key, HOPFLOW_VERIFY_KEYS=PAIR.public_key
    )
    for name, value in env.items():
        clean_env.setenv(name, value)
    result = doctor("--json")
    data = json.loads(result.output)
    assert result.exit_code == 0 and data["ok"] is True and data["errors"] == 0
    assert {f["variable"] for f in data["findings"]} == set(VARIABLES)
    for secret in (dev.token, dev.current_signing_key, dev.next_signing_key, API_KEY, PAIR.private_key):
        assert secret not in result.output


# ------------------------------------------------------------------------- keys and serve refusals


def test_generated_keys_pass_the_doctor(clean_env: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    lines = runner.invoke(cli, ["keys", "generate"]).output.splitlines()
    env = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert set(env) == {"HOPFLOW_SIGNING_KEY", "HOPFLOW_VERIFY_KEYS"}
    (api_line,) = runner.invoke(cli, ["keys", "api-key"]).output.splitlines()
    name, api_key = api_line.split("=", 1)
    assert name == "HOPFLOW_API_KEY" and len(api_key) >= 32
    issues = run_checks({**env, "HOPFLOW_API_KEY": api_key}, network=False)
    assert not [i for i in issues if i.severity in ("error", "warning")], issues
    data = json.loads(runner.invoke(cli, ["keys", "generate", "--json"]).output)
    assert data["verify_key"].startswith("hopflow_pk_") and len(data["key_id"]) == 8


def test_serve_refuses_a_bad_configuration(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HOPFLOW_API_KEY", "short")
    clean_env.setenv("HOPFLOW_TIME_BUDGET", "never")
    result = CliRunner().invoke(cli, ["serve", "--workflows", "."])
    assert result.exit_code == 1
    assert "hopflow serve: the configuration has errors" in result.output
    assert "HOPFLOW_API_KEY: too short" in result.output and "HOPFLOW_TIME_BUDGET" in result.output
    assert "short" not in result.output.replace("too short", "")


def test_serve_refuses_a_missing_folder_and_invalid_workflows(
    clean_env: pytest.MonkeyPatch, tmp_path: Any, redis_url: str
) -> None:
    clean_env.setenv("REDIS_URL", redis_url)
    result = CliRunner().invoke(cli, ["serve", "--workflows", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "not a folder" in result.output
    (tmp_path / "bad.yaml").write_text("name: bad\nsteps:\n  - id: a\n    set: {x: 1}\n    next: nowhere\n")
    result = CliRunner().invoke(cli, ["serve", "--workflows", str(tmp_path)])
    assert result.exit_code == 1
    assert "invalid workflows in" in result.output and "bad.yaml:5:" in result.output
