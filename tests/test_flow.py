"""Control-flow analysis: must/may-have-completed sets, scopes, loops, reachability."""

from __future__ import annotations

import textwrap

import pytest

from dsl.compiler import compile_document
from dsl.flow import BAD, Flow, analyze, const_truth
from dsl.source import loads


def flow(text: str) -> Flow:
    return analyze(compile_document(loads(textwrap.dedent(text), "w.yaml")))


def kind(f: Flow, site: str | None, target: str, phase: str = "before") -> str:
    return f.verdict(site, phase, target).kind  # type: ignore[arg-type]


DIAMOND = """
name: diamond
steps:
  - {id: a, set: {x: 1}}
  - id: sw
    switch:
      - {if: "{{ input.left }}", goto: left}
      - {default: right}
  - {id: left, set: {x: 1}, next: join}
  - {id: right, set: {x: 1}}
  - {id: join, set: {x: 1}}
  - {id: after, set: {x: 1}}
"""


def test_diamond_via_switch() -> None:
    f = flow(DIAMOND)
    assert f.completed("join") == ["a", "sw"]
    assert kind(f, "join", "a") == "ok"
    assert kind(f, "join", "left") == "not-completed"
    assert kind(f, "join", "right") == "not-completed"
    assert kind(f, "after", "join") == "ok"
    assert kind(f, "left", "right") == "never-before"
    assert kind(f, "right", "left") == "never-before"
    assert kind(f, "a", "after") == "never-before"
    assert f.completed(None) == ["a", "sw", "join", "after"]  # the top-level output
    assert f.witness("join", "left") == ["a", "sw", "right", "join"]
    assert f.unreachable() == [] and f.endless_loops() == []


def test_switch_fall_through_and_edges() -> None:
    f = flow(
        """
        name: s
        steps:
          - id: sw
            switch:
              - {if: "{{ input.x }}", goto: c}
          - {id: b, set: {x: 1}}
          - {id: c, set: {x: 1}}
        """
    )
    assert [(e.kind, e.target) for e in f.edges["sw"]] == [("case", "c"), ("fallthrough", "b")]
    assert kind(f, "c", "b") == "not-completed"
    assert kind(f, "c", "sw") == "ok"


CATCH = """
name: c
steps:
  - id: a
    action: x.y
    catch: [{errors: [any], goto: recover}]
  - {id: b, set: {x: 1}, next: done}
  - {id: recover, set: {x: 1}}
  - {id: done, set: {x: 1}}
"""


def test_catch_edge_does_not_complete_the_failing_step() -> None:
    f = flow(CATCH)
    assert [(e.kind, e.target) for e in f.edges["a"]] == [("next", "b"), ("catch", "recover")]
    assert kind(f, "b", "a") == "ok"
    assert kind(f, "recover", "a") == "never-before"  # reached only when `a` failed
    assert kind(f, "done", "a") == "not-completed"
    assert kind(f, "done", "b") == "not-completed"
    assert f.witness("done", "a") == ["a", "recover", "done"]
    assert f.completed("done") == []


def test_skipped_step_counts_as_completed() -> None:
    f = flow(
        """
        name: s
        steps:
          - {id: a, set: {x: 1}, if: "{{ input.go }}"}
          - {id: b, set: {x: 1}}
        """
    )
    assert [e.kind for e in f.edges["a"]] == ["skip", "next"]
    assert kind(f, "b", "a") == "ok"


LOOP = """
name: poll
steps:
  - {id: start, http: {url: "http://x"}}
  - {id: pause, wait: {for: 10s}}
  - {id: check, http: {url: "http://x/{{ steps.start.output }}"}}
  - id: decide
    switch:
      - {if: "{{ steps.check.output.done }}", goto: deliver}
      - {default: pause}
  - {id: deliver, set: {x: 1}}
"""


