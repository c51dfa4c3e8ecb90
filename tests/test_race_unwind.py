"""Partial unwinds (issue 12, the last gap): a fan-out that ends early — a race decided, its own
`timeout`, a branch's or item's `timeout` — undoes what its losers registered at once, newest first,
before the step after it runs (or before `timeout` reaches its `catch`); winners' compensations stay
on the saga's stack. Real interpreter and Redis, virtual clock (docs/semantics.md)."""

from __future__ import annotations

from typing import Any

from engine.model import Message, StepError, StepFailure


class Recorder:
    """An action that records its calls; names starting with "fail" fail, and those in ``broken``
    fail until a test repairs them."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.errors: dict[str, Any] = {}
        self.broken: set[str] = set()
        self.during: dict[str, Any] = {}  # name → a callable run while that call is in progress

    def __call__(self, ctx: Any, name: str, **extra: Any) -> Any:
        self.calls.append(name)
        if "error" in extra:
            self.errors[name] = extra["error"]
        if name in self.during:
            self.during.pop(name)()
        if name.startswith("fail") or name in self.broken:
            raise StepFailure(StepError("supplier.down", f"{name} said no"))
        return {"name": name}


def events(h: Any, eid: str, name: str) -> list[dict[str, Any]]:
    return [e for e in h.runtime.history(eid) if e.get("event") == name]


def compensations(h: Any, eid: str) -> list[tuple[str, str | None, str]]:
    return [
        (e["step"], e.get("branch"), e["status"])
        for e in h.runtime.history(eid)
        if e.get("phase") == "compensate"
    ]


RACE = """
name: race
steps:
  - id: book
    action: rec
    with: {name: book}
    compensate: {action: rec, with: {name: unbook}}
  - id: quote
    parallel:
      wait_for: any
      branches:
        - steps:
            - id: hold_a
              action: rec
              with: {name: hold a}
              compensate: {action: rec, with: {name: release a, error: "{{ error }}"}}
            - id: seat_a
              action: rec
              with: {name: seat a}
              compensate: {action: rec, with: {name: unseat a}}
            - {id: wait_a, wait: {for: 10s}}
            - {id: a, action: rec, with: {name: a}}
        - steps:
            - {id: wait_b, wait: {for: 1s}}
            - id: b
              action: rec
              with: {name: b}
              output: "{{ result.name }}"
              compensate: {action: rec, with: {name: undo b}}
        - steps:
            - id: hold_c
              action: rec
              with: {name: hold c}
              compensate: {action: rec, with: {name: release c}}
            - {id: wait_c, wait: {for: 5s}}
            - {id: c, action: rec, with: {name: c}}
  - id: after
    action: rec
    with: {name: after}
  - id: done
    succeed:
      output: "{{ steps.quote.output }}"
"""


def test_a_won_race_undoes_its_losers_before_the_next_step(harness: Any) -> None:
    rec = Recorder()
    h = harness(RACE, actions={"rec": rec})
    eid = h.start("race")
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "succeeded" and record["output"] == [None, "b", None]
    # the losers' entries newest first, one at a time (as the saga would undo them; so newest first
    # within each branch); the winner's `undo b` and `unbook` stay
    assert rec.calls == [
        "book",
        "hold a",
        "hold c",
        "seat a",
        "b",
        "unseat a",
        "release c",
        "release a",
        "after",
    ]
    assert compensations(h, eid) == [
        ("seat_a", "quote/0", "ok"),
        ("hold_c", "quote/2", "ok"),
        ("hold_a", "quote/0", "ok"),
    ]
    (undoing,) = events(h, eid, "undoing")
    assert undoing["step"] == "quote" and undoing["message"] == "branches 0, 2" and int(undoing["count"]) == 3
    assert len(events(h, eid, "undone")) == 1
    # what a loser's compensation reads as `error`: it was cancelled because others won
    assert rec.errors["release a"]["name"] == "cancelled" and rec.errors["release a"]["step"] == "quote"
    assert h.store.client.llen(f"hf:{{{eid}}}:c") == 2  # book and b: the saga's, for a later failure
    assert not h.store.client.exists(f"hf:{{{eid}}}:u::quote")


def test_the_winners_compensation_stays_for_a_later_failure(harness: Any) -> None:
    rec = Recorder()
    h = harness(RACE.replace("with: {name: after}", "with: {name: fail after}"), actions={"rec": rec})
    record = h.run("race")
    assert record["status"] == "compensated"
    assert rec.calls[-6:] == ["unseat a", "release c", "release a", "fail after", "undo b", "unbook"]


def test_a_losers_undo_runs_once_and_the_stack_forgets_it(harness: Any) -> None:
    """Undone losers leave the saga's stack: a cancel afterwards does not undo them again."""
    rec = Recorder()
    text = RACE.replace("with: {name: after}", "with: {name: after}\n  - {id: pause, wait: {for: 1h}}")
    h = harness(text, actions={"rec": rec})
    eid = h.start("race")
    h.drain(until=lambda: "after" in rec.calls and not h.dispatcher.queue[0][2].message.node == "pause")
    h.runtime.cancel(eid)
    h.drain()
    assert h.runtime.record(eid)["status"] == "cancelled"
    assert [c for c in rec.calls if c.startswith(("release", "unseat", "undo", "unbook"))] == [
        "unseat a",
        "release c",
        "release a",
        "undo b",
        "unbook",
    ]


