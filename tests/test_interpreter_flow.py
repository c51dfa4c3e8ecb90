"""Control flow of one branch: every cheap step kind, `if`, `output`, `next`, `catch`, retries, templates."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import InputInvalid, UnknownWorkflow
from engine.model import StepError, StepFailure


def test_linear_set_switch_succeed_keeps_native_types(harness: Any) -> None:
    h = harness("""
        name: lin
        input: {type: object, properties: {n: {type: integer}}}
        steps:
          - id: a
            set: {x: "{{ input.n + 1 }}", items: "{{ [1, 2, 3] }}", text: "n is {{ input.n }}"}
          - id: b
            switch:
              - if: "{{ vars.x > 5 }}"
                goto: big
          - id: small
            succeed: {output: {x: "{{ vars.x }}", items: "{{ vars.items }}", text: "{{ vars.text }}",
                               a: "{{ steps.a.output }}"}}
          - id: big
            fail: {error: TooBig, message: "x={{ vars.x }}"}
    """)
    r = h.run("lin", {"n": 1})
    assert r["status"] == "succeeded"
    assert r["output"] == {
        "x": 2,
        "items": [1, 2, 3],
        "text": "n is 1",
        "a": {"x": 2, "items": [1, 2, 3], "text": "n is 1"},
    }
    assert [t["step"] for t in r["trace"]] == ["a", "b", "small"]
    assert set(r) >= {"execution_id", "workflow", "graph", "status", "output", "error", "trace"}

    r = h.run("lin", {"n": 10})
    assert r["status"] == "failed"
    assert r["error"] == {"name": "TooBig", "message": "x=11", "step": "big"}
    assert r["output"] is None


def test_switch_first_true_case_default_and_fall_through(harness: Any) -> None:
    h = harness(
        """
        name: sw
        input: {type: object, properties: {v: {type: integer}}}
        steps:
          - id: pick
            switch:
              - if: "{{ input.v > 10 }}"
                goto: large
              - if: "{{ input.v > 5 }}"
                goto: medium
              - default: small
          - id: large
            set: {size: large}
            next: done
          - id: medium
            set: {size: medium}
            next: done
          - id: small
            set: {size: small}
          - id: done
            succeed: {output: "{{ vars.size }}"}
    """,
        """
        name: fall
        input: {type: object, properties: {v: {type: integer}}}
        steps:
          - id: pick
            switch:
              - if: "{{ input.v > 10 }}"
                goto: large
          - id: normal
            set: {size: normal}
            next: done
          - id: large
            set: {size: large}
          - id: done
            succeed: {output: "{{ vars.size }}"}
    """,
    )
    assert h.run("sw", {"v": 20})["output"] == "large"  # both cases are true: the first wins
    assert h.run("sw", {"v": 7})["output"] == "medium"
    assert h.run("sw", {"v": 1})["output"] == "small"
    assert h.run("fall", {"v": 1})["output"] == "normal"
    assert h.run("fall", {"v": 11})["output"] == "large"


def test_if_skips_with_null_output_and_default_output_is_last_step(harness: Any) -> None:
    h = harness("""
        name: skip
        input: {type: object, properties: {go: {type: boolean}}}
        steps:
          - id: first
            set: {a: 1}
          - id: maybe
            if: "{{ input.go }}"
            set: {b: 2}
          - id: after
            if: "{{ steps.maybe.output is none }}"
            set: {skipped_before: true}
    """)
    r = h.run("skip", {"go": False})
    assert r["status"] == "succeeded"
    assert [(t["step"], t["phase"]) for t in r["trace"]] == [
        ("first", "run"),
        ("maybe", "skip"),
        ("after", "run"),
    ]
    assert r["output"] == {"skipped_before": True}

    r = h.run("skip", {"go": True})
    # `after` is skipped, so the execution's output is the last step that ran: `maybe`
    assert [(t["step"], t["phase"]) for t in r["trace"]] == [
        ("first", "run"),
        ("maybe", "run"),
        ("after", "skip"),
    ]
    assert r["output"] == {"b": 2}


def test_output_template_sees_result_and_workflow_output(harness: Any) -> None:
    h = harness("""
        name: out
        output: {total: "{{ steps.b.output }}", first: "{{ steps.a.output }}"}
        steps:
          - id: a
            set: {x: 3, y: 4}
            output: "{{ result.x * result.y }}"
          - id: b
            set: {z: "{{ steps.a.output + 1 }}"}
            output: "{{ result.z }}"
    """)
    r = h.run("out")
    assert r["output"] == {"total": 13, "first": 12}


def test_next_jumps_and_loops_with_vars(harness: Any) -> None:
    h = harness("""
        name: loop
        steps:
          - id: init
            set: {i: 0}
          - id: body
            set: {i: "{{ vars.i + 1 }}"}
          - id: again
            switch:
              - if: "{{ vars.i < 5 }}"
                goto: body
          - id: done
            succeed: {output: "{{ vars.i }}"}
    """)
    r = h.run("loop")
    assert r["output"] == 5
    assert [t["step"] for t in r["trace"]].count("body") == 5


def test_catch_exposes_error_to_the_goto_target_only(harness: Any) -> None:
    h = harness("""
        name: catcher
        steps:
          - id: boom
            fail: {error: Nope, message: "it broke"}
            catch:
              - errors: [Other]
                goto: wrong
              - errors: [Nope]
                goto: handle
          - id: wrong
            succeed: {output: wrong}
          - id: handle
            set: {caught: "{{ error }}"}
          - id: done
            succeed: {output: {caught: "{{ vars.caught }}"}}
    """)
    r = h.run("catcher")
    assert r["status"] == "succeeded", r
    assert r["output"]["caught"] == {"name": "Nope", "message": "it broke", "step": "boom", "attempt": 1}
    assert "error" not in h.store.branches_one(r["execution_id"], "")  # cleared after the target ran
    assert ("boom", "run", "error", 1) == tuple(r["trace"][0].values())


def test_catch_any_and_uncaught_fails(harness: Any) -> None:
    h = harness(
        """
        name: any
        steps:
          - id: boom
            fail: {error: Whatever}
            catch:
              - errors: [any]
                goto: ok
          - id: ok
            succeed: {output: "{{ error.name }}"}
    """,
        """
        name: uncaught
        steps:
          - id: boom
            fail: {error: Whatever}
            catch:
              - errors: [Other]
                goto: ok
          - id: ok
            succeed: {}
    """,
    )
    assert h.run("any")["output"] == "Whatever"
    r = h.run("uncaught")
    assert r["status"] == "failed"
    assert r["error"]["name"] == "Whatever"


def test_retries_with_backoff_bounds_and_on_list(harness: Any) -> None:
    calls: list[int] = []

    def flaky(ctx: Any, fail_times: int) -> dict:
        calls.append(ctx.attempt)
        if ctx.attempt <= fail_times:
            raise StepFailure(StepError("http.503", "unavailable", retry_after_ms=None))
        return {"attempt": ctx.attempt, "key": ctx.idempotency_key}

    h = harness(
        """
        name: retry
        steps:
          - id: call
            action: flaky
            with: {fail_times: 3}
            retry: {max_attempts: 5, interval: 1s, backoff: 3, max_interval: 5s, jitter: none}
    """,
        actions={"flaky": flaky},
    )
    eid = h.start("retry")
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "succeeded"
    assert r["output"] == {"attempt": 4, "key": f"{eid}:call"}
    assert calls == [1, 2, 3, 4]
    delays = [o.delay_ms for o in h.dispatcher.published if o.message.node == "call" and o.delay_ms]
    assert delays == [1000, 3000, 5000]  # 1s, 3s, then capped at 5s
    assert [(t["status"], t["attempt"]) for t in r["trace"]] == [
        ("error", 1),
        ("error", 2),
        ("error", 3),
        ("ok", 4),
    ]


def test_full_jitter_stays_within_bounds_and_retry_after_wins(harness: Any) -> None:
    def limited(ctx: Any) -> None:
        raise StepFailure(StepError("http.429", "slow down", retry_after_ms=7000))

    def broken(ctx: Any) -> None:
        raise StepFailure(StepError("http.500", "boom"))

    h = harness(
        """
        name: jitter
        steps:
          - id: call
            action: broken
            retry: {max_attempts: 4, interval: 2s, backoff: 2}
    """,
        """
        name: after
        steps:
          - id: call
            action: limited
            retry: {max_attempts: 2, interval: 1s, jitter: none}
    """,
        actions={"limited": limited, "broken": broken},
        random=lambda: 0.75,
    )
    r = h.run("jitter")
    assert r["status"] == "failed" and r["error"]["name"] == "http.500"
    delays = [o.delay_ms for o in h.dispatcher.published if o.delay_ms]
    assert delays == [1500, 3000, 6000]  # 0.75 * (2s, 4s, 8s)
    h.dispatcher.published.clear()
    h.run("after")
    assert [o.delay_ms for o in h.dispatcher.published if o.delay_ms] == [7000]  # Retry-After > 1s


def test_errors_outside_the_on_list_are_not_retried(harness: Any) -> None:
    calls: list[int] = []

    def bad(ctx: Any) -> None:
        calls.append(ctx.attempt)
        raise ValueError("bad value")

    h = harness(
        """
        name: noretry
        steps:
          - id: call
            action: bad
            retry: {max_attempts: 3, interval: 1s}
    """,
        """
        name: retryon
        steps:
          - id: call
            action: bad
            retry: {max_attempts: 3, interval: 1s, on: [action.ValueError]}
    """,
        actions={"bad": bad},
    )
    r = h.run("noretry")
    assert r["error"]["name"] == "action.ValueError" and calls == [1]
    calls.clear()
    r = h.run("retryon")
    assert r["error"]["name"] == "action.ValueError" and calls == [1, 2, 3]


def test_template_failures_are_catchable_template_errors(harness: Any) -> None:
    h = harness(
        """
        name: tmpl
        input: {type: object}
        steps:
          - id: a
            set: {x: "{{ input.missing.deeper }}"}
            catch:
              - errors: [template]
                goto: handled
          - id: unreachable
            succeed: {output: no}
          - id: handled
            succeed: {output: "{{ error.name }}: {{ error.message }}"}
    """,
        """
        name: escape
        steps:
          - id: a
            set: {x: "{{ ''.__class__.__mro__[1].__subclasses__() }}"}
    """,
    )
    r = h.run("tmpl", {})
    assert r["status"] == "succeeded"
    assert r["output"].startswith("template: ")
    assert "missing" in r["output"]
    r = h.run("escape")
    assert r["status"] == "failed"
    assert r["error"]["name"] == "template"


def test_env_reads_only_declared_names_at_render_time(harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TEST_API", "https://api.test")
    monkeypatch.setenv("HF_TEST_SECRET", "s3cret")
    h = harness(
        """
        name: envy
        env: [HF_TEST_API]
        steps:
          - id: a
            set: {api: "{{ env.HF_TEST_API }}", count: "{{ env | length }}"}
    """,
        unchecked=True,
    )
    eid = h.start("envy")
    h.drain()
    r = h.runtime.record(eid)
    assert r["output"] == {"api": "https://api.test", "count": 1}
    assert "s3cret" not in str(h.runtime.history(eid))


def test_a_declared_but_unset_env_name_fails_with_a_clear_template_error(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TEST_UNSET", raising=False)
    h = harness(
        """
        name: unset
        env: [HF_TEST_UNSET]
        steps:
          - id: probe
            set: {known: "{{ env.HF_TEST_UNSET is defined }}"}
          - id: use
            set: {api: "{{ env.HF_TEST_UNSET }}/x"}
    """
    )
    eid = h.start("unset")
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "failed"
    assert r["error"]["name"] == "template" and r["error"]["step"] == "use"
    assert "HF_TEST_UNSET is declared under `env:` but not set" in r["error"]["message"]
    assert [t["step"] for t in r["trace"] if t["status"] == "ok"] == ["probe"]


def test_execution_scope_and_datetime_results(harness: Any) -> None:
    h = harness("""
        name: scope
        input: {type: object, properties: {when: {type: string}}}
        steps:
          - id: a
            set:
              id: "{{ execution.id }}"
              wf: "{{ execution.workflow }}"
              started: "{{ execution.started_at | datetime | isoformat }}"
              earlier: "{{ (input.when | datetime) - duration('2h') }}"
    """)
    eid = h.start("scope", {"when": "2030-01-01T20:00:00+01:00"})
    h.drain()
    out = h.runtime.record(eid)["output"]
    assert out["id"] == eid and out["wf"] == "scope"
    assert out["earlier"] == "2030-01-01T18:00:00+01:00"  # a datetime result is stored as ISO text
    assert out["started"].startswith("20")


def test_start_validates_input_and_writes_nothing_when_invalid(harness: Any, redis_db: Any) -> None:
    h = harness("""
        name: typed
        input:
          type: object
          required: [n]
          properties: {n: {type: integer, minimum: 1}, tags: {type: array, items: {type: string}}}
        steps:
          - id: a
            set: {n: "{{ input.n }}"}
    """)
    with pytest.raises(InputInvalid) as info:
        h.start("typed", {"n": 0, "tags": ["ok", 3]}, execution_id="bad-input")
    paths = sorted(e["path"] for e in info.value.errors)
    assert paths == ["/n", "/tags/1"]
    assert redis_db.dbsize() == 0
    with pytest.raises(UnknownWorkflow):
        h.start("nope", {})
    assert redis_db.dbsize() == 0
    assert h.dispatcher.published == []


def test_start_with_an_explicit_id_is_idempotent(harness: Any) -> None:
    h = harness("""
        name: once
        steps:
          - id: a
            set: {n: 1}
    """)
    assert h.start("once", {}, execution_id="order-42") == "order-42"
    assert h.start("once", {}, execution_id="order-42") == "order-42"
    h.drain()
    r = h.runtime.record("order-42")
    assert r["status"] == "succeeded"
    assert [t["step"] for t in r["trace"]] == ["a"]
    history = h.runtime.history("order-42")
    assert [e.get("event") for e in history].count("started") == 1
    assert h.start("once", {}, execution_id="order-42") == "order-42"  # still the same, finished, one
    assert h.dispatcher.queue == []


def test_chaining_cheap_nodes_in_one_call(harness: Any) -> None:
    h = harness(
        """
        name: chain
        steps:
          - id: a
            set: {x: 1}
          - id: b
            set: {x: 2}
          - id: c
            switch:
              - if: "{{ vars.x == 2 }}"
                goto: d
          - id: d
            succeed: {output: "{{ vars.x }}"}
    """,
        max_nodes_per_call=10,
    )
    eid = h.start("chain")
    results = h.drain()
    assert len(results) == 1 and results[0].nodes == 4
    r = h.runtime.record(eid)
    assert r["status"] == "succeeded" and r["output"] == 2
    assert [t["step"] for t in r["trace"]] == ["a", "b", "c", "d"]
    assert h.store.outbox(eid) == []


@pytest.fixture
def http_server() -> Any:
    """A tiny real HTTP server on 127.0.0.1: /json, /text, /busy (503 + Retry-After once)."""
    import json as _json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[dict[str, Any]] = []
    state = {"busy": 1}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = _json.loads(self.rfile.read(length) or b"null")
            seen.append({"path": self.path, "key": self.headers.get("Idempotency-Key"), "body": body})
            if self.path == "/busy" and state["busy"]:
                state["busy"] -= 1
                self._send(503, b"later", "text/plain", {"Retry-After": "9"})
            elif self.path in ("/json", "/busy"):
                self._send(
                    200, _json.dumps({"echo": body, "tables": [{"id": 7}]}).encode(), "application/json"
                )
            else:
                self._send(200, b"plain words", "text/plain")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_http_steps_default_outputs_keys_and_retry_after(
    harness: Any, http_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = http_server
    monkeypatch.setenv("HF_TEST_BASE", url)
    h = harness("""
        name: web
        env: [HF_TEST_BASE]
        input: {type: object}
        steps:
          - id: search
            http:
              method: POST
              url: "{{ env.HF_TEST_BASE }}/json"
              json: {party: "{{ input.party }}"}
          - id: words
            http: {method: POST, url: "{{ env.HF_TEST_BASE }}/text", json: {}}
          - id: busy
            http: {method: POST, url: "{{ env.HF_TEST_BASE }}/busy", json: {}}
            retry: {max_attempts: 2, interval: 1s, jitter: none}
            output: "{{ result.status }}"
          - id: done
            succeed:
              output: {table: "{{ steps.search.output.tables[0].id }}", words: "{{ steps.words.output }}",
                       busy: "{{ steps.busy.output }}", party: "{{ steps.search.output.echo.party }}"}
    """)
    eid = h.start("web", {"party": 4})
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "succeeded", r
    assert r["output"] == {"table": 7, "words": "plain words", "busy": 200, "party": 4}
    assert [s["key"] for s in seen] == [f"{eid}:search", f"{eid}:words", f"{eid}:busy", f"{eid}:busy"]
    assert [o.delay_ms for o in h.dispatcher.published if o.delay_ms] == [9000]  # Retry-After > 1s
