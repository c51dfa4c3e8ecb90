"""Traces: one OpenTelemetry trace per execution across all its deliveries (the SDK's in-memory exporter).

A saga runs over several ``Runtime.advance`` calls (a wait, a retry, compensations), and once more
through the real webhook fed by the local dispatcher over HTTP; every span lands in the trace derived
from the execution id, each node attempt has its span under the execution's root span, the http
step is a CLIENT span whose ``traceparent`` the called (loopback) service receives, and each
compensation's span links to the span of the step it undoes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="traces need the otel extra (pip install 'hopflow[otel]')")

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from engine.model import StepError, StepFailure
from engine.observe.traceids import enabled, root_span_id, span_id, trace_id, traceparent
from engine.observe.traces import enable

SAGA = """
name: trip
steps:
  - id: reserve
    action: t.ok
    compensate:
      action: t.undo
      with: {what: reserve}
  - id: call
    http: {method: POST, url: "{{ input.target }}/book?secret=s3", json: {seat: 1}}
    compensate:
      action: t.undo
      with: {what: call}
  - id: pause
    wait: {for: 1s}
  - id: charge
    action: t.charge
    retry: {max_attempts: 2, interval: 1s, on: [card.declined]}
"""


class Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def target() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (Recorder,), {"seen": seen})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()
    srv.server_close()


def charge(ctx: Any) -> Any:
    raise StepFailure(StepError("card.declined", "declined"))


ACTIONS = {"t.ok": lambda ctx: {"id": "R1"}, "t.undo": lambda ctx, what: what, "t.charge": charge}


def by_name(spans: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def hexid(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def check_saga_trace(spans: Any, eid: str, workflow: str) -> dict[str, list[Any]]:
    """What every saga trace shows: one trace, a root span, node spans under it, compensations linked."""
    tid = trace_id(eid)
    assert {hexid(s.context.trace_id, 32) for s in spans} == {tid}
    named = by_name(spans)
    (root,) = named[workflow]
    assert root.parent is None and hexid(root.context.span_id, 16) == root_span_id(eid)
    assert root.attributes["hopflow.status"] == "compensated"
    nodes = [s for s in spans if s is not root]
    assert all(hexid(s.parent.span_id, 16) == root_span_id(eid) for s in nodes)
    assert len({s.context.span_id for s in spans}) == len(spans)  # no span recorded twice
    for s in nodes:
        a = s.attributes
        assert a["hopflow.execution_id"] == eid and a["hopflow.workflow"] == workflow
        assert {"hopflow.step", "hopflow.kind", "hopflow.attempt", "hopflow.outcome"} <= set(a)
        assert hexid(s.context.span_id, 16) == span_id(eid, a["hopflow.branch"], a["hopflow.seq"])
    for undone in ("reserve", "call"):
        (comp,) = named[f"compensate {undone}"]
        ((run,),) = [[s for s in named[undone] if s.attributes["hopflow.outcome"] == "ok"]]
        (link,) = comp.links
        assert link.context.trace_id == run.context.trace_id
        assert link.context.span_id == run.context.span_id
        assert link.attributes["hopflow.link"] == "compensates"
    return named


def test_a_saga_over_many_deliveries_is_one_trace(harness: Any, target: Any) -> None:
    url, seen = target
    h = harness(SAGA, actions=ACTIONS)
    exporter = InMemorySpanExporter()
    enable(h.runtime, exporter)
    eid = h.start("trip", {"target": url}, "trip-1")
    h.drain()
    assert h.runtime.record(eid)["status"] == "compensated"
    advanced = [r for r in h.results if r.kind == "advanced"]
    assert len(advanced) >= 8  # each node its own delivery: one trace across all of them

    spans = exporter.get_finished_spans()
    named = check_saga_trace(spans, eid, "trip")
    assert [s.attributes["hopflow.outcome"] for s in named["pause"]] == ["waiting", "ok"]
    assert [(s.attributes["hopflow.attempt"], s.attributes["hopflow.outcome"]) for s in named["charge"]] == [
        (1, "retry"),
        (2, "error"),
    ]
    assert all(s.status.status_code == StatusCode.ERROR for s in named["charge"])
    assert named["reserve"][0].kind == SpanKind.INTERNAL

    (call,) = named["call"]
    assert call.kind == SpanKind.CLIENT
    assert call.attributes["http.request.method"] == "POST"
    assert call.attributes["url.full"] == f"{url}/book"  # no query string (it may hold secrets)
    assert call.attributes["http.response.status_code"] == 200
    (request,) = seen
    assert request["traceparent"] == f"00-{trace_id(eid)}-{hexid(call.context.span_id, 16)}-01"
    assert request["traceparent"] == traceparent(eid, "", call.attributes["hopflow.seq"])


def test_without_traces_no_traceparent_is_sent(harness: Any, target: Any) -> None:
    url, seen = target
    h = harness(SAGA, actions=ACTIONS)
    h.start("trip", {"target": url}, "trip-2")
    h.drain()
    (request,) = seen
    assert "traceparent" not in request and request["idempotency-key"] == "trip-2:call"


def test_a_child_workflow_links_to_the_step_that_started_it(harness: Any) -> None:
    parent = "name: parent\nsteps:\n  - id: sub\n    workflow: {name: child}\n"
    child = "name: child\nsteps:\n  - id: one\n    set: {x: 1}\n"
    h = harness(parent, child)
    exporter = InMemorySpanExporter()
    enable(h.runtime, exporter)
    eid = h.start("parent", {}, "p-1")
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    spans = exporter.get_finished_spans()
    (child_root,) = [s for s in spans if s.name == "child"]
    (starter,) = [s for s in spans if s.name == "sub" and s.attributes["hopflow.outcome"] == "waiting"]
    (link,) = child_root.links
    assert link.context.trace_id == starter.context.trace_id
    assert link.context.span_id == starter.context.span_id


def test_through_the_webhook_and_the_local_queue(redis_db: Any, target: Any) -> None:
    """Every delivery is an HTTP call to the app's /v1/step (signed, from the local dispatcher)."""
    from helpers import serve_app
    from test_asgi import API_KEY, KEYS

    from engine.actions import ActionRegistry
    from engine.catalog import Catalog
    from engine.config import Config
    from engine.dispatch.local import LocalDispatcher
    from engine.egress import EgressPolicy
    from engine.runtime import Runtime
    from engine.state.store import Store
    from engine.web.app import create_app
    from engine.web.wiring import http_delivery

    url, seen = target
    registry = ActionRegistry()
    for name, fn in ACTIONS.items():
        registry.register(name, fn)
    fast = SAGA.replace("1s", "100ms")
    dispatcher = LocalDispatcher(redis_db, poll_interval_s=0.02)
    runtime = Runtime(
        Store(redis_db),
        dispatcher,
        Catalog.from_texts([fast]),
        actions=registry,
        egress=EgressPolicy(allow_loopback=True),
    )
    exporter = InMemorySpanExporter()
    enable(runtime, exporter)

    def make(public: str) -> Any:
        dispatcher.deliver = http_delivery(public + "/v1/step", KEYS.private_key)
        cfg = Config(api_key=API_KEY, public_url=public, verify_keys=(KEYS.public_key,))
        return create_app(runtime, config=cfg, run_local_dispatcher=True)

    with serve_app(make, start_timeout_s=10):
        eid = runtime.start("trip", {"target": url}, "trip-web")
        deadline = time.monotonic() + 30
        while runtime.record(eid)["status"] not in ("compensated", "failed", "dead"):
            assert time.monotonic() < deadline, runtime.record(eid)
            time.sleep(0.05)
    assert runtime.record(eid)["status"] == "compensated"
    spans = exporter.get_finished_spans()
    named = check_saga_trace(spans, eid, "trip")
    (call,) = named["call"]
    (request,) = seen
    assert request["traceparent"] == f"00-{trace_id(eid)}-{hexid(call.context.span_id, 16)}-01"


