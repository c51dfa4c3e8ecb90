"""Event triggers: an event starts one execution per triggering workflow, once per event id."""

from __future__ import annotations

from typing import Any

from engine.state import index

ON_ORDER = """
    name: on-order
    input: {type: object, required: [order], properties: {order: {type: string}}}
    triggers:
      - event: order.placed
        input: {order: "{{ event.key }}", total: "{{ event.data.total }}", via: "{{ event.name }}"}
    steps:
      - id: done
        succeed: {output: "{{ input }}"}
"""

ON_VIP = """
    name: on-vip
    triggers:
      - event: order.placed
        key: "{{ event.key.startswith('vip-') }}"
      - event: order.placed
        key: exact-1
    steps:
      - id: done
        succeed: {output: "{{ input }}"}
"""


def executions(h: Any, workflow: str) -> list[dict[str, Any]]:
    page = index.list_executions(h.runtime.store, index.Filters(workflow=workflow), None, 100)
    return page.executions


def test_an_event_starts_the_workflow_once_with_its_input(harness: Any) -> None:
    h = harness(ON_ORDER)
    done = h.runtime.notify_event("order.placed", "o-1", {"total": 12}, event_id="evt-1")
    assert done.resumed == 0 and len(done.started) == 1 and not done.failed
    h.drain()
    record = h.runtime.record(done.started[0])
    assert record["status"] == "succeeded"
    assert record["output"] == {"order": "o-1", "total": 12, "via": "order.placed"}
    # a retried notify with the same id (even after the execution finished): still one execution
    again = h.runtime.notify_event("order.placed", "o-1", {"total": 12}, event_id="evt-1")
    h.drain()
    assert again.started == done.started
    assert [e["execution_id"] for e in executions(h, "on-order")] == done.started
    assert h.runtime.record(done.started[0])["status"] == "succeeded"
    assert [e["status"] for e in executions(h, "on-order")] == ["succeeded"]  # the listing too
    # another event id is another event
    other = h.runtime.notify_event("order.placed", "o-1", {"total": 12}, event_id="evt-2")
    assert other.started != done.started
    h.drain()
    assert len(executions(h, "on-order")) == 2


def test_without_an_id_each_notify_is_a_new_event_and_the_default_input_is_the_data(harness: Any) -> None:
    h = harness(ON_VIP)
    first = h.runtime.notify_event("order.placed", "vip-7", {"n": 1})
    second = h.runtime.notify_event("order.placed", "vip-7", {"n": 2})
    h.drain()
    assert first.started and second.started and first.started != second.started
    assert h.runtime.record(first.started[0])["output"] == {"n": 1}


def test_the_key_filters_events(harness: Any) -> None:
    h = harness(ON_VIP)
    assert h.runtime.notify_event("order.placed", "plain-1", None).started == []
    assert h.runtime.notify_event("order.placed", "exact-1", None).started != []
    assert h.runtime.notify_event("order.placed", "vip-1", None).started != []
    assert h.runtime.notify_event("other.event", "vip-1", None).started == []
    h.drain()
    assert len(executions(h, "on-vip")) == 2


def test_a_trigger_and_a_waiter_both_get_the_event(harness: Any) -> None:
    waiter = """
        name: waiter
        steps:
          - id: w
            wait: {event: order.placed, key: o-9}
    """
    h = harness(ON_ORDER, waiter)
    wid = h.start("waiter")
    h.drain()
    done = h.runtime.notify_event("order.placed", "o-9", {"total": 1}, event_id="e9")
    assert done.resumed == 1 and len(done.started) == 1
    h.drain()
    assert h.runtime.record(wid)["status"] == "succeeded"
    assert h.runtime.record(done.started[0])["status"] == "succeeded"


def test_an_emit_step_triggers_a_workflow_once(harness: Any) -> None:
    emitter = """
        name: emitter
        steps:
          - id: tell
            emit: {event: order.placed, key: o-5, data: {total: 5}}
    """
    h = harness(ON_ORDER, emitter)
    eid = h.start("emitter")
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "succeeded"
    started = record["output"]["started"]
    assert len(started) == 1
    assert h.runtime.record(started[0])["output"]["order"] == "o-5"
    # the emit's event id is its step path: a redelivered emit starts nothing new
    again = h.runtime.notify_event("order.placed", "o-5", {"total": 5}, event_id=f"{eid}:tell")
    assert again.started == started
    h.drain()
    assert len(executions(h, "on-order")) == 1