def test_wait_for_n_keeps_exactly_n_winners_and_undoes_a_late_success(harness: Any) -> None:
    """A branch that succeeds after the race was decided (its last step was running when the N-th
    success came) is a loser: its slot is null and what it registered is undone."""
    text = """
    name: late
    steps:
      - id: race
        parallel:
          first: true
          branches:
            - steps:
                - {id: wait_a, wait: {for: 1s}}
                - {id: a, action: rec, with: {name: a}, compensate: {action: rec, with: {name: undo a}}}
            - steps:
                - {id: b, action: rec, with: {name: b}, compensate: {action: rec, with: {name: undo b}}}
      - {id: next, action: rec, with: {name: next}}
    """
    rec = Recorder()
    h = harness(text, actions={"rec": rec})
    # while b runs, branch a (1 s later in virtual time) finishes first and wins
    rec.during["b"] = lambda: h.drain(until=lambda: "a" in rec.calls and not _has(h, "race/0", "a"))
    eid = h.start("late")
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "succeeded"
    assert rec.calls == ["b", "a", "undo b", "next"]
    assert h.store.outputs(eid, ["race"]) == [[{"name": "a"}, None]]


def _has(h: Any, branch: str, node: str) -> bool:
    """Whether a message for ``node`` of ``branch`` is still queued."""
    return any(o.message.branch == branch and o.message.node == node for _, _, o in h.dispatcher.queue)


def test_a_lost_race_undoes_failed_and_stopped_branches_and_keeps_successes(harness: Any) -> None:
    text = """
    name: lost
    steps:
      - id: race
        catch: [{errors: [supplier.down], goto: plan_b}]
        parallel:
          wait_for: 3
          branches:
            - steps:
                - {id: ok1, action: rec, with: {name: ok1}, compensate: {action: rec, with: {name: undo ok1}}}
            - steps:
                - {id: h2, action: rec, with: {name: h2}, compensate: {action: rec, with: {name: undo h2}}}
                - {id: w2, wait: {for: 1s}}
                - {id: f2, action: rec, with: {name: fail 2}}
            - steps:
                - {id: h3, action: rec, with: {name: h3}, compensate: {action: rec, with: {name: undo h3}}}
                - {id: w3, wait: {for: 2s}}
                - {id: f3, action: rec, with: {name: fail 3}}
            - steps:
                - {id: h4, action: rec, with: {name: h4}, compensate: {action: rec, with: {name: undo h4}}}
                - {id: w4, wait: {for: 1h}}
      - {id: plan_b, action: rec, with: {name: "plan b {{ error.name }}"}}
    """
    rec = Recorder()
    h = harness(text, actions={"rec": rec})
    eid = h.start("lost")
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    undone = [c for c in rec.calls if c.startswith("undo")]
    assert undone == ["undo h4", "undo h3", "undo h2"]  # ok1 succeeded: it stays on the stack
    assert rec.calls[-1] == "plan b supplier.down"
    assert h.store.client.llen(f"hf:{{{eid}}}:c") == 1


