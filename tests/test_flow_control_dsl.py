"""`flow_control:` in the language: schema, compiled graph, rules with positions, graph notes — and
that every way of starting an execution (start, triggers, schedules, child workflows) meets
`max_running`."""

from __future__ import annotations

import datetime as dt
import textwrap
from typing import Any

import pytest

from dsl.compiler import compile_document
from dsl.render import to_dot, to_mermaid
from dsl.validate import validate_text

FULL = """
name: sync-tenant
input: {type: object, required: [tenant]}
flow_control:
  key: "tenant-{{ input.tenant }}"
  max_running: 1
  parallelism: 4
steps:
  - id: fetch
    action: x.fetch
    flow_control: {key: partner-api, rate: 10, period: 1m}
  - id: store
    action: x.store
"""


def compile_text(text: str) -> Any:
    from dsl.source import loads

    return compile_document(loads(textwrap.dedent(text).strip() + "\n"), strict=True)


def diags(text: str) -> list[tuple[str, int, int, str]]:
    result = validate_text(textwrap.dedent(text).strip() + "\n", "wf.yaml")
    return [(d.rule, d.position.line, d.position.column, d.message) for d in result.diagnostics]


def test_the_compiled_graph_keeps_the_limits_with_periods_in_ms() -> None:
    graph = compile_text(textwrap.dedent(FULL))
    assert dict(graph.flow_control) == {
        "key": "tenant-{{ input.tenant }}",
        "max_running": 1,
        "parallelism": 4,
    }
    assert dict(graph.nodes["fetch"].flow_control) == {"key": "partner-api", "rate": 10, "period_ms": 60000}
    assert graph.nodes["store"].flow_control is None
    again = type(graph).from_dict(graph.to_dict())
    assert again.hash == graph.hash and again.flow_control == graph.flow_control


def test_a_workflow_without_flow_control_keeps_its_graph_hash() -> None:
    """Older stored graphs stay valid: the new fields are left out of the canonical form when unset."""
    plain = compile_text("name: p\nsteps:\n  - id: a\n    action: x.y\n")
    assert "flow_control" not in plain.to_dict()
    assert "flow_control" not in plain.to_dict()["nodes"]["a"]


def test_a_valid_file_has_no_diagnostics() -> None:
    assert diags(FULL) == []


def test_rules_point_at_the_key_at_fault() -> None:
    found = diags(
        """
        name: bad
        vars:
          region: {initial: eu}
        flow_control:
          key: "{{ steps.a.output }}-{{ vars.late }}-{{ vars.region }}"
          period: 1m
        steps:
          - id: a
            action: x.y
            flow_control: {rate: 5, period: 1500ms}
          - id: b
            set: {late: 1}
          - id: c
            action: x.y
            flow_control: {key: only-a-key}
        """
    )
    rules = [(rule, line, col) for rule, line, col, _ in found]
    assert ("unknown-name", 5, 12) in rules  # steps: not known when the execution starts
    assert ("flow-control-key", 5, 33) in rules  # vars.late: only a set step assigns it
    assert ("flow-control", 6, 11) in rules  # period without rate
    assert ("flow-control", 10, 37) in rules  # 1500ms: not whole seconds
    assert ("flow-control", 15, 19) in rules  # a key alone sets no limit
    assert ("flow-control", 5, 3) in rules  # the workflow's sets no limit (at its first key)
    assert len(found) == 6


def test_max_running_is_for_workflows_and_unknown_keys_are_named() -> None:
    found = diags(
        """
        name: bad
        steps:
          - id: a
            action: x.y
            flow_control: {max_running: 1, rat: 3}
        """
    )
    assert [(rule, line, col) for rule, line, col, _ in found] == [
        ("unknown-key", 5, 20),
        ("unknown-key", 5, 36),
    ]
    assert "did you mean 'rate'" in found[1][3]


@pytest.mark.parametrize("value", ["rate: 0", "parallelism: -1", "rate: 2.5", 'rate: "3"', "period: soon"])
def test_bad_values_are_schema_errors(value: str) -> None:
    found = diags(f"name: b\nflow_control: {{{value}, max_running: 1}}\nsteps:\n  - id: a\n    action: x.y\n")
    assert found and all(rule in ("schema", "flow-control") for rule, *_ in found), found


def test_hopflow_graph_shows_the_limits() -> None:
    graph = compile_text(textwrap.dedent(FULL))
    mermaid = to_mermaid(graph)
    assert "flow key tenant-" in mermaid and "4 at once, 1 running" in mermaid
    assert "flow key partner-api: 10/1m" in mermaid
    assert "flow key partner-api: 10/1m" in to_dot(graph)


# ------------------------------------------------------------------ every start meets max_running

ONE_AT_A_TIME = """
name: one-at-a-time
flow_control:
  max_running: 1
triggers:
  - event: go
schedules:
  - cron: "0 9 * * *"
steps:
  - id: nap
    wait: {for: 1h}
"""

PARENT = """
name: parent
steps:
  - id: child
    workflow: {name: one-at-a-time}
"""


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def test_starts_from_triggers_schedules_and_parents_wait_their_turn(harness: Any) -> None:
    from engine.schedules import Scheduler

    h = harness(ONE_AT_A_TIME, PARENT)
    first = h.start("one-at-a-time", {}, "direct")
    notified = h.runtime.notify_event("go", "k", {}, event_id="ev-1")
    (by_event,) = notified.started
    s = Scheduler(h.runtime)
    s.tick(at("2026-12-01T08:00:00+00:00"))
    (fired,) = s.tick(at("2026-12-01T09:00:01+00:00"))
    parent = h.start("parent", {}, "p")
    h.drain(until=lambda: h.runtime.record("p")["status"] != "running" or bool(h.runtime.store.branches("p")))
    records = {e: h.runtime.record(e)["status"] for e in (first, by_event, fired.execution_id)}
    assert records == {first: "running", by_event: "queued", fired.execution_id: "queued"}
    h.drain()
    for eid in (first, by_event, fired.execution_id, parent):
        assert h.runtime.record(eid)["status"] == "succeeded", eid
    # one at a time: each started when the one before it ended (the starts are in the history)
    started = sorted(
        (float(h.runtime.store.header(e)["started_at"]), e) for e in (first, by_event, fired.execution_id)
    )
    assert [e for _, e in started] == [first, by_event, fired.execution_id]
    assert started[1][0] - started[0][0] >= 3600 and started[2][0] - started[1][0] >= 3600
