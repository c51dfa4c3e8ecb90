"""``hopflow start/status/history/cancel/notify --url --api-key`` against a real server.

uvicorn serves ``engine.asgi.create_app`` on 127.0.0.1 (real Redis, the local dispatcher delivering
in the app's process), and the CLI runs as a subprocess in an empty folder, exactly as a user runs
it: by flags and by ``HOPFLOW_URL``/``HOPFLOW_API_KEY``. Every failure must be one readable line on
stderr with the documented exit code — never a traceback, never the API key — and the remote mode
must not touch a local store (no ``.hopflow/`` appears).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import GREET

from engine.asgi import build_runtime, create_app
from engine.client import HopflowClient
from engine.config import Config
from engine.devtools.qstash_dev.server import serve_in_thread

API_KEY = "rk-remote-cli-5d1e0c9a7b3f4e2d8c6a"
WRONG_KEY = "rk-not-the-key-0f9e8d7c6b5a4f3e"
HANG_GUARD_S = 60  # only stops a broken command from hanging the suite; nothing is timed
SETTLE_S = 20  # how long a poll waits for the server's loop before failing

BOOK = """
name: book
input: {type: object}
steps:
  - id: reserve
    action: remote_cli.reserve
    compensate:
      action: remote_cli.release
  - id: wait_pay
    wait: {event: paid, key: "{{ execution.id }}"}
  - id: done
    succeed: {}
"""


@dataclass
class Server:
    url: str
    client: HopflowClient
    cwd: Path

    def until(self, eid: str, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Poll the record (in-process client) until ``ok``; the server's loop runs on its own."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            record = self.client.status(eid)
            if ok(record):
                return record
            assert time.monotonic() < deadline, f"{eid} never got there: {record}"
            time.sleep(0.02)

    def parked(self, eid: str, node: str) -> dict[str, Any]:
        return self.until(
            eid, lambda r: any(c["node"] == node and c["phase"] == "park" for c in r.get("current") or [])
        )


@pytest.fixture
def server(redis_db: Any, tmp_path: Path) -> Iterator[Server]:
    from engine.actions import REGISTRY

    folder = tmp_path / "server-workflows"
    folder.mkdir()
    (folder / "greet.yaml").write_text(GREET)
    (folder / "book.yaml").write_text(BOOK)
    REGISTRY.register("remote_cli.reserve", lambda ctx: {"id": "r1"})
    REGISTRY.register("remote_cli.release", lambda ctx: "released")
    config = Config(api_key=API_KEY, workflows_dir=str(folder))
    app = create_app(
        config=config,
        runtime_factory=lambda cfg: build_runtime(cfg, redis=redis_db),
        run_local_dispatcher=True,
    )
    cwd = tmp_path / "shell"
    cwd.mkdir()
    try:
        with serve_in_thread(app) as url, HopflowClient(url, API_KEY) as client:
            yield Server(url, client, cwd)
    finally:
        REGISTRY.unregister("remote_cli.reserve")
        REGISTRY.unregister("remote_cli.release")
    assert not (cwd / ".hopflow").exists(), "the remote mode must not start a local store"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    drop = {"REDIS_URL", "HOPFLOW_URL", "HOPFLOW_API_KEY", "HOPFLOW_DEV_INSECURE"}
    env = {
        k: v for k, v in os.environ.items() if k not in drop and not k.lower().endswith("_proxy")
    }  # a proxy would turn loopback calls into someone else's
    env.update(extra or {})
    return env


def hopflow(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env=_env(env),
    )


def remote(s: Server, *args: str, key: str = API_KEY) -> subprocess.CompletedProcess[str]:
    return hopflow(*args, "--url", s.url, "--api-key", key, cwd=s.cwd)


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, command: str) -> str:
    """The failure is exactly one ``hopflow COMMAND: …`` line on stderr, nothing on stdout."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hopflow {command}: "), proc.stderr
    return lines[0]


def no_key(proc: subprocess.CompletedProcess[str]) -> None:
    for key in (API_KEY, WRONG_KEY):
        assert key not in proc.stdout and key not in proc.stderr


# ------------------------------------------------------------------------------- the happy path