def test_polling_loop() -> None:
    f = flow(LOOP)
    assert kind(f, "deliver", "check") == "ok"
    assert kind(f, "decide", "check") == "ok"
    assert kind(f, "pause", "check") == "not-completed"  # only from the second round on
    assert kind(f, "check", "decide") == "not-completed"
    assert kind(f, "start", "check") == "never-before"
    assert kind(f, "check", "check") == "not-completed"  # its own previous round, not on the first
    assert f.verdict("check", "before", "check").own
    assert f.endless_loops() == []
    assert f.unreachable() == []


PARALLEL = """
name: p
steps:
  - {id: first, set: {x: 1}}
  - id: fan
    output: "{{ [steps.x1.output, steps.y.output] }}"
    parallel:
      branches:
        - steps:
            - {id: x1, set: {x: 1}}
            - id: gate
              switch:
                - {if: "{{ input.skip }}", goto: x3}
            - {id: x2, set: {x: 1}}
            - {id: x3, set: {x: 1}}
        - steps:
            - {id: y, set: {x: 1}}
            - {id: y2, set: {x: 1}}
  - {id: after, set: {x: 1}}
"""


def test_parallel_join_and_sibling_branches() -> None:
    f = flow(PARALLEL)
    # after the join: what each branch guarantees at its end
    assert f.completed("after") == ["first", "fan", "x1", "gate", "x3", "y", "y2"]
    assert kind(f, "after", "x2") == "not-completed"
    assert f.witness("after", "x2") == ["first", "fan[x1 → gate → x3]", "after"]
    # inside a branch: what was guaranteed before the parallel started, plus the branch's own steps
    assert kind(f, "x1", "first") == "ok"
    assert kind(f, "y2", "y") == "ok"
    assert kind(f, "y", "x1") == "sibling-branch"
    assert f.verdict("y", "before", "x1").owner == "fan"
    assert kind(f, "x3", "y") == "sibling-branch"
    # the parallel itself: its `if`/config run before the branches, its `output` after the join
    assert kind(f, "fan", "x1") == "never-before"
    assert kind(f, "fan", "x1", "output") == "ok"
    assert kind(f, "fan", "y", "output") == "ok"
    assert kind(f, "fan", "x2", "output") == "not-completed"
    # a step inside a branch may read the parallel step? it has not completed yet
    assert kind(f, "x1", "fan") == "never-before"


def test_skipped_parallel_does_not_guarantee_its_branches() -> None:
    f = flow(
        """
        name: p
        steps:
          - id: fan
            if: "{{ input.go }}"
            parallel:
              branches:
                - steps: [{id: x, set: {v: 1}}]
          - {id: after, set: {v: 1}}
        """
    )
    assert kind(f, "after", "fan") == "ok"
    assert kind(f, "after", "x") == "not-completed"


def test_nested_parallel_join_propagates() -> None:
    f = flow(
        """
        name: n
        steps:
          - id: outer
            parallel:
              branches:
                - steps:
                    - id: inner
                      parallel:
                        branches:
                          - steps: [{id: deep, set: {v: 1}}]
                    - {id: uses_deep, set: {v: "{{ steps.deep.output }}"}}
                - steps: [{id: other, set: {v: 1}}]
          - {id: after, set: {v: 1}}
        """
    )
    assert kind(f, "uses_deep", "deep") == "ok"
    assert kind(f, "after", "deep") == "ok"
    assert kind(f, "other", "deep") == "sibling-branch"
    assert f.verdict("other", "before", "deep").owner == "outer"


FOREACH = """
name: f
steps:
  - {id: before, set: {x: 1}}
  - id: each
    output: "{{ result }}"
    foreach:
      items: "{{ [1, 2] }}"
      steps:
        - {id: body1, set: {x: 1}}
        - id: body_par
          parallel:
            branches:
              - steps: [{id: deep, set: {x: 1}}]
        - {id: body2, set: {x: 1}}
  - {id: after, set: {x: 1}}
"""


