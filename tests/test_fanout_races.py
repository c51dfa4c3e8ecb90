"""Races and early exits on fan-outs (issue 12 item 5): `parallel.wait_for` / `first`, `foreach.until`,
per-item and per-branch timeouts — end to end on the real interpreter and Redis (virtual clock)."""

from __future__ import annotations

from typing import Any

from engine.model import StepError, StepFailure


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, ctx: Any, name: str, **extra: Any) -> Any:
        self.calls.append(name)
        if name.startswith("fail"):
            raise StepFailure(StepError("supplier.down", f"{name} said no"))
        return {"name": name, **extra}


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
            - {id: slow_wait, wait: {for: 10s}}
            - id: slow
              action: rec
              with: {name: slow}
              compensate: {action: rec, with: {name: undo slow}}
        - steps:
            - {id: fast_wait, wait: {for: 1s}}
            - id: fast
              action: rec
              with: {name: fast}
              output: "{{ result.name }}"
              compensate: {action: rec, with: {name: undo fast}}
        - steps:
            - {id: mid_wait, wait: {for: 5s}}
            - id: mid
              action: rec
              with: {name: mid}
  - id: done
    succeed:
      output: "{{ steps.quote.output }}"
"""


def test_wait_for_any_ends_at_the_first_success_and_stops_the_others(harness: Any) -> None:
    rec = Recorder()
    h = harness(RACE, actions={"rec": rec})
    start = h.clock.now()
    eid = h.start("race")
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "succeeded"
    assert record["output"] == [None, "fast", None]
    assert rec.calls == ["book", "fast"]  # the waiting losers were woken and stopped, never ran on
    finished = float(h.store.header(eid)["finished_at"])
    assert finished - start < 5  # did not wait for the 5 s or 10 s branches
    steps = [(t["step"], t["status"]) for t in record["trace"]]
    assert ("slow", "ok") not in steps and ("mid", "ok") not in steps


def test_first_true_is_wait_for_any(harness: Any) -> None:
    rec = Recorder()
    h = harness(RACE.replace("wait_for: any", "first: true"), actions={"rec": rec})
    record = h.run("race")
    assert record["status"] == "succeeded" and record["output"] == [None, "fast", None]


def test_wait_for_n_waits_for_that_many_successes(harness: Any) -> None:
    rec = Recorder()
    h = harness(RACE.replace("wait_for: any", "wait_for: 2"), actions={"rec": rec})
    record = h.run("race")
    assert record["status"] == "succeeded"
    assert record["output"] == [None, "fast", {"name": "mid"}]
    assert rec.calls == ["book", "fast", "mid"]


def test_a_failure_does_not_end_a_race_that_can_still_be_won(harness: Any) -> None:
    rec = Recorder()
    h = harness(RACE.replace("with: {name: fast}", "with: {name: fail fast}"), actions={"rec": rec})
    record = h.run("race")
    assert record["status"] == "succeeded"
    assert record["output"] == [None, None, {"name": "mid"}]  # mid won after fast failed
    assert rec.calls == ["book", "fail fast", "mid"]


def test_a_race_that_can_no_longer_be_won_fails_with_the_first_failure_and_compensates(harness: Any) -> None:
    rec = Recorder()
    text = (
        RACE.replace("wait_for: any", "wait_for: 2")
        .replace("with: {name: fast}", "with: {name: fail fast}")
        .replace("with: {name: mid}", "with: {name: fail mid}")
    )
    h = harness(text, actions={"rec": rec})
    record = h.run("race")
    assert record["status"] == "compensated"
    assert record["error"]["name"] == "supplier.down" and record["error"]["step"] == "fast"
    assert "slow" not in rec.calls  # stopped once 2 successes were out of reach
    assert rec.calls[-1] == "unbook"


LOSER_REGISTERED = RACE.replace(
    """            - {id: mid_wait, wait: {for: 5s}}""",
    """            - id: mid_hold
              action: rec
              with: {name: hold mid}
              compensate: {action: rec, with: {name: release mid}}
            - {id: mid_wait, wait: {for: 5s}}""",
)


def test_a_losers_compensation_runs_at_once_when_the_race_is_won(harness: Any) -> None:
    """Decided (docs/semantics.md "Losers are undone at once"): what a stopped branch registered is
    undone before the step after the race; the winner's stays on the stack."""
    rec = Recorder()
    h = harness(LOSER_REGISTERED, actions={"rec": rec})
    record = h.run("race")
    assert record["status"] == "succeeded" and record["output"] == [None, "fast", None]
    assert rec.calls == ["book", "hold mid", "fast", "release mid"]


