"""``hopflow serve`` logs one line per node, as text or as JSON with a ``trace_id``, and no secret.

A real ``hopflow serve`` (uvicorn on 127.0.0.1, the local dispatcher, the test Redis) runs an
execution started over HTTP; its stderr is read after it stops."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_list_cli import _url

from engine.observe.traceids import trace_id

API_KEY = "log-test-api-key-0123456789abcdef-secret"
FLOW = """
name: logged
steps:
  - id: first
    set: {x: 1}
  - id: second
    action: logged_actions.double
    with: {v: "{{ vars.x }}"}
"""
ACTIONS = """
import engine


@engine.action("logged_actions.double")
def double(ctx, v):
    return v * 2
"""


HOPFLOW = [sys.executable, "-m", "engine.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_and_run(
    tmp_path: Path,
    redis_db: Any,
    *args: str,
    env: dict[str, str] | None = None,
    stdout: list[str] | None = None,
) -> str:
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "logged.yaml").write_text(FLOW)
    (tmp_path / "logged_actions.py").write_text(ACTIONS)
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HOPFLOW_", "QSTASH_", "REDIS_URL"))}
    base = {k: v for k, v in base.items() if not k.lower().endswith("_proxy")}
    base.update({"REDIS_URL": _url(redis_db), "HOPFLOW_API_KEY": API_KEY, "PYTHONPATH": str(tmp_path)})
    base.update(env or {})
    proc = subprocess.Popen(
        [*HOPFLOW, "serve", "--workflows", "wf", "--actions", "logged_actions", "--port", str(port), *args],
        cwd=tmp_path,
        env=base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {API_KEY}"}
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=5, trust_env=False) as client:
            while True:
                try:
                    if client.get(url + "/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "serve did not come up"
                time.sleep(0.1)
            r = client.post(
                url + "/v1/executions", json={"workflow": "logged", "input": {}, "id": "L1"}, headers=auth
            )
            assert r.status_code == 202, r.text
            while (
                status := client.get(url + "/v1/executions/L1", headers=auth).json()["status"]
            ) == "running":
                assert time.monotonic() < deadline, "the execution did not finish"
                time.sleep(0.05)
            assert status == "succeeded"
    finally:
        proc.send_signal(signal.SIGINT)  # the process this test started, by its own handle
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    if stdout is not None:
        stdout.append(out)
    assert API_KEY not in err
    return err


def test_json_logs_one_object_per_node_with_a_trace_id(tmp_path: Path, redis_db: Any) -> None:
    err = serve_and_run(tmp_path, redis_db, "--log-format", "json")
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    nodes = [line for line in lines if line["logger"] == "hopflow.node"]
    assert [(n["step"], n["kind"], n["outcome"]) for n in nodes] == [
        ("first", "set", "ok"),
        ("second", "action", "ok"),
    ]
    for n in nodes:
        assert n["execution_id"] == "L1" and n["workflow"] == "logged" and n["attempt"] == 1
        assert isinstance(n["ms"], float) and n["ms"] >= 0
        assert n["trace_id"] == trace_id("L1")  # derived from the execution id, OpenTelemetry or not
        assert {"time", "level", "message"} <= set(n)
    assert all("trace_id" in line for line in lines)
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's lines too


def test_text_logs_one_line_per_node(tmp_path: Path, redis_db: Any) -> None:
    err = serve_and_run(tmp_path, redis_db, env={"HOPFLOW_LOG_FORMAT": "text"})
    nodes = [line for line in err.splitlines() if "hopflow.node:" in line]
    assert len(nodes) == 2
    assert "node execution=L1 workflow=logged step=second kind=action outcome=ok attempt=1 ms=" in nodes[1]


def test_json_log_lines_and_spans_share_the_trace_id(tmp_path: Path, redis_db: Any) -> None:
    """With traces on (here the console exporter, on stdout), a node line's trace_id finds its spans."""
    pytest.importorskip("opentelemetry.sdk", reason="traces need the otel extra")
    out: list[str] = []
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    err = serve_and_run(tmp_path, redis_db, "--log-format", "json", env=env, stdout=out)
    assert "hopflow serve: traces: on: spans are exported (console)" in err
    nodes = [json.loads(line) for line in err.splitlines() if line.startswith("{") and "hopflow.node" in line]
    assert {n["trace_id"] for n in nodes} == {trace_id("L1")}
    spans, text, decoder = [], out[0], json.JSONDecoder()
    while text.strip():
        value, end = decoder.raw_decode(text.lstrip())
        spans.append(value)
        text = text.lstrip()[end:]
    assert sorted(s["name"] for s in spans) == ["first", "logged", "second"]
    assert {s["context"]["trace_id"] for s in spans} == {"0x" + trace_id("L1")}