def test_foreach_body_is_addressable_only_inside() -> None:
    f = flow(FOREACH)
    assert kind(f, "body2", "body1") == "ok"
    assert kind(f, "body2", "deep") == "ok"  # after the nested join, inside the body
    assert kind(f, "body1", "before") == "ok"
    assert kind(f, "body1", "body2") == "never-before"  # each item is a fresh run
    assert kind(f, "body1", "each") == "never-before"
    assert kind(f, "after", "each") == "ok"
    assert kind(f, "after", "body1") == "foreach-body"
    assert f.verdict("after", "before", "deep").kind == "foreach-body"
    assert f.verdict("after", "before", "deep").owner == "each"
    assert kind(f, "each", "body1", "output") == "foreach-body"
    assert kind(f, None, "body2") == "foreach-body"
    assert "body1" not in f.completed("after")


def test_compensate_and_output_phases() -> None:
    f = flow(
        """
        name: c
        steps:
          - {id: a, set: {x: 1}}
          - id: book
            action: r.book
            compensate: {action: r.cancel}
          - {id: later, set: {x: 1}}
        """
    )
    assert kind(f, "book", "book", "compensate") == "ok"
    assert kind(f, "book", "a", "compensate") == "ok"
    assert kind(f, "book", "later", "compensate") == "never-before"
    assert kind(f, "book", "book") == "never-before"
    assert f.verdict("book", "before", "book").own
    assert kind(f, "book", "book", "output") == "never-before"
    assert f.verdict("book", "output", "book").own
    assert f.completed("book", "compensate") == ["a", "book"]


def test_top_level_output_after_succeed() -> None:
    f = flow(
        """
        name: o
        steps:
          - id: sw
            switch:
              - {if: "{{ input.quick }}", goto: quick}
          - {id: slow, set: {x: 1}}
          - {id: done, succeed: {}}
          - {id: quick, succeed: {}}
        """
    )
    assert kind(f, None, "sw") == "ok"
    assert kind(f, None, "slow") == "not-completed"
    assert f.witness(None, "slow") == ["sw", "quick"]


def test_unreachable_steps() -> None:
    f = flow(
        """
        name: u
        steps:
          - id: a
            action: x.y
            catch: [{errors: [any], goto: handler}]
          - {id: stop, succeed: {}}
          - {id: dead1, set: {x: 1}}
          - id: dead_par
            parallel:
              branches:
                - steps: [{id: dead_inner, set: {x: 1}}]
          - {id: handler, fail: {error: E}}
          - {id: dead2, set: {x: 1}}
          - id: sw
            switch:
              - {if: "{{ true }}", goto: stop}
          - {id: dead3, set: {x: 1}}
        """
    )
    # nested steps of an unreachable parallel are not reported again
    assert f.unreachable() == ["dead1", "dead_par", "dead2", "sw", "dead3"]
    assert "handler" in f.reachable


def test_constant_conditions_prune_edges() -> None:
    assert const_truth(True) is True
    assert const_truth(0) is False
    assert const_truth("{{ false }}") is False
    assert const_truth("{{ 1 + 1 == 2 }}") is True
    assert const_truth("{{ input.x }}") is None
    assert const_truth("text {{ true }}") is None  # renders to a string: not a condition we judge
    assert const_truth("{{ broken") is None
    assert const_truth(None) is None
    f = flow(
        """
        name: c
        steps:
          - id: sw
            switch:
              - {if: false, goto: never}
              - {if: "{{ true }}", goto: always}
              - {if: "{{ input.x }}", goto: never}
          - {id: never, set: {x: 1}}
          - {id: always, set: {x: 1}}
          - {id: skipped, set: {x: 1}, if: false}
          - {id: kept, set: {x: 1}, if: "{{ true }}"}
        """
    )
    assert [(e.kind, e.target) for e in f.edges["sw"]] == [("case", "always")]
    assert f.unreachable() == ["never"]
    assert [e.kind for e in f.edges["skipped"]] == ["skip"]
    assert [e.kind for e in f.edges["kept"]] == ["next"]


