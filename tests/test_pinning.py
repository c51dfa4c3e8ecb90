"""Guarantee 4: an execution runs the graph it started with, whatever is deployed since.

The workflow file is changed on disk and recompiled (a new hash) while an execution is parked in
the middle of a ``foreach``; workers of the new deploy — fresh processes that never saw the old
file — continue the old execution with the old graph read from Redis by its hash (old steps, old
``with`` values, old compensations), while new executions run the new graph. A start retried with
the same id does not switch graphs either. And a graph that disappeared from Redis is a clear
error that changes nothing, never a silent switch to whatever is deployed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import QueueDispatcher

from engine.actions import ActionRegistry
from engine.catalog import Catalog
from engine.clock import VirtualClock
from engine.errors import GraphMissing
from engine.runtime import Runtime
from engine.state.store import Store

V1 = """
name: shipping
steps:
  - id: reserve
    action: t.call
    with: {what: "reserve v1"}
    compensate:
      action: t.call
      with: {what: "release v1"}
  - id: pack
    foreach:
      items: [1, 2, 3]
      as: box
      concurrency: 1
      steps:
        - id: box_it
          action: t.call
          with: {what: "box {{ box }} v1"}
        - id: cool_down
          wait: {for: 1h}
  - id: ship
    action: t.call
    with: {what: "ship v1", fail: "{{ input.fail | default(false) }}"}
"""

V2 = """
name: shipping
steps:
  - id: reserve
    action: t.call
    with: {what: "reserve v2"}
    compensate:
      action: t.call
      with: {what: "release v2"}
  - id: label
    action: t.call
    with: {what: "label v2"}
  - id: ship
    action: t.call
    with: {what: "ship v2", fail: "{{ input.fail | default(false) }}"}
"""


class Deploy:
    """One deploy: a catalog compiled from the folder as it is now, fresh store caches, its own
    worker — only Redis and the dispatcher's queue are shared with earlier deploys."""

    def __init__(self, folder: Path, redis: Any, dispatcher: QueueDispatcher, calls: list[str]) -> None:
        def call(ctx: Any, what: str, fail: bool = False) -> str:
            calls.append(f"{ctx.execution_id}: {what}")
            if fail:
                raise RuntimeError(what)
            return what

        registry = ActionRegistry()
        registry.register("t.call", call)
        self.catalog = Catalog.from_directory(folder)
        self.rt = Runtime(Store(redis), dispatcher, self.catalog, actions=registry, clock=dispatcher.clock)


@pytest.fixture
def world(tmp_path: Path, redis_db: Any) -> dict[str, Any]:
    (tmp_path / "shipping.yaml").write_text(V1)
    dispatcher = QueueDispatcher(VirtualClock())
    return {"folder": tmp_path, "redis": redis_db, "dispatcher": dispatcher, "calls": []}


def _deploy(world: dict[str, Any]) -> Deploy:
    return Deploy(world["folder"], world["redis"], world["dispatcher"], world["calls"])


def _park_in_foreach(rt: Runtime, q: QueueDispatcher) -> None:
    """Deliver until the first item's 1-hour wait is the only thing left."""
    while q.queue and q.queue[0][2].delay_ms == 0:
        o = q.pop()
        assert o is not None
        rt.advance(o.message)
    assert [o.message.node for o in q.pending()] == ["cool_down"]


def _steps(rt: Runtime, eid: str) -> list[str]:
    return [t["step"] for t in rt.record(eid)["trace"] if t["phase"] == "run"]


