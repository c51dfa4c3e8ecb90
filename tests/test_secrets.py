"""Secrets never leave the process: a secret env value or a secret step's value that an action echoes
in its error (or a template copies into an output) is redacted in the record, the history, Redis'
stored history, `hopflow status`/`history` (text and --json), the HTTP API and hopflow's log records;
while the steps that need the real value still get it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from dsl.compiler import compile_document
from dsl.graph import Graph
from dsl.source import loads
from dsl.validate import validate_text
from engine.redact import REDACTED, Redactor

SECRET = "sk_live_0123456789abcdef"
TOKEN = "tok_9f8e7d6c5b4a3210"
API_KEY = "a-very-secret-api-key-0123456789abcdef"

PAY = """
name: pay
env: [API_URL, {name: PAY_KEY, secret: true}]
steps:
  - id: charge
    action: charge
    with: {key: "{{ env.PAY_KEY }}", url: "{{ env.API_URL }}"}
"""

TOKENS = """
name: tokens
steps:
  - id: token
    action: get_token
    secret: true
  - id: use
    action: use_token
    with: {auth: "Bearer {{ steps.token.output.access_token }}"}
    catch:
      - errors: [any]
        goto: report
  - id: report
    succeed:
      output:
        error: "{{ error.message }}"
        echoed: "{{ steps.token.output.access_token }}"
        kind: "{{ steps.token.output.kind }}"
"""

LAST = """
name: last
steps:
  - id: token
    action: get_token
    secret: true