PARALLEL_TIMEOUT = """
name: deadline
steps:
  - id: book
    action: rec
    with: {name: book}
    compensate: {action: rec, with: {name: unbook}}
  - id: both
    timeout: 2s
    parallel:
      branches:
        - steps:
            - id: fast
              action: rec
              with: {name: fast}
              compensate: {action: rec, with: {name: undo fast}}
        - steps:
            - id: hold
              action: rec
              with: {name: hold}
              compensate: {action: rec, with: {name: release, error: "{{ error }}"}}
            - {id: slow, wait: {for: 8s}}
            - {id: never, action: rec, with: {name: never}}
  - {id: after, action: rec, with: {name: after}}
"""


def test_a_parallel_timeout_undoes_the_unfinished_branches_then_raises_timeout(harness: Any) -> None:
    """The issue's case: a 2 s timeout over an 8 s branch ends `timeout` near 2 s and compensates."""
    rec = Recorder()
    h = harness(PARALLEL_TIMEOUT, actions={"rec": rec})
    start = h.clock.now()
    eid = h.start("deadline")
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "compensated" and record["error"]["name"] == "timeout"
    assert float(h.store.header(eid)["finished_at"]) - start < 3
    # the stopped branch first (the partial unwind), then the saga: the finished branch, then book
    assert rec.calls == ["book", "fast", "hold", "release", "undo fast", "unbook"]
    assert rec.errors["release"]["name"] == "timeout" and rec.errors["release"]["step"] == "both"


def test_a_caught_parallel_timeout_undoes_only_the_stopped_branches(harness: Any) -> None:
    rec = Recorder()
    text = PARALLEL_TIMEOUT.replace(
        "    timeout: 2s\n", "    timeout: 2s\n    catch: [{errors: [timeout], goto: after}]\n"
    )
    h = harness(text, actions={"rec": rec})
    record = h.run("deadline")
    assert record["status"] == "succeeded"
    assert rec.calls == ["book", "fast", "hold", "release", "after"]  # undone before the catch target


def test_a_branch_timeout_undoes_that_branch_and_the_siblings_it_stopped(harness: Any) -> None:
    text = """
    name: per-branch
    steps:
      - id: fan
        catch: [{errors: [timeout], goto: after}]
        parallel:
          branches:
            - timeout: 3s
              steps:
                - {id: h1, action: rec, with: {name: h1}, compensate: {action: rec, with: {name: undo h1}}}
                - {id: w1, wait: {for: 1h}}
            - steps:
                - {id: h2, action: rec, with: {name: h2}, compensate: {action: rec, with: {name: undo h2}}}
                - {id: w2, wait: {for: 1h}}
            - steps:
                - {id: h3, action: rec, with: {name: h3}, compensate: {action: rec, with: {name: undo h3}}}
      - {id: after, action: rec, with: {name: after}}
    """
    rec = Recorder()
    h = harness(text, actions={"rec": rec})
    eid = h.start("per-branch")
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    assert rec.calls[-3:] == ["undo h2", "undo h1", "after"]  # h3 had finished: kept
    assert h.store.client.llen(f"hf:{{{eid}}}:c") == 1


def test_a_plain_branch_failure_leaves_the_stack_to_the_saga(harness: Any) -> None:
    """A failure (not a timeout, not a race) is the saga's business, as before: caught, nothing is
    undone; uncaught, the whole stack unwinds."""
    text = """
    name: plain
    steps:
      - id: fan
        catch: [{errors: [supplier.down], goto: after}]
        parallel:
          branches:
            - steps:
                - {id: h1, action: rec, with: {name: h1}, compensate: {action: rec, with: {name: undo h1}}}
                - {id: w1, wait: {for: 1h}}
            - steps:
                - {id: w2, wait: {for: 1s}}
                - {id: f2, action: rec, with: {name: fail 2}}
      - {id: after, action: rec, with: {name: after}}
    """
    rec = Recorder()
    h = harness(text, actions={"rec": rec})
    eid = h.start("plain")
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    assert rec.calls == ["h1", "fail 2", "after"] and not events(h, eid, "undoing")


