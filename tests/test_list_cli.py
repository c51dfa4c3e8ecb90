"""``hopflow list``: the local store (in-process, REDIS_URL at the test Redis) and ``--url`` against a
real server (uvicorn on 127.0.0.1, the fixture of tests/test_operate_remote.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from test_operate_remote import GREET, one_line_error, remote, server  # noqa: F401 (fixture)

from engine.cli import cli

OK = """
name: ok
steps:
  - id: a
    set: {x: 1}
"""

WAITS = """
name: waits
steps:
  - id: w
    wait: {event: go, key: k}
"""


def _url(redis_db: Any) -> str:
    kwargs = redis_db.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


def invoke(redis_db: Any, *args: str) -> Any:
    return CliRunner().invoke(cli, ["list", *args], env={"REDIS_URL": _url(redis_db), "HOPFLOW_URL": ""})


@pytest.fixture
def local(harness: Any, redis_db: Any) -> Any:
    h = harness(OK, WAITS)
    for i in range(3):
        h.start("ok", {}, f"ok-{i}")
    h.start("waits", {}, "waiting-1")
    h.drain()
    return h


def test_list_the_local_store_as_json_and_as_a_table(local: Any, redis_db: Any) -> None:
    r = invoke(redis_db, "--json")
    assert r.exit_code == 0, r.output
    page = json.loads(r.output)
    assert [e["execution_id"] for e in page["executions"]] == ["waiting-1", "ok-2", "ok-1", "ok-0"]
    assert page["next_cursor"] is None

    r = invoke(redis_db, "--status", "running")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["EXECUTION", "WORKFLOW", "STATUS", "STARTED", "UPDATED", "PARENT"]
    assert len(lines) == 2 and lines[1].split()[:3] == ["waiting-1", "waits", "running"]
    assert "None" not in r.output

    first = invoke(redis_db, "--workflow", "ok", "--limit", "2", "--json")
    page = json.loads(first.stdout)
    assert [e["execution_id"] for e in page["executions"]] == ["ok-2", "ok-1"]
    rest = json.loads(invoke(redis_db, "--workflow", "ok", "--cursor", page["next_cursor"], "--json").stdout)
    assert [e["execution_id"] for e in rest["executions"]] == ["ok-0"]

    assert "no executions match" in invoke(redis_db, "--status", "failed").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--limit", "500"), "hopflow list: --limit must be between 1 and 200 (got 500)"),
        (("--status", "sleeping"), "hopflow list: --status: 'sleeping' is not one of running"),
        (("--started-after", "soon"), "hopflow list: --started-after: 'soon' is not a time"),
        (("--cursor", "nope"), "hopflow list: --cursor: not a cursor"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(redis_db: Any, args: tuple[str, ...], message: str) -> None:
    r = invoke(redis_db, *args)
    assert r.exit_code == 2, r.output
    assert r.output.startswith(message) and len(r.output.splitlines()) == 1 and "Traceback" not in r.output


def test_list_over_http(server: Any) -> None:  # noqa: F811 (the fixture)
    s = server
    for i in range(2):
        assert remote(s, "start", "greet", "--input", '{"name": "jo"}', "--id", f"r-{i}").returncode == 0
    shown = remote(s, "list", "--workflow", "greet", "--json")
    assert shown.returncode == 0, shown.stderr
    page = json.loads(shown.stdout)
    assert [e["execution_id"] for e in page["executions"]] == ["r-1", "r-0"]
    table = remote(s, "list", "--limit", "1")
    assert table.returncode == 0, table.stderr
    assert "r-1" in table.stdout and "r-0" not in table.stdout
    assert table.stderr.startswith("more: add --cursor ")
    one_line_error(remote(s, "list", "--limit", "0"), 2, "list")
    assert GREET
