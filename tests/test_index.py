"""The listing index (engine/state/index.py): filters, the cursor under concurrent starts, lazy repair and
expiry cleanup, on a real Redis. The cluster test (one slot per call) is in tests/test_cluster.py."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from conftest import workflow

from engine.state import index
from engine.state.index import FilterError, Filters, list_executions, parse_filters

OK = """
name: ok
steps:
  - id: a
    action: t.ok
"""

BAD = """
name: bad
steps:
  - id: a
    action: t.ok
    compensate:
      action: t.ok
  - id: b
    action: t.boom
"""

WAITS = """
name: waits
steps:
  - id: w
    wait: {event: go, key: "{{ input.k }}"}
"""

PARENT = """
name: parent
steps:
  - id: kid
    workflow: {name: ok}
"""


def boom(*_a: Any, **_k: Any) -> None:
    raise RuntimeError("boom")


def make(harness: Any) -> Any:
    return harness(OK, BAD, WAITS, PARENT, actions={"t.ok": lambda *a, **k: 1, "t.boom": boom})


def ids(page: index.Page) -> list[str]:
    return [e["execution_id"] for e in page.executions]


def test_filters_by_status_workflow_graph_parent_and_time(harness: Any) -> None:
    h = make(harness)
    for i in range(3):
        h.start("ok", {}, f"ok-{i}")
    h.start("bad", {}, "bad-0")
    h.start("waits", {"k": "x"}, "wait-0")
    h.start("parent", {}, "par-0")
    h.drain()
    store = h.store
    everything = list_executions(store, Filters())
    assert set(ids(everything)) >= {"ok-0", "ok-1", "ok-2", "bad-0", "wait-0", "par-0"}
    assert ids(everything)[0] == "par-0~kid.1"  # newest first: the child started last
    assert everything.next_cursor is None
    summary = next(e for e in everything.executions if e["execution_id"] == "bad-0")
    assert summary["status"] == "compensated" and summary["workflow"] == "bad" and summary["parent"] is None
    assert summary["started_at"].endswith("Z") and summary["updated_at"].endswith("Z")

    assert ids(list_executions(store, Filters(status=frozenset({"compensated"})))) == ["bad-0"]
    assert ids(list_executions(store, Filters(status=frozenset({"running"})))) == ["wait-0"]
    both = list_executions(store, Filters(status=frozenset({"running", "compensated"})))
    assert ids(both) == ["wait-0", "bad-0"]
    assert set(ids(list_executions(store, Filters(workflow="ok")))) == {"ok-0", "ok-1", "ok-2", "par-0~kid.1"}
    assert ids(list_executions(store, Filters(workflow="ok", status=frozenset({"running"})))) == []
    assert ids(list_executions(store, Filters(parent="par-0"))) == ["par-0~kid.1"]
    graph = h.runtime.record("wait-0")["graph"]
    assert ids(list_executions(store, Filters(graph=graph))) == ["wait-0"]

    started = {e["execution_id"]: e for e in everything.executions}
    cut = index.parse_time(started["bad-0"]["started_at"], "x")
    newer = ids(list_executions(store, Filters(started_after=cut)))
    assert "bad-0" in newer and "ok-0" not in newer
    older = ids(list_executions(store, Filters(started_before=cut)))
    assert "bad-0" not in older and "ok-0" in older
    assert ids(list_executions(store, Filters(updated_after=time.time() + 60))) == []


def test_counts_per_status_and_workflow(harness: Any) -> None:
    h = make(harness)
    h.start("ok", {}, "c1")
    h.start("bad", {}, "c2")
    h.start("waits", {"k": "y"}, "c3")
    h.drain()
    counts = index.counts(h.store)
    assert counts["status"] == {"succeeded": 1, "compensated": 1, "running": 1}
    assert counts["workflow"] == {
        "ok": {"succeeded": 1},
        "bad": {"compensated": 1},
        "waits": {"running": 1},
    }


def test_pages_have_no_duplicates_nor_skips_while_executions_start(harness: Any) -> None:
    h = make(harness)
    for i in range(25):
        h.start("waits", {"k": i}, f"e{i:02d}")
    before = set(ids(list_executions(h.store, Filters(), limit=200)))
    seen: list[str] = []
    stop = threading.Event()

    def more() -> None:
        n = 0
        while not stop.is_set() and n < 40:
            h.runtime.start("waits", {"k": f"new{n}"}, f"new{n:02d}")
            n += 1

    writer = threading.Thread(target=more)
    writer.start()
    try:
        page = list_executions(h.store, Filters(), limit=4)
        seen += ids(page)
        while page.next_cursor:
            page = list_executions(h.store, Filters(), cursor=page.next_cursor, limit=4)
            seen += ids(page)
    finally:
        stop.set()
        writer.join()
    assert len(seen) == len(set(seen)), "a page repeated an execution"
    assert before <= set(seen), "an execution older than the cursor was skipped"


def test_equal_start_times_page_by_id(harness: Any) -> None:
    h = make(harness)
    for i in range(7):  # the same score: the id breaks the tie, and the cursor carries both
        index.put(h.store, f"same-{i}", workflow="ok", graph="g", status="running", started=1000.0)
        h.store.client.hset(
            f"hf:{{same-{i}}}:h", mapping={"status": "running", "workflow": "ok", "graph": "g"}
        )
    seen: list[str] = []
    page = list_executions(h.store, Filters(), limit=3)
    seen += ids(page)
    while page.next_cursor:
        page = list_executions(h.store, Filters(), cursor=page.next_cursor, limit=3)
        seen += ids(page)
    assert seen == [f"same-{i}" for i in reversed(range(7))]


def test_entries_of_expired_executions_are_dropped_on_read_and_by_the_sweep(harness: Any) -> None:
    h = make(harness)
    for i in range(3):
        h.start("ok", {}, f"x{i}")
    h.drain()
    # x0's record vanished (its retention expired) an hour after it started
    h.store.client.delete("hf:{x0}:h")
    h.store.client.zadd("hf:{idx}:all", {"x0": time.time() - 3600}, xx=True)
    assert "x0" not in ids(list_executions(h.store, Filters()))
    assert h.store.client.zscore("hf:{idx}:all", "x0") is None
    assert not h.store.client.hexists("hf:{idx}:e", "x0")
    assert index.counts(h.store)["status"] == {"succeeded": 2}

    # the sweep: finished executions whose retention passed and whose record is gone
    h.store.retention_s = 1
    h.store.client.delete("hf:{x1}:h")
    assert index.sweep(h.store, now=time.time() + 10) == 1
    assert index.counts(h.store)["status"] == {"succeeded": 1}
    assert not h.store.client.hexists("hf:{idx}:e", "x1")


def test_retention_expires_records_and_recover_sweeps_the_index(harness: Any) -> None:
    h = make(harness)
    h.store.retention_s = 1
    h.start("ok", {}, "r1")
    h.drain()
    assert h.store.client.ttl("hf:{r1}:h") > 0
    h.store.client.delete("hf:{r1}:h")  # what the expiry does, without waiting for it
    h.store.client.zadd("hf:{idx}:done", {"r1": time.time() - 5})
    h.runtime.recover()
    assert index.counts(h.store)["status"] == {}


def test_a_start_being_written_is_not_dropped(harness: Any) -> None:
    h = make(harness)
    index.put(h.store, "young", workflow="ok", graph="g", status="running", started=time.time())
    assert ids(list_executions(h.store, Filters())) == []  # no record (yet): not listed…
    assert h.store.client.hexists("hf:{idx}:e", "young")  # …but not dropped either


def test_a_stale_status_is_repaired_from_the_record(harness: Any) -> None:
    h = make(harness)
    h.start("ok", {}, "s1")
    h.drain()
    # the index missed the transition (a crash between the checkpoint and the index call)
    index.moved(h.store, "s1", "running", force=True)
    assert ids(list_executions(h.store, Filters(status=frozenset({"running"})))) == []
    assert ids(list_executions(h.store, Filters(status=frozenset({"succeeded"})))) == ["s1"]
    assert index.counts(h.store)["status"] == {"succeeded": 1}


def test_a_late_index_write_never_moves_an_execution_back(harness: Any) -> None:
    h = make(harness)
    h.start("ok", {}, "late")
    h.drain()
    index.moved(h.store, "late", "running")  # an old writer arriving last
    assert index.counts(h.store)["status"] == {"succeeded": 1}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": ["500"]}, "limit must be between 1 and 200"),
        ({"limit": ["0"]}, "limit must be between 1 and 200"),
        ({"limit": ["x"]}, "not a whole number"),
        ({"status": ["running,nope"]}, "'nope' is not one of"),
        ({"started_after": ["yesterday"]}, "not a time"),
        ({"cursor": ["!!"]}, "not a cursor"),
        ({"colour": ["red"]}, "unknown parameter"),
    ],
)
def test_bad_requests_are_refused(harness: Any, query: dict[str, list[str]], message: str) -> None:
    h = make(harness)
    with pytest.raises(FilterError, match=message):
        filters, cursor, limit = parse_filters(query)
        list_executions(h.store, filters, cursor, limit)


def test_time_filters_accept_iso_and_epoch() -> None:
    filters, _, _ = parse_filters(
        {"started_after": ["2026-01-31T12:00:00Z"], "updated_before": ["1700000000"]}
    )
    assert filters.started_after == 1769860800.0
    assert filters.updated_before == 1700000000.0
    assert workflow(OK)  # the fixtures' workflows are valid YAML documents