@pytest.mark.parametrize("fail", [False, True])
def test_a_changed_file_does_not_change_a_running_execution(world: dict[str, Any], fail: bool) -> None:
    q, calls = world["dispatcher"], world["calls"]
    old = _deploy(world)
    eid = old.rt.start("shipping", {"fail": fail}, "old-1")
    _park_in_foreach(old.rt, q)
    v1_hash = old.rt.record(eid)["graph"]

    (world["folder"] / "shipping.yaml").write_text(V2)  # edit the file, redeploy
    new = _deploy(world)
    v2_hash = new.catalog.get("shipping").hash
    assert v2_hash != v1_hash
    assert "pack" not in new.catalog.get("shipping").nodes

    fresh = new.rt.start("shipping", {"fail": fail}, "new-1")
    assert new.rt.start("shipping", {"fail": fail}, "old-1") == "old-1"  # a retried start: no switch
    q.drain(new.rt)  # only the new deploy's worker is left

    old_record = new.rt.record(eid)
    assert old_record["graph"] == v1_hash
    assert new.rt.record(fresh)["graph"] == v2_hash
    assert _steps(new.rt, eid) == [
        "reserve", "box_it", "cool_down", "box_it", "cool_down", "box_it", "cool_down", "pack", "ship",
    ]  # fmt: skip
    assert _steps(new.rt, fresh) == ["reserve", "label", "ship"]
    mine = [c.split(": ", 1)[1] for c in calls if c.startswith("old-1:")]
    theirs = [c.split(": ", 1)[1] for c in calls if c.startswith("new-1:")]
    assert mine[:4] == ["reserve v1", "box 1 v1", "box 2 v1", "box 3 v1"]
    assert theirs[:3] == ["reserve v2", "label v2", "ship v2"]
    if fail:  # the old execution is undone with the old compensation, the new one with the new
        assert mine[4:] == ["ship v1", "release v1"]
        assert theirs[3:] == ["release v2"]
        assert old_record["status"] == new.rt.record(fresh)["status"] == "compensated"
    else:
        assert mine[4:] == ["ship v1"]
        assert old_record["status"] == "succeeded" and old_record["output"] == "ship v1"
        assert new.rt.record(fresh)["output"] == "ship v2"


def test_the_old_workflow_may_even_be_gone_from_the_deploy(world: dict[str, Any]) -> None:
    q = world["dispatcher"]
    old = _deploy(world)
    eid = old.rt.start("shipping", {}, "orphan-1")
    _park_in_foreach(old.rt, q)
    (world["folder"] / "shipping.yaml").unlink()
    (world["folder"] / "other.yaml").write_text(V2.replace("name: shipping", "name: other"))
    new = _deploy(world)
    assert "shipping" not in new.catalog
    q.drain(new.rt)
    assert new.rt.record(eid)["status"] == "succeeded"


def test_a_missing_graph_is_an_error_that_changes_nothing(world: dict[str, Any]) -> None:
    q = world["dispatcher"]
    old = _deploy(world)
    eid = old.rt.start("shipping", {}, "lost-1")
    _park_in_foreach(old.rt, q)
    graph = old.rt.record(eid)["graph"]
    world["redis"].delete(f"hf:graph:{graph}")  # someone flushed part of Redis

    (world["folder"] / "shipping.yaml").write_text(V2)
    new = _deploy(world)  # the new deploy has no copy of the old graph, in memory or in Redis
    before = new.rt.store.branches(eid), new.rt.history(eid)
    o = q.pop()
    assert o is not None
    with pytest.raises(GraphMissing):
        new.rt.advance(o.message)
    assert (new.rt.store.branches(eid), new.rt.history(eid)) == before
    assert new.rt.record(eid)["status"] == "running"


def test_the_stored_graph_is_never_overwritten(world: dict[str, Any]) -> None:
    old = _deploy(world)
    eid = old.rt.start("shipping", {}, "immutable-1")
    graph = old.rt.record(eid)["graph"]
    stored = world["redis"].get(f"hf:graph:{graph}")
    for _ in range(2):  # later deploys store the same graph again (same hash): a no-op
        (world["folder"] / "shipping.yaml").write_text(V1)
        _deploy(world).rt.start("shipping", {}, None)
    assert world["redis"].get(f"hf:graph:{graph}") == stored