def test_a_foreach_item_timeout_undoes_the_timed_out_item(harness: Any) -> None:
    text = """
    name: items
    steps:
      - id: each
        catch: [{errors: [timeout], goto: after}]
        foreach:
          items: [1, 2, 3]
          concurrency: 3
          item_timeout: 2s
          steps:
            - id: hold
              action: rec
              with: {name: "hold {{ item }}"}
              compensate: {action: rec, with: {name: "release {{ item }}"}}
            - {id: slow, if: "{{ item == 2 }}", wait: {for: 1h}}
      - {id: after, action: rec, with: {name: after}}
    """
    rec = Recorder()
    h = harness(text, actions={"rec": rec})
    eid = h.start("items")
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    assert rec.calls[-2:] == ["release 2", "after"]
    (undoing,) = events(h, eid, "undoing")
    assert undoing["message"] == "items 1"


def test_until_cancels_nothing_so_nothing_is_undone(harness: Any) -> None:
    text = """
    name: until
    steps:
      - id: each
        foreach:
          items: [1, 2, 3, 4]
          concurrency: 1
          until: "{{ item >= 2 }}"
          steps:
            - id: hold
              action: rec
              with: {name: "hold {{ item }}"}
              compensate: {action: rec, with: {name: "release {{ item }}"}}
      - {id: after, action: rec, with: {name: after}}
    """
    rec = Recorder()
    h = harness(text, actions={"rec": rec})
    eid = h.start("until")
    h.drain()
    assert rec.calls == ["hold 1", "hold 2", "after"] and not events(h, eid, "undoing")


def test_a_loser_with_a_nested_fan_out_is_undone_whole_newest_first(harness: Any) -> None:
    text = """
    name: nested
    steps:
      - id: race
        parallel:
          first: true
          branches:
            - steps:
                - {id: w0, wait: {for: 1s}}
                - {id: win, action: rec, with: {name: win}}
            - steps:
                - {id: pre, action: rec, with: {name: pre}, compensate: {action: rec, with: {name: undo pre}}}
                - id: each
                  foreach:
                    items: [1, 2]
                    steps:
                      - id: hold
                        action: rec
                        with: {name: "hold {{ item }}"}
                        compensate: {action: rec, with: {name: "release {{ item }}"}}
                - {id: w1, wait: {for: 1h}}
      - {id: after, action: rec, with: {name: after}}
    """
    rec = Recorder()
    h = harness(text, actions={"rec": rec})
    eid = h.start("nested")
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    assert rec.calls[-4:] == ["release 2", "release 1", "undo pre", "after"]
    branches = {b for _, b, _ in compensations(h, eid)}
    assert branches == {"race/1", "race/1/each/0", "race/1/each/1"}


def test_a_race_in_a_loop_undoes_only_this_rounds_losers(harness: Any) -> None:
    """The same branch paths run again: entries of an earlier round (a winner's) are not this
    round's losers, even under the same path."""
    text = """
    name: rounds
    vars:
      round: {initial: 0}
    steps:
      - id: race
        parallel:
          first: true
          branches:
            - steps:
                - {id: wa, wait: {for: "{{ '1s' if vars.round == 0 else '5s' }}"}}
                - id: a
                  action: rec
                  with: {name: "a{{ vars.round }}"}
                  compensate: {action: rec, with: {name: "undo a{{ vars.round }}"}}
            - steps:
                - id: hb
                  action: rec
                  with: {name: "hb{{ vars.round }}"}
                  compensate: {action: rec, with: {name: "undo hb"}}
                - {id: wb, wait: {for: "{{ '5s' if vars.round == 0 else '1s' }}"}}
      - {id: bump, set: {round: "{{ vars.round + 1 }}"}}
      - id: again
        switch:
          - {if: "{{ vars.round < 2 }}", goto: race}
      - {id: after, action: rec, with: {name: after}}
    """
    rec = Recorder()
    h = harness(text, actions={"rec": rec})
    eid = h.start("rounds")
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    # round 0: a won, b lost (undo hb); round 1: b won (its hold stays), a lost before registering
    assert [c for c in rec.calls if c.startswith("undo")] == ["undo hb"]
    assert h.store.client.llen(f"hf:{{{eid}}}:c") == 2  # a0 and round 1's hb