def test_start_status_history_notify_over_http(server: Server) -> None:
    s = server
    started = remote(s, "start", "greet", "--input", '{"name": "jo"}', "--id", "remote-1")
    assert started.returncode == 0, started.stderr
    assert started.stdout == "remote-1\n"
    s.parked("remote-1", "wait_ok")

    shown = remote(s, "status", "remote-1")
    assert shown.returncode == 0, shown.stderr
    assert "execution  remote-1" in shown.stdout and "status     running" in shown.stdout
    assert "step 'wait_ok' (wait): waiting for event" in shown.stdout
    record = json.loads(remote(s, "status", "remote-1", "--json").stdout)
    assert record == s.client.status("remote-1")  # exactly the server's record

    history = remote(s, "history", "remote-1", "--json")
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout) == s.client.history("remote-1")
    text = remote(s, "history", "remote-1").stdout.splitlines()
    assert any(" started " in f"{line} " for line in text) and any("step=hello" in line for line in text)

    # starting again with the same id is a no-op that answers the same id
    again = remote(s, "start", "greet", "--input", '{"name": "someone else"}', "--id", "remote-1")
    assert again.returncode == 0 and again.stdout == "remote-1\n"

    sent = remote(s, "notify", "greet.ok", "--key", "jo", "--data", '{"ok": 1}')
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout == "resumed 1 execution(s) waiting for greet.ok 'jo'\n"
    done = s.until("remote-1", lambda r: r["status"] == "succeeded")
    assert done["output"] == {"greeting": "Hello jo", "ok": {"ok": 1}}
    shown = remote(s, "status", "remote-1")
    assert "status     succeeded" in shown.stdout
    assert 'output     {"greeting": "Hello jo", "ok": {"ok": 1}}' in shown.stdout

    nobody = remote(s, "notify", "greet.ok", "--key", "nobody", "--json")
    answer = json.loads(nobody.stdout)
    assert nobody.returncode == 0 and answer.pop("id")  # a generated event id
    assert answer == {"event": "greet.ok", "key": "nobody", "resumed": 0, "kept": True, "started": []}
    no_key(shown)