def test_the_winners_compensation_runs_when_the_execution_later_fails(harness: Any) -> None:
    rec = Recorder()
    text = LOSER_REGISTERED.replace(
        "  - id: done\n", "  - id: after\n    action: rec\n    with: {name: fail after}\n  - id: done\n"
    )
    h = harness(text, actions={"rec": rec})
    record = h.run("race")
    assert record["status"] == "compensated"
    assert rec.calls[-4:] == ["release mid", "fail after", "undo fast", "unbook"]


# ----------------------------------------------------------------------------------- foreach until

UNTIL = """
name: search
vars:
  found: {reduce: append, initial: []}
steps:
  - id: scan
    foreach:
      items: [1, 2, 3, 4, 5, 6, 7, 8]
      concurrency: 2
      until: "{{ result.hit or vars.found | length >= 5 }}"
      steps:
        - id: look
          action: rec
          with: {name: "look {{ item }}"}
          output: "{{ {'item': item, 'hit': item == 3} }}"
"""


def test_foreach_until_stops_starting_items_once_it_holds(harness: Any) -> None:
    rec = Recorder()
    h = harness(UNTIL, actions={"rec": rec})
    record = h.run("search")
    assert record["status"] == "succeeded"
    out = record["output"]
    # items run two at a time: 1 and 2 start, then 3 (after 1), then 4 (after 2)... item 3 is a hit:
    # whatever was running finishes, nothing new starts
    assert out[2] == {"item": 3, "hit": True}
    assert out[-1] is None and out[-2] is None
    ran = [c for c in rec.calls]
    assert len(ran) <= 4 and "look 3" in ran
    assert all(out[i] is None for i in range(len(out)) if f"look {i + 1}" not in ran)


def test_foreach_until_reads_vars_and_the_item(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: gather
        vars:
          total: {reduce: sum, initial: 0}
        steps:
          - id: add
            foreach:
              items: [5, 5, 5, 5, 5, 5]
              concurrency: 1
              until: "{{ vars.total >= 10 and index >= 1 }}"
              steps:
                - id: count
                  set: {total: "{{ item }}"}
          - id: done
            succeed: {output: "{{ vars.total }}"}
        """,
        actions={"rec": rec},
    )
    record = h.run("gather")
    assert record["status"] == "succeeded" and record["output"] == 10


def test_foreach_until_that_never_holds_runs_every_item(harness: Any) -> None:
    rec = Recorder()
    never = UNTIL.replace("result.hit or vars.found | length >= 5", "false and result")
    h = harness(never, actions={"rec": rec})
    record = h.run("search")
    assert record["status"] == "succeeded" and len(rec.calls) == 8 and None not in record["output"]


# ------------------------------------------------------------------------------- branch timeouts

BRANCH_TIMEOUT = """
name: deadline
steps:
  - id: book
    action: rec
    with: {name: book}
    compensate: {action: rec, with: {name: unbook}}
  - id: both
    parallel:
      branches:
        - steps:
            - id: quick
              action: rec
              with: {name: quick}
              compensate: {action: rec, with: {name: undo quick}}
        - timeout: 3s
          steps:
            - {id: slow, wait: {for: 8s}}
            - {id: after_slow, action: rec, with: {name: after_slow}}
"""


def test_a_branch_timeout_fails_the_branch_and_so_the_parallel(harness: Any) -> None:
    rec = Recorder()
    h = harness(BRANCH_TIMEOUT, actions={"rec": rec})
    start = h.clock.now()
    eid = h.start("deadline")
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "compensated"
    assert record["error"]["name"] == "timeout" and record["error"]["step"] == "both"
    assert "after_slow" not in rec.calls
    assert rec.calls[-2:] == ["undo quick", "unbook"]
    assert 3 <= float(h.store.header(eid)["finished_at"]) - start < 4


def test_a_branch_timeout_is_catchable_on_the_parallel(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        BRANCH_TIMEOUT.replace(
            "    parallel:\n", "    catch: [{errors: [timeout], goto: late}]\n    parallel:\n"
        )
        + "  - {id: ok, succeed: {output: on time}}\n"
        + '  - {id: late, succeed: {output: "{{ error.message }}"}}\n',
        actions={"rec": rec},
    )
    record = h.run("deadline")
    assert record["status"] == "succeeded"
    assert record["output"] == "branch 1 of 'both' did not finish within its timeout"


def test_a_branch_that_finishes_in_time_is_not_timed_out(harness: Any) -> None:
    rec = Recorder()
    h = harness(BRANCH_TIMEOUT.replace("wait: {for: 8s}", "wait: {for: 1s}"), actions={"rec": rec})
    record = h.run("deadline")
    assert record["status"] == "succeeded" and rec.calls == ["book", "quick", "after_slow"]


def test_a_timed_out_branch_loses_a_race_that_another_branch_wins(harness: Any) -> None:
    rec = Recorder()
    text = BRANCH_TIMEOUT.replace("      branches:", "      wait_for: any\n      branches:")
    text = text.replace("- id: quick\n", "- {id: quick_wait, wait: {for: 5s}}\n            - id: quick\n")
    h = harness(text, actions={"rec": rec})
    record = h.run("deadline")
    assert record["status"] == "succeeded"
    assert record["trace"] and rec.calls == ["book", "quick"]


def test_a_foreach_item_timeout_fails_the_slow_item(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: items
        steps:
          - id: each
            catch: [{errors: [timeout], goto: late}]
            foreach:
              items: [1, 9, 2]
              item_timeout: 5s
              steps:
                - {id: pause, if: "{{ item != 9 }}", wait: {for: 1s}}
                - {id: long_pause, if: "{{ item == 9 }}", wait: {for: 9s}}
                - {id: work, action: rec, with: {name: "item {{ item }}"}}
          - {id: ok, succeed: {output: all}}
          - id: late
            succeed: {output: "{{ error.name }} {{ error.message }}"}
        """,
        actions={"rec": rec},
    )
    record = h.run("items")
    assert record["status"] == "succeeded"
    assert record["output"] == "timeout item 1 of 'each' did not finish within its timeout"
    assert "item 9" not in rec.calls