def test_a_cancel_during_a_partial_unwind_lets_it_finish_then_unwinds_the_rest(harness: Any) -> None:
    rec = Recorder()
    text = RACE.replace(
        "compensate: {action: rec, with: {name: release c}}",
        "compensate: {action: rec, with: {name: release c},"
        " retry: {max_attempts: 3, interval: 1m, jitter: none, on: [any]}}",
    )
    rec.broken.add("release c")
    h = harness(text, actions={"rec": rec})
    eid = h.start("race")
    h.drain(until=lambda: "unseat a" in rec.calls)
    h.runtime.cancel(eid)
    h.drain(until=lambda: "release c" in rec.calls)  # fails once, after the cancel
    failed_at = h.clock.now()
    rec.broken.clear()
    h.drain(until=lambda: rec.calls.count("release c") == 2)
    assert h.clock.now() - failed_at >= 59  # the retry kept its backoff: a cancel does not hurry it
    h.drain()
    assert h.runtime.record(eid)["status"] == "cancelled"
    tail = [c for c in rec.calls if c.startswith(("release", "unseat", "undo", "unbook"))]
    assert tail == ["unseat a", "release c", "release c", "release a", "undo b", "unbook"]
    assert "after" not in rec.calls


def test_cancel_without_compensation_runs_no_partial_unwind(harness: Any) -> None:
    rec = Recorder()
    h = harness(RACE, actions={"rec": rec})
    eid = h.start("race")
    h.drain(until=lambda: "b" in rec.calls)
    h.runtime.cancel(eid, compensate=False)
    h.drain()
    assert h.runtime.record(eid)["status"] == "cancelled"
    assert not [c for c in rec.calls if c.startswith(("release", "unseat", "undo", "unbook"))]


BROKEN = RACE.replace(
    "compensate: {action: rec, with: {name: unseat a}}",
    "compensate: {action: rec, with: {name: unseat a}, retry: {max_attempts: 2, interval: 1s, on: [any]}}",
)


def test_a_partial_compensation_that_gives_up_is_compensation_failed_and_resume_goes_on(harness: Any) -> None:
    rec = Recorder()
    rec.broken.add("unseat a")
    h = harness(BROKEN, actions={"rec": rec})
    eid = h.start("race")
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "compensation_failed"
    assert record["compensation_error"]["name"] == "supplier.down"
    assert record["compensation_error"]["step"] == "seat_a"
    assert rec.calls.count("unseat a") == 2 and "release a" not in rec.calls and "after" not in rec.calls
    (where,) = [w for w in record["where"] if w["branch"] == ""]
    assert where["state"] == "compensation_failed" and where["kind"] == "compensate"
    assert (
        "'seat_a' (branch quote/0) gave up after 2 attempt(s)" in where["text"] and "resume" in where["text"]
    )
    failed = events(h, eid, "compensation_failed")
    assert failed[-1]["step"] == "seat_a" and failed[-1]["branch"] == "quote/0"

    rec.broken.clear()
    h.runtime.resume(eid)
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "succeeded"
    assert rec.calls[-4:] == ["unseat a", "release c", "release a", "after"]
    assert h.store.client.llen(f"hf:{{{eid}}}:c") == 2


def test_other_branches_go_on_while_a_partial_unwind_waits_for_resume(harness: Any) -> None:
    """Only the fan-out whose loser's compensation gave up waits; a sibling branch of an enclosing
    parallel keeps running (its messages are not dropped while the execution is compensation_failed)."""
    text = """
    name: outer
    steps:
      - id: outer
        parallel:
          branches:
            - steps:
                - id: race
                  parallel:
                    first: true
                    branches:
                      - steps:
                          - {id: w0, wait: {for: 1s}}
                          - {id: win, action: rec, with: {name: win}}
                      - steps:
                          - id: hold
                            action: rec
                            with: {name: hold}
                            compensate: {action: rec, with: {name: release}}
                          - {id: w1, wait: {for: 1h}}
            - steps:
                - {id: later, wait: {for: 10s}}
                - {id: other, action: rec, with: {name: other}}
      - {id: after, action: rec, with: {name: after}}
    """
    rec = Recorder()
    rec.broken.add("release")
    h = harness(text, actions={"rec": rec})
    eid = h.start("outer")
    h.drain()
    assert h.runtime.record(eid)["status"] == "compensation_failed"
    assert "other" in rec.calls  # the sibling's wait ended and its step ran meanwhile
    rec.broken.clear()
    h.runtime.resume(eid)
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    assert rec.calls[-2:] == ["release", "after"]