def test_environment_variables_and_cancel(server: Server) -> None:
    s = server
    env = {"HOPFLOW_URL": s.url, "HOPFLOW_API_KEY": API_KEY}
    started = hopflow("start", "book", "--json", cwd=s.cwd, env=env)
    assert started.returncode == 0, started.stderr
    eid = json.loads(started.stdout)["execution_id"]
    s.parked(eid, "wait_pay")

    cancelled = hopflow("cancel", eid, cwd=s.cwd, env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == f"cancellation of {eid} requested\n"
    record = s.until(eid, lambda r: r["status"] == "cancelled")
    assert ("reserve", "compensate", "ok") in [(t["step"], t["phase"], t["status"]) for t in record["trace"]]

    # over: the server refuses, and the CLI says why in one line
    line = one_line_error(hopflow("cancel", eid, cwd=s.cwd, env=env), 1, "cancel")
    assert f"execution {eid!r} is cancelled: only a running or queued execution can be cancelled" in line

    # --no-compensate stops without undoing
    kept = hopflow("start", "book", cwd=s.cwd, env=env).stdout.strip()
    s.parked(kept, "wait_pay")
    assert hopflow("cancel", kept, "--no-compensate", cwd=s.cwd, env=env).returncode == 0
    record = s.until(kept, lambda r: r["status"] == "cancelled")
    assert "compensate" not in [t["phase"] for t in record["trace"]]

    # the variables' values are not shown in --help (only their names)
    helped = hopflow("start", "--help", cwd=s.cwd, env=env)
    words = " ".join(helped.stdout.split())  # help text is wrapped to the terminal's width
    assert "[env var: HOPFLOW_API_KEY]" in words and "[env var: HOPFLOW_URL]" in words
    no_key(helped)


# ---------------------------------------------------------------------------------------- errors


def test_a_wrong_or_missing_api_key_is_one_line_without_the_key(server: Server) -> None:
    s = server
    s.client.start("greet", {"name": "kit"}, execution_id="remote-2")
    for args in (("status", "remote-2"), ("history", "remote-2"), ("notify", "greet.ok", "--key", "kit")):
        proc = remote(s, *args, key=WRONG_KEY)
        line = one_line_error(proc, 1, args[0])
        assert line.endswith("the API key was refused (HOPFLOW_API_KEY / --api-key)")
        no_key(proc)
    proc = hopflow("cancel", "remote-2", cwd=s.cwd, env={"HOPFLOW_URL": s.url, "HOPFLOW_API_KEY": WRONG_KEY})
    assert one_line_error(proc, 1, "cancel").endswith("the API key was refused (HOPFLOW_API_KEY / --api-key)")
    no_key(proc)
    missing = hopflow("status", "remote-2", "--url", s.url, cwd=s.cwd)
    assert "needs an API key (HOPFLOW_API_KEY / --api-key)" in one_line_error(missing, 1, "status")
    assert s.client.status("remote-2")["status"] == "running"  # the refused cancel changed nothing


def test_an_unreachable_server_is_one_line_naming_the_url_and_the_fix(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there now
    for args in (("status", "x-1"), ("start", "greet"), ("notify", "e", "--key", "k")):
        proc = hopflow(*args, "--url", closed, "--api-key", API_KEY, cwd=tmp_path)
        line = one_line_error(proc, 1, args[0])
        assert f"cannot reach {closed} (connection refused)" in line
        assert "is `hopflow serve` running there? check --url / HOPFLOW_URL" in line
        no_key(proc)
    assert not (tmp_path / ".hopflow").exists()


def test_unknown_execution_and_workflow(server: Server) -> None:
    s = server
    for command in ("status", "history", "cancel"):
        line = one_line_error(remote(s, command, "nope-1"), 1, command)
        assert line == f"hopflow {command}: unknown execution 'nope-1'"
    line = one_line_error(remote(s, "start", "nope"), 2, "start")
    assert "unknown workflow 'nope'" in line
    # a malformed id is a usage error, as on the local store, and is never sent
    line = one_line_error(remote(s, "status", "bad id!"), 2, "status")
    assert "an execution id must be 1-200 characters" in line


def test_invalid_input_lists_every_schema_error(server: Server) -> None:
    s = server
    proc = remote(s, "start", "greet", "--input", '{"name": 3, "times": 0}', "--id", "never")
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert sorted(proc.stderr.splitlines()) == [
        "hopflow start: input/name: 3 is not of type 'string'",
        "hopflow start: input/times: 0 is less than the minimum of 1",
    ]
    assert one_line_error(remote(s, "status", "never"), 1, "status").endswith("unknown execution 'never'")
    bad_json = remote(s, "start", "greet", "--input", "{name")
    assert "--input is not valid JSON" in one_line_error(bad_json, 2, "start")


def test_local_only_options_with_url_are_usage_errors(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9"  # never called: the usage error comes first
    cases = [
        (("start", "greet", "--wait"), "--wait only works on the local store, not with --url"),
        (
            ("start", "greet", "--wait", "--actions", "m.py"),
            "--wait and --actions only work on the local store, not with --url",
        ),
        (("start", "wf/greet.yaml"), "WORKFLOW is the name of a workflow the server has, not a file"),
        (("cancel", "x-1", "--wait"), "--wait only works on the local store, not with --url"),
    ]
    for args, expected in cases:
        proc = hopflow(*args, "--url", url, "--api-key", API_KEY, cwd=tmp_path)
        assert expected in one_line_error(proc, 2, args[0])
        no_key(proc)
    proc = hopflow("cancel", "x-1", "--workflows", "wf", cwd=tmp_path, env={"HOPFLOW_URL": url})
    assert "not with HOPFLOW_URL set (unset it, or pass --url '' to use the local store)" in one_line_error(
        proc, 2, "cancel"
    )
    proc = hopflow("status", "x-1", "--api-key", API_KEY, cwd=tmp_path)
    assert "--api-key is for a server: give its --url too" in one_line_error(proc, 2, "status")
    proc = hopflow("status", "x-1", "--url", API_KEY, cwd=tmp_path)  # the key pasted as the URL
    assert "must be an absolute http(s) URL" in one_line_error(proc, 2, "status")
    no_key(proc)
    assert not (tmp_path / ".hopflow").exists()


# ------------------------------------------------------------------------- in process, fast paths


def test_a_server_that_never_answers_times_out_in_one_line() -> None:
    from engine.commands.operate import BackendError, RemoteBackend

    with socket.socket() as silent:  # accepts connections (the backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        backend = RemoteBackend(url, API_KEY, timeout_s=0.3)
        with pytest.raises(BackendError) as caught:
            backend.record("x-1")
        backend.close()
    assert caught.value.code == 1 and caught.value.lines == [
        f"{url} did not answer within 0.3 s: is `hopflow serve` running there? check --url / HOPFLOW_URL"
    ]


def test_a_url_that_is_not_a_hopflow_server_says_so(server: Server) -> None:
    from engine.commands.operate import BackendError, RemoteBackend

    async def other(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/html")]}
        )
        await send({"type": "http.response.body", "body": b"<h1>Not Found</h1>"})

    with serve_in_thread(other) as url:
        backend = RemoteBackend(url + "/app", API_KEY)
        with pytest.raises(BackendError) as caught:
            backend.record("x-1")
        backend.close()
    assert caught.value.code == 1
    assert caught.value.message.endswith(f"(is {url}/app the base URL of a hopflow server? check --url)")
    # the hopflow server's own 404 for a route it lacks says the same
    backend = RemoteBackend(server.url + "/v1", API_KEY)
    with pytest.raises(BackendError) as caught:
        backend.record("x-1")
    assert "the base URL of a hopflow server" in caught.value.message
    backend.close()
