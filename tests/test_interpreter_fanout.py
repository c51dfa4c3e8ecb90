"""parallel and foreach: fan-out in one outbox, atomic joins, ordering, concurrency, failures."""

from __future__ import annotations

import threading
from typing import Any

from engine.model import Message


def test_parallel_results_in_branch_order_and_steps_addressable_after_join(harness: Any) -> None:
    h = harness("""
        name: par
        steps:
          - id: both
            parallel:
              branches:
                - steps:
                    - id: a1
                      set: {a: 1}
                    - id: a2
                      set: {a: 2}
                      output: "{{ result.a * 10 }}"
                - steps:
                    - id: b1
                      set: {b: "x"}
                      output: "{{ result.b }}"
          - id: after
            set: {sum: "{{ steps.a2.output }}", b: "{{ steps.b1.output }}", all: "{{ steps.both.output }}"}
    """)
    eid = h.start("par")
    first = h.dispatcher.pop()
    assert first is not None
    h.runtime.advance(first.message)
    # the fan-out publishes one message per branch, together
    assert sorted((o.message.branch, o.message.node) for o in h.dispatcher.pending()) == [
        ("both/0", "a1"),
        ("both/1", "b1"),
    ]
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "succeeded", r
    assert r["output"] == {"sum": 20, "b": "x", "all": [20, "x"]}
    assert [t["step"] for t in r["trace"]][-2:] == ["both", "after"]