"""


def compile_text(text: str) -> Graph:
    return compile_document(loads(text, "w.yaml"))


def charge(ctx: Any, key: str, url: str) -> None:
    raise RuntimeError(f"the payment API at {url} refused key {key}")


def get_token(ctx: Any) -> dict[str, str]:
    return {"access_token": TOKEN, "kind": "ok"}


def _everything(h: Any, eid: str) -> str:
    """Every view of an execution as text, and what Redis stores for its history and header."""
    views = {
        "record": h.runtime.record(eid),
        "history": h.runtime.history(eid),
        "stored history": h.store.history(eid),
        "stored header": {k: v for k, v in h.store.header(eid).items() if k != "input"},
    }
    return json.dumps(views)


def test_a_secret_env_value_echoed_by_an_action_is_redacted_everywhere(
    harness: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PAY_KEY", SECRET)
    monkeypatch.setenv("API_URL", "https://pay.example.com")
    h = harness(PAY, actions={"charge": charge})
    with caplog.at_level(logging.DEBUG):
        record = h.run("pay", {})
        logging.getLogger("hopflow.webhook").error("delivery failed: %s", record["error"]["message"] + SECRET)
        logging.getLogger("hopflow.interpreter").warning("raw %s", SECRET)
    assert record["status"] == "failed"
    assert record["error"]["name"] == "action.RuntimeError"
    # by value only: the declared, not-secret URL stays readable
    message = record["error"]["message"]
    assert message == f"the payment API at https://pay.example.com refused key {REDACTED}"
    assert SECRET not in _everything(h, record["execution_id"])
    assert SECRET not in caplog.text and REDACTED in caplog.text


def test_a_secret_step_feeds_later_steps_but_is_redacted_in_every_view(harness: Any) -> None:
    received: list[str] = []

    def use_token(ctx: Any, auth: str) -> None:
        received.append(auth)
        raise PermissionError(f"token rejected: {auth}")

    h = harness(TOKENS, actions={"get_token": get_token, "use_token": use_token})
    record = h.run("tokens", {})
    assert received == [f"Bearer {TOKEN}"]  # the step that needs it gets the real value
    assert record["status"] == "succeeded"
    assert record["output"] == {
        "error": f"token rejected: Bearer {REDACTED}",
        "echoed": REDACTED,
        "kind": "ok",  # shorter than 4 characters: too common a word to redact
    }
    assert TOKEN not in _everything(h, record["execution_id"])


def test_a_secret_last_step_output_is_redacted_in_the_record(harness: Any) -> None:
    h = harness(LAST, actions={"get_token": get_token})
    record = h.run("last", {})
    assert record["status"] == "succeeded"
    assert record["output"] == {"access_token": REDACTED, "kind": "ok"}
    assert TOKEN not in json.dumps(h.runtime.record(record["execution_id"]))


def test_the_http_api_shows_no_secret(harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.asgi import create_app
    from engine.config import Config

    monkeypatch.setenv("PAY_KEY", SECRET)
    monkeypatch.setenv("API_URL", "https://pay.example.com")
    h = harness(PAY, TOKENS, actions={"charge": charge, "get_token": get_token, "use_token": charge})
    pay = h.run("pay", {})["execution_id"]
    tokens = h.run("tokens", {})["execution_id"]
    app = create_app(h.runtime, config=Config(api_key=API_KEY, public_url="https://hopflow.test"))
    # by the public name (the request guard answers no other Host)
    with TestClient(app, client=("203.0.113.7", 40000), base_url="https://hopflow.test") as client:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        for eid in (pay, tokens):
            for path in (f"/v1/executions/{eid}", f"/v1/executions/{eid}/history"):
                r = client.get(path, headers=headers)
                assert r.status_code == 200, r.text
                assert SECRET not in r.text and TOKEN not in r.text


@pytest.mark.slow
def test_cli_status_and_history_show_no_secret(tmp_path: Path) -> None:
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "pay.yaml").write_text(textwrap.dedent(PAY).lstrip())
    (tmp_path / "acts.py").write_text(
        "import engine\n\n\n@engine.action('charge')\ndef charge(ctx, key, url):\n"
        "    raise RuntimeError(f'the payment API at {url} refused key {key}')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "HOPFLOW_TIME_BUDGET", "PAY_KEY")}

    def hopflow(*args: str, secret: bool) -> subprocess.CompletedProcess[str]:
        extra = {"PAY_KEY": SECRET, "API_URL": "https://pay.example.com"} if secret else {}
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, **extra},
        )

    ran = hopflow("run", "wf/pay.yaml", "--actions", "acts.py", "--json", secret=True)
    record = json.loads(ran.stdout.splitlines()[-1])
    assert record["status"] == "failed", ran.stderr
    outputs = [ran.stdout, ran.stderr]
    eid = record["execution_id"]
    # in a shell without the secret set: what was stored is already redacted
    for args in (("status", eid), ("status", eid, "--json"), ("history", eid), ("history", eid, "--json")):
        shown = hopflow(*args, secret=False)
        assert shown.returncode == 0, shown.stderr
        outputs += [shown.stdout, shown.stderr]
    assert REDACTED in outputs[0]
    for text in outputs:
        assert SECRET not in text


# ------------------------------------------------------------------------------------ the language


def test_secret_env_entries_and_steps_compile() -> None:
    text = textwrap.dedent(PAY).lstrip()
    assert not [d for d in validate_text(text, "pay.yaml").diagnostics if d.severity == "error"]
    graph = compile_text(text)
    assert graph.env == ("API_URL", "PAY_KEY") and graph.secret_env == ("PAY_KEY",)
    tokens = compile_text(textwrap.dedent(TOKENS).lstrip())
    assert tokens.secret_steps == frozenset({"token"})
    # graphs without secrets serialise (and hash) as before: the new fields are left out when unset
    plain = compile_text("name: p\nsteps:\n  - id: a\n    set: {x: 1}\n")
    assert "secret_env" not in plain.to_dict() and "secret" not in plain.to_dict()["nodes"]["a"]


def test_a_malformed_secret_entry_is_a_schema_error() -> None:
    text = "name: p\nenv: [{name: KEY, secret: yes please}]\nsteps:\n  - id: a\n    set: {x: 1}\n"
    assert [d for d in validate_text(text, "p.yaml").diagnostics if d.rule == "schema"]


RESERVED = ["HOPFLOW_SIGNING_KEY", "QSTASH_TOKEN", "UPSTASH_REDIS_REST_TOKEN", "REDIS_URL"]


@pytest.mark.parametrize("name", RESERVED)
def test_env_reserved_warns_for_hopflows_own_configuration(name: str) -> None:
    text = f"name: p\nenv: [API_URL, {{name: {name}, secret: true}}]\nsteps:\n  - id: a\n    set: {{x: 1}}\n"
    found = [d for d in validate_text(text, "p.yaml").diagnostics if d.rule == "env-reserved"]
    assert len(found) == 1 and found[0].severity == "warning" and name in found[0].message


def test_ordinary_names_are_not_reserved() -> None:
    text = "name: p\nenv: [API_URL, REDIS_HOST, MY_QSTASH_TOKEN]\nsteps:\n  - id: a\n    set: {x: 1}\n"
    assert not [d for d in validate_text(text, "p.yaml").diagnostics if d.rule == "env-reserved"]


def test_the_redactor_replaces_longest_first_and_skips_short_values() -> None:
    r = Redactor(["abcd1234", "abcd", "xyz"])
    assert r.text("key abcd1234 and abcd, xyz") == f"key {REDACTED} and {REDACTED}, xyz"
    assert r.value({"abcd": ["abcd1234", 1]}) == {REDACTED: [REDACTED, 1]}


OFFLOADED = """
name: offloaded
input: {type: object}
steps:
  - id: call
    secret: true
    http:
      method: POST
      url: "{{ input.target }}/echo"
      json: {card: "{{ input.card }}"}
      expect: [201]
      offload: true
"""


def test_a_secret_offloaded_steps_input_echoed_in_its_answer_is_redacted(harness: Any) -> None:
    # the answer arrives in another delivery than the one that rendered the request
    from test_offload import Offloading, Target

    card = "4111111111111111"
    target = Target()
    try:
        o = Offloading(harness, OFFLOADED)
        eid = o.h.start("offloaded", {"target": target.url, "card": card})
        record = o.run(eid)
        history = o.runtime.history(eid)
    finally:
        target.close()
    assert record["status"] == "failed" and record["error"]["name"] == "http.200"
    assert REDACTED in record["error"]["message"]
    assert card not in json.dumps([record, history, o.h.store.history(eid)])