def test_input_the_schema_rejects_is_reported_and_starts_nothing(harness: Any) -> None:
    strict = """
        name: strict
        input: {type: object, required: [n], properties: {n: {type: integer}}}
        triggers:
          - event: tick
        steps:
          - id: done
            succeed: {}
    """
    h = harness(strict, ON_VIP.replace("order.placed", "tick"))
    done = h.runtime.notify_event("tick", "vip-1", {"n": "not a number"})
    assert [f["workflow"] for f in done.failed] == ["strict"]
    assert len(done.started) == 1  # the other workflow still starts
    assert executions(h, "strict") == []


def test_post_events_starts_once_per_client_id(harness: Any) -> None:
    import functools

    from starlette.testclient import TestClient

    from engine.asgi import create_app
    from engine.config import Config

    public = "https://hopflow.test"
    key = "k" * 40
    h = harness(ON_ORDER)
    app = create_app(h.runtime, config=Config(api_key=key, public_url=public))
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with functools.partial(TestClient, base_url=public)(app) as client:
        body = {"key": "o-3", "data": {"total": 3}, "id": "client-evt-3"}
        first = client.post("/v1/events/order.placed", json=body, headers=auth)
        assert first.status_code == 202, first.text
        answer = first.json()
        assert answer["id"] == "client-evt-3" and answer["resumed"] == 0 and len(answer["started"]) == 1
        again = client.post("/v1/events/order.placed", json=body, headers=auth)
        assert again.json()["started"] == answer["started"]
        bad = client.post("/v1/events/order.placed", json={"key": "o", "id": "-no spaces-"}, headers=auth)
        assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "/id"
    h.drain()
    assert len(executions(h, "on-order")) == 1
    assert h.runtime.record(answer["started"][0])["output"]["order"] == "o-3"


def test_hopflow_notify_id_starts_once_from_the_command_line(tmp_path: Any) -> None:
    import json
    import os
    import subprocess
    import sys
    import textwrap

    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "on-order.yaml").write_text(textwrap.dedent(ON_ORDER).lstrip())

    def hopflow(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "HOPFLOW_URL")}
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    first = hopflow("notify", "order.placed", "--key", "o-1", "--data", '{"total": 1}', "--id", "e-1")
    assert first.returncode == 0, first.stderr
    assert "kept for 7 days" in first.stdout and "started on-order@event-" in first.stdout
    again = hopflow(
        "notify", "order.placed", "--key", "o-1", "--data", '{"total": 1}', "--id", "e-1", "--json"
    )
    assert again.returncode == 0, again.stderr
    answer = json.loads(again.stdout)
    assert answer["id"] == "e-1" and answer["resumed"] == 0
    assert [f"started {eid}" for eid in answer["started"]] == first.stdout.splitlines()[1:]
    listed = hopflow("list", "--workflow", "on-order", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [e["execution_id"] for e in json.loads(listed.stdout)["executions"]] == answer["started"]
    bad = hopflow("notify", "order.placed", "--key", "o-1", "--id", "has space")
    assert bad.returncode == 2 and bad.stderr.startswith("hopflow notify: --id")


def test_trigger_templates_read_only_event_and_the_graph_keeps_the_triggers() -> None:
    import textwrap

    from dsl.graph import Graph
    from dsl.render import to_dot, to_mermaid
    from dsl.validate import validate_text

    def diagnostics(text: str) -> list[tuple[str, int, int]]:
        result = validate_text(textwrap.dedent(text).lstrip(), "t.yaml")
        return [(d.rule, d.position.line, d.position.column) for d in result.diagnostics]

    assert diagnostics(ON_ORDER) == []
    bad = """
        name: t
        triggers:
          - event: e
            key: "{{ vars.k }}"
            input: {a: "{{ event.nope }}"}
            when: never
        steps:
          - id: a
            set: {x: "{{ event.data }}"}
    """
    assert sorted(r for r, *_ in diagnostics(bad)) == [
        "unknown-key",
        "unknown-name",
        "unknown-name",
        "unknown-name",
    ]
    graph = validate_text(textwrap.dedent(ON_VIP).lstrip(), "t.yaml").graph
    assert graph is not None and [t["event"] for t in graph.triggers] == ["order.placed", "order.placed"]
    again = Graph.from_dict(graph.to_dict())
    assert again.triggers == graph.triggers and again.hash == graph.with_hash().hash
    assert "on order.placed key exact-1" in to_mermaid(graph) and "on order.placed" in to_dot(graph)
    plain = validate_text("name: p\nsteps:\n  - id: a\n    set: {x: 1}\n", "p.yaml").graph
    assert plain is not None and "triggers" not in plain.to_dict()  # older graphs keep their hash