def test_branches_really_run_at_the_same_time(harness: Any) -> None:
    """Two branches each wait for the other inside their action: only concurrent runs can finish."""
    barrier = threading.Barrier(2, timeout=5)

    def meet(ctx: Any, who: str) -> str:
        barrier.wait()
        return who

    h = harness(
        """
        name: meet
        steps:
          - id: both
            parallel:
              branches:
                - steps:
                    - id: left
                      action: meet
                      with: {who: left}
                - steps:
                    - id: right
                      action: meet
                      with: {who: right}
        """,
        actions={"meet": meet},
    )
    eid = h.start("meet")
    h.runtime.advance(h.dispatcher.pop().message)  # fan out
    msgs = [h.dispatcher.pop().message, h.dispatcher.pop().message]
    threads = [threading.Thread(target=h.runtime.advance, args=(m,)) for m in msgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    h.drain()
    assert h.runtime.record(eid)["output"] == ["left", "right"]


def test_foreach_order_concurrency_and_per_item_outputs(harness: Any) -> None:
    h = harness("""
        name: each
        input: {type: object}
        steps:
          - id: loop
            foreach:
              items: "{{ input.xs }}"
              as: x
              concurrency: 2
              steps:
                - id: double
                  set: {d: "{{ x * 2 }}"}
                  output: "{{ result.d }}"
                - id: label
                  set: {l: "{{ index }}:{{ steps.double.output }}"}
                  output: "{{ result.l }}"
          - id: done
            succeed: {output: "{{ steps.loop.output }}"}
    """)
    eid = h.start("each", {"xs": [5, 6, 7, 8, 9]})
    h.runtime.advance(h.dispatcher.pop().message)
    started = sorted(o.message.branch for o in h.dispatcher.pending())
    assert started == ["loop/0", "loop/1"]  # at most `concurrency` items in flight
    in_flight_max = 0
    while h.dispatcher.queue:
        o = h.dispatcher.pop()
        h.runtime.advance(o.message)
        live = {p.message.branch for p in h.dispatcher.pending() if p.message.branch}
        in_flight_max = max(in_flight_max, len(live))
    assert in_flight_max <= 2
    r = h.runtime.record(eid)
    assert r["status"] == "succeeded", r
    assert r["output"] == ["0:10", "1:12", "2:14", "3:16", "4:18"]


def test_foreach_empty_and_non_list_items(harness: Any) -> None:
    h = harness("""
        name: each
        input: {type: object}
        steps:
          - id: loop
            foreach:
              items: "{{ input.xs }}"
              steps:
                - id: body
                  set: {v: "{{ item }}"}
            catch:
              - errors: [template]
                goto: bad
          - id: done
            succeed: {output: "{{ steps.loop.output }}"}
          - id: bad
            succeed: {output: "{{ error.message }}"}
    """)
    assert h.run("each", {"xs": []})["output"] == []
    assert "must be a list" in h.run("each", {"xs": 3})["output"]


def test_foreach_items_are_rendered_once(harness: Any) -> None:
    calls: list[int] = []

    def items(ctx: Any) -> list[int]:
        calls.append(1)
        return [1, 2, 3]

    h = harness(
        """
        name: once
        steps:
          - id: get
            action: items
          - id: loop
            foreach:
              items: "{{ steps.get.output }}"
              concurrency: 1
              steps:
                - id: body
                  set: {v: "{{ item + 100 }}"}
                  output: "{{ result.v }}"
        """,
        actions={"items": items},
    )
    r = h.run("once")
    assert r["output"] == [101, 102, 103]
    assert calls == [1]


def test_a_failing_branch_stops_its_siblings_and_fails_the_parallel(harness: Any) -> None:
    ran: list[str] = []

    def step(ctx: Any, name: str) -> str:
        ran.append(name)
        return name

    h = harness(
        """
        name: stopper
        steps:
          - id: both
            parallel:
              branches:
                - steps:
                    - id: l1
                      action: step
                      with: {name: l1}
                    - id: l2
                      action: step
                      with: {name: l2}
                    - id: l3
                      action: step
                      with: {name: l3}
                - steps:
                    - id: bad
                      fail: {error: Broken}
            catch:
              - errors: [Broken]
                goto: handled
          - id: unreached
            succeed: {output: no}
          - id: handled
            succeed: {output: "{{ error.name }} in {{ error.step }}"}
        """,
        actions={"step": step},
    )
    eid = h.start("stopper")
    h.runtime.advance(h.dispatcher.pop().message)  # fan out
    msgs = {o.message.branch: o for o in (h.dispatcher.pop(), h.dispatcher.pop())}
    h.runtime.advance(msgs["both/0"].message)  # l1 runs
    h.runtime.advance(msgs["both/1"].message)  # the other branch fails: abort flag set
    h.drain()
    r = h.runtime.record(eid)
    assert r["status"] == "succeeded"
    assert r["output"] == "Broken in bad"
    assert ran == ["l1"]  # l2 never started: its branch stopped at the next node boundary


def test_uncaught_branch_failure_fails_the_execution(harness: Any) -> None:
    h = harness("""
        name: boom
        steps:
          - id: both
            parallel:
              branches:
                - steps:
                    - id: ok
                      set: {a: 1}
                - steps:
                    - id: bad
                      fail: {error: Broken, message: nope}
    """)
    r = h.run("boom")
    assert r["status"] == "failed"
    assert r["error"] == {"name": "Broken", "message": "nope", "step": "bad"}


def test_nested_foreach_in_parallel_in_foreach(harness: Any) -> None:
    h = harness("""
        name: nest
        input: {type: object}
        steps:
          - id: outer
            foreach:
              items: "{{ input.rows }}"
              as: row
              concurrency: 3
              steps:
                - id: split
                  parallel:
                    branches:
                      - steps:
                          - id: inner
                            foreach:
                              items: "{{ row }}"
                              as: cell
                              concurrency: 2
                              steps:
                                - id: sq
                                  set: {v: "{{ cell * cell }}"}
                                  output: "{{ result.v }}"
                      - steps:
                          - id: count
                            set: {n: "{{ row | length }}"}
                            output: "{{ result.n }}"
                - id: summary
                  set: {s: "{{ steps.split.output }}"}
                  output: "{{ result.s }}"
    """)
    r = h.run("nest", {"rows": [[1, 2], [3], [4, 5, 6]]})
    assert r["status"] == "succeeded", r
    assert r["output"] == [[[1, 4], 2], [[9], 1], [[16, 25, 36], 3]]


def test_branch_output_is_the_last_step_it_ran_and_succeed_ends_only_the_branch(harness: Any) -> None:
    h = harness("""
        name: outs
        steps:
          - id: both
            parallel:
              branches:
                - steps:
                    - id: a
                      set: {v: 1}
                      output: "{{ result.v }}"
                    - id: skipped
                      if: "{{ false }}"
                      set: {v: 2}
                - steps:
                    - id: early
                      succeed: {output: early}
                    - id: never
                      set: {v: 3}
          - id: after
            set: {r: "{{ steps.both.output }}"}
            output: "{{ result.r }}"
    """)
    r = h.run("outs")
    assert r["output"] == [1, "early"]
    assert "never" not in [t["step"] for t in r["trace"]]


def test_duplicate_join_messages_join_once(harness: Any) -> None:
    h = harness("""
        name: par
        steps:
          - id: both
            parallel:
              branches:
                - steps:
                    - id: a
                      set: {a: 1}
                - steps:
                    - id: b
                      set: {b: 1}
          - id: after
            set: {n: 1}
    """)
    eid = h.start("par")
    h.runtime.advance(h.dispatcher.pop().message)
    branch_msgs = [h.dispatcher.pop().message, h.dispatcher.pop().message]
    for m in branch_msgs:
        h.runtime.advance(m)
    for m in branch_msgs:  # redelivered: stale
        assert h.runtime.advance(m).kind == "stale"
    h.drain()
    r = h.runtime.record(eid)
    assert [t["step"] for t in r["trace"]].count("both") == 1
    assert [t["step"] for t in r["trace"]].count("after") == 1
    assert r["status"] == "succeeded"
    stale = Message(eid, "both", 2, "")
    assert h.runtime.advance(stale).kind in ("stale", "finished")


def test_a_failing_item_stops_queued_items_and_is_catchable(harness: Any) -> None:
    seen: list[int] = []

    def work(ctx: Any, n: int) -> int:
        seen.append(n)
        if n == 2:
            raise ValueError("two is bad")
        return n

    h = harness(
        """
        name: items
        input: {type: object}
        steps:
          - id: loop
            foreach:
              items: "{{ input.xs }}"
              as: n
              concurrency: 2
              steps:
                - id: work
                  action: work
                  with: {n: "{{ n }}"}
            catch:
              - errors: [action.ValueError]
                goto: handled
          - id: fine
            succeed: {output: all good}
          - id: handled
            succeed: {output: "{{ error.message }}"}
        """,
        actions={"work": work},
    )
    r = h.run("items", {"xs": [1, 2, 3, 4, 5, 6]})
    assert r["output"] == "two is bad"
    assert 2 in seen and len(seen) <= 3  # items after the failure were never started


def test_an_outer_failure_wakes_and_stops_a_nested_parked_branch(harness: Any) -> None:
    h = harness("""
        name: deep
        steps:
          - id: outer
            parallel:
              branches:
                - steps:
                    - id: inner
                      parallel:
                        branches:
                          - steps:
                              - id: nap
                                wait: {for: 30d}
                              - id: never
                                set: {x: 1}
                - steps:
                    - id: bad
                      fail: {error: Broken}
    """)
    eid = h.start("deep")
    t0 = h.clock.now()
    h.drain(until=lambda: h.runtime.record(eid)["status"] != "running")
    r = h.runtime.record(eid)
    assert r["status"] == "failed" and r["error"]["name"] == "Broken"
    assert h.clock.now() - t0 < 3600  # the 30-day nap was woken, not waited out
    assert "never" not in [t["step"] for t in r["trace"]]