def test_a_duplicate_of_a_partial_unwind_message_runs_nothing_twice(harness: Any) -> None:
    rec = Recorder()
    h = harness(RACE, actions={"rec": rec})
    eid = h.start("race")
    seen: list[Message] = []
    while h.dispatcher.queue:
        o = h.dispatcher.pop()
        assert o is not None
        h.runtime.advance(o.message)
        seen.append(o.message)
        for old in seen[-3:]:  # every message delivered again, a little later
            assert h.runtime.advance(old).kind in ("stale", "finished")
    assert rec.calls.count("release c") == 1 and rec.calls.count("release a") == 1
    assert h.runtime.record(eid)["status"] == "succeeded"


def test_the_record_and_where_show_the_partial_unwind(harness: Any) -> None:
    rec = Recorder()
    h = harness(RACE, actions={"rec": rec})
    eid = h.start("race")
    h.drain(until=lambda: "release c" in rec.calls)
    record = h.runtime.record(eid)
    (where,) = [w for w in record["where"] if w["branch"] == ""]
    assert where["state"] == "retrying" or where["state"] == "compensating"
    assert "'quote'" in where["text"] and "undoing what its losers registered" in where["text"]
    assert ("quote", "undo") in {(c["node"], c["phase"]) for c in record["current"]}
    h.drain()
    trace = h.runtime.record(eid)["trace"]
    assert {"step": "hold_c", "phase": "compensate", "status": "ok", "attempt": 1} in trace


def test_the_dashboard_shows_the_partial_unwind(harness: Any) -> None:
    from engine.web.ui.states import node_states
    from engine.web.ui.timeline import compensations as shown
    from engine.web.ui.timeline import timeline

    rec = Recorder()
    rec.broken.add("unseat a")
    h = harness(BROKEN, actions={"rec": rec})
    eid = h.start("race")
    h.drain()
    graph = h.store.get_graph(h.store.header(eid)["graph"])
    record, history = h.runtime.record(eid), h.runtime.history(eid)
    states = node_states(graph, record, history)
    assert states["quote"]["state"] == "failed" and "resume" in states["quote"]["detail"]
    assert states["seat_a"]["compensation"] == "failed"
    assert states["b"]["compensation"] == "registered"  # the winner's: not the one that gave up
    texts = [e["text"] for e in timeline(history)["entries"]]
    assert "quote ended early: undoing 3 compensation(s) of its losers (branches 0, 2)" in texts

    rec.broken.clear()
    h.runtime.resume(eid)
    h.drain()
    record, history = h.runtime.record(eid), h.runtime.history(eid)
    states = node_states(graph, record, history)
    assert states["hold_c"]["state"] == "compensated" and states["b"]["state"] == "done"
    assert [(c["step"], c["branch"], c["status"]) for c in shown(history)] == [
        ("seat_a", "quote/0", "error"),
        ("seat_a", "quote/0", "error"),
        ("seat_a", "quote/0", "ok"),
        ("hold_c", "quote/2", "ok"),
        ("hold_a", "quote/0", "ok"),
    ]
    texts = [e["text"] for e in timeline(history)["entries"]]
    assert "hold_c compensated (branch quote/2)" in texts and "quote: its losers are undone" in texts


def test_a_losers_workflow_compensation_runs_as_a_child_and_resumes_the_undo(harness: Any) -> None:
    rec = Recorder()
    parent = """
    name: parent
    steps:
      - id: race
        parallel:
          first: true
          branches:
            - steps:
                - {id: w0, wait: {for: 1s}}
                - {id: win, action: rec, with: {name: win}}
            - steps:
                - id: hold
                  action: rec
                  with: {name: hold}
                  compensate: {workflow: {name: release, input: {what: hold}}}
                - {id: w1, wait: {for: 1h}}
      - {id: after, action: rec, with: {name: after}}
    """
    child = """
    name: release
    input: {type: object, properties: {what: {type: string}}}
    steps:
      - {id: pause, wait: {for: 5s}}
      - {id: undo, action: rec, with: {name: "release {{ input.what }}"}}
    """
    h = harness(parent, child, actions={"rec": rec})
    eid = h.start("parent")
    h.drain()
    assert h.runtime.record(eid)["status"] == "succeeded"
    assert rec.calls == ["hold", "win", "release hold", "after"]
    assert compensations(h, eid) == [("hold", "race/1", "ok")]