def test_when_traces_are_on() -> None:
    assert not enabled({})
    assert enabled({"HOPFLOW_OTEL": "1"})
    assert not enabled({"HOPFLOW_OTEL": "0", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318"})
    assert enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318"})
    assert enabled({"OTEL_TRACES_EXPORTER": "console"})
    assert not enabled({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    assert not enabled({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})


def test_ids_are_derived_from_the_execution() -> None:
    assert trace_id("E1") == trace_id("E1") != trace_id("E2")
    assert len(trace_id("E1")) == 32 and len(root_span_id("E1")) == 16
    assert span_id("E1", "", 3) != span_id("E1", "", 4) != span_id("E1", "p/0", 4)
    assert traceparent("E1", "", 3) == f"00-{trace_id('E1')}-{span_id('E1', '', 3)}-01"


def test_opentelemetry_is_not_imported_when_traces_are_off() -> None:
    code = (
        "import sys, engine.asgi, engine.web.app, engine.runtime, engine.interpreter, engine.commands.serve\n"
        "from engine.config import inspect_env\n"
        "from engine.web.app import create_app\n"
        "cfg, _ = inspect_env({'HOPFLOW_API_KEY': 'k' * 40})\n"
        "assert cfg is not None and not cfg.traces\n"
        "create_app(None, config=cfg)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_an_offloaded_call_is_a_client_span_recorded_at_its_completion(redis_db: Any, target: Any) -> None:
    """The local dispatcher makes the call (as QStash would): the request carries the traceparent of
    the span the delivery of its answer records."""
    from engine.catalog import Catalog
    from engine.dispatch.local import LocalDispatcher
    from engine.egress import EgressPolicy
    from engine.embedded import in_process_delivery
    from engine.runtime import Runtime
    from engine.state.store import Store
    from engine.steps.offload import perform

    url, seen = target
    loopback = EgressPolicy(allow_loopback=True)
    flow = (
        "name: offloaded\nsteps:\n  - id: call\n"
        "    http: {method: POST, url: '{{ input.target }}/x', offload: true}\n"
    )
    dispatcher = LocalDispatcher(redis_db, poll_interval_s=0.02, perform=lambda r: perform(r, loopback))
    runtime = Runtime(Store(redis_db), dispatcher, Catalog.from_texts([flow]), egress=loopback)
    dispatcher.deliver = in_process_delivery(runtime)
    exporter = InMemorySpanExporter()
    enable(runtime, exporter)
    eid = runtime.start("offloaded", {"target": url}, "off-1")
    assert dispatcher.run_until(lambda: runtime.record(eid)["status"] == "succeeded", timeout_s=30)
    spans = exporter.get_finished_spans()
    assert {hexid(s.context.trace_id, 32) for s in spans} == {trace_id(eid)}
    handed, answered = by_name(spans)["call"]
    assert handed.kind == SpanKind.INTERNAL and handed.attributes["hopflow.outcome"] == "waiting"
    assert answered.kind == SpanKind.CLIENT and answered.attributes["hopflow.outcome"] == "ok"
    assert answered.attributes["http.response.status_code"] == 200
    assert answered.attributes["url.full"] == f"{url}/x"
    assert answered.start_time <= handed.end_time  # the span covers the call from its hand-over
    (request,) = seen
    assert request["traceparent"] == f"00-{trace_id(eid)}-{hexid(answered.context.span_id, 16)}-01"


def test_hopflow_run_exports_its_spans_when_it_exits(tmp_path: Any) -> None:
    """``hopflow run`` with the standard variable: the console exporter prints the execution's spans."""
    import json
    import os

    (tmp_path / "tiny.yaml").write_text("name: tiny\nsteps:\n  - id: one\n    set: {x: 1}\n")
    drop = ("REDIS_URL", "HOPFLOW_OTEL", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["OTEL_TRACES_EXPORTER"] = "console"
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "tiny.yaml", "--id", "T1", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)  # --json keeps stdout for the record: the spans go to stderr
    found, block = [], []
    for line in out.stderr.splitlines():  # the console exporter's objects: from "{" to "}" lines
        if line == "{" or block:
            block.append(line)
        if line == "}" and block:
            found.append(json.loads("\n".join(block)))
            block = []
    spans = [v for v in found if "context" in v]
    assert sorted(s["name"] for s in spans) == ["one", "tiny"]
    assert {s["context"]["trace_id"] for s in spans} == {"0x" + trace_id("T1")}
    assert record["status"] == "succeeded"


def test_doctor_explains_the_traces_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import config

    key = {"HOPFLOW_API_KEY": "k" * 40}

    def otel(env: dict[str, str]) -> tuple[Any, Any]:
        cfg, issues = config.inspect_env({**key, **env})
        (found,) = [i for i in issues if i.variable == "HOPFLOW_OTEL"]
        return cfg, found

    cfg, issue = otel({})
    assert not cfg.traces and issue.severity == "ok" and issue.message.startswith("off")
    cfg, issue = otel({"HOPFLOW_OTEL": "1"})
    assert cfg.traces and issue.message == "on: spans are exported (otlp)"
    cfg, issue = otel({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:pw@collector:4318"})
    assert cfg.traces and "pw" not in issue.message and "collector:4318" in issue.message
    cfg, issue = otel({"HOPFLOW_OTEL": "maybe"})
    assert cfg is None and issue.severity == "error"

    monkeypatch.setattr(config, "_installed", lambda name: False)  # as without the otel extra
    cfg, issue = otel({"HOPFLOW_OTEL": "1"})
    assert cfg is None and issue.severity == "error" and "hopflow[otel]" in issue.fix
    cfg, issue = otel({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert cfg is not None and not cfg.traces and issue.severity == "warning"