@pytest.mark.parametrize(
    ("steps", "loops"),
    [
        # a step jumping to itself, with no other way
        ("- {id: a, set: {x: 1}, next: a}", [["a"]]),
        # two steps ping-ponging
        ("- {id: a, set: {x: 1}}\n- {id: b, set: {x: 1}, next: a}", [["a", "b"]]),
        # a loop whose only exit condition is impossible
        (
            "- {id: a, set: {x: 1}}\n- id: b\n  switch:\n    - {if: false, goto: out}\n    - {default: a}\n"
            "- {id: out, set: {x: 1}}",
            [["a", "b"]],
        ),
        # polling with a switch exit: fine
        ("- {id: a, wait: {for: 1s}}\n- id: b\n  switch:\n    - {if: '{{ input.x }}', goto: a}", []),
        (
            "- {id: a, wait: {for: 1s}}\n- id: b\n  switch:\n    - {if: '{{ input.x }}', goto: c}\n"
            "    - {default: a}\n- {id: c, set: {x: 1}}",
            [],
        ),
        # a catch that leaves the loop is a way out
        (
            "- id: a\n  action: x.y\n  next: a\n  catch: [{errors: [any], goto: b}]\n- {id: b, set: {x: 1}}",
            [],
        ),
        # a fail step inside the loop ends it
        (
            "- id: a\n  switch:\n    - {if: '{{ input.x }}', goto: b}\n  next: a\n"
            "- {id: b, fail: {error: F}}",
            [],
        ),
        # a succeed ends it too
        ("- id: a\n  switch:\n    - {if: '{{ input.x }}', goto: b}\n  next: a\n- {id: b, succeed: {}}", []),
        # an unreachable loop is reported as unreachable, not as a loop
        ("- {id: s, succeed: {}}\n- {id: a, set: {x: 1}, next: a}", []),
        # a jump to an unknown id is treated as a way out (the targets check reports it)
        (
            "- {id: a, set: {x: 1}, next: b}\n- id: b\n  switch:\n    - {if: '{{ input.x }}', goto: nope}\n"
            "  next: a",
            [],
        ),
    ],
)
def test_endless_loops(steps: str, loops: list[list[str]]) -> None:
    text = "name: l\nsteps:\n" + textwrap.indent(steps, "  ") + "\n"
    assert flow(text).endless_loops() == loops


def test_endless_loop_inside_a_branch() -> None:
    f = flow(
        """
        name: l
        steps:
          - id: p
            parallel:
              branches:
                - steps:
                    - {id: spin, wait: {for: 1s}, next: spin}
                - steps:
                    - {id: fine, set: {x: 1}}
          - {id: after, set: {x: 1}}
        """
    )
    assert f.endless_loops() == [["spin"]]
    # the parallel can never join, so anything is vacuously "guaranteed" after it
    assert kind(f, "after", "fine") == "ok"


def test_invalid_jumps_go_to_the_bad_sink() -> None:
    f = flow(
        """
        name: j
        steps:
          - {id: a, set: {x: 1}, next: nowhere}
          - id: p
            parallel:
              branches:
                - steps: [{id: inner, set: {x: 1}, next: a}]
        """
    )
    assert [(e.kind, e.target) for e in f.edges["a"]] == [("next", BAD)]
    assert [(e.kind, e.target) for e in f.edges["inner"]] == [("next", BAD)]
    assert f.unreachable() == ["p"]


def test_long_chain_is_fast_enough_to_be_linear() -> None:
    line = "  - {{id: s{i}, set: {{x: '{{{{ steps.s{j}.output }}}}'}}}}"
    steps = "\n".join(line.format(i=i, j=max(i - 1, 0)) for i in range(400))
    f = flow("name: long\nsteps:\n" + steps + "\n")
    assert kind(f, "s399", "s0") == "ok"
    assert kind(f, "s0", "s399") == "never-before"