def test_a_foreach_item_timeout_applies_to_items_started_later(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: items
        steps:
          - id: each
            foreach:
              items: [1, 1, 9]
              concurrency: 1
              item_timeout: 5s
              steps:
                - {id: pause, if: "{{ item != 9 }}", wait: {for: 1s}}
                - {id: long_pause, if: "{{ item == 9 }}", wait: {for: 9s}}
                - {id: work, action: rec, with: {name: "item {{ index }}"}}
        """,
        actions={"rec": rec},
    )
    record = h.run("items")
    assert record["status"] == "failed" and record["error"]["name"] == "timeout"
    assert rec.calls == ["item 0", "item 1"]


def test_a_branch_timeout_stops_a_nested_fan_out_inside_it(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: nested
        steps:
          - id: outer
            parallel:
              branches:
                - steps: [{id: quick, action: rec, with: {name: quick}}]
                - timeout: 4s
                  steps:
                    - id: inner
                      foreach:
                        items: [1, 2, 3]
                        steps:
                          - {id: hold, wait: {for: 30s}}
                          - {id: late, action: rec, with: {name: "late {{ item }}"}}
        """,
        actions={"rec": rec},
    )
    start = h.clock.now()
    eid = h.start("nested")
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "failed" and record["error"]["name"] == "timeout"
    assert rec.calls == ["quick"]
    assert float(h.store.header(eid)["finished_at"]) - start < 30


def test_a_race_inside_foreach_items_is_decided_per_item(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: per-item
        steps:
          - id: each
            foreach:
              items: [1, 2]
              steps:
                - id: race
                  parallel:
                    first: true
                    branches:
                      - steps: [{id: a, action: rec, with: {name: "a{{ item }}"}}]
                      - steps:
                          - {id: b_wait, wait: {for: 5s}}
                          - {id: b, action: rec, with: {name: "b{{ item }}"}}
        """,
        actions={"rec": rec},
    )
    record = h.run("per-item")
    assert record["status"] == "succeeded"
    assert record["output"] == [[{"name": "a1"}, None], [{"name": "a2"}, None]]
    assert sorted(rec.calls) == ["a1", "a2"]


def test_until_reads_a_step_completed_before_the_foreach(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        """
        name: limit
        steps:
          - id: config
            set: {ignored: 1}
            output: {enough: 2}
          - id: each
            foreach:
              items: [1, 2, 3, 4]
              concurrency: 1
              until: "{{ index + 1 >= steps.config.output.enough }}"
              steps:
                - {id: work, action: rec, with: {name: "w{{ item }}"}}
        """,
        actions={"rec": rec},
    )
    record = h.run("limit")
    assert record["status"] == "succeeded" and rec.calls == ["w1", "w2"]
    assert record["output"][2:] == [None, None]


def test_a_failing_until_fails_the_item_with_template(harness: Any) -> None:
    rec = Recorder()
    h = harness(
        UNTIL.replace("result.hit or vars.found | length >= 5", "result.hit.nope.deeper"),
        actions={"rec": rec},
    )
    record = h.run("search")
    assert record["status"] == "failed" and record["error"]["name"] == "template"


def test_existing_graphs_keep_their_hash_and_new_keys_reach_the_graph() -> None:
    from conftest import workflow

    from dsl.compiler import compile_document
    from dsl.source import loads

    plain = compile_document(loads(workflow(RACE.replace("      wait_for: any\n", ""))), strict=True)
    assert "wait_for" not in plain.nodes["quote"].config and "timeouts_ms" not in plain.nodes["quote"].config
    raced = compile_document(loads(workflow(RACE)), strict=True)
    assert raced.nodes["quote"].config["wait_for"] == 1 and raced.hash != plain.hash
    timed = compile_document(loads(workflow(BRANCH_TIMEOUT)), strict=True)
    assert list(timed.nodes["both"].config["timeouts_ms"]) == [0, 3000]


def test_the_graph_shows_races_until_and_timeouts() -> None:
    from conftest import workflow

    from dsl.compiler import compile_document
    from dsl.render import to_mermaid
    from dsl.source import loads

    text = to_mermaid(compile_document(loads(workflow(BRANCH_TIMEOUT)), strict=True))
    assert "branch 2 (≤ 3s)" in text
    text = to_mermaid(compile_document(loads(workflow(RACE)), strict=True))
    assert "first wins" in text
    text = to_mermaid(compile_document(loads(workflow(UNTIL)), strict=True))
    assert "until" in text


def test_hopflow_run_ends_a_race_at_its_first_winner(tmp_path: Any) -> None:
    """On the embedded default (local dispatcher, real clock): the 1 s branch wins, the 30 s one is
    woken and stopped, so the run ends long before 30 s."""
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "race.yaml").write_text(
        "name: race\nsteps:\n"
        "  - id: race\n    parallel:\n      first: true\n      branches:\n"
        "        - steps: [{id: slow, wait: {for: 30s}}, {id: late, action: demo_rec}]\n"
        "        - steps: [{id: soon, wait: {for: 1s}}, {id: quick, action: demo_rec}]\n"
    )
    (tmp_path / "acts.py").write_text(
        "import engine\n\n\n@engine.action('demo_rec')\ndef rec(ctx, **kw):\n    return {'step': ctx.step}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "race.yaml", "--actions", "acts.py", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=25,  # the losing branch's 30 s wait must not be waited for
        env=env,
    )
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["status"] == "succeeded", done.stderr
    assert record["output"] == [None, {"step": "quick"}]


def test_after_a_race_a_branch_step_may_not_have_completed(tmp_path: Any) -> None:
    """Only one branch of a race is sure to have finished: reading a branch step's output after the
    join is `reference-not-completed` (read the race's own list instead); after a plain parallel it
    is fine."""
    from dsl.validate import validate_text

    text = """name: race
steps:
  - id: quote
    parallel:
      wait_for: any
      branches:
        - steps: [{id: a, action: s.a}]
        - steps: [{id: b, action: s.b}]
  - id: use
    action: s.use
    with: {a: "{{ steps.a.output }}", all: "{{ steps.quote.output }}"}
"""
    rules = [d.rule for d in validate_text(text, "race.yaml").diagnostics]
    assert rules.count("reference-not-completed") == 1
    plain = validate_text(text.replace("      wait_for: any\n", ""), "race.yaml").diagnostics
    assert "reference-not-completed" not in [d.rule for d in plain]


def test_an_early_replay_of_a_branch_timeout_is_deferred_not_obeyed(harness: Any) -> None:
    """A captured `$branch-timeout` delivery replayed before its time must not time the branch out:
    the time it may fire is stored with the branch and decides, as for every delayed message."""
    rec = Recorder()
    h = harness(BRANCH_TIMEOUT.replace("timeout: 3s", "timeout: 1h"), actions={"rec": rec})
    eid = h.start("deadline")
    timeouts = []
    while h.dispatcher.queue and h.dispatcher.queue[0][0] <= h.clock.now():
        o = h.dispatcher.pop()
        assert o is not None
        h.runtime.advance(o.message)
    timeouts = [o for _, _, o in h.dispatcher.queue if o.message.node == "$branch-timeout"]
    assert len(timeouts) == 1
    early = h.runtime.advance(timeouts[0].message)  # an hour early
    assert early.kind == "deferred"
    assert not [e for e in h.runtime.history(eid) if e.get("event") == "timeout"]
    h.drain()
    record = h.runtime.record(eid)
    assert record["status"] == "succeeded"  # the slow branch's 8 s wait ended well within the hour
    assert "after_slow" in rec.calls
